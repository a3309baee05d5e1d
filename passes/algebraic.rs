//! Algebraic simplification. Rewrites, each keeping every value bit-identical:
//! - `reshape(x)` to `x`'s own shape, and `broadcast(x)` to its own shape → `x`
//! - `stop_gradient(x)` → `x` (it only matters to autodiff, which has run)
//! - `reshape(reshape(x))` → one `reshape(x)`
//! - `transpose(transpose(x, p), q)` → one `transpose(x, p∘q)`, or `x` if that is the identity
//! - `x op e` / `e op x` with `e` the op's identity, bit for bit (`x + (−0)`,
//!   `x − 0`, `x · 1`, `x / 1`, `(−0) + x`, `1 · x`; taken from the ops'
//!   metadata) → `x`, when the result has `x`'s shape (no broadcasting hidden
//!   in it). `x + 0` and `x − (−0)` stay: they turn −0.0 into +0.0.

use super::{Pass, Program};
use crate::error::Result;
use crate::graph::NodeId;
use crate::ops::Op;

/// Applies the simplifications above wherever they match.
pub struct Algebraic;

/// Whether node `n` is a constant whose every element is `v`, bit for bit
/// (so +0.0 never stands for −0.0).
fn is_const(p: &Program, n: NodeId, v: f32) -> Result<bool> {
    let v = v.to_bits();
    Ok(match &p.graph.node(n)?.op {
        Op::Fill { value, .. } => value.to_bits() == v,
        Op::Constant { value } => value.data().iter().all(|&x| x.to_bits() == v),
        _ => false,
    })
}

/// The replacement for node `id`, if a rule matches.
fn simplify(p: &mut Program, id: NodeId) -> Result<Option<NodeId>> {
    let node = p.graph.node(id)?;
    let (op, shape) = (node.op.clone(), node.shape.dims().to_vec());
    let ops = p.graph.operands(id);
    let same_shape =
        |p: &Program, x: NodeId| -> Result<bool> { Ok(p.graph.shape(x)? == shape.as_slice()) };
    match op {
        Op::Reshape { .. } | Op::Broadcast { .. } if same_shape(p, ops[0])? => Ok(Some(ops[0])),
        Op::StopGradient => Ok(Some(ops[0])),
        Op::Reshape { shape: outer } => {
            if let Op::Reshape { .. } = p.graph.node(ops[0])?.op {
                let src = p.graph.operands(ops[0])[0];
                return Ok(Some(p.graph.add_op(Op::Reshape { shape: outer }, &[src])?));
            }
            Ok(None)
        }
        Op::Transpose { perm } => {
            if perm.iter().enumerate().all(|(i, &d)| i == d) {
                return Ok(Some(ops[0]));
            }
            if let Op::Transpose { perm: inner } = &p.graph.node(ops[0])?.op {
                let combined: Vec<usize> = perm.iter().map(|&q| inner[q]).collect();
                let src = p.graph.operands(ops[0])[0];
                if combined.iter().enumerate().all(|(i, &d)| i == d) {
                    return Ok(Some(src));
                }
                return Ok(Some(
                    p.graph.add_op(Op::Transpose { perm: combined }, &[src])?,
                ));
            }
            Ok(None)
        }
        Op::Binary(b) => {
            if let Some(e) = b.right_identity() {
                if is_const(p, ops[1], e)? && same_shape(p, ops[0])? {
                    return Ok(Some(ops[0]));
                }
            }
            if let Some(e) = b.left_identity() {
                if is_const(p, ops[0], e)? && same_shape(p, ops[1])? {
                    return Ok(Some(ops[1]));
                }
            }
            Ok(None)
        }
        _ => Ok(None),
    }
}

impl Pass for Algebraic {
    fn name(&self) -> &'static str {
        "algebraic"
    }
    fn run(&self, p: &mut Program) -> Result<usize> {
        let mut n = 0;
        for id in p.live_nodes() {
            if p.graph.node(id).is_err() {
                continue; // removed by an earlier rewrite in this sweep
            }
            if let Some(new) = simplify(p, id)? {
                p.substitute(id, new)?;
                n += 1;
            }
        }
        Ok(n)
    }
}
