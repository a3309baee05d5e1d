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

use super::{Pass, Program};
use crate::error::Result;
use crate::graph::NodeId;
use crate::ops::{BinaryOp, Op, Window};

/// Fuses unfold + matmul convolutions.
pub struct ConvForward;

/// A matched convolution.
struct ConvMatch {
    x: NodeId,
    w: NodeId,
    window: Window,
    groups: usize,
    matmul: NodeId,
}

/// For `r`, a reshape of a matmul (or the matmul itself), the conv it computes.
fn match_conv(p: &Program, r: NodeId) -> Result<Option<ConvMatch>> {
    let m = p.through_reshape(r)?;
    if !matches!(
        p.graph.node(m)?.op,
        Op::MatMul {
            trans_a: false,
            trans_b: false
        }
    ) {
        return Ok(None);
    }
    let ops = p.graph.operands(m);
    let (w, u) = (p.through_reshape(ops[0])?, p.through_reshape(ops[1])?);
    let Op::Unfold(window) = &p.graph.node(u)?.op else {
        return Ok(None);
    };
    let x = p.graph.operands(u)[0];
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
    Ok(fits.then(|| ConvMatch {
        x,
        w,
        window: window.clone(),
        groups,
        matmul: m,
    }))
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

impl Pass for ConvForward {
    fn name(&self) -> &'static str {
        "conv_forward"
    }
    fn run(&self, p: &mut Program) -> Result<usize> {
        let mut fused = 0;
        for r in p.live_nodes() {
            if p.graph.node(r).is_err() {
                continue;
            }
            let Some(c) = match_conv(p, r)? else { continue };
            let cout = p.graph.shape(c.w)?[0];
            let name = p.graph.node(c.matmul)?.name.clone();
            let op = Op::Conv {
                window: c.window,
                groups: c.groups,
                epilogue: vec![],
            };
            let (target, new) = match bias_add(p, r, cout)? {
                Some((add, b)) => (add, p.try_add_op(op, &[c.x, c.w, b])?),
                None => (r, p.try_add_op(op, &[c.x, c.w])?),
            };
            let Some(new) = new else { continue };
            if let Some(name) = name {
                p.graph.set_name(
                    new,
                    name.strip_suffix(".matmul").unwrap_or(&name).to_string(),
                );
            }
            p.substitute(target, new)?;
            fused += 1;
        }
        Ok(fused)
    }
}
