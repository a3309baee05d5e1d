//! Max-pool forward and backward → one `MaxPoolWithIndices` (values and
//! argmax indices in one sweep) and `MaxPoolBackward` (a scatter through the
//! indices); a max pool whose gradient the graph does not compute → `MaxPool`
//! (the values alone). For each window tensor `u = unfold(pad(x, −∞))` (any
//! stride, dilation, padding, `ceil_mode` extra padding, or no pad at all):
//!
//! ```text
//! reduce_max(u, axis 2)                                   → reshape(output(pool, 0))
//! crop(fold(select(first_max_mask(u, axis 2), g [N, C, 1, L], 0)))
//!                                                         → maxpool_backward(reshape(g), output(pool, 1))
//! ```
//! where `pool = maxpool_with_indices(x)` (`maxpool(x)` and no `output` when
//! no gradient is rewritten) and `crop` is the chain of slices
//! autodiff emits for the pad's gradient, cutting exactly the padding off.
//! Both take each window's argmax by PyTorch's rule (the first maximum in
//! row-major order, or the last NaN when the window holds one) and send a
//! window's gradient to that cell alone (a NaN gradient reaches no other), so
//! values and gradients are unchanged. Forward and backward pair through `u`.

use super::pool_match::{
    crop_chain, name_after_unfold, pooled_dims, window_reduce, windows, Windows,
};
use super::{Pass, Program};
use crate::error::Result;
use crate::graph::NodeId;
use crate::ops::{Op, ReduceKind};
use std::collections::HashSet;

/// Fuses max pooling and its gradient.
pub struct MaxPool;

/// What to rewrite around one window tensor.
enum Use {
    /// A `reduce_max` over the windows.
    Max(NodeId),
    /// The node to replace with the gradient, and the upstream gradient `[N, C, 1, L]`.
    Grad(NodeId, NodeId),
}

/// `g` if `n` is `select(first_max_mask(u), g, 0)` with `g` of shape
/// `[N, C, 1, L]`, directly or through a broadcast to the mask's shape.
fn mask_selects_grad(p: &Program, n: NodeId, mask: NodeId) -> Result<Option<NodeId>> {
    if !matches!(p.graph.node(n)?.op, Op::Select) {
        return Ok(None);
    }
    let ops = p.graph.operands(n);
    let other = match ops[..] {
        [m, g, zero] if m == mask && g != mask && is_zero(p, zero)? => g,
        _ => return Ok(None),
    };
    let ms = p.graph.shape(mask)?;
    let g = match p.graph.node(other)?.op {
        Op::Broadcast { .. } => p.graph.operands(other)[0],
        _ => other,
    };
    let want = [ms[0], ms[1], 1, ms[3]];
    Ok((p.graph.shape(g)? == want && p.graph.shape(n)? == ms).then_some(g))
}

/// Whether `n` is a constant zero (either sign: `0 + gy` and `−0 + gy` sum
/// alike in the fold).
fn is_zero(p: &Program, n: NodeId) -> Result<bool> {
    Ok(match &p.graph.node(n)?.op {
        Op::Fill { value, .. } => *value == 0.0,
        Op::Constant { value } => value.data().iter().all(|&v| v == 0.0),
        _ => false,
    })
}

/// Every rewrite that `u`'s users allow.
fn uses(p: &Program, live: &HashSet<NodeId>, u: NodeId, win: &Windows) -> Result<Vec<Use>> {
    let mut found = Vec::new();
    let unfold = p.graph.node(u)?.op.clone();
    let spatial = p.graph.shape(p.graph.operands(u)[0])?[2..].to_vec();
    let users = |n: NodeId| -> Vec<NodeId> {
        p.graph
            .users(n)
            .into_iter()
            .filter(|m| live.contains(m))
            .collect()
    };
    for user in users(u) {
        if window_reduce(p, user, ReduceKind::Max)? == Some(u) {
            found.push(Use::Max(user));
        }
        if !matches!(p.graph.node(user)?.op, Op::FirstMaxMask { axis: 2 }) {
            continue;
        }
        for m in users(user) {
            let Some(g) = mask_selects_grad(p, m, user)? else {
                continue;
            };
            for f in users(m) {
                let folds_back = matches!(&p.graph.node(f)?.op,
                    Op::Fold { window, spatial: s } if Op::Unfold(window.clone()) == unfold && *s == spatial);
                if !folds_back {
                    continue;
                }
                let cropped = crop_chain(p, f)?
                    .into_iter()
                    .find(|(_, crop)| *crop == win.window.pads);
                if let Some((target, _)) = cropped {
                    found.push(Use::Grad(target, g));
                }
            }
        }
    }
    Ok(found)
}

impl Pass for MaxPool {
    fn name(&self) -> &'static str {
        "max_pool"
    }
    fn run(&self, p: &mut Program) -> Result<usize> {
        let mut fused = 0;
        let order = p.live_nodes();
        let live: HashSet<NodeId> = order.iter().copied().collect();
        for u in order {
            if p.graph.node(u).is_err() {
                continue;
            }
            let Some(win) = windows(p, u, f32::NEG_INFINITY)? else {
                continue;
            };
            let found = uses(p, &live, u, &win)?;
            if found.is_empty() {
                continue;
            }
            let xs = p.graph.shape(win.x)?.to_vec();
            let needs_indices = found.iter().any(|f| matches!(f, Use::Grad(..)));
            let op = if needs_indices {
                Op::MaxPoolWithIndices(win.window.clone())
            } else {
                Op::MaxPool(win.window.clone())
            };
            let Some(pool) = p.try_add_op(op, &[win.x])? else {
                continue;
            };
            name_after_unfold(p, pool, u)?;
            let out = pool_out(p, pool)?;
            for f in found {
                match f {
                    Use::Max(m) => {
                        let dims: Vec<isize> =
                            p.graph.shape(m)?.iter().map(|&d| d as isize).collect();
                        let values = match needs_indices {
                            true => p.graph.output(pool, 0)?,
                            false => pool,
                        };
                        let new = p.graph.reshape(values, &dims)?;
                        p.substitute(m, new)?;
                    }
                    Use::Grad(target, g) => {
                        let gy = p.graph.reshape(g, &pooled_dims(&xs, &out))?;
                        let indices = p.graph.output(pool, 1)?;
                        let op = Op::MaxPoolBackward {
                            window: win.window.clone(),
                            spatial: xs[2..].to_vec(),
                        };
                        let Some(new) = p.try_add_op(op, &[gy, indices])? else {
                            continue;
                        };
                        p.substitute(target, new)?;
                    }
                }
                fused += 1;
            }
        }
        Ok(fused)
    }
}

/// The spatial output size of a pool node.
fn pool_out(p: &Program, pool: NodeId) -> Result<Vec<usize>> {
    Ok(p.graph.shape(pool)?[2..].to_vec())
}
