//! Products through the `gemm` crate (AVX2/AVX-512, NEON and portable
//! kernels, chosen at run time by the crate): every product of two strided
//! matrices ([`MatRef`]), and on CPUs without AVX2 + FMA every product,
//! the convolutions' im2col operands materialised first. A column-major
//! right operand is copied row-major into scratch first.

use super::scratch::{self, Slot};
use super::{Init, MatRef, PackA, PackB, KC, MR, NR};
use std::sync::atomic::{AtomicU64, Ordering};

/// Products handed to the `gemm` crate so far, all threads together. The
/// crate allocates its packing buffers for each (about two), the one heap
/// allocation a steady-state run makes; the allocation tests bound them by it.
pub static CRATE_PRODUCTS: AtomicU64 = AtomicU64::new(0);

/// Rows of a column-major `B`'s row-major copy per parallel task.
const TRANSPOSE_ROWS: usize = 32;

/// `C[m × n] = init ∘ A·B` through the `gemm` crate on up to `threads`
/// threads (the current rayon pool's).
///
/// # Safety
/// As [`super::gemm_raw`]; `a` and `b` fit `m × k` and `k × n`, `k ≥ 1`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn product(
    m: usize,
    k: usize,
    n: usize,
    a: MatRef,
    b: MatRef,
    c: *mut f32,
    ldc: usize,
    init: Init,
    threads: usize,
) {
    debug_assert!(a.fits(m, k) && b.fits(k, n) && k > 0);
    if b.row_stride == 1 && b.col_stride != 1 && n > 1 && m > 1 {
        // a column-major B (x·Wᵀ, q·kᵀ): the crate packs it several times
        // slower than a row-major one (measured 32x128x128: 14.9 against
        // 10.4 µs; 8x512x512: 547 against 42 µs), so it is transposed into
        // this thread's scratch first (same products, same sums: the
        // results are bit-identical). Not for one row of A, which the
        // crate multiplies column by column without packing (1x1024x1024:
        // 54 µs, against 590 with the copy)
        return scratch::with(Slot::DenseB, k * n, |dense| {
            // B's n columns of k values lie `col_stride` apart in `b.data`;
            // rows of the copy in blocks, over the threads the product has
            let transpose = |k0: usize, rows: &mut [f32]| {
                let src = &b.data[k0..];
                super::super::transpose::transpose(src, b.col_stride, n, rows.len() / n, rows, n)
            };
            match threads {
                0 | 1 => transpose(0, dense),
                _ => super::super::par::for_each_plane(
                    dense,
                    TRANSPOSE_ROWS * n,
                    TRANSPOSE_ROWS * n,
                    |p, rows| transpose(p * TRANSPOSE_ROWS, rows),
                ),
            }
            let b = MatRef::new(dense, k, n, false);
            // SAFETY: as this call; B is now a row-major k × n matrix.
            unsafe { product(m, k, n, a, b, c, ldc, init, threads) }
        });
    }
    // C = start + A·B, C starting at +0.0 when overwriting: a sum starts
    // from +0.0, as kiln's tile and the reference kernels' do (the crate's
    // small kernels start from the first product, so all −0.0 terms would
    // give −0.0)
    // SAFETY: the caller's contract.
    unsafe { super::start_rows(m, n, c, ldc, init) };
    CRATE_PRODUCTS.fetch_add(1, Ordering::Relaxed);
    let parallelism = match threads {
        0 | 1 => gemm::Parallelism::None,
        t => gemm::Parallelism::Rayon(t),
    };
    // strides and `ldc` of in-bounds slices fit isize (`MatRef::fits`)
    let s = |x: usize| x as isize;
    // SAFETY: every element of A and B lies in its slice (`fits`), and C's
    // m rows of n cells `ldc` apart are the caller's: C = 1·C + 1·A·B.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c,
            1,
            s(ldc),
            true,
            a.data.as_ptr(),
            s(a.col_stride),
            s(a.row_stride),
            b.data.as_ptr(),
            s(b.col_stride),
            s(b.row_stride),
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// [`product`] for any operands, on this thread: operands that are not
/// strided matrices (im2col columns) are first written out into this
/// thread's scratch ([`PackA::write_dense`], [`PackB::write_dense`]).
///
/// # Safety
/// As [`product`].
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn product_of(
    m: usize,
    k: usize,
    n: usize,
    a: &impl PackA,
    b: &impl PackB,
    c: *mut f32,
    ldc: usize,
    init: Init,
) {
    let a_len = if a.as_mat().is_some() { 0 } else { m * k };
    let b_len = if b.as_mat().is_some() { 0 } else { k * n };
    scratch::with(Slot::DenseA, a_len, |abuf| {
        scratch::with(Slot::DenseB, b_len, |bbuf| {
            let a = a.as_mat().unwrap_or_else(|| a.write_dense(m, k, abuf));
            let b = b.as_mat().unwrap_or_else(|| b.write_dense(k, n, bbuf));
            assert!(
                a.fits(m, k) && b.fits(k, n),
                "gemm: written operands too small"
            );
            // SAFETY: the caller's contract; A and B now fit as strided matrices.
            unsafe { product(m, k, n, a, b, c, ldc, init, 1) }
        })
    })
}

/// Writes `A` (`m × k`) row-major into `out`, an `MR`-row panel of at most
/// `KC` steps at a time.
pub(super) fn dense_a(a: &impl PackA, m: usize, k: usize, out: &mut [f32]) {
    let mut panel = [0f32; KC * MR];
    for k0 in (0..k).step_by(KC) {
        let kc = KC.min(k - k0);
        for i0 in (0..m).step_by(MR) {
            let rows = MR.min(m - i0);
            a.pack(i0, rows, k0, kc, &mut panel[..kc * MR]);
            for (kk, step) in panel[..kc * MR].chunks_exact(MR).enumerate() {
                for (ii, &v) in step[..rows].iter().enumerate() {
                    out[(i0 + ii) * k + k0 + kk] = v;
                }
            }
        }
    }
}

/// Writes `B` (`k × n`) row-major into `out`, an `NR`-column panel of at
/// most `KC` rows at a time.
pub(super) fn dense_b(b: &impl PackB, k: usize, n: usize, out: &mut [f32]) {
    let mut panel = [0f32; KC * NR];
    for k0 in (0..k).step_by(KC) {
        let kc = KC.min(k - k0);
        for j0 in (0..n).step_by(NR) {
            let cols = NR.min(n - j0);
            let panel = &mut panel[..kc * NR];
            panel.fill(0.0); // cells past `cols` must be zero on entry
            b.pack(k0, kc, j0, cols, panel);
            for (kk, step) in panel.chunks_exact(NR).enumerate() {
                out[(k0 + kk) * n + j0..][..cols].copy_from_slice(&step[..cols]);
            }
        }
    }
}
