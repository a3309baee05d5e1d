//! Copies of a few floats without a `memmove` call: packing, padding and
//! pooling copy runs of up to 32 floats, where a call per run costs more
//! than the copy.

/// The most floats [`copy_short`] moves without a call.
pub const SHORT: usize = 32;

/// Zeros for short fills: `copy_short(dst, &ZEROS[..n])`.
pub static ZEROS: [f32; SHORT] = [0.0; SHORT];

/// Copies `src` (at most [`SHORT`] floats) into the start of `dst` with
/// overlapping vector moves where AVX is compiled in; longer runs, and
/// builds without AVX, use a plain slice copy.
#[inline(always)]
pub fn copy_short(dst: &mut [f32], src: &[f32]) {
    let n = src.len();
    #[cfg(all(target_arch = "x86_64", target_feature = "avx"))]
    if n <= SHORT && dst.len() >= n {
        use std::arch::x86_64::{_mm256_loadu_ps, _mm256_storeu_ps, _mm_loadu_ps, _mm_storeu_ps};
        let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
        // SAFETY: every access below lies in `src[..n]` / `dst[..n]` (two
        // copies that overlap when n is not a multiple of their width), and
        // AVX is enabled at compile time.
        unsafe {
            match n {
                17..=32 => {
                    let (a, b) = (_mm256_loadu_ps(s), _mm256_loadu_ps(s.add(8)));
                    let (c, e) = (
                        _mm256_loadu_ps(s.add(n - 16)),
                        _mm256_loadu_ps(s.add(n - 8)),
                    );
                    _mm256_storeu_ps(d, a);
                    _mm256_storeu_ps(d.add(8), b);
                    _mm256_storeu_ps(d.add(n - 16), c);
                    _mm256_storeu_ps(d.add(n - 8), e);
                }
                8..=16 => {
                    let (a, b) = (_mm256_loadu_ps(s), _mm256_loadu_ps(s.add(n - 8)));
                    _mm256_storeu_ps(d, a);
                    _mm256_storeu_ps(d.add(n - 8), b);
                }
                4..=7 => {
                    let (a, b) = (_mm_loadu_ps(s), _mm_loadu_ps(s.add(n - 4)));
                    _mm_storeu_ps(d, a);
                    _mm_storeu_ps(d.add(n - 4), b);
                }
                _ => {
                    // unrolled: a loop here would become a `memcpy` call
                    if n > 0 {
                        *d = *s;
                    }
                    if n > 1 {
                        *d.add(1) = *s.add(1);
                    }
                    if n > 2 {
                        *d.add(2) = *s.add(2);
                    }
                }
            }
        }
        return;
    }
    dst[..n].copy_from_slice(src);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_copy_writes_exactly_its_run() {
        let src: Vec<f32> = (1..=40).map(|v| v as f32).collect();
        for n in 0..=40 {
            // the run sits at an odd offset of a longer row
            let mut dst = [-1.0f32; 44];
            copy_short(&mut dst[1..], &src[..n]);
            assert_eq!(dst[0], -1.0, "n = {n}: wrote before the run");
            assert_eq!(&dst[1..1 + n], &src[..n], "n = {n}");
            assert!(
                dst[1 + n..].iter().all(|&v| v == -1.0),
                "n = {n}: wrote past the run"
            );
        }
    }
}
