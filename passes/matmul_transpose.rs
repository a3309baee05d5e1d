//! A transpose of the last two axes feeding a matmul → the matmul reads that
//! operand transposed by strides (`trans_a` / `trans_b`): no copy at all.
//! This is what turns the VJP's `gy · transpose(b)` and `transpose(a) · gy`
//! (and `Linear`'s `x · transpose(W)`) into plain GEMM calls.

use super::pattern::{any, op, Rule, RulePass};
use super::{Patch, Program};
use crate::error::Result;
use crate::graph::NodeId;
use crate::ops::Op;
use crate::ops::{MatMul, Permute, Transpose};

/// Folds last-two-axes transposes into matmul flags (rule
/// `transpose_into_matmul`).
pub fn pass() -> RulePass {
    RulePass::new(
        "matmul_transpose",
        vec![Rule::new(
            "transpose_into_matmul",
            op(|o| matches!(o, Op::MatMul(_))).args([any().bind("a"), any().bind("b")]),
            |p, m| {
                let Op::MatMul(MatMul { trans_a, trans_b }) = p.graph.node(m.root)?.op else {
                    return Ok(None);
                };
                let (a, b) = (m.node("a"), m.node("b"));
                let (sa, sb) = (swapped_source(p, a)?, swapped_source(p, b)?);
                if sa.is_none() && sb.is_none() {
                    return Ok(None);
                }
                let op = Op::MatMul(MatMul {
                    trans_a: trans_a ^ sa.is_some(),
                    trans_b: trans_b ^ sb.is_some(),
                });
                let mut patch = Patch::new();
                let new = patch.add(op, &[sa.unwrap_or(a).into(), sb.unwrap_or(b).into()]);
                patch.replace(m.root, new);
                Ok(Some(patch))
            },
        )],
    )
}

/// If `x` is a transpose that swaps exactly the last two axes, its operand.
fn swapped_source(p: &Program, x: NodeId) -> Result<Option<NodeId>> {
    if let Op::Transpose(Transpose { perm }) | Op::Permute(Permute { perm }) = &p.graph.node(x)?.op
    {
        let r = perm.len();
        let swaps_last_two = r >= 2
            && perm[r - 2] == r - 1
            && perm[r - 1] == r - 2
            && (0..r - 2).all(|i| perm[i] == i);
        if swaps_last_two {
            return Ok(Some(p.graph.operands(x)[0]));
        }
    }
    Ok(None)
}
