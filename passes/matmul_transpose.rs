//! A transpose of the last two axes feeding a matmul → the matmul reads that
//! operand transposed by strides (`trans_a` / `trans_b`): no copy at all.
//! This is what turns the VJP's `gy · transpose(b)` and `transpose(a) · gy`
//! (and `Linear`'s `x · transpose(W)`) into plain GEMM calls.

use super::{Pass, Program};
use crate::error::Result;
use crate::graph::NodeId;
use crate::ops::Op;

/// Folds last-two-axes transposes into matmul flags.
pub struct MatMulTranspose;

/// If `x` is a transpose that swaps exactly the last two axes, its operand.
fn swapped_source(p: &Program, x: NodeId) -> Result<Option<NodeId>> {
    if let Op::Transpose { perm } | Op::Permute { perm } = &p.graph.node(x)?.op {
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

impl Pass for MatMulTranspose {
    fn name(&self) -> &'static str {
        "matmul_transpose"
    }
    fn run(&self, p: &mut Program) -> Result<usize> {
        let mut n = 0;
        for id in p.live_nodes() {
            let Op::MatMul { trans_a, trans_b } = p.graph.node(id)?.op else {
                continue;
            };
            let ops = p.graph.operands(id);
            let (sa, sb) = (swapped_source(p, ops[0])?, swapped_source(p, ops[1])?);
            if sa.is_none() && sb.is_none() {
                continue;
            }
            let a = sa.unwrap_or(ops[0]);
            let b = sb.unwrap_or(ops[1]);
            let op = Op::MatMul {
                trans_a: trans_a ^ sa.is_some(),
                trans_b: trans_b ^ sb.is_some(),
            };
            let new = p.graph.add_op(op, &[a, b])?;
            p.substitute(id, new)?;
            n += 1;
        }
        Ok(n)
    }
}
