//! Measures this machine's f32 FMA peak (GFLOP/s) on 1 and on all threads:
//! each thread runs independent 8-lane FMA chains (AVX2 + FMA) that never
//! touch memory. `cargo run --release --example fma_peak`.

use std::time::Instant;

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_loop(iters: u64) -> f32 {
    use std::arch::x86_64::*;
    let m = _mm256_set1_ps(0.999_9);
    let a = _mm256_set1_ps(1e-7);
    let mut acc = [_mm256_set1_ps(1.0); 12];
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = _mm256_fmadd_ps(*v, m, a);
        }
    }
    let mut s = _mm256_setzero_ps();
    for v in acc {
        s = _mm256_add_ps(s, v);
    }
    let mut out = [0.0f32; 8];
    _mm256_storeu_ps(out.as_mut_ptr(), s);
    out.iter().sum()
}

#[cfg(target_arch = "x86_64")]
fn main() {
    if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")) {
        eprintln!("this machine has no AVX2 + FMA");
        return;
    }
    let iters = 200_000_000u64;
    let flops_per_thread = iters as f64 * 12.0 * 8.0 * 2.0;
    let all = std::thread::available_parallelism().map_or(1, |n| n.get());
    for threads in [1, all] {
        let mut best = 0.0f64;
        for _ in 0..3 {
            let t = Instant::now();
            std::thread::scope(|s| {
                for _ in 0..threads {
                    // SAFETY: the features were detected above.
                    s.spawn(|| std::hint::black_box(unsafe { fma_loop(iters) }));
                }
            });
            best = best.max(flops_per_thread * threads as f64 / t.elapsed().as_secs_f64() / 1e9);
        }
        println!("{threads} thread(s): {best:.1} GFLOP/s (AVX2 FMA, best of 3)");
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn main() {
    eprintln!("fma_peak measures x86-64 only");
}
