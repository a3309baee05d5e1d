//! Convolution kernels on kiln's packed GEMM. A stride-1 window pads each
//! image once and has the tiles read its im2col columns there, never packed:
//! the forward product as `w · cols` where output rows are a multiple of 16
//! wide, else as `(colsᵀ · wᵀ)ᵀ`; the weight gradient as `(cols · gyᵀ)ᵀ`;
//! the input gradient as a forward convolution of `gy` with the flipped
//! kernel. Other strides pack the columns straight from the image (no
//! columns buffer) and fold the input gradient back (col2im). Images run in
//! parallel; with fewer images than threads each image's output positions
//! are split instead. Weights `[Cout, Cin/groups, kh, kw]`, NCHW (NCL as
//! height 1).

use super::gemm::tile::MR;
use super::gemm::{gemm, gemm_raw, pack_row, pack_run, Init, MatRef, PackA, PackB, KC, NC, NR};
use super::im2col::{
    col2im_add, cols_row, pad_planes, padded_len, padded_position, padded_row_starts, padded_runs,
    pads_once, Geom,
};
use super::matmul::matmul_acc;
use super::par::{self, SharedMut};
use super::scratch::{self, Slot};
use super::transpose::{transpose, transpose_raw};
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
    /// Pieces each image's output positions are cut into so that every
    /// thread has work: 1 when the images go round.
    fn splits(&self) -> usize {
        let t = par::threads();
        let l = self.geom.positions();
        if self.n >= t {
            1
        } else {
            t.div_ceil(self.n).min(l.div_ceil(4 * NR)).max(1)
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

/// One image's im2col columns for one group, `[Cin/G · K, L]`, packed for
/// the GEMM straight from the image (row `c·K + cell`, column = position).
struct Columns<'a> {
    geom: &'a Geom,
    /// The group's input planes of this image, padded by [`pad_planes`]
    /// when `padded` (stride 1), else as they are.
    image: &'a [f32],
    padded: bool,
    /// Output positions before column 0 (a task's share of the image).
    skip: usize,
}

impl Columns<'_> {
    /// Calls `f` with the columns of `image`'s planes from position `skip`
    /// on; a stride-1 window with padding first pads the planes once, into
    /// this thread's scratch.
    fn with<R>(geom: &Geom, image: &[f32], skip: usize, f: impl FnOnce(Columns) -> R) -> R {
        let padded = pads_once(geom);
        let copy = padded && geom.pad != [0, 0];
        let len = if copy {
            padded_len(geom, image.len() / (geom.h * geom.w))
        } else {
            0
        };
        scratch::with(Slot::Columns, len, |buf| {
            let image = if copy {
                pad_planes(geom, image, buf);
                &*buf
            } else {
                image
            };
            f(Columns {
                geom,
                image,
                padded,
                skip,
            })
        })
    }
    /// Writes row `r` of the columns from position `p0` into `out`.
    fn row(&self, r: usize, p0: usize, out: &mut [f32]) {
        if self.padded {
            padded_runs(
                self.geom,
                self.image,
                r,
                1,
                self.skip + p0,
                out.len(),
                |_, q, run| out[q..q + run.len()].copy_from_slice(run),
            );
        } else {
            let g = self.geom;
            let plane = &self.image[(r / g.cells()) * g.h * g.w..][..g.h * g.w];
            cols_row(g, plane, r % g.cells(), self.skip + p0, out);
        }
    }
}

impl PackB for Columns<'_> {
    fn pack(&self, k0: usize, kc: usize, n0: usize, nc: usize, dst: &mut [f32]) {
        if self.padded {
            // straight from the padded planes into the panels
            let p0 = self.skip + n0;
            padded_runs(self.geom, self.image, k0, kc, p0, nc, |kk, q, run| {
                pack_run(q, run, kk, kc, dst)
            });
            return;
        }
        let mut row = [0f32; NC];
        for kk in 0..kc {
            self.row(k0 + kk, n0, &mut row[..nc]);
            pack_row(&row[..nc], kk, kc, dst);
        }
    }
    fn write_dense<'b>(&self, k: usize, n: usize, buf: &'b mut [f32]) -> MatRef<'b> {
        for (r, row) in buf[..k * n].chunks_exact_mut(n).enumerate() {
            self.row(r, 0, row);
        }
        MatRef::new(buf, k, n, false)
    }
    fn reads_in_place(&self) -> bool {
        // only when every panel's columns lie within one output row (else
        // the panels that straddle rows would be packed one by one)
        self.padded && self.geom.out().1 % NR == 0 && self.skip % NR == 0
    }
    fn row_starts(&self, k0: usize, starts: &mut [usize]) {
        self.row_offsets(k0, starts)
    }
    fn panel_start(&self, j0: usize) -> Option<usize> {
        let (at, side_by_side) = padded_position(self.geom, self.skip + j0);
        (side_by_side >= NR).then_some(at)
    }
    fn source(&self) -> &[f32] {
        self.image
    }
}

impl Columns<'_> {
    /// Where rows `r0 ..` of the padded columns start (see [`padded_row_starts`]).
    fn row_offsets(&self, r0: usize, starts: &mut [usize]) {
        let rows = padded_row_starts(self.geom, r0);
        starts.iter_mut().zip(rows).for_each(|(s, r)| *s = r);
    }
    /// Where positions `q0 ..` (after `skip`) lie from a padded row's start.
    fn position_offsets(&self, q0: usize, offsets: &mut [usize]) {
        let mut q = 0;
        while q < offsets.len() {
            let (at, left) = padded_position(self.geom, self.skip + q0 + q);
            let run = left.min(offsets.len() - q);
            for (i, o) in offsets[q..q + run].iter_mut().enumerate() {
                *o = at + i;
            }
            q += run;
        }
    }
    /// Rows of the columns (input planes × window cells).
    fn rows(&self) -> usize {
        let plane = if self.padded {
            padded_len(self.geom, 1)
        } else {
            self.geom.h * self.geom.w
        };
        self.image.len() / plane * self.geom.cells()
    }
}

/// The columns as the left operand of the weight gradient
/// (`dWᵀ = cols · gyᵀ`): padded planes are read in place, a row's step `kk`
/// being output position `skip + kk`.
impl PackA for Columns<'_> {
    fn fits(&self, m: usize, k: usize) -> bool {
        m <= self.rows() && self.skip + k <= self.geom.positions()
    }
    fn pack(&self, i0: usize, mc: usize, k0: usize, kc: usize, dst: &mut [f32]) {
        let mut runs = [[0f32; KC]; MR];
        for (t, panel) in dst.chunks_exact_mut(kc * MR).enumerate() {
            let r0 = i0 + t * MR;
            let rows = MR.min(i0 + mc - r0);
            for (ii, run) in runs.iter_mut().enumerate() {
                if ii < rows {
                    self.row(r0 + ii, k0, &mut run[..kc]);
                } else {
                    run[..kc].fill(0.0);
                }
            }
            for (kk, d) in panel.chunks_exact_mut(MR).enumerate() {
                for (d, run) in d.iter_mut().zip(&runs) {
                    *d = run[kk];
                }
            }
        }
    }
    fn write_dense<'b>(&self, m: usize, k: usize, buf: &'b mut [f32]) -> MatRef<'b> {
        // the rows of A are the columns' rows
        <Self as PackB>::write_dense(self, m, k, buf)
    }
    fn reads_in_place(&self) -> bool {
        self.padded
    }
    fn row_starts(&self, i0: usize, starts: &mut [usize]) {
        self.row_offsets(i0, starts)
    }
    fn step_offsets(&self, k0: usize, offsets: &mut [usize]) {
        self.position_offsets(k0, offsets)
    }
    fn source(&self) -> &[f32] {
        self.image
    }
}

/// The transposed columns, `[L, Cin/G · K]` (rows are positions), as the
/// left operand of the forward product `yᵀ = colsᵀ · wᵀ`: padded planes are
/// read in place, row `i` being position `skip + i` and step `kk` row `kk`
/// of the columns.
struct ColumnsT<'a>(Columns<'a>);

impl PackA for ColumnsT<'_> {
    fn fits(&self, m: usize, k: usize) -> bool {
        PackA::fits(&self.0, k, m)
    }
    fn pack(&self, i0: usize, mc: usize, k0: usize, kc: usize, dst: &mut [f32]) {
        for (t, panel) in dst.chunks_exact_mut(kc * MR).enumerate() {
            let r0 = i0 + t * MR;
            let rows = MR.min(i0 + mc - r0);
            for (kk, d) in panel.chunks_exact_mut(MR).enumerate() {
                self.0.row(k0 + kk, r0, &mut d[..rows]);
                d[rows..].fill(0.0);
            }
        }
    }
    fn write_dense<'b>(&self, m: usize, k: usize, buf: &'b mut [f32]) -> MatRef<'b> {
        // the columns row-major, read transposed
        PackB::write_dense(&self.0, k, m, buf);
        MatRef::new(buf, m, k, true)
    }
    fn reads_in_place(&self) -> bool {
        self.0.padded
    }
    fn row_starts(&self, i0: usize, starts: &mut [usize]) {
        self.0.position_offsets(i0, starts)
    }
    fn step_offsets(&self, k0: usize, offsets: &mut [usize]) {
        self.0.row_offsets(k0, offsets)
    }
    fn source(&self) -> &[f32] {
        self.0.image
    }
}

/// The product `out[.., p0 .. p0+len] (init)= a · cols(image)[.., p0 .. p0+len]`
/// into rows of `ldc`, through the identity (1x1) or the packed columns.
///
/// # Safety
/// `out` addresses `a`'s rows of `len` floats `ldc` apart, touched by no one else.
#[allow(clippy::too_many_arguments)]
unsafe fn product_into(
    d: &ConvDims,
    a: MatRef,
    image: &[f32],
    p0: usize,
    len: usize,
    out: *mut f32,
    ldc: usize,
    init: Init,
) {
    let (k, l, _, cg, og) = d.sizes();
    // SAFETY: the caller's contract.
    unsafe {
        if d.identity_columns() {
            let b = MatRef::new(&image[p0..], cg, l, false);
            gemm_raw(og, cg, len, &a, &b, out, ldc, init);
        } else {
            Columns::with(&d.geom, image, p0, |cols| {
                // packing the columns (B) costs about what transposing the
                // product does: read them in place when they are the larger
                if cols.padded && !PackB::reads_in_place(&cols) && cg * k >= og {
                    transposed_product(og, cg * k, len, a, ColumnsT(cols), out, ldc, init)
                } else {
                    gemm_raw(og, cg * k, len, &a, &cols, out, ldc, init)
                }
            });
        }
    }
}

/// `out[m × len] (init)= a[m × k] · cols` as `outᵀ = colsᵀ · aᵀ`, so that
/// the tiles read the columns in place from the padded image even where
/// output rows are not whole panels wide (the columns as B would be packed);
/// the product is then written out transposed, plus the bias.
///
/// # Safety
/// As [`product_into`].
#[allow(clippy::too_many_arguments)]
unsafe fn transposed_product(
    m: usize,
    k: usize,
    len: usize,
    a: MatRef,
    cols_t: ColumnsT,
    out: *mut f32,
    ldc: usize,
    init: Init,
) {
    let at = MatRef {
        row_stride: a.col_stride,
        col_stride: a.row_stride,
        ..a
    };
    scratch::with(Slot::Product, len * m, |prod| {
        gemm(len, k, m, &cols_t, &at, prod, m, Init::Overwrite);
        // SAFETY: `out` holds m rows of len floats ldc apart (the caller's).
        let row = |i: usize| unsafe { std::slice::from_raw_parts_mut(out.add(i * ldc), len) };
        if let Init::Add = init {
            for i in 0..m {
                let column = prod[i..].iter().step_by(m);
                row(i).iter_mut().zip(column).for_each(|(y, p)| *y += p);
            }
            return;
        }
        // SAFETY: as above; `prod` is this thread's own.
        unsafe { transpose_raw(prod.as_ptr(), m, len, m, out, ldc) };
        if let Init::RowBias(bias) = init {
            for (i, &b) in bias.iter().enumerate().take(m) {
                row(i).iter_mut().for_each(|y| *y += b);
            }
        }
    });
}

/// `out [N, Cout, L] = epilogue(conv(x [N, Cin, H·W], w) + bias)`;
/// `epilogue(n, y)` runs on image `n`'s output `y` while it is in cache.
pub fn conv_forward(
    d: &ConvDims,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    out: &mut [f32],
    epilogue: &(dyn Fn(usize, &mut [f32]) + Sync),
) {
    let (k, l, plane, cg, og) = d.sizes();
    assert!(
        x.len() >= d.n * d.cin * plane
            && w.len() >= d.cout * cg * k
            && out.len() >= d.n * d.cout * l,
        "conv_forward: buffers too small"
    );
    // image n, group g, positions p0 .. p0+len into `y` (that image's output)
    let run = |n: usize, g: usize, p0: usize, len: usize, y: *mut f32| {
        let wg = MatRef::new(&w[g * og * cg * k..][..og * cg * k], og, cg * k, false);
        let image = &x[(n * d.cin + g * cg) * plane..][..cg * plane];
        let init = match bias {
            Some(b) => Init::RowBias(&b[g * og..][..og]),
            None => Init::Overwrite,
        };
        // SAFETY: the callers below give every (image, group, position range)
        // to one task; `y` holds the image's Cout × L outputs.
        unsafe { product_into(d, wg, image, p0, len, y.add(g * og * l + p0), l, init) }
    };
    let splits = d.splits();
    if splits == 1 {
        per_image(out, d.cout * l, |n, y| {
            for g in 0..d.groups {
                run(n, g, 0, l, y.as_mut_ptr());
            }
            epilogue(n, y);
        });
        return;
    }
    let piece = l.div_ceil(splits).next_multiple_of(NR);
    let base = SharedMut(out.as_mut_ptr());
    (0..d.n * d.groups * l.div_ceil(piece))
        .into_par_iter()
        .for_each(|t| {
            let (ng, s) = (t / l.div_ceil(piece), t % l.div_ceil(piece));
            let (n, g, p0) = (ng / d.groups, ng % d.groups, s * piece);
            // SAFETY: image n's outputs lie inside `out` (asserted above).
            run(n, g, p0, piece.min(l - p0), unsafe {
                base.get().add(n * d.cout * l)
            });
        });
    per_image(out, d.cout * l, epilogue);
}

/// Weight gradient: `dw [Cout, Cin/G, K] = Σₙ gy[n] · cols(x[n])ᵀ`, per group,
/// computed as its transpose `cols(x[n]) · gy[n]ᵀ` so that the columns are
/// read in place from the padded image (stride 1) and only `gy` is packed.
/// The (image, position range) pieces are split into runs, each summing
/// `dwᵀ` into its own partial; the partials are then added up in order into
/// `dw`, transposed back. Pieces and runs depend on the sizes alone, never
/// on the thread count, so every thread count gives the same bits.
pub fn conv_kernel_grad(d: &ConvDims, x: &[f32], gy: &[f32], dw: &mut [f32]) {
    let (k, l, plane, cg, og) = d.sizes();
    let splits = if d.n >= GRAD_PARTS {
        1
    } else {
        GRAD_PARTS.div_ceil(d.n).min(l.div_ceil(4 * NR)).max(1)
    };
    let piece = l.div_ceil(splits);
    let units = d.n * splits;
    let parts = GRAD_PARTS.min(units).max(1);
    let per_part = units.div_ceil(parts);
    let len = d.cout * cg * k;
    assert!(dw.len() >= len, "conv_kernel_grad: buffers too small");
    // part p sums its pieces' dwᵀ, [G][Cin/G · K][Cout/G], into `acc`
    let part = |p: usize, acc: &mut [f32]| {
        let pieces = p * per_part..((p + 1) * per_part).min(units);
        if pieces.is_empty() {
            acc.fill(0.0);
        }
        for (i, u) in pieces.enumerate() {
            let (n, p0) = (u / splits, (u % splits) * piece);
            let len = piece.min(l.saturating_sub(p0));
            for g in 0..d.groups {
                // gy[n, g]ᵀ from position p0 on: element (position, o)
                let gyt = MatRef {
                    data: &gy[(n * d.cout + g * og) * l + p0..],
                    row_stride: 1,
                    col_stride: l,
                };
                let image = &x[(n * d.cin + g * cg) * plane..][..cg * plane];
                let dwt = &mut acc[g * og * cg * k..][..og * cg * k];
                let init = if i > 0 { Init::Add } else { Init::Overwrite };
                Columns::with(&d.geom, image, p0, |cols| {
                    gemm(cg * k, len, og, &cols, &gyt, dwt, og, init)
                });
            }
        }
    };
    scratch::with(Slot::Partials, len * parts, |partials| {
        if parts == 1 || par::threads() == 1 {
            partials
                .chunks_mut(len)
                .enumerate()
                .for_each(|(p, acc)| part(p, acc));
        } else {
            partials
                .par_chunks_mut(len)
                .enumerate()
                .for_each(|(p, acc)| part(p, acc));
        }
        // dw[g][o][r] = Σ_p partials[p][g][r][o]
        let (sum, rest) = partials.split_at_mut(len);
        for acc in rest.chunks_exact(len) {
            sum.iter_mut().zip(acc).for_each(|(s, a)| *s += a);
        }
        let rows = cg * k;
        for (dwg, sum) in dw
            .chunks_exact_mut(og * rows)
            .zip(sum.chunks_exact(og * rows))
        {
            transpose(sum, og, rows, og, dwg, rows);
        }
    });
}

/// Runs a weight gradient is cut into (each with its own partial sum): a
/// constant, so results do not depend on the thread count; up to this many
/// threads share the work.
const GRAD_PARTS: usize = 8;

/// The input gradient of a stride-1 window as a forward convolution: over
/// `gy` padded by `dilation·(k − 1) − pad`, with the kernel flipped and its
/// channel axes swapped, it yields `dx` (`None` for other strides, or
/// padding wider than the dilated kernel).
fn input_grad_as_forward(d: &ConvDims) -> Option<ConvDims> {
    let g = &d.geom;
    if g.stride != [1, 1] {
        return None;
    }
    let pad = |i: usize| (g.dilation[i] * (g.kernel[i] - 1)).checked_sub(g.pad[i]);
    let (oh, ow) = g.out();
    let geom = Geom {
        h: oh,
        w: ow,
        pad: [pad(0)?, pad(1)?],
        ..*g
    };
    Some(ConvDims {
        n: d.n,
        cin: d.cout,
        cout: d.cin,
        groups: d.groups,
        geom,
    })
}

/// `w [Cout, Cin/G, K]` → `[Cin, Cout/G, K]` per group with the kernel cells reversed
/// (both spatial axes flipped): the weights of [`input_grad_as_forward`].
fn flip_kernel(d: &ConvDims, w: &[f32], out: &mut [f32]) {
    let (k, _, _, cg, og) = d.sizes();
    for (o, wo) in w.chunks_exact(cg * k).take(d.cout).enumerate() {
        let (g, o) = (o / og, o % og);
        for (c, taps) in wo.chunks_exact(k).enumerate() {
            let to = &mut out[((g * cg + c) * og + o) * k..][..k];
            to.iter_mut()
                .zip(taps.iter().rev())
                .for_each(|(t, &v)| *t = v);
        }
    }
}

/// Input gradient (a transposed convolution): `dx[n] = col2im(Wᵀ · gy[n])`,
/// per group; with stride 1 a forward convolution of `gy` with the flipped
/// kernel instead (see `input_grad_as_forward`).
pub fn conv_input_grad(d: &ConvDims, w: &[f32], gy: &[f32], dx: &mut [f32]) {
    let (k, l, plane, cg, og) = d.sizes();
    if let Some(t) = input_grad_as_forward(d) {
        return scratch::with(Slot::Weights, w.len(), |flipped| {
            flip_kernel(d, w, flipped);
            conv_forward(&t, gy, flipped, None, dx, &|_, _| {});
        });
    }
    let direct = d.identity_columns() && d.groups == 1;
    let inner_parallel = d.splits() > 1;
    per_image(dx, d.cin * plane, |n, dxn| {
        let cols_len = if direct { 0 } else { cg * k * l };
        scratch::with(Slot::Columns, cols_len, |cols| {
            for g in 0..d.groups {
                let wt = MatRef::new(&w[g * og * cg * k..][..og * cg * k], cg * k, og, true);
                let gyg = MatRef::new(&gy[(n * d.cout + g * og) * l..][..og * l], og, l, false);
                let rows = if direct { cg } else { cg * k };
                let c: &mut [f32] = if direct { dxn } else { cols };
                if inner_parallel {
                    matmul_acc(rows, og, l, wt, gyg, c, false);
                } else {
                    gemm(rows, og, l, &wt, &gyg, c, l, Init::Overwrite);
                }
                if direct {
                    continue;
                }
                let dxg = &mut dxn[g * cg * plane..(g + 1) * cg * plane];
                dxg.fill(0.0);
                for (c, dst) in dxg.chunks_exact_mut(plane).enumerate() {
                    col2im_add(&d.geom, &cols[c * k * l..(c + 1) * k * l], dst);
                }
            }
        });
    });
}

#[cfg(test)]
#[path = "conv/tests.rs"]
mod tests;
