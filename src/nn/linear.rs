//! `Linear` (dense): `y = x·Wᵀ + b`, weight `[out, in]`, as PyTorch.

use super::{layer_name, Layer};
use crate::error::{shape_err, Result};
use crate::graph::{Graph, Init, NodeId};
use crate::ops::OpBuilder;
use crate::shape::is_symbolic;

/// A fully connected layer over the last axis of `[..., in]`.
#[derive(Clone, Debug)]
pub struct Linear {
    in_features: usize,
    out_features: usize,
    bias: bool,
    name: Option<String>,
}

impl Linear {
    /// `in → out` with bias; weights and bias drawn from `U(−1/√in, 1/√in)` (PyTorch's default).
    pub fn new(in_features: usize, out_features: usize) -> Self {
        Linear {
            in_features,
            out_features,
            bias: true,
            name: None,
        }
    }
    /// With or without the bias term.
    pub fn bias(mut self, bias: bool) -> Self {
        self.bias = bias;
        self
    }
    /// Names the layer (parameters become `{name}.weight`, `{name}.bias`).
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.into());
        self
    }
}

impl Layer for Linear {
    fn build(&self, g: &mut Graph, x: NodeId) -> Result<NodeId> {
        let name = layer_name(g, &self.name, "linear");
        let xs = g.shape(x)?.to_vec();
        if xs.len() < 2 || xs[xs.len() - 1] != self.in_features {
            return shape_err(
                &name,
                format!(
                    "input has shape {xs:?}, expected [..., {}] (rank ≥ 2)",
                    self.in_features
                ),
            );
        }
        let init = Init::LeCunUniform {
            fan_in: self.in_features,
        };
        let w = g.param(
            &format!("{name}.weight"),
            [self.out_features, self.in_features],
            init.clone(),
        )?;
        let wt = g.transpose(w, &[1, 0])?;
        // [.., in] as rows [R, in]: one 2-D product, whose weight gradient
        // is one product too (not one per leading index, then a sum)
        let lead = &xs[..xs.len() - 1];
        let flatten = lead.len() > 1 && !is_symbolic(&xs);
        let rows = match flatten {
            true => g.reshape(
                x,
                &[
                    lead.iter().product::<usize>() as isize,
                    xs[xs.len() - 1] as isize,
                ],
            )?,
            false => x,
        };
        let mut y = g.matmul(rows, wt)?;
        g.set_name(y, format!("{name}.matmul"));
        if self.bias {
            let b = g.param(&format!("{name}.bias"), [self.out_features], init)?;
            y = g.add(y, b)?;
            g.set_name(y, format!("{name}.bias_add"));
        }
        if flatten {
            let mut dims: Vec<isize> = lead.iter().map(|&d| d as isize).collect();
            dims.push(self.out_features as isize);
            y = g.reshape(y, &dims)?;
        }
        Ok(y)
    }
}
