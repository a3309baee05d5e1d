//! Average-pool forward and backward → `AvgPool` and `AvgPoolBackward`.
//!
//! ```text
//! reduce_sum(u, axis 2) · (1/K)            → reshape(avgpool{divisor=window}(x))
//! reduce_mean(u, axis 2)                   → reshape(avgpool{divisor=window}(x))
//! reduce_sum(u, axis 2) / count            → reshape(avgpool{divisor=…}(x))
//! crop(fold(broadcast(reshape(g · (1/K)))))  → avgpool_backward{divisor=window}(reshape(g))
//! crop(fold(broadcast(reshape(g / count))))  → avgpool_backward{divisor=…}(reshape(g))
//! ```
//! where `u = unfold(pad(x, 0))` (any stride, dilation, padding, or none),
//! `K` the window's cell count, and `crop` the slices autodiff emits for the
//! pad's gradient. The divisor rule is read off the structure of `count`,
//! the same windows summed over a plane of ones (what `nn::AvgPool2d` builds
//! for `ceil_mode` and `count_include_pad = false`): ones over the input with
//! the input's padding count real cells (`real_cells`); ones over the input
//! grown by its leading padding on both sides count the padded input
//! (`padded_input`). Any other divisor leaves the graph unchanged. This pass
//! runs before constant folding, which would turn `count` into numbers.

use super::pool_match::{
    crop_chain, name_after_unfold, pooled_dims, window_reduce, windows, Windows,
};
use super::{Pass, Patch, Program, Rewriter};
use crate::error::Result;
use crate::graph::NodeId;
use crate::ops::{self, AvgPoolBackward, Fill, Fold, Reshape, Unfold};
use crate::ops::{AvgDivisor, BinaryOp, Op, PoolWindow, ReduceKind, Window};

/// Fuses average pooling and its gradient.
pub struct AvgPool;

/// If `n` is `a · c` or `c · a` with `c` a scalar fill of `1/cells`, or
/// `a / count` with `count` a divisor structure: `(a, the divisor's node)`.
fn scaled(p: &Program, n: NodeId) -> Result<Option<(NodeId, NodeId)>> {
    let Op::Binary(b) = p.graph.node(n)?.op else {
        return Ok(None);
    };
    let ops = p.graph.operands(n);
    Ok(match b {
        BinaryOp::Mul if is_fill(p, ops[1])? => Some((ops[0], ops[1])),
        BinaryOp::Mul if is_fill(p, ops[0])? => Some((ops[1], ops[0])),
        BinaryOp::Div => Some((ops[0], ops[1])),
        _ => None,
    })
}

fn is_fill(p: &Program, n: NodeId) -> Result<bool> {
    Ok(matches!(p.graph.node(n)?.op, Op::Fill(_)) && p.graph.shape(n)?.iter().all(|&d| d == 1))
}

/// The divisor rule that node `d` stands for when it divides (or, as a
/// fill, multiplies) window sums of `window` over an input of spatial size `spatial`.
fn divisor(
    p: &Program,
    d: NodeId,
    divides: bool,
    unfold: &Window,
    window: &PoolWindow,
    spatial: &[usize],
) -> Result<Option<AvgDivisor>> {
    if let Op::Fill(Fill { value, .. }) = p.graph.node(d)?.op {
        let inv = 1.0 / unfold.cells() as f32;
        return Ok((!divides && value == inv).then_some(AvgDivisor::Window));
    }
    let Some(uc) = window_reduce(p, d, ReduceKind::Sum)? else {
        return Ok(None);
    };
    if p.graph.node(uc)?.op != Op::Unfold(Unfold(unfold.clone())) {
        return Ok(None);
    }
    let Some(Windows {
        x: ones,
        window: cw,
    }) = windows(p, uc, 0.0)?
    else {
        return Ok(None);
    };
    let os = p.graph.shape(ones)?;
    let is_ones = matches!(p.graph.node(ones)?.op, Op::Fill(Fill { value, .. }) if value == 1.0)
        && os.len() == spatial.len() + 2
        && os[..2] == [1, 1];
    if !is_ones {
        return Ok(None);
    }
    let q = &os[2..];
    let real = q == spatial && cw.pads == window.pads;
    let padded = (0..spatial.len()).all(|i| {
        let ((b, a), (cb, ca)) = (window.pads[i], cw.pads[i]);
        q[i] == spatial[i] + 2 * b && cb == 0 && q[i] + ca == spatial[i] + b + a
    });
    Ok(if !divides {
        None
    } else if real {
        Some(AvgDivisor::RealCells)
    } else if padded {
        Some(AvgDivisor::PaddedInput)
    } else {
        None
    })
}

/// A forward average pool ending at `n`: `(x, window, divisor, the unfold)`.
fn forward(p: &Program, n: NodeId) -> Result<Option<(NodeId, PoolWindow, AvgDivisor, NodeId)>> {
    let (u, d) = if let Some(u) = window_reduce(p, n, ReduceKind::Mean)? {
        (u, None)
    } else if let Some((s, d)) = scaled(p, n)? {
        match window_reduce(p, s, ReduceKind::Sum)? {
            Some(u) if p.graph.shape(s)? == p.graph.shape(n)? => (u, Some(d)),
            _ => return Ok(None),
        }
    } else {
        return Ok(None);
    };
    let Op::Unfold(Unfold(unfold)) = p.graph.node(u)?.op.clone() else {
        return Ok(None);
    };
    let Some(win) = windows(p, u, 0.0)? else {
        return Ok(None);
    };
    let spatial = p.graph.shape(win.x)?[2..].to_vec();
    let rule = match d {
        None => Some(AvgDivisor::Window),
        Some(d) => {
            let divides = matches!(p.graph.node(n)?.op, Op::Binary(BinaryOp::Div));
            divisor(p, d, divides, &unfold, &win.window, &spatial)?
        }
    };
    Ok(rule.map(|r| (win.x, win.window, r, u)))
}

/// An average-pool gradient found at a fold.
struct GradMatch {
    /// The node the fused gradient replaces (the fold or its crop).
    target: NodeId,
    /// The upstream gradient `[N, C, L]`.
    g: NodeId,
    window: PoolWindow,
    divisor: AvgDivisor,
    /// Spatial size of the pooled input.
    spatial: Vec<usize>,
}

/// The average-pool gradient that starts at fold `f`, if it is one.
fn backward(p: &Program, f: NodeId) -> Result<Option<GradMatch>> {
    let Op::Fold(Fold {
        window: unfold,
        spatial,
    }) = p.graph.node(f)?.op.clone()
    else {
        return Ok(None);
    };
    if unfold.rank() > 2 {
        return Ok(None); // the pooling kernels are 1-D and 2-D
    }
    let b = p.graph.operands(f)[0];
    let r = match p.graph.node(b)?.op {
        Op::Broadcast(_) => p.graph.operands(b)[0],
        _ => b,
    };
    let bs = p.graph.shape(b)?;
    if p.graph.shape(r)? != [bs[0], bs[1], 1, bs[3]] {
        return Ok(None);
    }
    let Some((g, d)) = scaled(p, p.through_reshape(r)?)? else {
        return Ok(None);
    };
    if p.graph.shape(g)? != [bs[0], bs[1], bs[3]] {
        return Ok(None);
    }
    let divides = matches!(
        p.graph.node(p.through_reshape(r)?)?.op,
        Op::Binary(BinaryOp::Div)
    );
    // Longest crop first: the pad's gradient slices come right after the fold.
    for (target, crop) in crop_chain(p, f)?.into_iter().rev() {
        let pads: Vec<(usize, usize)> = crop
            .iter()
            .zip(&unfold.padding)
            .map(|(&(b, a), &q)| (b + q, a + q))
            .collect();
        let inner: Vec<usize> = (0..spatial.len())
            .map(|i| spatial[i] - crop[i].0 - crop[i].1)
            .collect();
        let window = PoolWindow {
            kernel: unfold.kernel.clone(),
            stride: unfold.stride.clone(),
            dilation: unfold.dilation.clone(),
            pads,
        };
        if let Some(divisor) = divisor(p, d, divides, &unfold, &window, &inner)? {
            return Ok(Some(GradMatch {
                target,
                g,
                window,
                divisor,
                spatial: inner,
            }));
        }
    }
    Ok(None)
}

impl Pass for AvgPool {
    fn name(&self) -> &'static str {
        "avg_pool"
    }
    fn before(&self) -> &'static [&'static str] {
        // constant folding would turn the divisor structure into numbers
        &["const_fold"]
    }
    fn run(&self, rw: &mut Rewriter) -> Result<usize> {
        let mut fused = 0;
        for n in rw.live_nodes() {
            let p = rw.program();
            if p.graph.node(n).is_err() {
                continue;
            }
            let mut patch = Patch::new();
            let matched = if let Some((x, window, divisor, u)) = forward(p, n)? {
                let pool = patch.add(Op::AvgPool(ops::AvgPool { window, divisor }), &[x.into()]);
                if let Some(name) = name_after_unfold(p, u)? {
                    patch.name(pool, name);
                }
                let shape = p.graph.shape(n)?.to_vec();
                let new = patch.add(Op::Reshape(Reshape { shape }), &[pool]);
                patch.replace(n, new);
                [n, u]
            } else if let Some(GradMatch {
                target,
                g,
                window,
                divisor,
                spatial,
            }) = backward(p, n)?
            {
                let gs = p.graph.shape(g)?;
                let Ok(out) = window.out_size("avgpool_backward", &spatial) else {
                    continue;
                };
                let shape = pooled_dims(gs, &out);
                let gy = patch.add(Op::Reshape(Reshape { shape }), &[g.into()]);
                let op = Op::AvgPoolBackward(AvgPoolBackward {
                    window,
                    divisor,
                    spatial,
                });
                let new = patch.add(op, &[gy]);
                patch.replace(target, new);
                [target, n]
            } else {
                continue;
            };
            if rw.apply("avg_pool", &matched, patch)?.is_some() {
                fused += 1;
            }
        }
        Ok(fused)
    }
}
