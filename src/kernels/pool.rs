//! Pooling kernels over one `[H, W]` plane (a 1-D signal is a plane of height
//! 1): max pooling with argmax indices in one sweep, its scatter backward,
//! and average pooling forward and backward.
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
    /// `1 / divisor` for every output cell of a plane (row-major).
    pub fn inverse_divisors(&self, rule: Divide) -> Vec<f32> {
        let rows: Vec<usize> = (0..self.out[0]).map(|o| self.count(0, o, rule)).collect();
        let cols: Vec<usize> = (0..self.out[1]).map(|o| self.count(1, o, rule)).collect();
        let mut inv = Vec::with_capacity(self.out_len());
        for &r in &rows {
            for &c in &cols {
                inv.push(1.0 / (r * c) as f32);
            }
        }
        inv
    }
    /// Every window of a plane, row-major over the output: computed once per
    /// op, then walked for every plane.
    pub fn windows(&self) -> Windows {
        let (dh, w) = (self.dilation[0], self.size[1] as isize);
        let cols: Vec<_> = (0..self.out[1]).map(|o| self.taps(1, o)).collect();
        let mut wins = Vec::with_capacity(self.out_len());
        for oh in 0..self.out[0] {
            let (rlo, rhi, r0) = self.taps(0, oh);
            for &(clo, chi, c0) in &cols {
                wins.push(Win {
                    first: (r0 + (rlo * dh) as isize) * w + c0,
                    row_step: (dh as isize) * w,
                    rows: rhi - rlo,
                    cols: (clo, chi),
                    starts_in_pad: rlo > 0 || clo > 0 || rhi == rlo || chi == clo,
                });
            }
        }
        Windows {
            wins,
            col_step: self.dilation[1],
        }
    }
}

/// The windows of one plane (from [`PoolGeom::windows`]).
#[derive(Clone, Debug)]
pub struct Windows {
    wins: Vec<Win>,
    col_step: usize,
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
pub fn max_pool(ws: &Windows, x: &[f32], values: &mut [f32], indices: &mut [f32]) {
    for (o, win) in ws.wins.iter().enumerate() {
        let (mut best, mut at, mut first) = (f32::NEG_INFINITY, -1isize, !win.starts_in_pad);
        win.cells(ws.col_step, |i| {
            let v = x[i];
            if first || (!best.is_nan() && (v > best || v.is_nan())) {
                (best, at, first) = (v, i as isize, false);
            }
        });
        values[o] = best;
        indices[o] = at as f32;
    }
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

/// Average pooling of one plane: the window sum over in-plane cells times
/// `inv[o]` (`1 / divisor`, from [`PoolGeom::inverse_divisors`]).
pub fn avg_pool(ws: &Windows, inv: &[f32], x: &[f32], out: &mut [f32]) {
    for (o, win) in ws.wins.iter().enumerate() {
        let mut sum = 0.0f32;
        win.cells(ws.col_step, |i| sum += x[i]);
        out[o] = sum * inv[o];
    }
}

/// Average pooling backward over one plane: `gx` is zeroed, then `gy[o]·inv[o]`
/// is added to every in-plane cell of window `o`.
pub fn avg_pool_backward(ws: &Windows, inv: &[f32], gy: &[f32], gx: &mut [f32]) {
    gx.fill(0.0);
    for (o, win) in ws.wins.iter().enumerate() {
        let v = gy[o] * inv[o];
        win.cells(ws.col_step, |i| gx[i] += v);
    }
}
