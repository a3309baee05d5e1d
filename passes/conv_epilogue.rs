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

use super::pattern::{op, Rule, RulePass};
use super::{Patch, Src};
use crate::ops::Conv;
use crate::ops::Op;

/// Fuses activations into convolutions (rule `activation_into_conv`).
pub fn pass() -> RulePass {
    RulePass::new(
        "conv_epilogue",
        vec![Rule::new(
            "activation_into_conv",
            op(|o| matches!(o, Op::Unary(_)))
                .args([op(|o| matches!(o, Op::Conv(_))).bind("c").single_use()]),
            |p, m| {
                let (Op::Unary(u), c) = (&p.graph.node(m.root)?.op, m.node("c")) else {
                    return Ok(None);
                };
                let conv = p.graph.node(c)?;
                let Op::Conv(Conv {
                    window,
                    groups,
                    epilogue,
                }) = &conv.op
                else {
                    return Ok(None);
                };
                let mut epilogue = epilogue.clone();
                epilogue.push(*u);
                let op = Op::Conv(Conv {
                    window: window.clone(),
                    groups: *groups,
                    epilogue,
                });
                let operands: Vec<Src> = p.graph.operands(c).into_iter().map(Src::from).collect();
                let mut patch = Patch::new();
                let new = patch.add(op, &operands);
                if let Some(name) = &conv.name {
                    patch.name(new, name.clone());
                }
                patch.replace(m.root, new);
                Ok(Some(patch))
            },
        )],
    )
    .after(&["conv_forward"])
}
