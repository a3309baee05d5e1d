//! Batched matrix product `[..., M, K] · [..., K, N]` with numpy broadcasting
//! of the batch dimensions.

use super::View;
use super::{Arity, Grads, OpDef, RunCtx};
use super::{NodeId, OpBuilder};
use crate::error::{shape_err, Result};
use crate::kernels;
use crate::kernels::matmul::MatRef;
use crate::shape::{broadcast_pair, broadcast_strides, strided_walk};
use serde::{Deserialize, Serialize};

/// `(rows, cols)` of operand `x` as used, i.e. after the optional transpose.
fn used(x: &[usize], transposed: bool) -> (usize, usize) {
    let (r, c) = (x[x.len() - 2], x[x.len() - 1]);
    if transposed {
        (c, r)
    } else {
        (r, c)
    }
}

/// Shape rule of `MatMul`.
pub fn matmul_shape(a: &[usize], b: &[usize], trans_a: bool, trans_b: bool) -> Result<Vec<usize>> {
    if a.len() < 2 || b.len() < 2 {
        return shape_err(
            "matmul",
            format!("operands need rank ≥ 2, got operand 0 {a:?} and operand 1 {b:?}"),
        );
    }
    let (ra, rb) = (a.len(), b.len());
    let ((m, ka), (kb, n)) = (used(a, trans_a), used(b, trans_b));
    if ka != kb {
        return shape_err(
            "matmul",
            format!("inner dimensions differ: operand 0 {a:?} has K = {ka}, operand 1 {b:?} has K = {kb} (transposed: {trans_a}, {trans_b})"),
        );
    }
    let Some(mut out) = broadcast_pair(&a[..ra - 2], &b[..rb - 2]) else {
        return shape_err(
            "matmul",
            format!("batch dimensions of operand 0 {a:?} and operand 1 {b:?} do not broadcast"),
        );
    };
    out.extend([m, n]);
    Ok(out)
}

/// Calls `f(a_matrix, b_matrix, out_matrix)` with the matrix indices of every batch entry.
fn for_each_batch(a: &[usize], b: &[usize], out: &[usize], mut f: impl FnMut(usize, usize, usize)) {
    let bo = &out[..out.len() - 2];
    let sa = broadcast_strides(&a[..a.len() - 2], bo);
    let sb = broadcast_strides(&b[..b.len() - 2], bo);
    if bo.is_empty() {
        f(0, 0, 0);
    } else {
        strided_walk(bo, [&sa, &sb], |i, [ia, ib]| f(ia, ib, i));
    }
}

/// Kernel of `MatMul`: one `gemm` call per batch entry, transposed operands read by strides.
pub fn matmul(
    a: View,
    b: View,
    trans_a: bool,
    trans_b: bool,
    out: &mut [f32],
    out_shape: &[usize],
) {
    let ((m, k), (_, n)) = (used(a.shape, trans_a), used(b.shape, trans_b));
    for_each_batch(a.shape, b.shape, out_shape, |ia, ib, io| {
        kernels::matmul::matmul(
            m,
            k,
            n,
            MatRef::new(&a.data[ia * m * k..(ia + 1) * m * k], m, k, trans_a),
            MatRef::new(&b.data[ib * k * n..(ib + 1) * k * n], k, n, trans_b),
            &mut out[io * m * n..(io + 1) * m * n],
        );
    });
}

/// Plain triple-loop reference of `MatMul`, used to check the `gemm` kernel.
pub fn matmul_reference(
    a: View,
    b: View,
    trans_a: bool,
    trans_b: bool,
    out: &mut [f32],
    out_shape: &[usize],
) {
    let ((m, k), (_, n)) = (used(a.shape, trans_a), used(b.shape, trans_b));
    let at = |ia: usize, i: usize, p: usize| {
        a.data[ia * m * k + if trans_a { p * m + i } else { i * k + p }]
    };
    let bt = |ib: usize, p: usize, j: usize| {
        b.data[ib * k * n + if trans_b { j * k + p } else { p * n + j }]
    };
    for_each_batch(a.shape, b.shape, out_shape, |ia, ib, io| {
        for i in 0..m {
            for j in 0..n {
                let acc: f64 = (0..k)
                    .map(|p| at(ia, i, p) as f64 * bt(ib, p, j) as f64)
                    .sum();
                out[io * m * n + i * n + j] = acc as f32;
            }
        }
    });
}

/// `x` with its last two axes swapped (an element-wise `Transpose`).
fn swap_last2(g: &mut dyn OpBuilder, x: NodeId) -> Result<NodeId> {
    let r = g.shape(x)?.len();
    let mut perm: Vec<usize> = (0..r).collect();
    perm.swap(r - 2, r - 1);
    g.transpose(x, &perm)
}

/// VJP of `MatMul`: with `A = op(a)`, `B = op(b)`: `gA = gy·Bᵀ`, `gB = Aᵀ·gy`,
/// transposed back for a transposed operand. Emitted in the generic form
/// (explicit element-wise transposes); broadcast batch dimensions are summed
/// back by the autodiff driver.
pub fn matmul_vjp(
    g: &mut dyn OpBuilder,
    a: NodeId,
    b: NodeId,
    trans_a: bool,
    trans_b: bool,
    gy: NodeId,
) -> Result<Vec<Option<NodeId>>> {
    let op_a = if trans_a { swap_last2(g, a)? } else { a };
    let op_b = if trans_b { swap_last2(g, b)? } else { b };
    let bt = swap_last2(g, op_b)?;
    let mut ga = g.matmul(gy, bt)?;
    let at = swap_last2(g, op_a)?;
    let mut gb = g.matmul(at, gy)?;
    if trans_a {
        ga = swap_last2(g, ga)?;
    }
    if trans_b {
        gb = swap_last2(g, gb)?;
    }
    Ok(vec![Some(ga), Some(gb)])
}

/// Batched matrix product `op(a) · op(b)` (`torch.matmul`) with `op(a)
/// [..., M, K]`, `op(b) [..., K, N]` and batch dims broadcast; `op`
/// transposes the last two axes of an operand whose flag is set (read by
/// strides, no copy).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MatMul {
    /// Use `a` transposed.
    #[serde(default)]
    pub trans_a: bool,
    /// Use `b` transposed.
    #[serde(default)]
    pub trans_b: bool,
}

impl OpDef for MatMul {
    fn name(&self) -> &'static str {
        "matmul"
    }
    fn attrs(&self) -> Vec<(&'static str, String)> {
        let flags = [("trans_a", self.trans_a), ("trans_b", self.trans_b)];
        flags
            .iter()
            .filter(|f| f.1)
            .map(|f| (f.0, "true".into()))
            .collect()
    }
    fn arity(&self) -> Arity {
        Arity::Exact(2)
    }
    fn infer_shape(&self, ins: &[&[usize]]) -> Result<Vec<usize>> {
        matmul_shape(ins[0], ins[1], self.trans_a, self.trans_b)
    }
    fn eval(&self, ins: &[View], out: &mut [f32], out_shape: &[usize], _: &RunCtx) {
        matmul(ins[0], ins[1], self.trans_a, self.trans_b, out, out_shape)
    }
    fn vjp(&self, g: &mut dyn OpBuilder, xs: &[NodeId], _: NodeId, gy: NodeId) -> Grads {
        matmul_vjp(g, xs[0], xs[1], self.trans_a, self.trans_b, gy)
    }
}
