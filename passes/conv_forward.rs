//! The layers' convolution pattern → the fused `Conv` primitive (bias folded in):
//!
//! ```text
//! reshape(matmul(reshape(w) [G, Cout/G, Cin/G·K],
//!                reshape(unfold(x)) [N, G, Cin/G·K, L])) [N, Cout, *O]
//!   (+ reshape(b) [Cout, 1, ..])
//! → conv(x, w[, b])
//! ```
//! for every stride, padding, dilation and group count `nn::Conv1d` /
//! `nn::Conv2d` emit (any of the reshapes may already be gone when it was to
//! the same shape). The unfold stays while anything else (a weight gradient)
//! still uses it.

use super::pattern::{any, op, Match, Pat, Rule, RulePass};
use super::{Patch, Program};
use crate::error::Result;
use crate::graph::NodeId;
use crate::ops::{BinaryOp, Op};
use crate::ops::{Conv, MatMul, Unfold};

/// Fuses unfold + matmul convolutions (rule `unfold_matmul`; the bias add
/// that is the matmul's only reader is folded in too).
pub fn pass() -> RulePass {
    let matmul = op(matmul_t::<false, false>)
        .bind("m")
        .args([any().opt_reshape().bind("w"), columns()]);
    RulePass::new(
        "conv_forward",
        vec![Rule::new("unfold_matmul", matmul.opt_reshape(), build)],
    )
}

/// Whether `o` is a matmul reading its operands transposed as `A`, `B` say.
pub(super) fn matmul_t<const A: bool, const B: bool>(o: &Op) -> bool {
    matches!(o, Op::MatMul(MatMul { trans_a, trans_b }) if *trans_a == A && *trans_b == B)
}

/// The im2col columns of a convolution's input: `unfold(x)`, maybe
/// reshaped, binding the unfold as `u` and its input as `x`.
pub(super) fn columns() -> Pat {
    op(|o| matches!(o, Op::Unfold(Unfold(_))))
        .bind("u")
        .args([any().bind("x")])
        .opt_reshape()
}

/// The fused convolution when every shape fits a grouped convolution's.
fn build(p: &Program, mt: &Match) -> Result<Option<Patch>> {
    let (r, m, w, u, x) = (
        mt.root,
        mt.node("m"),
        mt.node("w"),
        mt.node("u"),
        mt.node("x"),
    );
    let Op::Unfold(Unfold(window)) = &p.graph.node(u)?.op else {
        return Ok(None);
    };
    if window.rank() > 2 {
        return Ok(None); // the fused kernels are 1-D and 2-D
    }
    let ops = p.graph.operands(m);
    let (xs, ws, cr, mm, rs) = (
        p.graph.shape(x)?,
        p.graph.shape(w)?,
        p.graph.shape(ops[1])?,
        p.graph.shape(m)?,
        p.graph.shape(r)?,
    );
    if cr.len() != 4 || ws.len() != xs.len() || rs.len() != xs.len() {
        return Ok(None);
    }
    let (n, cin, k, l, groups) = (xs[0], xs[1], window.cells(), p.graph.shape(u)?[3], cr[1]);
    if groups == 0 || cin % groups != 0 || ws[0] % groups != 0 {
        return Ok(None);
    }
    let (cg, cout) = (cin / groups, ws[0]);
    let out = window.out_size("conv", &xs[2..])?;
    let fits = cr == [n, groups, cg * k, l]
        && ws[1] == cg
        && ws[2..] == window.kernel[..]
        && p.graph.shape(ops[0])? == [groups, cout / groups, cg * k]
        && mm == [n, groups, cout / groups, l]
        && rs[..2] == [n, cout]
        && rs[2..] == out[..];
    if !fits {
        return Ok(None);
    }
    let op = Op::Conv(Conv {
        window: window.clone(),
        groups,
        residual: false,
        epilogue: vec![],
    });
    let mut patch = Patch::new();
    let (target, new) = match bias_add(p, r, cout)? {
        Some((add, b)) => (add, patch.add(op, &[x.into(), w.into(), b.into()])),
        None => (r, patch.add(op, &[x.into(), w.into()])),
    };
    if let Some(name) = &p.graph.node(m)?.name {
        patch.name(new, name.strip_suffix(".matmul").unwrap_or(name));
    }
    patch.replace(target, new);
    Ok(Some(patch))
}

/// If the only user of `r` adds a bias `reshape(b [Cout]) [Cout, 1, ..]` to it: `(add, b)`.
fn bias_add(p: &Program, r: NodeId, cout: usize) -> Result<Option<(NodeId, NodeId)>> {
    let users = p.graph.users(r);
    if users.len() != 1 || p.roots().contains(&r) {
        return Ok(None);
    }
    let a = users[0];
    if !matches!(p.graph.node(a)?.op, Op::Binary(BinaryOp::Add))
        || p.graph.shape(a)? != p.graph.shape(r)?
    {
        return Ok(None);
    }
    let ops = p.graph.operands(a);
    let other = if ops[0] == r { ops[1] } else { ops[0] };
    let b = p.through_reshape(other)?;
    let (bs, rank) = (p.graph.shape(other)?, p.graph.shape(r)?.len());
    let bias_like = p.graph.shape(b)? == [cout]
        && bs.len() + 1 == rank
        && bs[0] == cout
        && bs[1..].iter().all(|&d| d == 1);
    Ok(bias_like.then_some((a, b)))
}
