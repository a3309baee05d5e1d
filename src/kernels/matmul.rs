//! Dense f32 matrix multiply through the `gemm` crate.

use super::par;
use gemm::{gemm, Parallelism};

/// Below this many multiply-adds a product runs on the calling thread.
const PARALLEL_MIN_FLOPS: usize = 1 << 18;

/// A read-only matrix: element `(i, j)` is `data[i·row_stride + j·col_stride]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    /// The elements.
    pub data: &'a [f32],
    /// Distance between rows.
    pub row_stride: usize,
    /// Distance between columns.
    pub col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// A row-major `rows × cols` matrix, or its transpose when `transposed`
    /// (then `data` holds the `cols × rows` matrix row-major).
    pub fn new(data: &'a [f32], rows: usize, cols: usize, transposed: bool) -> Self {
        if transposed {
            MatRef {
                data,
                row_stride: 1,
                col_stride: rows,
            }
        } else {
            MatRef {
                data,
                row_stride: cols,
                col_stride: 1,
            }
        }
    }
    fn fits(&self, rows: usize, cols: usize) -> bool {
        rows == 0
            || cols == 0
            || (rows - 1) * self.row_stride + (cols - 1) * self.col_stride < self.data.len()
    }
}

/// `out[m, n] = a[m, k] · b[k, n]`, `out` row-major and contiguous.
pub fn matmul(m: usize, k: usize, n: usize, a: MatRef, b: MatRef, out: &mut [f32]) {
    matmul_acc(m, k, n, a, b, out, false);
}

/// `out[m, n] (+)= a[m, k] · b[k, n]`: adds to `out` when `accumulate`, else
/// overwrites it; on the threads [`par::threads`] allows when the product is large.
pub fn matmul_acc(
    m: usize,
    k: usize,
    n: usize,
    a: MatRef,
    b: MatRef,
    out: &mut [f32],
    accumulate: bool,
) {
    let threads = if m * n * k >= PARALLEL_MIN_FLOPS {
        par::threads()
    } else {
        1
    };
    matmul_acc_on(threads, m, k, n, a, b, out, accumulate);
}

/// [`matmul_acc`] on exactly `threads` threads of the current rayon pool (1: this thread).
#[allow(clippy::too_many_arguments)]
pub fn matmul_acc_on(
    threads: usize,
    m: usize,
    k: usize,
    n: usize,
    a: MatRef,
    b: MatRef,
    out: &mut [f32],
    accumulate: bool,
) {
    assert!(
        a.fits(m, k) && b.fits(k, n) && out.len() >= m * n,
        "matmul: buffers too small"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            out[..m * n].fill(0.0);
        }
        return;
    }
    let par = if threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    // SAFETY: `fits` and the length check above guarantee every index gemm
    // touches (row stride × rows plus column stride × columns) lies inside the
    // three slices, and `out` does not alias `a` or `b` (it is a unique borrow).
    unsafe {
        gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}
