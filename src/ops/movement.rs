//! Movement ops: reshape, element-wise transpose, broadcast, slice, pad,
//! concat and stack. Their reference kernels use plain index arithmetic.

use super::View;
use super::{one, same_dtype, Arity, Grads, Op, OpDef, RunCtx};
use super::{NodeId, OpBuilder};
use crate::dtype::DType;
use crate::error::{attr_err, shape_err, Result};
use crate::shape::{
    broadcast_pair, broadcast_strides, checked_numel, checked_size, small_strides, strided_walk,
    SmallDims,
};
use serde::{Deserialize, Serialize};

/// Shape rule of `Reshape`: sizes must agree.
pub fn reshape_shape(x: &[usize], shape: &[usize]) -> Result<Vec<usize>> {
    let (a, b) = (
        x.iter().product::<usize>(),
        checked_numel("reshape", shape)?,
    );
    if a != b {
        return shape_err(
            "reshape",
            format!("operand 0 of shape {x:?} has {a} elements, target shape {shape:?} has {b}"),
        );
    }
    Ok(shape.to_vec())
}

/// Shape rule of `Transpose` and `Permute` (named `op` in errors): `perm`
/// must be a permutation of the operand's axes.
pub fn transpose_shape(op: &str, x: &[usize], perm: &[usize]) -> Result<Vec<usize>> {
    let mut seen = vec![false; x.len()];
    let valid = perm.len() == x.len()
        && perm
            .iter()
            .all(|&p| p < x.len() && !std::mem::replace(&mut seen[p], true));
    if !valid {
        return attr_err(
            op,
            format!(
                "perm {perm:?} is not a permutation of the {} axes of operand 0 (shape {x:?})",
                x.len()
            ),
        );
    }
    Ok(perm.iter().map(|&p| x[p]).collect())
}

/// Reference kernel of `Transpose`: per-element index arithmetic (the slow generic form).
pub fn transpose(perm: &[usize], x: View, out: &mut [f32], out_shape: &[usize]) {
    let sx = small_strides(x.shape);
    let mut read = SmallDims::zeros(perm.len());
    for (r, &p) in read.iter_mut().zip(perm) {
        *r = sx[p];
    }
    strided_walk(out_shape, [&read], |i, [o]| out[i] = x.data[o]);
}

/// Shape rule of `Broadcast`: the operand must broadcast to exactly `shape`.
pub fn broadcast_shape(x: &[usize], shape: &[usize]) -> Result<Vec<usize>> {
    if x.len() > shape.len() || broadcast_pair(x, shape).as_deref() != Some(shape) {
        return shape_err(
            "broadcast",
            format!("operand 0 of shape {x:?} cannot be broadcast to {shape:?}"),
        );
    }
    Ok(shape.to_vec())
}

/// Reference kernel of `Broadcast`.
pub fn broadcast(x: View, out: &mut [f32], out_shape: &[usize]) {
    let s = broadcast_strides(x.shape, out_shape);
    strided_walk(out_shape, [&s], |i, [o]| out[i] = x.data[o]);
}

/// Shape rule of `Slice`.
pub fn slice_shape(
    x: &[usize],
    axis: usize,
    start: usize,
    end: usize,
    step: usize,
) -> Result<Vec<usize>> {
    if axis >= x.len() {
        return attr_err(
            "slice",
            format!("axis {axis} is out of range for operand 0 of shape {x:?}"),
        );
    }
    if step == 0 {
        return attr_err("slice", "step must be at least 1");
    }
    if start > end || end > x[axis] {
        return attr_err(
            "slice",
            format!(
                "range {start}..{end} is not within 0..{} of axis {axis} (operand 0 shape {x:?})",
                x[axis]
            ),
        );
    }
    let mut out = x.to_vec();
    out[axis] = (end - start).div_ceil(step);
    Ok(out)
}

/// Reference kernel of `Slice`: contiguous runs copied whole (all the
/// kept part of each outer row with step 1, else one inner block per kept
/// index).
pub fn slice(
    x: View,
    axis: usize,
    start: usize,
    step: usize,
    out: &mut [f32],
    out_shape: &[usize],
) {
    let inner: usize = x.shape[axis + 1..].iter().product();
    let (n_in, n_out) = (x.shape[axis], out_shape[axis]);
    if inner == 0 || n_out == 0 {
        return;
    }
    let run = if step == 1 { n_out * inner } else { inner };
    for (r, dst) in out.chunks_exact_mut(run).enumerate() {
        // run r: outer row o, kept index k (k = 0 when the run is the whole row)
        let (o, k) = if step == 1 {
            (r, 0)
        } else {
            (r / n_out, r % n_out)
        };
        let src = (o * n_in + start + k * step) * inner;
        dst.copy_from_slice(&x.data[src..src + run]);
    }
}

/// Shape rule of `Pad`: one `(before, after)` pair per dimension.
pub fn pad_shape(x: &[usize], pads: &[(usize, usize)]) -> Result<Vec<usize>> {
    if pads.len() != x.len() {
        return attr_err(
            "pad",
            format!(
                "needs one (before, after) pair per dimension: got {} for operand 0 of shape {x:?}",
                pads.len()
            ),
        );
    }
    x.iter()
        .zip(pads)
        .enumerate()
        .map(|(d, (&n, &(b, a)))| {
            let size = n.checked_add(b).and_then(|s| s.checked_add(a));
            checked_size(
                "pad",
                &format!("padded size of dim {d} ({n} + {b} + {a})"),
                size,
            )
        })
        .collect()
}

/// Reference kernel of `Pad`: the padding value everywhere, then each row
/// of the operand (its last axis) copied whole to its place.
pub fn pad(x: View, pads: &[(usize, usize)], value: f32, out: &mut [f32], out_shape: &[usize]) {
    out.fill(value);
    let so = small_strides(out_shape);
    let base: usize = pads.iter().zip(so.iter()).map(|(&(b, _), &s)| b * s).sum();
    let Some((&len, rows)) = x.shape.split_last() else {
        out[base] = x.data[0];
        return;
    };
    if len == 0 {
        return;
    }
    let mut r = 0;
    strided_walk(rows, [&so[..rows.len()]], |_, [o]| {
        out[base + o..base + o + len].copy_from_slice(&x.data[r * len..(r + 1) * len]);
        r += 1;
    });
}

/// Shape rule of `Concat`: equal ranks, equal sizes except along `axis`.
pub fn concat_shape(ins: &[&[usize]], axis: usize) -> Result<Vec<usize>> {
    let first = ins[0];
    if axis >= first.len() {
        return attr_err(
            "concat",
            format!("axis {axis} is out of range for operand 0 of shape {first:?}"),
        );
    }
    let mut out = first.to_vec();
    for (i, s) in ins.iter().enumerate().skip(1) {
        let fits = s.len() == first.len() && (0..s.len()).all(|d| d == axis || s[d] == first[d]);
        if !fits {
            return shape_err(
                "concat",
                format!("operand {i} has shape {s:?}, operand 0 has {first:?}: they may differ only along axis {axis}"),
            );
        }
        out[axis] = checked_size(
            "concat",
            &format!("size of axis {axis}"),
            out[axis].checked_add(s[axis]),
        )?;
    }
    Ok(out)
}

/// Reference kernel of `Concat`.
pub fn concat(ins: &[View], axis: usize, out: &mut [f32], out_shape: &[usize]) {
    let outer: usize = out_shape[..axis].iter().product();
    let inner: usize = out_shape[axis + 1..].iter().product();
    let row = out_shape[axis] * inner;
    let mut offset = 0;
    for x in ins {
        let chunk = x.shape[axis] * inner;
        for o in 0..outer {
            out[o * row + offset..o * row + offset + chunk]
                .copy_from_slice(&x.data[o * chunk..(o + 1) * chunk]);
        }
        offset += chunk;
    }
}

/// Shape rule of `Stack`: equal shapes, new axis at `axis` (0 ..= rank).
pub fn stack_shape(ins: &[&[usize]], axis: usize) -> Result<Vec<usize>> {
    let first = ins[0];
    if axis > first.len() {
        return attr_err(
            "stack",
            format!(
                "axis {axis} is out of range 0..={} for operand 0 of shape {first:?}",
                first.len()
            ),
        );
    }
    if let Some((i, s)) = ins.iter().enumerate().find(|(_, s)| *s != &first) {
        return shape_err(
            "stack",
            format!("operand {i} has shape {s:?}, operand 0 has {first:?}: they must be equal"),
        );
    }
    let mut out = first.to_vec();
    out.insert(axis, ins.len());
    Ok(out)
}

/// Reference kernel of `Stack`.
pub fn stack(ins: &[View], axis: usize, out: &mut [f32]) {
    let inner: usize = ins[0].shape[axis..].iter().product();
    let outer: usize = ins[0].shape[..axis].iter().product();
    for (k, x) in ins.iter().enumerate() {
        for o in 0..outer {
            let dst = (o * ins.len() + k) * inner;
            out[dst..dst + inner].copy_from_slice(&x.data[o * inner..(o + 1) * inner]);
        }
    }
}

/// The inverse of a permutation.
pub fn inverse_perm(perm: &[usize]) -> Vec<usize> {
    let mut inv = vec![0; perm.len()];
    for (i, &p) in perm.iter().enumerate() {
        inv[p] = i;
    }
    inv
}

/// VJP of `Transpose`: transpose back with the inverse permutation.
pub fn transpose_vjp(perm: &[usize], g: &mut dyn OpBuilder, gy: NodeId) -> Result<NodeId> {
    g.transpose(gy, &inverse_perm(perm))
}

/// VJP of `Slice`: the upstream gradient placed back at the sliced
/// positions, zeros elsewhere (interleave zeros for the step, then pad).
pub fn slice_vjp(
    axis: usize,
    start: usize,
    step: usize,
    g: &mut dyn OpBuilder,
    x: NodeId,
    gy: NodeId,
) -> Result<NodeId> {
    let xs = g.shape(x)?.to_vec();
    let gs = g.shape(gy)?.to_vec();
    let (n, dim) = (gs[axis], xs[axis]);
    let mut spread = gy;
    if step > 1 {
        let mut split: Vec<isize> = gs.iter().map(|&d| d as isize).collect();
        split.insert(axis + 1, 1);
        let s = g.reshape(gy, &split)?;
        let mut pads = vec![(0, 0); split.len()];
        pads[axis + 1] = (0, step - 1);
        let s = g.pad(s, &pads, 0.0)?;
        let mut merged: Vec<isize> = gs.iter().map(|&d| d as isize).collect();
        merged[axis] = (n * step) as isize;
        spread = g.reshape(s, &merged)?;
    }
    let covered = start + n * step;
    let mut pads = vec![(0, 0); xs.len()];
    pads[axis] = (start, dim.saturating_sub(covered));
    let padded = g.pad(spread, &pads, 0.0)?;
    if covered > dim {
        return g.slice(padded, axis as isize, 0, dim, 1);
    }
    Ok(padded)
}

/// VJP of `Pad`: the upstream gradient with the padding sliced off.
pub fn pad_vjp(
    pads: &[(usize, usize)],
    g: &mut dyn OpBuilder,
    x: NodeId,
    gy: NodeId,
) -> Result<NodeId> {
    let xs = g.shape(x)?.to_vec();
    let mut h = gy;
    for (d, &(before, after)) in pads.iter().enumerate() {
        if before + after > 0 {
            h = g.slice(h, d as isize, before, before + xs[d], 1)?;
        }
    }
    Ok(h)
}

/// VJP of `Concat`: each operand gets its slice of the upstream gradient.
pub fn concat_vjp(
    axis: usize,
    g: &mut dyn OpBuilder,
    xs: &[NodeId],
    gy: NodeId,
) -> Result<Vec<Option<NodeId>>> {
    let mut offset = 0;
    let mut out = Vec::with_capacity(xs.len());
    for &x in xs {
        let len = g.shape(x)?[axis];
        out.push(Some(g.slice(gy, axis as isize, offset, offset + len, 1)?));
        offset += len;
    }
    Ok(out)
}

/// VJP of `Stack`: each operand gets its entry of the upstream gradient.
pub fn stack_vjp(
    axis: usize,
    g: &mut dyn OpBuilder,
    xs: &[NodeId],
    gy: NodeId,
) -> Result<Vec<Option<NodeId>>> {
    let mut out = Vec::with_capacity(xs.len());
    for (k, &x) in xs.iter().enumerate() {
        let shape: Vec<isize> = g.shape(x)?.iter().map(|&d| d as isize).collect();
        let s = g.slice(gy, axis as isize, k, k + 1, 1)?;
        out.push(Some(g.reshape(s, &shape)?));
    }
    Ok(out)
}

/// Same data, new shape of equal size (`torch.reshape`): a view, no copy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Reshape {
    /// The new shape.
    pub shape: Vec<usize>,
}

impl OpDef for Reshape {
    fn name(&self) -> &'static str {
        "reshape"
    }
    fn dtype(&self, ins: &[DType]) -> Result<DType> {
        same_dtype(self.name(), ins)
    }
    debug_attrs!(shape);
    fn infer_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>> {
        reshape_shape(ins[0], &self.shape)
    }
    fn map_sizes(&self, f: &dyn Fn(usize) -> usize) -> Option<Op> {
        let shape = self.shape.iter().map(|&d| f(d)).collect();
        Some(Op::Reshape(Reshape { shape }))
    }
    fn eval(&self, ins: &[View], out: &mut [f32], _: &[usize], _: &RunCtx) {
        out.copy_from_slice(ins[0].data)
    }
    fn vjp(&self, g: &mut dyn OpBuilder, xs: &[NodeId], _: NodeId, gy: NodeId) -> Grads {
        let shape: Vec<isize> = g.shape(xs[0])?.iter().map(|&d| d as isize).collect();
        one(g.reshape(gy, &shape))
    }
    fn view_offset(&self, _: &[usize], _: usize) -> Option<usize> {
        Some(0)
    }
}

/// Element-wise transpose: output dim `i` is input dim `perm[i]` (index
/// arithmetic per element; `torch.permute` followed by `contiguous`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Transpose {
    /// The permutation.
    pub perm: Vec<usize>,
}

impl OpDef for Transpose {
    fn name(&self) -> &'static str {
        "transpose"
    }
    fn dtype(&self, ins: &[DType]) -> Result<DType> {
        same_dtype(self.name(), ins)
    }
    debug_attrs!(perm);
    fn infer_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>> {
        transpose_shape("transpose", ins[0], &self.perm)
    }
    fn eval(&self, ins: &[View], out: &mut [f32], out_shape: &[usize], _: &RunCtx) {
        transpose(&self.perm, ins[0], out, out_shape)
    }
    fn vjp(&self, g: &mut dyn OpBuilder, _: &[NodeId], _: NodeId, gy: NodeId) -> Grads {
        one(transpose_vjp(&self.perm, g, gy))
    }
}

/// The fused form of `Transpose`: the same values, computed by a blocked
/// copy kernel instead of per-element index arithmetic.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Permute {
    /// The permutation (output dim `i` is input dim `perm[i]`).
    pub perm: Vec<usize>,
}

impl OpDef for Permute {
    fn name(&self) -> &'static str {
        "permute"
    }
    fn dtype(&self, ins: &[DType]) -> Result<DType> {
        same_dtype(self.name(), ins)
    }
    debug_attrs!(perm);
    fn infer_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>> {
        transpose_shape("permute", ins[0], &self.perm)
    }
    fn eval(&self, ins: &[View], out: &mut [f32], _: &[usize], _: &RunCtx) {
        crate::kernels::permute::permute(ins[0].data, ins[0].shape, &self.perm, out)
    }
    fn vjp(&self, g: &mut dyn OpBuilder, _: &[NodeId], _: NodeId, gy: NodeId) -> Grads {
        let perm = inverse_perm(&self.perm);
        one(g.add_op(Op::Permute(Permute { perm }), &[gy]))
    }
}

/// Numpy broadcast to `shape` (`torch.broadcast_to`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Broadcast {
    /// Target shape.
    pub shape: Vec<usize>,
}

impl OpDef for Broadcast {
    fn name(&self) -> &'static str {
        "broadcast"
    }
    fn dtype(&self, ins: &[DType]) -> Result<DType> {
        same_dtype(self.name(), ins)
    }
    debug_attrs!(shape);
    fn infer_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>> {
        broadcast_shape(ins[0], &self.shape)
    }
    fn map_sizes(&self, f: &dyn Fn(usize) -> usize) -> Option<Op> {
        let shape = self.shape.iter().map(|&d| f(d)).collect();
        Some(Op::Broadcast(Broadcast { shape }))
    }
    fn eval(&self, ins: &[View], out: &mut [f32], out_shape: &[usize], _: &RunCtx) {
        broadcast(ins[0], out, out_shape)
    }
    fn vjp(&self, _: &mut dyn OpBuilder, _: &[NodeId], _: NodeId, gy: NodeId) -> Grads {
        Ok(vec![Some(gy)])
    }
}

/// `start..end` with `step` along `axis` (`x[start:end:step]` on that axis).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Slice {
    /// Sliced axis.
    pub axis: usize,
    /// First index taken.
    pub start: usize,
    /// One past the last index considered.
    pub end: usize,
    /// Step (≥ 1).
    pub step: usize,
}

impl OpDef for Slice {
    fn name(&self) -> &'static str {
        "slice"
    }
    fn dtype(&self, ins: &[DType]) -> Result<DType> {
        same_dtype(self.name(), ins)
    }
    debug_attrs!(axis, end, start, step);
    fn infer_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>> {
        slice_shape(ins[0], self.axis, self.start, self.end, self.step)
    }
    fn map_sizes(&self, f: &dyn Fn(usize) -> usize) -> Option<Op> {
        let (start, end) = (f(self.start), f(self.end));
        Some(Op::Slice(Slice {
            start,
            end,
            ..*self
        }))
    }
    fn eval(&self, ins: &[View], out: &mut [f32], out_shape: &[usize], _: &RunCtx) {
        slice(ins[0], self.axis, self.start, self.step, out, out_shape)
    }
    /// A slice of consecutive indices over axes before `axis` of size 1 (or
    /// of the whole axis) is one contiguous range of the input: a view.
    fn view_offset(&self, input: &[usize], len: usize) -> Option<usize> {
        let dim = *input.get(self.axis)?;
        let outer: usize = input[..self.axis].iter().product();
        let inner: usize = input[self.axis + 1..].iter().product();
        let whole = self.start == 0 && self.end >= dim;
        match len {
            0 => Some(0),
            _ => (self.step == 1 && (outer == 1 || whole)).then(|| self.start * inner),
        }
    }
    fn vjp(&self, g: &mut dyn OpBuilder, xs: &[NodeId], _: NodeId, gy: NodeId) -> Grads {
        one(slice_vjp(self.axis, self.start, self.step, g, xs[0], gy))
    }
}

/// Constant padding: `pads[d] = (before, after)` for every dimension `d`
/// (`torch.nn.functional.pad`, mode `constant`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pad {
    /// Padding per dimension.
    pub pads: Vec<(usize, usize)>,
    /// The value of padded cells.
    #[serde(with = "super::source::serde_f32")]
    pub value: f32,
}

impl OpDef for Pad {
    fn name(&self) -> &'static str {
        "pad"
    }
    fn attrs(&self) -> Vec<(&'static str, String)> {
        vec![
            ("pads", format!("{:?}", self.pads)),
            ("value", super::fmt_f32(self.value)),
        ]
    }
    fn infer_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>> {
        pad_shape(ins[0], &self.pads)
    }
    /// Widths derived from the batch (a scan gradient pads a flat carry
    /// by a batch-sized part) specialise with it.
    fn map_sizes(&self, f: &dyn Fn(usize) -> usize) -> Option<Op> {
        Some(Op::Pad(Pad {
            pads: self.pads.iter().map(|&(lo, hi)| (f(lo), f(hi))).collect(),
            value: self.value,
        }))
    }
    fn eval(&self, ins: &[View], out: &mut [f32], out_shape: &[usize], _: &RunCtx) {
        pad(ins[0], &self.pads, self.value, out, out_shape)
    }
    fn vjp(&self, g: &mut dyn OpBuilder, xs: &[NodeId], _: NodeId, gy: NodeId) -> Grads {
        one(pad_vjp(&self.pads, g, xs[0], gy))
    }
}

/// Concatenation of all operands along an existing `axis` (`torch.cat`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Concat {
    /// The axis.
    pub axis: usize,
}

impl OpDef for Concat {
    fn name(&self) -> &'static str {
        "concat"
    }
    fn dtype(&self, ins: &[DType]) -> Result<DType> {
        same_dtype(self.name(), ins)
    }
    debug_attrs!(axis);
    fn arity(&self) -> Arity {
        Arity::AtLeastOne
    }
    fn infer_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>> {
        concat_shape(ins, self.axis)
    }
    fn eval(&self, ins: &[View], out: &mut [f32], out_shape: &[usize], _: &RunCtx) {
        concat(ins, self.axis, out, out_shape)
    }
    fn vjp(&self, g: &mut dyn OpBuilder, xs: &[NodeId], _: NodeId, gy: NodeId) -> Grads {
        concat_vjp(self.axis, g, xs, gy)
    }
}

/// Stacking of equally shaped operands along a new `axis` (`torch.stack`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stack {
    /// Position of the new axis.
    pub axis: usize,
}

impl OpDef for Stack {
    fn name(&self) -> &'static str {
        "stack"
    }
    fn dtype(&self, ins: &[DType]) -> Result<DType> {
        same_dtype(self.name(), ins)
    }
    debug_attrs!(axis);
    fn arity(&self) -> Arity {
        Arity::AtLeastOne
    }
    fn infer_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>> {
        stack_shape(ins, self.axis)
    }
    fn eval(&self, ins: &[View], out: &mut [f32], _: &[usize], _: &RunCtx) {
        stack(ins, self.axis, out)
    }
    fn vjp(&self, g: &mut dyn OpBuilder, xs: &[NodeId], _: NodeId, gy: NodeId) -> Grads {
        stack_vjp(self.axis, g, xs, gy)
    }
}

/// The identity whose gradient is zero (`torch.Tensor.detach`,
/// `jax.lax.stop_gradient`): a view, no copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StopGradient;

impl OpDef for StopGradient {
    fn name(&self) -> &'static str {
        "stop_gradient"
    }
    fn infer_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>> {
        Ok(ins[0].to_vec())
    }
    fn eval(&self, ins: &[View], out: &mut [f32], _: &[usize], _: &RunCtx) {
        out.copy_from_slice(ins[0].data)
    }
    fn vjp(&self, _: &mut dyn OpBuilder, _: &[NodeId], _: NodeId, _: NodeId) -> Grads {
        Ok(vec![None])
    }
    fn view_offset(&self, _: &[usize], _: usize) -> Option<usize> {
        Some(0)
    }
}

/// Output `index` of a multi-output op: a view of part of its buffer (at
/// `index · len`), no kernel of its own.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Output {
    /// Which output.
    pub index: usize,
}

impl OpDef for Output {
    fn name(&self) -> &'static str {
        "output"
    }
    debug_attrs!(index);
    fn infer_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>> {
        Ok(ins[0].to_vec())
    }
    fn eval(&self, ins: &[View], out: &mut [f32], _: &[usize], _: &RunCtx) {
        let len = out.len();
        out.copy_from_slice(&ins[0].data[self.index * len..][..len]);
    }
    // A multi-output op's cotangent is its first output's; the other outputs
    // (max-pool indices) are piecewise constant.
    fn vjp(&self, _: &mut dyn OpBuilder, _: &[NodeId], _: NodeId, gy: NodeId) -> Grads {
        Ok(vec![(self.index == 0).then_some(gy)])
    }
    fn view_offset(&self, _: &[usize], len: usize) -> Option<usize> {
        Some(self.index * len)
    }
}
