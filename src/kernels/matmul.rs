//! Dense f32 matrix products on [`gemm`](super::gemm), split over threads.

pub use super::gemm::MatRef;
use super::gemm::{gemm, gemm_raw, Init};
use super::par::{self, SharedMut};
use rayon::prelude::*;

/// Below this many multiply-adds a product runs on the calling thread.
const PARALLEL_MIN_FLOPS: usize = 1 << 18;

/// `out[m, n] = a[m, k] · b[k, n]`, `out` row-major and contiguous.
pub fn matmul(m: usize, k: usize, n: usize, a: MatRef, b: MatRef, out: &mut [f32]) {
    matmul_acc(m, k, n, a, b, out, false);
}

/// `out[m, n] (+)= a[m, k] · b[k, n]`: adds to `out` when `accumulate`, else
/// overwrites it. Large products are split over the threads [`par::threads`]
/// allows: by columns when `B` is the wider operand (each thread then packs
/// all of `A`, the smaller, and its share of `B`) or rows are too few, else
/// by rows (each thread packs all of `B`).
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
    let threads = if m * n * k >= PARALLEL_MIN_FLOPS {
        par::threads()
    } else {
        1
    };
    assert!(
        a.fits(m, k) && b.fits(k, n) && out.len() >= m * n,
        "matmul: buffers too small"
    );
    let out = &mut out[..m * n];
    if threads <= 1 || n == 0 {
        return gemm(m, k, n, &a, &b, out, n, init);
    }
    if m >= 8 * threads && (m >= n || n < 16 * threads) {
        let rows = m.div_ceil(threads);
        return out.par_chunks_mut(rows * n).enumerate().for_each(|(t, c)| {
            let (i0, mt) = (t * rows, c.len() / n);
            let at = i0 * a.row_stride;
            let a = MatRef {
                data: &a.data[at..],
                ..a
            };
            gemm(mt, k, n, &a, &b, c, n, init)
        });
    }
    let cols = n.div_ceil(threads).next_multiple_of(16);
    let c = SharedMut(out.as_mut_ptr());
    (0..n.div_ceil(cols)).into_par_iter().for_each(|t| {
        let (j0, nt) = (t * cols, cols.min(n - t * cols));
        let at = j0 * b.col_stride;
        let b = MatRef {
            data: &b.data[at..],
            ..b
        };
        // SAFETY: task t writes only columns j0 .. j0+nt of the m × n `out`
        // (checked above), which no other task writes.
        unsafe { gemm_raw(m, k, nt, &a, &b, c.get().add(j0), n, init) }
    });
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
