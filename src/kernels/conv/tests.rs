//! Tests of the convolution kernels.
use super::*;
use crate::kernels::im2col::geom;

fn values(len: usize, seed: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7919 + seed * 104729) % 997) as f32 / 498.0 - 1.0)
        .collect()
}

/// The three kernels on one thread and inside a pool of `threads`
/// (images split into position ranges when they are fewer than threads).
fn run_all(d: &ConvDims, threads: Option<usize>) -> [Vec<f32>; 3] {
    let (k, l, plane, cg, _) = d.sizes();
    let x = values(d.n * d.cin * plane, 1);
    let w = values(d.cout * cg * k, 2);
    let gy = values(d.n * d.cout * l, 3);
    let bias = values(d.cout, 4);
    let mut y = vec![f32::NAN; d.n * d.cout * l];
    let mut dw = vec![f32::NAN; w.len()];
    let mut dx = vec![f32::NAN; x.len()];
    let go = || {
        conv_forward(d, &x, &w, Some(&bias), &mut y, &|_, _| {});
        conv_kernel_grad(d, &x, &gy, &mut dw);
        conv_input_grad(d, &w, &gy, &mut dx);
    };
    match threads {
        None => par::sequential(go),
        Some(t) => rayon::ThreadPoolBuilder::new()
            .num_threads(t)
            .build()
            .unwrap()
            .install(go),
    }
    [y, dw, dx]
}

/// Both gradients by visiting every (output, window tap) pair:
/// `dx` scatters `w · gy` back through the window, `dw` sums `x · gy`.
fn grads_by_windows(d: &ConvDims, x: &[f32], w: &[f32], gy: &[f32]) -> [Vec<f32>; 2] {
    let (k, l, plane, cg, og) = d.sizes();
    let g = &d.geom;
    let (_, ow) = g.out();
    let mut dx = vec![0f32; d.n * d.cin * plane];
    let mut dw = vec![0f32; w.len()];
    for n in 0..d.n {
        for o in 0..d.cout {
            for p in 0..l {
                let v = gy[(n * d.cout + o) * l + p];
                for c in 0..cg {
                    for cell in 0..k {
                        let (ki, kj) = (cell / g.kernel[1], cell % g.kernel[1]);
                        let y = (p / ow * g.stride[0] + ki * g.dilation[0]) as isize;
                        let xx = (p % ow * g.stride[1] + kj * g.dilation[1]) as isize;
                        let (y, xx) = (y - g.pad[0] as isize, xx - g.pad[1] as isize);
                        if y < 0 || xx < 0 || y >= g.h as isize || xx >= g.w as isize {
                            continue;
                        }
                        let ci = o / og * cg + c;
                        let at = (n * d.cin + ci) * plane + y as usize * g.w + xx as usize;
                        let wi = (o * cg + c) * k + cell;
                        dx[at] += w[wi] * v;
                        dw[wi] += x[at] * v;
                    }
                }
            }
        }
    }
    [dx, dw]
}

#[test]
fn gradients_match_the_window_loops() {
    let geoms = [
        // stride 1: dx is a forward convolution of gy with the flipped
        // kernel; dw's columns come from the padded image in 8 × 8 blocks
        geom([3, 3], [1, 1], [1, 1], [1, 1], [5, 16]),
        geom([3, 3], [1, 1], [1, 1], [1, 1], [3, 21]),
        geom([3, 2], [1, 1], [2, 0], [2, 1], [6, 7]),
        geom([1, 1], [1, 1], [0, 0], [1, 1], [4, 5]),
        // padding wider than the kernel, and stride 2: GEMM and col2im
        geom([1, 3], [1, 1], [1, 2], [1, 1], [4, 6]),
        geom([3, 3], [2, 2], [1, 1], [1, 1], [7, 8]),
    ];
    for geom in geoms {
        for groups in [1, 2] {
            let d = ConvDims {
                n: 2,
                cin: 4,
                cout: 6,
                groups,
                geom,
            };
            let (k, l, plane, cg, _) = d.sizes();
            let x = values(d.n * d.cin * plane, 1);
            let w = values(d.cout * cg * k, 2);
            let gy = values(d.n * d.cout * l, 3);
            let want = grads_by_windows(&d, &x, &w, &gy);
            let mut dx = vec![f32::NAN; x.len()];
            conv_input_grad(&d, &w, &gy, &mut dx);
            let mut dw = vec![f32::NAN; w.len()];
            conv_kernel_grad(&d, &x, &gy, &mut dw);
            for (what, got, want) in [("dx", &dx, &want[0]), ("dw", &dw, &want[1])] {
                for (i, (p, q)) in got.iter().zip(want).enumerate() {
                    assert!(
                        (p - q).abs() <= 1e-4 * (1.0 + q.abs()),
                        "{what}[{i}] {p} vs {q}: groups {groups} {geom:?}"
                    );
                }
            }
        }
    }
}

/// `PackA::pack` of `a` (an `m × k` view) against `want(row, step)`,
/// over a block that starts past row and step 0 and ends ragged.
fn check_pack_a(a: &impl PackA, m: usize, k: usize, want: impl Fn(usize, usize) -> f32) {
    let (i0, k0) = (1, 2);
    let (mc, kc) = (m - i0, k - k0 - 1);
    let tiles = mc.div_ceil(MR);
    let mut dst = vec![f32::NAN; tiles * kc * MR];
    a.pack(i0, mc, k0, kc, &mut dst);
    for ii in 0..tiles * MR {
        for kk in 0..kc {
            let got = dst[(ii / MR) * kc * MR + kk * MR + ii % MR];
            let want = if ii < mc { want(i0 + ii, k0 + kk) } else { 0.0 };
            assert_eq!(got, want, "row {ii} step {kk}");
        }
    }
}

#[test]
fn columns_pack_as_left_operands_like_im2col() {
    use crate::kernels::im2col::im2col;
    // padded (also read in place) and strided (always packed)
    for geom in [
        geom([3, 3], [1, 1], [1, 1], [1, 1], [5, 7]),
        geom([2, 3], [2, 1], [0, 2], [1, 2], [8, 9]),
    ] {
        let cin = 2;
        let (k, l, plane) = (geom.cells(), geom.positions(), geom.h * geom.w);
        let image = values(cin * plane, 5);
        let mut cols = vec![0f32; cin * k * l];
        for (x, c) in image.chunks_exact(plane).zip(cols.chunks_exact_mut(k * l)) {
            im2col(&geom, x, c);
        }
        Columns::with(&geom, &image, 0, |c| {
            check_pack_a(&c, cin * k, l, |r, p| cols[r * l + p]);
            if c.padded {
                check_pack_a(&ColumnsT(c), l, cin * k, |p, r| cols[r * l + p]);
            }
        });
    }
}

#[test]
fn threads_and_position_splits_give_the_one_thread_results() {
    let geoms = [
        geom([3, 3], [1, 1], [1, 1], [1, 1], [9, 23]),
        geom([3, 3], [1, 1], [1, 1], [1, 1], [5, 16]), // B read in place
        geom([2, 3], [2, 1], [0, 2], [1, 2], [8, 17]),
        geom([1, 1], [1, 1], [0, 0], [1, 1], [6, 11]),
    ];
    for geom in geoms {
        for (n, groups) in [(1, 1), (2, 2), (5, 1)] {
            let d = ConvDims {
                n,
                cin: 4,
                cout: 6,
                groups,
                geom,
            };
            let one = run_all(&d, None);
            for threads in [2, 3, 4] {
                let many = run_all(&d, Some(threads));
                for (what, (a, b)) in ["y", "dw", "dx"].iter().zip(one.iter().zip(&many)) {
                    for (i, (p, q)) in a.iter().zip(b).enumerate() {
                        assert!(
                            (p - q).abs() <= 1e-4 * (1.0 + p.abs()),
                            "{what}[{i}] {p} vs {q}: n {n} groups {groups} threads {threads} {geom:?}"
                        );
                    }
                }
            }
        }
    }
}
