//! Reductions (sum, mean, max over axes) and the first-max mask.

use super::View;
use super::{one, Grads, OpDef, RunCtx};
use super::{NodeId, OpBuilder};
use crate::error::{attr_err, shape_err, Result};
use crate::kernels::par;
use crate::shape::{small_strides, strided_walk, SmallDims};
use serde::{Deserialize, Serialize};

/// What a `Reduce` computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReduceKind {
    /// Sum.
    Sum,
    /// Arithmetic mean.
    Mean,
    /// Maximum (NaN propagates).
    Max,
}

impl ReduceKind {
    /// Name in dumps.
    pub fn name(self) -> &'static str {
        match self {
            ReduceKind::Sum => "reduce_sum",
            ReduceKind::Mean => "reduce_mean",
            ReduceKind::Max => "reduce_max",
        }
    }
}

/// Shape rule of `Reduce`: reduced axes removed, or kept as 1 with `keepdims`.
/// An empty reduced axis sums to 0 and averages to NaN (0/0), as PyTorch's
/// `sum` and `mean`; its maximum is an `Err` (PyTorch's `amax` raises).
pub fn reduce_shape(
    kind: ReduceKind,
    x: &[usize],
    axes: &[usize],
    keepdims: bool,
) -> Result<Vec<usize>> {
    let op = kind.name();
    if axes.is_empty() {
        return attr_err(op, "needs at least one axis");
    }
    for w in axes.windows(2) {
        if w[0] >= w[1] {
            return attr_err(op, format!("axes {axes:?} must be sorted and unique"));
        }
    }
    if let Some(&a) = axes.iter().find(|&&a| a >= x.len()) {
        return attr_err(
            op,
            format!("axis {a} is out of range for operand 0 of shape {x:?}"),
        );
    }
    if kind == ReduceKind::Max && axes.iter().any(|&a| x[a] == 0) {
        return shape_err(
            op,
            format!("the maximum over an empty axis is undefined (operand 0 has shape {x:?}, axes {axes:?})"),
        );
    }
    Ok(x.iter()
        .enumerate()
        .filter_map(|(d, &n)| {
            if axes.contains(&d) {
                keepdims.then_some(1)
            } else {
                Some(n)
            }
        })
        .collect())
}

/// Strides that map an input multi-index onto the reduced output (0 on reduced axes).
fn reduced_strides(x: &[usize], axes: &[usize]) -> SmallDims {
    let mut kept = SmallDims::zeros(x.len());
    for (d, (k, &n)) in kept.iter_mut().zip(x).enumerate() {
        *k = if axes.contains(&d) { 1 } else { n };
    }
    let mut s = small_strides(&kept);
    for &a in axes {
        s[a] = 0;
    }
    s
}

/// The reduction's combining step. The max takes `v` when it is larger or
/// NaN, as max pooling does (`kernels::pool::takes`): NaN propagates, and of
/// equal values (−0.0 and +0.0) the first in index order is kept, so a max
/// pool and the reduction it stands for agree on the sign of a zero.
#[inline(always)]
fn combine(kind: ReduceKind, acc: f32, v: f32) -> f32 {
    match kind {
        ReduceKind::Sum | ReduceKind::Mean => acc + v,
        ReduceKind::Max if crate::kernels::pool::takes(acc, v) => v,
        ReduceKind::Max => acc,
    }
}

/// Combines a contiguous run into `acc`: a sum with eight independent lanes
/// (so the loop vectorises), then folds the lanes; a max in index order
/// (lanes would lose which of two equal zeros came first).
#[inline]
fn combine_run(kind: ReduceKind, acc: f32, run: &[f32]) -> f32 {
    if kind == ReduceKind::Max {
        return run.iter().fold(acc, |a, &v| combine(kind, a, v));
    }
    let mut lanes = [if kind == ReduceKind::Max {
        f32::NEG_INFINITY
    } else {
        0.0
    }; 8];
    let mut chunks = run.chunks_exact(8);
    for c in &mut chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l = combine(kind, *l, v);
        }
    }
    let mut acc = chunks
        .remainder()
        .iter()
        .fold(acc, |a, &v| combine(kind, a, v));
    for l in lanes {
        acc = combine(kind, acc, l);
    }
    acc
}

/// `(outer, kept, inner)` when the kept axes form one contiguous run: `x`
/// is then `[outer, kept, inner]` with the outer and inner parts reduced.
fn as_outer_kept_inner(shape: &[usize], axes: &[usize]) -> Option<(usize, usize, usize)> {
    let mut kept = (0..shape.len()).filter(|d| !axes.contains(d));
    let Some(first) = kept.next() else {
        return Some((1, 1, shape.iter().product()));
    };
    let (last, count) = kept.fold((first, 1), |(_, n), d| (d, n + 1));
    if last - first + 1 != count {
        return None;
    }
    let p = |r: std::ops::Range<usize>| shape[r].iter().product::<usize>();
    Some((p(0..first), p(first..last + 1), p(last + 1..shape.len())))
}

/// Elements a reduction task reads at least.
const SPAN: usize = 4096;

/// Reference kernel of `Reduce`. Results (kept indices) go to parallel
/// tasks in slices; each combines its values in the same order (outer
/// index, then the run) whatever the thread count.
pub fn reduce(kind: ReduceKind, axes: &[usize], x: View, out: &mut [f32]) {
    let init = if kind == ReduceKind::Max {
        f32::NEG_INFINITY
    } else {
        0.0
    };
    out.fill(init);
    if x.data.is_empty() {
        // an empty axis: the sum is 0, the mean 0/0 (max is refused at build)
        if kind == ReduceKind::Mean {
            out.fill(f32::NAN);
        }
        return;
    }
    match as_outer_kept_inner(x.shape, axes) {
        Some((outer, kept, inner)) => {
            let slice = (SPAN / inner).clamp(1, kept);
            par::for_each_plane(out, slice, slice * outer * inner, |p, acc| {
                for o in 0..outer {
                    let at = (o * kept + p * slice) * inner;
                    let span = &x.data[at..at + acc.len() * inner];
                    if inner == 1 {
                        for (a, &v) in acc.iter_mut().zip(span) {
                            *a = combine(kind, *a, v);
                        }
                    } else {
                        for (a, run) in acc.iter_mut().zip(span.chunks_exact(inner)) {
                            *a = combine_run(kind, *a, run);
                        }
                    }
                }
            })
        }
        None => {
            let so = reduced_strides(x.shape, axes);
            strided_walk(x.shape, [&so], |i, [o]| {
                out[o] = combine(kind, out[o], x.data[i]);
            });
        }
    }
    if kind == ReduceKind::Mean {
        let count: usize = axes.iter().map(|&a| x.shape[a]).product();
        let inv = 1.0 / count as f32;
        out.iter_mut().for_each(|v| *v *= inv);
    }
}

/// Shape rule of `FirstMaxMask`: same as the operand.
pub fn first_max_mask_shape(x: &[usize], axis: usize) -> Result<Vec<usize>> {
    if axis >= x.len() {
        return attr_err(
            "first_max_mask",
            format!("axis {axis} is out of range for operand 0 of shape {x:?}"),
        );
    }
    Ok(x.to_vec())
}

/// Reference kernel of `FirstMaxMask`: 1 at the argmax along `axis` by
/// PyTorch's max-pooling rule (a larger value or any NaN replaces the maximum
/// so far: the first maximum, or the last NaN where there is one), 0
/// elsewhere. An empty axis has no argmax (the output is empty too).
pub fn first_max_mask(axis: usize, x: View, out: &mut [f32]) {
    let n = x.shape[axis];
    let inner: usize = x.shape[axis + 1..].iter().product();
    let outer: usize = x.shape[..axis].iter().product();
    out.fill(0.0);
    if n == 0 {
        return;
    }
    for o in 0..outer {
        for i in 0..inner {
            let base = o * n * inner + i;
            let mut best = 0;
            for k in 1..n {
                let v = x.data[base + k * inner];
                let b = x.data[base + best * inner];
                if crate::kernels::pool::takes(b, v) {
                    best = k;
                }
            }
            out[base + best * inner] = 1.0;
        }
    }
}

/// VJP of `Reduce`: the upstream gradient broadcast back over the reduced
/// axes; scaled by `1/count` for the mean; for the max, routed to the first
/// maximum along a single reduced axis (as PyTorch's max pooling and
/// `max(dim)`), or split evenly between tied maxima over several axes (as
/// `amax`).
pub fn reduce_vjp(
    kind: ReduceKind,
    axes: &[usize],
    g: &mut dyn OpBuilder,
    x: NodeId,
    y: NodeId,
    gy: NodeId,
) -> Result<NodeId> {
    let xs = g.shape(x)?.to_vec();
    let kept: Vec<isize> = xs
        .iter()
        .enumerate()
        .map(|(d, &n)| if axes.contains(&d) { 1 } else { n as isize })
        .collect();
    let gk = g.reshape(gy, &kept)?;
    match kind {
        ReduceKind::Sum => g.broadcast_to(gk, &xs),
        ReduceKind::Mean => {
            let count: usize = axes.iter().map(|&a| xs[a]).product();
            let b = g.broadcast_to(gk, &xs)?;
            if !crate::shape::is_symbolic(&[count]) {
                return g.mul_scalar(b, 1.0 / count as f32);
            }
            // a count of the symbolic batch is counted by ops, so that
            // specialising the graph counts the concrete batch (the
            // compiler folds it to the same constant `1/count`): ones over
            // the reduced axes only, summed to one scalar
            let reduced: Vec<usize> = (0..xs.len())
                .map(|d| if axes.contains(&d) { xs[d] } else { 1 })
                .collect();
            let ones = g.fill(&reduced, 1.0)?;
            let n = g.sum_all(ones)?;
            let inv = g.recip(n)?;
            g.mul(b, inv)
        }
        ReduceKind::Max => {
            if let [axis] = axes {
                // only the argmax receives the gradient (a NaN or ∞ upstream
                // gradient reaches no other cell, as PyTorch's scatter)
                let mask = g.first_max_mask(x, *axis as isize)?;
                let zero = g.scalar(0.0)?;
                return g.select(mask, gk, zero);
            }
            let yk = g.reshape(y, &kept)?;
            let hits = g.eq(x, yk)?;
            let ax: Vec<isize> = axes.iter().map(|&a| a as isize).collect();
            let n = g.sum(hits, &ax, true)?;
            let share = g.div(hits, n)?;
            g.mul(share, gk)
        }
    }
}

/// Reduction over `axes` (`torch.sum` / `torch.mean` / `torch.amax`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reduce {
    /// Sum, mean or max.
    pub kind: ReduceKind,
    /// Reduced axes, sorted and unique.
    pub axes: Vec<usize>,
    /// Keep reduced axes as size-1 dimensions.
    pub keepdims: bool,
}

impl OpDef for Reduce {
    fn name(&self) -> &'static str {
        self.kind.name()
    }
    fn attrs(&self) -> Vec<(&'static str, String)> {
        vec![
            ("axes", format!("{:?}", self.axes)),
            ("keepdims", self.keepdims.to_string()),
        ]
    }
    fn infer_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>> {
        reduce_shape(self.kind, ins[0], &self.axes, self.keepdims)
    }
    fn eval(&self, ins: &[View], out: &mut [f32], _: &[usize], _: &RunCtx) {
        reduce(self.kind, &self.axes, ins[0], out)
    }
    fn vjp(&self, g: &mut dyn OpBuilder, xs: &[NodeId], y: NodeId, gy: NodeId) -> Grads {
        one(reduce_vjp(self.kind, &self.axes, g, xs[0], y, gy))
    }
}

/// 1 at the argmax along `axis`, 0 elsewhere: the first (lowest-index)
/// maximum, or the last NaN where there is one (PyTorch's max-pooling rule).
/// Piecewise constant: no gradient.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FirstMaxMask {
    /// The axis searched.
    pub axis: usize,
}

impl OpDef for FirstMaxMask {
    fn name(&self) -> &'static str {
        "first_max_mask"
    }
    fn attrs(&self) -> Vec<(&'static str, String)> {
        vec![("axis", self.axis.to_string())]
    }
    fn infer_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>> {
        first_max_mask_shape(ins[0], self.axis)
    }
    fn eval(&self, ins: &[View], out: &mut [f32], _: &[usize], _: &RunCtx) {
        first_max_mask(self.axis, ins[0], out)
    }
    fn vjp(&self, _: &mut dyn OpBuilder, _: &[NodeId], _: NodeId, _: NodeId) -> Grads {
        Ok(vec![None])
    }
}
