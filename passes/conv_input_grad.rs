//! The convolution input-gradient pattern autodiff emits →
//! `Conv1dInputGrad` / `Conv2dInputGrad` (a transposed convolution: GEMM
//! then col2im per image, no materialised column tensor for the batch):
//!
//! ```text
//! fold(reshape(matmul{trans_a}(reshape(w) [G, Cout/G, Cin/G·K],
//!                              reshape(gy) [N, G, Cout/G, L])) [N, Cin, K, L])
//! → conv_input_grad(w, gy)
//! ```

use super::{Pass, Program};
use crate::error::Result;
use crate::graph::NodeId;
use crate::ops::Op;

/// Fuses convolution input gradients.
pub struct ConvInputGradPass;

fn match_input_grad(p: &Program, f: NodeId) -> Result<Option<(NodeId, NodeId, Op)>> {
    let Op::Fold { window, spatial } = &p.graph.node(f)?.op else {
        return Ok(None);
    };
    let r = p.graph.operands(f)[0];
    let m = p.through_reshape(r)?;
    if !matches!(
        p.graph.node(m)?.op,
        Op::MatMul {
            trans_a: true,
            trans_b: false
        }
    ) {
        return Ok(None);
    }
    let mops = p.graph.operands(m);
    let (w, gy) = (p.through_reshape(mops[0])?, p.through_reshape(mops[1])?);
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
    Ok(fits.then(|| {
        (
            w,
            gy,
            Op::ConvInputGrad {
                window: window.clone(),
                groups,
                spatial: spatial.clone(),
            },
        )
    }))
}

impl Pass for ConvInputGradPass {
    fn name(&self) -> &'static str {
        "conv_input_grad"
    }
    fn run(&self, p: &mut Program) -> Result<usize> {
        let mut fused = 0;
        for f in p.live_nodes() {
            if p.graph.node(f).is_err() {
                continue;
            }
            let Some((w, gy, op)) = match_input_grad(p, f)? else {
                continue;
            };
            let Some(new) = p.try_add_op(op, &[w, gy])? else {
                continue;
            };
            p.substitute(f, new)?;
            fused += 1;
        }
        Ok(fused)
    }
}
