//! Convolution kernels: per image, im2col into a per-thread scratch buffer,
//! then one GEMM per group. Images run in parallel (each GEMM on one thread);
//! with fewer images than threads the GEMMs are parallel instead. Weights
//! `[Cout, Cin/groups, kh, kw]`, NCHW (NCL as height 1).

use super::im2col::{col2im_add, im2col, Geom};
use super::matmul::{matmul_acc_on, MatRef};
use super::par;
use super::scratch::{self, Slot};
use rayon::prelude::*;

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

impl ConvDims {
    /// `(cells per window, output positions, input plane, Cin/G, Cout/G)`.
    fn sizes(&self) -> (usize, usize, usize, usize, usize) {
        let g = &self.geom;
        (
            g.cells(),
            g.positions(),
            g.h * g.w,
            self.cin / self.groups,
            self.cout / self.groups,
        )
    }
    /// Whether the columns of a plane are the plane itself (1x1, stride 1, no padding).
    fn identity_columns(&self) -> bool {
        let g = &self.geom;
        g.kernel == [1, 1] && g.stride == [1, 1] && g.pad == [0, 0]
    }
    /// Threads for each image's GEMMs: all of them when images are too few to
    /// go round, else one (the images run in parallel).
    fn gemm_threads(&self) -> usize {
        let t = par::threads();
        if self.n >= t {
            1
        } else {
            t
        }
    }
}

/// Runs `f(image, out chunk)` for every image's `per_image`-sized piece of
/// `out`, in parallel when there are threads and several images.
fn per_image(out: &mut [f32], per_image: usize, f: impl Fn(usize, &mut [f32]) + Sync + Send) {
    if per_image == 0 {
        return;
    }
    if par::threads() > 1 {
        out.par_chunks_mut(per_image)
            .enumerate()
            .for_each(|(n, o)| f(n, o));
    } else {
        out.chunks_mut(per_image)
            .enumerate()
            .for_each(|(n, o)| f(n, o));
    }
}

/// The `[Cin·K, L]` columns of image `n` in `cols` (or `x` itself for 1x1 convolutions).
fn columns<'a>(d: &ConvDims, x: &'a [f32], n: usize, cols: &'a mut [f32]) -> &'a [f32] {
    let (k, l, plane, _, _) = d.sizes();
    let img = &x[n * d.cin * plane..(n + 1) * d.cin * plane];
    if d.identity_columns() {
        return img;
    }
    for (c, src) in img.chunks_exact(plane).enumerate() {
        im2col(&d.geom, src, &mut cols[c * k * l..(c + 1) * k * l]);
    }
    cols
}

/// `out [N, Cout, L] = epilogue(conv(x [N, Cin, H·W], w) + bias)`; `epilogue`
/// runs on each image's output while it is in cache.
pub fn conv_forward(
    d: &ConvDims,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    epilogue: &(dyn Fn(&mut [f32]) + Sync),
) {
    let (k, l, _, cg, og) = d.sizes();
    let threads = d.gemm_threads();
    let cols_len = if d.identity_columns() {
        0
    } else {
        d.cin * k * l
    };
    per_image(out, d.cout * l, |n, y| {
        if let Some(b) = bias {
            for (row, &bv) in y.chunks_exact_mut(l).zip(b) {
                row.fill(bv);
            }
        }
        scratch::with(Slot::Columns, cols_len, |cols| {
            let cols = columns(d, x, n, cols);
            for g in 0..d.groups {
                matmul_acc_on(
                    threads,
                    og,
                    cg * k,
                    l,
                    MatRef::new(
                        &w[g * og * cg * k..(g + 1) * og * cg * k],
                        og,
                        cg * k,
                        false,
                    ),
                    MatRef::new(
                        &cols[g * cg * k * l..(g + 1) * cg * k * l],
                        cg * k,
                        l,
                        false,
                    ),
                    &mut y[g * og * l..(g + 1) * og * l],
                    bias.is_some(),
                );
            }
        });
        epilogue(y);
    });
}

/// Weight gradient: `dw [Cout, Cin/G, K] = Σₙ gy[n] · cols(x[n])ᵀ`, per group.
/// The images are split into one run per thread, each summing into its own
/// partial (the first into `dw`), and the partials are then added up.
pub fn conv_kernel_grad(d: &ConvDims, x: &[f32], gy: &[f32], dw: &mut [f32]) {
    let (k, l, _, cg, og) = d.sizes();
    let parts = par::threads().min(d.n).max(1);
    let per_part = d.n.div_ceil(parts);
    let threads = if parts > 1 { 1 } else { par::threads() };
    let cols_len = if d.identity_columns() {
        0
    } else {
        d.cin * k * l
    };
    let part = |p: usize, acc: &mut [f32]| {
        scratch::with(Slot::Columns, cols_len, |cols| {
            let images = p * per_part..((p + 1) * per_part).min(d.n);
            if images.is_empty() {
                acc.fill(0.0);
            }
            for (i, n) in images.enumerate() {
                let cols = columns(d, x, n, cols);
                for g in 0..d.groups {
                    matmul_acc_on(
                        threads,
                        og,
                        l,
                        cg * k,
                        MatRef::new(&gy[(n * d.cout + g * og) * l..][..og * l], og, l, false),
                        MatRef::new(&cols[g * cg * k * l..][..cg * k * l], l, cg * k, true),
                        &mut acc[g * og * cg * k..][..og * cg * k],
                        i > 0,
                    );
                }
            }
        });
    };
    if parts == 1 {
        part(0, dw);
        return;
    }
    let len = dw.len();
    scratch::with(Slot::Partials, len * (parts - 1), |partials| {
        rayon::join(
            || part(0, dw),
            || {
                partials
                    .par_chunks_mut(len)
                    .enumerate()
                    .for_each(|(p, acc)| part(p + 1, acc))
            },
        );
        for acc in partials.chunks_exact(len) {
            dw.iter_mut().zip(acc).for_each(|(d, a)| *d += a);
        }
    });
}

/// Input gradient (a transposed convolution): `dx[n] = col2im(Wᵀ · gy[n])`, per group.
pub fn conv_input_grad(d: &ConvDims, w: &[f32], gy: &[f32], dx: &mut [f32]) {
    let (k, l, plane, cg, og) = d.sizes();
    let threads = d.gemm_threads();
    let direct = d.identity_columns() && d.groups == 1;
    per_image(dx, d.cin * plane, |n, dxn| {
        let cols_len = if direct { 0 } else { cg * k * l };
        scratch::with(Slot::Columns, cols_len, |cols| {
            for g in 0..d.groups {
                let wt = MatRef::new(&w[g * og * cg * k..][..og * cg * k], cg * k, og, true);
                let gyg = MatRef::new(&gy[(n * d.cout + g * og) * l..][..og * l], og, l, false);
                if direct {
                    matmul_acc_on(threads, cg, og, l, wt, gyg, dxn, false);
                    continue;
                }
                matmul_acc_on(threads, cg * k, og, l, wt, gyg, cols, false);
                let dxg = &mut dxn[g * cg * plane..(g + 1) * cg * plane];
                dxg.fill(0.0);
                for (c, dst) in dxg.chunks_exact_mut(plane).enumerate() {
                    col2im_add(&d.geom, &cols[c * k * l..(c + 1) * k * l], dst);
                }
            }
        });
    });
}
