//! Element-wise `Transpose` (index arithmetic per element) → `Permute`
//! (a blocked copy kernel). Runs after the matmul pass, so only transposes
//! that no matmul could absorb are copied at all.

use super::{Pass, Program};
use crate::error::Result;
use crate::ops::Op;

/// Turns every transpose into a permute.
pub struct TransposeToPermute;

impl Pass for TransposeToPermute {
    fn name(&self) -> &'static str {
        "permute"
    }
    fn run(&self, p: &mut Program) -> Result<usize> {
        let mut n = 0;
        for id in p.live_nodes() {
            if let Op::Transpose { perm } = &p.graph.node(id)?.op {
                let perm = perm.clone();
                let x = p.graph.operands(id)[0];
                let new = p.graph.add_op(Op::Permute { perm }, &[x])?;
                p.substitute(id, new)?;
                n += 1;
            }
        }
        Ok(n)
    }
}
