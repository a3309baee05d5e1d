//! Element-wise `Transpose` (index arithmetic per element) → `Permute`
//! (a blocked copy kernel). Runs after the matmul pass, so only transposes
//! that no matmul could absorb are copied at all.

use super::pattern::{any, op, Rule, RulePass};
use super::Patch;
use crate::ops::Op;
use crate::ops::{Permute, Transpose};

/// Turns every transpose into a permute (rule `transpose_to_permute`).
pub fn pass() -> RulePass {
    RulePass::new(
        "permute",
        vec![Rule::new(
            "transpose_to_permute",
            op(|o| matches!(o, Op::Transpose(_))).args([any().bind("x")]),
            |p, m| {
                let Op::Transpose(Transpose { perm }) = &p.graph.node(m.root)?.op else {
                    return Ok(None);
                };
                let mut patch = Patch::new();
                let new = patch.add(
                    Op::Permute(Permute { perm: perm.clone() }),
                    &[m.node("x").into()],
                );
                patch.replace(m.root, new);
                Ok(Some(patch))
            },
        )],
    )
    .after(&["matmul_transpose"])
}
