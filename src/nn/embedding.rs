//! `Embedding`: a lookup table of vectors indexed by `i64` ids
//! (`torch.nn.Embedding`).

use super::{layer_name, Layer};
use crate::error::{attr_err, KilnError, Result};
use crate::graph::{Graph, Init, NodeId};
use crate::ops::OpBuilder;
use crate::tensor::Tensor;

/// A table `weight [num_embeddings, embedding_dim]`, drawn from `N(0, 1)`
/// as in PyTorch; `build` maps `i64` indices `[*]` to their rows
/// `[*, embedding_dim]`. The gradient sums the rows' gradients over
/// repeated indices; the `padding_idx` row is initialised to zeros and gets
/// no gradient (it keeps its value through training), as in PyTorch.
///
/// Every run refuses a fed index outside `0..num_embeddings`, naming the
/// feed, position and value (PyTorch raises `IndexError`). PyTorch's
/// `max_norm`, `scale_grad_by_freq` and `sparse` are not supported.
#[derive(Clone, Debug)]
pub struct Embedding {
    num_embeddings: usize,
    embedding_dim: usize,
    padding_idx: Option<i64>,
    name: Option<String>,
}

impl Embedding {
    /// A table of `num_embeddings` vectors of `embedding_dim` values.
    pub fn new(num_embeddings: usize, embedding_dim: usize) -> Self {
        Embedding {
            num_embeddings,
            embedding_dim,
            padding_idx: None,
            name: None,
        }
    }
    /// The row that pads: zeros at first, and never updated. Negative
    /// counts from the end, as in PyTorch; it must lie in
    /// `-num_embeddings..num_embeddings` (checked at build).
    pub fn padding_idx(mut self, padding_idx: i64) -> Self {
        self.padding_idx = Some(padding_idx);
        self
    }
    /// Names the layer (its table becomes `{name}.weight`).
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The padding row as a non-negative index, if any; `Err` if out of range.
    fn padding_row(&self, name: &str) -> Result<Option<usize>> {
        let n = self.num_embeddings as i64;
        match self.padding_idx {
            None => Ok(None),
            Some(p) if (-n..n).contains(&p) => Ok(Some(if p < 0 { p + n } else { p } as usize)),
            Some(p) => attr_err(
                name,
                format!("padding_idx {p} must be within -{n}..{n} (num_embeddings {n})"),
            ),
        }
    }
}

impl Layer for Embedding {
    fn build(&self, g: &mut Graph, indices: NodeId) -> Result<NodeId> {
        let name = layer_name(g, &self.name, "embedding");
        let pad = self.padding_row(&name)?;
        let shape = [self.num_embeddings, self.embedding_dim];
        let init = Init::Normal {
            mean: 0.0,
            std: 1.0,
        };
        let weight_name = format!("{name}.weight");
        let mut w = g.param(&weight_name, shape, init)?;
        if let Some(p) = pad {
            let mut value = g.param_value(&weight_name).cloned().ok_or_else(|| {
                KilnError::Invalid(format!("{weight_name}: the table was not created"))
            })?;
            let d = self.embedding_dim;
            value.data_mut()[p * d..(p + 1) * d].fill(0.0);
            g.set_param_value(&weight_name, value)?;
            // the padding row is read through a stop-gradient: same value,
            // no gradient
            let mut keep = vec![1.0; self.num_embeddings];
            keep[p] = 0.0;
            let keep = g.constant(Tensor::from_vec([self.num_embeddings, 1], keep)?)?;
            let frozen = g.stop_gradient(w)?;
            w = g.select(keep, w, frozen)?;
        }
        let y = g.gather(w, indices, 0)?;
        g.set_name(y, format!("{name}.lookup"));
        Ok(y)
    }
}
