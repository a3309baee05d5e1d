//! Measures kiln's GEMM on one thread at the seed Conv2D product size
//! (`[128 × 576] · [576 × 1024]`) in GFLOP/s, to compare with `fma_peak`.
//!
//! `cargo run --release --example gemm_peak [m k n]`

use kiln::tooling::kernels::gemm::{gemm, Init, MatRef};
use std::time::Instant;

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let (m, k, n) = match args[..] {
        [m, k, n] => (m, k, n),
        _ => (128, 576, 1024),
    };
    let a: Vec<f32> = (0..m * k).map(|i| (i % 7) as f32 * 0.1).collect();
    let b: Vec<f32> = (0..k * n).map(|i| (i % 5) as f32 * 0.1).collect();
    let mut c = vec![0f32; m * n];
    let (a, b) = (MatRef::new(&a, m, k, false), MatRef::new(&b, k, n, false));
    let mut times = Vec::new();
    for _ in 0..400 {
        let t = Instant::now();
        gemm(m, k, n, &a, &b, &mut c, n, Init::Overwrite);
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(|x, y| x.total_cmp(y));
    let flop = 2.0 * (m * k * n) as f64;
    let (best, median) = (times[0], times[times.len() / 2]);
    println!(
        "gemm {m}x{k}x{n} on one thread: median {:.1} µs ({:.1} GFLOP/s), best {:.1} µs ({:.1} GFLOP/s)",
        median * 1e6,
        flop / median / 1e9,
        best * 1e6,
        flop / best / 1e9
    );
}
