//! Pooling kernels over one `[H, W]` plane (a 1-D signal is a plane of height
//! 1): max pooling with argmax indices in one sweep (or the values alone),
//! its scatter backward, and average pooling forward and backward.
//!
//! Windows are placed on the plane grown by `pads` (before, after) per axis;
//! padded cells are −∞ for max pooling and 0 for average pooling, and are
//! never read or written.

mod avg;
mod max;
mod two_by_two;

pub use avg::{avg_pool, avg_pool_backward};
pub(crate) use max::takes;
pub use max::{max_pool, max_pool_backward, max_pool_values};

use std::ops::Range;

/// A pooling window over an `h × w` plane with asymmetric padding, and what
/// every plane's kernel call reads of it (the interior block), derived once
/// by [`PoolGeom::new`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolGeom {
    /// Kernel `[kh, kw]`.
    kernel: [usize; 2],
    /// Stride `[sh, sw]`.
    stride: [usize; 2],
    /// Dilation `[dh, dw]`.
    dilation: [usize; 2],
    /// Padding `[(top, bottom), (left, right)]`.
    pads: [(usize, usize); 2],
    /// Plane size `[h, w]`.
    size: [usize; 2],
    /// Output size `[oh, ow]`.
    out: [usize; 2],
    /// The output rows and columns whose windows lie wholly in the plane.
    inner: Interior,
}

/// Which cells an average divides by (see `ops::pool::AvgDivisor`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Divide {
    /// By the kernel's cell count, always.
    Window,
    /// By the window's cells inside the plane grown by the leading padding on both sides.
    PaddedInput,
    /// By the window's cells inside the plane.
    RealCells,
}

impl PoolGeom {
    /// The window `kernel` `[kh, kw]` at `stride` and `dilation` over an
    /// `size` `[h, w]` plane grown by `pads` `[(top, bottom), (left, right)]`,
    /// giving `out` `[oh, ow]` outputs (the caller's shape rule has checked
    /// that the windows fit and every size is in range).
    pub fn new(
        kernel: [usize; 2],
        stride: [usize; 2],
        dilation: [usize; 2],
        pads: [(usize, usize); 2],
        size: [usize; 2],
        out: [usize; 2],
    ) -> PoolGeom {
        let mut g = PoolGeom {
            kernel,
            stride,
            dilation,
            pads,
            size,
            out,
            inner: Interior::default(),
        };
        g.inner = g.interior_block();
        g
    }
    /// Output cells per plane.
    pub fn out_len(&self) -> usize {
        self.out[0] * self.out[1]
    }
    /// Input cells per plane.
    pub fn plane(&self) -> usize {
        self.size[0] * self.size[1]
    }
    /// For output index `o` along `axis`, the kernel taps `lo..hi` that land
    /// inside the plane, and the plane coordinate of tap 0 (may be negative).
    /// In closed form: a huge kernel costs no more than a small one.
    fn taps(&self, axis: usize, o: usize) -> (usize, usize, isize) {
        let (k, d) = (self.kernel[axis], self.dilation[axis]);
        let start = (o * self.stride[axis]) as isize - self.pads[axis].0 as isize;
        let size = self.size[axis] as isize;
        // the first tap with start + i·d >= 0, and the first with >= size
        let lo = match start >= 0 {
            true => 0,
            false => start.unsigned_abs().div_ceil(d).min(k),
        };
        let hi = match start >= size {
            true => 0,
            false => ((size - start) as usize).div_ceil(d).min(k),
        };
        (lo, hi.max(lo), start)
    }
    /// Cells of a window at output index `o` along `axis` that `rule` counts.
    fn count(&self, axis: usize, o: usize, rule: Divide) -> usize {
        match rule {
            Divide::Window => self.kernel[axis],
            Divide::RealCells => {
                let (lo, hi, _) = self.taps(axis, o);
                hi - lo
            }
            Divide::PaddedInput => {
                // taps i with o·s + i·d < limit, in closed form
                let limit = self.size[axis] + 2 * self.pads[axis].0;
                let first = o * self.stride[axis];
                match first < limit {
                    true => (limit - first)
                        .div_ceil(self.dilation[axis])
                        .min(self.kernel[axis]),
                    false => 0,
                }
            }
        }
    }
    /// Output indices along `axis` whose whole window lies inside the plane:
    /// `lo..hi` (empty when none does).
    fn interior(&self, axis: usize) -> (usize, usize) {
        let (k, d, s) = (self.kernel[axis], self.dilation[axis], self.stride[axis]);
        let (pad, size, out) = (self.pads[axis].0, self.size[axis], self.out[axis]);
        let lo = pad.div_ceil(s).min(out);
        let span = (k - 1) * d + 1; // window extent
        let hi = if size + pad >= span {
            ((size + pad - span) / s + 1).min(out)
        } else {
            0
        };
        (lo, hi.max(lo))
    }
    /// The interior block: output rows whose windows' rows all lie in the
    /// plane (a range, as rows only clip at the edges) and the interior
    /// columns; both empty when either is (interior rows without interior
    /// columns hold no interior window: every window is an edge window).
    fn interior_block(&self) -> Interior {
        let (r, c) = (self.interior(0), self.interior(1));
        let (rows, cols) = match r.0 < r.1 && c.0 < c.1 {
            true => (r, c),
            false => ((0, 0), (0, 0)),
        };
        Interior {
            rows,
            cols,
            inside_cols: c,
            taps: self.kernel[0] * self.kernel[1],
        }
    }
    /// Plane offset of tap `t` (row-major over the kernel) relative to the
    /// window's first cell, for unclipped windows.
    fn tap_offset(&self, t: usize) -> usize {
        let (ki, kj) = (t / self.kernel[1], t % self.kernel[1]);
        ki * self.dilation[0] * self.size[1] + kj * self.dilation[1]
    }
    /// Plane offset of the first cell of the unclipped window at `(oh, ow)`.
    fn window_start(&self, oh: usize, ow: usize) -> usize {
        (oh * self.stride[0] - self.pads[0].0) * self.size[1] + ow * self.stride[1] - self.pads[1].0
    }
    /// Calls `f(output index, window, 1 / divisor under rule)` for every
    /// window of a plane outside the interior block, row-major.
    #[inline(always)]
    fn for_each_edge_window(&self, rule: Divide, mut f: impl FnMut(usize, Win, f32)) {
        let inner = self.inner;
        if inner.rows() == (0..self.out[0]) && inner.cols() == (0..self.out[1]) {
            return; // every window is interior
        }
        let (dh, w) = (self.dilation[0], self.size[1] as isize);
        let (a, b) = inner.inside_cols;
        let (kw, sw, pw) = (self.kernel[1], self.stride[1], self.pads[1].0 as isize);
        let ow_all = self.out[1];
        for oh in 0..self.out[0] {
            // in an interior row only the columns left and right of the block
            let (left, right) = match inner.rows().contains(&oh) {
                true => inner.cols,
                false => (ow_all, ow_all),
            };
            if left == 0 && right == ow_all {
                continue;
            }
            let (rlo, rhi, r0) = self.taps(0, oh);
            let rows = self.count(0, oh, rule) as f32;
            let first_row = (r0 + (rlo * dh) as isize) * w;
            let base = oh * self.out[1];
            for ow in (0..left).chain(right..ow_all) {
                let ((clo, chi, c0), cols) = if ow >= a && ow < b {
                    ((0, kw, (ow * sw) as isize - pw), kw)
                } else {
                    (self.taps(1, ow), self.count(1, ow, rule))
                };
                let win = Win {
                    first: first_row + c0,
                    row_step: (dh as isize) * w,
                    rows: rhi - rlo,
                    cols: (clo, chi),
                    starts_in_pad: rlo > 0 || clo > 0 || rhi == rlo || chi == clo,
                };
                f(base + ow, win, 1.0 / (rows * cols as f32));
            }
        }
    }
}

/// Output rows and columns whose windows lie wholly inside the plane (both
/// empty when either is), the columns whose windows' columns do, and the taps
/// per window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Interior {
    rows: (usize, usize),
    cols: (usize, usize),
    inside_cols: (usize, usize),
    taps: usize,
}

impl Interior {
    /// The interior output rows.
    fn rows(&self) -> Range<usize> {
        self.rows.0..self.rows.1
    }
    /// The interior output columns.
    fn cols(&self) -> Range<usize> {
        self.cols.0..self.cols.1
    }
}

/// The in-plane cells of one window: `rows` rows starting at plane offset
/// `first` (the column of tap 0 included) `row_step` apart, and in each the
/// column taps `lo..hi`.
#[derive(Clone, Copy, Debug)]
struct Win {
    first: isize,
    row_step: isize,
    rows: usize,
    cols: (usize, usize),
    /// Whether the window's first cell (row-major) is a padded one.
    starts_in_pad: bool,
}

impl Win {
    /// Calls `f(plane index)` for every in-plane cell, in row-major window order.
    #[inline(always)]
    fn cells(&self, dw: usize, mut f: impl FnMut(usize)) {
        let (lo, hi) = self.cols;
        let mut row = self.first;
        for _ in 0..self.rows {
            for j in lo..hi {
                f((row + (j * dw) as isize) as usize);
            }
            row += self.row_step;
        }
    }
}

/// The interior of the most common pooling, 2x2 windows at stride 2 without
/// dilation, output row by output row: `f(top, bottom, at, out)` gets the
/// row's windows' cells in the two input rows (window `j` is `top[2j..2j+2]`
/// over `bottom[2j..2j+2]`), the plane index `at` of `top[0]`, and the row's
/// output range.
#[inline(always)]
fn for_each_2x2_row(
    g: &PoolGeom,
    x: &[f32],
    mut f: impl FnMut(&[f32], &[f32], usize, Range<usize>),
) {
    let inner = g.inner;
    let (w, c0, n) = (g.size[1], inner.cols.0, inner.cols().len());
    for oh in inner.rows() {
        let start = g.window_start(oh, c0);
        let (top, bottom) = (&x[start..start + 2 * n], &x[start + w..start + w + 2 * n]);
        let first = oh * g.out[1] + c0;
        f(top, bottom, start, first..first + n);
    }
}

impl PoolGeom {
    /// Whether the windows are 2x2 at stride 2 and tile the plane: no
    /// padding, no dilation, even sides (every cell in exactly one window).
    fn tiles_2x2(&self) -> bool {
        is_2x2_stride_2(self)
            && self.pads == [(0, 0), (0, 0)]
            && self.size == [2 * self.out[0], 2 * self.out[1]]
    }
}

/// Whether `g` is 2x2 at stride 2 without dilation (see [`for_each_2x2_row`]).
fn is_2x2_stride_2(g: &PoolGeom) -> bool {
    g.kernel == [2, 2] && g.stride == [2, 2] && g.dilation == [1, 1]
}

/// Output columns handled together in the interior loops.
const BLOCK: usize = 64;

/// `range` in pieces of at most [`BLOCK`].
fn blocks(range: std::ops::Range<usize>) -> impl Iterator<Item = std::ops::Range<usize>> {
    range
        .clone()
        .step_by(BLOCK)
        .map(move |s| s..(s + BLOCK).min(range.end))
}

/// `x[at], x[at + step], ...` (`n` of them): a slice of `x` when `step` is 1,
/// else gathered into `buf`.
#[inline(always)]
fn strided<'a>(x: &'a [f32], at: usize, step: usize, n: usize, buf: &'a mut [f32]) -> &'a [f32] {
    if step == 1 || n == 0 {
        return &x[at..at + n];
    }
    let src = &x[at..at + (n - 1) * step + 1];
    let dst = &mut buf[..n];
    if step == 2 {
        // the common stride: a de-interleave the compiler vectorises
        let (pairs, last) = src.split_at(src.len() - 1);
        for (b, p) in dst.iter_mut().zip(pairs.chunks_exact(2)) {
            *b = p[0];
        }
        dst[n - 1] = last[0];
    } else {
        for (b, c) in dst.iter_mut().zip(src.chunks(step)) {
            *b = c[0];
        }
    }
    dst
}

/// For each block of interior output cells of a row (windows wholly inside
/// the plane), tap by tap over the whole block: the block starts as tap 0's
/// cells, `combine(block, tap t's cells)` folds in each other tap, then
/// `finish(block)` runs.
#[inline(always)]
fn fold_interior_taps(
    g: &PoolGeom,
    x: &[f32],
    out: &mut [f32],
    combine: impl Fn(&mut [f32], &[f32]),
    finish: impl Fn(&mut [f32]),
) {
    let inner = g.inner;
    let sw = g.stride[1];
    let mut buf = [0.0f32; BLOCK];
    for oh in inner.rows() {
        let row = oh * g.out[1];
        for block in blocks(inner.cols()) {
            let n = block.len();
            let dst = &mut out[row + block.start..][..n];
            let start = g.window_start(oh, block.start);
            for t in 0..inner.taps {
                let src = strided(x, start + g.tap_offset(t), sw, n, &mut buf);
                if t == 0 {
                    dst.copy_from_slice(src);
                } else {
                    combine(dst, src);
                }
            }
            finish(dst);
        }
    }
}

#[cfg(test)]
mod tests;
