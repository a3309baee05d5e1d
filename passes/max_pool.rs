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
use super::{Pass, Patch, Program, Rewriter, Src};
use crate::error::Result;
use crate::graph::NodeId;
use crate::ops::{
    self, Constant, Fill, FirstMaxMask, Fold, MaxPoolBackward, MaxPoolWithIndices, Output, Reshape,
    Unfold,
};
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
        Op::Broadcast(_) => p.graph.operands(other)[0],
        _ => other,
    };
    let want = [ms[0], ms[1], 1, ms[3]];
    Ok((p.graph.shape(g)? == want && p.graph.shape(n)? == ms).then_some(g))
}

/// Whether `n` is a constant zero (either sign: `0 + gy` and `−0 + gy` sum
/// alike in the fold).
fn is_zero(p: &Program, n: NodeId) -> Result<bool> {
    Ok(match &p.graph.node(n)?.op {
        Op::Fill(Fill { value, .. }) => *value == 0.0,
        Op::Constant(Constant { value }) => value.data().iter().all(|&v| v == 0.0),
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
        if !matches!(
            p.graph.node(user)?.op,
            Op::FirstMaxMask(FirstMaxMask { axis: 2 })
        ) {
            continue;
        }
        for m in users(user) {
            let Some(g) = mask_selects_grad(p, m, user)? else {
                continue;
            };
            for f in users(m) {
                let folds_back = matches!(&p.graph.node(f)?.op,
                    Op::Fold(Fold { window, spatial: s }) if Op::Unfold(Unfold(window.clone())) == unfold && *s == spatial);
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
    fn before(&self) -> &'static [&'static str] {
        // constant folding would turn the padding's −∞ fill into numbers
        &["const_fold"]
    }
    fn run(&self, rw: &mut Rewriter) -> Result<usize> {
        let mut fused = 0;
        let order = rw.live_nodes();
        let live: HashSet<NodeId> = order.iter().copied().collect();
        for u in order {
            let p = rw.program();
            if p.graph.node(u).is_err() {
                continue;
            }
            let Some(win) = windows(p, u, f32::NEG_INFINITY)? else {
                continue;
            };
            let found = uses(p, &live, u, &win)?;
            let needs_indices = found.iter().any(|f| matches!(f, Use::Grad(..)));
            let op = match needs_indices {
                true => Op::MaxPoolWithIndices(MaxPoolWithIndices(win.window.clone())),
                false => Op::MaxPool(ops::MaxPool(win.window.clone())),
            };
            let xs = p.graph.shape(win.x)?.to_vec();
            let Ok(pooled) = op.infer_shape(&[&xs]) else {
                continue; // the fused pool refuses this window: the pattern stays
            };
            let name = name_after_unfold(p, u)?;
            // the first applied rewrite adds the pool; the others read it
            let mut pool: Option<NodeId> = None;
            for f in found {
                let p = rw.program();
                let mut patch = Patch::new();
                let at: Src = match pool {
                    Some(n) => n.into(),
                    None => {
                        let at = patch.add(op.clone(), &[win.x.into()]);
                        if let Some(name) = &name {
                            patch.name(at, name.clone());
                        }
                        at
                    }
                };
                let target = match f {
                    Use::Max(m) => {
                        let values = match needs_indices {
                            true => patch.add(Op::Output(Output { index: 0 }), &[at]),
                            false => at,
                        };
                        let shape = p.graph.shape(m)?.to_vec();
                        let new = patch.add(Op::Reshape(Reshape { shape }), &[values]);
                        patch.replace(m, new);
                        m
                    }
                    Use::Grad(target, g) => {
                        let shape = pooled_dims(&xs, &pooled[2..]);
                        let gy = patch.add(Op::Reshape(Reshape { shape }), &[g.into()]);
                        let indices = patch.add(Op::Output(Output { index: 1 }), &[at]);
                        let op = Op::MaxPoolBackward(MaxPoolBackward {
                            window: win.window.clone(),
                            spatial: xs[2..].to_vec(),
                        });
                        let new = patch.add(op, &[gy, indices]);
                        patch.replace(target, new);
                        target
                    }
                };
                if let Some(new) = rw.apply("max_pool", &[target, u], patch)? {
                    pool = pool.or(new.first().copied());
                    fused += 1;
                }
            }
        }
        Ok(fused)
    }
}
