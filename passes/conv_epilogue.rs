//! What follows a convolution in the same pass over its output: a residual
//! added to it, then element-wise unary ops (ReLU, sigmoid, tanh, ...), when
//! nothing else reads the convolution:
//!
//! ```text
//! conv(x, w, b) + r        → conv{residual}(x, w, b, r)     (also r + conv)
//! relu(conv(x, w, b))      → conv{epilogue=[relu]}(x, w, b)
//! relu(conv(x, w, b) + r)  → conv{residual, epilogue=[relu]}(x, w, b, r)
//! ```
//! `r` must have the convolution's shape (a residual block's shortcut; a
//! per-channel shift is `conv_affine`'s). The convolution's bias is already
//! folded in, so a conv layer followed by an activation becomes one op, and
//! so does `relu(bn(conv(x)) + shortcut)` once an evaluation graph's
//! BatchNorm is folded in. The sum rounds as the unfused `add` does
//! (`conv + r`, one rounding), so the result is bit for bit the same.
//! (ReLU's gradient reads its output, so in training the pre-activation has
//! no other reader.)

use super::pattern::{any, op, Match, Rule, RulePass};
use super::{Patch, Program, Src};
use crate::error::Result;
use crate::ops::{BinaryOp, Conv, Op};

/// Fuses residual adds and then activations into convolutions (rules
/// `residual_into_conv`, `activation_into_conv`).
pub fn pass() -> RulePass {
    let plain = |o: &Op| matches!(o, Op::Conv(c) if !c.residual && c.epilogue.is_empty());
    RulePass::new(
        "conv_epilogue",
        vec![
            Rule::new(
                "residual_into_conv",
                op(|o| matches!(o, Op::Binary(BinaryOp::Add)))
                    .bind("add")
                    .args([
                        op(plain).bind("c").single_use(),
                        any().bind("r").same_shape_as("add"),
                    ])
                    .any_order(),
                |p, m| {
                    let (c, r) = (m.node("c"), m.node("r"));
                    if r == c || p.graph.shape(c)? != p.graph.shape(m.root)? {
                        // conv + conv would run the convolution twice; a
                        // broadcast add is not a residual
                        return Ok(None);
                    }
                    fuse(p, m, c, |conv| conv.residual = true, Some(r.into()))
                },
            ),
            Rule::new(
                "activation_into_conv",
                op(|o| matches!(o, Op::Unary(_)))
                    .args([op(|o| matches!(o, Op::Conv(_))).bind("c").single_use()]),
                |p, m| {
                    let Op::Unary(u) = p.graph.node(m.root)?.op else {
                        return Ok(None);
                    };
                    fuse(p, m, m.node("c"), |conv| conv.epilogue.push(u), None)
                },
            ),
        ],
    )
    .after(&["conv_forward"])
}

/// The convolution `c` changed by `change`, with `extra` appended to its
/// operands, in place of the match's root.
fn fuse(
    p: &Program,
    m: &Match,
    c: crate::graph::NodeId,
    change: impl FnOnce(&mut Conv),
    extra: Option<Src>,
) -> Result<Option<Patch>> {
    let node = p.graph.node(c)?;
    let Op::Conv(conv) = &node.op else {
        return Ok(None);
    };
    let mut conv = conv.clone();
    change(&mut conv);
    let mut operands: Vec<Src> = p.graph.operands(c).into_iter().map(Src::from).collect();
    operands.extend(extra);
    let mut patch = Patch::new();
    let new = patch.add(Op::Conv(conv), &operands);
    if let Some(name) = &node.name {
        patch.name(new, name.clone());
    }
    patch.replace(m.root, new);
    Ok(Some(patch))
}
