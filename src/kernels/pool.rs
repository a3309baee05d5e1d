//! Pooling kernels over one `[H, W]` plane (a 1-D signal is a plane of height
//! 1): max pooling with argmax indices in one sweep (or the values alone),
//! its scatter backward, and average pooling forward and backward.
//!
//! Windows are placed on the plane grown by `pads` (before, after) per axis;
//! padded cells are −∞ for max pooling and 0 for average pooling, and are
//! never read or written.

/// A pooling window over an `h × w` plane with asymmetric padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolGeom {
    /// Kernel `[kh, kw]`.
    pub kernel: [usize; 2],
    /// Stride `[sh, sw]`.
    pub stride: [usize; 2],
    /// Dilation `[dh, dw]`.
    pub dilation: [usize; 2],
    /// Padding `[(top, bottom), (left, right)]`.
    pub pads: [(usize, usize); 2],
    /// Plane size `[h, w]`.
    pub size: [usize; 2],
    /// Output size `[oh, ow]`.
    pub out: [usize; 2],
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
    fn taps(&self, axis: usize, o: usize) -> (usize, usize, isize) {
        let (k, d) = (self.kernel[axis], self.dilation[axis] as isize);
        let start = (o * self.stride[axis]) as isize - self.pads[axis].0 as isize;
        let size = self.size[axis] as isize;
        let lo = (0..k).find(|&i| start + i as isize * d >= 0).unwrap_or(k);
        let hi = (lo..k)
            .find(|&i| start + i as isize * d >= size)
            .unwrap_or(k);
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
                let limit = self.size[axis] + 2 * self.pads[axis].0;
                (0..self.kernel[axis])
                    .filter(|&i| o * self.stride[axis] + i * self.dilation[axis] < limit)
                    .count()
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
    /// plane (a range, as rows only clip at the edges) and the interior columns.
    fn interior_block(&self) -> Interior {
        let (r, c) = (self.interior(0), self.interior(1));
        Interior {
            rows: r.0..r.1,
            cols: c.0..c.1,
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
        let inner = self.interior_block();
        let (dh, w) = (self.dilation[0], self.size[1] as isize);
        let (a, b) = self.interior(1);
        let (kw, sw, pw) = (self.kernel[1], self.stride[1], self.pads[1].0 as isize);
        for oh in 0..self.out[0] {
            let (rlo, rhi, r0) = self.taps(0, oh);
            let rows = self.count(0, oh, rule) as f32;
            let first_row = (r0 + (rlo * dh) as isize) * w;
            let base = oh * self.out[1];
            for ow in 0..self.out[1] {
                if inner.rows.contains(&oh) && inner.cols.contains(&ow) {
                    continue;
                }
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

/// Output rows and columns whose windows lie wholly inside the plane, and
/// the taps per window.
#[derive(Clone, Debug)]
struct Interior {
    rows: std::ops::Range<usize>,
    cols: std::ops::Range<usize>,
    taps: usize,
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
/// branch-free selects (the loops vectorise); edge windows one by one.
pub fn max_pool(g: &PoolGeom, x: &[f32], values: &mut [f32], indices: &mut [f32]) {
    let dw = g.dilation[1];
    g.for_each_edge_window(Divide::Window, |o, win, _| {
        let (mut best, mut at, mut first) = (f32::NEG_INFINITY, -1isize, !win.starts_in_pad);
        win.cells(dw, |i| {
            let v = x[i];
            if first || (!best.is_nan() && (v > best || v.is_nan())) {
                (best, at, first) = (v, i as isize, false);
            }
        });
        values[o] = best;
        indices[o] = at as f32;
    });
    let inner = g.interior_block();
    let sw = g.stride[1];
    let mut buf = [0.0f32; BLOCK];
    let mut ramp = [0.0f32; BLOCK];
    for (k, r) in ramp.iter_mut().enumerate() {
        *r = (k * sw) as f32; // plane offsets are exact in f32 (planes ≤ 2^24 cells)
    }
    if is_2x2_stride_2(g) {
        return max_pool_2x2_interior(g, &inner, x, values, indices);
    }
    for oh in inner.rows.clone() {
        let row = oh * g.out[1];
        for block in blocks(inner.cols.clone()) {
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
        for_each_2x2_interior(g, x, |t, b, _, o| {
            values[o] = max_step(max_step(max_step(t[0], t[1]), b[0]), b[1])
        });
        return;
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
/// it is larger than the maximum so far, or the first NaN. Branch-free.
#[inline(always)]
fn lane(v: &mut f32, i: &mut f32, x: f32, at: f32) {
    let (old, oi) = (*v, *i);
    let take = takes(old, x);
    *v = if take { x } else { old };
    *i = if take { at } else { oi };
}

/// Whether max pooling takes `x` over the maximum so far `v`: `x` is larger,
/// or `x` is NaN and `v` is not ("not x ≤ v" unless v is NaN). Branch-free.
#[inline(always)]
fn takes(v: f32, x: f32) -> bool {
    #[allow(clippy::neg_cmp_op_on_partial_ord)]
    let take = !(x <= v) & !v.is_nan();
    take
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
/// dilation: per output row, both input rows are read once, in pairs, and
/// `f(top pair, bottom pair, plane index of the top-left cell, output j)`
/// runs for each window.
#[inline(always)]
fn for_each_2x2_interior(g: &PoolGeom, x: &[f32], mut f: impl FnMut(&[f32], &[f32], usize, usize)) {
    let inner = g.interior_block();
    let (w, c0, n) = (g.size[1], inner.cols.start, inner.cols.len());
    for oh in inner.rows.clone() {
        let start = g.window_start(oh, c0);
        let (top, bottom) = (&x[start..start + 2 * n], &x[start + w..start + w + 2 * n]);
        let first = oh * g.out[1] + c0;
        for (j, (t, b)) in top.chunks_exact(2).zip(bottom.chunks_exact(2)).enumerate() {
            f(t, b, start + 2 * j, first + j);
        }
    }
}

/// Whether `g` is 2x2 at stride 2 without dilation (see [`for_each_2x2_interior`]).
fn is_2x2_stride_2(g: &PoolGeom) -> bool {
    g.kernel == [2, 2] && g.stride == [2, 2] && g.dilation == [1, 1]
}

/// The interior of 2x2 stride-2 max pooling (no dilation). Windows are
/// gathered tap by tap into lanes, several output rows at a time when rows
/// are short, and the window maxima taken in one vectorised pass per batch.
fn max_pool_2x2_interior(
    g: &PoolGeom,
    inner: &Interior,
    x: &[f32],
    values: &mut [f32],
    indices: &mut [f32],
) {
    let w = g.size[1];
    let mut lanes = Lanes2x2 {
        taps: [[0.0; BLOCK]; 4],
        at: [0.0; BLOCK],
        segments: [(0, 0); BLOCK],
        count: 0,
        filled: 0,
    };
    for oh in inner.rows.clone() {
        for block in blocks(inner.cols.clone()) {
            let n = block.len();
            if lanes.filled + n > BLOCK {
                lanes.flush(w, values, indices);
            }
            let start = g.window_start(oh, block.start);
            let (top, bottom) = (&x[start..start + 2 * n], &x[start + w..start + w + 2 * n]);
            let f = lanes.filled;
            let [t0, t1, t2, t3] = &mut lanes.taps;
            let dst = t0[f..f + n].iter_mut().zip(&mut t1[f..f + n]);
            let dst = dst.zip(t2[f..f + n].iter_mut().zip(&mut t3[f..f + n]));
            for (((a, b), (c, d)), (t, u)) in
                dst.zip(top.chunks_exact(2).zip(bottom.chunks_exact(2)))
            {
                (*a, *b, *c, *d) = (t[0], t[1], u[0], u[1]);
            }
            for (j, at) in lanes.at[f..f + n].iter_mut().enumerate() {
                *at = (start + 2 * j) as f32; // exact in f32 (planes ≤ 2^24 cells)
            }
            lanes.segments[lanes.count] = (oh * g.out[1] + block.start, n);
            lanes.count += 1;
            lanes.filled += n;
        }
    }
    lanes.flush(w, values, indices);
}

/// Gathered 2x2 windows waiting for their maxima: the four taps per lane,
/// the plane index of each window's top-left cell, and the output runs
/// (start, length) the lanes fill in order.
struct Lanes2x2 {
    taps: [[f32; BLOCK]; 4],
    at: [f32; BLOCK],
    segments: [(usize, usize); BLOCK],
    count: usize,
    filled: usize,
}

impl Lanes2x2 {
    /// Takes every gathered window's maximum (first in row-major order, NaN
    /// wins) and writes values and indices to the output runs.
    fn flush(&mut self, w: usize, values: &mut [f32], indices: &mut [f32]) {
        let n = self.filled;
        let mut best = [0.0f32; BLOCK];
        let mut which = [0.0f32; BLOCK];
        let below = w as f32;
        let [t0, t1, t2, t3] = &self.taps;
        let cells = t0[..n]
            .iter()
            .zip(&t1[..n])
            .zip(t2[..n].iter().zip(&t3[..n]));
        let out = best[..n].iter_mut().zip(&mut which[..n]);
        for (((v, i), ((&a, &b), (&c, &d))), &at) in out.zip(cells).zip(&self.at[..n]) {
            let (mut m, mut mi) = (a, at);
            lane(&mut m, &mut mi, b, at + 1.0);
            lane(&mut m, &mut mi, c, at + below);
            lane(&mut m, &mut mi, d, at + below + 1.0);
            (*v, *i) = (m, mi);
        }
        let mut k = 0;
        for &(o, len) in &self.segments[..self.count] {
            values[o..o + len].copy_from_slice(&best[k..k + len]);
            indices[o..o + len].copy_from_slice(&which[k..k + len]);
            k += len;
        }
        (self.count, self.filled) = (0, 0);
    }
}

/// Where `src[k]` is larger than `vals[k]` (or the first NaN), takes it, with
/// index `base + ramp[k]`; in lanes of 8 with selects, no branches.
#[inline(always)]
fn take_max(vals: &mut [f32], idx: &mut [f32], src: &[f32], base: f32, ramp: &[f32]) {
    #[cfg(target_feature = "avx")]
    let n = {
        use std::arch::x86_64::*;
        let n = vals.len() / 8 * 8;
        let at = unsafe { _mm256_set1_ps(base) };
        for k in (0..n).step_by(8) {
            // SAFETY: k + 8 ≤ n ≤ the length of every slice (checked below by
            // the slicing), and AVX is enabled at compile time.
            unsafe {
                let (v, i) = (&mut vals[k..k + 8], &mut idx[k..k + 8]);
                let (x, r) = (&src[k..k + 8], &ramp[k..k + 8]);
                let old = _mm256_loadu_ps(v.as_ptr());
                let xv = _mm256_loadu_ps(x.as_ptr());
                // x > v or x unordered (NaN), and v ordered (not NaN)
                let take = _mm256_and_ps(
                    _mm256_cmp_ps::<_CMP_NLE_UQ>(xv, old),
                    _mm256_cmp_ps::<_CMP_ORD_Q>(old, old),
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

/// Max pooling backward over one plane: `gx` is zeroed, then every `gy[o]`
/// is added at plane index `indices[o]` (negative indices are skipped).
pub fn max_pool_backward(gy: &[f32], indices: &[f32], gx: &mut [f32]) {
    gx.fill(0.0);
    for (&g, &i) in gy.iter().zip(indices) {
        if i >= 0.0 {
            gx[i as usize] += g;
        }
    }
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
        for_each_2x2_interior(g, x, |t, b, _, o| {
            out[o] = (t[0] + t[1] + b[0] + b[1]) * 0.25
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
        |dst| dst.iter_mut().for_each(|d| *d *= inv),
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
    let inner = g.interior_block();
    let sw = g.stride[1];
    let mut buf = [0.0f32; BLOCK];
    for oh in inner.rows.clone() {
        let row = oh * g.out[1];
        for block in blocks(inner.cols.clone()) {
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
pub fn avg_pool_backward(g: &PoolGeom, rule: Divide, gy: &[f32], gx: &mut [f32]) {
    gx.fill(0.0);
    let dw = g.dilation[1];
    g.for_each_edge_window(rule, |o, win, inv| {
        let v = gy[o] * inv;
        win.cells(dw, |i| gx[i] += v);
    });
    let inner = g.interior_block();
    let (cols, sw) = (inner.cols.clone(), g.stride[1]);
    let inv = 1.0 / inner.taps as f32;
    for oh in inner.rows.clone() {
        let row = oh * g.out[1];
        let src = &gy[row + cols.start..row + cols.end];
        let start = g.window_start(oh, cols.start);
        for t in 0..inner.taps {
            let dst = gx[start + g.tap_offset(t)..].iter_mut().step_by(sw);
            dst.zip(src).for_each(|(d, &v)| *d += v * inv);
        }
    }
}
