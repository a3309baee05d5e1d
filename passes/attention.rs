//! The attention core of an evaluation graph as one op (rule
//! `attention_core`):
//!
//! ```text
//! matmul(softmax(mask_n(..mask_1(mul(matmul(q, k, trans_b), c)))), v)
//!     → attention{scale: c, masks}(q, k, v, m_1, .., m_n)
//! ```
//! where each `mask_i` is `select(m, s, c)`, `select(m, c, s)` (`c` a
//! scalar: `−∞` blocks) or `s + m`, the scale is optional, the softmax runs
//! along the last axis, `q`, `k` and `v` share their batch axes, and every
//! node between the products has no other reader. A training graph keeps
//! the unfused form (the weights are the softmax gradient's operand), so
//! only what nothing else needs is fused: the scores and weights are never
//! written out ([`crate::ops::Attention`]; bit for bit the unfused result
//! up to 128 query rows, equal to GEMM rounding beyond).

use super::pattern::{any, op, Rule, RulePass};
use super::{Patch, Program, Src};
use crate::error::Result;
use crate::graph::NodeId;
use crate::ops::{Attention, BinaryOp, Op, ScoreMask};

/// Fuses attention cores (rule `attention_core`).
pub fn pass() -> RulePass {
    let plain = |o: &Op| matches!(o, Op::MatMul(m) if !m.trans_a && !m.trans_b);
    let softmax = |o: &Op| matches!(o, Op::Softmax(s) if !s.log);
    RulePass::new(
        "attention",
        vec![Rule::new(
            "attention_core",
            op(plain).args([op(softmax).bind("w").single_use(), any().bind("v")]),
            |p, m| fuse(p, m.root, m.node("w"), m.node("v")),
        )],
    )
    .after(&["matmul_transpose"])
    .before(&["fuse_elementwise"])
}

/// The value of a one-element `fill`.
fn scalar(p: &Program, n: NodeId) -> Result<Option<f32>> {
    Ok(match &p.graph.node(n)?.op {
        Op::Fill(f) if f.shape.iter().product::<usize>() == 1 => Some(f.value),
        _ => None,
    })
}

/// The patch for `root = matmul(w, v)` with `w` the softmax.
fn fuse(p: &Program, root: NodeId, w: NodeId, v: NodeId) -> Result<Option<Patch>> {
    let Op::Softmax(sm) = &p.graph.node(w)?.op else {
        return Ok(None);
    };
    let mut s = p.graph.operands(w)[0];
    let shape = p.graph.shape(s)?.to_vec();
    if sm.axis + 1 != shape.len() {
        return Ok(None);
    }
    // the masks, last applied first
    let mut masks: Vec<(ScoreMask, NodeId)> = Vec::new();
    loop {
        if !p.single_use(s) || p.graph.shape(s)? != shape {
            return Ok(None);
        }
        let ops = p.graph.operands(s);
        let (mask, next) = match &p.graph.node(s)?.op {
            Op::Select => match (scalar(p, ops[1])?, scalar(p, ops[2])?) {
                (_, Some(c)) => ((ScoreMask::Keep(c), ops[0]), ops[1]),
                (Some(c), None) => ((ScoreMask::Replace(c), ops[0]), ops[2]),
                (None, None) => return Ok(None),
            },
            Op::Binary(BinaryOp::Add) => match p.graph.shape(ops[0])? == shape {
                true => ((ScoreMask::Add, ops[1]), ops[0]),
                false => ((ScoreMask::Add, ops[0]), ops[1]),
            },
            _ => break,
        };
        masks.push(mask);
        s = next;
    }
    let mut scale = None;
    if let Op::Binary(BinaryOp::Mul) = &p.graph.node(s)?.op {
        let ops = p.graph.operands(s);
        let (c, x) = match (scalar(p, ops[0])?, scalar(p, ops[1])?) {
            (_, Some(c)) => (c, ops[0]),
            (Some(c), None) => (c, ops[1]),
            (None, None) => return Ok(None),
        };
        scale = Some(c);
        s = x;
        if !p.single_use(s) || p.graph.shape(s)? != shape {
            return Ok(None);
        }
    }
    let Op::MatMul(mm) = &p.graph.node(s)?.op else {
        return Ok(None);
    };
    if mm.trans_a || !mm.trans_b {
        return Ok(None);
    }
    let (q, k) = (p.graph.operands(s)[0], p.graph.operands(s)[1]);
    masks.reverse();
    let core = Attention {
        scale,
        masks: masks.iter().map(|m| m.0).collect(),
    };
    let mut operands = vec![q, k, v];
    operands.extend(masks.iter().map(|m| m.1));
    let shapes = (operands.iter())
        .map(|&o| p.graph.shape(o))
        .collect::<Result<Vec<_>>>()?;
    // the same batch axes and masks that broadcast, or no fusion
    if crate::ops::OpDef::infer_shape(&core, &shapes)
        .ok()
        .as_deref()
        != Some(p.graph.shape(root)?)
    {
        return Ok(None);
    }
    let mut patch = Patch::new();
    let srcs: Vec<Src> = operands.into_iter().map(Src::from).collect();
    let new = patch.add(Op::Attention(core), &srcs);
    if let Some(name) = &p.graph.node(root)?.name {
        patch.name(new, name.clone());
    }
    patch.replace(root, new);
    Ok(Some(patch))
}
