//! Softmax and log-softmax along one axis as single ops (`torch.softmax`,
//! `torch.log_softmax`), with their gradient as one op: each row is read
//! once for its maximum and once for its exponentials, and nothing of
//! `x − max` or `exp` is kept between ops.
//!
//! The formulas are PyTorch's: `e = exp(x − max)`, `softmax = e / Σe`,
//! `log_softmax = (x − max) − ln Σe`. So a row holding NaN is all NaN, a
//! row of `−∞` (fully masked) is all NaN, and a row holding `+∞` is all NaN,
//! as in PyTorch. Gradients, for `y` the result and `g` the upstream
//! gradient: `y·(g − Σ g·y)` and `g − exp(y)·Σ g`.

use super::{Arity, Grads, NodeId, OpBuilder, OpDef, RunCtx, View};
use crate::error::{attr_err, shape_err, Result};
use crate::kernels::scratch::{self, Slot};
use crate::kernels::{math, par};
use serde::{Deserialize, Serialize};

/// Softmax (or log-softmax) along `axis` (normalised, `0..rank`); the
/// result has the operand's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Softmax {
    /// The axis the rows run along.
    pub axis: usize,
    /// `log_softmax` instead of `softmax`.
    pub log: bool,
}

/// The gradient of [`Softmax`] with the same attributes: operands `y` (the
/// softmax's result) and `g` (its upstream gradient), result `dx`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SoftmaxBackward {
    /// The axis the rows run along.
    pub axis: usize,
    /// The gradient of `log_softmax`.
    pub log: bool,
}

fn name(log: bool, backward: bool) -> &'static str {
    match (log, backward) {
        (false, false) => "softmax",
        (true, false) => "log_softmax",
        (false, true) => "softmax_backward",
        (true, true) => "log_softmax_backward",
    }
}

/// `Err` unless `axis` is an axis of `shape`.
fn check_axis(op: &'static str, axis: usize, shape: &[usize]) -> Result<()> {
    if axis >= shape.len() {
        return attr_err(
            op,
            format!("axis {axis} is out of range for operand 0 of shape {shape:?}"),
        );
    }
    Ok(())
}

/// `(row length, elements after the axis)`.
fn layout(shape: &[usize], axis: usize) -> (usize, usize) {
    (shape[axis], shape[axis + 1..].iter().product())
}

/// Calls `f(row of operand 0, row of operand 1 (empty if none), out row)`
/// (for the row-wise ops: softmax, normalize and their gradients)
/// for every row along the axis: contiguous rows when the axis is the last
/// (in parallel), else each strided row gathered into and scattered from
/// buffers.
pub(super) fn rows<F>(ins: &[View], out: &mut [f32], axis: usize, f: F)
where
    F: Fn(&[f32], &[f32], &mut [f32]) + Sync + Send,
{
    let (n, inner) = layout(ins[0].shape, axis);
    if n == 0 {
        return;
    }
    if inner == 1 {
        par::for_each_plane(out, n, 4 * n, |r, o| {
            let (a, b) = (r * n, (r + 1) * n);
            let g = ins.get(1).map_or(&[][..], |v| &v.data[a..b]);
            f(&ins[0].data[a..b], g, o)
        });
        return;
    }
    // strided rows gathered into this thread's scratch: [x | g | out]
    scratch::with(Slot::Registers, 3 * n, |buf| {
        let (x, rest) = buf.split_at_mut(n);
        let (g, o) = rest.split_at_mut(n);
        for block in 0..out.len() / (n * inner) {
            for j in 0..inner {
                let at = |i: usize| block * n * inner + i * inner + j;
                for i in 0..n {
                    x[i] = ins[0].data[at(i)];
                    g[i] = ins.get(1).map_or(0.0, |v| v.data[at(i)]);
                }
                f(x, if ins.len() > 1 { g } else { &[] }, o);
                for (i, &e) in o.iter().enumerate() {
                    out[at(i)] = e;
                }
            }
        }
    })
}

impl OpDef for Softmax {
    fn name(&self) -> &'static str {
        name(self.log, false)
    }
    debug_attrs!(axis);
    fn infer_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>> {
        check_axis(self.name(), self.axis, ins[0])?;
        Ok(ins[0].to_vec())
    }
    fn eval(&self, ins: &[View], out: &mut [f32], _: &[usize], _: &RunCtx) {
        let log = self.log;
        rows(ins, out, self.axis, |x, _, o| math::softmax_row(x, o, log))
    }
    fn vjp(&self, g: &mut dyn OpBuilder, _: &[NodeId], y: NodeId, gy: NodeId) -> Grads {
        Ok(vec![Some(g.softmax_backward(y, gy, self.axis, self.log)?)])
    }
}

impl OpDef for SoftmaxBackward {
    fn name(&self) -> &'static str {
        name(self.log, true)
    }
    debug_attrs!(axis);
    fn arity(&self) -> Arity {
        Arity::Exact(2)
    }
    fn infer_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>> {
        check_axis(self.name(), self.axis, ins[0])?;
        if ins[0] != ins[1] {
            return shape_err(
                self.name(),
                format!(
                    "operand 0 (the result) has shape {:?} but operand 1 (its gradient) has shape {:?}",
                    ins[0], ins[1]
                ),
            );
        }
        Ok(ins[0].to_vec())
    }
    fn eval(&self, ins: &[View], out: &mut [f32], _: &[usize], _: &RunCtx) {
        let log = self.log;
        rows(ins, out, self.axis, |y, g, o| {
            math::softmax_grad_row(y, g, o, log)
        })
    }
    fn vjp(&self, b: &mut dyn OpBuilder, xs: &[NodeId], _: NodeId, u: NodeId) -> Grads {
        let (y, g, axis) = (xs[0], xs[1], [self.axis as isize]);
        if self.log {
            // dx = g − exp(y)·Σg: d/dg = u − Σ(u·exp(y)), d/dy = −u·exp(y)·Σg
            let ey = b.exp(y)?;
            let uey = b.mul(u, ey)?;
            let s = b.sum(uey, &axis, true)?;
            let dg = b.sub(u, s)?;
            let sg = b.sum(g, &axis, true)?;
            let t = b.mul(uey, sg)?;
            let dy = b.neg(t)?;
            return Ok(vec![Some(dy), Some(dg)]);
        }
        // dx = y·(g − Σ g·y): d/dg = softmax_backward(y, u),
        // d/dy = u·(g − Σ g·y) − g·Σ u·y
        let dg = b.softmax_backward(y, u, self.axis, false)?;
        let gy = b.mul(g, y)?;
        let s = b.sum(gy, &axis, true)?;
        let gs = b.sub(g, s)?;
        let first = b.mul(u, gs)?;
        let uy = b.mul(u, y)?;
        let t = b.sum(uy, &axis, true)?;
        let second = b.mul(g, t)?;
        let dy = b.sub(first, second)?;
        Ok(vec![Some(dy), Some(dg)])
    }
}
