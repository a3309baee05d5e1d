//! Pattern pieces the two pooling passes share: the padded windows a pool
//! reads, and the crop that undoes the padding on its gradient.

use super::Program;
use crate::error::Result;
use crate::graph::NodeId;
use crate::ops::{Op, PoolWindow, ReduceKind};
use crate::ops::{Pad, Reduce, Slice, Unfold};

/// `(before, after)` per spatial dim.
pub(super) type Pads = Vec<(usize, usize)>;

/// `unfold(pad(x))` seen as a pooling window over `x`.
pub(super) struct Windows {
    /// The pooled input `[N, C, *S]`.
    pub x: NodeId,
    /// The window, with the explicit pad's and the unfold's padding combined.
    pub window: PoolWindow,
}

/// For `u = unfold(p)`, the pooled input and window when padded cells hold
/// `pad_value`: `p` is `x` padded with `pad_value` on the spatial dims only
/// (or, failing that, `p` itself is the pooled input), and the unfold's own
/// zero padding counts only when `pad_value` is 0.
pub(super) fn windows(p: &Program, u: NodeId, pad_value: f32) -> Result<Option<Windows>> {
    let Op::Unfold(Unfold(w)) = &p.graph.node(u)?.op else {
        return Ok(None);
    };
    if w.rank() > 2 {
        return Ok(None); // the pooling kernels are 1-D and 2-D
    }
    if w.padding.iter().any(|&q| q > 0) && pad_value != 0.0 {
        return Ok(None);
    }
    let src = p.graph.operands(u)[0];
    let (x, explicit) = match &p.graph.node(src)?.op {
        Op::Pad(Pad { pads, value })
            if value.to_bits() == pad_value.to_bits() && pads[..2] == [(0, 0), (0, 0)] =>
        {
            (p.graph.operands(src)[0], pads[2..].to_vec())
        }
        _ => (src, vec![(0, 0); w.rank()]),
    };
    if p.graph.shape(x)?[2..].contains(&0) {
        return Ok(None); // windows over an empty plane: the fused pools need cells
    }
    let pads = explicit
        .iter()
        .zip(&w.padding)
        .map(|(&(b, a), &q)| (b + q, a + q))
        .collect();
    Ok(Some(Windows {
        x,
        window: PoolWindow {
            kernel: w.kernel.clone(),
            stride: w.stride.clone(),
            dilation: w.dilation.clone(),
            pads,
        },
    }))
}

/// The operand of `n` if `n` is a single-axis reduction of `kind` over axis 2
/// of a `[N, C, K, L]` tensor (the window axis of an unfold).
pub(super) fn window_reduce(p: &Program, n: NodeId, kind: ReduceKind) -> Result<Option<NodeId>> {
    Ok(match &p.graph.node(n)?.op {
        Op::Reduce(Reduce {
            kind: k,
            axes,
            keepdims: false,
        }) if *k == kind && axes == &[2] => Some(p.graph.operands(n)[0]),
        _ => None,
    })
}

/// Follows the chain of single-use, step-1 slices of spatial dims that
/// starts at `f` `[N, C, *S]` (what autodiff emits for a pad's gradient).
/// Returns every prefix of it as (last node, `(before, after)` crop per
/// spatial dim), shortest first: `(f, no crop)`, then one entry per slice.
pub(super) fn crop_chain(p: &Program, f: NodeId) -> Result<Vec<(NodeId, Pads)>> {
    let rank = p.graph.shape(f)?.len();
    let mut chain = vec![(f, vec![(0, 0); rank.saturating_sub(2)])];
    loop {
        let (cur, crop) = chain.last().expect("starts non-empty").clone();
        if !p.single_use(cur) {
            break;
        }
        let user = p.graph.users(cur)[0];
        let Op::Slice(Slice {
            axis,
            start,
            end,
            step: 1,
        }) = p.graph.node(user)?.op
        else {
            break;
        };
        let size = p.graph.shape(cur)?[axis];
        if axis < 2 || crop[axis - 2] != (0, 0) || end > size {
            break;
        }
        let mut crop = crop;
        crop[axis - 2] = (start, size - end);
        chain.push((user, crop));
    }
    Ok(chain)
}

/// `[N, C, *out]`: the pooled shape for a reshape.
pub(super) fn pooled_dims(nc: &[usize], out: &[usize]) -> Vec<usize> {
    nc[..2].iter().chain(out).copied().collect()
}

/// The name for a pool node replacing the layer whose unfold `u`
/// (`maxpool2d_0.unfold`) it reads: `maxpool2d_0`.
pub(super) fn name_after_unfold(p: &Program, u: NodeId) -> Result<Option<String>> {
    Ok(p.graph
        .node(u)?
        .name
        .as_ref()
        .map(|name| name.strip_suffix(".unfold").unwrap_or(name).to_string()))
}
