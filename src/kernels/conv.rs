//! Convolution forward: per image, im2col once, then one GEMM per group,
//! then the bias. Weights `[Cout, Cin/groups, kh, kw]`, NCHW (NCL as height 1).

use super::im2col::{col2im_add, im2col, Geom};
use super::matmul::{matmul, matmul_acc, MatRef};

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

/// Weight gradient: `dw [Cout, Cin/G, K] = Σₙ gy[n] · cols(x[n])ᵀ`, per group.
pub fn conv_kernel_grad(d: &ConvDims, x: &[f32], gy: &[f32], dw: &mut [f32]) {
    let (k, l, plane) = (d.geom.cells(), d.geom.positions(), d.geom.h * d.geom.w);
    let (cg, og) = (d.cin / d.groups, d.cout / d.groups);
    let mut cols = vec![0.0f32; d.cin * k * l];
    for n in 0..d.n {
        for c in 0..d.cin {
            im2col(
                &d.geom,
                &x[(n * d.cin + c) * plane..(n * d.cin + c + 1) * plane],
                &mut cols[c * k * l..(c + 1) * k * l],
            );
        }
        for g in 0..d.groups {
            let gy_g = &gy[(n * d.cout + g * og) * l..(n * d.cout + (g + 1) * og) * l];
            let cols_g = &cols[g * cg * k * l..(g + 1) * cg * k * l];
            let dst = &mut dw[g * og * cg * k..(g + 1) * og * cg * k];
            matmul_acc(
                og,
                l,
                cg * k,
                MatRef::new(gy_g, og, l, false),
                MatRef::new(cols_g, l, cg * k, true),
                dst,
                n > 0,
            );
        }
    }
    if d.n == 0 {
        dw.fill(0.0);
    }
}

/// Input gradient (a transposed convolution): `dx[n] = col2im(Wᵀ · gy[n])`, per group.
pub fn conv_input_grad(d: &ConvDims, w: &[f32], gy: &[f32], dx: &mut [f32]) {
    let (k, l, plane) = (d.geom.cells(), d.geom.positions(), d.geom.h * d.geom.w);
    let (cg, og) = (d.cin / d.groups, d.cout / d.groups);
    let mut cols = vec![0.0f32; cg * k * l];
    dx.fill(0.0);
    for n in 0..d.n {
        for g in 0..d.groups {
            let wg = &w[g * og * cg * k..(g + 1) * og * cg * k];
            let gy_g = &gy[(n * d.cout + g * og) * l..(n * d.cout + (g + 1) * og) * l];
            matmul(
                cg * k,
                og,
                l,
                MatRef::new(wg, cg * k, og, true),
                MatRef::new(gy_g, og, l, false),
                &mut cols,
            );
            for c in 0..cg {
                let ci = g * cg + c;
                col2im_add(
                    &d.geom,
                    &cols[c * k * l..(c + 1) * k * l],
                    &mut dx[(n * d.cin + ci) * plane..(n * d.cin + ci + 1) * plane],
                );
            }
        }
    }
}
