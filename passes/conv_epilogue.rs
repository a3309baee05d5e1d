//! An element-wise unary op (ReLU, sigmoid, tanh, ...) on a convolution that
//! nothing else reads → the convolution's epilogue, applied in the same pass
//! over its output:
//!
//! ```text
//! relu(conv(x, w, b))  → conv{epilogue=[relu]}(x, w, b)
//! ```
//! The convolution's bias is already folded in, so a conv layer followed by
//! an activation becomes one op. (ReLU's gradient reads its output, so in
//! training the pre-activation has no other reader.)

use super::pool_match::single_use;
use super::{Pass, Program};
use crate::error::Result;
use crate::ops::Op;

/// Fuses activations into convolutions.
pub struct ConvEpilogue;

impl Pass for ConvEpilogue {
    fn name(&self) -> &'static str {
        "conv_epilogue"
    }
    fn run(&self, p: &mut Program) -> Result<usize> {
        let mut fused = 0;
        for n in p.live_nodes() {
            let Ok(node) = p.graph.node(n) else { continue };
            let Op::Unary(u) = node.op else { continue };
            let c = p.graph.operands(n)[0];
            let Op::Conv {
                window,
                groups,
                epilogue,
            } = p.graph.node(c)?.op.clone()
            else {
                continue;
            };
            if !single_use(p, c) {
                continue;
            }
            let mut epilogue = epilogue;
            epilogue.push(u);
            let op = Op::Conv {
                window,
                groups,
                epilogue,
            };
            let operands = p.graph.operands(c);
            let Some(new) = p.try_add_op(op, &operands)? else {
                continue;
            };
            if let Some(name) = p.graph.node(c)?.name.clone() {
                p.graph.set_name(new, name);
            }
            p.substitute(n, new)?;
            fused += 1;
        }
        Ok(fused)
    }
}
