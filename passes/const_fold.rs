//! Constant folding: an op whose operands are all constants (`Constant`,
//! `Fill`) is evaluated at compile time with its reference kernel and
//! replaced by its value: a `Fill` when every element is equal (any size), a
//! `Constant` otherwise (up to `MAX_CONSTANT` elements, so dumps stay small).
//! Dropout is never folded: its mask changes from run to run, nor is an op
//! whose operands or result exceed `MAX_EVALUATED` elements.

use super::{Pass, Program};
use crate::error::Result;
use crate::graph::NodeId;
use crate::ops::{Op, RunCtx, View};
use crate::tensor::Tensor;

/// Largest non-uniform result folded into a `Constant`.
const MAX_CONSTANT: usize = 1 << 16;

/// Largest operand or result evaluated at compile time (16 MiB of f32): a
/// larger one is left to run, so compiling never allocates what running
/// would not.
const MAX_EVALUATED: usize = 1 << 22;

/// Folds ops on constants.
pub struct ConstFold;

/// The value of a constant node.
fn value(p: &Program, n: NodeId) -> Result<Option<Vec<f32>>> {
    let node = p.graph.node(n)?;
    Ok(match &node.op {
        Op::Constant { value } => Some(value.data().to_vec()),
        Op::Fill { value, .. } => Some(vec![*value; node.shape.numel()]),
        _ => None,
    })
}

impl Pass for ConstFold {
    fn name(&self) -> &'static str {
        "const_fold"
    }
    fn run(&self, p: &mut Program) -> Result<usize> {
        let mut folded = 0;
        for id in p.live_nodes() {
            let node = p.graph.node(id)?;
            let op = node.op.clone();
            let shape = node.shape.dims().to_vec();
            if matches!(
                op,
                Op::Input { .. }
                    | Op::Param { .. }
                    | Op::Constant { .. }
                    | Op::Fill { .. }
                    | Op::Dropout { .. }
            ) || op.num_outputs() > 1
                || node.shape.numel() > MAX_EVALUATED
            {
                continue;
            }
            let operands = p.graph.operands(id);
            let mut too_large = false;
            for &o in &operands {
                too_large |= p.graph.node(o)?.shape.numel() > MAX_EVALUATED;
            }
            if too_large {
                continue;
            }
            let mut values = Vec::with_capacity(operands.len());
            for &o in &operands {
                match value(p, o)? {
                    Some(v) => values.push((p.graph.shape(o)?.to_vec(), v)),
                    None => break,
                }
            }
            if values.len() != operands.len() {
                continue;
            }
            let views: Vec<View> = values
                .iter()
                .map(|(s, d)| View { shape: s, data: d })
                .collect();
            let mut out = vec![0.0; shape.iter().product()];
            op.eval(&views, &mut out, &shape, &RunCtx::default());
            let uniform = out
                .first()
                .is_some_and(|&f| out.iter().all(|&v| v.to_bits() == f.to_bits()));
            let new = if uniform {
                p.graph.fill(&shape, out[0])?
            } else if out.len() <= MAX_CONSTANT {
                p.graph.constant(Tensor::from_vec(shape, out)?)?
            } else {
                continue;
            };
            p.substitute(id, new)?;
            folded += 1;
        }
        Ok(folded)
    }
}
