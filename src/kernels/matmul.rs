//! Dense f32 matrix products (`MatMul`: Linear, LSTM, batched products)
//! through the `gemm` crate, split over the threads [`par::threads`] allows.

pub use super::gemm::MatRef;
use super::gemm::{dense, gemm, Init};
use super::par;

/// Below this many multiply-adds a product runs on the calling thread.
const PARALLEL_MIN_FLOPS: usize = 1 << 18;

/// `out[m, n] = a[m, k] · b[k, n]`, `out` row-major and contiguous.
pub fn matmul(m: usize, k: usize, n: usize, a: MatRef, b: MatRef, out: &mut [f32]) {
    matmul_acc(m, k, n, a, b, out, false);
}

/// `out[m, n] (+)= a[m, k] · b[k, n]`: adds to `out` when `accumulate`, else
/// overwrites it. Products of at least 2^18 multiply-adds run on the
/// threads [`par::threads`] allows, split by the crate itself: its results
/// are then bit-identical for every thread count (splitting rows or columns
/// here changes the crate's blocking, hence the rounding; measured, and
/// faster only for products under about 10^7 multiply-adds).
///
/// # Panics
/// When an operand is smaller than its shape needs (ops check shapes first).
pub fn matmul_acc(
    m: usize,
    k: usize,
    n: usize,
    a: MatRef,
    b: MatRef,
    out: &mut [f32],
    accumulate: bool,
) {
    let init = if accumulate {
        Init::Add
    } else {
        Init::Overwrite
    };
    let threads = match m.saturating_mul(n).saturating_mul(k) >= PARALLEL_MIN_FLOPS {
        true => par::threads(),
        false => 1,
    };
    assert!(
        a.fits(m, k) && b.fits(k, n) && out.len() >= m * n,
        "matmul: buffers too small"
    );
    if threads <= 1 || k == 0 {
        return gemm(m, k, n, &a, &b, &mut out[..m * n], n, init);
    }
    // SAFETY: the operands and `out` fit (checked above), k ≥ 1.
    unsafe { dense::product(m, k, n, a, b, out.as_mut_ptr(), n, init, threads) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_and_column_splits_over_threads_match_one_thread() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        // tall (split by rows), short-wide and wider-than-tall (split by
        // columns) products
        for (m, k, n) in [(97, 70, 45), (5, 300, 301), (2, 1000, 130), (30, 50, 200)] {
            for (ta, tb) in [(false, false), (true, true)] {
                let a: Vec<f32> = (0..m * k).map(|i| (i % 13) as f32 - 6.0).collect();
                let b: Vec<f32> = (0..k * n).map(|i| (i % 7) as f32 * 0.5).collect();
                let (a, b) = (MatRef::new(&a, m, k, ta), MatRef::new(&b, k, n, tb));
                let mut one = vec![1.0; m * n];
                par::sequential(|| matmul_acc(m, k, n, a, b, &mut one, true));
                let mut many = vec![1.0; m * n];
                pool.install(|| matmul_acc(m, k, n, a, b, &mut many, true));
                assert_eq!(one, many, "{m}x{k}x{n} transposed {ta} {tb}");
            }
        }
    }
}
