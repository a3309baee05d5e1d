//! The strided matrix transpose that packing routines and `Permute` build
//! on: cache-blocked, in 8 × 8 blocks (eight vector loads, a shuffle network
//! and eight vector stores where AVX is present, a plain loop otherwise).

/// Tile edge of the blocked [`transpose`].
const TILE: usize = 32;

/// `dst[j·dst_stride + i] = src[i·src_stride + j]` for `i < rows`,
/// `j < cols`: in `TILE × TILE` blocks of 8 × 8 transposes, the ragged
/// edges element by element.
///
/// # Panics
/// When `src` or `dst` is shorter than its strided matrix.
pub fn transpose(
    src: &[f32],
    src_stride: usize,
    rows: usize,
    cols: usize,
    dst: &mut [f32],
    dst_stride: usize,
) {
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(
        src.len() >= (rows - 1) * src_stride + cols && dst.len() >= (cols - 1) * dst_stride + rows,
        "transpose: {rows} × {cols} does not fit its source or destination"
    );
    // SAFETY: both strided matrices lie inside their slices (asserted above).
    unsafe {
        transpose_raw(
            src.as_ptr(),
            src_stride,
            rows,
            cols,
            dst.as_mut_ptr(),
            dst_stride,
        )
    }
}

/// [`transpose`] between raw matrices, for callers that write part of a
/// buffer other threads write other parts of.
///
/// # Safety
/// `src` addresses `rows` rows of `cols` readable floats `src_stride` apart,
/// `dst` `cols` rows of `rows` writable floats `dst_stride` apart that no one
/// else touches during the call, and the two do not overlap.
pub unsafe fn transpose_raw(
    src: *const f32,
    src_stride: usize,
    rows: usize,
    cols: usize,
    dst: *mut f32,
    dst_stride: usize,
) {
    let avx = avx::available();
    for i0 in (0..rows).step_by(TILE) {
        let i1 = (i0 + TILE).min(rows);
        let ib = i0 + (i1 - i0) / 8 * 8;
        for j0 in (0..cols).step_by(TILE) {
            let j1 = (j0 + TILE).min(cols);
            let jb = j0 + (j1 - j0) / 8 * 8;
            for i in (i0..ib).step_by(8) {
                for j in (j0..jb).step_by(8) {
                    // SAFETY: rows i .. i+8, columns j .. j+8 and their
                    // transpose lie inside the caller's matrices.
                    unsafe {
                        let (from, to) = (src.add(i * src_stride + j), dst.add(j * dst_stride + i));
                        block_8x8(from, src_stride, to, dst_stride, avx);
                    }
                }
            }
            for i in i0..i1 {
                let from = if i < ib { jb } else { j0 };
                for j in from..j1 {
                    // SAFETY: as above.
                    unsafe { *dst.add(j * dst_stride + i) = *src.add(i * src_stride + j) };
                }
            }
        }
    }
}

/// Writes `src[i·ss + j]` to `dst[j·ds + i]` for `i, j < 8`.
///
/// # Safety
/// Both 8 × 8 blocks lie inside their buffers; `avx` only where AVX is present.
#[inline]
unsafe fn block_8x8(src: *const f32, ss: usize, dst: *mut f32, ds: usize, avx: bool) {
    #[cfg(target_arch = "x86_64")]
    if avx {
        // SAFETY: the caller's contract.
        return unsafe { avx::block_8x8(src, ss, dst, ds) };
    }
    let _ = avx;
    for i in 0..8 {
        for j in 0..8 {
            // SAFETY: the caller's blocks.
            unsafe { *dst.add(j * ds + i) = *src.add(i * ss + j) };
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod avx {
    pub fn available() -> bool {
        false
    }
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use std::arch::x86_64::*;

    /// Whether this CPU has AVX.
    pub fn available() -> bool {
        crate::kernels::simd::simd().avx
    }

    /// See [`super::block_8x8`]: eight loads, three rounds of shuffles,
    /// eight stores.
    ///
    /// # Safety
    /// AVX is present; both blocks lie inside their buffers.
    #[target_feature(enable = "avx")]
    pub unsafe fn block_8x8(src: *const f32, ss: usize, dst: *mut f32, ds: usize) {
        // SAFETY: the caller's blocks.
        let r: [__m256; 8] = std::array::from_fn(|i| unsafe { _mm256_loadu_ps(src.add(i * ss)) });
        // pairs of rows interleaved, then quadruples, then the 128-bit halves
        let t = [
            _mm256_unpacklo_ps(r[0], r[1]),
            _mm256_unpackhi_ps(r[0], r[1]),
            _mm256_unpacklo_ps(r[2], r[3]),
            _mm256_unpackhi_ps(r[2], r[3]),
            _mm256_unpacklo_ps(r[4], r[5]),
            _mm256_unpackhi_ps(r[4], r[5]),
            _mm256_unpacklo_ps(r[6], r[7]),
            _mm256_unpackhi_ps(r[6], r[7]),
        ];
        let u = [
            _mm256_shuffle_ps::<0x44>(t[0], t[2]),
            _mm256_shuffle_ps::<0xEE>(t[0], t[2]),
            _mm256_shuffle_ps::<0x44>(t[1], t[3]),
            _mm256_shuffle_ps::<0xEE>(t[1], t[3]),
            _mm256_shuffle_ps::<0x44>(t[4], t[6]),
            _mm256_shuffle_ps::<0xEE>(t[4], t[6]),
            _mm256_shuffle_ps::<0x44>(t[5], t[7]),
            _mm256_shuffle_ps::<0xEE>(t[5], t[7]),
        ];
        let out = [
            _mm256_permute2f128_ps::<0x20>(u[0], u[4]),
            _mm256_permute2f128_ps::<0x20>(u[1], u[5]),
            _mm256_permute2f128_ps::<0x20>(u[2], u[6]),
            _mm256_permute2f128_ps::<0x20>(u[3], u[7]),
            _mm256_permute2f128_ps::<0x31>(u[0], u[4]),
            _mm256_permute2f128_ps::<0x31>(u[1], u[5]),
            _mm256_permute2f128_ps::<0x31>(u[2], u[6]),
            _mm256_permute2f128_ps::<0x31>(u[3], u[7]),
        ];
        for (j, v) in out.into_iter().enumerate() {
            // SAFETY: row j of the destination block (the caller's).
            unsafe { _mm256_storeu_ps(dst.add(j * ds), v) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transposes_strided_matrices_of_every_edge() {
        // blocks of 8 and 32, ragged edges, strides wider than the rows
        for &(rows, cols) in &[(1, 1), (8, 8), (3, 17), (33, 9), (40, 70), (64, 32)] {
            let (ss, ds) = (cols + 3, rows + 5);
            let src: Vec<f32> = (0..rows * ss).map(|i| i as f32).collect();
            let mut dst = vec![-1f32; cols * ds];
            transpose(&src, ss, rows, cols, &mut dst, ds);
            for j in 0..cols {
                for i in 0..ds {
                    let want = if i < rows { src[i * ss + j] } else { -1.0 };
                    assert_eq!(dst[j * ds + i], want, "{rows}x{cols} ({j}, {i})");
                }
            }
        }
    }
}
