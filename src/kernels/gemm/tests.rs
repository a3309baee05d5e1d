//! Tests of the GEMM and its packing.
use super::*;

/// The textbook triple loop.
fn reference(m: usize, k: usize, n: usize, a: &MatRef, b: &MatRef) -> Vec<f32> {
    let mut c = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            c[i * n + j] = (0..k).map(|p| a.at(i, p) * b.at(p, j)).sum();
        }
    }
    c
}

fn values(len: usize, seed: u32) -> Vec<f32> {
    (0..len)
        .map(|i| {
            ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 1000) as f32 / 500.0 - 1.0
        })
        .collect()
}

/// A row-major `B` that the tiles read in place, except every third
/// panel, which says its columns are not side by side (so is packed).
struct InPlaceB<'a>(MatRef<'a>);

impl PackB for InPlaceB<'_> {
    fn pack(&self, k0: usize, kc: usize, n0: usize, nc: usize, dst: &mut [f32]) {
        PackB::pack(&self.0, k0, kc, n0, nc, dst)
    }
    fn reads_in_place(&self) -> bool {
        true
    }
    fn row_starts(&self, k0: usize, starts: &mut [usize]) {
        for (kk, s) in starts.iter_mut().enumerate() {
            *s = (k0 + kk) * self.0.row_stride;
        }
    }
    fn panel_start(&self, j0: usize) -> Option<usize> {
        (j0 / NR % 3 != 1).then_some(j0)
    }
    fn source(&self) -> &[f32] {
        self.0.data
    }
}

/// A row-major `A` that the tiles read in place, its source cut to
/// `reach` floats so that the blocks of rows past it are packed.
struct InPlaceA<'a>(MatRef<'a>, usize);

impl PackA for InPlaceA<'_> {
    fn fits(&self, m: usize, k: usize) -> bool {
        self.0.fits(m, k)
    }
    fn pack(&self, i0: usize, mc: usize, k0: usize, kc: usize, dst: &mut [f32]) {
        PackA::pack(&self.0, i0, mc, k0, kc, dst)
    }
    fn reads_in_place(&self) -> bool {
        true
    }
    fn row_starts(&self, i0: usize, starts: &mut [usize]) {
        for (i, s) in starts.iter_mut().enumerate() {
            *s = (i0 + i) * self.0.row_stride;
        }
    }
    fn step_offsets(&self, k0: usize, offsets: &mut [usize]) {
        for (kk, o) in offsets.iter_mut().enumerate() {
            *o = k0 + kk;
        }
    }
    fn source(&self) -> &[f32] {
        &self.0.data[..self.1]
    }
}

#[test]
fn reading_a_in_place_matches_the_triple_loop() {
    // last tiles of 1–5 rows (short tiles two panels at a time, edge
    // tiles), several inner blocks, and blocks of rows past the source's
    // reach that fall back to packing
    for &(m, k, n, reach) in &[
        (7, 3, 64, 21),
        (14, 300, 70, 14 * 300),
        (9, 600, 33, 9 * 600),
        (6, 16, 16, 96),
        (160, 20, 40, 100 * 20),
        (155, 5, 48, 155 * 5),
        (10, 7, 64, 70),
    ] {
        let (ad, bd) = (values(m * k, 1), values(k * n, 2));
        let (a, b) = (MatRef::new(&ad, m, k, false), MatRef::new(&bd, k, n, false));
        let want = reference(m, k, n, &a, &b);
        let mut c = vec![7f32; m * n];
        gemm(m, k, n, &InPlaceA(a, reach), &b, &mut c, n, Init::Add);
        for (at, (got, w)) in c.iter().zip(&want).enumerate() {
            let tol = 1e-4 * (1.0 + k as f32);
            assert!(
                (got - w - 7.0).abs() < tol,
                "{m}x{k}x{n} at {at}: {got} vs {w} + 7"
            );
        }
    }
}

#[test]
fn reading_b_in_place_matches_the_triple_loop() {
    // panels read in place and packed side by side, a ragged last panel,
    // last tiles of 1–3 rows, and an inner dimension over several blocks
    for &(m, k, n) in &[(7, 3, 64), (14, 300, 70), (9, 600, 33), (6, 16, 16)] {
        let (ad, bd) = (values(m * k, 1), values(k * n, 2));
        let (a, b) = (MatRef::new(&ad, m, k, false), MatRef::new(&bd, k, n, false));
        let want = reference(m, k, n, &a, &b);
        let bias = values(m, 3);
        let mut c = vec![7f32; m * n];
        gemm(m, k, n, &a, &InPlaceB(b), &mut c, n, Init::RowBias(&bias));
        for (at, (got, w)) in c.iter().zip(&want).enumerate() {
            let w = w + bias[at / n];
            let tol = 1e-4 * (1.0 + k as f32);
            assert!((got - w).abs() < tol, "{m}x{k}x{n} at {at}: {got} vs {w}");
        }
    }
}

#[test]
fn matches_the_triple_loop_for_every_layout_and_edge() {
    // sizes around the tile and block edges, including blocks split in k
    for &(m, k, n) in &[
        (1, 1, 1),
        (7, 3, 17),
        (6, 16, 16),
        (13, 300, 35),
        (150, 9, 530),
        (5, 0, 4),
        // last tiles of 2–5 rows (two panels at a time, 4 and 5 rows as
        // two short tiles, then a lone panel)
        (8, 40, 64),
        (9, 20, 70),
        (10, 7, 64),
        (11, 30, 48),
        (147, 5, 33),
    ] {
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            let (ad, bd) = (values(m * k, 1), values(k * n, 2));
            let (a, b) = (MatRef::new(&ad, m, k, ta), MatRef::new(&bd, k, n, tb));
            let want = reference(m, k, n, &a, &b);
            let ldc = n + 3;
            let mut c = vec![7f32; m * ldc];
            gemm(m, k, n, &a, &b, &mut c, ldc, Init::Overwrite);
            let bias = values(m, 3);
            let mut cb = vec![7f32; m * ldc];
            gemm(m, k, n, &a, &b, &mut cb, ldc, Init::RowBias(&bias));
            let mut ca = vec![0.5f32; m * ldc];
            gemm(m, k, n, &a, &b, &mut ca, ldc, Init::Add);
            for i in 0..m {
                for j in 0..ldc {
                    let at = i * ldc + j;
                    if j >= n {
                        assert_eq!(
                            (c[at], cb[at], ca[at]),
                            (7.0, 7.0, 0.5),
                            "padding column touched"
                        );
                        continue;
                    }
                    let w = want[i * n + j];
                    let tol = 1e-4 * (1.0 + k as f32);
                    assert!(
                        (c[at] - w).abs() < tol,
                        "{m}x{k}x{n} {ta} {tb} ({i},{j}): {} vs {w}",
                        c[at]
                    );
                    assert!((cb[at] - w - bias[i]).abs() < tol, "bias ({i},{j})");
                    assert!((ca[at] - w - 0.5).abs() < tol, "accumulate ({i},{j})");
                }
            }
        }
    }
}

#[test]
fn a_view_whose_last_offset_overflows_does_not_fit() {
    let data = [1.0f32; 8];
    // 3 · stride wraps to 2 in usize: the unchecked sum would say it fits
    let stride = (1u128 << 64).div_ceil(3);
    let a = MatRef {
        data: &data,
        row_stride: stride as usize,
        col_stride: 1,
    };
    assert!(!a.fits(4, 3));
    // strides past isize never fit (the gemm crate takes them signed)
    let b = MatRef {
        data: &data,
        row_stride: usize::MAX / 2 + 1,
        col_stride: 1,
    };
    assert!(!b.fits(1, 1) && b.fits(0, 3));
    assert!(MatRef::new(&data, 2, 4, false).fits(2, 4));
    assert!(!MatRef::new(&data, 3, 3, false).fits(3, 3));
}

#[test]
fn a_column_major_b_gives_the_bits_of_the_same_b_stored_row_major() {
    // B column-major is transposed into scratch before the crate's product:
    // the same sums, so the same bits, for products on one and on several
    // threads, overwriting and accumulating, and for a B that is a
    // sub-matrix view (its columns further apart than k); a single row of
    // A takes the crate's column-by-column path, equal within rounding
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    for &(m, k, n, gap) in &[
        (1, 1, 2, 0),
        (1, 300, 7, 3),
        (32, 128, 128, 0),
        (7, 33, 19, 5),
        (3, 700, 9, 1),
        (65, 64, 300, 0),
    ] {
        let a = values(m * k, 4);
        let rows = values(k * n, 5); // B row-major
        let mut cols = vec![f32::NAN; n * (k + gap)]; // B column-major, gaps NaN
        for p in 0..k {
            for j in 0..n {
                cols[j * (k + gap) + p] = rows[p * n + j];
            }
        }
        let a = MatRef::new(&a, m, k, false);
        let by_rows = MatRef::new(&rows, k, n, false);
        let by_cols = MatRef {
            data: &cols,
            row_stride: 1,
            col_stride: k + gap,
        };
        for threads in [1, 2] {
            for init in [Init::Overwrite, Init::Add] {
                let run = |b: MatRef| {
                    let mut c = values(m * n, 6);
                    // SAFETY: both operands fit, `c` holds m rows of n.
                    pool.install(|| unsafe {
                        dense::product(m, k, n, a, b, c.as_mut_ptr(), n, init, threads)
                    });
                    c
                };
                let (got, want) = (run(by_cols), run(by_rows));
                let case = format!("{m}x{k}x{n}, gap {gap}, {threads} thread(s), {init:?}");
                if m == 1 {
                    for (g, w) in got.iter().zip(&want) {
                        assert!(
                            (g - w).abs() <= 1e-5 * (1.0 + w.abs()),
                            "{case}: {g} vs {w}"
                        );
                    }
                    continue;
                }
                let bits = |c: &[f32]| c.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&got), bits(&want), "{case}");
            }
        }
    }
}
