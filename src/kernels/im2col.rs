//! im2col / col2im over one `[H, W]` plane (a 1-D signal is a plane of
//! height 1). Columns are laid out `[K, L]`: `K` window cells (row-major over
//! the kernel) by `L` window positions (row-major over the output). A
//! stride-1 window reads a plane padded once ([`pad_planes`]) in plain runs.

use super::copy::{copy_short, SHORT, ZEROS};

/// A 2-D sliding window over an `h × w` plane, zero padded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geom {
    /// Kernel `[kh, kw]`.
    pub kernel: [usize; 2],
    /// Stride `[sh, sw]`.
    pub stride: [usize; 2],
    /// Padding on both sides `[ph, pw]`.
    pub pad: [usize; 2],
    /// Dilation `[dh, dw]`.
    pub dilation: [usize; 2],
    /// Plane height.
    pub h: usize,
    /// Plane width.
    pub w: usize,
}

impl Geom {
    /// Output size `(oh, ow)`; the window must fit in the padded plane.
    pub fn out(&self) -> (usize, usize) {
        let o = |i: usize, size: usize| {
            (size + 2 * self.pad[i] - self.dilation[i] * (self.kernel[i] - 1) - 1) / self.stride[i]
                + 1
        };
        (o(0, self.h), o(1, self.w))
    }
    /// Cells per window.
    pub fn cells(&self) -> usize {
        self.kernel[0] * self.kernel[1]
    }
    /// Window positions.
    pub fn positions(&self) -> usize {
        let (oh, ow) = self.out();
        oh * ow
    }
}

/// For kernel tap `k` along `axis`: the output positions `lo..hi` whose input
/// coordinate `o·stride + k·dilation − pad` lies inside the plane, and that
/// coordinate for `o = 0` (may be negative).
fn tap_range(g: &Geom, axis: usize, k: usize, out: usize) -> (usize, usize, isize) {
    let (s, size) = (g.stride[axis] as isize, [g.h, g.w][axis] as isize);
    let start = (k * g.dilation[axis]) as isize - g.pad[axis] as isize;
    // first o with start + o·s ≥ 0, first o with start + o·s ≥ size
    let first_at_least = |bound: isize| -> usize {
        if start >= bound {
            0
        } else {
            ((bound - start + s - 1) / s).min(out as isize) as usize
        }
    };
    let lo = first_at_least(0);
    (lo, first_at_least(size).max(lo), start)
}

/// Calls `f(row of the [K, L] columns, plane offset of its first in-plane cell,
/// in-plane output columns lo..hi)` for every kernel cell and output row; the
/// cells outside the plane are the caller's (zero for im2col, skipped for col2im).
#[inline(always)]
fn for_each_run(g: &Geom, mut f: impl FnMut(usize, Option<usize>, usize, usize)) {
    let (oh, ow) = g.out();
    for ki in 0..g.kernel[0] {
        let (ylo, yhi, y0) = tap_range(g, 0, ki, oh);
        for kj in 0..g.kernel[1] {
            let cell = ki * g.kernel[1] + kj;
            let (xlo, xhi, x0) = tap_range(g, 1, kj, ow);
            for y in 0..oh {
                let row = (cell * oh + y) * ow;
                if y < ylo || y >= yhi || xlo == xhi {
                    f(row, None, 0, 0);
                    continue;
                }
                let iy = (y0 + (y * g.stride[0]) as isize) as usize;
                let ix = (x0 + (xlo * g.stride[1]) as isize) as usize;
                f(row, Some(iy * g.w + ix), xlo, xhi);
            }
        }
    }
}

/// Writes the `[K, L]` columns of `plane` into `cols` (padding cells are 0).
pub fn im2col(g: &Geom, plane: &[f32], cols: &mut [f32]) {
    let ow = g.out().1;
    let sw = g.stride[1];
    for_each_run(g, |row, first, lo, hi| {
        let dst = &mut cols[row..row + ow];
        let Some(first) = first else {
            dst.fill(0.0);
            return;
        };
        dst[..lo].fill(0.0);
        dst[hi..].fill(0.0);
        let dst = &mut dst[lo..hi];
        if sw == 1 {
            dst.copy_from_slice(&plane[first..first + dst.len()]);
        } else {
            for (i, d) in dst.iter_mut().enumerate() {
                *d = plane[first + i * sw];
            }
        }
    });
}

/// Writes `cols[cell, p0 .. p0 + out.len()]` of `plane`'s `[K, L]` columns
/// (one kernel cell's row, from output position `p0`) into `out`.
pub fn cols_row(g: &Geom, plane: &[f32], cell: usize, p0: usize, out: &mut [f32]) {
    let (oh, ow) = g.out();
    let (ki, kj) = (cell / g.kernel[1], cell % g.kernel[1]);
    let (ylo, yhi, y0) = tap_range(g, 0, ki, oh);
    let (xlo, xhi, x0) = tap_range(g, 1, kj, ow);
    let sw = g.stride[1];
    let (mut q, mut p) = (0, p0);
    while q < out.len() {
        let (y, x) = (p / ow, p % ow);
        let run = (ow - x).min(out.len() - q);
        let dst = &mut out[q..q + run];
        let (lo, hi) = (xlo.clamp(x, x + run), xhi.clamp(x, x + run));
        if y < ylo || y >= yhi || lo == hi {
            dst.fill(0.0);
        } else {
            dst[..lo - x].fill(0.0);
            dst[hi - x..].fill(0.0);
            let first = ((y0 + (y * g.stride[0]) as isize) as usize) * g.w
                + (x0 + (lo * sw) as isize) as usize;
            let dst = &mut dst[lo - x..hi - x];
            if sw == 1 {
                copy_short(dst, &plane[first..first + dst.len()]);
            } else {
                for (i, d) in dst.iter_mut().enumerate() {
                    *d = plane[first + i * sw];
                }
            }
        }
        q += run;
        p += run;
    }
}

/// Whether [`pad_planes`] serves `g`: stride 1 with some padding (without
/// padding the plane itself is already "padded").
pub fn pads_once(g: &Geom) -> bool {
    g.stride == [1, 1]
}

/// Floats [`pad_planes`] writes for `channels` planes.
pub fn padded_len(g: &Geom, channels: usize) -> usize {
    channels * (g.h + 2 * g.pad[0]) * (g.w + 2 * g.pad[1])
}

/// Copies `planes` (each `h × w`) into `out` with their zero padding, so that
/// every stride-1 window row is one contiguous run (see [`padded_runs`]).
pub fn pad_planes(g: &Geom, planes: &[f32], out: &mut [f32]) {
    let (pw, ph) = (g.w + 2 * g.pad[1], g.h + 2 * g.pad[0]);
    let (top, left) = (g.pad[0] * pw, g.pad[1]);
    for (src, dst) in planes
        .chunks_exact(g.h * g.w)
        .zip(out.chunks_exact_mut(ph * pw))
    {
        dst[..top + left].fill(0.0);
        let gap = pw - g.w; // right pad, next row's left pad
        for (y, row) in src.chunks_exact(g.w).enumerate() {
            let at = top + y * pw + left;
            copy_short(&mut dst[at..at + g.w], row);
            let gap_end = (at + pw).min(dst.len());
            let zeros = &ZEROS[..gap.min(SHORT)];
            if gap_end - (at + g.w) == zeros.len() {
                copy_short(&mut dst[at + g.w..gap_end], zeros);
            } else {
                dst[at + g.w..gap_end].fill(0.0);
            }
        }
        let bottom = top + g.h * pw;
        dst[bottom..].fill(0.0);
    }
}

/// For a stride-1 window over planes padded by [`pad_planes`] (held back to
/// back): where row `r0`, `r0 + 1`, … of the im2col columns starts, i.e. the
/// padded-plane offset of its first output position's input (row `r` is
/// plane `r / cells`, kernel cell `r % cells`). Steps from row to row
/// without division.
pub fn padded_row_starts(g: &Geom, r0: usize) -> impl Iterator<Item = usize> {
    let plane = padded_len(g, 1);
    let [kh, kw] = g.kernel;
    let (row_step, col_step) = (g.dilation[0] * (g.w + 2 * g.pad[1]), g.dilation[1]);
    let cell = r0 % g.cells();
    let (mut c, mut ki, mut kj) = (r0 / g.cells(), cell / kw, cell % kw);
    std::iter::from_fn(move || {
        let start = c * plane + ki * row_step + kj * col_step;
        kj += 1;
        if kj == kw {
            kj = 0;
            ki += 1;
            if ki == kh {
                ki = 0;
                c += 1;
            }
        }
        Some(start)
    })
}

/// Where output position `p` lies relative to a row's start
/// ([`padded_row_starts`]), and how many positions from `p` on share its
/// output row (and so lie side by side).
pub fn padded_position(g: &Geom, p: usize) -> (usize, usize) {
    let (_, ow) = g.out();
    let (y, x) = (p / ow, p % ow);
    (y * (g.w + 2 * g.pad[1]) + x, ow - x)
}

/// Calls `f(kk, q, run)` with the runs of `cols[r0 + kk, p0 .. p0 + len]`
/// for `kk < rows` (one per output row, `q` counting from `p0`), read from
/// planes padded by [`pad_planes`].
#[inline(always)]
pub fn padded_runs(
    g: &Geom,
    padded: &[f32],
    r0: usize,
    rows: usize,
    p0: usize,
    len: usize,
    mut f: impl FnMut(usize, usize, &[f32]),
) {
    let mut q = 0;
    while q < len {
        let (at, left) = padded_position(g, p0 + q);
        let run = left.min(len - q);
        for (kk, start) in padded_row_starts(g, r0).take(rows).enumerate() {
            f(kk, q, &padded[start + at..][..run]);
        }
        q += run;
    }
}

/// Adds every column cell of `cols [K, L]` to its position in `plane`.
pub fn col2im_add(g: &Geom, cols: &[f32], plane: &mut [f32]) {
    let sw = g.stride[1];
    for_each_run(g, |row, first, lo, hi| {
        let Some(first) = first else { return };
        let src = &cols[row + lo..row + hi];
        if sw == 1 {
            let dst = &mut plane[first..first + src.len()];
            dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
        } else {
            for (i, s) in src.iter().enumerate() {
                plane[first + i * sw] += s;
            }
        }
    });
}

/// A geometry from its parts, for tests: kernel, stride, padding, dilation, plane `[h, w]`.
#[cfg(test)]
pub(crate) fn geom(
    kernel: [usize; 2],
    stride: [usize; 2],
    pad: [usize; 2],
    dilation: [usize; 2],
    [h, w]: [usize; 2],
) -> Geom {
    Geom {
        kernel,
        stride,
        pad,
        dilation,
        h,
        w,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_runs_read_the_im2col_columns_of_stride_one_windows() {
        let geoms = [
            geom([3, 3], [1, 1], [1, 1], [1, 1], [5, 7]),
            geom([2, 3], [1, 1], [2, 0], [2, 2], [6, 9]),
            geom([1, 3], [1, 1], [0, 1], [1, 1], [1, 11]),
        ];
        for g in geoms {
            assert!(pads_once(&g));
            let planes: Vec<f32> = (0..2 * g.h * g.w).map(|i| i as f32 + 1.0).collect();
            let mut padded = vec![f32::NAN; padded_len(&g, 2)];
            pad_planes(&g, &planes, &mut padded);
            let (k, l) = (g.cells(), g.positions());
            // the columns of both planes, [2·K, L]
            let mut cols = vec![f32::NAN; 2 * k * l];
            for (plane, c) in planes
                .chunks_exact(g.h * g.w)
                .zip(cols.chunks_exact_mut(k * l))
            {
                im2col(&g, plane, c);
            }
            // row ranges within a plane, across planes, and single rows
            for (r0, rows) in [(0, 2 * k), (1, k), (k - 1, 2), (k + 1, 1)] {
                for (p0, len) in [(0, l), (2, l - 3), (l - 1, 1)] {
                    let mut got = vec![f32::NAN; rows * len];
                    padded_runs(&g, &padded, r0, rows, p0, len, |kk, q, run| {
                        got[kk * len + q..][..run.len()].copy_from_slice(run)
                    });
                    for kk in 0..rows {
                        assert_eq!(
                            got[kk * len..][..len],
                            cols[(r0 + kk) * l + p0..][..len],
                            "{g:?} row {} from {p0}",
                            r0 + kk
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn cols_row_reads_any_run_of_the_im2col_columns() {
        let geoms = [
            geom([3, 3], [1, 1], [1, 1], [1, 1], [5, 7]),
            geom([2, 3], [2, 3], [1, 2], [2, 1], [9, 8]),
            geom([1, 4], [1, 2], [0, 3], [1, 1], [1, 13]),
        ];
        for g in geoms {
            let plane: Vec<f32> = (0..g.h * g.w).map(|i| i as f32 + 1.0).collect();
            let (k, l) = (g.cells(), g.positions());
            let mut cols = vec![f32::NAN; k * l];
            im2col(&g, &plane, &mut cols);
            for cell in 0..k {
                for (p0, len) in [(0, l), (1, l - 1), (l / 2, l - l / 2), (3, 5.min(l - 3))] {
                    let mut row = vec![f32::NAN; len];
                    cols_row(&g, &plane, cell, p0, &mut row);
                    assert_eq!(
                        row,
                        cols[cell * l + p0..][..len],
                        "{g:?} cell {cell} from {p0}"
                    );
                }
            }
        }
    }
}
