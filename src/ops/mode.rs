//! `TrainEval`: the one place where a graph differs between training and
//! evaluation (PyTorch's `module.train()` / `module.eval()`), e.g.
//! BatchNorm's batch statistics against its running statistics.
//!
//! Compilation binds the mode ([`crate::CompileOptions::training`]): every
//! `train_eval(a, b)` is replaced by `a` or `b` before any pass runs, so the
//! branch not taken is never computed and passes see one mode's graph.
//! [`crate::Graph::grad`] differentiates each mode on its own.

use super::{Arity, Grads, NodeId, OpBuilder, OpDef, RunCtx, View};
use crate::error::{shape_err, Result};

/// `train` in training mode, `eval` in evaluation mode; both operands have
/// the output's shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrainEval;

impl OpDef for TrainEval {
    fn name(&self) -> &'static str {
        "train_eval"
    }
    fn arity(&self) -> Arity {
        Arity::Exact(2)
    }
    fn infer_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>> {
        if ins[0] != ins[1] {
            return shape_err(
                "train_eval",
                format!(
                    "the training value has shape {:?}, the evaluation value {:?}: they must be equal",
                    ins[0], ins[1]
                ),
            );
        }
        Ok(ins[0].to_vec())
    }
    fn eval(&self, ins: &[View], out: &mut [f32], _: &[usize], ctx: &RunCtx) {
        out.copy_from_slice(ins[usize::from(!ctx.training)].data)
    }
    /// The gradient goes to both operands here; [`crate::Graph::grad`]
    /// keeps only the one of the mode it is differentiating.
    fn vjp(&self, _: &mut dyn OpBuilder, _: &[NodeId], _: NodeId, gy: NodeId) -> Grads {
        Ok(vec![Some(gy), Some(gy)])
    }
}
