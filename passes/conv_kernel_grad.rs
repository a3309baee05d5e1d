//! The convolution weight-gradient pattern autodiff emits →
//! `Conv1dKernelGrad` / `Conv2dKernelGrad` (one fused op, im2col + GEMM
//! accumulated over the batch):
//!
//! ```text
//! reshape(reduce_sum₀(matmul{trans_b}(reshape(gy) [N, G, Cout/G, L],
//!                                     reshape(unfold(x)) [N, G, Cin/G·K, L]))) [Cout, Cin/G, *k]
//! → conv_kernel_grad(x, gy)
//! ```
//! (the transpose of the columns was folded into `trans_b` by `matmul_transpose`).

use super::conv_forward::{columns, matmul_t};
use super::pattern::{any, op, Match, Rule, RulePass};
use super::{Patch, Program};
use crate::error::Result;
use crate::ops::{ConvKernelGrad, Reduce, Unfold};
use crate::ops::{Op, ReduceKind};

/// Fuses convolution weight gradients (rule `kernel_grad`).
pub fn pass() -> RulePass {
    let pattern = op(|o| matches!(o, Op::Reshape(_))).args([op(
        |o| matches!(o, Op::Reduce(Reduce { kind: ReduceKind::Sum, axes, keepdims: true }) if axes == &[0]),
    )
    .args([op(matmul_t::<false, true>)
        .bind("m")
        .args([any().opt_reshape().bind("gy"), columns()])])]);
    RulePass::new(
        "conv_kernel_grad",
        vec![Rule::new("kernel_grad", pattern, build)],
    )
    .after(&["matmul_transpose"])
}

/// The fused gradient when every shape fits a grouped convolution's.
fn build(p: &Program, mt: &Match) -> Result<Option<Patch>> {
    let (dw, m, u, x, gy) = (
        mt.root,
        mt.node("m"),
        mt.node("u"),
        mt.node("x"),
        mt.node("gy"),
    );
    let Op::Unfold(Unfold(window)) = &p.graph.node(u)?.op else {
        return Ok(None);
    };
    if window.rank() > 2 {
        return Ok(None); // the fused kernels are 1-D and 2-D
    }
    let mops = p.graph.operands(m);
    let (xs, gys, ms, dws) = (
        p.graph.shape(x)?,
        p.graph.shape(gy)?,
        p.graph.shape(m)?,
        p.graph.shape(dw)?,
    );
    if ms.len() != 4 || gys.len() != xs.len() || dws.len() != xs.len() {
        return Ok(None);
    }
    let (n, cin, groups, k, l) = (xs[0], xs[1], ms[1], window.cells(), p.graph.shape(u)?[3]);
    if groups == 0 || cin % groups != 0 || gys[1] % groups != 0 {
        return Ok(None);
    }
    let (cg, cout) = (cin / groups, gys[1]);
    let out = window.out_size("conv_kernel_grad", &xs[2..])?;
    let fits = gys[0] == n
        && gys[2..] == out[..]
        && p.graph.shape(mops[0])? == [n, groups, cout / groups, l]
        && p.graph.shape(mops[1])? == [n, groups, cg * k, l]
        && ms == [n, groups, cout / groups, cg * k]
        && dws[..2] == [cout, cg]
        && dws[2..] == window.kernel[..];
    if !fits {
        return Ok(None);
    }
    let op = Op::ConvKernelGrad(ConvKernelGrad {
        window: window.clone(),
        groups,
    });
    let mut patch = Patch::new();
    let new = patch.add(op, &[x.into(), gy.into()]);
    patch.replace(dw, new);
    Ok(Some(patch))
}
