//! The convolution input-gradient pattern autodiff emits →
//! `Conv1dInputGrad` / `Conv2dInputGrad` (a transposed convolution: GEMM
//! then col2im per image, no materialised column tensor for the batch):
//!
//! ```text
//! fold(reshape(matmul{trans_a}(reshape(w) [G, Cout/G, Cin/G·K],
//!                              reshape(gy) [N, G, Cout/G, L])) [N, Cin, K, L])
//! → conv_input_grad(w, gy)
//! ```

use super::conv_forward::matmul_t;
use super::pattern::{any, op, Match, Rule, RulePass};
use super::{Patch, Program};
use crate::error::Result;
use crate::ops::Op;
use crate::ops::{ConvInputGrad, Fold};

/// Fuses convolution input gradients (rule `input_grad`).
pub fn pass() -> RulePass {
    let matmul = op(matmul_t::<true, false>).bind("m").args([
        any().opt_reshape().bind("w"),
        any().opt_reshape().bind("gy"),
    ]);
    let pattern = op(|o| matches!(o, Op::Fold(_))).args([matmul.opt_reshape()]);
    RulePass::new(
        "conv_input_grad",
        vec![Rule::new("input_grad", pattern, build)],
    )
    .after(&["matmul_transpose"])
}

/// The fused gradient when every shape fits a grouped convolution's.
fn build(p: &Program, mt: &Match) -> Result<Option<Patch>> {
    let (f, m, w, gy) = (mt.root, mt.node("m"), mt.node("w"), mt.node("gy"));
    let Op::Fold(Fold { window, spatial }) = &p.graph.node(f)?.op else {
        return Ok(None);
    };
    if window.rank() > 2 {
        return Ok(None); // the fused kernels are 1-D and 2-D
    }
    let mops = p.graph.operands(m);
    let (ws, gys, ms, fs) = (
        p.graph.shape(w)?,
        p.graph.shape(gy)?,
        p.graph.shape(m)?,
        p.graph.shape(f)?,
    );
    if ms.len() != 4 || ws.len() != fs.len() || gys.len() != fs.len() {
        return Ok(None);
    }
    let (n, cin, groups, k, l) = (fs[0], fs[1], ms[1], window.cells(), ms[3]);
    if groups == 0 || cin % groups != 0 || ws[0] % groups != 0 {
        return Ok(None);
    }
    let (cg, cout) = (cin / groups, ws[0]);
    let out = window.out_size("conv_input_grad", spatial)?;
    let fits = ws[1] == cg
        && ws[2..] == window.kernel[..]
        && gys[..2] == [n, cout]
        && gys[2..] == out[..]
        && p.graph.shape(mops[0])? == [groups, cout / groups, cg * k]
        && p.graph.shape(mops[1])? == [n, groups, cout / groups, l]
        && ms == [n, groups, cg * k, l];
    if !fits {
        return Ok(None);
    }
    let op = Op::ConvInputGrad(ConvInputGrad {
        window: window.clone(),
        groups,
        spatial: spatial.clone(),
    });
    let mut patch = Patch::new();
    let new = patch.add(op, &[w.into(), gy.into()]);
    patch.replace(f, new);
    Ok(Some(patch))
}
