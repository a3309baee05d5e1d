//! Index ops: the ops that read `i64` operands (see [`crate::dtype`]).
//! `cast` converts indices to f32 values, `gather` picks slices by index
//! (an embedding lookup), `gather_backward` is its gradient (slices
//! scatter-added back, duplicates summed), `one_hot` expands class labels.
//!
//! A run carries indices as exact f32 integers and checks every fed index
//! against the ops' ranges ([`OpDef::index_operand`]) before it starts, so
//! the kernels only meet valid indices; should one reach them anyway, it
//! selects nothing (NaN for `gather`, nothing added, an all-zero row).

use super::{all_f32, Arity, Grads, IndexRange, NodeId, OpBuilder, OpDef, RunCtx, View};
use crate::dtype::{DType, MAX_INDEX};
use crate::error::{attr_err, shape_err, KilnError, Result};
use serde::{Deserialize, Serialize};

/// The index a carried value stands for, if it is one below `size`.
fn index(v: f32, size: usize) -> Option<usize> {
    (v >= 0.0 && (v as usize) < size).then_some(v as usize)
}

/// `Err` unless an index bound fits in [`MAX_INDEX`].
fn check_bound(op: &str, what: &str, size: usize) -> Result<()> {
    if size > MAX_INDEX {
        return attr_err(
            op,
            format!("{what} is {size}; indices are limited to 0..{MAX_INDEX} (2^24)"),
        );
    }
    Ok(())
}

/// `x` converted to `to` (`torch.Tensor.to(dtype)`, ONNX `Cast`); only
/// conversions to f32 exist: an `i64` index becomes its f32 value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cast {
    /// The result's element type (f32).
    pub to: DType,
}

impl OpDef for Cast {
    fn name(&self) -> &'static str {
        "cast"
    }
    fn attrs(&self) -> Vec<(&'static str, String)> {
        vec![("to", self.to.to_string())]
    }
    fn dtype(&self, ins: &[DType]) -> Result<DType> {
        match self.to {
            DType::F32 => Ok(DType::F32),
            to => Err(KilnError::Type {
                op: "cast".into(),
                message: format!("cannot convert {} to {to}: only to f32", ins[0]),
            }),
        }
    }
    fn infer_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>> {
        Ok(ins[0].to_vec())
    }
    fn eval(&self, ins: &[View], out: &mut [f32], _: &[usize], _: &RunCtx) {
        out.copy_from_slice(ins[0].data)
    }
    /// No gradient flows into indices.
    fn vjp(&self, _: &mut dyn OpBuilder, _: &[NodeId], _: NodeId, _: NodeId) -> Grads {
        Ok(vec![None])
    }
    /// Indices are carried as f32 values already: the result is a view.
    fn view_offset(&self, _: &[usize], _: usize) -> Option<usize> {
        Some(0)
    }
}

/// `(outer, size, inner)`: the sizes before, at and after `axis` of `shape`.
fn split_at_axis(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    (
        shape[..axis].iter().product(),
        shape[axis],
        shape[axis + 1..].iter().product(),
    )
}

/// Slices of `data` along `axis` picked by `indices`:
/// `out[a.., j.., b..] = data[a.., indices[j..], b..]`, of shape
/// `data[..axis] ++ indices ++ data[axis+1..]` (`torch.index_select` for
/// 1-D indices; ONNX `Gather`, without its negative indices). Indices must
/// lie in `0..data.shape[axis]`; every run checks its feeds against that.
/// Gradient: [`GatherBackward`] for `data`, none for `indices`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gather {
    /// The axis of `data` the indices select along (non-negative).
    pub axis: usize,
}

impl OpDef for Gather {
    fn name(&self) -> &'static str {
        "gather"
    }
    debug_attrs!(axis);
    fn arity(&self) -> Arity {
        Arity::Exact(2)
    }
    fn dtype(&self, ins: &[DType]) -> Result<DType> {
        index_operand_types("gather", ins, 1)
    }
    fn infer_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>> {
        let (data, idx) = (ins[0], ins[1]);
        if self.axis >= data.len() {
            return attr_err(
                "gather",
                format!(
                    "axis {} is out of range for data of shape {data:?}",
                    self.axis
                ),
            );
        }
        check_bound("gather", "the size of the gathered axis", data[self.axis])?;
        Ok([&data[..self.axis], idx, &data[self.axis + 1..]].concat())
    }
    fn index_operand(&self, ins: &[&[usize]]) -> Option<(usize, IndexRange)> {
        let size = *ins[0].get(self.axis)?;
        Some((1, IndexRange { size, ignore: None }))
    }
    fn eval(&self, ins: &[View], out: &mut [f32], _: &[usize], _: &RunCtx) {
        let (outer, size, inner) = split_at_axis(ins[0].shape, self.axis);
        let (data, idx) = (ins[0].data, ins[1].data);
        let m = idx.len();
        for (o, block) in out.chunks_mut(m * inner).enumerate().take(outer) {
            for (&v, row) in idx.iter().zip(block.chunks_mut(inner)) {
                match index(v, size) {
                    Some(i) => {
                        let at = (o * size + i) * inner;
                        row.copy_from_slice(&data[at..at + inner]);
                    }
                    None => row.fill(f32::NAN),
                }
            }
        }
    }
    fn vjp(&self, g: &mut dyn OpBuilder, xs: &[NodeId], _: NodeId, gy: NodeId) -> Grads {
        let size = g.shape(xs[0])?[self.axis];
        let op = GatherBackward {
            axis: self.axis,
            size,
        };
        Ok(vec![
            Some(g.add_op(super::Op::GatherBackward(op), &[gy, xs[1]])?),
            None,
        ])
    }
}

/// The type rule of an op whose operand `k` holds indices: that one `i64`,
/// the others f32; the result f32.
fn index_operand_types(op: &str, ins: &[DType], k: usize) -> Result<DType> {
    if ins[k] != DType::I64 {
        return Err(KilnError::Type {
            op: op.into(),
            message: format!(
                "operand {k} holds the indices and must be i64 (declare it with Graph::input_i64), got {}",
                ins[k]
            ),
        });
    }
    let others: Vec<DType> = (ins.iter().enumerate())
        .map(|(i, &d)| if i == k { DType::F32 } else { d })
        .collect();
    all_f32(op, &others)
}

/// The gradient of [`Gather`] for its data: `gy`'s slices added into a
/// zero tensor of the data's shape at their indices, those of repeated
/// indices summed in index order (`torch.index_add`; the backward of
/// `torch.embedding`). Operands `[gy, indices]`; the result has `gy`'s
/// shape with the index dimensions replaced by `size` at `axis`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatherBackward {
    /// The data's gathered axis.
    pub axis: usize,
    /// The data's size along it.
    pub size: usize,
}

impl OpDef for GatherBackward {
    fn name(&self) -> &'static str {
        "gather_backward"
    }
    debug_attrs!(axis, size);
    fn arity(&self) -> Arity {
        Arity::Exact(2)
    }
    fn dtype(&self, ins: &[DType]) -> Result<DType> {
        index_operand_types("gather_backward", ins, 1)
    }
    fn infer_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>> {
        let (gy, idx) = (ins[0], ins[1]);
        let (a, r) = (self.axis, idx.len());
        if gy.len() < a + r || gy[a..a + r] != *idx {
            return shape_err(
                "gather_backward",
                format!(
                    "gradient of shape {gy:?} does not hold indices of shape {idx:?} at axis {a}"
                ),
            );
        }
        check_bound("gather_backward", "size", self.size)?;
        Ok([&gy[..a], &[self.size][..], &gy[a + r..]].concat())
    }
    fn index_operand(&self, _: &[&[usize]]) -> Option<(usize, IndexRange)> {
        Some((
            1,
            IndexRange {
                size: self.size,
                ignore: None,
            },
        ))
    }
    fn eval(&self, ins: &[View], out: &mut [f32], out_shape: &[usize], _: &RunCtx) {
        let (outer, size, inner) = split_at_axis(out_shape, self.axis);
        let (gy, idx) = (ins[0].data, ins[1].data);
        let m = idx.len();
        out.fill(0.0);
        for o in 0..outer {
            for (j, &v) in idx.iter().enumerate() {
                if let Some(i) = index(v, size) {
                    let src = &gy[(o * m + j) * inner..][..inner];
                    let dst = &mut out[(o * size + i) * inner..][..inner];
                    dst.iter_mut().zip(src).for_each(|(d, &s)| *d += s);
                }
            }
        }
    }
    /// Gathering is this op's adjoint.
    fn vjp(&self, g: &mut dyn OpBuilder, xs: &[NodeId], _: NodeId, gy: NodeId) -> Grads {
        let op = Gather { axis: self.axis };
        Ok(vec![
            Some(g.add_op(super::Op::Gather(op), &[gy, xs[1]])?),
            None,
        ])
    }
    fn map_sizes(&self, f: &dyn Fn(usize) -> usize) -> Option<super::Op> {
        Some(super::Op::GatherBackward(GatherBackward {
            axis: self.axis,
            size: f(self.size),
        }))
    }
}

/// Class labels expanded to rows of `classes` values: 1.0 at the label's
/// column, 0.0 elsewhere, and an all-zero row for `ignore_index`
/// (`torch.nn.functional.one_hot`, as f32, not i64). Labels must lie in
/// `0..classes` or equal `ignore_index`; every run checks its feeds.
/// No gradient.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OneHot {
    /// The number of classes: the size of the new last axis.
    pub classes: usize,
    /// A label that selects no class.
    pub ignore_index: Option<i64>,
}

impl OpDef for OneHot {
    fn name(&self) -> &'static str {
        "one_hot"
    }
    debug_attrs!(classes, ignore_index);
    fn dtype(&self, ins: &[DType]) -> Result<DType> {
        index_operand_types("one_hot", ins, 0)
    }
    fn infer_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>> {
        if self.classes == 0 {
            return attr_err("one_hot", "classes must be at least 1");
        }
        check_bound("one_hot", "classes", self.classes)?;
        Ok([ins[0], &[self.classes][..]].concat())
    }
    fn index_operand(&self, _: &[&[usize]]) -> Option<(usize, IndexRange)> {
        Some((
            0,
            IndexRange {
                size: self.classes,
                ignore: self.ignore_index,
            },
        ))
    }
    fn eval(&self, ins: &[View], out: &mut [f32], _: &[usize], _: &RunCtx) {
        for (&v, row) in ins[0].data.iter().zip(out.chunks_mut(self.classes)) {
            row.fill(0.0);
            let ignored = self.ignore_index.is_some_and(|k| k as f32 == v);
            if let Some(i) = index(v, self.classes).filter(|_| !ignored) {
                row[i] = 1.0;
            }
        }
    }
    fn vjp(&self, _: &mut dyn OpBuilder, _: &[NodeId], _: NodeId, _: NodeId) -> Grads {
        Ok(vec![None])
    }
}
