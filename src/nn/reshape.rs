//! Shape layers (`Flatten`, `Reshape`, nearest `Upsample`) and `Dropout`.

use super::{layer_name, Layer};
use crate::error::{shape_err, Result};
use crate::graph::{Graph, NodeId};
use crate::ops::OpBuilder;

/// `[N, ...]` → `[N, ∏...]` (PyTorch's `Flatten` with `start_dim = 1`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Flatten;

impl Layer for Flatten {
    fn build(&self, g: &mut Graph, x: NodeId) -> Result<NodeId> {
        let xs = g.shape(x)?;
        if xs.is_empty() {
            return shape_err("flatten", "input is a scalar; expected [N, ...]");
        }
        let n = xs[0] as isize;
        let rest: usize = xs[1..].iter().product();
        g.reshape(x, &[n, rest as isize])
    }
}

/// Nearest-neighbour upsampling of `[N, C, H, W]` by integer factors
/// `[sh, sw]` (`torch.nn.Upsample(scale_factor=(sh, sw), mode='nearest')`):
/// output `(i, j)` is input `(⌊i/sh⌋, ⌊j/sw⌋)`, as a reshape and broadcast
/// (its gradient sums each block). Output sizes, fractional factors and the
/// other modes are not supported. `Err` on another rank, a zero factor or
/// an output size that overflows.
#[derive(Clone, Copy, Debug)]
pub struct Upsample {
    scale_factor: [usize; 2],
}

impl Upsample {
    /// Nearest-neighbour by `scale_factor` `[sh, sw]` (`[s, s]` for PyTorch's int `s`).
    pub fn nearest(scale_factor: [usize; 2]) -> Self {
        Upsample { scale_factor }
    }
}

impl Layer for Upsample {
    fn build(&self, g: &mut Graph, x: NodeId) -> Result<NodeId> {
        let xs = g.shape(x)?.to_vec();
        let [sh, sw] = self.scale_factor;
        let sizes = match xs[..] {
            [_, _, h, w] if sh > 0 && sw > 0 => h.checked_mul(sh).zip(w.checked_mul(sw)),
            _ => None,
        };
        let Some((oh, ow)) = sizes else {
            return shape_err(
                "upsample",
                format!(
                    "input has shape {xs:?} and scale_factor [{sh}, {sw}]; expected [N, C, H, W], positive factors and sizes that fit"
                ),
            );
        };
        let d = |v: usize| v as isize;
        let (n, c, h, w) = (xs[0], xs[1], xs[2], xs[3]);
        let cells = g.reshape(x, &[d(n), d(c), d(h), 1, d(w), 1])?;
        let blocks = g.broadcast_to(cells, &[n, c, h, sh, w, sw])?;
        g.reshape(blocks, &[d(n), d(c), d(oh), d(ow)])
    }
}

/// Reshape to a full target shape; one entry may be −1 (inferred).
#[derive(Clone, Debug)]
pub struct Reshape(pub Vec<isize>);

impl Layer for Reshape {
    fn build(&self, g: &mut Graph, x: NodeId) -> Result<NodeId> {
        g.reshape(x, &self.0)
    }
}

/// Inverted dropout: zeroes elements with probability `p` and scales the rest
/// by `1/(1−p)` when the executable is in training mode; identity otherwise.
#[derive(Clone, Debug)]
pub struct Dropout {
    p: f32,
    seed: Option<u64>,
    name: Option<String>,
}

impl Dropout {
    /// Dropout with probability `p`; its mask seed derives from the layer name.
    pub fn new(p: f32) -> Self {
        Dropout {
            p,
            seed: None,
            name: None,
        }
    }
    /// Fixes the mask seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }
    /// Names the layer in dumps.
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.into());
        self
    }
}

impl Layer for Dropout {
    fn build(&self, g: &mut Graph, x: NodeId) -> Result<NodeId> {
        let name = layer_name(g, &self.name, "dropout");
        let seed = self.seed.unwrap_or_else(|| super::dropout_seed(&name));
        let y = g.dropout(x, self.p, seed)?;
        g.set_name(y, name);
        Ok(y)
    }
}
