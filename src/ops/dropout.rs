//! Inverted dropout with a position-addressed, seeded mask.
//!
//! In training mode element `i` is kept when `hash(seed, step, i)` maps to a
//! uniform value `≥ p`, and kept elements are scaled by `1/(1-p)`; in
//! evaluation mode dropout is the identity. Because the mask depends only on
//! `(seed, step, i)`, the same op applied to the upstream gradient in the same
//! run reproduces the forward mask exactly.

use super::RunCtx;
use super::{fmt_f32, one, Grads, NodeId, OpBuilder, OpDef, View};
use crate::error::{attr_err, Result};
use crate::rng::mix64;
use serde::{Deserialize, Serialize};

/// Shape rule of `Dropout`: same shape; `p` must lie in `[0, 1]`.
pub fn dropout_shape(x: &[usize], p: f32) -> Result<Vec<usize>> {
    if !(0.0..=1.0).contains(&p) {
        return attr_err("dropout", format!("probability p = {p} is not in [0, 1]"));
    }
    Ok(x.to_vec())
}

/// Whether element `i` survives in run `step`.
#[inline]
pub fn keep(p: f32, seed: u64, step: u64, i: usize) -> bool {
    let h = mix64(mix64(seed ^ step.wrapping_mul(0xD6E8_FEB8_6659_FD93)) ^ i as u64);
    ((h >> 40) as f32 / (1u64 << 24) as f32) >= p
}

/// Reference kernel of `Dropout`: `x · m / (1 − p)` with `m` the mask, as
/// PyTorch (`input * noise`, the noise already scaled): a dropped NaN or ∞
/// stays NaN (NaN · 0), a dropped negative value is −0.0, and with `p = 1`
/// every element is `x · 0`.
pub fn dropout(p: f32, seed: u64, x: &[f32], out: &mut [f32], ctx: &RunCtx) {
    if !ctx.training || p == 0.0 {
        out.copy_from_slice(x);
        return;
    }
    let scale = if p < 1.0 { 1.0 / (1.0 - p) } else { 0.0 };
    for (i, (o, &v)) in out.iter_mut().zip(x).enumerate() {
        *o = v * if keep(p, seed, ctx.step, i) {
            scale
        } else {
            0.0
        };
    }
}

/// Inverted dropout with a seeded mask in training mode, identity in
/// evaluation mode (`torch.nn.functional.dropout`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Dropout {
    /// Probability of zeroing an element, in `[0, 1]`.
    pub p: f32,
    /// Mask seed (the mask also depends on the run step).
    pub seed: u64,
}

impl OpDef for Dropout {
    fn name(&self) -> &'static str {
        "dropout"
    }
    fn attrs(&self) -> Vec<(&'static str, String)> {
        vec![("p", fmt_f32(self.p)), ("seed", self.seed.to_string())]
    }
    fn infer_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>> {
        dropout_shape(ins[0], self.p)
    }
    fn eval(&self, ins: &[View], out: &mut [f32], _: &[usize], ctx: &RunCtx) {
        dropout(self.p, self.seed, ins[0].data, out, ctx)
    }
    // The mask is a function of (seed, step, index): the same op on the
    // gradient in the same run applies the forward's mask.
    fn vjp(&self, g: &mut dyn OpBuilder, _: &[NodeId], _: NodeId, gy: NodeId) -> Grads {
        one(g.dropout(gy, self.p, self.seed))
    }
    fn is_random(&self) -> bool {
        true
    }
}
