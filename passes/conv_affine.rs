//! A per-channel affine op on a convolution → the convolution's weights and
//! bias (BatchNorm folding in evaluation graphs):
//!
//! ```text
//! conv(x, w, b) · s   → conv(x, w · s[c,1..], b · s)     (also s · conv)
//! conv(x, w, b) / s   → conv(x, w / s[c,1..], b / s)
//! conv(x, w, b) + t   → conv(x, w, b + t)                 (also t + conv)
//! conv(x, w, b) − t   → conv(x, w, b − t)
//! ```
//!
//! where `s`, `t` are `[1, Cout, 1, ..]` and computed from parameters and
//! constants alone (not from the inputs: BatchNorm's running statistics and
//! affine parameters in an evaluation graph, not its batch statistics). The
//! per-channel arithmetic then runs on the weights, not on every output
//! element, and a following activation becomes the convolution's epilogue.
//! The result equals the unfolded graph's up to rounding: `conv(x, w)·s`
//! and `conv(x, w·s)` round differently.

use super::pattern::{any, op, Rule, RulePass};
use super::{Patch, Program, Src};
use crate::error::Result;
use crate::graph::order::ancestors_order;
use crate::graph::NodeId;
use crate::ops::{BinaryOp, Op, Reshape};

/// Folds per-channel affine ops into convolutions (rule `affine_into_conv`).
pub fn pass() -> RulePass {
    let folded = |o: &Op| {
        matches!(
            o,
            Op::Binary(BinaryOp::Mul | BinaryOp::Div | BinaryOp::Add | BinaryOp::Sub)
        )
    };
    let plain_conv = |o: &Op| matches!(o, Op::Conv(c) if !c.residual && c.epilogue.is_empty());
    RulePass::new(
        "conv_affine",
        vec![Rule::new(
            "affine_into_conv",
            op(folded)
                .args([op(plain_conv).bind("c").single_use(), any().bind("s")])
                .any_order(),
            build,
        )],
    )
    .after(&["conv_forward"])
    .before(&["conv_epilogue"])
}

/// Whether `n` is computed from parameters and constants only.
fn input_free(p: &Program, n: NodeId) -> Result<bool> {
    for a in ancestors_order(&p.graph, &[n]) {
        if matches!(p.graph.node(a)?.op, Op::Input(_)) {
            return Ok(false);
        }
    }
    Ok(true)
}

fn build(p: &Program, m: &super::pattern::Match) -> Result<Option<Patch>> {
    let (root, c, s) = (m.root, m.node("c"), m.node("s"));
    let Op::Binary(kind) = p.graph.node(root)?.op.clone() else {
        return Ok(None);
    };
    let conv = p.graph.node(c)?;
    let ops = p.graph.operands(root);
    // only `conv − t` and `conv / s` (not `t − conv`, `s / conv`) fold
    if matches!(kind, BinaryOp::Sub | BinaryOp::Div) && ops[0] != c {
        return Ok(None);
    }
    let (cs, ss) = (conv.shape.dims(), p.graph.shape(s)?);
    let cout = cs[1];
    let mut per_channel = vec![1, cout];
    per_channel.resize(cs.len(), 1);
    if ss != per_channel || p.graph.shape(root)? != cs || !input_free(p, s)? {
        return Ok(None);
    }
    let operands = p.graph.operands(c);
    let (x, w, b) = (operands[0], operands[1], operands.get(2).copied());
    let mut patch = Patch::new();
    let channel = patch.add(Op::Reshape(Reshape { shape: vec![cout] }), &[s.into()]);
    let binary =
        |patch: &mut Patch, op: BinaryOp, a: Src, b: Src| patch.add(Op::Binary(op), &[a, b]);
    let (w, b) = match kind {
        BinaryOp::Mul | BinaryOp::Div => {
            let mut wshape = vec![cout];
            wshape.resize(p.graph.shape(w)?.len(), 1);
            let col = patch.add(Op::Reshape(Reshape { shape: wshape }), &[s.into()]);
            let w = binary(&mut patch, kind, w.into(), col);
            (w, b.map(|b| binary(&mut patch, kind, b.into(), channel)))
        }
        _ => {
            let b = match b {
                Some(b) => binary(&mut patch, kind, b.into(), channel),
                None if kind == BinaryOp::Sub => {
                    patch.add(Op::Unary(crate::ops::UnaryOp::Neg), &[channel])
                }
                None => channel,
            };
            (w.into(), Some(b))
        }
    };
    let mut new_ops = vec![x.into(), w];
    new_ops.extend(b);
    let new = patch.add(conv.op.clone(), &new_ops);
    if let Some(name) = &conv.name {
        patch.name(new, name.clone());
    }
    patch.replace(root, new);
    Ok(Some(patch))
}
