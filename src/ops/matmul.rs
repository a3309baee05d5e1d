//! Batched matrix product `[..., M, K] · [..., K, N]` with numpy broadcasting
//! of the batch dimensions.

use super::View;
use crate::error::{shape_err, Result};
use crate::graph::{Graph, NodeId};
use crate::kernels;
use crate::shape::{broadcast_pair, broadcast_strides, strided_walk};

/// Shape rule of `MatMul`.
pub fn matmul_shape(a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    if a.len() < 2 || b.len() < 2 {
        return shape_err(
            "matmul",
            format!("operands need rank ≥ 2, got operand 0 {a:?} and operand 1 {b:?}"),
        );
    }
    let (ra, rb) = (a.len(), b.len());
    if a[ra - 1] != b[rb - 2] {
        return shape_err(
            "matmul",
            format!(
                "inner dimensions differ: operand 0 {a:?} has K = {}, operand 1 {b:?} has K = {}",
                a[ra - 1],
                b[rb - 2]
            ),
        );
    }
    let Some(mut out) = broadcast_pair(&a[..ra - 2], &b[..rb - 2]) else {
        return shape_err(
            "matmul",
            format!("batch dimensions of operand 0 {a:?} and operand 1 {b:?} do not broadcast"),
        );
    };
    out.extend([a[ra - 2], b[rb - 1]]);
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

/// Kernel of `MatMul`: one `gemm` call per batch entry.
pub fn matmul(a: View, b: View, out: &mut [f32], out_shape: &[usize]) {
    let (m, k, n) = (
        a.shape[a.shape.len() - 2],
        a.shape[a.shape.len() - 1],
        b.shape[b.shape.len() - 1],
    );
    for_each_batch(a.shape, b.shape, out_shape, |ia, ib, io| {
        kernels::matmul::matmul(
            m,
            k,
            n,
            &a.data[ia * m * k..(ia + 1) * m * k],
            &b.data[ib * k * n..(ib + 1) * k * n],
            &mut out[io * m * n..(io + 1) * m * n],
        );
    });
}

/// Plain triple-loop reference of `MatMul`, used to check the `gemm` kernel.
pub fn matmul_reference(a: View, b: View, out: &mut [f32], out_shape: &[usize]) {
    let (m, k, n) = (
        a.shape[a.shape.len() - 2],
        a.shape[a.shape.len() - 1],
        b.shape[b.shape.len() - 1],
    );
    for_each_batch(a.shape, b.shape, out_shape, |ia, ib, io| {
        for i in 0..m {
            for j in 0..n {
                let mut acc = 0.0f64;
                for p in 0..k {
                    acc += a.data[ia * m * k + i * k + p] as f64
                        * b.data[ib * k * n + p * n + j] as f64;
                }
                out[io * m * n + i * n + j] = acc as f32;
            }
        }
    });
}

/// `x` with its last two axes swapped (an element-wise `Transpose`).
fn swap_last2(g: &mut Graph, x: NodeId) -> Result<NodeId> {
    let r = g.shape(x)?.len();
    let mut perm: Vec<usize> = (0..r).collect();
    perm.swap(r - 2, r - 1);
    g.transpose(x, &perm)
}

/// VJP of `MatMul`: `ga = gy·bᵀ`, `gb = aᵀ·gy` (broadcast batch dimensions
/// are summed back by the autodiff driver).
pub fn matmul_vjp(g: &mut Graph, a: NodeId, b: NodeId, gy: NodeId) -> Result<Vec<Option<NodeId>>> {
    let bt = swap_last2(g, b)?;
    let ga = g.matmul(gy, bt)?;
    let at = swap_last2(g, a)?;
    let gb = g.matmul(at, gy)?;
    Ok(vec![Some(ga), Some(gb)])
}
