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

use super::{Pass, Program};
use crate::error::Result;
use crate::graph::NodeId;
use crate::ops::{Op, ReduceKind};

/// Fuses convolution weight gradients.
pub struct ConvKernelGradPass;

fn match_kernel_grad(p: &Program, dw: NodeId) -> Result<Option<(NodeId, NodeId, Op)>> {
    let s = p.through_reshape(dw)?;
    if !matches!(&p.graph.node(s)?.op, Op::Reduce { kind: ReduceKind::Sum, axes, keepdims: true } if axes == &[0])
    {
        return Ok(None);
    }
    let m = p.graph.operands(s)[0];
    if !matches!(
        p.graph.node(m)?.op,
        Op::MatMul {
            trans_a: false,
            trans_b: true
        }
    ) {
        return Ok(None);
    }
    let mops = p.graph.operands(m);
    let (gy, u) = (p.through_reshape(mops[0])?, p.through_reshape(mops[1])?);
    let Op::Unfold(window) = &p.graph.node(u)?.op else {
        return Ok(None);
    };
    let x = p.graph.operands(u)[0];
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
    Ok(fits.then(|| {
        (
            x,
            gy,
            Op::ConvKernelGrad {
                window: window.clone(),
                groups,
            },
        )
    }))
}

impl Pass for ConvKernelGradPass {
    fn name(&self) -> &'static str {
        "conv_kernel_grad"
    }
    fn run(&self, p: &mut Program) -> Result<usize> {
        let mut fused = 0;
        for dw in p.live_nodes() {
            if !matches!(p.graph.node(dw).map(|n| &n.op), Ok(Op::Reshape { .. })) {
                continue;
            }
            let Some((x, gy, op)) = match_kernel_grad(p, dw)? else {
                continue;
            };
            let Some(new) = p.try_add_op(op, &[x, gy])? else {
                continue;
            };
            p.substitute(dw, new)?;
            fused += 1;
        }
        Ok(fused)
    }
}
