//! Max pooling over one plane: values with argmax indices, values alone,
//! and the scatter backward, by PyTorch's rule (a larger value or any NaN
//! replaces the maximum so far).

use super::two_by_two::{max_2x2_row, unpool_2x2_row};
#[cfg(target_arch = "x86_64")]
use super::two_by_two::{max_2x2_row_avx2, unpool_2x2_row_avx2};
use super::{
    blocks, fold_interior_taps, for_each_2x2_row, is_2x2_stride_2, strided, Divide, PoolGeom, BLOCK,
};
use crate::kernels::simd::multiversion;
#[cfg(target_arch = "x86_64")]
use crate::kernels::simd::simd;

multiversion! {
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
}

multiversion! {
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
}

/// Max pooling's step for one window: takes `x` (at plane index `at`) when
/// it is larger than the maximum so far or NaN (see [`takes`]). Branch-free.
#[inline(always)]
pub(super) fn lane(v: &mut f32, i: &mut f32, x: f32, at: f32) {
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
pub(super) fn max_step(v: f32, x: f32) -> f32 {
    if takes(v, x) {
        x
    } else {
        v
    }
}

/// The interior of 2x2 stride-2 max pooling (no dilation); indices too
/// when `indices` is given.
#[inline(always)]
fn max_pool_2x2_interior(
    g: &PoolGeom,
    x: &[f32],
    values: &mut [f32],
    mut indices: Option<&mut [f32]>,
) {
    #[cfg(target_arch = "x86_64")]
    if simd().avx2_fma {
        // SAFETY: the CPU has AVX2.
        return unsafe { max_pool_2x2_interior_avx2(g, x, values, indices) };
    }
    for_each_2x2_row(g, x, |top, bottom, at, out| {
        #[allow(clippy::manual_map)] // see max_pool_2x2_interior_avx2
        let idx = match indices.as_deref_mut() {
            Some(i) => Some(&mut i[out.clone()]),
            None => None,
        };
        max_2x2_row(top, bottom, at, g.size[1], &mut values[out], idx)
    });
}

/// [`max_pool_2x2_interior`] with AVX2 rows.
///
/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn max_pool_2x2_interior_avx2(
    g: &PoolGeom,
    x: &[f32],
    values: &mut [f32],
    mut indices: Option<&mut [f32]>,
) {
    for_each_2x2_row(g, x, |top, bottom, at, out| {
        // a `match`, not `Option::map`: a generic call LLVM leaves
        // out of line here when the crate is built without AVX2 (measured)
        #[allow(clippy::manual_map)]
        let idx = match indices.as_deref_mut() {
            Some(i) => Some(&mut i[out.clone()]),
            None => None,
        };
        let values = &mut values[out];
        // SAFETY: the row holds 2·n cells of each input row for its n
        // windows (`for_each_2x2_row`), the slices n each; AVX2 as above.
        unsafe { max_2x2_row_avx2(top, bottom, at, g.size[1], values, idx) }
    });
}

/// Where `src[k]` is larger than `vals[k]` or NaN ([`takes`]), takes it, with
/// index `base + ramp[k]`; in lanes of 8 with selects, no branches.
#[inline(always)]
fn take_max(vals: &mut [f32], idx: &mut [f32], src: &[f32], base: f32, ramp: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    let n = if simd().avx {
        // SAFETY: the CPU has AVX (checked).
        unsafe { take_max_avx(vals, idx, src, base, ramp) }
    } else {
        0
    };
    #[cfg(not(target_arch = "x86_64"))]
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

/// The leading multiple of 8 of [`take_max`] with AVX; returns how many
/// elements it did.
///
/// # Safety
/// AVX is present.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn take_max_avx(
    vals: &mut [f32],
    idx: &mut [f32],
    src: &[f32],
    base: f32,
    ramp: &[f32],
) -> usize {
    use std::arch::x86_64::*;
    let n = vals.len() / 8 * 8;
    let at = _mm256_set1_ps(base);
    for k in (0..n).step_by(8) {
        // SAFETY: k + 8 ≤ n ≤ the length of every slice (checked below by
        // the slicing), and AVX is present.
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
}

multiversion! {
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
}

/// The tiled 2x2 case of [`max_pool_backward`], output row by output row;
/// `false` (with `gx` partly written) if an index lies outside its window.
#[inline(always)]
fn unpool_2x2(g: &PoolGeom, gy: &[f32], indices: &[f32], gx: &mut [f32]) -> bool {
    #[cfg(target_arch = "x86_64")]
    if simd().avx2_fma {
        // SAFETY: the CPU has AVX2.
        return unsafe { unpool_2x2_avx2(g, gy, indices, gx) };
    }
    unpool_rows(g, gy, indices, gx, unpool_2x2_row)
}

/// [`unpool_2x2`] with AVX2 rows.
///
/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn unpool_2x2_avx2(g: &PoolGeom, gy: &[f32], indices: &[f32], gx: &mut [f32]) -> bool {
    unpool_rows(g, gy, indices, gx, |gy, idx, at, w, top, bottom| {
        // SAFETY: `gy` and `idx` hold the row's `ow` windows, `top` and
        // `bottom` their `w = 2·ow` cells; AVX2 as above.
        unsafe { unpool_2x2_row_avx2(gy, idx, at, w, top, bottom) }
    })
}

/// Calls `row(gy, idx, at, w, top, bottom)` for each output row of a plane
/// that 2x2 windows tile (its windows' gradients and indices, the plane
/// index of its first cell, the plane's width, its two input rows) while
/// each returns `true`.
#[inline(always)]
fn unpool_rows(
    g: &PoolGeom,
    gy: &[f32],
    indices: &[f32],
    gx: &mut [f32],
    mut row: impl FnMut(&[f32], &[f32], usize, usize, &mut [f32], &mut [f32]) -> bool,
) -> bool {
    let (ow, w) = (g.out[1], g.size[1]);
    let rows = gx
        .chunks_exact_mut(2 * w)
        .zip(gy.chunks_exact(ow).zip(indices.chunks_exact(ow)));
    // a loop, not `all`: the iterator's fold stayed out of line (measured)
    for (oh, (rows, (gy, idx))) in rows.enumerate() {
        let (top, bottom) = rows.split_at_mut(w);
        if !row(gy, idx, 2 * oh * w, w, top, bottom) {
            return false;
        }
    }
    true
}
