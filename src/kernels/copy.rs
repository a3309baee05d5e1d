//! Copies of a few floats without a `memmove` call: packing, padding and
//! pooling copy runs of up to 32 floats, where a call per run costs more
//! than the copy.

/// The most floats [`copy_short`] moves without a call.
pub const SHORT: usize = 32;

/// Zeros for short fills: `copy_short(dst, &ZEROS[..n])`.
pub static ZEROS: [f32; SHORT] = [0.0; SHORT];

/// Copies `src` (at most [`SHORT`] floats) into the start of `dst` with
/// overlapping 4-float moves (SSE, which every x86-64 CPU has); longer runs,
/// and other targets, use a plain slice copy.
#[inline(always)]
pub fn copy_short(dst: &mut [f32], src: &[f32]) {
    let n = src.len();
    #[cfg(target_arch = "x86_64")]
    if n <= SHORT && dst.len() >= n {
        use std::arch::x86_64::{_mm_loadu_ps, _mm_storeu_ps};
        let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
        // SAFETY: every access below lies in `src[..n]` / `dst[..n]` (moves
        // from both ends that overlap when n is not a multiple of 4), and
        // SSE is part of x86-64.
        unsafe {
            let mv = |at: usize| _mm_storeu_ps(d.add(at), _mm_loadu_ps(s.add(at)));
            match n {
                17..=32 => [0, 4, 8, 12, n - 16, n - 12, n - 8, n - 4]
                    .into_iter()
                    .for_each(mv),
                8..=16 => [0, 4, n - 8, n - 4].into_iter().for_each(mv),
                4..=7 => [0, n - 4].into_iter().for_each(mv),
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
