//! Average pooling over one plane, forward and backward, under a divisor
//! rule ([`Divide`]).

use super::two_by_two::{avg_2x2_row, spread_2x2_row};
use super::{fold_interior_taps, for_each_2x2_row, is_2x2_stride_2, Divide, PoolGeom};
use crate::kernels::simd::multiversion;

multiversion! {
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
}

multiversion! {
/// Average pooling backward over one plane: `gx` is zeroed, then `gy[o]`
/// divided by window `o`'s count is added to every in-plane cell of it.
///
/// Where 2x2 stride-2 windows tile the plane, each window's four cells are
/// written at once (`0 + gy/4`, the same values), with no zeroing pass.
pub fn avg_pool_backward(g: &PoolGeom, rule: Divide, gy: &[f32], gx: &mut [f32]) {
    if g.tiles_2x2() {
        #[cfg(target_arch = "x86_64")]
        if crate::kernels::simd::simd().avx2_fma {
            // SAFETY: the CPU has AVX2.
            return unsafe { spread_2x2_avx2(g, gy, gx) };
        }
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
}

/// The tiled 2x2 case of [`avg_pool_backward`] with AVX2 rows.
///
/// # Safety
/// The CPU has AVX2; the windows tile the plane (`PoolGeom::tiles_2x2`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn spread_2x2_avx2(g: &PoolGeom, gy: &[f32], gx: &mut [f32]) {
    let (ow, w) = (g.out[1], g.size[1]);
    for (rows, gy) in gx.chunks_exact_mut(2 * w).zip(gy.chunks_exact(ow)) {
        let (top, bottom) = rows.split_at_mut(w);
        // SAFETY: `gy` holds the row's `ow` windows, `top` and `bottom`
        // their `w = 2·ow` cells; AVX2 as above.
        unsafe { super::two_by_two::spread_2x2_row_avx2(gy, top, bottom) };
    }
}
