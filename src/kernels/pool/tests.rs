//! Pooling kernels against window-by-window loops.

use super::*;

/// The bit patterns of `v`: equal exactly when the floats are identical
/// (NaN payloads and signed zeros included).
fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|v| v.to_bits()).collect()
}

/// 2x2 stride-2 windows over an `h × w` plane, no padding.
fn geom_2x2(h: usize, w: usize) -> PoolGeom {
    PoolGeom::new(
        [2, 2],
        [2, 2],
        [1, 1],
        [(0, 0), (0, 0)],
        [h, w],
        [h / 2, w / 2],
    )
}

/// The closed-form tap ranges and counts equal the tap-by-tap definitions
/// (first tap at or after the plane's start; first at or past its end;
/// taps inside the input grown by the leading padding on both sides).
#[test]
fn closed_form_taps_and_counts_equal_the_tap_walks() {
    let mut checked = 0;
    for (k, d, s, pad, size) in (1..5).flat_map(|k| {
        (1..4).flat_map(move |d| {
            (1..4).flat_map(move |s| (0..4).flat_map(move |p| (1..7).map(move |n| (k, d, s, p, n))))
        })
    }) {
        let g = PoolGeom::new(
            [1, k],
            [1, s],
            [1, d],
            [(0, 0), (pad, pad)],
            [1, size],
            [1, (size + 2 * pad) / s + 1],
        );
        for o in 0..g.out[1] {
            let start = (o * s) as isize - pad as isize;
            let at = |i: usize| start + (i * d) as isize;
            let lo = (0..k).find(|&i| at(i) >= 0).unwrap_or(k);
            let hi = (lo..k).find(|&i| at(i) >= size as isize).unwrap_or(k);
            assert_eq!(g.taps(1, o), (lo, hi.max(lo), start), "{g:?} o={o}");
            let padded = (0..k).filter(|&i| o * s + i * d < size + 2 * pad).count();
            assert_eq!(g.count(1, o, Divide::PaddedInput), padded, "{g:?} o={o}");
            checked += 1;
        }
    }
    assert!(checked > 1000);
}

/// A window of −0.0s averages to +0.0 on every path (2x2 rows, the
/// general interior loop, edge windows), as the reduction it stands for
/// sums from +0.0; a −0.0 maximum stays −0.0.
#[test]
fn windows_of_negative_zeros_average_to_positive_zero() {
    let two = geom_2x2(4, 20);
    let three = PoolGeom::new([3, 3], [1, 1], [1, 1], [(1, 1), (1, 1)], [4, 20], [4, 20]);
    for g in [two, three] {
        let x = vec![-0.0f32; g.plane()];
        let mut avg = vec![9.0; g.out_len()];
        avg_pool(&g, Divide::RealCells, &x, &mut avg);
        assert_eq!(bits(&avg), bits(&vec![0.0; g.out_len()]), "{g:?}");
        let mut max = vec![9.0; g.out_len()];
        max_pool_values(&g, &x, &mut max);
        assert_eq!(bits(&max), bits(&vec![-0.0; g.out_len()]), "{g:?}");
    }
}

/// Each window's maximum in row-major order by PyTorch's rule (a larger
/// value or any NaN replaces the maximum so far: the last NaN wins), by
/// comparing every cell in turn.
fn window_loop(g: &PoolGeom, x: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let (mut values, mut indices) = (vec![], vec![]);
    for oh in 0..g.out[0] {
        for ow in 0..g.out[1] {
            let mut best: Option<(f32, usize)> = None;
            for (r, c) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                let i = (2 * oh + r) * g.size[1] + 2 * ow + c;
                let v = x[i];
                let better = match best {
                    None => true,
                    Some((b, _)) => v > b || v.is_nan(),
                };
                if better {
                    best = Some((v, i));
                }
            }
            let (v, i) = best.unwrap();
            values.push(v);
            indices.push(i as f32);
        }
    }
    (values, indices)
}

#[test]
fn two_by_two_pooling_matches_window_loops_for_every_row_width() {
    // output rows of 1 to 19 windows: whole groups of eight, the masked
    // last group, and both; ties, NaN, −∞ and signed zeros
    let cells = [
        3.0,
        3.0,
        -0.0,
        0.0,
        f32::NAN,
        -1.0,
        f32::NEG_INFINITY,
        2.0,
        7.0,
    ];
    let (mut late_nans, mut two_nans) = (0, 0);
    for ow in 1..20 {
        let g = geom_2x2(6, 2 * ow);
        let x: Vec<f32> = (0..g.plane())
            .map(|i| cells[(i.wrapping_mul(2_654_435_761) >> 11) % cells.len()])
            .collect();
        // a NaN after an ordered first cell: only "NaN wins" makes it the maximum
        late_nans += (0..g.out_len())
            .filter(|&o| {
                let first = (o / ow) * 4 * ow + 2 * (o % ow);
                let win = [first, first + 1, first + 2 * ow, first + 2 * ow + 1];
                !x[win[0]].is_nan() && win.iter().any(|&i| x[i].is_nan())
            })
            .count();
        // two NaNs in a window: the last one is the maximum
        two_nans += (0..g.out_len())
            .filter(|&o| {
                let first = (o / ow) * 4 * ow + 2 * (o % ow);
                let win = [first, first + 1, first + 2 * ow, first + 2 * ow + 1];
                win.iter().filter(|&&i| x[i].is_nan()).count() > 1
            })
            .count();
        let (want_v, want_i) = window_loop(&g, &x);
        let (mut v, mut i) = (vec![9.0; g.out_len()], vec![9.0; g.out_len()]);
        max_pool(&g, &x, &mut v, &mut i);
        assert_eq!(bits(&v), bits(&want_v), "values, {ow} windows a row");
        assert_eq!(i, want_i, "indices, {ow} windows a row");
        let mut alone = vec![9.0; g.out_len()];
        max_pool_values(&g, &x, &mut alone);
        assert_eq!(
            bits(&alone),
            bits(&want_v),
            "values alone, {ow} windows a row"
        );
        // the average sums the four cells in row-major order, then scales
        let x: Vec<f32> = x
            .iter()
            .map(|v| if v.is_finite() { v + 0.1 } else { 0.3 })
            .collect();
        let mut avg = vec![9.0; g.out_len()];
        avg_pool(&g, Divide::Window, &x, &mut avg);
        let want: Vec<f32> = (0..g.out_len())
            .map(|o| {
                let first = (o / ow) * 4 * ow + 2 * (o % ow);
                let (t, b) = (&x[first..], &x[first + 2 * ow..]);
                (t[0] + t[1] + b[0] + b[1] + 0.0) * 0.25
            })
            .collect();
        assert_eq!(bits(&avg), bits(&want), "average, {ow} windows a row");
    }
    assert!(
        late_nans > 10 && two_nans > 3,
        "the inputs hold windows a NaN wins late ({late_nans}) and windows with two NaNs ({two_nans})"
    );
}

/// `gx` of max pooling's backward by the definition: zeros, then each
/// `gy[o]` added at `indices[o]` when that is a plane index.
fn scatter(plane: usize, gy: &[f32], indices: &[f32]) -> Vec<f32> {
    let mut gx = vec![0.0f32; plane];
    for (&g, &i) in gy.iter().zip(indices) {
        if i >= 0.0 && (i as usize) < plane {
            gx[i as usize] += g;
        }
    }
    gx
}

#[test]
fn tiled_two_by_two_average_backward_equals_the_window_loop() {
    for ow in 1..20 {
        let g = geom_2x2(4, 2 * ow);
        let gy: Vec<f32> = (0..g.out_len())
            .map(|o| [1.5, -0.0, f32::NAN, -2.25, 0.1][o % 5])
            .collect();
        let mut gx = vec![7.0; g.plane()];
        avg_pool_backward(&g, Divide::RealCells, &gy, &mut gx);
        // every cell: zero plus its window's gradient over four
        let want: Vec<f32> = (0..g.plane())
            .map(|i| 0.0 + gy[(i / (2 * g.size[1])) * ow + (i % g.size[1]) / 2] * 0.25)
            .collect();
        assert_eq!(bits(&gx), bits(&want), "{ow} windows a row");
    }
}

#[test]
fn tiled_two_by_two_backward_equals_the_scatter() {
    for ow in 1..20 {
        let g = geom_2x2(4, 2 * ow);
        let x: Vec<f32> = (0..g.plane())
            .map(|i| ((i.wrapping_mul(2_654_435_761) >> 11) % 5) as f32)
            .collect();
        let (mut v, mut idx) = (vec![0.0; g.out_len()], vec![0.0; g.out_len()]);
        max_pool(&g, &x, &mut v, &mut idx);
        // −0.0 and NaN gradients: the scatter adds them to +0.0
        let gy: Vec<f32> = (0..g.out_len())
            .map(|o| [1.5, -0.0, f32::NAN, -2.0][o % 4])
            .collect();
        let mut gx = vec![7.0; g.plane()];
        max_pool_backward(&g, &gy, &idx, &mut gx);
        assert_eq!(
            bits(&gx),
            bits(&scatter(g.plane(), &gy, &idx)),
            "{ow} windows a row"
        );
        // an index outside its window (or the plane) takes the scatter
        for bad in [idx[0] + 2.0, g.plane() as f32, -1.0] {
            let mut odd = idx.clone();
            let last = odd.len() - 1;
            odd[last] = bad;
            let mut gx = vec![7.0; g.plane()];
            max_pool_backward(&g, &gy, &odd, &mut gx);
            assert_eq!(
                bits(&gx),
                bits(&scatter(g.plane(), &gy, &odd)),
                "{ow}, index {bad}"
            );
        }
    }
}
