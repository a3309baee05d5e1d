//! Convolution forward: per image, im2col once, then one GEMM per group,
//! then the bias. Weights `[Cout, Cin/groups, kh, kw]`, NCHW (NCL as height 1).

use super::im2col::{im2col, Geom};
use super::matmul::{matmul, MatRef};

/// The sizes of a convolution.
#[derive(Clone, Copy, Debug)]
pub struct ConvDims {
    /// Batch.
    pub n: usize,
    /// Input channels.
    pub cin: usize,
    /// Output channels.
    pub cout: usize,
    /// Groups (divides both channel counts).
    pub groups: usize,
    /// The window over one input plane.
    pub geom: Geom,
}

/// `out [N, Cout, L] = conv(x [N, Cin, H·W], w) + bias`.
pub fn conv_forward(d: &ConvDims, x: &[f32], w: &[f32], bias: Option<&[f32]>, out: &mut [f32]) {
    let (k, l, plane) = (d.geom.cells(), d.geom.positions(), d.geom.h * d.geom.w);
    let (cg, og) = (d.cin / d.groups, d.cout / d.groups);
    let mut cols = vec![0.0f32; d.cin * k * l];
    for n in 0..d.n {
        for c in 0..d.cin {
            let src = &x[(n * d.cin + c) * plane..(n * d.cin + c + 1) * plane];
            im2col(&d.geom, src, &mut cols[c * k * l..(c + 1) * k * l]);
        }
        for g in 0..d.groups {
            let wg = &w[g * og * cg * k..(g + 1) * og * cg * k];
            let cols_g = &cols[g * cg * k * l..(g + 1) * cg * k * l];
            let dst = &mut out[(n * d.cout + g * og) * l..(n * d.cout + (g + 1) * og) * l];
            matmul(
                og,
                cg * k,
                l,
                MatRef::new(wg, og, cg * k, false),
                MatRef::new(cols_g, cg * k, l, false),
                dst,
            );
        }
        if let Some(b) = bias {
            for (co, row) in out[n * d.cout * l..(n + 1) * d.cout * l]
                .chunks_exact_mut(l)
                .enumerate()
            {
                row.iter_mut().for_each(|v| *v += b[co]);
            }
        }
    }
}
