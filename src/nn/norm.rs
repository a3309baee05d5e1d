//! Normalisation layers that need no running state: `LayerNorm` and
//! `GroupNorm`, as PyTorch's (`torch.nn.LayerNorm`, `torch.nn.GroupNorm`),
//! and `Identity`. Both normalise with the biased variance, `eps` inside the
//! square root: `y = (x − mean) / √(var + eps) · weight + bias`, weight
//! starting at 1 and bias at 0. They are built from reductions and
//! element-wise ops, so their gradients come from those ops' VJPs.

use super::{layer_name, Layer};
use crate::error::{attr_err, shape_err, Result};
use crate::graph::{Graph, Init, NodeId};
use crate::ops::OpBuilder;

/// Normalises over the trailing axes `normalized_shape` of `[..., *normalized_shape]`
/// (`torch.nn.LayerNorm`; defaults eps 1e-5, elementwise affine with bias).
/// Parameters `{name}.weight` and `{name}.bias`, shape `normalized_shape`.
#[derive(Clone, Debug)]
pub struct LayerNorm {
    normalized_shape: Vec<usize>,
    eps: f32,
    elementwise_affine: bool,
    bias: bool,
    name: Option<String>,
}

impl LayerNorm {
    /// Over the trailing axes `normalized_shape` (`[d]` for the last axis of size `d`).
    pub fn new(normalized_shape: &[usize]) -> Self {
        LayerNorm {
            normalized_shape: normalized_shape.to_vec(),
            eps: 1e-5,
            elementwise_affine: true,
            bias: true,
            name: None,
        }
    }
    /// The value added to the variance (PyTorch's `eps`, default 1e-5).
    pub fn eps(mut self, eps: f32) -> Self {
        self.eps = eps;
        self
    }
    /// With or without the learnable weight and bias (PyTorch's `elementwise_affine`).
    pub fn elementwise_affine(mut self, affine: bool) -> Self {
        self.elementwise_affine = affine;
        self
    }
    /// With or without the bias when affine (PyTorch's `bias`, default true).
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

impl Layer for LayerNorm {
    fn build(&self, g: &mut Graph, x: NodeId) -> Result<NodeId> {
        let name = layer_name(g, &self.name, "layer_norm");
        let xs = g.shape(x)?.to_vec();
        let d = self.normalized_shape.len();
        if d == 0 {
            return attr_err(&name, "normalized_shape must have at least one dimension");
        }
        if xs.len() < d || xs[xs.len() - d..] != self.normalized_shape[..] {
            return shape_err(
                &name,
                format!(
                    "input has shape {xs:?}, whose trailing axes are not normalized_shape {:?}",
                    self.normalized_shape
                ),
            );
        }
        check_eps(&name, self.eps)?;
        let y = normalize(g, x, d, self.eps)?;
        if !self.elementwise_affine {
            return Ok(y);
        }
        let shape = self.normalized_shape.clone();
        affine(g, &name, y, &shape, &shape, self.bias)
    }
}

/// Normalises `[N, C, *]` over groups of `C / num_groups` channels (with all
/// their positions), then scales and shifts per channel
/// (`torch.nn.GroupNorm`; defaults eps 1e-5, affine). Parameters
/// `{name}.weight` and `{name}.bias`, shape `[C]`.
#[derive(Clone, Debug)]
pub struct GroupNorm {
    num_groups: usize,
    num_channels: usize,
    eps: f32,
    affine: bool,
    name: Option<String>,
}

impl GroupNorm {
    /// `num_channels` channels in `num_groups` groups (which must divide them).
    pub fn new(num_groups: usize, num_channels: usize) -> Self {
        GroupNorm {
            num_groups,
            num_channels,
            eps: 1e-5,
            affine: true,
            name: None,
        }
    }
    /// The value added to the variance (PyTorch's `eps`, default 1e-5).
    pub fn eps(mut self, eps: f32) -> Self {
        self.eps = eps;
        self
    }
    /// With or without the per-channel weight and bias (PyTorch's `affine`).
    pub fn affine(mut self, affine: bool) -> Self {
        self.affine = affine;
        self
    }
    /// Names the layer (parameters become `{name}.weight`, `{name}.bias`).
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.into());
        self
    }
}

impl Layer for GroupNorm {
    fn build(&self, g: &mut Graph, x: NodeId) -> Result<NodeId> {
        let name = layer_name(g, &self.name, "group_norm");
        let (groups, c) = (self.num_groups, self.num_channels);
        if groups == 0 || c % groups != 0 {
            return shape_err(
                &name,
                format!("num_groups {groups} must be positive and divide num_channels {c}"),
            );
        }
        let xs = g.shape(x)?.to_vec();
        if xs.len() < 2 || xs[1] != c {
            return shape_err(
                &name,
                format!("input has shape {xs:?}, expected [N, {c}, *] (rank ≥ 2)"),
            );
        }
        check_eps(&name, self.eps)?;
        let per_group: usize = xs[2..].iter().product::<usize>() * (c / groups);
        let grouped = g.reshape(x, &[xs[0] as isize, groups as isize, per_group as isize])?;
        let y = normalize(g, grouped, 1, self.eps)?;
        let dims: Vec<isize> = xs.iter().map(|&s| s as isize).collect();
        let y = g.reshape(y, &dims)?;
        if !self.affine {
            return Ok(y);
        }
        // per channel: [C, 1, ..., 1] against [N, C, *]
        let mut bshape = vec![c];
        bshape.extend(std::iter::repeat_n(1, xs.len() - 2));
        affine(g, &name, y, &[c], &bshape, true)
    }
}

/// Passes its input through (`torch.nn.Identity`): a placeholder where a
/// layer is optional, e.g. a residual block's shortcut.
#[derive(Clone, Copy, Debug, Default)]
pub struct Identity;

impl Layer for Identity {
    fn build(&self, _g: &mut Graph, x: NodeId) -> Result<NodeId> {
        Ok(x)
    }
}

/// `centred / √(var + eps)`.
pub(super) fn scale_by_std(
    g: &mut Graph,
    centred: NodeId,
    var: NodeId,
    eps: f32,
) -> Result<NodeId> {
    let shifted = g.add_scalar(var, eps)?;
    let std = g.sqrt(shifted)?;
    let inv = g.recip(std)?;
    g.mul(centred, inv)
}

/// `(x − mean) / √(var + eps)` over the last `d` axes (biased variance, as
/// [`moments`]), one `normalize` op on the axes flattened into one.
fn normalize(g: &mut Graph, x: NodeId, d: usize, eps: f32) -> Result<NodeId> {
    let xs = g.shape(x)?.to_vec();
    let split = xs.len() - d;
    let row: usize = xs[split..].iter().product();
    let rows: usize = xs[..split].iter().product();
    let flat = g.reshape(x, &[rows as isize, row as isize])?;
    let y = g.normalize(flat, eps)?;
    let dims: Vec<isize> = xs.iter().map(|&s| s as isize).collect();
    g.reshape(y, &dims)
}

/// `y · weight + bias` with parameters of shape `shape` (weight 1, bias 0)
/// broadcast as `broadcast` against `y`.
pub(super) fn affine(
    g: &mut Graph,
    name: &str,
    y: NodeId,
    shape: &[usize],
    broadcast: &[usize],
    bias: bool,
) -> Result<NodeId> {
    let as_dims = |s: &[usize]| s.iter().map(|&d| d as isize).collect::<Vec<_>>();
    let w = g.param(
        &format!("{name}.weight"),
        shape.to_vec(),
        Init::Constant(1.0),
    )?;
    let w = g.reshape(w, &as_dims(broadcast))?;
    let mut out = g.mul(y, w)?;
    if bias {
        let b = g.param(&format!("{name}.bias"), shape.to_vec(), Init::Zeros)?;
        let b = g.reshape(b, &as_dims(broadcast))?;
        out = g.add(out, b)?;
    }
    Ok(out)
}

/// `Err` unless `eps` is finite and not negative.
pub(super) fn check_eps(name: &str, eps: f32) -> Result<()> {
    match eps.is_finite() && eps >= 0.0 {
        true => Ok(()),
        false => attr_err(name, format!("eps must be finite and ≥ 0, got {eps}")),
    }
}
