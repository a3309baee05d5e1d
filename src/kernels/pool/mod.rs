//! Pooling kernels over one `[H, W]` plane (a 1-D signal is a plane of height
//! 1): max pooling with argmax indices in one sweep (or the values alone),
//! its scatter backward, and average pooling forward and backward.
//!
//! Windows are placed on the plane grown by `pads` (before, after) per axis;
//! padded cells are −∞ for max pooling and 0 for average pooling, and are
//! never read or written.

mod two_by_two;

use std::ops::Range;
use two_by_two::{avg_2x2_row, max_2x2_row, spread_2x2_row, unpool_2x2_row};

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

/// Max pooling of one plane: `values[o]` is the window maximum (NaN if the
/// window holds one) and `indices[o]` the plane index `r·w + c` of its first
/// maximum in row-major window order, as f32. Padded cells are −∞: one holds
/// the first maximum only when it is the window's first cell and no in-plane
/// cell is larger (or NaN); its index is then −1.
///
/// Interior windows are computed tap by tap over whole output rows with
/// branch-free selects (the loops vectorise), 2x2 stride-2 windows eight at
/// a time from the two input rows (AVX2); edge windows one by one.
pub fn max_pool(g: &PoolGeom, x: &[f32], values: &mut [f32], indices: &mut [f32]) {
    let dw = g.dilation[1];
    g.for_each_edge_window(Divide::Window, |o, win, _| {
        let (mut best, mut at, mut first) = (f32::NEG_INFINITY, -1isize, !win.starts_in_pad);
        win.cells(dw, |i| {
            let v = x[i];
            if first || takes(best, v) {
                (best, at, first) = (v, i as isize, false);
            }
        });
        values[o] = best;
        indices[o] = at as f32;
    });
    if is_2x2_stride_2(g) {
        return max_pool_2x2_interior(g, x, values, Some(indices));
    }
    let inner = g.inner;
    let sw = g.stride[1];
    let mut buf = [0.0f32; BLOCK];
    let mut ramp = [0.0f32; BLOCK];
    for (k, r) in ramp.iter_mut().enumerate() {
        *r = (k * sw) as f32; // plane offsets are exact in f32 (planes ≤ 2^24 cells)
    }
    for oh in inner.rows() {
        let row = oh * g.out[1];
        for block in blocks(inner.cols()) {
            let n = block.len();
            let (vals, idx) = (
                &mut values[row + block.start..][..n],
                &mut indices[row + block.start..][..n],
            );
            let start = g.window_start(oh, block.start);
            for t in 0..inner.taps {
                let at = start + g.tap_offset(t);
                let src = strided(x, at, sw, n, &mut buf);
                let (base, ramp) = (at as f32, &ramp[..n]);
                if t == 0 {
                    vals.copy_from_slice(src);
                    idx.iter_mut().zip(ramp).for_each(|(i, r)| *i = base + r);
                    continue;
                }
                take_max(vals, idx, src, base, ramp);
            }
        }
    }
}

/// Max pooling of one plane, the values only: `values` as [`max_pool`]
/// gives them (padded cells never win: −∞ loses to every cell, NaN included).
pub fn max_pool_values(g: &PoolGeom, x: &[f32], values: &mut [f32]) {
    let dw = g.dilation[1];
    g.for_each_edge_window(Divide::Window, |o, win, _| {
        let mut best = f32::NEG_INFINITY;
        win.cells(dw, |i| best = max_step(best, x[i]));
        values[o] = best;
    });
    if is_2x2_stride_2(g) {
        // the taps in row-major order, as max_pool takes them
        return max_pool_2x2_interior(g, x, values, None);
    }
    fold_interior_taps(
        g,
        x,
        values,
        |dst, src| {
            dst.iter_mut()
                .zip(src)
                .for_each(|(d, &v)| *d = max_step(*d, v))
        },
        |_| {},
    );
}

/// Max pooling's step for one window: takes `x` (at plane index `at`) when
/// it is larger than the maximum so far or NaN (see [`takes`]). Branch-free.
#[inline(always)]
fn lane(v: &mut f32, i: &mut f32, x: f32, at: f32) {
    let (old, oi) = (*v, *i);
    let take = takes(old, x);
    *v = if take { x } else { old };
    *i = if take { at } else { oi };
}

/// Whether max pooling takes `x` over the maximum so far `v`: `x` is larger,
/// or `x` is NaN, so the last NaN of a window wins (PyTorch's CPU max
/// pooling: `if ((val > maxval) || std::isnan(val))`). Branch-free.
#[inline(always)]
pub(crate) fn takes(v: f32, x: f32) -> bool {
    (x > v) | x.is_nan()
}

/// The maximum so far after `x`: `x` if [`takes`], else `v`.
#[inline(always)]
fn max_step(v: f32, x: f32) -> f32 {
    if takes(v, x) {
        x
    } else {
        v
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

/// The interior of 2x2 stride-2 max pooling (no dilation); indices too
/// when `indices` is given.
fn max_pool_2x2_interior(
    g: &PoolGeom,
    x: &[f32],
    values: &mut [f32],
    mut indices: Option<&mut [f32]>,
) {
    for_each_2x2_row(g, x, |top, bottom, at, out| {
        let idx = indices.as_deref_mut().map(|i| &mut i[out.clone()]);
        max_2x2_row(top, bottom, at, g.size[1], &mut values[out], idx)
    });
}

/// Where `src[k]` is larger than `vals[k]` or NaN ([`takes`]), takes it, with
/// index `base + ramp[k]`; in lanes of 8 with selects, no branches.
#[inline(always)]
fn take_max(vals: &mut [f32], idx: &mut [f32], src: &[f32], base: f32, ramp: &[f32]) {
    #[cfg(target_feature = "avx")]
    let n = {
        use std::arch::x86_64::*;
        let n = vals.len() / 8 * 8;
        // SAFETY: AVX is enabled at compile time.
        let at = unsafe { _mm256_set1_ps(base) };
        for k in (0..n).step_by(8) {
            // SAFETY: k + 8 ≤ n ≤ the length of every slice (checked below by
            // the slicing), and AVX is enabled at compile time.
            unsafe {
                let (v, i) = (&mut vals[k..k + 8], &mut idx[k..k + 8]);
                let (x, r) = (&src[k..k + 8], &ramp[k..k + 8]);
                let old = _mm256_loadu_ps(v.as_ptr());
                let xv = _mm256_loadu_ps(x.as_ptr());
                // x > v, or x is NaN (as `takes`)
                let take = _mm256_or_ps(
                    _mm256_cmp_ps::<_CMP_GT_OQ>(xv, old),
                    _mm256_cmp_ps::<_CMP_UNORD_Q>(xv, xv),
                );
                _mm256_storeu_ps(v.as_mut_ptr(), _mm256_blendv_ps(old, xv, take));
                let newi = _mm256_add_ps(at, _mm256_loadu_ps(r.as_ptr()));
                let oldi = _mm256_loadu_ps(i.as_ptr());
                _mm256_storeu_ps(i.as_mut_ptr(), _mm256_blendv_ps(oldi, newi, take));
            }
        }
        n
    };
    #[cfg(not(target_feature = "avx"))]
    let n = 0;
    let (vals, idx, src, ramp) = (&mut vals[n..], &mut idx[n..], &src[n..], &ramp[n..]);
    let n = vals.len() / 8 * 8;
    let (v8, vr) = vals.split_at_mut(n);
    let (i8, ir) = idx.split_at_mut(n);
    let (s8, sr) = src.split_at(n);
    let (r8, rr) = ramp.split_at(n);
    for (((v, i), s), r) in v8
        .chunks_exact_mut(8)
        .zip(i8.chunks_exact_mut(8))
        .zip(s8.chunks_exact(8))
        .zip(r8.chunks_exact(8))
    {
        let (v, i): (&mut [f32; 8], &mut [f32; 8]) =
            (v.try_into().expect("8"), i.try_into().expect("8"));
        let (s, r): (&[f32; 8], &[f32; 8]) = (s.try_into().expect("8"), r.try_into().expect("8"));
        for k in 0..8 {
            lane(&mut v[k], &mut i[k], s[k], base + r[k]);
        }
    }
    for (((v, i), &x), r) in vr.iter_mut().zip(ir.iter_mut()).zip(sr).zip(rr) {
        lane(v, i, x, base + r);
    }
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

/// Max pooling backward over one plane of `g`'s size: `gx` is zeroed, then
/// every `gy[o]` is added at plane index `indices[o]` (indices outside the
/// plane, as the −1 of a window wholly in padding, are skipped).
///
/// Where 2x2 stride-2 windows tile the plane and every index lies in its own
/// window (as `MaxPoolWithIndices` gives them), each window's four cells are
/// written at once instead (`0 + gy` at the index, `0` elsewhere: the same
/// values), with no zeroing pass and no scatter.
pub fn max_pool_backward(g: &PoolGeom, gy: &[f32], indices: &[f32], gx: &mut [f32]) {
    if g.tiles_2x2() && unpool_2x2(g, gy, indices, gx) {
        return;
    }
    gx.fill(0.0);
    for (&g, &i) in gy.iter().zip(indices) {
        if i >= 0.0 && (i as usize) < gx.len() {
            gx[i as usize] += g;
        }
    }
}

/// The tiled 2x2 case of [`max_pool_backward`], output row by output row;
/// `false` (with `gx` partly written) if an index lies outside its window.
fn unpool_2x2(g: &PoolGeom, gy: &[f32], indices: &[f32], gx: &mut [f32]) -> bool {
    let (ow, w) = (g.out[1], g.size[1]);
    gx.chunks_exact_mut(2 * w)
        .zip(gy.chunks_exact(ow).zip(indices.chunks_exact(ow)))
        .enumerate()
        .all(|(oh, (rows, (gy, idx)))| {
            let (top, bottom) = rows.split_at_mut(w);
            unpool_2x2_row(gy, idx, 2 * oh * w, w, top, bottom)
        })
}

/// Average pooling of one plane: the window sum over in-plane cells divided
/// by the count `rule` gives. Interior windows are summed tap by tap over
/// whole output rows.
pub fn avg_pool(g: &PoolGeom, rule: Divide, x: &[f32], out: &mut [f32]) {
    let dw = g.dilation[1];
    g.for_each_edge_window(rule, |o, win, inv| {
        let mut sum = 0.0f32;
        win.cells(dw, |i| sum += x[i]);
        out[o] = sum * inv;
    });
    if is_2x2_stride_2(g) {
        // the taps summed in the general loop's order, for the same rounding
        for_each_2x2_row(g, x, |top, bottom, _, row| {
            avg_2x2_row(top, bottom, &mut out[row])
        });
        return;
    }
    // every rule counts all cells of an interior window
    let inv = 1.0 / (g.kernel[0] * g.kernel[1]) as f32;
    fold_interior_taps(
        g,
        x,
        out,
        |dst, src| dst.iter_mut().zip(src).for_each(|(d, &v)| *d += v),
        // + 0.0: the sum starts from +0.0 as the edge windows' (and the
        // reduction's) do, so a window of −0.0s averages to +0.0
        |dst| dst.iter_mut().for_each(|d| *d = (*d + 0.0) * inv),
    );
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

/// Average pooling backward over one plane: `gx` is zeroed, then `gy[o]`
/// divided by window `o`'s count is added to every in-plane cell of it.
///
/// Where 2x2 stride-2 windows tile the plane, each window's four cells are
/// written at once (`0 + gy/4`, the same values), with no zeroing pass.
pub fn avg_pool_backward(g: &PoolGeom, rule: Divide, gy: &[f32], gx: &mut [f32]) {
    if g.tiles_2x2() {
        let (ow, w) = (g.out[1], g.size[1]);
        for (rows, gy) in gx.chunks_exact_mut(2 * w).zip(gy.chunks_exact(ow)) {
            let (top, bottom) = rows.split_at_mut(w);
            spread_2x2_row(gy, top, bottom);
        }
        return;
    }
    gx.fill(0.0);
    let dw = g.dilation[1];
    g.for_each_edge_window(rule, |o, win, inv| {
        let v = gy[o] * inv;
        win.cells(dw, |i| gx[i] += v);
    });
    let inner = g.inner;
    let (cols, sw) = (inner.cols(), g.stride[1]);
    let inv = 1.0 / inner.taps as f32;
    for oh in inner.rows() {
        let row = oh * g.out[1];
        let src = &gy[row + cols.start..row + cols.end];
        let start = g.window_start(oh, cols.start);
        for t in 0..inner.taps {
            let dst = gx[start + g.tap_offset(t)..].iter_mut().step_by(sw);
            dst.zip(src).for_each(|(d, &v)| *d += v * inv);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bit patterns of `v`: equal exactly when the floats are identical
    /// (NaN payloads and signed zeros included).
    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|v| v.to_bits()).collect()
    }

    /// 2x2 stride-2 windows over an `h × w` plane, no padding.
    fn geom_2x2(h: usize, w: usize) -> PoolGeom {
        PoolGeom::new(
            [2, 2],
            [2, 2],
            [1, 1],
            [(0, 0), (0, 0)],
            [h, w],
            [h / 2, w / 2],
        )
    }

    /// The closed-form tap ranges and counts equal the tap-by-tap definitions
    /// (first tap at or after the plane's start; first at or past its end;
    /// taps inside the input grown by the leading padding on both sides).
    #[test]
    fn closed_form_taps_and_counts_equal_the_tap_walks() {
        let mut checked = 0;
        for (k, d, s, pad, size) in (1..5).flat_map(|k| {
            (1..4).flat_map(move |d| {
                (1..4).flat_map(move |s| {
                    (0..4).flat_map(move |p| (1..7).map(move |n| (k, d, s, p, n)))
                })
            })
        }) {
            let g = PoolGeom::new(
                [1, k],
                [1, s],
                [1, d],
                [(0, 0), (pad, pad)],
                [1, size],
                [1, (size + 2 * pad) / s + 1],
            );
            for o in 0..g.out[1] {
                let start = (o * s) as isize - pad as isize;
                let at = |i: usize| start + (i * d) as isize;
                let lo = (0..k).find(|&i| at(i) >= 0).unwrap_or(k);
                let hi = (lo..k).find(|&i| at(i) >= size as isize).unwrap_or(k);
                assert_eq!(g.taps(1, o), (lo, hi.max(lo), start), "{g:?} o={o}");
                let padded = (0..k).filter(|&i| o * s + i * d < size + 2 * pad).count();
                assert_eq!(g.count(1, o, Divide::PaddedInput), padded, "{g:?} o={o}");
                checked += 1;
            }
        }
        assert!(checked > 1000);
    }

    /// A window of −0.0s averages to +0.0 on every path (2x2 rows, the
    /// general interior loop, edge windows), as the reduction it stands for
    /// sums from +0.0; a −0.0 maximum stays −0.0.
    #[test]
    fn windows_of_negative_zeros_average_to_positive_zero() {
        let two = geom_2x2(4, 20);
        let three = PoolGeom::new([3, 3], [1, 1], [1, 1], [(1, 1), (1, 1)], [4, 20], [4, 20]);
        for g in [two, three] {
            let x = vec![-0.0f32; g.plane()];
            let mut avg = vec![9.0; g.out_len()];
            avg_pool(&g, Divide::RealCells, &x, &mut avg);
            assert_eq!(bits(&avg), bits(&vec![0.0; g.out_len()]), "{g:?}");
            let mut max = vec![9.0; g.out_len()];
            max_pool_values(&g, &x, &mut max);
            assert_eq!(bits(&max), bits(&vec![-0.0; g.out_len()]), "{g:?}");
        }
    }

    /// Each window's maximum in row-major order by PyTorch's rule (a larger
    /// value or any NaN replaces the maximum so far: the last NaN wins), by
    /// comparing every cell in turn.
    fn window_loop(g: &PoolGeom, x: &[f32]) -> (Vec<f32>, Vec<f32>) {
        let (mut values, mut indices) = (vec![], vec![]);
        for oh in 0..g.out[0] {
            for ow in 0..g.out[1] {
                let mut best: Option<(f32, usize)> = None;
                for (r, c) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                    let i = (2 * oh + r) * g.size[1] + 2 * ow + c;
                    let v = x[i];
                    let better = match best {
                        None => true,
                        Some((b, _)) => v > b || v.is_nan(),
                    };
                    if better {
                        best = Some((v, i));
                    }
                }
                let (v, i) = best.unwrap();
                values.push(v);
                indices.push(i as f32);
            }
        }
        (values, indices)
    }

    #[test]
    fn two_by_two_pooling_matches_window_loops_for_every_row_width() {
        // output rows of 1 to 19 windows: whole groups of eight, the masked
        // last group, and both; ties, NaN, −∞ and signed zeros
        let cells = [
            3.0,
            3.0,
            -0.0,
            0.0,
            f32::NAN,
            -1.0,
            f32::NEG_INFINITY,
            2.0,
            7.0,
        ];
        let (mut late_nans, mut two_nans) = (0, 0);
        for ow in 1..20 {
            let g = geom_2x2(6, 2 * ow);
            let x: Vec<f32> = (0..g.plane())
                .map(|i| cells[(i.wrapping_mul(2_654_435_761) >> 11) % cells.len()])
                .collect();
            // a NaN after an ordered first cell: only "NaN wins" makes it the maximum
            late_nans += (0..g.out_len())
                .filter(|&o| {
                    let first = (o / ow) * 4 * ow + 2 * (o % ow);
                    let win = [first, first + 1, first + 2 * ow, first + 2 * ow + 1];
                    !x[win[0]].is_nan() && win.iter().any(|&i| x[i].is_nan())
                })
                .count();
            // two NaNs in a window: the last one is the maximum
            two_nans += (0..g.out_len())
                .filter(|&o| {
                    let first = (o / ow) * 4 * ow + 2 * (o % ow);
                    let win = [first, first + 1, first + 2 * ow, first + 2 * ow + 1];
                    win.iter().filter(|&&i| x[i].is_nan()).count() > 1
                })
                .count();
            let (want_v, want_i) = window_loop(&g, &x);
            let (mut v, mut i) = (vec![9.0; g.out_len()], vec![9.0; g.out_len()]);
            max_pool(&g, &x, &mut v, &mut i);
            assert_eq!(bits(&v), bits(&want_v), "values, {ow} windows a row");
            assert_eq!(i, want_i, "indices, {ow} windows a row");
            let mut alone = vec![9.0; g.out_len()];
            max_pool_values(&g, &x, &mut alone);
            assert_eq!(
                bits(&alone),
                bits(&want_v),
                "values alone, {ow} windows a row"
            );
            // the average sums the four cells in row-major order, then scales
            let x: Vec<f32> = x
                .iter()
                .map(|v| if v.is_finite() { v + 0.1 } else { 0.3 })
                .collect();
            let mut avg = vec![9.0; g.out_len()];
            avg_pool(&g, Divide::Window, &x, &mut avg);
            let want: Vec<f32> = (0..g.out_len())
                .map(|o| {
                    let first = (o / ow) * 4 * ow + 2 * (o % ow);
                    let (t, b) = (&x[first..], &x[first + 2 * ow..]);
                    (t[0] + t[1] + b[0] + b[1] + 0.0) * 0.25
                })
                .collect();
            assert_eq!(bits(&avg), bits(&want), "average, {ow} windows a row");
        }
        assert!(
            late_nans > 10 && two_nans > 3,
            "the inputs hold windows a NaN wins late ({late_nans}) and windows with two NaNs ({two_nans})"
        );
    }

    /// `gx` of max pooling's backward by the definition: zeros, then each
    /// `gy[o]` added at `indices[o]` when that is a plane index.
    fn scatter(plane: usize, gy: &[f32], indices: &[f32]) -> Vec<f32> {
        let mut gx = vec![0.0f32; plane];
        for (&g, &i) in gy.iter().zip(indices) {
            if i >= 0.0 && (i as usize) < plane {
                gx[i as usize] += g;
            }
        }
        gx
    }

    #[test]
    fn tiled_two_by_two_average_backward_equals_the_window_loop() {
        for ow in 1..20 {
            let g = geom_2x2(4, 2 * ow);
            let gy: Vec<f32> = (0..g.out_len())
                .map(|o| [1.5, -0.0, f32::NAN, -2.25, 0.1][o % 5])
                .collect();
            let mut gx = vec![7.0; g.plane()];
            avg_pool_backward(&g, Divide::RealCells, &gy, &mut gx);
            // every cell: zero plus its window's gradient over four
            let want: Vec<f32> = (0..g.plane())
                .map(|i| 0.0 + gy[(i / (2 * g.size[1])) * ow + (i % g.size[1]) / 2] * 0.25)
                .collect();
            assert_eq!(bits(&gx), bits(&want), "{ow} windows a row");
        }
    }

    #[test]
    fn tiled_two_by_two_backward_equals_the_scatter() {
        for ow in 1..20 {
            let g = geom_2x2(4, 2 * ow);
            let x: Vec<f32> = (0..g.plane())
                .map(|i| ((i.wrapping_mul(2_654_435_761) >> 11) % 5) as f32)
                .collect();
            let (mut v, mut idx) = (vec![0.0; g.out_len()], vec![0.0; g.out_len()]);
            max_pool(&g, &x, &mut v, &mut idx);
            // −0.0 and NaN gradients: the scatter adds them to +0.0
            let gy: Vec<f32> = (0..g.out_len())
                .map(|o| [1.5, -0.0, f32::NAN, -2.0][o % 4])
                .collect();
            let mut gx = vec![7.0; g.plane()];
            max_pool_backward(&g, &gy, &idx, &mut gx);
            assert_eq!(
                bits(&gx),
                bits(&scatter(g.plane(), &gy, &idx)),
                "{ow} windows a row"
            );
            // an index outside its window (or the plane) takes the scatter
            for bad in [idx[0] + 2.0, g.plane() as f32, -1.0] {
                let mut odd = idx.clone();
                let last = odd.len() - 1;
                odd[last] = bad;
                let mut gx = vec![7.0; g.plane()];
                max_pool_backward(&g, &gy, &odd, &mut gx);
                assert_eq!(
                    bits(&gx),
                    bits(&scatter(g.plane(), &gy, &odd)),
                    "{ow}, index {bad}"
                );
            }
        }
    }
}
