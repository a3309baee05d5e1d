//! Algebraic simplification. Rules, each keeping every value bit-identical:
//! - `reshape_same_shape`, `broadcast_same_shape`: a reshape or broadcast to
//!   its operand's own shape → the operand
//! - `stop_gradient`: `stop_gradient(x)` → `x` (it only matters to autodiff,
//!   which has run)
//! - `reshape_reshape`: `reshape(reshape(x))` → one `reshape(x)`
//! - `transpose_identity`: a transpose by the identity permutation → `x`
//! - `transpose_transpose`: `transpose(transpose(x, p), q)` → one
//!   `transpose(x, p∘q)`, or `x` if that is the identity
//! - `right_identity`, `left_identity`: `x op e` / `e op x` with `e` the op's
//!   identity, bit for bit (`x + (−0)`, `x − 0`, `x · 1`, `x / 1`, `(−0) + x`,
//!   `1 · x`; taken from the ops' metadata) → `x`, when the result has `x`'s
//!   shape (no broadcasting hidden in it). `x + 0` and `x − (−0)` stay: they
//!   turn −0.0 into +0.0.

use super::pattern::{any, op, Match, Rule, RulePass};
use super::{Patch, Program};
use crate::error::Result;
use crate::graph::NodeId;
use crate::ops::Op;
use crate::ops::{Constant, Fill, Transpose};

/// The algebraic simplification pass.
pub fn pass() -> RulePass {
    let reshape = |o: &Op| matches!(o, Op::Reshape(_));
    let transpose = |o: &Op| matches!(o, Op::Transpose(_));
    RulePass::new(
        "algebraic",
        vec![
            Rule::new(
                "reshape_same_shape",
                op(reshape)
                    .bind("r")
                    .args([any().bind("x").same_shape_as("r")]),
                to_x,
            ),
            Rule::new(
                "broadcast_same_shape",
                op(|o| matches!(o, Op::Broadcast(_)))
                    .bind("r")
                    .args([any().bind("x").same_shape_as("r")]),
                to_x,
            ),
            Rule::new(
                "stop_gradient",
                op(|o| matches!(o, Op::StopGradient)).args([any().bind("x")]),
                to_x,
            ),
            Rule::new(
                "reshape_reshape",
                op(reshape).args([op(reshape).args([any().bind("x")])]),
                |p, m| {
                    let mut patch = Patch::new();
                    let op = p.graph.node(m.root)?.op.clone();
                    let new = patch.add(op, &[m.node("x").into()]);
                    patch.replace(m.root, new);
                    Ok(Some(patch))
                },
            ),
            Rule::new(
                "transpose_identity",
                op(|o| matches!(o, Op::Transpose(Transpose { perm }) if is_identity(perm)))
                    .args([any().bind("x")]),
                to_x,
            ),
            Rule::new(
                "transpose_transpose",
                op(transpose).args([op(transpose).bind("inner").args([any().bind("x")])]),
                |p, m| {
                    let (
                        Op::Transpose(Transpose { perm: outer }),
                        Op::Transpose(Transpose { perm: inner }),
                    ) = (
                        &p.graph.node(m.root)?.op,
                        &p.graph.node(m.node("inner"))?.op,
                    )
                    else {
                        return Ok(None);
                    };
                    let perm: Vec<usize> = outer.iter().map(|&q| inner[q]).collect();
                    if is_identity(&perm) {
                        return Ok(Some(Patch::replacing(m.root, m.node("x"))));
                    }
                    let mut patch = Patch::new();
                    let new = patch.add(Op::Transpose(Transpose { perm }), &[m.node("x").into()]);
                    patch.replace(m.root, new);
                    Ok(Some(patch))
                },
            ),
            Rule::new(
                "right_identity",
                op(|o| o.right_identity().is_some())
                    .bind("y")
                    .args([any().bind("x").same_shape_as("y"), any().bind("e")]),
                |p, m| identity(p, m, |o| o.right_identity()),
            ),
            Rule::new(
                "left_identity",
                op(|o| o.left_identity().is_some())
                    .bind("y")
                    .args([any().bind("e"), any().bind("x").same_shape_as("y")]),
                |p, m| identity(p, m, |o| o.left_identity()),
            ),
        ],
    )
}

/// Replaces the root by the node bound to `x`.
fn to_x(_: &Program, m: &Match) -> Result<Option<Patch>> {
    Ok(Some(Patch::replacing(m.root, m.node("x"))))
}

fn is_identity(perm: &[usize]) -> bool {
    perm.iter().enumerate().all(|(i, &d)| i == d)
}

/// `x` for the root when `e` is the root op's identity on that side (read by
/// `side` from the binary op), bit for bit.
fn identity(p: &Program, m: &Match, side: fn(&Op) -> Option<f32>) -> Result<Option<Patch>> {
    let Some(e) = side(&p.graph.node(m.root)?.op) else {
        return Ok(None);
    };
    Ok(is_const(p, m.node("e"), e)?.then(|| Patch::replacing(m.root, m.node("x"))))
}

/// Whether node `n` is a constant whose every element is `v`, bit for bit
/// (so +0.0 never stands for −0.0).
fn is_const(p: &Program, n: NodeId, v: f32) -> Result<bool> {
    let v = v.to_bits();
    Ok(match &p.graph.node(n)?.op {
        Op::Fill(Fill { value, .. }) => value.to_bits() == v,
        Op::Constant(Constant { value }) => value.data().iter().all(|&x| x.to_bits() == v),
        _ => false,
    })
}
