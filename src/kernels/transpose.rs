//! The 8 × 8 block transpose that packing routines build on: eight vector
//! loads, a shuffle network and eight vector stores where AVX is present,
//! a plain loop otherwise.

/// Writes `rows[i][j]` to `dst[j·stride + i]` for `i, j < 8`.
///
/// # Panics
/// When a row holds fewer than 8 floats or `dst` is shorter than `7·stride + 8`.
#[inline]
pub fn transpose_8x8(rows: [&[f32]; 8], dst: &mut [f32], stride: usize) {
    assert!(
        rows.iter().all(|r| r.len() >= 8) && dst.len() >= 7 * stride + 8,
        "transpose_8x8: rows or destination too short"
    );
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("avx") {
        // SAFETY: AVX is present; the lengths are checked above.
        return unsafe { avx::transpose_8x8(rows, dst, stride) };
    }
    for (i, row) in rows.iter().enumerate() {
        for (j, &v) in row[..8].iter().enumerate() {
            dst[j * stride + i] = v;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use std::arch::x86_64::*;

    /// See [`super::transpose_8x8`].
    ///
    /// # Safety
    /// AVX is present; every row holds 8 floats and `dst` at least `7·stride + 8`.
    #[target_feature(enable = "avx")]
    pub unsafe fn transpose_8x8(rows: [&[f32]; 8], dst: &mut [f32], stride: usize) {
        // SAFETY: the caller's lengths.
        let r = rows.map(|row| unsafe { _mm256_loadu_ps(row.as_ptr()) });
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
            // SAFETY: row j of the destination holds 8 floats (the caller's length).
            unsafe { _mm256_storeu_ps(dst.as_mut_ptr().add(j * stride), v) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transposes_an_8x8_block_into_a_strided_destination() {
        let src: Vec<f32> = (0..8 * 11).map(|i| i as f32).collect();
        let rows: [&[f32]; 8] = std::array::from_fn(|i| &src[i * 11 + 2..]);
        let stride = 13;
        let mut dst = vec![-1f32; 7 * stride + 8];
        transpose_8x8(rows, &mut dst, stride);
        for j in 0..8 {
            for i in 0..stride.min(dst.len() - j * stride) {
                let want = if i < 8 { (i * 11 + 2 + j) as f32 } else { -1.0 };
                assert_eq!(dst[j * stride + i], want, "({j}, {i})");
            }
        }
    }
}
