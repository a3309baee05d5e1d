//! One output row of 2x2 stride-2 pooling (no dilation), the most common
//! pooling: window `j` is `top[2j..2j+2]` over `bottom[2j..2j+2]`. Max
//! pooling with AVX2 takes eight windows at a time: two loads per input row
//! and one shuffle per tap split the pairs into four tap vectors, and the
//! last group (under eight windows) is read with masked loads; its backward,
//! where the windows tile the plane, writes each window's four cells from
//! the saved index the same way, and the average's backward each window's
//! share (the `_avx2` functions, which callers choose where the CPU has
//! AVX2, see [`crate::kernels::simd`]). Without AVX2, a window at a time.

use super::max::{lane, max_step};
#[cfg(target_arch = "x86_64")]
use crate::kernels::copy::copy_short;

/// Max pooling of one row: each window's first maximum in row-major order
/// (NaN wins) and, when given, its plane index (`top[0]` lies at plane
/// index `at` in a plane `w` wide). Branch-free, slice by slice, so that the
/// compiler vectorises it.
#[inline(always)]
pub(super) fn max_2x2_row(
    top: &[f32],
    bottom: &[f32],
    at: usize,
    w: usize,
    values: &mut [f32],
    indices: Option<&mut [f32]>,
) {
    let n = values.len();
    let cells = top[..2 * n]
        .chunks_exact(2)
        .zip(bottom[..2 * n].chunks_exact(2));
    let Some(indices) = indices else {
        for (v, (t, b)) in values.iter_mut().zip(cells) {
            *v = max_step(max_step(max_step(t[0], t[1]), b[0]), b[1]);
        }
        return;
    };
    let (at, below) = (at as f32, w as f32); // exact: planes ≤ 2^24 cells
    for (j, ((v, i), (t, b))) in values
        .iter_mut()
        .zip(&mut indices[..n])
        .zip(cells)
        .enumerate()
    {
        let base = at + (2 * j as u32) as f32;
        let (mut m, mut mi) = (t[0], base);
        lane(&mut m, &mut mi, t[1], base + 1.0);
        lane(&mut m, &mut mi, b[0], base + below);
        lane(&mut m, &mut mi, b[1], base + below + 1.0);
        (*v, *i) = (m, mi);
    }
}

/// Average pooling of one row: the four cells summed in row-major order (as
/// the general loop sums its taps, for the same rounding), times 1/4. The
/// compiler vectorises this loop well (faster, measured, than the shuffles
/// of [`max_2x2_row`]).
#[inline(always)]
pub(super) fn avg_2x2_row(top: &[f32], bottom: &[f32], out: &mut [f32]) {
    let cells = top.chunks_exact(2).zip(bottom.chunks_exact(2));
    for (o, (t, b)) in out.iter_mut().zip(cells) {
        // + 0.0: as the general loop, the sum starts from +0.0
        *o = (t[0] + t[1] + b[0] + b[1] + 0.0) * 0.25
    }
}

/// Max pooling backward over one output row of 2x2 windows that tile the
/// plane: window `j`'s cells are `top[2j..2j+2]` and `bottom[2j..2j+2]`
/// (`top[0]` at plane index `at`, rows `w` apart); the cell at plane index
/// `idx[j]` gets `0 + gy[j]` (what a zeroed plane plus the scatter gives),
/// the other three 0. `false` if an index is none of its window's cells
/// (the row is then written, wrongly there). Branch-free.
#[inline(always)]
pub(super) fn unpool_2x2_row(
    gy: &[f32],
    idx: &[f32],
    at: usize,
    w: usize,
    top: &mut [f32],
    bottom: &mut [f32],
) -> bool {
    let n = gy.len();
    let cells = top[..2 * n]
        .chunks_exact_mut(2)
        .zip(bottom[..2 * n].chunks_exact_mut(2));
    let (at, below) = (at as f32, w as f32); // exact: planes ≤ 2^24 cells
    let mut all_found = true;
    for (j, ((&g, &i), (t, b))) in gy.iter().zip(&idx[..n]).zip(cells).enumerate() {
        let base = at + (2 * j as u32) as f32;
        let v = 0.0 + g;
        let hit = [
            i == base,
            i == base + 1.0,
            i == base + below,
            i == base + below + 1.0,
        ];
        all_found &= hit[0] | hit[1] | hit[2] | hit[3];
        let put = |h: bool| if h { v } else { 0.0 };
        (t[0], t[1], b[0], b[1]) = (put(hit[0]), put(hit[1]), put(hit[2]), put(hit[3]));
    }
    all_found
}

/// Average pooling backward over one output row of 2x2 windows that tile
/// the plane: all four cells of window `j` get `0 + gy[j]/4` (what a zeroed
/// plane plus each window's share gives).
#[inline(always)]
pub(super) fn spread_2x2_row(gy: &[f32], top: &mut [f32], bottom: &mut [f32]) {
    let n = gy.len();
    let (top, bottom) = (&mut top[..2 * n], &mut bottom[..2 * n]);
    // four windows at a time: whole vectors of pairs (SSE2 shuffles)
    let four = n / 4 * 4;
    let cells = top.chunks_exact_mut(8).zip(bottom.chunks_exact_mut(8));
    for (g, (t, b)) in gy[..four].chunks_exact(4).zip(cells) {
        let pairs: [f32; 8] = std::array::from_fn(|k| 0.0 + g[k / 2] * 0.25);
        t.copy_from_slice(&pairs);
        b.copy_from_slice(&pairs);
    }
    for j in four..n {
        let v = 0.0 + gy[j] * 0.25;
        (top[2 * j], top[2 * j + 1], bottom[2 * j], bottom[2 * j + 1]) = (v, v, v, v);
    }
}

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::__m256;

/// The first `count` (≤ 8) floats at `p`, zeros after: one load, masked
/// unless all eight are wanted (a masked load reads nothing past them).
///
/// # Safety
/// `p` points at `count` readable floats; AVX2 is available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn load_first(p: *const f32, count: usize) -> __m256 {
    use std::arch::x86_64::*;
    // SAFETY: the caller's contract.
    unsafe {
        if count >= 8 {
            return _mm256_loadu_ps(p);
        }
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        _mm256_maskload_ps(
            p,
            _mm256_cmpgt_epi32(_mm256_set1_epi32(count as i32), lanes),
        )
    }
}

/// The plane indices of the four cells (top-left, top-right, bottom-left,
/// bottom-right) of windows whose top-left cells lie at `base`, in a plane
/// `w` wide (register operations only: callable where AVX2 is enabled).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
fn window_cells(base: __m256, w: f32) -> [__m256; 4] {
    use std::arch::x86_64::*;
    let (right, below) = (_mm256_set1_ps(1.0), _mm256_set1_ps(w));
    let under = _mm256_add_ps(base, below);
    [
        base,
        _mm256_add_ps(base, right),
        under,
        _mm256_add_ps(under, right),
    ]
}

/// Stores windows `0..count` of `left` and `right` (in window order) as
/// `count` pairs `left[k], right[k]` to `dst`.
///
/// # Safety
/// `dst` holds `2·count` floats, `count` ≤ 8; AVX2 is available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn store_pairs(dst: &mut [f32], left: __m256, right: __m256, count: usize) {
    use std::arch::x86_64::*;
    // SAFETY: whole stores only when `dst` holds 16 floats (checked); AVX2
    // per the caller.
    unsafe {
        // pairs 0, 1 | 4, 5 and 2, 3 | 6, 7, then 0..4 and 4..8
        let (lo, hi) = (
            _mm256_unpacklo_ps(left, right),
            _mm256_unpackhi_ps(left, right),
        );
        let (a, b) = (
            _mm256_permute2f128_ps::<0x20>(lo, hi),
            _mm256_permute2f128_ps::<0x31>(lo, hi),
        );
        if count == 8 && dst.len() >= 16 {
            _mm256_storeu_ps(dst.as_mut_ptr(), a);
            _mm256_storeu_ps(dst.as_mut_ptr().add(8), b);
        } else {
            let mut pairs = [0f32; 16];
            _mm256_storeu_ps(pairs.as_mut_ptr(), a);
            _mm256_storeu_ps(pairs.as_mut_ptr().add(8), b);
            copy_short(dst, &pairs[..2 * count]);
        }
    }
}

/// Calls `f(j, count, taps)` for each group of `count` (8, or fewer for the
/// last) of the row's `n` windows from window `j`: `taps` are the windows'
/// top-left, top-right, bottom-left and bottom-right cells with the windows
/// in lane order 0, 1, 4, 5 | 2, 3, 6, 7 (lanes past `count` hold zeros).
///
/// # Safety
/// `top` and `bottom` hold `2n` floats; AVX2 is available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn for_each_group(
    top: &[f32],
    bottom: &[f32],
    n: usize,
    mut f: impl FnMut(usize, usize, [__m256; 4]),
) {
    use std::arch::x86_64::*;
    // SAFETY: the caller's contract bounds every load: whole groups read 16
    // floats of each row, the last group only its 2·count through masks.
    unsafe {
        let split = |lo: __m256, hi: __m256| {
            (
                _mm256_shuffle_ps::<0b10_00_10_00>(lo, hi),
                _mm256_shuffle_ps::<0b11_01_11_01>(lo, hi),
            )
        };
        let (t, b) = (top.as_ptr(), bottom.as_ptr());
        for j in (0..n).step_by(8) {
            let count = (n - j).min(8);
            let (t, b) = (t.add(2 * j), b.add(2 * j));
            let cells = 2 * count;
            let load = |p: *const f32| match cells {
                9.. => (_mm256_loadu_ps(p), load_first(p.add(8), cells - 8)),
                _ => (load_first(p, cells), _mm256_setzero_ps()),
            };
            let ((t0, t1), (b0, b1)) = (load(t), load(b));
            let ((tl, tr), (bl, br)) = (split(t0, t1), split(b0, b1));
            f(j, count, [tl, tr, bl, br]);
        }
    }
}

/// Stores the first `count` windows of `v` (in the lane order of
/// [`for_each_group`]) to `dst` in window order.
///
/// # Safety
/// `dst` holds `count` ≤ 8 floats; AVX2 is available.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn store_first(dst: &mut [f32], v: __m256, count: usize) {
    use std::arch::x86_64::*;
    // SAFETY: a whole store only when `dst` holds 8 floats (checked); AVX2
    // per the caller.
    unsafe {
        // 64-bit pairs (0,1) (4,5) (2,3) (6,7) → windows 0..8
        let v = _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(v)));
        if count == 8 && dst.len() >= 8 {
            _mm256_storeu_ps(dst.as_mut_ptr(), v);
        } else {
            let mut lanes = [0f32; 8];
            _mm256_storeu_ps(lanes.as_mut_ptr(), v);
            copy_short(dst, &lanes[..count]);
        }
    }
}

/// [`max_2x2_row`] with AVX2: eight windows at a time.
///
/// # Safety
/// `top` and `bottom` hold `2n` floats, `indices` (if any) `n`; AVX2 is present.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
pub(super) unsafe fn max_2x2_row_avx2(
    top: &[f32],
    bottom: &[f32],
    at: usize,
    w: usize,
    values: &mut [f32],
    mut indices: Option<&mut [f32]>,
) {
    use std::arch::x86_64::*;
    let n = values.len();
    // SAFETY: the caller's contract bounds the groups' windows; AVX2 is present.
    unsafe {
        // the lanes hold windows 0, 1, 4, 5 | 2, 3, 6, 7: their top-left offsets
        let ramp = _mm256_setr_ps(0.0, 2.0, 8.0, 10.0, 4.0, 6.0, 12.0, 14.0);
        for_each_group(top, bottom, n, |j, count, taps| {
            // plane indices are exact in f32 (planes ≤ 2^24 cells)
            let base = _mm256_add_ps(_mm256_set1_ps((at + 2 * j) as f32), ramp);
            let offsets = window_cells(base, w as f32);
            let (mut m, mut mi) = (taps[0], base);
            for k in 1..4 {
                // x > m, or x is NaN (as `takes`)
                let take = _mm256_or_ps(
                    _mm256_cmp_ps::<_CMP_GT_OQ>(taps[k], m),
                    _mm256_cmp_ps::<_CMP_UNORD_Q>(taps[k], taps[k]),
                );
                m = _mm256_blendv_ps(m, taps[k], take);
                mi = _mm256_blendv_ps(mi, offsets[k], take);
            }
            store_first(&mut values[j..], m, count);
            if let Some(i) = indices.as_deref_mut() {
                store_first(&mut i[j..], mi, count);
            }
        });
    }
}

/// [`unpool_2x2_row`] with AVX2: eight windows at a time.
///
/// # Safety
/// `gy`, `idx` hold `n` floats, `top` and `bottom` `2n`; AVX2 is present.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
pub(super) unsafe fn unpool_2x2_row_avx2(
    gy: &[f32],
    idx: &[f32],
    at: usize,
    w: usize,
    top: &mut [f32],
    bottom: &mut [f32],
) -> bool {
    use std::arch::x86_64::*;
    let n = gy.len();
    // SAFETY: the caller's contract bounds every load and store (the last
    // group reads and writes only its `count` windows); AVX2 is present.
    unsafe {
        // windows in order here: gy and idx are read as they lie
        let ramp = _mm256_setr_ps(0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0);
        let zero = _mm256_setzero_ps();
        for j in (0..n).step_by(8) {
            let count = (n - j).min(8);
            let g = load_first(gy.as_ptr().add(j), count);
            let i = load_first(idx.as_ptr().add(j), count);
            let base = _mm256_add_ps(_mm256_set1_ps((at + 2 * j) as f32), ramp);
            let hit = window_cells(base, w as f32).map(|c| _mm256_cmp_ps::<_CMP_EQ_OQ>(i, c));
            let any = _mm256_or_ps(_mm256_or_ps(hit[0], hit[1]), _mm256_or_ps(hit[2], hit[3]));
            // every one of the group's windows matched one of its cells
            let all = (1 << count) - 1;
            if _mm256_movemask_ps(any) & all != all {
                return false;
            }
            let [tl, tr, bl, br] = hit.map(|h| _mm256_add_ps(_mm256_and_ps(g, h), zero));
            store_pairs(&mut top[2 * j..], tl, tr, count);
            store_pairs(&mut bottom[2 * j..], bl, br, count);
        }
    }
    true
}

/// [`spread_2x2_row`] with AVX2: eight windows at a time.
///
/// # Safety
/// `gy` holds `n` floats, `top` and `bottom` `2n`; AVX2 is present.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
pub(super) unsafe fn spread_2x2_row_avx2(gy: &[f32], top: &mut [f32], bottom: &mut [f32]) {
    use std::arch::x86_64::*;
    let n = gy.len();
    // SAFETY: the caller's contract bounds every load and store (the last
    // group reads and writes only its `count` windows); AVX2 is present.
    unsafe {
        let (quarter, zero) = (_mm256_set1_ps(0.25), _mm256_setzero_ps());
        for j in (0..n).step_by(8) {
            let count = (n - j).min(8);
            let g = load_first(gy.as_ptr().add(j), count);
            let v = _mm256_add_ps(_mm256_mul_ps(g, quarter), zero);
            store_pairs(&mut top[2 * j..], v, v, count);
            store_pairs(&mut bottom[2 * j..], v, v, count);
        }
    }
}
