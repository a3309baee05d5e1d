//! Constant folding: an op whose operands are all constants (`Constant`,
//! `Fill`) is evaluated at compile time with its reference kernel and
//! replaced by its value: a `Fill` when every element is equal (any size), a
//! `Constant` otherwise (up to `MAX_CONSTANT` elements, so dumps stay small).
//! Dropout is never folded: its mask changes from run to run, nor is an op
//! whose operands or result exceed `MAX_EVALUATED` elements.

use super::{Pass, Patch, Program, Rewriter};
use crate::error::Result;
use crate::graph::NodeId;
use crate::ops::{Constant, Fill};
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
        Op::Constant(Constant { value }) => Some(value.data().to_vec()),
        Op::Fill(Fill { value, .. }) => Some(vec![*value; node.shape.numel()]),
        _ => None,
    })
}

impl Pass for ConstFold {
    fn name(&self) -> &'static str {
        "const_fold"
    }
    fn run(&self, rw: &mut Rewriter) -> Result<usize> {
        let mut folded = 0;
        for id in rw.live_nodes() {
            let Some(op) = folded_value(rw.program(), id)? else {
                continue;
            };
            let mut patch = Patch::new();
            let new = patch.add(op, &[]);
            patch.replace(id, new);
            if rw.apply("const_fold", &[id], patch)?.is_some() {
                folded += 1;
            }
        }
        Ok(folded)
    }
}

/// The constant (a `Fill` or a `Constant`) that node `id` computes, if its
/// operands are all constants and the sizes allow folding.
fn folded_value(p: &Program, id: NodeId) -> Result<Option<Op>> {
    let node = p.graph.node(id)?;
    let op = &node.op;
    let shape = node.shape.dims().to_vec();
    if op.is_interface()
        || op.is_constant()
        || op.is_random()
        || op.num_outputs() > 1
        || node.shape.numel() > MAX_EVALUATED
    {
        return Ok(None);
    }
    let operands = p.graph.operands(id);
    for &o in &operands {
        if p.graph.node(o)?.shape.numel() > MAX_EVALUATED {
            return Ok(None);
        }
    }
    let mut values = Vec::with_capacity(operands.len());
    for &o in &operands {
        match value(p, o)? {
            Some(v) => values.push((p.graph.shape(o)?.to_vec(), v)),
            None => return Ok(None),
        }
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
    Ok(if uniform {
        Some(Op::Fill(Fill {
            shape,
            value: out[0],
        }))
    } else if out.len() <= MAX_CONSTANT {
        Some(Op::Constant(Constant {
            value: Tensor::from_vec(shape, out)?,
        }))
    } else {
        None
    })
}
