//! `BatchNorm1d` / `BatchNorm2d` / `BatchNorm3d`, as PyTorch's
//! (`torch.nn.BatchNorm2d` and its siblings).
//!
//! Over `[N, C, *]`, per channel `c`: in training
//! `y = (x − mean) / √(var + eps) · weight + bias` with the batch's mean and
//! biased variance over `N` and the spatial positions, and the running
//! statistics updated after the step as state ([`Graph::update_state`]):
//!
//! ```text
//! running_mean ← momentum · mean + (1 − momentum) · running_mean
//! running_var  ← momentum · var_unbiased + (1 − momentum) · running_var
//! num_batches_tracked ← num_batches_tracked + 1
//! ```
//!
//! (`momentum` `None`: the cumulative average, `1 / num_batches_tracked`.)
//! The training normalisation is one `normalize` op per channel
//! ([`crate::ops::Normalize`] with `channels`), forward and backward; the
//! statistics for the running update one `channel_moments` op.
//! In evaluation the running statistics take the batch's place and are
//! left as they are (a program compiled for evaluation drops their
//! updates). The two modes are one graph joined by `train_eval` nodes;
//! compiling binds one ([`crate::CompileOptions::training`]).
//!
//! Differences from PyTorch: `num_batches_tracked` is an f32, exact up to
//! 2²⁴ steps (PyTorch's is an i64). Compiling for training refuses fewer
//! than two values per channel, an empty batch too (PyTorch returns an
//! empty result for one and only counts the step); with
//! `track_running_stats(false)` this is refused only in training (PyTorch
//! also raises in evaluation there). `eps` 0 is accepted in training too
//! (a constant channel is then NaN; PyTorch raises there).

use super::norm::{affine, check_eps, scale_by_std};
use super::{layer_name, Layer};
use crate::error::{attr_err, shape_err, Result};
use crate::graph::{Graph, Init, NodeId};
use crate::ops::{ChannelMoments, Normalize, Op, OpBuilder};
use crate::shape::is_symbolic;

/// Batch normalisation over `[N, C]` or `[N, C, L]` (`D = 1`), `[N, C, H, W]`
/// (`D = 2`) or `[N, C, D, H, W]` (`D = 3`); use [`BatchNorm1d`],
/// [`BatchNorm2d`] or [`BatchNorm3d`]. Defaults as PyTorch's: eps 1e-5,
/// momentum 0.1, affine, tracking running statistics. Parameters
/// `{name}.weight` (1) and `{name}.bias` (0), state `{name}.running_mean`
/// (0), `{name}.running_var` (1) and `{name}.num_batches_tracked` (0), all
/// of shape `[C]` but the last (`[]`).
#[derive(Clone, Debug)]
pub struct BatchNorm<const D: usize> {
    num_features: usize,
    eps: f32,
    momentum: Option<f32>,
    affine: bool,
    track_running_stats: bool,
    name: Option<String>,
}

/// Batch normalisation over `[N, C]` or `[N, C, L]` (`torch.nn.BatchNorm1d`).
pub type BatchNorm1d = BatchNorm<1>;
/// Batch normalisation over `[N, C, H, W]` (`torch.nn.BatchNorm2d`).
pub type BatchNorm2d = BatchNorm<2>;
/// Batch normalisation over `[N, C, D, H, W]` (`torch.nn.BatchNorm3d`).
pub type BatchNorm3d = BatchNorm<3>;

impl<const D: usize> BatchNorm<D> {
    /// Over `num_features` channels (PyTorch's `num_features`, the `C` of the input).
    pub fn new(num_features: usize) -> Self {
        BatchNorm {
            num_features,
            eps: 1e-5,
            momentum: Some(0.1),
            affine: true,
            track_running_stats: true,
            name: None,
        }
    }
    /// The value added to the variance (PyTorch's `eps`, default 1e-5).
    pub fn eps(mut self, eps: f32) -> Self {
        self.eps = eps;
        self
    }
    /// The weight of the batch's statistics in the running ones (default
    /// `Some(0.1)`); `None` keeps the cumulative average over all batches.
    pub fn momentum(mut self, momentum: Option<f32>) -> Self {
        self.momentum = momentum;
        self
    }
    /// With or without the learnable per-channel weight and bias (PyTorch's `affine`).
    pub fn affine(mut self, affine: bool) -> Self {
        self.affine = affine;
        self
    }
    /// Whether running statistics are kept (default true). Without them
    /// evaluation normalises with the batch's statistics too, and there is
    /// no state.
    pub fn track_running_stats(mut self, track: bool) -> Self {
        self.track_running_stats = track;
        self
    }
    /// Names the layer (parameters become `{name}.weight`, state `{name}.running_mean`, ...).
    pub fn name(mut self, name: &str) -> Self {
        self.name = Some(name.into());
        self
    }
}

impl<const D: usize> Layer for BatchNorm<D> {
    /// `Err` naming the layer if the input is not `[N, C, *]` of the rank
    /// above with `C = num_features`, or eps or momentum is not finite.
    fn build(&self, g: &mut Graph, x: NodeId) -> Result<NodeId> {
        let name = layer_name(g, &self.name, "batch_norm");
        let (c, xs) = (self.num_features, g.shape(x)?.to_vec());
        let ranks = if D == 1 { 2..=3 } else { D + 2..=D + 2 };
        if !ranks.contains(&xs.len()) || xs[1] != c {
            let want = match D {
                1 => format!("[N, {c}] or [N, {c}, L]"),
                2 => format!("[N, {c}, H, W]"),
                _ => format!("[N, {c}, D, H, W]"),
            };
            return shape_err(&name, format!("input has shape {xs:?}, expected {want}"));
        }
        check_eps(&name, self.eps)?;
        if let Some(m) = self.momentum.filter(|m| !m.is_finite()) {
            return attr_err(&name, format!("momentum must be finite, got {m}"));
        }
        let axes: Vec<usize> = std::iter::once(0).chain(2..xs.len()).collect();
        g.require_two_in_training(x, axes.clone(), &name);
        // the batch statistics' normalisation, one op forward and backward
        let per_channel = Normalize {
            eps: self.eps,
            channels: true,
        };
        let mut y = g.add_op(Op::Normalize(per_channel), &[x])?;
        // per channel: [1, C, 1, ...] against [N, C, *]
        let mut bshape = vec![1, c as isize];
        bshape.resize(xs.len(), 1);
        if self.track_running_stats {
            let stat = |g: &mut Graph, what: &str, shape: &[usize], init| {
                g.state(&format!("{name}.{what}"), shape.to_vec(), init)
            };
            let running_mean = stat(g, "running_mean", &[c], Init::Zeros)?;
            let running_var = stat(g, "running_var", &[c], Init::Constant(1.0))?;
            let tracked = stat(g, "num_batches_tracked", &[], Init::Zeros)?;
            let (rm, rv) = (
                g.reshape(running_mean, &bshape)?,
                g.reshape(running_var, &bshape)?,
            );
            let centred = g.sub(x, rm)?;
            let eval = scale_by_std(g, centred, rv, self.eps)?;
            y = g.train_eval(y, eval)?;

            // the batch statistics, [C, 2]: mean and biased variance
            let stats = g.add_op(Op::ChannelMoments(ChannelMoments), &[x])?;
            let column = |g: &mut Graph, k: usize| -> Result<NodeId> {
                let s = g.slice(stats, 1, k, k + 1, 1)?;
                g.reshape(s, &[c as isize])
            };
            let (mean, var) = (column(g, 0)?, column(g, 1)?);
            let one = g.scalar(1.0)?;
            let count = g.add(tracked, one)?;
            let factor = match self.momentum {
                Some(m) => g.scalar(m)?,
                None => g.recip(count)?,
            };
            let unbiased = unbiased(g, var, &xs, &axes)?;
            for (state, value) in [(running_mean, mean), (running_var, unbiased)] {
                let new = g.mul(factor, value)?;
                let keep = g.sub(one, factor)?;
                let old = g.mul(keep, state)?;
                let next = g.add(new, old)?;
                let next = g.train_eval(next, state)?;
                g.update_state(state, next)?;
            }
            // PyTorch's buffer order: running_mean, running_var, num_batches_tracked
            let count = g.train_eval(count, tracked)?;
            g.update_state(tracked, count)?;
        }
        if !self.affine {
            return Ok(y);
        }
        let bshape: Vec<usize> = bshape.iter().map(|&d| d as usize).collect();
        affine(g, &name, y, &[c], &bshape, true)
    }
}

/// `var · n / (n − 1)`, the unbiased variance of `n` values per channel (the
/// product of `xs` over `axes`), from the biased `var`. A symbolic batch
/// counts its values in the graph, which folds once the batch is known.
fn unbiased(g: &mut Graph, var: NodeId, xs: &[usize], axes: &[usize]) -> Result<NodeId> {
    if !is_symbolic(xs) {
        let n = axes.iter().map(|&a| xs[a] as f64).product::<f64>();
        // n ≤ 1 cannot train (Graph::require_two_in_training); keep it finite
        return g.mul_scalar(var, (n / (n - 1.0).max(1.0)) as f32);
    }
    let mut ones = xs.to_vec();
    ones[1] = 1;
    let ones = g.fill(&ones, 1.0)?;
    let n = g.sum_all(ones)?;
    let n_minus_1 = g.add_scalar(n, -1.0)?;
    let ratio = g.div(n, n_minus_1)?;
    g.mul(var, ratio)
}
