//! Forward checks of every layer against direct nested-loop implementations
//! written here (independent of the kernels and graphs under test).

mod common;
use common::*;
use kiln::nn::{self, Layer};
use kiln::{Graph, OpBuilder, Tensor};

struct ConvCfg {
    n: usize,
    cin: usize,
    cout: usize,
    size: Vec<usize>,
    k: Vec<usize>,
    s: Vec<usize>,
    p: Vec<usize>,
    d: Vec<usize>,
    groups: usize,
    bias: bool,
}

/// Direct 2-D convolution (PyTorch semantics).
fn conv2d_direct(x: &Tensor, w: &Tensor, b: Option<&Tensor>, c: &ConvCfg) -> Tensor {
    let (h, wd) = (c.size[0], c.size[1]);
    let oh = (h + 2 * c.p[0] - c.d[0] * (c.k[0] - 1) - 1) / c.s[0] + 1;
    let ow = (wd + 2 * c.p[1] - c.d[1] * (c.k[1] - 1) - 1) / c.s[1] + 1;
    let (cg, og) = (c.cin / c.groups, c.cout / c.groups);
    let mut out = Tensor::zeros([c.n, c.cout, oh, ow]);
    for n in 0..c.n {
        for co in 0..c.cout {
            let grp = co / og;
            for y in 0..oh {
                for xo in 0..ow {
                    let mut acc = b.map_or(0.0, |b| b.data()[co] as f64);
                    for ci in 0..cg {
                        for i in 0..c.k[0] {
                            for j in 0..c.k[1] {
                                let iy = (y * c.s[0] + i * c.d[0]) as isize - c.p[0] as isize;
                                let ix = (xo * c.s[1] + j * c.d[1]) as isize - c.p[1] as isize;
                                if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                    continue;
                                }
                                let xv = x
                                    .get(&[n, grp * cg + ci, iy as usize, ix as usize])
                                    .unwrap();
                                acc += (xv * w.get(&[co, ci, i, j]).unwrap()) as f64;
                            }
                        }
                    }
                    out.set(&[n, co, y, xo], acc as f32).unwrap();
                }
            }
        }
    }
    out
}

/// Direct 1-D convolution (PyTorch semantics).
fn conv1d_direct(x: &Tensor, w: &Tensor, b: Option<&Tensor>, c: &ConvCfg) -> Tensor {
    let l = c.size[0];
    let ol = (l + 2 * c.p[0] - c.d[0] * (c.k[0] - 1) - 1) / c.s[0] + 1;
    let (cg, og) = (c.cin / c.groups, c.cout / c.groups);
    let mut out = Tensor::zeros([c.n, c.cout, ol]);
    for n in 0..c.n {
        for co in 0..c.cout {
            for o in 0..ol {
                let mut acc = b.map_or(0.0, |b| b.data()[co]);
                for ci in 0..cg {
                    for t in 0..c.k[0] {
                        let i = (o * c.s[0] + t * c.d[0]) as isize - c.p[0] as isize;
                        if i >= 0 && i < l as isize {
                            acc += x.get(&[n, (co / og) * cg + ci, i as usize]).unwrap()
                                * w.get(&[co, ci, t]).unwrap();
                        }
                    }
                }
                out.set(&[n, co, o], acc).unwrap();
            }
        }
    }
    out
}

fn check_conv(c: ConvCfg) {
    let mut xshape = vec![c.n, c.cin];
    xshape.extend(&c.size);
    let x = rand(&xshape, 11);
    let mut g = Graph::with_seed(3);
    let xi = g.input("x", xshape.clone()).unwrap();
    let y = if c.size.len() == 2 {
        nn::Conv2d::new(c.cin, c.cout, 1)
            .kernel([c.k[0], c.k[1]])
            .strides([c.s[0], c.s[1]])
            .paddings([c.p[0], c.p[1]])
            .dilation(c.d[0])
            .groups(c.groups)
            .bias(c.bias)
            .name("conv")
            .build(&mut g, xi)
            .unwrap()
    } else {
        nn::Conv1d::new(c.cin, c.cout, c.k[0])
            .stride(c.s[0])
            .padding(c.p[0])
            .dilation(c.d[0])
            .groups(c.groups)
            .bias(c.bias)
            .name("conv")
            .build(&mut g, xi)
            .unwrap()
    };
    let got = eval(&g, y, &[("x", &x)]);
    let w = g.param_value("conv.weight").unwrap();
    assert_eq!(
        w.shape()[..2],
        [c.cout, c.cin / c.groups],
        "weight is [Cout, Cin/groups, ...]"
    );
    let b = g.param_value("conv.bias");
    assert_eq!(b.is_some(), c.bias);
    let want = if c.size.len() == 2 {
        conv2d_direct(&x, w, b, &c)
    } else {
        conv1d_direct(&x, w, b, &c)
    };
    assert_eq!(got.shape(), want.shape());
    assert_close(got.data(), want.data(), 1e-5);
}

#[test]
fn conv2d_matches_direct_loops_over_strides_paddings_dilations_groups() {
    let cfgs = [
        (2, 3, 4, [5, 5], [3, 3], [1, 1], [1, 1], 1, 1, true),
        (1, 4, 6, [7, 6], [3, 2], [2, 1], [0, 1], 1, 2, true),
        (2, 2, 2, [9, 7], [3, 3], [2, 2], [2, 2], 2, 1, false),
        (1, 6, 4, [6, 5], [2, 3], [1, 2], [1, 0], 1, 2, true),
        (1, 4, 4, [5, 5], [3, 3], [1, 1], [1, 1], 1, 4, true), // depthwise
        (3, 1, 3, [4, 4], [4, 4], [1, 1], [0, 0], 1, 1, true), // kernel = input
        // output rows a multiple of 16 wide (the GEMM reads the padded image
        // in place); a last tile of 1 row; an inner dimension in two blocks
        (2, 3, 7, [3, 32], [3, 3], [1, 1], [1, 1], 1, 1, true),
        (1, 2, 8, [3, 16], [3, 3], [1, 1], [2, 2], 2, 1, false),
        (1, 30, 13, [2, 16], [3, 3], [1, 1], [1, 1], 1, 1, true),
        // other widths: the product computed transposed with the image read
        // in place (35 positions: a last tile of 5 rows over two panels),
        // and with fewer column rows than channels out (columns packed)
        (1, 4, 32, [5, 7], [3, 3], [1, 1], [1, 1], 1, 1, true),
        (2, 1, 16, [6, 7], [3, 3], [1, 1], [1, 1], 1, 1, true),
        (2, 4, 6, [7, 9], [3, 3], [1, 1], [2, 1], 2, 2, true),
    ];
    for (n, cin, cout, size, k, s, p, d, groups, bias) in cfgs {
        check_conv(ConvCfg {
            n,
            cin,
            cout,
            size: size.to_vec(),
            k: k.to_vec(),
            s: s.to_vec(),
            p: p.to_vec(),
            d: vec![d; 2],
            groups,
            bias,
        });
    }
}

#[test]
fn conv1d_matches_direct_loops_over_strides_paddings_dilations_groups() {
    let cfgs = [
        (2, 3, 5, 11, 3, 1, 1, 1, 1, true),
        (1, 4, 4, 10, 3, 2, 0, 1, 2, true),
        (2, 2, 6, 13, 2, 3, 2, 2, 2, false),
        (1, 3, 2, 7, 5, 1, 2, 1, 1, true),
        (1, 2, 2, 9, 3, 1, 2, 3, 1, true),
        (2, 5, 9, 48, 3, 1, 1, 1, 1, true), // read in place (48 = 3 panels)
    ];
    for (n, cin, cout, l, k, s, p, d, groups, bias) in cfgs {
        check_conv(ConvCfg {
            n,
            cin,
            cout,
            size: vec![l],
            k: vec![k],
            s: vec![s],
            p: vec![p],
            d: vec![d],
            groups,
            bias,
        });
    }
}

/// PyTorch's pooling output size.
fn pool_out(size: usize, k: usize, s: usize, p: usize, d: usize, ceil: bool) -> usize {
    let num = size + 2 * p - d * (k - 1) - 1;
    let mut o = if ceil { num.div_ceil(s) } else { num / s } + 1;
    if ceil && (o - 1) * s >= size + p {
        o -= 1;
    }
    o
}

fn maxpool_direct(x: &Tensor, k: usize, s: usize, p: usize, d: usize, ceil: bool) -> Tensor {
    let [n, c, h, w] = [x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]];
    let (oh, ow) = (pool_out(h, k, s, p, d, ceil), pool_out(w, k, s, p, d, ceil));
    let mut out = Tensor::zeros([n, c, oh, ow]);
    for (ni, ci, y, xo) in (0..n).flat_map(|a| {
        (0..c).flat_map(move |b| (0..oh).flat_map(move |y| (0..ow).map(move |x| (a, b, y, x))))
    }) {
        let mut m = f32::NEG_INFINITY;
        for i in 0..k {
            for j in 0..k {
                let iy = (y * s + i * d) as isize - p as isize;
                let ix = (xo * s + j * d) as isize - p as isize;
                if iy >= 0 && ix >= 0 && (iy as usize) < h && (ix as usize) < w {
                    m = m.max(x.get(&[ni, ci, iy as usize, ix as usize]).unwrap());
                }
            }
        }
        out.set(&[ni, ci, y, xo], m).unwrap();
    }
    out
}

fn avgpool_direct(
    x: &Tensor,
    k: usize,
    s: usize,
    p: usize,
    ceil: bool,
    include_pad: bool,
) -> Tensor {
    let [n, c, h, w] = [x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]];
    let (oh, ow) = (pool_out(h, k, s, p, 1, ceil), pool_out(w, k, s, p, 1, ceil));
    let mut out = Tensor::zeros([n, c, oh, ow]);
    for (ni, ci, y, xo) in (0..n).flat_map(|a| {
        (0..c).flat_map(move |b| (0..oh).flat_map(move |y| (0..ow).map(move |x| (a, b, y, x))))
    }) {
        let (hs, ws) = (
            (y * s) as isize - p as isize,
            (xo * s) as isize - p as isize,
        );
        let (he, we) = (
            (hs + k as isize).min((h + p) as isize),
            (ws + k as isize).min((w + p) as isize),
        );
        let pool_size = (he - hs) * (we - ws);
        let (hs, ws, he, we) = (hs.max(0), ws.max(0), he.min(h as isize), we.min(w as isize));
        let mut acc = 0.0;
        for iy in hs..he {
            for ix in ws..we {
                acc += x.get(&[ni, ci, iy as usize, ix as usize]).unwrap();
            }
        }
        let div = if include_pad {
            pool_size
        } else {
            (he - hs) * (we - ws)
        };
        out.set(&[ni, ci, y, xo], acc / div as f32).unwrap();
    }
    out
}

#[test]
fn maxpool2d_matches_direct_loops_with_padding_dilation_ceil_mode_and_ties() {
    let cases = [
        ([2, 3, 8, 8], 2, 2, 0, 1, false),
        ([1, 2, 7, 9], 3, 2, 1, 1, false),
        ([1, 2, 7, 7], 3, 2, 1, 1, true),
        ([1, 1, 6, 6], 3, 2, 0, 1, true),
        ([2, 2, 9, 8], 2, 1, 1, 2, false),
        ([1, 3, 5, 5], 2, 3, 1, 1, true),
    ];
    for (shape, k, s, p, d, ceil) in cases {
        let mut x = rand(&shape, 5);
        // make ties: round to a coarse grid, and relu-like zero runs
        x.data_mut()
            .iter_mut()
            .for_each(|v| *v = (*v * 2.0).round().max(0.0));
        let want = maxpool_direct(&x, k, s, p, d, ceil);
        // fused (MaxPoolWithIndices) and generic (unfold + reduce_max) forms
        for y in apply_both(&x, |g, xi| {
            nn::MaxPool2d::new(k)
                .stride(s)
                .padding(p)
                .dilation(d)
                .ceil_mode(ceil)
                .build(g, xi)
        }) {
            assert_eq!(
                y.shape(),
                want.shape(),
                "{shape:?} k{k} s{s} p{p} d{d} ceil {ceil}"
            );
            assert_eq!(y.data(), want.data());
        }
    }
    // PyTorch: MaxPool2d(3, stride=2, ceil_mode=True) maps 6x6 to 3x3 and 5x5 to 2x2
    let six = apply(&rand(&[1, 1, 6, 6], 1), |g, x| {
        nn::MaxPool2d::new(3).stride(2).ceil_mode(true).build(g, x)
    });
    assert_eq!(six.shape(), &[1, 1, 3, 3]);
    let five = apply(&rand(&[1, 1, 5, 5], 1), |g, x| {
        nn::MaxPool2d::new(3).stride(2).ceil_mode(true).build(g, x)
    });
    assert_eq!(five.shape(), &[1, 1, 2, 2]);
}

#[test]
fn avgpool2d_matches_direct_loops_and_pytorch_divisors() {
    let cases = [
        ([2, 3, 8, 8], 2, 2, 0, false, true),
        ([1, 2, 7, 9], 3, 2, 1, false, true),
        ([1, 2, 7, 9], 3, 2, 1, false, false),
        ([1, 2, 7, 7], 3, 2, 1, true, true),
        ([1, 2, 7, 7], 3, 2, 1, true, false),
        ([1, 1, 5, 6], 2, 2, 0, true, true),
    ];
    for (shape, k, s, p, ceil, inc) in cases {
        let x = rand(&shape, 9);
        let want = avgpool_direct(&x, k, s, p, ceil, inc);
        // fused (AvgPool) and generic (unfold + sum / count) forms
        for y in apply_both(&x, |g, xi| {
            nn::AvgPool2d::new(k)
                .stride(s)
                .padding(p)
                .ceil_mode(ceil)
                .count_include_pad(inc)
                .build(g, xi)
        }) {
            assert_eq!(
                y.shape(),
                want.shape(),
                "{shape:?} k{k} s{s} p{p} ceil {ceil} include_pad {inc}"
            );
            assert_close(y.data(), want.data(), 1e-6);
        }
    }
    // Hand-checked against PyTorch's documented divisor rules on 1..9 in a 3x3 image.
    let x = Tensor::from_vec([1, 1, 3, 3], (1..=9).map(|v| v as f32).collect()).unwrap();
    for ceil in apply_both(&x, |g, xi| {
        nn::AvgPool2d::new(2).ceil_mode(true).build(g, xi)
    }) {
        assert_eq!(ceil.data(), &[3.0, 4.5, 7.5, 9.0]);
    }
    for inc in apply_both(&x, |g, xi| nn::AvgPool2d::new(2).padding(1).build(g, xi)) {
        assert_eq!(inc.data(), &[0.25, 1.25, 2.75, 7.0]);
    }
    for exc in apply_both(&x, |g, xi| {
        nn::AvgPool2d::new(2)
            .padding(1)
            .count_include_pad(false)
            .build(g, xi)
    }) {
        assert_eq!(exc.data(), &[1.0, 2.5, 5.5, 7.0]);
    }
}

#[test]
fn global_avg_pool_flatten_reshape() {
    let x = rand(&[2, 3, 4, 5], 2);
    let gap = apply(&x, |g, xi| nn::GlobalAvgPool2d.build(g, xi));
    assert_eq!(gap.shape(), &[2, 3, 1, 1]);
    for n in 0..2 {
        for c in 0..3 {
            let mean: f32 = (0..20).map(|i| x.data()[(n * 3 + c) * 20 + i]).sum::<f32>() / 20.0;
            assert!((gap.get(&[n, c, 0, 0]).unwrap() - mean).abs() < 1e-6);
        }
    }
    let flat = apply(&x, |g, xi| nn::Flatten.build(g, xi));
    assert_eq!((flat.shape(), flat.data()), (&[2usize, 60][..], x.data()));
    let r = apply(&x, |g, xi| nn::Reshape(vec![-1, 5]).build(g, xi));
    assert_eq!(r.shape(), &[24, 5]);
}

#[test]
fn linear_computes_x_wt_plus_b() {
    let x = rand(&[3, 4], 4);
    let mut g = Graph::with_seed(1);
    let xi = g.input("x", [3, 4]).unwrap();
    let y = nn::Linear::new(4, 2).name("fc").build(&mut g, xi).unwrap();
    let got = eval(&g, y, &[("x", &x)]);
    let (w, b) = (
        g.param_value("fc.weight").unwrap(),
        g.param_value("fc.bias").unwrap(),
    );
    assert_eq!(w.shape(), &[2, 4]);
    let bound = 1.0 / 2.0; // 1/sqrt(in)
    assert!(w.data().iter().chain(b.data()).all(|v| v.abs() <= bound));
    for i in 0..3 {
        for o in 0..2 {
            let want: f32 = (0..4)
                .map(|k| x.get(&[i, k]).unwrap() * w.get(&[o, k]).unwrap())
                .sum::<f32>()
                + b.data()[o];
            assert!((got.get(&[i, o]).unwrap() - want).abs() < 1e-5);
        }
    }
}

#[test]
fn softmax_rows_with_nan_and_infinities_are_pytorchs() {
    // torch 2.15: torch.softmax / torch.log_softmax of these rows, along
    // the last axis and (transposed) along the first
    let (inf, nan) = (f32::INFINITY, f32::NAN);
    let rows = [
        0.0, nan, 1.0, -inf, -inf, -inf, inf, 0.0, 1.0, -inf, 0.0, 1.0,
    ];
    // rows 0-2 are NaN rows; row 3 is [-inf, 0, 1]
    let (mut want_sm, mut want_lsm) = ([nan; 12], [nan; 12]);
    want_sm[9..].copy_from_slice(&[0.0, 0.268_941_43, 0.731_058_6]);
    want_lsm[9..].copy_from_slice(&[-inf, -1.313_261_7, -0.313_261_7]);
    let x = t(&[4, 3], &rows);
    let xt: Vec<f32> = (0..12).map(|i| rows[(i % 4) * 3 + i / 4]).collect();
    let xt = t(&[3, 4], &xt);
    for (log, want) in [(false, want_sm), (true, want_lsm)] {
        let last = apply(&x, |g, xi| {
            if log {
                g.log_softmax(xi, -1)
            } else {
                g.softmax(xi, -1)
            }
        });
        let first = apply(&xt, |g, xi| {
            if log {
                g.log_softmax(xi, 0)
            } else {
                g.softmax(xi, 0)
            }
        });
        for (i, &w) in want.iter().enumerate() {
            let (a, b) = (last.data()[i], first.data()[(i % 3) * 4 + i / 3]);
            for v in [a, b] {
                assert!(
                    (v.is_nan() && w.is_nan()) || v == w || (v - w).abs() < 1e-6,
                    "log {log}, element {i}: {v} vs torch's {w}"
                );
            }
        }
    }
}

#[test]
fn softmax_of_a_scalar_is_one_as_pytorchs() {
    let x = t(&[], &[3.0]);
    assert_eq!(apply(&x, |g, xi| g.softmax(xi, 0)).data(), &[1.0]);
    assert_eq!(apply(&x, |g, xi| g.log_softmax(xi, -1)).data(), &[0.0]);
    assert_eq!(
        apply(&x, |g, xi| g.softmax(xi, -1)).shape(),
        &[] as &[usize]
    );
    let mut g = kiln::Graph::new();
    let s = g.input("s", [0usize; 0]).unwrap();
    assert!(g.softmax(s, 1).is_err());
}

#[test]
fn pools_refuse_what_pytorch_refuses() {
    let mut g = kiln::Graph::new();
    let x = g.input("x", [1, 0, 3, 3, 3]).unwrap();
    let e = nn::MaxPool3d::new(2)
        .build(&mut g, x)
        .unwrap_err()
        .to_string();
    assert!(e.contains("with C, D, H, W > 0"), "{e}");
    // padding is at most half the kernel, whatever the dilation
    let y = g.input("y", [1, 1, 10]).unwrap();
    let e = nn::MaxPool1d::new(3)
        .padding(2)
        .dilation(2)
        .build(&mut g, y)
        .unwrap_err()
        .to_string();
    assert!(e.contains("at most half the kernel [3]"), "{e}");
    let e = nn::LayerNorm::new(&[])
        .build(&mut g, y)
        .unwrap_err()
        .to_string();
    assert!(e.contains("at least one dimension"), "{e}");
}

#[test]
fn activations_and_softmax() {
    let x = t(&[2, 3], &[1.0, 2.0, 3.0, 1000.0, 1000.0, -1000.0]);
    let sm = apply(&x, |g, xi| nn::Softmax(1).build(g, xi));
    let e: Vec<f32> = [1.0f32, 2.0, 3.0].iter().map(|v| v.exp()).collect();
    let z: f32 = e.iter().sum();
    assert_close(&sm.data()[..3], &[e[0] / z, e[1] / z, e[2] / z], 1e-6);
    assert_close(&sm.data()[3..], &[0.5, 0.5, 0.0], 1e-6);
    let lsm = apply(&x, |g, xi| nn::LogSoftmax(-1).build(g, xi));
    assert_close(
        &lsm.data()[..3],
        &[(e[0] / z).ln(), (e[1] / z).ln(), (e[2] / z).ln()],
        1e-6,
    );
    assert_close(&lsm.data()[3..5], &[-std::f32::consts::LN_2; 2], 1e-6);
    assert!(
        lsm.data()[5].is_finite(),
        "log-softmax stays finite for very negative logits"
    );
    let sm0 = apply(&x, |g, xi| nn::Softmax(0).build(g, xi));
    assert_close(&sm0.data()[..3], &[0.0, 0.0, 1.0], 1e-6);
    let v = t(&[3], &[-1.0, 0.0, 2.0]);
    assert_eq!(
        apply(&v, |g, xi| nn::Relu.build(g, xi)).data(),
        &[0.0, 0.0, 2.0]
    );
    assert_close(
        apply(&v, |g, xi| nn::Tanh.build(g, xi)).data(),
        &[(-1.0f32).tanh(), 0.0, 2.0f32.tanh()],
        1e-6,
    );
    let sg = apply(&v, |g, xi| nn::Sigmoid.build(g, xi));
    assert_close(
        sg.data(),
        &[
            1.0 / (1.0 + 1.0f32.exp()),
            0.5,
            1.0 / (1.0 + (-2.0f32).exp()),
        ],
        1e-6,
    );
}

#[test]
fn dropout_layer_in_eval_mode_is_identity() {
    let x = rand(&[4, 8], 3);
    let y = apply(&x, |g, xi| nn::Dropout::new(0.5).build(g, xi));
    assert!(y == x);
}

fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + (-v).exp())
}

#[test]
fn lstm_matches_a_step_by_step_loop() {
    let (n, t_len, i_sz, h_sz) = (2, 3, 4, 5);
    let x = rand(&[n, t_len, i_sz], 8);
    let mut g = Graph::with_seed(2);
    let xi = g.input("x", [n, t_len, i_sz]).unwrap();
    let y = nn::Lstm::new(i_sz, h_sz)
        .name("lstm")
        .build(&mut g, xi)
        .unwrap();
    let got = eval(&g, y, &[("x", &x)]);
    assert_eq!(got.shape(), &[n, t_len, h_sz]);
    let p = |s: &str| g.param_value(&format!("lstm.{s}")).unwrap().clone();
    let (wih, whh, bih, bhh) = (
        p("weight_ih_l0"),
        p("weight_hh_l0"),
        p("bias_ih_l0"),
        p("bias_hh_l0"),
    );
    for b in 0..n {
        let (mut h, mut c) = (vec![0.0f32; h_sz], vec![0.0f32; h_sz]);
        for t in 0..t_len {
            let gate = |r: usize, h: &[f32]| {
                let mut a = bih.data()[r] + bhh.data()[r];
                for k in 0..i_sz {
                    a += wih.get(&[r, k]).unwrap() * x.get(&[b, t, k]).unwrap();
                }
                for (k, hk) in h.iter().enumerate() {
                    a += whh.get(&[r, k]).unwrap() * hk;
                }
                a
            };
            let mut nh = vec![0.0; h_sz];
            for u in 0..h_sz {
                let (ig, fg) = (sigmoid(gate(u, &h)), sigmoid(gate(h_sz + u, &h)));
                let (gg, og) = (
                    gate(2 * h_sz + u, &h).tanh(),
                    sigmoid(gate(3 * h_sz + u, &h)),
                );
                c[u] = fg * c[u] + ig * gg;
                nh[u] = og * c[u].tanh();
            }
            h = nh;
            for (u, hu) in h.iter().enumerate() {
                assert!(
                    (got.get(&[b, t, u]).unwrap() - hu).abs() < 1e-5,
                    "b{b} t{t} u{u}"
                );
            }
        }
    }
}

#[test]
fn sequential_chains_layers_and_names_parameters() {
    let x = rand(&[2, 1, 28, 28], 1);
    let mut g = Graph::with_seed(0);
    let xi = g.input("x", [2, 1, 28, 28]).unwrap();
    let y = kiln::models::cnn().build(&mut g, xi).unwrap();
    assert_eq!(g.shape(y).unwrap(), &[2, 10]);
    let names: Vec<&str> = g.params().map(|(n, _, _)| n).collect();
    assert_eq!(
        names,
        [
            "conv1.bias",
            "conv1.weight",
            "conv2.bias",
            "conv2.weight",
            "fc.bias",
            "fc.weight"
        ]
    );
    // the same network written out by hand gives the same logits
    let out = eval(&g, y, &[("x", &x)]);
    let mut h = Graph::with_seed(0);
    let hx = h.input("x", [2, 1, 28, 28]).unwrap();
    let mut v = hx;
    for l in [
        Box::new(nn::Conv2d::new(1, 16, 3).padding(1).name("conv1")) as Box<dyn Layer>,
        Box::new(nn::Relu),
        Box::new(nn::MaxPool2d::new(2)),
        Box::new(nn::Conv2d::new(16, 32, 3).padding(1).name("conv2")),
        Box::new(nn::Relu),
        Box::new(nn::MaxPool2d::new(2)),
        Box::new(nn::Flatten),
        Box::new(nn::Linear::new(1568, 10).name("fc")),
    ] {
        v = l.build(&mut h, v).unwrap();
    }
    assert!(eval(&h, v, &[("x", &x)]) == out);
}

/// `(x − mean)/√(var + eps)·w[c] + b[c]` over `groups` contiguous runs of
/// `x` (biased variance, in f64), channel `c` of element `i` being
/// `(i / inner) % channels`.
fn normalized_direct(
    x: &Tensor,
    groups: usize,
    eps: f64,
    (w, b): (&[f32], &[f32]),
    inner: usize,
) -> Vec<f32> {
    let run = x.numel() / groups;
    let mut out = Vec::with_capacity(x.numel());
    for (gi, group) in x.data().chunks(run).enumerate() {
        let n = group.len() as f64;
        let mean = group.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = group
            .iter()
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        for (j, &v) in group.iter().enumerate() {
            let c = ((gi * run + j) / inner) % w.len();
            let y = (v as f64 - mean) / (var + eps).sqrt() * w[c] as f64 + b[c] as f64;
            out.push(y as f32);
        }
    }
    out
}

#[test]
fn layer_norm_matches_pytorch_and_a_direct_loop() {
    // torch.nn.LayerNorm(4)(torch.tensor([1., 2., 3., 4.]))
    let y = apply(&t(&[1, 4], &[1.0, 2.0, 3.0, 4.0]), |g, x| {
        nn::LayerNorm::new(&[4]).build(g, x)
    });
    assert_close(
        y.data(),
        &[-1.3416355, -0.4472118, 0.4472118, 1.3416355],
        1e-6,
    );
    // over the last two axes, with a learned weight and bias
    let x = rand(&[2, 3, 4], 11);
    let mut g = Graph::with_seed(1);
    let xi = g.input("x", [2, 3, 4]).unwrap();
    let y = nn::LayerNorm::new(&[3, 4])
        .eps(1e-3)
        .name("ln")
        .build(&mut g, xi)
        .unwrap();
    let (w, b) = (rand(&[3, 4], 12), rand(&[3, 4], 13));
    g.set_param_value("ln.weight", w.clone()).unwrap();
    g.set_param_value("ln.bias", b.clone()).unwrap();
    let got = eval(&g, y, &[("x", &x)]);
    // weight and bias per element of the trailing [3, 4]: "channels" of 1
    let want = normalized_direct(&x, 2, 1e-3, (w.data(), b.data()), 1);
    assert_close(got.data(), &want, 1e-5);
    // without affine parameters: none are made
    let mut g = Graph::new();
    let xi = g.input("x", [2, 3, 4]).unwrap();
    let y = nn::LayerNorm::new(&[4])
        .elementwise_affine(false)
        .build(&mut g, xi)
        .unwrap();
    assert_eq!(g.params().count(), 0);
    let ones = vec![1.0; 4];
    let want = normalized_direct(&x, 6, 1e-5, (&ones, &[0.0; 4]), 1);
    assert_close(eval(&g, y, &[("x", &x)]).data(), &want, 1e-5);
    // a NaN spoils its own row only
    let mut data = x.data().to_vec();
    data[5] = f32::NAN;
    let got = apply(&Tensor::from_vec(vec![2, 3, 4], data).unwrap(), |g, x| {
        nn::LayerNorm::new(&[4]).build(g, x)
    });
    // a constant row normalises to exactly 0, however large (PyTorch's
    // Welford mean is exact there; an f32 mean alone left ±0.3..1)
    for v in [12345.6f32, 100000.3, 126745704.0, 10.3] {
        let y = apply(&Tensor::full([2, 5], v), |g, x| {
            nn::LayerNorm::new(&[5]).build(g, x)
        });
        assert!(y.data().iter().all(|&o| o == 0.0), "{v}: {y:?}");
        let y = apply(&Tensor::full([1, 5, 2], v), |g, x| {
            nn::GroupNorm::new(1, 5).build(g, x)
        });
        assert!(y.data().iter().all(|&o| o == 0.0), "{v}: {y:?}");
    }
    let nan_rows: Vec<bool> = got
        .data()
        .chunks(4)
        .map(|r| r.iter().all(|v| v.is_nan()))
        .collect();
    assert_eq!(nan_rows, [false, true, false, false, false, false]);
}

#[test]
fn group_norm_matches_a_direct_loop_and_compiled_equals_unrewritten() {
    let x = rand(&[2, 6, 3, 2], 21);
    for (groups, affine) in [(3, true), (1, true), (6, false)] {
        let mut g = Graph::with_seed(1);
        let xi = g.input("x", [2, 6, 3, 2]).unwrap();
        let y = nn::GroupNorm::new(groups, 6)
            .affine(affine)
            .name("gn")
            .build(&mut g, xi)
            .unwrap();
        let (mut w, mut b) = (vec![1.0; 6], vec![0.0; 6]);
        if affine {
            let (wt, bt) = (rand(&[6], 22), rand(&[6], 23));
            (w, b) = (wt.data().to_vec(), bt.data().to_vec());
            g.set_param_value("gn.weight", wt).unwrap();
            g.set_param_value("gn.bias", bt).unwrap();
        }
        let want = normalized_direct(&x, 2 * groups, 1e-5, (&w, &b), 6);
        assert_close(eval(&g, y, &[("x", &x)]).data(), &want, 1e-5);
    }
    let [compiled, unrewritten] = apply_both(&x, |g, x| nn::GroupNorm::new(2, 6).build(g, x));
    assert_eq!(compiled, unrewritten);
}

#[test]
fn norm_layers_refuse_what_does_not_fit_and_identity_passes_through() {
    let mut g = Graph::new();
    let x = g.input("x", [2, 4]).unwrap();
    let bad = [
        nn::LayerNorm::new(&[5]).name("ln").build(&mut g, x),
        nn::LayerNorm::new(&[]).name("ln").build(&mut g, x),
        nn::LayerNorm::new(&[4])
            .eps(f32::NAN)
            .name("ln")
            .build(&mut g, x),
        nn::GroupNorm::new(3, 4).name("gn").build(&mut g, x),
        nn::GroupNorm::new(0, 4).name("gn").build(&mut g, x),
        nn::GroupNorm::new(2, 6).name("gn").build(&mut g, x),
    ];
    let messages: Vec<String> = bad
        .into_iter()
        .map(|r| r.unwrap_err().to_string())
        .collect();
    assert!(
        messages[0].contains("ln") && messages[0].contains("[2, 4]"),
        "{}",
        messages[0]
    );
    assert!(messages[2].contains("eps"), "{}", messages[2]);
    assert!(messages[3].contains("divide"), "{}", messages[3]);
    assert!(messages[5].contains("[N, 6, *]"), "{}", messages[5]);
    assert_eq!(nn::Identity.build(&mut g, x).unwrap(), x);
}

/// `torch.nn.AdaptiveAvgPool2d` by its definition: output (i, j) averages
/// rows ⌊i·H/oh⌋..⌈(i+1)·H/oh⌉ and the same columns of W, in f64.
fn adaptive_avg_direct(x: &Tensor, oh: usize, ow: usize) -> Vec<f32> {
    let s = x.shape();
    let (h, w) = (s[s.len() - 2], s[s.len() - 1]);
    let mut out = Vec::new();
    for plane in x.data().chunks(h * w) {
        for i in 0..oh {
            let (r0, r1) = (i * h / oh, ((i + 1) * h).div_ceil(oh));
            for j in 0..ow {
                let (c0, c1) = (j * w / ow, ((j + 1) * w).div_ceil(ow));
                let mut sum = 0.0f64;
                for r in r0..r1 {
                    for c in c0..c1 {
                        sum += plane[r * w + c] as f64;
                    }
                }
                out.push((sum / ((r1 - r0) * (c1 - c0)) as f64) as f32);
            }
        }
    }
    out
}

#[test]
fn adaptive_avg_pool2d_matches_its_definition() {
    for (shape, out) in [
        (vec![2, 3, 6, 4], [3, 2]),
        (vec![2, 3, 7, 5], [3, 2]),
        (vec![1, 2, 5, 5], [5, 5]),
        (vec![1, 1, 3, 4], [7, 6]),
        (vec![3, 10, 9], [4, 1]),
        (vec![2, 2, 6, 6], [1, 1]),
    ] {
        let x = rand(&shape, 41);
        let [compiled, unrewritten] =
            apply_both(&x, |g, x| nn::AdaptiveAvgPool2d::new(out).build(g, x));
        let mut want_shape = shape.clone();
        let r = want_shape.len();
        (want_shape[r - 2], want_shape[r - 1]) = (out[0], out[1]);
        assert_eq!(compiled.shape(), &want_shape[..]);
        assert_close(
            compiled.data(),
            &adaptive_avg_direct(&x, out[0], out[1]),
            1e-6,
        );
        assert_eq!(compiled, unrewritten, "{shape:?} -> {out:?}");
    }
    let mut g = Graph::new();
    let bad = [
        (vec![2, 3], [1, 1]),
        (vec![1, 1, 0, 4], [1, 1]),
        (vec![1, 1, 4, 4], [0, 2]),
        // uneven and huge: refused before it builds millions of nodes
        (vec![1, 1, 4, 4], [usize::MAX / 2, 2]),
        (vec![1, 1, 4, 4], [4097, 2]),
    ];
    for (i, (shape, out)) in bad.into_iter().enumerate() {
        let x = g.input(&format!("x{i}"), shape).unwrap();
        let err = nn::AdaptiveAvgPool2d::new(out)
            .build(&mut g, x)
            .unwrap_err();
        assert!(err.to_string().contains("adaptive_avg_pool2d"), "{err}");
    }
}

#[test]
fn nearest_upsample_repeats_each_cell_in_its_block() {
    for (shape, f) in [
        ([2, 3, 2, 3], [2, 2]),
        ([1, 2, 3, 1], [1, 3]),
        ([1, 1, 1, 2], [3, 1]),
    ] {
        let x = rand(&shape, 51);
        let [compiled, unrewritten] = apply_both(&x, |g, x| nn::Upsample::nearest(f).build(g, x));
        let (h, w) = (shape[2], shape[3]);
        let (oh, ow) = (h * f[0], w * f[1]);
        assert_eq!(compiled.shape(), &[shape[0], shape[1], oh, ow]);
        // torch.nn.Upsample(scale_factor=f, mode='nearest'): out(i, j) = in(i / fh, j / fw)
        let want: Vec<f32> = x
            .data()
            .chunks(h * w)
            .flat_map(|p| (0..oh * ow).map(move |o| p[(o / ow / f[0]) * w + (o % ow) / f[1]]))
            .collect();
        assert_eq!(compiled.data(), &want[..], "{shape:?} x {f:?}");
        assert_eq!(compiled, unrewritten);
    }
    let mut g = Graph::new();
    let bad = [
        (vec![2, 3, 4], [2, 2]),
        (vec![1, 1, 2, 2], [0, 2]),
        (vec![1, 1, 2, 2], [usize::MAX, 1]),
    ];
    for (i, (shape, f)) in bad.into_iter().enumerate() {
        let x = g.input(&format!("x{i}"), shape).unwrap();
        let err = nn::Upsample::nearest(f).build(&mut g, x).unwrap_err();
        assert!(err.to_string().contains("upsample"), "{err}");
    }
}

#[test]
fn same_padding_keeps_the_size_with_the_odd_cell_after_as_pytorch() {
    // padding='same': d·(k−1) in all per dimension, half before, the odd
    // cell after (torch.nn.Conv2d(..., padding='same'))
    let (h, w) = (5, 6);
    let x = rand(&[1, 2, h, w], 61);
    for (k, d) in [([3, 3], 1), ([2, 4], 1), ([2, 3], 2), ([4, 1], 3)] {
        let mut g = Graph::with_seed(3);
        let xi = g.input("x", [1, 2, h, w]).unwrap();
        let y = nn::Conv2d::new(2, 3, 1)
            .kernel(k)
            .dilation(d)
            .padding_same()
            .name("conv")
            .build(&mut g, xi)
            .unwrap();
        let got = eval(&g, y, &[("x", &x)]);
        assert_eq!(got.shape(), &[1, 3, h, w], "{k:?} dilation {d}");
        // the input padded by hand, then a convolution without padding
        let total = k.map(|k| d * (k - 1));
        let (ph, pw) = (h + total[0], w + total[1]);
        let mut padded = Tensor::zeros([1, 2, ph, pw]);
        for c in 0..2 {
            for i in 0..h {
                for j in 0..w {
                    let at = [0, c, i + total[0] / 2, j + total[1] / 2];
                    padded.set(&at, x.get(&[0, c, i, j]).unwrap()).unwrap();
                }
            }
        }
        let cfg = ConvCfg {
            n: 1,
            cin: 2,
            cout: 3,
            size: vec![ph, pw],
            k: k.to_vec(),
            s: vec![1, 1],
            p: vec![0, 0],
            d: vec![d, d],
            groups: 1,
            bias: true,
        };
        let (wt, b) = (
            g.param_value("conv.weight").unwrap(),
            g.param_value("conv.bias"),
        );
        let want = conv2d_direct(&padded, wt, b, &cfg);
        assert_close(got.data(), want.data(), 1e-5);
    }
    // 'valid' is no padding; 'same' with a stride is refused
    let mut g = Graph::new();
    let xi = g.input("x", [1, 2, h, w]).unwrap();
    let y = nn::Conv2d::new(2, 3, 3)
        .padding(2)
        .padding_valid()
        .build(&mut g, xi)
        .unwrap();
    assert_eq!(g.shape(y).unwrap(), &[1, 3, 3, 4]);
    let x1 = g.input("x1", [1, 2, 7]).unwrap();
    let err = nn::Conv1d::new(2, 3, 3)
        .stride(2)
        .padding_same()
        .name("c1")
        .build(&mut g, x1)
        .unwrap_err();
    assert!(err.to_string().contains("stride 1"), "{err}");
    let empty = g.input("empty", [1, 2, 0, 5]).unwrap();
    let err = nn::Conv2d::new(2, 2, 4)
        .padding_same()
        .build(&mut g, empty)
        .unwrap_err();
    assert!(err.to_string().contains("empty spatial dimension"), "{err}");
}

/// Per channel of `[N, C, *]` (f64): the mean, the biased and the unbiased
/// variance over `N` and the positions.
fn channel_stats(x: &Tensor) -> Vec<(f64, f64, f64)> {
    let (n, c) = (x.shape()[0], x.shape()[1]);
    let inner = x.numel() / (n * c);
    (0..c)
        .map(|ch| {
            let vals: Vec<f64> = (0..n)
                .flat_map(|i| (0..inner).map(move |j| (i * c + ch) * inner + j))
                .map(|k| x.data()[k] as f64)
                .collect();
            let m = vals.iter().sum::<f64>() / vals.len() as f64;
            let ss: f64 = vals.iter().map(|v| (v - m).powi(2)).sum();
            (m, ss / vals.len() as f64, ss / (vals.len() as f64 - 1.0))
        })
        .collect()
}

/// `(x − mean[c]) / √(var[c] + eps)` over `[N, C, *]` in f64.
fn standardized(x: &Tensor, mean: &[f64], var: &[f64], eps: f64) -> Vec<f32> {
    let (c, inner) = (x.shape()[1], x.numel() / (x.shape()[0] * x.shape()[1]));
    x.data()
        .iter()
        .enumerate()
        .map(|(k, &v)| {
            let ch = (k / inner) % c;
            ((v as f64 - mean[ch]) / (var[ch] + eps).sqrt()) as f32
        })
        .collect()
}

/// A trainer over `y = BatchNorm(x)` whose loss is `Σ y²/2`, evaluating `y`;
/// SGD at learning rate 0 keeps weight 1 and bias 0, so only the running
/// statistics change.
fn batch_norm_trainer(shape: &[usize], bn: impl Layer) -> kiln::Trainer {
    let (mut g, x) = graph_with_input(shape);
    let y = bn.build(&mut g, x).unwrap();
    let sq = g.mul(y, y).unwrap();
    let loss = g.sum_all(sq).unwrap();
    kiln::Trainer::with_outputs(g, loss, &[y], kiln::optim::Sgd::new(0.0)).unwrap()
}

fn buffer(tr: &kiln::Trainer, name: &str) -> Vec<f32> {
    let b = tr.buffers();
    b.iter().find(|(n, _)| n == name).unwrap().1.data().to_vec()
}

#[test]
fn batch_norm_1d_matches_pytorch_by_hand() {
    // torch.nn.BatchNorm1d(2) in training on [[1, 2], [3, 6]]: channel 0
    // has mean 2, variance 1 (unbiased 2); channel 1 mean 4, variance 4
    // (unbiased 8)
    let x = t(&[2, 2], &[1.0, 2.0, 3.0, 6.0]);
    let mut tr = batch_norm_trainer(&[2, 2], nn::BatchNorm1d::new(2).name("bn"));
    let g = tr.graph().clone();
    let y = tr.graph().node_ids()[..]
        .iter()
        .copied()
        .find(|&n| tr.graph().node(n).unwrap().op.name() == "train_eval")
        .expect("the output's mode switch");
    let training = kiln::CompileOptions {
        training: true,
        ..Default::default()
    };
    let out = kiln::compile(&g, &[y], &training)
        .unwrap()
        .run(&[("x", &x)])
        .unwrap();
    let s = 1.0 / (1.0f64 + 1e-5).sqrt();
    let s4 = 2.0 / (4.0f64 + 1e-5).sqrt();
    assert_close(
        out[0].data(),
        &[-s as f32, -s4 as f32, s as f32, s4 as f32],
        1e-6,
    );
    tr.step(&[("x", &x)]).unwrap();
    assert_close(&buffer(&tr, "bn.running_mean"), &[0.2, 0.4], 1e-6);
    assert_close(&buffer(&tr, "bn.running_var"), &[1.1, 1.7], 1e-6);
    assert_eq!(buffer(&tr, "bn.num_batches_tracked"), [1.0]);
    // evaluation normalises with the running statistics
    let got = tr.evaluate(&[("x", &x)]).unwrap().remove(0);
    let want = standardized(&x, &[0.2, 0.4], &[1.1, 1.7], 1e-5);
    assert_close(got.data(), &want, 1e-6);
}

#[test]
fn batch_norm_2d_trains_on_batch_statistics_and_evaluates_on_running_ones() {
    for momentum in [Some(0.3), None] {
        let bn = nn::BatchNorm2d::new(3)
            .momentum(momentum)
            .eps(1e-3)
            .name("bn");
        let mut tr = batch_norm_trainer(&[4, 3, 2, 5], bn);
        let (mut rm, mut rv) = (vec![0.0f64; 3], vec![1.0f64; 3]);
        for step in 1..=3u64 {
            let mut x = rand(&[4, 3, 2, 5], 40 + step);
            x.data_mut().iter_mut().for_each(|v| *v = *v * 3.0 + 2.0);
            let stats = channel_stats(&x);
            let f = momentum.map_or(1.0 / step as f64, |m| m as f64);
            for (c, &(m, _, unbiased)) in stats.iter().enumerate() {
                rm[c] = f * m + (1.0 - f) * rm[c];
                rv[c] = f * unbiased + (1.0 - f) * rv[c];
            }
            // the step's loss is Σ y²/2 of the batch-normalised y: N·H·W/2
            // per channel, times var / (var + eps)
            let loss = tr.step(&[("x", &x)]).unwrap() as f64;
            let want: f64 = stats.iter().map(|s| 40.0 * s.1 / (s.1 + 1e-3)).sum();
            assert!((loss - want).abs() < 1e-4 * want, "{loss} vs {want}");
            let as32 = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<_>>();
            assert_close(&buffer(&tr, "bn.running_mean"), &as32(&rm), 1e-5);
            assert_close(&buffer(&tr, "bn.running_var"), &as32(&rv), 1e-5);
            assert_eq!(buffer(&tr, "bn.num_batches_tracked"), [step as f32]);
            let got = tr.evaluate(&[("x", &x)]).unwrap().remove(0);
            assert_close(got.data(), &standardized(&x, &rm, &rv, 1e-3), 1e-5);
        }
    }
}

#[test]
fn batch_norm_compiles_each_mode_to_its_own_graph_equal_unrewritten() {
    let x = rand(&[2, 4, 3, 3], 50);
    for training in [true, false] {
        let [compiled, unrewritten] = [
            kiln::CompileOptions::default(),
            kiln::CompileOptions::unrewritten(),
        ]
        .map(|o| {
            let (mut g, xi) = graph_with_input(&[2, 4, 3, 3]);
            let y = nn::BatchNorm2d::new(4).build(&mut g, xi).unwrap();
            let o = kiln::CompileOptions { training, ..o };
            let mut exe = kiln::compile(&g, &[y], &o).unwrap();
            exe.run(&[("x", &x)]).unwrap().remove(0)
        });
        assert_eq!(compiled, unrewritten, "training {training}");
        // training normalises with the batch's statistics: each channel has
        // mean 0 and variance var/(var + eps); evaluation (running mean 0,
        // variance 1) only scales by 1/√(1 + eps)
        let want = if training {
            let st = channel_stats(&x);
            let (m, v): (Vec<f64>, Vec<f64>) = st.iter().map(|s| (s.0, s.1)).unzip();
            standardized(&x, &m, &v, 1e-5)
        } else {
            standardized(&x, &[0.0; 4], &[1.0; 4], 1e-5)
        };
        assert_close(compiled.data(), &want, 1e-5);
    }
}

#[test]
fn batch_norm_refuses_bad_shapes_options_and_one_value_per_channel_in_training() {
    let mut g = Graph::new();
    let x = g.input("x", [2, 4]).unwrap();
    let x4 = g.input("x4", [2, 4, 3, 3]).unwrap();
    let messages: Vec<String> = [
        nn::BatchNorm1d::new(3).name("bn").build(&mut g, x),
        nn::BatchNorm2d::new(4).name("bn").build(&mut g, x),
        nn::BatchNorm1d::new(4).name("bn").build(&mut g, x4),
        nn::BatchNorm1d::new(4)
            .eps(-1.0)
            .name("bn")
            .build(&mut g, x),
        nn::BatchNorm1d::new(4)
            .momentum(Some(f32::INFINITY))
            .name("bn")
            .build(&mut g, x),
    ]
    .into_iter()
    .map(|r| r.unwrap_err().to_string())
    .collect();
    assert!(
        messages[0].contains("[N, 3] or [N, 3, L]"),
        "{}",
        messages[0]
    );
    assert!(messages[1].contains("[N, 4, H, W]") && messages[1].contains("[2, 4]"));
    assert!(messages[2].contains("[2, 4, 3, 3]"), "{}", messages[2]);
    assert!(messages[3].contains("eps"), "{}", messages[3]);
    assert!(messages[4].contains("momentum"), "{}", messages[4]);
    // one value per channel: evaluation runs, training is refused
    let (mut g, x) = graph_with_input(&[1, 3]);
    let y = nn::BatchNorm1d::new(3)
        .name("bn1")
        .build(&mut g, x)
        .unwrap();
    let one = t(&[1, 3], &[1.0, 2.0, 3.0]);
    let out = eval(&g, y, &[("x", &one)]);
    assert_close(
        out.data(),
        &standardized(&one, &[0.0; 3], &[1.0; 3], 1e-5),
        1e-6,
    );
    let training = kiln::CompileOptions {
        training: true,
        ..Default::default()
    };
    let e = kiln::compile(&g, &[y], &training).unwrap_err().to_string();
    assert!(
        e.contains("bn1") && e.contains("more than 1 value per channel") && e.contains("[1, 3]"),
        "{e}"
    );
}

#[test]
fn batch_norm_with_a_symbolic_batch_counts_each_batch() {
    let (mut g, x) = graph_with_input(&[kiln::BATCH, 2]);
    let y = nn::BatchNorm1d::new(2).name("bn").build(&mut g, x).unwrap();
    let sq = g.mul(y, y).unwrap();
    let loss = g.sum_all(sq).unwrap();
    let mut tr = kiln::Trainer::new(g, loss, kiln::optim::Sgd::new(0.0)).unwrap();
    let mut rv = [1.0f64; 2];
    for n in [4usize, 3, 4] {
        let x = rand(&[n, 2], n as u64);
        for (c, s) in channel_stats(&x).iter().enumerate() {
            rv[c] = 0.1 * s.2 + 0.9 * rv[c];
        }
        tr.step(&[("x", &x)]).unwrap();
        let want: Vec<f32> = rv.iter().map(|&v| v as f32).collect();
        assert_close(&buffer(&tr, "bn.running_var"), &want, 1e-6);
    }
    let e = tr
        .step(&[("x", &rand(&[1, 2], 9))])
        .unwrap_err()
        .to_string();
    assert!(e.contains("more than 1 value per channel"), "{e}");
}

#[test]
fn trainer_saves_and_loads_the_buffers_with_the_parameters() {
    let dir = std::env::temp_dir().join(format!("kiln-bn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bn.safetensors");
    let x = rand(&[4, 2, 3], 60);
    let mut a = batch_norm_trainer(&[4, 2, 3], nn::BatchNorm1d::new(2).name("bn"));
    a.step(&[("x", &x)]).unwrap();
    a.save(&path).unwrap();
    let saved: Vec<String> = kiln::weights::load(&path)
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    for name in ["bn.weight", "bn.bias", "bn.running_mean", "bn.running_var"] {
        assert!(saved.iter().any(|n| n == name), "{name} in {saved:?}");
    }
    let mut b = batch_norm_trainer(&[4, 2, 3], nn::BatchNorm1d::new(2).name("bn"));
    let before = b.evaluate(&[("x", &x)]).unwrap().remove(0);
    b.load(&path).unwrap();
    assert_eq!(b.buffers(), a.buffers());
    let after = b.evaluate(&[("x", &x)]).unwrap().remove(0);
    assert_eq!(after, a.evaluate(&[("x", &x)]).unwrap().remove(0));
    assert!(after != before, "the loaded running statistics are used");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn summary_lists_layers_shapes_and_the_parameter_counts_pytorch_gives() {
    // torch: sum(p.numel() for p in ResNet-8.parameters()) == 77,754
    // (bench/pytorch_train.py prints it)
    let s = nn::summary(&kiln::models::resnet(1), &[32, 1, 28, 28]).unwrap();
    assert_eq!(s.params, 77_754);
    // running mean and variance per BatchNorm channel, and a step counter each
    let bn_channels = 16 + 2 * 16 + 3 * 32 + 3 * 64; // stem, blocks (with shortcuts)
    assert_eq!(s.buffers, 2 * bn_channels + 9);
    assert_eq!(s.rows[0].kind, "Sequential");
    assert_eq!(s.rows[0].output, [32, 10]);
    let kinds: Vec<&str> = s.rows[1..].iter().map(|r| r.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "Conv2d",
            "BatchNorm2d",
            "Relu",
            "BasicBlock",
            "BasicBlock",
            "BasicBlock",
            "GlobalAvgPool2d",
            "Flatten",
            "Linear"
        ]
    );
    assert!(s.rows[1..].iter().all(|r| r.depth == 1));
    assert_eq!(s.rows[5].output, [32, 32, 14, 14]);
    // conv 16→32 3x3 stride 2, conv 32→32, two BatchNorms, 1x1 shortcut + BN
    assert_eq!(
        s.rows[5].params,
        16 * 32 * 9 + 32 * 32 * 9 + 4 * 32 + 16 * 32 + 2 * 32
    );
    // the cnn: 160 + 4,640 + 15,690, as torch counts its parameters
    let s = nn::summary(&kiln::models::cnn(), &[4, 1, 28, 28]).unwrap();
    assert_eq!(s.params, 20_490);
    assert_eq!(s.rows[3].kind, "MaxPool2d");
    assert_eq!(s.rows[3].output, [4, 16, 14, 14]);
    let text = s.to_string();
    assert!(text.contains("Trainable params: 20,490"), "{text}");
    assert!(
        text.contains("└─Conv2d") && text.contains("[4, 32, 7, 7]"),
        "{text}"
    );
    // a symbolic batch shows as B
    let s = nn::summary(&kiln::models::cnn(), &[kiln::BATCH, 1, 28, 28]).unwrap();
    assert!(s.to_string().contains("[B, 16, 28, 28]"), "{s}");
    // a shape the model refuses is the layer's Err
    let e = nn::summary(&kiln::models::cnn(), &[4, 3, 28, 28]).unwrap_err();
    assert!(e.to_string().contains("conv1"), "{e}");
}

/// A program compiled for evaluation leaves BatchNorm's state alone (its
/// updates bind to none, as PyTorch's `eval()` never touches buffers); one
/// compiled for training updates it.
#[test]
fn batch_norm_state_changes_only_in_training() {
    let (mut g, x) = graph_with_input(&[4, 2]);
    let y = nn::BatchNorm1d::new(2).name("bn").build(&mut g, x).unwrap();
    let feed = rand(&[4, 2], 70);
    for training in [false, true] {
        let program = kiln::Program {
            graph: g.clone(),
            outputs: vec![y],
            updates: g.state_updates().to_vec(),
        };
        let o = kiln::CompileOptions {
            training,
            ..Default::default()
        };
        let mut exe = kiln::compile_program(program, &o).unwrap();
        exe.run(&[("x", &feed)]).unwrap();
        let mean = exe.param("bn.running_mean").unwrap();
        let tracked = exe.param("bn.num_batches_tracked").map(|t| t.data()[0]);
        if training {
            assert!(mean.data().iter().all(|&v| v != 0.0), "{mean:?}");
            assert_eq!(tracked, Some(1.0));
        } else {
            assert_eq!(mean.data(), [0.0, 0.0]);
            assert!(tracked.is_none_or(|t| t == 0.0), "{tracked:?}");
        }
    }
}
