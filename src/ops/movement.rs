//! Movement ops: reshape, element-wise transpose, broadcast, slice, pad,
//! concat and stack. Their reference kernels use plain index arithmetic.

use super::View;
use super::{NodeId, OpBuilder};
use crate::error::{attr_err, shape_err, Result};
use crate::shape::{
    broadcast_pair, broadcast_strides, checked_numel, checked_size, strided_walk, strides,
};

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
    let sx = strides(x.shape);
    let read: Vec<usize> = perm.iter().map(|&p| sx[p]).collect();
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

/// Reference kernel of `Slice`.
pub fn slice(
    x: View,
    axis: usize,
    start: usize,
    step: usize,
    out: &mut [f32],
    out_shape: &[usize],
) {
    let mut s = strides(x.shape);
    let base = start * s[axis];
    s[axis] *= step;
    strided_walk(out_shape, [&s], |i, [o]| out[i] = x.data[base + o]);
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

/// Reference kernel of `Pad`.
pub fn pad(x: View, pads: &[(usize, usize)], value: f32, out: &mut [f32], out_shape: &[usize]) {
    out.fill(value);
    let so = strides(out_shape);
    let base: usize = pads.iter().zip(&so).map(|(&(b, _), &s)| b * s).sum();
    strided_walk(x.shape, [&so], |i, [o]| out[base + o] = x.data[i]);
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
