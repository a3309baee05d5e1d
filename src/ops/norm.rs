//! The normalisation at the heart of LayerNorm and GroupNorm as one op over
//! the last axis, `(x − mean) / √(var + eps)` with the biased variance
//! (`torch.nn.functional.layer_norm` without weight and bias; ONNX's
//! `LayerNormalization` with scale 1 and no bias), and its gradient as one
//! op. Each row is read once for its mean and once for its variance (two
//! passes after a shift by the row's first element, so a constant row is
//! exactly 0, as PyTorch's, and NaN with eps 0); the gradient recomputes
//! both instead of keeping them.

use super::softmax::rows;
use super::{Arity, Grads, NodeId, OpBuilder, OpDef, RunCtx, View};
use crate::error::{attr_err, shape_err, Result};
use crate::kernels::math;
use serde::{Deserialize, Serialize};

/// `(x − mean) / √(var + eps)` over the last axis; the result has `x`'s shape.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Normalize {
    /// Added to the variance (finite, ≥ 0).
    pub eps: f32,
}

/// The gradient of [`Normalize`]: operands `x` and the upstream gradient
/// `g` (one shape), result `σ⁻¹·(g − mean(g) − x̂·mean(g·x̂))` per row, with
/// `x̂` the normalised row and `σ⁻¹ = 1 / √(var + eps)`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct NormalizeBackward {
    /// Added to the variance (finite, ≥ 0).
    pub eps: f32,
}

/// `Err` unless `eps` is usable and `x` has an axis to normalise over.
fn check(op: &'static str, eps: f32, x: &[usize]) -> Result<()> {
    if !(eps.is_finite() && eps >= 0.0) {
        return attr_err(op, format!("eps must be finite and ≥ 0, got {eps}"));
    }
    if x.is_empty() {
        return shape_err(
            op,
            "operand 0 is a scalar; it normalises over the last axis",
        );
    }
    Ok(())
}

impl OpDef for Normalize {
    fn name(&self) -> &'static str {
        "normalize"
    }
    debug_attrs!(eps);
    fn infer_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>> {
        check("normalize", self.eps, ins[0])?;
        Ok(ins[0].to_vec())
    }
    fn eval(&self, ins: &[View], out: &mut [f32], shape: &[usize], _: &RunCtx) {
        let eps = self.eps;
        rows(ins, out, shape.len() - 1, |x, _, o| {
            math::normalize_row(x, o, eps)
        })
    }
    fn vjp(&self, g: &mut dyn OpBuilder, xs: &[NodeId], _: NodeId, gy: NodeId) -> Grads {
        Ok(vec![Some(g.normalize_backward(xs[0], gy, self.eps)?)])
    }
}

impl OpDef for NormalizeBackward {
    fn name(&self) -> &'static str {
        "normalize_backward"
    }
    debug_attrs!(eps);
    fn arity(&self) -> Arity {
        Arity::Exact(2)
    }
    fn infer_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>> {
        check("normalize_backward", self.eps, ins[0])?;
        if ins[0] != ins[1] {
            return shape_err(
                "normalize_backward",
                format!(
                    "operand 0 (x) has shape {:?} but operand 1 (the gradient) has shape {:?}",
                    ins[0], ins[1]
                ),
            );
        }
        Ok(ins[0].to_vec())
    }
    fn eval(&self, ins: &[View], out: &mut [f32], shape: &[usize], _: &RunCtx) {
        let eps = self.eps;
        rows(ins, out, shape.len() - 1, |x, g, o| {
            math::normalize_grad_row(x, g, o, eps)
        })
    }
    /// Per row, with `a·A = mean(u·g) − mean(u)·mean(g)`, `m = mean(g·x̂)`,
    /// `a·B = mean(u·x̂)` and `s = σ⁻¹`: `d/dg = normalize_backward(x, u)`
    /// (the op is self-adjoint in `g`) and `d/dx = −s²·x̂·(a·A − m·a·B) −
    /// s·(a·B·normalize_backward(x, g) + m·normalize_backward(x, u))`.
    fn vjp(&self, b: &mut dyn OpBuilder, xs: &[NodeId], _: NodeId, u: NodeId) -> Grads {
        let (x, g, eps) = (xs[0], xs[1], self.eps);
        let mean = |b: &mut dyn OpBuilder, p: NodeId, q: NodeId| -> Result<NodeId> {
            let pq = b.mul(p, q)?;
            b.mean(pq, &[-1], true)
        };
        let nb_u = b.normalize_backward(x, u, eps)?;
        let nb_g = b.normalize_backward(x, g, eps)?;
        let xh = b.normalize(x, eps)?;
        // s² = 1 / (var + eps), s = σ⁻¹
        let mx = b.mean(x, &[-1], true)?;
        let c = b.sub(x, mx)?;
        let var = mean(b, c, c)?;
        let ve = b.add_scalar(var, eps)?;
        let s2 = b.recip(ve)?;
        let s = b.sqrt(s2)?;
        let (ug, gx, ux) = (mean(b, u, g)?, mean(b, g, xh)?, mean(b, u, xh)?);
        let (ub, gb) = (b.mean(u, &[-1], true)?, b.mean(g, &[-1], true)?);
        let ubgb = b.mul(ub, gb)?;
        let aa = b.sub(ug, ubgb)?;
        let mab = b.mul(gx, ux)?;
        let t = b.sub(aa, mab)?;
        let t = b.mul(s2, t)?;
        let first = b.mul(xh, t)?;
        let p1 = b.mul(ux, nb_g)?;
        let p2 = b.mul(gx, nb_u)?;
        let p = b.add(p1, p2)?;
        let second = b.mul(s, p)?;
        let both = b.add(first, second)?;
        let dx = b.neg(both)?;
        Ok(vec![Some(dx), Some(nb_u)])
    }
}
