//! Forward checks of every generic op against small hand-checked cases.

mod common;
use common::*;
use kiln::ops::matmul::matmul_reference;
use kiln::ops::PoolWindow;
use kiln::ops::View;
use kiln::ops::{
    Dropout, Fill, Input, MatMul, MaxPoolBackward, MaxPoolWithIndices, Output, Reshape, Slice,
};
use kiln::CompileOptions;
use kiln::OpBuilder;
use kiln::{compile, Graph, Init, Op, Tensor, Window};

type UnaryBuilder = fn(&mut Graph, kiln::NodeId) -> kiln::Result<kiln::NodeId>;

#[test]
fn unary_ops_match_hand_values() {
    let x = t(&[4], &[-2.0, -0.5, 0.0, 1.5]);
    let cases: Vec<(&str, UnaryBuilder, Vec<f32>)> = vec![
        ("neg", Graph::neg, vec![2.0, 0.5, 0.0, -1.5]),
        ("relu", Graph::relu, vec![0.0, 0.0, 0.0, 1.5]),
        ("abs", Graph::abs, vec![2.0, 0.5, 0.0, 1.5]),
        (
            "exp",
            Graph::exp,
            vec![0.135_335_28, 0.606_530_66, 1.0, 4.481_689],
        ),
        (
            "tanh",
            Graph::tanh,
            vec![-0.964_027_6, -0.462_117_16, 0.0, 0.905_148_25],
        ),
        (
            "sigmoid",
            Graph::sigmoid,
            vec![0.119_202_92, 0.377_540_67, 0.5, 0.817_574_5],
        ),
    ];
    for (name, f, want) in cases {
        let got = apply(&x, f);
        assert_eq!(got.shape(), &[4], "{name}");
        assert_close(got.data(), &want, 1e-6);
    }
    let pos = t(&[3], &[0.25, 1.0, 4.0]);
    assert_close(apply(&pos, Graph::sqrt).data(), &[0.5, 1.0, 2.0], 1e-7);
    assert_close(apply(&pos, Graph::recip).data(), &[4.0, 1.0, 0.25], 1e-7);
    assert_close(
        apply(&pos, Graph::log).data(),
        &[-1.386_294_4, 0.0, 1.386_294_4],
        1e-6,
    );
    // relu keeps NaN, like PyTorch
    assert!(apply(&t(&[1], &[f32::NAN]), Graph::relu).data()[0].is_nan());
}

/// GELU (exact, tanh), SiLU, LeakyReLU and erf against their PyTorch
/// definitions (`torch.nn.GELU`, `GELU(approximate='tanh')`, `SiLU`,
/// `LeakyReLU(0.01)`, `torch.erf`) evaluated in double precision.
#[test]
fn activation_ops_match_their_pytorch_definitions() {
    let x = t(&[6], &[-3.0, -1.0, -0.5, 0.25, 1.0, 2.5]);
    let leaky: UnaryBuilder = |g, x| g.leaky_relu(x, 0.01);
    let cases: Vec<(&str, UnaryBuilder, [f32; 6])> = vec![
        (
            "erf",
            Graph::erf,
            [
                -0.999_977_9,
                -0.842_700_8,
                -0.520_499_9,
                0.276_326_4,
                0.842_700_8,
                0.999_593,
            ],
        ),
        (
            "gelu",
            Graph::gelu,
            [
                -0.004_049_694,
                -0.158_655_25,
                -0.154_268_77,
                0.149_676_58,
                0.841_344_7,
                2.484_475_8,
            ],
        ),
        (
            "gelu_tanh",
            Graph::gelu_tanh,
            [
                -0.003_637_392,
                -0.158_808_01,
                -0.154_286,
                0.149_675_35,
                0.841_192,
                2.484_915_7,
            ],
        ),
        (
            "silu",
            Graph::silu,
            [
                -0.142_277_62,
                -0.268_941_42,
                -0.188_770_33,
                0.140_544_13,
                0.731_058_6,
                2.310_354_5,
            ],
        ),
        ("leaky_relu", leaky, [-0.03, -0.01, -0.005, 0.25, 1.0, 2.5]),
    ];
    for (name, f, want) in cases {
        let [compiled, unrewritten] = apply_both(&x, f);
        assert_close(compiled.data(), &want, 2e-6);
        assert_eq!(
            bits(&compiled),
            bits(&unrewritten),
            "{name}: passes changed the value"
        );
        // NaN stays NaN; ±0.0 maps to ±0.0 (LeakyReLU keeps −0.0, as `x·slope`)
        let special = apply(&t(&[3], &[f32::NAN, 0.0, -0.0]), f);
        assert!(special.data()[0].is_nan(), "{name}(NaN)");
        assert_eq!(special.data()[1].to_bits(), 0, "{name}(0.0)");
        let neg_zero = special.data()[2].to_bits();
        assert!(
            neg_zero == (-0.0f32).to_bits() || neg_zero == 0,
            "{name}(-0.0)"
        );
    }
    let y = apply(&t(&[2], &[-0.0, -2.0]), |g, x| g.leaky_relu(x, 0.2));
    assert_eq!(bits(&y), [(-0.0f32).to_bits(), (-0.4f32).to_bits()]);
}

/// The new element-wise ops fuse: a chain of them (with a parametrised
/// LeakyReLU) compiles to one fused loop, bit-identical to the unfused graph,
/// and the dump keeps the slope.
#[test]
fn activation_chains_fuse_into_one_loop() {
    let build = |g: &mut Graph, x: kiln::NodeId| -> kiln::Result<kiln::NodeId> {
        let a = g.gelu(x)?;
        let b = g.silu(a)?;
        let c = g.leaky_relu(b, 0.1)?;
        let d = g.gelu_tanh(c)?;
        g.add(d, x)
    };
    let x = Tensor::rand_uniform([3, 7], -3.0, 3.0, 4);
    let [compiled, unrewritten] = apply_both(&x, build);
    assert_eq!(bits(&compiled), bits(&unrewritten));
    let (mut g, x) = graph_with_input(&[3, 7]);
    let y = build(&mut g, x).unwrap();
    let program = kiln::Program {
        graph: g,
        outputs: vec![y],
        updates: vec![],
    };
    let opts = kiln::CompileOptions::default();
    let (after, _) = kiln::compile::optimize(program, &opts).unwrap();
    let dump = kiln::graph::dump::to_text(&after.graph, &after.outputs);
    assert_eq!(dump.matches("fused").count(), 1, "{dump}");
    assert!(
        dump.contains("gelu_tanh(leaky_relu[0.1](silu(gelu(%0))))"),
        "{dump}"
    );
}

#[test]
fn binary_ops_broadcast_like_numpy() {
    let a = t(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let b = t(&[3], &[10.0, 20.0, 30.0]);
    let col = t(&[2, 1], &[100.0, 200.0]);
    let mut g = Graph::new();
    let (xa, xb, xc) = (
        g.input("a", [2, 3]).unwrap(),
        g.input("b", [3]).unwrap(),
        g.input("c", [2, 1]).unwrap(),
    );
    let add = g.add(xa, xb).unwrap();
    let sub = g.sub(xb, xa).unwrap();
    let mul = g.mul(xa, xc).unwrap();
    let div = g.div(xa, xb).unwrap();
    let outer = g.add(xb, xc).unwrap();
    let mut exe = kiln::compile(
        &g,
        &[add, sub, mul, div, outer],
        &kiln::CompileOptions::default(),
    )
    .unwrap();
    let out = exe.run(&[("a", &a), ("b", &b), ("c", &col)]).unwrap();
    assert_eq!(out[0].data(), &[11.0, 22.0, 33.0, 14.0, 25.0, 36.0]);
    assert_eq!(out[1].data(), &[9.0, 18.0, 27.0, 6.0, 15.0, 24.0]);
    assert_eq!(out[2].data(), &[100.0, 200.0, 300.0, 800.0, 1000.0, 1200.0]);
    assert_close(out[3].data(), &[0.1, 0.1, 0.1, 0.4, 0.25, 0.2], 1e-7);
    assert_eq!(out[4].shape(), &[2, 3]);
    assert_eq!(out[4].data(), &[110.0, 120.0, 130.0, 210.0, 220.0, 230.0]);
}

#[test]
fn min_max_and_comparisons() {
    let mut g = Graph::new();
    let a = g.input("a", [4]).unwrap();
    let b = g.input("b", [4]).unwrap();
    let ops: Vec<kiln::NodeId> = vec![
        g.maximum(a, b).unwrap(),
        g.minimum(a, b).unwrap(),
        g.eq(a, b).unwrap(),
        g.ne(a, b).unwrap(),
        g.lt(a, b).unwrap(),
        g.le(a, b).unwrap(),
        g.gt(a, b).unwrap(),
        g.ge(a, b).unwrap(),
    ];
    let mut exe = kiln::compile(&g, &ops, &kiln::CompileOptions::default()).unwrap();
    let va = t(&[4], &[1.0, 2.0, 3.0, f32::NAN]);
    let vb = t(&[4], &[2.0, 2.0, 1.0, 0.0]);
    let out = exe.run(&[("a", &va), ("b", &vb)]).unwrap();
    assert_eq!(&out[0].data()[..3], &[2.0, 2.0, 3.0]);
    assert!(
        out[0].data()[3].is_nan(),
        "maximum propagates NaN like torch.maximum"
    );
    assert_eq!(&out[1].data()[..3], &[1.0, 2.0, 1.0]);
    assert_eq!(out[2].data(), &[0.0, 1.0, 0.0, 0.0]);
    assert_eq!(out[3].data(), &[1.0, 0.0, 1.0, 1.0]);
    assert_eq!(out[4].data(), &[1.0, 0.0, 0.0, 0.0]);
    assert_eq!(out[5].data(), &[1.0, 1.0, 0.0, 0.0]);
    assert_eq!(out[6].data(), &[0.0, 0.0, 1.0, 0.0]);
    assert_eq!(out[7].data(), &[0.0, 1.0, 1.0, 0.0]);
}

#[test]
fn select_picks_by_condition_with_broadcast() {
    let mut g = Graph::new();
    let c = g.input("c", [2, 1]).unwrap();
    let a = g.input("a", [2, 2]).unwrap();
    let b = g.scalar(-1.0).unwrap();
    let s = g.select(c, a, b).unwrap();
    let mut exe = kiln::compile(&g, &[s], &kiln::CompileOptions::default()).unwrap();
    let out = exe
        .run(&[
            ("c", &t(&[2, 1], &[0.0, 1.0])),
            ("a", &t(&[2, 2], &[1.0, 2.0, 3.0, 4.0])),
        ])
        .unwrap();
    assert_eq!(out[0].data(), &[-1.0, -1.0, 3.0, 4.0]);
}

#[test]
fn reductions_over_axes_with_and_without_keepdims() {
    let x = t(&[2, 3], &[1.0, 5.0, 3.0, -4.0, 2.0, 0.0]);
    let s0 = apply(&x, |g, x| g.sum(x, &[0], false));
    assert_eq!(
        (s0.shape(), s0.data()),
        (&[3usize][..], &[-3.0, 7.0, 3.0][..])
    );
    let s1 = apply(&x, |g, x| g.sum(x, &[-1], true));
    assert_eq!(
        (s1.shape(), s1.data()),
        (&[2usize, 1][..], &[9.0, -2.0][..])
    );
    let m = apply(&x, |g, x| g.mean(x, &[0, 1], false));
    assert_eq!(m.shape(), &[] as &[usize]);
    assert_close(m.data(), &[7.0 / 6.0], 1e-6);
    let mx = apply(&x, |g, x| g.max(x, &[1], false));
    assert_eq!(mx.data(), &[5.0, 2.0]);
    let x3 = Tensor::from_vec([2, 2, 2], (0..8).map(|v| v as f32).collect()).unwrap();
    let mid = apply(&x3, |g, x| g.sum(x, &[0, 2], false));
    assert_eq!(mid.data(), &[0.0 + 1.0 + 4.0 + 5.0, 2.0 + 3.0 + 6.0 + 7.0]);
    let all = apply(&x3, |g, x| g.sum_all(x));
    assert_eq!(all.data(), &[28.0]);
}

#[test]
fn first_max_mask_marks_only_the_first_of_tied_maxima() {
    let x = t(&[2, 4], &[1.0, 3.0, 3.0, 2.0, 5.0, 5.0, 5.0, 5.0]);
    assert_eq!(
        apply(&x, |g, x| g.first_max_mask(x, 1)).data(),
        &[0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]
    );
    let along0 = apply(&x, |g, x| g.first_max_mask(x, 0));
    assert_eq!(along0.data(), &[0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0]);
    let neg_inf = t(&[3], &[f32::NEG_INFINITY, f32::NEG_INFINITY, -7.0]);
    assert_eq!(
        apply(&neg_inf, |g, x| g.first_max_mask(x, 0)).data(),
        &[0.0, 0.0, 1.0]
    );
}

#[test]
fn reshape_transpose_broadcast() {
    let x = Tensor::from_vec([2, 3], (0..6).map(|v| v as f32).collect()).unwrap();
    let r = apply(&x, |g, x| g.reshape(x, &[3, -1]));
    assert_eq!((r.shape(), r.data()), (&[3usize, 2][..], x.data()));
    let tr = apply(&x, |g, x| g.transpose(x, &[1, 0]));
    assert_eq!(
        (tr.shape(), tr.data()),
        (&[3usize, 2][..], &[0.0, 3.0, 1.0, 4.0, 2.0, 5.0][..])
    );
    let x3 = Tensor::from_vec([2, 3, 4], (0..24).map(|v| v as f32).collect()).unwrap();
    let p = apply(&x3, |g, x| g.transpose(x, &[2, 0, 1]));
    assert_eq!(p.shape(), &[4, 2, 3]);
    for i in 0..4 {
        for j in 0..2 {
            for k in 0..3 {
                assert_eq!(p.get(&[i, j, k]), x3.get(&[j, k, i]));
            }
        }
    }
    let b = apply(&t(&[3, 1], &[1.0, 2.0, 3.0]), |g, x| {
        g.broadcast_to(x, &[2, 3, 2])
    });
    assert_eq!(
        b.data(),
        &[1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0]
    );
}

#[test]
fn slice_pad_concat_stack() {
    let x = Tensor::from_vec([2, 5], (0..10).map(|v| v as f32).collect()).unwrap();
    let s = apply(&x, |g, x| g.slice(x, 1, 1, 5, 2));
    assert_eq!(
        (s.shape(), s.data()),
        (&[2usize, 2][..], &[1.0, 3.0, 6.0, 8.0][..])
    );
    let s2 = apply(&x, |g, x| g.slice(x, -2, 1, 2, 1));
    assert_eq!(s2.data(), &[5.0, 6.0, 7.0, 8.0, 9.0]);
    let p = apply(&t(&[1, 2], &[1.0, 2.0]), |g, x| {
        g.pad(x, &[(1, 0), (0, 2)], -9.0)
    });
    assert_eq!(
        (p.shape(), p.data()),
        (
            &[2usize, 4][..],
            &[-9.0, -9.0, -9.0, -9.0, 1.0, 2.0, -9.0, -9.0][..]
        )
    );

    let mut g = Graph::new();
    let a = g.input("a", [2, 1]).unwrap();
    let b = g.input("b", [2, 2]).unwrap();
    let c = g.concat(&[a, b], 1).unwrap();
    let st = g.stack(&[b, b], -1).unwrap();
    let st0 = g.stack(&[a, a], 0).unwrap();
    let mut exe = kiln::compile(&g, &[c, st, st0], &kiln::CompileOptions::default()).unwrap();
    let out = exe
        .run(&[
            ("a", &t(&[2, 1], &[1.0, 2.0])),
            ("b", &t(&[2, 2], &[3.0, 4.0, 5.0, 6.0])),
        ])
        .unwrap();
    assert_eq!(
        (out[0].shape(), out[0].data()),
        (&[2usize, 3][..], &[1.0, 3.0, 4.0, 2.0, 5.0, 6.0][..])
    );
    assert_eq!(out[1].shape(), &[2, 2, 2]);
    assert_eq!(out[1].data(), &[3.0, 3.0, 4.0, 4.0, 5.0, 5.0, 6.0, 6.0]);
    assert_eq!(
        (out[2].shape(), out[2].data()),
        (&[2usize, 2, 1][..], &[1.0, 2.0, 1.0, 2.0][..])
    );
}

#[test]
fn unfold_extracts_windows_and_fold_scatter_adds_them() {
    // 1x1x3x3 image 1..9, 2x2 windows, stride 1, no padding: 4 windows.
    let x = Tensor::from_vec([1, 1, 3, 3], (1..=9).map(|v| v as f32).collect()).unwrap();
    let cols = apply(&x, |g, x| g.unfold(x, Window::new(&[2, 2])));
    assert_eq!(cols.shape(), &[1, 1, 4, 4]);
    // row k = window cell k, column l = window position l
    #[rustfmt::skip]
    let want = [1.0, 2.0, 4.0, 5.0,
                2.0, 3.0, 5.0, 6.0,
                4.0, 5.0, 7.0, 8.0,
                5.0, 6.0, 8.0, 9.0];
    assert_eq!(cols.data(), &want);
    // fold of all-ones columns counts how many windows cover each pixel
    let ones = Tensor::full([1, 1, 4, 4], 1.0);
    let counts = apply(&ones, |g, c| g.fold(c, Window::new(&[2, 2]), &[3, 3]));
    assert_eq!(
        counts.data(),
        &[1.0, 2.0, 1.0, 2.0, 4.0, 2.0, 1.0, 2.0, 1.0]
    );
    // padding, stride, dilation in 1-D: x = [1,2,3,4,5], k=2, s=2, p=1, d=2
    let x1 = t(&[1, 1, 5], &[1.0, 2.0, 3.0, 4.0, 5.0]);
    let w = Window {
        kernel: vec![2],
        stride: vec![2],
        padding: vec![1],
        dilation: vec![2],
    };
    let c1 = apply(&x1, |g, x| g.unfold(x, w.clone()));
    // padded: [0,1,2,3,4,5,0]; windows start at 0,2,4: cells (0,2),(2,4),(4,6)
    assert_eq!(c1.shape(), &[1, 1, 2, 3]);
    assert_eq!(c1.data(), &[0.0, 2.0, 4.0, 2.0, 4.0, 0.0]);
    let back = apply(&c1, |g, c| g.fold(c, w.clone(), &[5]));
    assert_eq!(back.data(), &[0.0, 4.0, 0.0, 8.0, 0.0]);
}

#[test]
fn matmul_gemm_kernel_matches_triple_loop_with_batch_broadcast() {
    for (sa, sb) in [
        (vec![3, 5], vec![5, 4]),
        (vec![2, 3, 7], vec![7, 2]),
        (vec![4, 1, 3, 6], vec![2, 6, 5]),
        (vec![70, 90], vec![90, 80]),
    ] {
        let (a, b) = (rand(&sa, 1), rand(&sb, 2));
        let mut g = Graph::new();
        let (xa, xb) = (
            g.input("a", sa.clone()).unwrap(),
            g.input("b", sb.clone()).unwrap(),
        );
        let y = g.matmul(xa, xb).unwrap();
        let out_shape = g.shape(y).unwrap().to_vec();
        let got = kiln::compile(&g, &[y], &kiln::CompileOptions::default())
            .unwrap()
            .run(&[("a", &a), ("b", &b)])
            .unwrap()
            .remove(0);
        let mut want = vec![0.0; got.numel()];
        matmul_reference(
            View {
                shape: &sa,
                data: a.data(),
            },
            View {
                shape: &sb,
                data: b.data(),
            },
            false,
            false,
            &mut want,
            &out_shape,
        );
        assert_close(got.data(), &want, 1e-5);
    }
    let a = t(&[2, 2], &[1.0, 2.0, 3.0, 4.0]);
    let b = t(&[2, 2], &[5.0, 6.0, 7.0, 8.0]);
    let mut g = Graph::new();
    let (xa, xb) = (g.input("a", [2, 2]).unwrap(), g.input("b", [2, 2]).unwrap());
    let y = g.matmul(xa, xb).unwrap();
    let out = kiln::compile(&g, &[y], &kiln::CompileOptions::default())
        .unwrap()
        .run(&[("a", &a), ("b", &b)])
        .unwrap();
    assert_eq!(out[0].data(), &[19.0, 22.0, 43.0, 50.0]);
}

#[test]
fn products_of_negative_zeros_are_positive_zero_for_every_shape() {
    // a sum starts from +0.0 (PyTorch's CPU matmul gives +0.0 here too),
    // whichever kernel a shape takes: the gemm crate's small kernels start
    // from the first product unless told otherwise
    for (m, k, n) in [
        (1, 1, 1),
        (7, 1, 7),
        (7, 2, 5),
        (1, 33, 17),
        (7, 3, 5),
        (33, 17, 33),
    ] {
        let (a, b) = (Tensor::full([m, k], -0.0), Tensor::full([k, n], 1.0));
        let mut g = Graph::new();
        let (xa, xb) = (g.input("a", [m, k]).unwrap(), g.input("b", [k, n]).unwrap());
        let y = g.matmul(xa, xb).unwrap();
        for opts in [
            kiln::CompileOptions::default(),
            kiln::CompileOptions::unrewritten(),
        ] {
            let out = kiln::compile(&g, &[y], &opts)
                .unwrap()
                .run(&[("a", &a), ("b", &b)])
                .unwrap();
            assert!(
                out[0].data().iter().all(|v| v.to_bits() == 0),
                "{m}x{k}x{n}: {:?}",
                &out[0].data()[..1]
            );
        }
    }
    // a convolution over −0.0 with positive weights: its own tile
    // (compiled) and unfold + matmul (unrewritten) agree on +0.0
    use kiln::nn::Layer;
    let (mut g, x) = graph_with_input(&[1, 4, 5, 5]);
    let y = kiln::nn::Conv2d::new(4, 1, 3)
        .bias(false)
        .name("conv")
        .build(&mut g, x)
        .unwrap();
    for opts in [
        kiln::CompileOptions::default(),
        kiln::CompileOptions::unrewritten(),
    ] {
        let mut exe = kiln::compile(&g, &[y], &opts).unwrap();
        exe.set_param("conv.weight", &Tensor::full([1, 4, 3, 3], 0.5))
            .unwrap();
        let out = exe
            .run(&[("x", &Tensor::full([1, 4, 5, 5], -0.0))])
            .unwrap();
        assert!(
            out[0].data().iter().all(|v| v.to_bits() == 0),
            "{:?}",
            out[0]
        );
    }
}

#[test]
fn dropout_is_identity_in_eval_and_a_seeded_scaled_mask_in_training() {
    let x = Tensor::full([1000], 2.0);
    let (mut g, xi) = graph_with_input(&[1000]);
    let y = g.dropout(xi, 0.25, 42).unwrap();
    let training = kiln::CompileOptions {
        training: true,
        ..Default::default()
    };
    let mut exe = kiln::compile(&g, &[y], &training).unwrap();
    let a = exe.run(&[("x", &x)]).unwrap().remove(0);
    let b = exe.run(&[("x", &x)]).unwrap().remove(0);
    let kept = a.data().iter().filter(|&&v| v != 0.0).count();
    assert!((650..850).contains(&kept), "about 75% kept, got {kept}");
    assert!(a
        .data()
        .iter()
        .all(|&v| v == 0.0 || (v - 2.0 / 0.75).abs() < 1e-6));
    assert!(a != b, "the mask changes from step to step");
    let mut eval = kiln::compile(&g, &[y], &kiln::CompileOptions::default()).unwrap();
    assert!(
        eval.run(&[("x", &x)]).unwrap()[0] == x,
        "evaluation mode is the identity"
    );
    // the same seed and step give the same mask in a fresh executable
    let mut exe2 = kiln::compile(&g, &[y], &training).unwrap();
    assert!(exe2.run(&[("x", &x)]).unwrap()[0] == a);
}

#[test]
fn constants_and_fills() {
    let mut g = Graph::new();
    let c = g.constant(t(&[2], &[1.5, -2.0])).unwrap();
    let f = g.fill(&[2], 3.0).unwrap();
    let y = g.mul(c, f).unwrap();
    let out = kiln::compile(&g, &[y], &kiln::CompileOptions::default())
        .unwrap()
        .run(&[])
        .unwrap();
    assert_eq!(out[0].data(), &[4.5, -6.0]);
}

#[test]
fn matmul_transpose_flags_equal_explicit_transposes() {
    // a is [2, 3, 4] or its transpose [2, 4, 3]; b is [4, 5] or [5, 4]
    for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
        let sa = if ta { vec![2, 4, 3] } else { vec![2, 3, 4] };
        let sb = if tb { vec![5, 4] } else { vec![4, 5] };
        let (a, b) = (rand(&sa, 3), rand(&sb, 4));
        let mut g = Graph::new();
        let (xa, xb) = (
            g.input("a", sa.clone()).unwrap(),
            g.input("b", sb.clone()).unwrap(),
        );
        let fused = g.matmul_t(xa, xb, ta, tb).unwrap();
        let ea = if ta {
            g.transpose(xa, &[0, 2, 1]).unwrap()
        } else {
            xa
        };
        let eb = if tb {
            g.transpose(xb, &[1, 0]).unwrap()
        } else {
            xb
        };
        let explicit = g.matmul(ea, eb).unwrap();
        assert_eq!(g.shape(fused).unwrap(), &[2, 3, 5]);
        let out = kiln::compile(&g, &[fused, explicit], &kiln::CompileOptions::default())
            .unwrap()
            .run(&[("a", &a), ("b", &b)])
            .unwrap();
        assert_close(out[0].data(), out[1].data(), 1e-6);
        let mut want = vec![0.0; 30];
        matmul_reference(
            View {
                shape: &sa,
                data: a.data(),
            },
            View {
                shape: &sb,
                data: b.data(),
            },
            ta,
            tb,
            &mut want,
            &[2, 3, 5],
        );
        assert_close(out[0].data(), &want, 1e-5);
    }
    let mut g = Graph::new();
    let (xa, xb) = (g.input("a", [3, 4]).unwrap(), g.input("b", [3, 5]).unwrap());
    let e = g.matmul_t(xa, xb, false, false).unwrap_err().to_string();
    assert!(e.contains("K = 4") && e.contains("K = 3"), "{e}");
    assert!(g.matmul_t(xa, xb, true, false).is_ok());
}

/// Values and indices of a fused max pool over `x` (compiled as built: no pass applies).
fn max_pool_with_indices(x: &Tensor, window: PoolWindow) -> (Tensor, Tensor) {
    let (mut g, xi) = graph_with_input(x.shape());
    let pool = g
        .add_op(Op::MaxPoolWithIndices(MaxPoolWithIndices(window)), &[xi])
        .unwrap();
    let (v, i) = (g.output(pool, 0).unwrap(), g.output(pool, 1).unwrap());
    let mut out = compile(&g, &[v, i], &CompileOptions::default())
        .unwrap()
        .run(&[("x", x)])
        .unwrap();
    let i = out.pop().unwrap();
    (out.pop().unwrap(), i)
}

fn square(k: usize, s: usize, pads: (usize, usize)) -> PoolWindow {
    PoolWindow {
        kernel: vec![k, k],
        stride: vec![s, s],
        dilation: vec![1, 1],
        pads: vec![pads, pads],
    }
}

#[test]
fn max_pool_with_indices_returns_pytorch_style_flat_indices() {
    // torch.nn.functional.max_pool2d(x, 2, return_indices=True): ties go to
    // the first maximum in row-major window order; indices are r·W + c.
    let x = t(
        &[1, 1, 4, 4],
        &[
            1.0, 5.0, 2.0, 2.0, //
            5.0, 3.0, 2.0, 0.0, //
            0.0, 0.0, 7.0, 1.0, //
            0.0, 0.0, 1.0, 7.0,
        ],
    );
    let (v, i) = max_pool_with_indices(&x, square(2, 2, (0, 0)));
    assert_eq!(v.data(), &[5.0, 2.0, 0.0, 7.0]);
    assert_eq!(i.data(), &[1.0, 2.0, 8.0, 10.0]);
    // padding is −∞ and never chosen, even over negative inputs
    let (v, i) = max_pool_with_indices(&Tensor::full([1, 1, 3, 3], -1.0), square(2, 2, (1, 1)));
    assert_eq!(v.data(), &[-1.0; 4]);
    assert_eq!(i.data(), &[0.0, 1.0, 3.0, 4.0]);
    // a NaN is the maximum (as torch), at its own index
    let (v, i) = max_pool_with_indices(
        &t(&[1, 1, 2, 2], &[1.0, f32::NAN, 3.0, 2.0]),
        square(2, 2, (0, 0)),
    );
    assert!(v.data()[0].is_nan());
    assert_eq!(i.data(), &[1.0]);
    // the backward scatters through the indices, summing where windows overlap
    let (mut g, gy) = graph_with_input(&[1, 1, 2, 2]);
    let x = g
        .constant(t(
            &[1, 1, 3, 3],
            &[9.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        ))
        .unwrap();
    let w = square(2, 1, (0, 0));
    let pool = g
        .add_op(Op::MaxPoolWithIndices(MaxPoolWithIndices(w.clone())), &[x])
        .unwrap();
    let idx = g.output(pool, 1).unwrap();
    let gx = g
        .add_op(
            Op::MaxPoolBackward(MaxPoolBackward {
                window: w,
                spatial: vec![3, 3],
            }),
            &[gy, idx],
        )
        .unwrap();
    let out = eval(&g, gx, &[("x", &t(&[1, 1, 2, 2], &[1.0, 2.0, 3.0, 4.0]))]);
    // window (0,0) takes the 9; windows (0,1), (1,0), (1,1) see only zeros: their first cells
    assert_eq!(out.data(), &[1.0, 2.0, 0.0, 3.0, 4.0, 0.0, 0.0, 0.0, 0.0]);
}

#[test]
fn reductions_over_every_axis_set_match_a_naive_loop() {
    let shape = [2, 3, 4, 5];
    let mut x = rand(&shape, 11);
    x.data_mut()[17] = f32::NAN; // max propagates it, as torch
    for mask in 1u32..16 {
        let axes: Vec<isize> = (0..4).filter(|d| mask & (1 << d) != 0).collect();
        for max in [false, true] {
            let got = apply(&x, |g, xi| {
                if max {
                    g.max(xi, &axes, false)
                } else {
                    g.sum(xi, &axes, false)
                }
            });
            // naive: every element into the output cell its kept indices name
            let kept: Vec<usize> = (0..4).filter(|d| mask & (1 << d) == 0).collect();
            let mut want = vec![if max { f32::NEG_INFINITY } else { 0.0 }; got.numel()];
            for i in 0..x.numel() {
                let idx = [i / 60, i / 20 % 3, i / 5 % 4, i % 5];
                let o = kept.iter().fold(0, |o, &d| o * shape[d] + idx[d]);
                let v = x.data()[i];
                want[o] = if !max {
                    want[o] + v
                } else if v.is_nan() || want[o].is_nan() {
                    f32::NAN
                } else {
                    want[o].max(v)
                };
            }
            assert_close(got.data(), &want, 1e-5);
        }
    }
}

#[test]
fn in_place_steps_never_overwrite_a_value_a_sibling_still_reads() {
    // a = exp(x) is read by two steps of the same level (b = 3a and c = −a),
    // so neither may write over it (either would corrupt the other); d = b + c
    // may write over b (its last reader), r = relu(d) over d, e = 2r over r.
    // Unrewritten, so that no pass fuses the chain.
    let mut g = Graph::with_seed(1);
    let x = g.input("x", vec![3, 37]).unwrap();
    let a = g.exp(x).unwrap();
    let b = g.mul_scalar(a, 3.0).unwrap();
    let c = g.neg(a).unwrap();
    let d = g.add(b, c).unwrap();
    let r = g.relu(d).unwrap();
    let e = g.mul_scalar(r, 2.0).unwrap();
    let xs: Vec<f32> = (0..3 * 37).map(|i| (i as f32 * 0.37).sin()).collect();
    let exp: Vec<f32> = xs.iter().map(|v| v.exp()).collect();
    let want: Vec<f32> = exp.iter().map(|&v| (3.0 * v + -v).max(0.0) * 2.0).collect();
    let feed = Tensor::from_vec(vec![3, 37], xs).unwrap();
    for threads in [1, 2, 4] {
        let opts = kiln::CompileOptions {
            threads: Some(threads),
            ..kiln::CompileOptions::unrewritten()
        };
        let mut exe = kiln::compile(&g, &[e], &opts).unwrap();
        assert!(
            exe.in_place_steps() >= 3,
            "{} in place",
            exe.in_place_steps()
        );
        for _ in 0..3 {
            let out = exe.run(&[("x", &feed)]).unwrap();
            assert_eq!(out[0].data(), &want[..], "threads {threads}");
        }
        // returned as well, `a` is pinned: still correct, and still exp(x)
        let mut exe = kiln::compile(&g, &[e, a], &opts).unwrap();
        let out = exe.run(&[("x", &feed)]).unwrap();
        assert_eq!(out[0].data(), &want[..], "threads {threads}");
        assert_eq!(out[1].data(), &exp[..], "an output is never overwritten");
    }
}

/// The facts passes and the memory plan read instead of lists of op names.
#[test]
fn op_facts() {
    use kiln::ops::{BinaryOp, UnaryOp};
    let relu = Op::Unary(UnaryOp::Relu);
    let add = Op::Binary(BinaryOp::Add);
    let matmul = Op::MatMul(MatMul {
        trans_a: false,
        trans_b: false,
    });
    let input = Op::Input(Input { name: "x".into() });
    let fill = Op::Fill(Fill {
        shape: vec![2],
        value: 1.0,
    });
    assert!(relu.is_elementwise() && add.is_elementwise() && Op::Select.is_elementwise());
    assert!(!matmul.is_elementwise() && !input.is_elementwise());
    assert!(input.is_interface() && !fill.is_interface() && !relu.is_interface());
    assert!(fill.is_constant() && !input.is_constant());
    assert!(Op::Dropout(Dropout { p: 0.5, seed: 1 }).is_random() && !relu.is_random());
    assert_eq!(
        Op::Output(Output { index: 1 }).view_offset(&[12], 6),
        Some(6)
    );
    assert_eq!(
        Op::Reshape(Reshape { shape: vec![6] }).view_offset(&[2, 3], 6),
        Some(0)
    );
    assert_eq!(Op::StopGradient.view_offset(&[6], 6), Some(0));
    assert_eq!(relu.view_offset(&[6], 6), None);
    // a slice is a view where it is one contiguous range of its input
    let slice = |axis, start, end, step| {
        Op::Slice(Slice {
            axis,
            start,
            end,
            step,
        })
    };
    assert_eq!(slice(0, 1, 3, 1).view_offset(&[4, 5], 10), Some(5));
    assert_eq!(slice(1, 2, 4, 1).view_offset(&[1, 4, 3], 6), Some(6));
    assert_eq!(slice(1, 0, 4, 1).view_offset(&[2, 4, 3], 24), Some(0));
    assert_eq!(slice(1, 1, 3, 1).view_offset(&[2, 4, 3], 12), None);
    assert_eq!(slice(0, 0, 4, 2).view_offset(&[4, 5], 10), None);
    assert_eq!(slice(2, 1, 3, 1).view_offset(&[0, 1, 4], 0), Some(0));
}

/// Contiguous slices run as views of their input: values equal a copying
/// slice's, over inputs, parameters and computed values, including a slice
/// that an in-place element-wise op could overwrite while the base lives on.
#[test]
fn contiguous_slices_read_their_input_in_place() {
    let mut g = Graph::new();
    let x = g.input("x", [4, 3]).unwrap();
    let w = g.param("w", [4, 3], Init::Constant(2.0)).unwrap();
    let e = g.abs(x).unwrap();
    let rows = g.slice(e, 0, 1, 3, 1).unwrap();
    let bumped = g.add_scalar(rows, 1.0).unwrap();
    let wrows = g.slice(w, 0, 2, 4, 1).unwrap();
    let xrows = g.slice(x, 0, 0, 2, 1).unwrap();
    let sum = g.add(bumped, wrows).unwrap();
    let sum = g.add(sum, xrows).unwrap();
    let total = g.sum_all(e).unwrap();
    let data: Vec<f32> = (0..12).map(|i| i as f32 * 0.25 - 1.0).collect();
    let xt = Tensor::from_vec(vec![4, 3], data.clone()).unwrap();
    let mut exe = compile(&g, &[sum, total], &CompileOptions::default()).unwrap();
    let out = exe.run(&[("x", &xt)]).unwrap();
    let want: Vec<f32> = (0..6)
        .map(|i| data[3 + i].abs() + 1.0 + 2.0 + data[i])
        .collect();
    assert_eq!(out[0].data(), &want[..]);
    let want_total: f32 = data.iter().map(|v| v.abs()).sum();
    assert_eq!(out[1].data()[0], want_total);
}

/// The bit patterns of a tensor's elements.
fn bits(t: &Tensor) -> Vec<u32> {
    t.data().iter().map(|v| v.to_bits()).collect()
}

/// Normalising per channel of `[N, C, *]` (BatchNorm's batch statistics)
/// is normalising the rows of the channels' values laid out `[C, N·S]`,
/// bit for bit, forward and backward, constant channels exactly 0.
#[test]
fn per_channel_normalize_is_row_normalize_of_the_channels_values() {
    use kiln::ops::{Normalize, NormalizeBackward};
    let (n, c, s) = (3, 4, 5);
    let mut x = rand(&[n, c, s], 7);
    for b in 0..n {
        for i in 0..s {
            x.data_mut()[(b * c + 2) * s + i] = 1.5; // channel 2 constant
        }
    }
    let gy = rand(&[n, c, s], 8);
    let mut g = Graph::new();
    let xi = g.input("x", [n, c, s]).unwrap();
    let gi = g.input("g", [n, c, s]).unwrap();
    let (eps, channels) = (1e-5, true);
    let y = g
        .add_op(Op::Normalize(Normalize { eps, channels }), &[xi])
        .unwrap();
    let op = NormalizeBackward { eps, channels };
    let dx = g.add_op(Op::NormalizeBackward(op), &[xi, gi]).unwrap();
    // the same through rows: [N, C, S] → [C, N, S] → [C, N·S] and back
    let rows = |g: &mut Graph, v| {
        let t = g.transpose(v, &[1, 0, 2]).unwrap();
        g.reshape(t, &[c as isize, (n * s) as isize]).unwrap()
    };
    let back = |g: &mut Graph, v| {
        let r = g.reshape(v, &[c as isize, n as isize, s as isize]).unwrap();
        g.transpose(r, &[1, 0, 2]).unwrap()
    };
    let (xr, gr) = (rows(&mut g, xi), rows(&mut g, gi));
    let yr = g.normalize(xr, eps).unwrap();
    let yr = back(&mut g, yr);
    let dr = g.normalize_backward(xr, gr, eps).unwrap();
    let dr = back(&mut g, dr);
    let mut exe = compile(&g, &[y, yr, dx, dr], &kiln::CompileOptions::default()).unwrap();
    let out = exe.run(&[("x", &x), ("g", &gy)]).unwrap();
    assert_eq!(bits(&out[0]), bits(&out[1]));
    assert_eq!(bits(&out[2]), bits(&out[3]));
    assert!((0..n).all(|b| (0..s).all(|i| out[0].data()[(b * c + 2) * s + i] == 0.0)));
}

/// `channel_moments` is each channel's mean and biased variance (f64
/// reference), a constant channel's variance exactly 0, a NaN channel NaN,
/// and an empty batch NaN (the mean of nothing).
#[test]
fn channel_moments_are_each_channels_mean_and_biased_variance() {
    use kiln::ops::ChannelMoments;
    let (n, c, s) = (3, 4, 5);
    let mut x = rand(&[n, c, s], 9);
    for b in 0..n {
        for i in 0..s {
            x.data_mut()[(b * c + 1) * s + i] = 2.5; // channel 1 constant
        }
    }
    x.data_mut()[(c + 3) * s + 2] = f32::NAN; // channel 3 holds NaN
    let mut g = Graph::new();
    let xi = g.input("x", [n, c, s]).unwrap();
    let m = g.add_op(Op::ChannelMoments(ChannelMoments), &[xi]).unwrap();
    assert_eq!(g.shape(m).unwrap(), &[c, 2]);
    let out = compile(&g, &[m], &kiln::CompileOptions::default())
        .unwrap()
        .run(&[("x", &x)])
        .unwrap();
    for ch in 0..c {
        let vals: Vec<f64> = (0..n)
            .flat_map(|b| (0..s).map(move |i| (b * c + ch) * s + i))
            .map(|k| x.data()[k] as f64)
            .collect();
        let mean = vals.iter().sum::<f64>() / vals.len() as f64;
        let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / vals.len() as f64;
        let got = &out[0].data()[2 * ch..2 * ch + 2];
        match ch {
            1 => assert_eq!(got, &[2.5, 0.0]),
            3 => assert!(got[0].is_nan() && got[1].is_nan(), "{got:?}"),
            _ => {
                assert!((got[0] as f64 - mean).abs() < 1e-6, "{got:?} {mean}");
                assert!((got[1] as f64 - var).abs() < 1e-6, "{got:?} {var}");
            }
        }
    }
    let mut g = Graph::new();
    let e = g.input("e", [0, 2, 3]).unwrap();
    let m = g.add_op(Op::ChannelMoments(ChannelMoments), &[e]).unwrap();
    let out = compile(&g, &[m], &kiln::CompileOptions::default())
        .unwrap()
        .run(&[("e", &Tensor::zeros([0, 2, 3]))])
        .unwrap();
    assert!(out[0].data().iter().all(|v| v.is_nan()), "{out:?}");
    let s = g.input("s", [3]).unwrap();
    let err = g
        .add_op(Op::ChannelMoments(ChannelMoments), &[s])
        .unwrap_err();
    assert!(
        err.to_string().contains("per channel of [N, C, *]"),
        "{err}"
    );
}
