//! The normalisation at the heart of LayerNorm, GroupNorm and BatchNorm as
//! one op, `(x − mean) / √(var + eps)` with the biased variance, over the
//! last axis (`torch.nn.functional.layer_norm` without weight and bias;
//! ONNX's `LayerNormalization` with scale 1 and no bias) or, with
//! `channels`, per channel of `[N, C, *]` over the batch and the positions
//! (`torch.nn.functional.batch_norm` in training, without weight and bias),
//! and its gradient as one op. Each row (or channel) is read once for its
//! mean and once for its variance (two passes after a shift by its first
//! element, so a constant row is exactly 0, as PyTorch's, and NaN with eps
//! 0); the gradient recomputes both instead of keeping them. A channel's
//! values are gathered into the thread's scratch and its result scattered
//! back, so both layouts share one row kernel.

use super::softmax::rows;
use super::{Arity, Grads, NodeId, Op, OpBuilder, OpDef, RunCtx, View};
use crate::error::{attr_err, shape_err, Result};
use crate::kernels::math;
use crate::kernels::par;
use serde::{Deserialize, Serialize};

/// `(x − mean) / √(var + eps)` over the last axis, or per channel of `[N,
/// C, *]` with `channels`; the result has `x`'s shape.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Normalize {
    /// Added to the variance (finite, ≥ 0).
    pub eps: f32,
    /// Per channel (axis 1) over all other axes, instead of over the last.
    #[serde(default)]
    pub channels: bool,
}

/// The gradient of [`Normalize`]: operands `x` and the upstream gradient
/// `g` (one shape), result `σ⁻¹·(g − mean(g) − x̂·mean(g·x̂))` per row, with
/// `x̂` the normalised row and `σ⁻¹ = 1 / √(var + eps)` (per channel with
/// `channels`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct NormalizeBackward {
    /// Added to the variance (finite, ≥ 0).
    pub eps: f32,
    /// Per channel (axis 1) over all other axes, instead of over the last.
    #[serde(default)]
    pub channels: bool,
}

/// `Err` unless `eps` is usable and `x` has an axis to normalise over (a
/// channel axis with `channels`).
fn check(op: &'static str, eps: f32, channels: bool, x: &[usize]) -> Result<()> {
    if !(eps.is_finite() && eps >= 0.0) {
        return attr_err(op, format!("eps must be finite and ≥ 0, got {eps}"));
    }
    match (channels, x.len()) {
        (false, 0) => shape_err(
            op,
            "operand 0 is a scalar; it normalises over the last axis",
        ),
        (true, 0 | 1) => shape_err(
            op,
            format!("operand 0 has shape {x:?}; it normalises per channel of [N, C, *]"),
        ),
        _ => Ok(()),
    }
}

/// Calls `f(x, g (empty if none), out)` on every row of the operands'
/// last axis, or with `channels` on every channel's values of `[N, C, *]`
/// (gathered into this thread's scratch, the result scattered back;
/// channels in parallel).
fn groups<F>(ins: &[View], out: &mut [f32], channels: bool, f: F)
where
    F: Fn(&[f32], &[f32], &mut [f32]) + Sync + Send,
{
    let shape = ins[0].shape;
    if !channels {
        return rows(ins, out, shape.len() - 1, f);
    }
    let dims = (shape[0], shape[1], shape[2..].iter().product::<usize>());
    let g = ins.get(1).map(|v| v.data);
    par::for_each_channel(ins[0].data, g, out, dims, f)
}

impl OpDef for Normalize {
    fn name(&self) -> &'static str {
        "normalize"
    }
    debug_attrs!(eps, channels);
    fn infer_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>> {
        check("normalize", self.eps, self.channels, ins[0])?;
        Ok(ins[0].to_vec())
    }
    fn eval(&self, ins: &[View], out: &mut [f32], _: &[usize], _: &RunCtx) {
        let eps = self.eps;
        groups(ins, out, self.channels, |x, _, o| {
            math::normalize_row(x, o, eps)
        })
    }
    fn vjp(&self, g: &mut dyn OpBuilder, xs: &[NodeId], _: NodeId, gy: NodeId) -> Grads {
        Ok(vec![Some(backward(g, self.eps, self.channels, xs[0], gy)?)])
    }
}

impl OpDef for NormalizeBackward {
    fn name(&self) -> &'static str {
        "normalize_backward"
    }
    debug_attrs!(eps, channels);
    fn arity(&self) -> Arity {
        Arity::Exact(2)
    }
    fn infer_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>> {
        check("normalize_backward", self.eps, self.channels, ins[0])?;
        if ins[0] != ins[1] {
            return shape_err(
                "normalize_backward",
                format!(
                    "operand 0 (x) has shape {:?} but operand 1 (the gradient) has shape {:?}",
                    ins[0], ins[1]
                ),
            );
        }
        Ok(ins[0].to_vec())
    }
    fn eval(&self, ins: &[View], out: &mut [f32], _: &[usize], _: &RunCtx) {
        let eps = self.eps;
        groups(ins, out, self.channels, |x, g, o| {
            math::normalize_grad_row(x, g, o, eps)
        })
    }
    /// Per row, with `a·A = mean(u·g) − mean(u)·mean(g)`, `m = mean(g·x̂)`,
    /// `a·B = mean(u·x̂)` and `s = σ⁻¹`: `d/dg = normalize_backward(x, u)`
    /// (the op is self-adjoint in `g`) and `d/dx = −s²·x̂·(a·A − m·a·B) −
    /// s·(a·B·normalize_backward(x, g) + m·normalize_backward(x, u))`.
    fn vjp(&self, b: &mut dyn OpBuilder, xs: &[NodeId], _: NodeId, u: NodeId) -> Grads {
        let (x, g, eps, channels) = (xs[0], xs[1], self.eps, self.channels);
        // the axes a row (or channel) runs over
        let rank = b.shape(x)?.len() as isize;
        let axes: Vec<isize> = match channels {
            false => vec![-1],
            true => std::iter::once(0).chain(2..rank).collect(),
        };
        let mean = |b: &mut dyn OpBuilder, p: NodeId, q: NodeId| -> Result<NodeId> {
            let pq = b.mul(p, q)?;
            b.mean(pq, &axes, true)
        };
        let nb_u = backward(b, eps, channels, x, u)?;
        let nb_g = backward(b, eps, channels, x, g)?;
        let xh = b.add_op(Op::Normalize(Normalize { eps, channels }), &[x])?;
        // s² = 1 / (var + eps), s = σ⁻¹
        let mx = b.mean(x, &axes, true)?;
        let c = b.sub(x, mx)?;
        let var = mean(b, c, c)?;
        let ve = b.add_scalar(var, eps)?;
        let s2 = b.recip(ve)?;
        let s = b.sqrt(s2)?;
        let (ug, gx, ux) = (mean(b, u, g)?, mean(b, g, xh)?, mean(b, u, xh)?);
        let (ub, gb) = (b.mean(u, &axes, true)?, b.mean(g, &axes, true)?);
        let ubgb = b.mul(ub, gb)?;
        let aa = b.sub(ug, ubgb)?;
        let mab = b.mul(gx, ux)?;
        let t = b.sub(aa, mab)?;
        let t = b.mul(s2, t)?;
        let first = b.mul(xh, t)?;
        let p1 = b.mul(ux, nb_g)?;
        let p2 = b.mul(gx, nb_u)?;
        let p = b.add(p1, p2)?;
        let second = b.mul(s, p)?;
        let both = b.add(first, second)?;
        let dx = b.neg(both)?;
        Ok(vec![Some(dx), Some(nb_u)])
    }
}

/// `normalize_backward` of `x` for upstream gradient `g`, in `channels`
/// layout or over the last axis.
fn backward(
    b: &mut dyn OpBuilder,
    eps: f32,
    channels: bool,
    x: NodeId,
    g: NodeId,
) -> Result<NodeId> {
    b.add_op(
        Op::NormalizeBackward(NormalizeBackward { eps, channels }),
        &[x, g],
    )
}

/// Each channel's mean and biased variance over the batch and positions of
/// `[N, C, *]`, as `[C, 2]` (mean, then variance; `torch.var_mean(x, dim=(0,
/// 2, ..), correction=0)` in the other order): BatchNorm's batch statistics
/// for its running update, two passes per channel after a shift by its
/// first value, as [`Normalize`]. A channel of no values is NaN.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelMoments;

impl OpDef for ChannelMoments {
    fn name(&self) -> &'static str {
        "channel_moments"
    }
    fn infer_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>> {
        check("channel_moments", 0.0, true, ins[0])?;
        Ok(vec![ins[0][1], 2])
    }
    fn eval(&self, ins: &[View], out: &mut [f32], _: &[usize], _: &RunCtx) {
        let shape = ins[0].shape;
        let (n, c, s) = (shape[0], shape[1], shape[2..].iter().product::<usize>());
        let x = ins[0].data;
        par::for_each_plane(out, 2, 2 * n * s, |ch, o| {
            let seg = |b: usize| &x[(b * c + ch) * s..(b * c + ch + 1) * s];
            if n * s == 0 {
                return o.fill(f32::NAN);
            }
            let (shift, m) = (seg(0)[0], (n * s) as f32);
            let mean = (0..n)
                .map(|b| math::sum_of(seg(b), |v| v - shift))
                .sum::<f32>()
                / m;
            let square = |v: f32| ((v - shift) - mean) * ((v - shift) - mean);
            let var = (0..n).map(|b| math::sum_of(seg(b), square)).sum::<f32>() / m;
            o[0] = shift + mean;
            o[1] = var;
        })
    }
    /// `dx = (g_mean + 2·g_var·(x − mean)) / M` with `M` each channel's
    /// count of values (counted in the graph, so a symbolic batch works).
    fn vjp(&self, b: &mut dyn OpBuilder, xs: &[NodeId], y: NodeId, gy: NodeId) -> Grads {
        let x = xs[0];
        let shape = b.shape(x)?.to_vec();
        let mut per_channel = vec![1isize; shape.len()];
        per_channel[1] = shape[1] as isize;
        let column = |b: &mut dyn OpBuilder, v: NodeId, k: usize| -> Result<NodeId> {
            let s = b.slice(v, 1, k, k + 1, 1)?;
            b.reshape(s, &per_channel)
        };
        let (gm, gv, mean) = (column(b, gy, 0)?, column(b, gy, 1)?, column(b, y, 0)?);
        let axes: Vec<isize> = std::iter::once(0).chain(2..shape.len() as isize).collect();
        let ones = b.fill(&shape, 1.0)?;
        let count = b.sum(ones, &axes, true)?;
        let centred = b.sub(x, mean)?;
        let t = b.mul(gv, centred)?;
        let t = b.mul_scalar(t, 2.0)?;
        let t = b.add(gm, t)?;
        Ok(vec![Some(b.div(t, count)?)])
    }
}
