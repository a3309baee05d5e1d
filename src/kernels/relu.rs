//! ReLU in place with vector `max(0, x)`, which keeps [`UnaryOp::apply`]'s
//! rule (`x < 0 ? 0 : x`: NaN and −0.0 stay, as `maxps` returns its second
//! operand when either is NaN and when both are zero). Written value by
//! value, the compiler turns that select into masked stores, which are slow
//! on AMD.
//!
//! [`UnaryOp::apply`]: crate::ops::UnaryOp::apply

/// ReLU in place over the leading multiple of 8 elements of `x` with AVX,
/// when the CPU has it; returns how many elements it did (0 without AVX),
/// the caller applies the op to the rest.
pub fn relu_in_place_simd(x: &mut [f32]) -> usize {
    #[cfg(target_arch = "x86_64")]
    if crate::kernels::simd::simd().avx {
        // SAFETY: AVX is present.
        return unsafe { relu_in_place_avx(x) };
    }
    let _ = x;
    0
}

/// # Safety
/// AVX is present.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn relu_in_place_avx(x: &mut [f32]) -> usize {
    use std::arch::x86_64::*;
    let mut chunks = x.chunks_exact_mut(8);
    for c in &mut chunks {
        // SAFETY: the chunk holds 8 floats.
        unsafe {
            let v = _mm256_max_ps(_mm256_setzero_ps(), _mm256_loadu_ps(c.as_ptr()));
            _mm256_storeu_ps(c.as_mut_ptr(), v);
        }
    }
    x.len() / 8 * 8
}
