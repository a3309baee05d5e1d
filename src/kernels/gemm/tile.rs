//! The register tile of the GEMM: `C[MR × NR] (+)= A_panel · B_panel` over
//! `kc` steps, from panels packed (`A`: `kc × MR`, `B`: `kc × NR`, both
//! contiguous) or read where they lie through a table of offsets, with AVX2 +
//! FMA (12 accumulator registers, two B vectors and one broadcast per step).
//! It runs only where the CPU has them ([`available`]): elsewhere products go
//! to the `gemm` crate (`super::dense`).

/// Rows of a tile (rows of `A` per packed panel).
pub const MR: usize = 6;
/// Columns of a tile (columns of `B` per packed panel).
pub const NR: usize = 16;

/// Where a tile finds the `NR` values of B's step `kk` (one row of a panel).
pub trait Rows: Copy {
    /// The address of step `kk`'s `NR` values.
    ///
    /// # Safety
    /// `kk` is below the panel's step count.
    unsafe fn row(self, kk: usize) -> *const f32;
}

/// A packed panel: step `kk` at `kk·NR`.
#[derive(Clone, Copy, Debug)]
pub struct Packed(pub *const f32);

impl Rows for Packed {
    #[inline(always)]
    unsafe fn row(self, kk: usize) -> *const f32 {
        // SAFETY: the caller's step is inside the panel.
        unsafe { self.0.add(kk * NR) }
    }
}

/// A panel read where it lies: step `kk` at `base + starts[kk]`.
#[derive(Clone, Copy, Debug)]
pub struct Indexed {
    /// The panel's first column in step 0's frame.
    pub base: *const f32,
    /// Each step's start, in floats from `base`.
    pub starts: *const usize,
}

impl Rows for Indexed {
    #[inline(always)]
    unsafe fn row(self, kk: usize) -> *const f32 {
        // SAFETY: the caller's step has a start, and its NR values are readable.
        unsafe { self.base.add(*self.starts.add(kk)) }
    }
}

/// Where a tile finds A's `MR` values of step `kk` (one per tile row).
pub trait Steps: Copy {
    /// The address of row `i`'s value at step `kk`.
    ///
    /// # Safety
    /// `kk` is below the panel's step count and `i` below `MR`.
    unsafe fn at(self, kk: usize, i: usize) -> *const f32;
    /// The panel from row `r` on (`r < MR`); the rows it lacks at the end
    /// are never read.
    fn skip_rows(self, r: usize) -> Self;
    /// Hints that step `kk` will soon be read (a packed panel asks for it).
    #[inline(always)]
    fn prefetch(self, kk: usize) {
        let _ = kk;
    }
}

/// A packed A panel: step `kk`'s `MR` values at `kk·MR`.
#[derive(Clone, Copy, Debug)]
pub struct PackedA(pub *const f32);

impl Steps for PackedA {
    #[inline(always)]
    unsafe fn at(self, kk: usize, i: usize) -> *const f32 {
        // SAFETY: the caller's step and row are inside the panel.
        unsafe { self.0.add(kk * MR + i) }
    }
    #[inline(always)]
    fn skip_rows(self, r: usize) -> Self {
        PackedA(self.0.wrapping_add(r))
    }
    #[inline(always)]
    fn prefetch(self, kk: usize) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: prefetching is a hint and never faults.
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            _mm_prefetch::<_MM_HINT_T0>(self.0.wrapping_add(kk * MR) as *const i8)
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = kk;
    }
}

/// An A panel read where its rows lie: row `i`'s step `kk` at
/// `rows[i] + offsets[kk]` (im2col rows of a padded image, read in place).
#[derive(Clone, Copy, Debug)]
pub struct IndexedA {
    /// Each tile row's step-0 frame.
    pub rows: [*const f32; MR],
    /// Each step's offset, in floats from a row's frame.
    pub offsets: *const usize,
}

impl Steps for IndexedA {
    #[inline(always)]
    unsafe fn at(self, kk: usize, i: usize) -> *const f32 {
        // SAFETY: the caller's step has an offset, and every row's value is readable.
        unsafe { self.rows[i].add(*self.offsets.add(kk)) }
    }
    #[inline(always)]
    fn skip_rows(self, r: usize) -> Self {
        IndexedA {
            rows: std::array::from_fn(|i| self.rows[(i + r).min(MR - 1)]),
            ..self
        }
    }
}

/// What a tile's store does with what `C` held.
#[derive(Clone, Copy, Debug)]
pub enum Store<'a> {
    /// `C = A·B`.
    Overwrite,
    /// `C += A·B`.
    Add,
    /// `C = A·B + bias[row]` (`MR` values, one per tile row).
    Bias(&'a [f32]),
}

/// Whether this CPU runs kiln's tiles (AVX2 + FMA, see
/// [`crate::kernels::simd`]); where it does not, every product goes to the
/// `gemm` crate instead.
pub fn available() -> bool {
    cfg!(target_arch = "x86_64") && crate::kernels::simd::simd().avx2_fma
}

/// Computes one full tile into `c` (row stride `ldc`).
///
/// # Safety
/// [`available`]; `a` finds `kc` steps of `MR` floats, `b` finds `kc` steps
/// of `NR` floats, and `c` addresses `MR` rows of `NR` writable floats `ldc`
/// apart, not overlapping `a` or `b`.
#[inline]
pub unsafe fn tile<A: Steps, B: Rows>(
    kc: usize,
    a: A,
    b: B,
    c: *mut f32,
    ldc: usize,
    store: Store,
) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the caller's contract, the CPU's features included.
    unsafe {
        avx2::tile(kc, a, b, c, ldc, store)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (kc, a, b, c, ldc, store);
        unreachable!("kiln's GEMM tile runs only on x86-64 with AVX2 + FMA");
    }
}

/// Tiles at C's lower edge with at most this many rows use [`short_tile`].
pub const SHORT_ROWS: usize = 3;

/// A tile of `rows ≤ SHORT_ROWS` rows over two B panels side by side in C
/// (`2·NR` columns): C's lower edge, where a full tile would spend a whole
/// tile's time on rows that do not exist. A's rows past `rows` are not read.
///
/// # Safety
/// As [`tile`], for `rows` rows of `2·NR` columns of C and two B panels.
#[inline]
pub unsafe fn short_tile<A: Steps, B: Rows>(
    rows: usize,
    kc: usize,
    a: A,
    b: [B; 2],
    c: *mut f32,
    ldc: usize,
    store: Store,
) {
    debug_assert!((1..=SHORT_ROWS).contains(&rows));
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the caller's contract, the CPU's features included.
    unsafe {
        match rows {
            1 => avx2::short::<1, A, B>(kc, a, b, c, ldc, store),
            2 => avx2::short::<2, A, B>(kc, a, b, c, ldc, store),
            _ => avx2::short::<3, A, B>(kc, a, b, c, ldc, store),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (kc, a, b, c, ldc, store);
        unreachable!("kiln's GEMM tile runs only on x86-64 with AVX2 + FMA");
    }
}

/// Stores row `i` of a computed tile (`src`) into `dst` under `store`.
pub fn store_row(dst: &mut [f32], src: &[f32], store: Store, i: usize) {
    match store {
        Store::Overwrite => dst.copy_from_slice(&src[..dst.len()]),
        Store::Add => dst.iter_mut().zip(src).for_each(|(d, s)| *d += s),
        Store::Bias(bias) => dst.iter_mut().zip(src).for_each(|(d, s)| *d = s + bias[i]),
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Rows, Steps, Store, MR, NR};
    use std::arch::x86_64::*;

    /// The AVX2 + FMA tile (see [`super::tile`]).
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn tile<A: Steps, B: Rows>(
        kc: usize,
        a: A,
        b: B,
        c: *mut f32,
        ldc: usize,
        store: Store,
    ) {
        // C's rows are far apart (often a multiple of 4 KiB): ask for them now
        // so that the store at the end does not wait on them.
        for i in 0..MR {
            // SAFETY: prefetching is a hint; the addresses are the tile's own.
            unsafe {
                _mm_prefetch::<_MM_HINT_T0>(c.add(i * ldc) as *const i8);
                _mm_prefetch::<_MM_HINT_T0>(c.add(i * ldc + NR - 1) as *const i8);
            }
        }
        let mut acc = [[_mm256_setzero_ps(); 2]; MR];
        for kk in 0..kc {
            // SAFETY: `kk` counts the steps, inside the `kc`-step panels the
            // caller guarantees.
            unsafe {
                a.prefetch(kk + 8);
                let b = b.row(kk);
                let b0 = _mm256_loadu_ps(b);
                let b1 = _mm256_loadu_ps(b.add(8));
                for (i, r) in acc.iter_mut().enumerate() {
                    let ai = _mm256_broadcast_ss(&*a.at(kk, i));
                    r[0] = _mm256_fmadd_ps(ai, b0, r[0]);
                    r[1] = _mm256_fmadd_ps(ai, b1, r[1]);
                }
            }
        }
        for (i, r) in acc.iter().enumerate() {
            // SAFETY: row i of the tile is inside `c` by the caller's contract.
            unsafe { store_row(c.add(i * ldc), r, store, i) };
        }
    }

    /// Stores row `i` of a tile, `vs.len()` vectors from `row` on, under `store`.
    ///
    /// # Safety
    /// `row` addresses `8·vs.len()` writable floats.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn store_row(row: *mut f32, vs: &[__m256], store: Store, i: usize) {
        for (v, &x) in vs.iter().enumerate() {
            // SAFETY: the caller's row.
            unsafe {
                let at = row.add(v * 8);
                let y = match store {
                    Store::Overwrite => x,
                    Store::Add => _mm256_add_ps(x, _mm256_loadu_ps(at)),
                    Store::Bias(bias) => _mm256_add_ps(x, _mm256_set1_ps(bias[i])),
                };
                _mm256_storeu_ps(at, y);
            }
        }
    }

    /// The AVX2 + FMA short tile (see [`super::short_tile`]): `R` rows by
    /// four vectors (two panels), so `4·R` accumulators.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn short<const R: usize, A: Steps, B: Rows>(
        kc: usize,
        a: A,
        b: [B; 2],
        c: *mut f32,
        ldc: usize,
        store: Store,
    ) {
        let mut acc = [[_mm256_setzero_ps(); 4]; R];
        for kk in 0..kc {
            // SAFETY: `kk` counts the steps inside the caller's panels.
            unsafe {
                let (p, q) = (b[0].row(kk), b[1].row(kk));
                let bv = [
                    _mm256_loadu_ps(p),
                    _mm256_loadu_ps(p.add(8)),
                    _mm256_loadu_ps(q),
                    _mm256_loadu_ps(q.add(8)),
                ];
                for (i, r) in acc.iter_mut().enumerate() {
                    let ai = _mm256_broadcast_ss(&*a.at(kk, i));
                    for (r, &bv) in r.iter_mut().zip(&bv) {
                        *r = _mm256_fmadd_ps(ai, bv, *r);
                    }
                }
            }
        }
        for (i, r) in acc.iter().enumerate() {
            // SAFETY: row i of the caller's 2·NR-wide tile.
            unsafe { store_row(c.add(i * ldc), r, store, i) };
        }
    }
}
