//! Gradient checks: every op's and layer's VJP against central finite
//! differences, gradient accumulation, unused branches, and max-pool ties.
//!
//! Tolerance: central differences at `eps = 1e-2` and `eps/2` in f32,
//! Richardson-extrapolated; a gradient passes when
//! `|numeric − analytic| ≤ 2e-3 · max(1, |analytic|)`. Inputs are kept away
//! from kinks (ReLU, |x|, max ties) by more than `eps` where a check crosses one.

mod common;
use common::*;
use kiln::nn::{self, Layer, Reduction};
use kiln::ops::{AvgDivisor, PoolWindow};
use kiln::ops::{
    AvgPool, AvgPoolBackward, Conv, ConvInputGrad, ConvKernelGrad, Fill, Fused, MaxPool,
    MaxPoolBackward, MaxPoolWithIndices,
};
use kiln::CompileOptions;
use kiln::OpBuilder;
use kiln::{compile, Feed, Graph, I64Tensor, NodeId, Op, Tensor, Window};

const EPS: f32 = 1e-2;
const TOL: f32 = 2e-3;

/// Builds `y = build(g, inputs)`, takes `loss = Σ y·r` for a fixed random `r`,
/// and checks the gradient w.r.t. every input and parameter against central
/// differences (on up to 24 elements of each), compiled for evaluation.
fn check(values: Vec<Tensor>, build: impl Fn(&mut Graph, &[NodeId]) -> kiln::Result<NodeId>) {
    check_in(false, values, build)
}

/// [`check`] compiled for training (`training`) or evaluation.
fn check_in(
    training: bool,
    values: Vec<Tensor>,
    build: impl Fn(&mut Graph, &[NodeId]) -> kiln::Result<NodeId>,
) {
    check_full(training, values, &[], build)
}

/// [`check`] with `i64` inputs `indices` too, passed to `build` after the
/// f32 inputs (no gradient is taken for them).
fn check_idx(
    values: Vec<Tensor>,
    indices: &[I64Tensor],
    build: impl Fn(&mut Graph, &[NodeId]) -> kiln::Result<NodeId>,
) {
    check_full(false, values, indices, build)
}

fn check_full(
    training: bool,
    values: Vec<Tensor>,
    indices: &[I64Tensor],
    build: impl Fn(&mut Graph, &[NodeId]) -> kiln::Result<NodeId>,
) {
    let mut g = Graph::with_seed(5);
    let names: Vec<String> = (0..values.len()).map(|i| format!("x{i}")).collect();
    let xs: Vec<NodeId> = values
        .iter()
        .zip(&names)
        .map(|(v, n)| g.input(n, v.shape().to_vec()).unwrap())
        .collect();
    let index_names: Vec<String> = (0..indices.len()).map(|i| format!("i{i}")).collect();
    let mut all = xs.clone();
    for (v, n) in indices.iter().zip(&index_names) {
        all.push(g.input_i64(n, v.shape().to_vec()).unwrap());
    }
    let y = build(&mut g, &all).expect("build");
    let ys = g.shape(y).unwrap().to_vec();
    let r = g.constant(Tensor::rand_uniform(ys, 0.5, 1.5, 99)).unwrap();
    let weighted = g.mul(y, r).unwrap();
    let loss = g.sum_all(weighted).unwrap();
    let params: Vec<(String, NodeId)> = g.params().map(|(n, id, _)| (n.to_string(), id)).collect();
    let wrt: Vec<NodeId> = xs
        .iter()
        .copied()
        .chain(params.iter().map(|p| p.1))
        .collect();
    let grads = g.grad(loss, &wrt).unwrap();
    let mut outs = vec![loss];
    outs.extend(&grads);
    let options = CompileOptions {
        training,
        ..CompileOptions::default()
    };
    let mut exe = compile(&g, &outs, &options).unwrap();
    let feeds = |vals: &[Tensor]| -> Vec<(String, Tensor)> {
        names.iter().cloned().zip(vals.iter().cloned()).collect()
    };
    let run = |exe: &mut kiln::Executable, vals: &[Tensor]| -> Vec<Tensor> {
        let f = feeds(vals);
        let mut r: Vec<(&str, &dyn Feed)> = f
            .iter()
            .map(|(n, t)| (n.as_str(), t as &dyn Feed))
            .collect();
        for (n, t) in index_names.iter().zip(indices) {
            r.push((n.as_str(), t));
        }
        exe.run(&r).unwrap()
    };
    let analytic = run(&mut exe, &values);
    let loss_at = |exe: &mut kiln::Executable, vals: &[Tensor]| run(exe, vals)[0].data()[0];
    for (k, &w) in wrt.iter().enumerate() {
        let a = &analytic[1 + k];
        assert_eq!(
            a.shape(),
            g.shape(w).unwrap(),
            "gradient {k} has its node's shape"
        );
        if k >= values.len() && exe.param(&params[k - values.len()].0).is_none() {
            // a parameter this mode does not read (a running statistic in
            // training): the loss does not depend on it
            assert!(a.data().iter().all(|&v| v == 0.0), "gradient {k}: {a:?}");
            continue;
        }
        let n = a.numel();
        let stride = n.div_ceil(24).max(1);
        for i in (0..n).step_by(stride) {
            let mut vals = values.to_vec();
            // central difference at step h, for input or parameter k, element i
            let mut central = |h: f32| -> f32 {
                if k < values.len() {
                    vals[k].data_mut()[i] += h;
                    let up = loss_at(&mut exe, &vals);
                    vals[k].data_mut()[i] -= 2.0 * h;
                    let down = loss_at(&mut exe, &vals);
                    vals[k].data_mut()[i] += h;
                    (up - down) / (2.0 * h)
                } else {
                    let (name, _) = &params[k - values.len()];
                    let orig = exe.param(name).unwrap();
                    let mut p = orig.clone();
                    p.data_mut()[i] += h;
                    exe.set_param(name, &p).unwrap();
                    let up = loss_at(&mut exe, &vals);
                    p.data_mut()[i] -= 2.0 * h;
                    exe.set_param(name, &p).unwrap();
                    let down = loss_at(&mut exe, &vals);
                    exe.set_param(name, &orig).unwrap();
                    (up - down) / (2.0 * h)
                }
            };
            // Richardson extrapolation cancels the O(h²) truncation error
            let numeric = (4.0 * central(EPS / 2.0) - central(EPS)) / 3.0;
            let an = a.data()[i];
            assert!(
                (numeric - an).abs() <= TOL * an.abs().max(1.0),
                "gradient {k} (of {} wrt nodes) element {i}: analytic {an}, numeric {numeric}",
                wrt.len()
            );
        }
    }
}

/// Random values in [-1, 1) moved at least 0.1 away from 0.
fn away_from_zero(shape: &[usize], seed: u64) -> Tensor {
    let mut t = rand(shape, seed);
    t.data_mut()
        .iter_mut()
        .for_each(|v| *v += 0.1f32.copysign(*v));
    t
}

/// Distinct values (a shuffled ramp with step 0.03 > 2·eps), so no
/// perturbation changes which element is a maximum.
fn distinct(shape: &[usize], seed: u64) -> Tensor {
    let n: usize = shape.iter().product();
    let mut v: Vec<f32> = (0..n).map(|i| (i as f32 - n as f32 / 2.0) * 0.03).collect();
    let mut rng = kiln::rng::Rng::new(seed);
    for i in (1..n).rev() {
        v.swap(i, rng.below(i + 1));
    }
    Tensor::from_vec(shape.to_vec(), v).unwrap()
}

#[test]
fn unary_ops() {
    let x = away_from_zero(&[3, 4], 1);
    let pos = Tensor::rand_uniform([3, 4], 0.5, 2.0, 2);
    check(vec![x.clone()], |g, x| g.neg(x[0]));
    check(vec![x.clone()], |g, x| g.exp(x[0]));
    check(vec![x.clone()], |g, x| g.relu(x[0]));
    check(vec![x.clone()], |g, x| g.sigmoid(x[0]));
    check(vec![x.clone()], |g, x| g.tanh(x[0]));
    check(vec![x], |g, x| g.abs(x[0]));
    check(vec![pos.clone()], |g, x| g.log(x[0]));
    check(vec![pos.clone()], |g, x| g.sqrt(x[0]));
    check(vec![pos], |g, x| g.recip(x[0]));
}

/// GELU (exact and tanh), SiLU, LeakyReLU and erf against central
/// differences, over values on both sides of zero and in the tails.
#[test]
fn activation_ops() {
    let x = away_from_zero(&[3, 5], 7);
    let wide =
        Tensor::from_vec(vec![2, 4], vec![-4.0, -2.5, -1.2, -0.3, 0.2, 0.9, 1.7, 3.5]).unwrap();
    for v in [x, wide] {
        check(vec![v.clone()], |g, x| g.erf(x[0]));
        check(vec![v.clone()], |g, x| g.gelu(x[0]));
        check(vec![v.clone()], |g, x| g.gelu_tanh(x[0]));
        check(vec![v.clone()], |g, x| g.silu(x[0]));
        check(vec![v.clone()], |g, x| g.leaky_relu(x[0], 0.01));
        check(vec![v], |g, x| g.leaky_relu(x[0], -0.7));
    }
}

#[test]
fn softmax_ops_and_their_gradients() {
    let x = rand(&[2, 3, 4], 11);
    for axis in [-1, 0, 1] {
        check(vec![x.clone()], |g, x| g.softmax(x[0], axis));
        check(vec![x.clone()], |g, x| g.log_softmax(x[0], axis));
    }
    // the gradient ops themselves, on free operands (second-order terms)
    let (y, gy) = (rand(&[3, 4], 12), rand(&[3, 4], 13));
    for (axis, log) in [(1, false), (1, true), (0, false), (0, true)] {
        check(vec![y.clone(), gy.clone()], |g, x| {
            g.softmax_backward(x[0], x[1], axis, log)
        });
    }
    // and through a softmax: the Hessian-vector path of a real result
    check(vec![rand(&[2, 5], 14), rand(&[2, 5], 15)], |g, x| {
        let y = g.softmax(x[0], -1)?;
        g.softmax_backward(y, x[1], 1, false)
    });
}

#[test]
fn normalize_and_its_gradient_op() {
    for eps in [1e-5, 0.5] {
        check(vec![rand(&[3, 5], 21)], |g, x| g.normalize(x[0], eps));
        check(vec![rand(&[2, 2, 4], 22)], |g, x| g.normalize(x[0], eps));
        // the gradient op in both operands (its own, second-order VJP)
        check(vec![rand(&[3, 5], 23), rand(&[3, 5], 24)], |g, x| {
            g.normalize_backward(x[0], x[1], eps)
        });
        // per channel of [N, C, *] (BatchNorm's batch statistics), both ops
        use kiln::ops::{ChannelMoments, Normalize, NormalizeBackward};
        let channels = true;
        for shape in [vec![3, 2], vec![2, 3, 2, 2]] {
            check(vec![rand(&shape, 28)], |g, x| {
                g.add_op(Op::ChannelMoments(ChannelMoments), &[x[0]])
            });
            check(vec![rand(&shape, 25)], |g, x| {
                g.add_op(Op::Normalize(Normalize { eps, channels }), &[x[0]])
            });
            check(vec![rand(&shape, 26), rand(&shape, 27)], |g, x| {
                let op = NormalizeBackward { eps, channels };
                g.add_op(Op::NormalizeBackward(op), &[x[0], x[1]])
            });
        }
    }
}

#[test]
fn binary_ops_with_broadcasting() {
    let a = rand(&[2, 3], 3);
    let row = rand(&[3], 4);
    let col = Tensor::rand_uniform([2, 1], 0.5, 2.0, 5);
    check(vec![a.clone(), row.clone()], |g, x| g.add(x[0], x[1]));
    check(vec![a.clone(), col.clone()], |g, x| g.sub(x[0], x[1]));
    check(vec![row.clone(), a.clone()], |g, x| g.mul(x[0], x[1]));
    check(vec![a.clone(), col.clone()], |g, x| g.div(x[0], x[1]));
    check(vec![col.clone(), a.clone()], |g, x| g.div(x[0], x[1]));
    let (d1, d2) = (distinct(&[2, 3], 1), distinct(&[2, 3], 2));
    check(vec![d1.clone(), d2.clone()], |g, x| g.maximum(x[0], x[1]));
    check(vec![d1, d2], |g, x| g.minimum(x[0], x[1]));
    // comparisons pass no gradient: only the multiplied operand gets one
    check(vec![a], |g, x| {
        let z = g.scalar(0.0)?;
        let m = g.gt(x[0], z)?;
        g.mul(m, x[0])
    });
}

#[test]
fn maximum_splits_ties_evenly_like_pytorch() {
    let mut g = Graph::new();
    let a = g.input("a", [2]).unwrap();
    let b = g.input("b", [2]).unwrap();
    let m = g.maximum(a, b).unwrap();
    let l = g.sum_all(m).unwrap();
    let gr = g.grad(l, &[a, b]).unwrap();
    let out = compile(&g, &gr, &CompileOptions::default())
        .unwrap()
        .run(&[("a", &t(&[2], &[1.0, 2.0])), ("b", &t(&[2], &[1.0, 0.0]))])
        .unwrap();
    assert_eq!(out[0].data(), &[0.5, 1.0]);
    assert_eq!(out[1].data(), &[0.5, 0.0]);
}

#[test]
fn select_and_reductions() {
    let a = rand(&[2, 3], 6);
    let b = rand(&[3], 7);
    check(vec![a.clone(), b], |g, x| {
        let c = g.constant(t(&[2, 3], &[1.0, 0.0, 1.0, 0.0, 0.0, 1.0]))?;
        g.select(c, x[0], x[1])
    });
    let x = distinct(&[2, 3, 4], 3);
    check(vec![x.clone()], |g, x| g.sum(x[0], &[1], false));
    check(vec![x.clone()], |g, x| g.sum(x[0], &[0, 2], true));
    check(vec![x.clone()], |g, x| g.mean(x[0], &[-1], false));
    check(vec![x.clone()], |g, x| g.mean(x[0], &[0, 1, 2], false));
    check(vec![x.clone()], |g, x| g.max(x[0], &[2], false));
    check(vec![x.clone()], |g, x| g.max(x[0], &[0, 1], true));
    check(vec![x], |g, x| g.sum_all(x[0]));
}

#[test]
fn movement_ops() {
    let x = rand(&[2, 3, 4], 8);
    check(vec![x.clone()], |g, x| g.reshape(x[0], &[4, -1]));
    check(vec![x.clone()], |g, x| g.transpose(x[0], &[2, 0, 1]));
    check(vec![rand(&[3, 1], 9)], |g, x| {
        g.broadcast_to(x[0], &[2, 3, 4])
    });
    check(vec![x.clone()], |g, x| g.slice(x[0], 2, 1, 4, 1));
    check(vec![x.clone()], |g, x| g.slice(x[0], 2, 0, 4, 3));
    check(vec![x.clone()], |g, x| g.slice(x[0], 1, 1, 3, 2));
    check(vec![rand(&[2, 7], 1)], |g, x| g.slice(x[0], 1, 1, 6, 2));
    check(vec![x.clone()], |g, x| {
        g.pad(x[0], &[(0, 1), (2, 0), (1, 1)], 0.5)
    });
    check(vec![x.clone(), rand(&[2, 1, 4], 2)], |g, x| {
        g.concat(&[x[0], x[1]], 1)
    });
    check(vec![x.clone(), x.clone()], |g, x| g.stack(&[x[0], x[1]], 1));
    check(vec![rand(&[3], 3), rand(&[3], 4), rand(&[3], 5)], |g, x| {
        g.stack(x, -1)
    });
}

#[test]
fn unfold_fold_matmul_fill() {
    let w2 = Window {
        kernel: vec![2, 3],
        stride: vec![2, 1],
        padding: vec![1, 0],
        dilation: vec![1, 2],
    };
    check(vec![rand(&[1, 2, 5, 6], 1)], |g, x| {
        g.unfold(x[0], w2.clone())
    });
    let w1 = Window {
        kernel: vec![3],
        stride: vec![2],
        padding: vec![2],
        dilation: vec![1],
    };
    check(vec![rand(&[2, 1, 7], 2)], |g, x| g.unfold(x[0], w1.clone()));
    // fold of a [1, 2, 6, L] column tensor
    let l = Window::new(&[2, 3])
        .out_size("test", &[3, 4])
        .unwrap()
        .iter()
        .product::<usize>();
    check(vec![rand(&[1, 2, 6, l], 3)], |g, x| {
        g.fold(x[0], Window::new(&[2, 3]), &[3, 4])
    });
    // 3-D windows (the generic kernels): unfold, and fold of its shape
    let w3 = Window {
        kernel: vec![2, 1, 2],
        stride: vec![1, 2, 1],
        padding: vec![1, 0, 0],
        dilation: vec![2, 1, 1],
    };
    check(vec![rand(&[1, 2, 3, 3, 3], 10)], |g, x| {
        g.unfold(x[0], w3.clone())
    });
    let l3: usize = w3.out_size("test", &[3, 3, 3]).unwrap().iter().product();
    check(vec![rand(&[1, 2, 4, l3], 11)], |g, x| {
        g.fold(x[0], w3.clone(), &[3, 3, 3])
    });
    check(vec![rand(&[3, 4], 4), rand(&[4, 2], 5)], |g, x| {
        g.matmul(x[0], x[1])
    });
    check(vec![rand(&[2, 3, 4], 6), rand(&[4, 5], 7)], |g, x| {
        g.matmul(x[0], x[1])
    });
    check(vec![rand(&[1, 3, 4], 8), rand(&[2, 4, 2], 9)], |g, x| {
        g.matmul(x[0], x[1])
    });
    check(vec![rand(&[2, 2], 1)], |g, x| {
        let f = g.fill(&[2, 2], 3.0)?;
        g.mul(x[0], f)
    });
}

#[test]
fn dropout_gradient_uses_the_forward_mask() {
    let x = Tensor::full([200], 1.0);
    let mut g = Graph::new();
    let xi = g.input("x", [200]).unwrap();
    let y = g.dropout(xi, 0.3, 11).unwrap();
    let l = g.sum_all(y).unwrap();
    let gx = g.grad(l, &[xi]).unwrap()[0];
    let training = CompileOptions {
        training: true,
        ..CompileOptions::default()
    };
    let mut exe = compile(&g, &[y, gx], &training).unwrap();
    for _ in 0..2 {
        let out = exe.run(&[("x", &x)]).unwrap();
        assert!(
            out[0] == out[1],
            "with x = 1, d sum(dropout(x)) / dx equals dropout(x)"
        );
        assert!(out[0].data().contains(&0.0));
    }
}

#[test]
fn linear_and_activations_layers() {
    check(vec![rand(&[3, 4], 1)], |g, x| {
        nn::Linear::new(4, 5).build(g, x[0])
    });
    check(vec![rand(&[2, 3, 4], 2)], |g, x| {
        nn::Linear::new(4, 2).bias(false).build(g, x[0])
    });
    check(vec![rand(&[3, 5], 3)], |g, x| {
        nn::Softmax(-1).build(g, x[0])
    });
    check(vec![rand(&[3, 5], 4)], |g, x| {
        nn::LogSoftmax(0).build(g, x[0])
    });
    check(vec![rand(&[2, 3, 2, 2], 5)], |g, x| {
        nn::GlobalAvgPool2d.build(g, x[0])
    });
    check(vec![rand(&[2, 3, 2], 6)], |g, x| nn::Flatten.build(g, x[0]));
    check(vec![rand(&[2, 3], 7)], |g, x| {
        nn::Dropout::new(0.5).build(g, x[0])
    });
}

#[test]
fn norm_layers() {
    check(vec![rand(&[3, 5], 31)], |g, x| {
        nn::LayerNorm::new(&[5]).build(g, x[0])
    });
    check(vec![rand(&[2, 3, 4], 32)], |g, x| {
        nn::LayerNorm::new(&[3, 4]).eps(1e-2).build(g, x[0])
    });
    check(vec![rand(&[2, 4, 3], 33)], |g, x| {
        nn::GroupNorm::new(2, 4).build(g, x[0])
    });
}

/// `train_eval(x², eˣ)·x`: each mode's gradient is its own branch's
/// (`3x²` or `(x + 1)·eˣ`), though both branches share `x`.
#[test]
fn train_eval_differentiates_each_mode() {
    for training in [true, false] {
        check_in(training, vec![rand(&[2, 3], 38)], |g, x| {
            let (sq, e) = (g.mul(x[0], x[0])?, g.exp(x[0])?);
            let m = g.train_eval(sq, e)?;
            g.mul(m, x[0])
        });
    }
}

/// BatchNorm in both modes: through the batch statistics in training, the
/// running statistics (state, differentiated like parameters here) in
/// evaluation.
#[test]
fn batch_norm_in_training_and_evaluation() {
    for training in [true, false] {
        check_in(training, vec![rand(&[3, 2, 2, 2], 34)], |g, x| {
            let y = nn::BatchNorm2d::new(2).name("bn").build(g, x[0])?;
            if !training {
                // away from the starting statistics (0 and 1)
                g.set_param_value("bn.running_mean", t(&[2], &[0.3, -0.2]))?;
                g.set_param_value("bn.running_var", t(&[2], &[0.5, 2.0]))?;
            }
            Ok(y)
        });
        check_in(training, vec![rand(&[4, 3], 35)], |g, x| {
            nn::BatchNorm1d::new(3).build(g, x[0])
        });
        check_in(training, vec![rand(&[2, 3, 4], 36)], |g, x| {
            nn::BatchNorm1d::new(3)
                .affine(false)
                .momentum(None)
                .build(g, x[0])
        });
        check_in(training, vec![rand(&[2, 2, 3], 37)], |g, x| {
            nn::BatchNorm1d::new(2)
                .track_running_stats(false)
                .build(g, x[0])
        });
    }
}

/// (in, out, kernel, stride, padding, dilation, groups, input size)
type Conv2dCase = (
    usize,
    usize,
    [usize; 2],
    usize,
    usize,
    usize,
    usize,
    [usize; 2],
);

#[test]
fn conv2d_layer_over_strides_paddings_dilations_groups() {
    let cases: [Conv2dCase; 5] = [
        (2, 3, [3, 3], 1, 1, 1, 1, [5, 5]),
        (2, 4, [3, 2], 2, 0, 1, 2, [7, 6]),
        (1, 2, [3, 3], 1, 2, 2, 1, [6, 5]),
        (4, 4, [2, 2], 2, 1, 1, 4, [5, 4]),
        (3, 2, [1, 1], 1, 0, 1, 1, [3, 3]),
    ];
    for (cin, cout, k, s, p, d, groups, size) in cases {
        let x = rand(&[2, cin, size[0], size[1]], 7);
        check(vec![x], |g, x| {
            nn::Conv2d::new(cin, cout, 1)
                .kernel(k)
                .stride(s)
                .padding(p)
                .dilation(d)
                .groups(groups)
                .build(g, x[0])
        });
    }
}

#[test]
fn conv1d_layer_over_strides_paddings_dilations_groups() {
    for (cin, cout, k, s, p, d, groups, len) in [
        (2, 3, 3, 1, 1, 1, 1, 9),
        (4, 2, 2, 2, 0, 1, 2, 7),
        (2, 2, 3, 1, 2, 2, 1, 6),
        (2, 4, 3, 3, 1, 1, 2, 10),
    ] {
        let x = rand(&[2, cin, len], 3);
        check(vec![x], |g, x| {
            nn::Conv1d::new(cin, cout, k)
                .stride(s)
                .padding(p)
                .dilation(d)
                .groups(groups)
                .build(g, x[0])
        });
    }
}

#[test]
fn pooling_layers() {
    for (k, s, p, d, ceil, size) in [
        (2, 2, 0, 1, false, [4, 4]),
        (3, 2, 1, 1, false, [5, 6]),
        (3, 2, 1, 1, true, [6, 6]),
        (2, 1, 1, 2, false, [5, 5]),
    ] {
        let x = distinct(&[2, 2, size[0], size[1]], 4);
        check(vec![x], |g, x| {
            nn::MaxPool2d::new(k)
                .stride(s)
                .padding(p)
                .dilation(d)
                .ceil_mode(ceil)
                .build(g, x[0])
        });
    }
    for (k, s, p, ceil, inc) in [
        (2, 2, 0, false, true),
        (3, 2, 1, false, true),
        (3, 2, 1, false, false),
        (3, 2, 1, true, true),
        (3, 2, 1, true, false),
    ] {
        let x = rand(&[1, 2, 7, 6], 5);
        check(vec![x], |g, x| {
            nn::AvgPool2d::new(k)
                .stride(s)
                .padding(p)
                .ceil_mode(ceil)
                .count_include_pad(inc)
                .build(g, x[0])
        });
    }
}

#[test]
fn adaptive_avg_pool_layer() {
    for out in [[3, 2], [2, 2], [4, 3]] {
        check(vec![rand(&[1, 2, 5, 4], 42)], |g, x| {
            nn::AdaptiveAvgPool2d::new(out).build(g, x[0])
        });
    }
}

#[test]
fn same_padded_conv_layer() {
    check(vec![rand(&[1, 2, 4, 5], 62)], |g, x| {
        nn::Conv2d::new(2, 2, 1)
            .kernel([2, 3])
            .padding_same()
            .build(g, x[0])
    });
}

#[test]
fn upsample_layer() {
    check(vec![rand(&[1, 2, 2, 3], 52)], |g, x| {
        nn::Upsample::nearest([2, 3]).build(g, x[0])
    });
}

#[test]
fn gather_and_its_backward() {
    let idx = [I64Tensor::from_vec([2, 2], vec![2, 0, 2, 1]).unwrap()];
    // repeated indices: the data gradient sums them
    check_idx(vec![rand(&[2, 3, 2], 40)], &idx, |g, x| {
        g.gather(x[0], x[1], 1)
    });
    check_idx(vec![rand(&[3, 4], 41)], &idx, |g, x| {
        g.gather(x[0], x[1], 0)
    });
    // gather_backward is linear in gy: its gradient is a gather
    check_idx(vec![rand(&[3, 2, 2, 2], 42)], &idx, |g, x| {
        let op = kiln::ops::GatherBackward { axis: 1, size: 4 };
        g.add_op(Op::GatherBackward(op), &[x[0], x[1]])
    });
}

#[test]
fn embedding_layer() {
    let idx = [I64Tensor::from_vec([2, 3], vec![1, 3, 1, 0, 4, 1]).unwrap()];
    check_idx(vec![], &idx, |g, x| nn::Embedding::new(5, 3).build(g, x[0]));
}

#[test]
fn scan_op() {
    // carry' = tanh(carry·w + x), forward and reverse
    for reverse in [false, true] {
        let values = vec![rand(&[2, 2], 70), rand(&[4, 2], 71), rand(&[2, 2], 72)];
        check(values, |g, x| {
            let body = kiln::ops::ScanBody::build(&[2, 2], &[&[2]], &[&[2, 2]], |b, c, xt, k| {
                let cw = b.matmul(c, k[0])?;
                let s = b.add(cw, xt[0])?;
                b.tanh(s)
            })?;
            g.scan(&body, x[0], &[x[1]], &[x[2]], reverse)
        });
    }
}

#[test]
fn conv_transpose_layers() {
    check(vec![rand(&[2, 4, 3, 3], 60)], |g, x| {
        nn::ConvTranspose2d::new(4, 2, 3)
            .stride(2)
            .padding(1)
            .output_padding(1)
            .groups(2)
            .build(g, x[0])
    });
    // output_padding at or above the stride (below the dilation)
    check(vec![rand(&[1, 2, 4], 61)], |g, x| {
        nn::ConvTranspose1d::new(2, 3, 2)
            .dilation(3)
            .output_padding(2)
            .build(g, x[0])
    });
}

#[test]
fn attention_layers() {
    let (q, k) = (rand(&[2, 3, 4], 50), rand(&[2, 5, 4], 51));
    let v = rand(&[2, 5, 3], 52);
    check(vec![q.clone(), k, v], |g, x| {
        let causal = nn::Sdpa {
            is_causal: true,
            ..nn::Sdpa::default()
        };
        nn::scaled_dot_product_attention(g, x[0], x[1], x[2], &causal)
    });
    check(vec![rand(&[3, 2, 4], 53)], |g, x| {
        nn::MultiheadAttention::new(4, 2).build(g, x[0])
    });
    check(vec![rand(&[2, 3, 4], 54)], |g, x| {
        nn::TransformerEncoderLayer::new(4, 2)
            .dim_feedforward(6)
            .dropout(0.0)
            .batch_first(true)
            .norm_first(true)
            .activation(nn::Activation::Gelu) // smooth: no kink for the differences to straddle
            .build(g, x[0])
    });
}

#[test]
fn lstm_layer() {
    check(vec![rand(&[2, 3, 2], 9)], |g, x| {
        nn::Lstm::new(2, 3).build(g, x[0])
    });
    check(vec![rand(&[3, 2, 2], 10)], |g, x| {
        let lstm = nn::Lstm::new(2, 3)
            .num_layers(2)
            .bidirectional(true)
            .batch_first(false);
        Ok(lstm
            .forward(g, x[0], None)?
            .c_n
            .expect("an LSTM's cell state"))
    });
    check(vec![rand(&[2, 3, 2], 11), rand(&[2, 2, 3], 12)], |g, x| {
        let gru = nn::Gru::new(2, 3).bidirectional(true);
        let r = gru.forward(g, x[0], Some(x[1]))?;
        let flat = g.reshape(r.h_n, &[-1])?;
        let out = g.reshape(r.output, &[-1])?;
        g.concat(&[flat, out], 0)
    });
}

#[test]
fn losses() {
    let logits = rand(&[4, 3], 1);
    let labels = [I64Tensor::from(vec![0, 2, 1, 2])];
    let ignoring = [I64Tensor::from(vec![0, -100, 1, 2])];
    for reduction in [Reduction::Mean, Reduction::Sum, Reduction::None] {
        for labels in [&labels, &ignoring] {
            check_idx(vec![logits.clone()], labels, |g, x| {
                nn::softmax_cross_entropy(g, x[0], x[1], reduction)
            });
        }
    }
    check(vec![rand(&[3, 2], 2), rand(&[3, 2], 3)], |g, x| {
        nn::mse_loss(g, x[0], x[1], Reduction::Mean)
    });
    for (reduction, label_smoothing) in [(Reduction::Mean, 0.1), (Reduction::None, 1.0)] {
        for (labels, ignore_index) in [(&labels, None), (&ignoring, Some(-100))] {
            let options = nn::CrossEntropy {
                reduction,
                label_smoothing,
                ignore_index,
            };
            check_idx(vec![logits.clone()], labels, |g, x| {
                nn::cross_entropy(g, x[0], x[1], &options)
            });
        }
    }
    for reduction in [Reduction::Mean, Reduction::Sum, Reduction::None] {
        check(vec![rand(&[3, 4], 4), rand(&[3, 4], 5)], |g, x| {
            nn::binary_cross_entropy_with_logits(g, x[0], x[1], reduction)
        });
    }
    // the cross-entropy value itself: −log softmax(logits)[label], averaged
    let mut g = Graph::new();
    let (l, y) = (
        g.input("l", [2, 2]).unwrap(),
        g.input_i64("y", [2]).unwrap(),
    );
    let ce = nn::softmax_cross_entropy(&mut g, l, y, Reduction::Mean).unwrap();
    let out = compile(&g, &[ce], &CompileOptions::default())
        .unwrap()
        .run(&[
            ("l", &t(&[2, 2], &[0.0, 0.0, 2.0, 0.0])),
            ("y", &I64Tensor::from(vec![1, 0])),
        ])
        .unwrap();
    let want = (std::f32::consts::LN_2 + (1.0 + (-2.0f32).exp()).ln()) / 2.0;
    assert!((out[0].data()[0] - want).abs() < 1e-6);
}

#[test]
fn composite_cnn_with_cross_entropy() {
    let x = rand(&[2, 1, 6, 6], 4);
    check_idx(vec![x], &[I64Tensor::from(vec![2, 0])], |g, x| {
        let net = nn::Sequential::new()
            .push(nn::Conv2d::new(1, 2, 3).padding(1))
            .push(nn::Relu)
            .push(nn::MaxPool2d::new(2))
            .push(nn::Flatten)
            .push(nn::Linear::new(18, 3));
        let logits = net.build(g, x[0])?;
        nn::softmax_cross_entropy(g, logits, x[1], Reduction::Mean)
    });
}

#[test]
fn gradients_accumulate_over_paths() {
    // y = x*x + x  ⇒  dy/dx = 2x + 1
    let x = rand(&[5], 2);
    let mut g = Graph::new();
    let xi = g.input("x", [5]).unwrap();
    let sq = g.mul(xi, xi).unwrap();
    let y = g.add(sq, xi).unwrap();
    let l = g.sum_all(y).unwrap();
    let gx = g.grad(l, &[xi]).unwrap()[0];
    let got = compile(&g, &[gx], &CompileOptions::default())
        .unwrap()
        .run(&[("x", &x)])
        .unwrap()
        .remove(0);
    let want: Vec<f32> = x.data().iter().map(|v| 2.0 * v + 1.0).collect();
    assert_close(got.data(), &want, 1e-6);
}

#[test]
fn unused_branches_get_no_backward_nodes() {
    let mut g = Graph::new();
    let x = g.input("x", [3]).unwrap();
    let w = g.input("w", [3]).unwrap();
    let unused = g.exp(w).unwrap();
    let sq = g.mul(x, x).unwrap();
    let l = g.sum_all(sq).unwrap();
    let before: Vec<NodeId> = g.node_ids();
    let grads = g.grad(l, &[x, w]).unwrap();
    let new: Vec<NodeId> = g
        .node_ids()
        .into_iter()
        .filter(|n| !before.contains(n))
        .collect();
    for n in &new {
        let ops = g.operands(*n);
        assert!(
            !ops.contains(&unused) && !ops.contains(&w),
            "no backward node reads the unused branch"
        );
    }
    // w's gradient is a zero fill
    assert!(matches!(g.node(grads[1]).unwrap().op, Op::Fill(Fill { value, .. }) if value == 0.0));
    let out = compile(&g, &grads, &CompileOptions::default())
        .unwrap()
        .run(&[
            ("x", &t(&[3], &[1.0, 2.0, 3.0])),
            ("w", &t(&[3], &[0.0; 3])),
        ])
        .unwrap();
    assert_eq!(out[0].data(), &[2.0, 4.0, 6.0]);
    assert_eq!(out[1].data(), &[0.0; 3]);
    assert!(g.grad(sq, &[x]).unwrap_err().to_string().contains("scalar"));
}

/// Gradient of Σ maxpool(x) w.r.t. x.
fn pool_grad(x: &Tensor, pool: nn::MaxPool2d) -> Tensor {
    let mut g = Graph::new();
    let xi = g.input("x", x.shape().to_vec()).unwrap();
    let y = pool.build(&mut g, xi).unwrap();
    let l = g.sum_all(y).unwrap();
    let gx = g.grad(l, &[xi]).unwrap()[0];
    compile(&g, &[gx], &CompileOptions::default())
        .unwrap()
        .run(&[("x", x)])
        .unwrap()
        .remove(0)
}

#[test]
fn maxpool_ties_send_the_gradient_to_the_first_maximum_row_major() {
    // all-equal window (as after a ReLU): only the top-left cell gets it
    let zeros = Tensor::zeros([1, 1, 2, 2]);
    assert_eq!(
        pool_grad(&zeros, nn::MaxPool2d::new(2)).data(),
        &[1.0, 0.0, 0.0, 0.0]
    );
    // [[1, 3], [3, 2]]: the first 3 in row-major order
    let x = t(&[1, 1, 2, 2], &[1.0, 3.0, 3.0, 2.0]);
    assert_eq!(
        pool_grad(&x, nn::MaxPool2d::new(2)).data(),
        &[0.0, 1.0, 0.0, 0.0]
    );
    // overlapping 1x2 windows over [5, 5, 5]: each window's left cell
    let row = t(&[1, 1, 1, 3], &[5.0, 5.0, 5.0]);
    assert_eq!(
        pool_grad(&row, nn::MaxPool2d::new(1).kernel([1, 2]).stride(1)).data(),
        &[1.0, 1.0, 0.0]
    );
    // padding never wins, even against a negative input
    let neg = Tensor::full([1, 1, 2, 2], -3.0);
    assert_eq!(
        pool_grad(&neg, nn::MaxPool2d::new(2).stride(2).padding(1)).data(),
        &[1.0, 1.0, 1.0, 1.0]
    );
}

#[test]
fn grad_leaves_no_dead_backward_nodes() {
    // conv1's im2col operand needs no gradient (it depends only on the input):
    // the matmul rule's branch for it must not stay in the graph
    let mut g = Graph::with_seed(1);
    let x = g.input("x", [2, 1, 6, 6]).unwrap();
    let y = nn::Sequential::new()
        .push(nn::Conv2d::new(1, 2, 3))
        .push(nn::Relu)
        .build(&mut g, x)
        .unwrap();
    let l = g.sum_all(y).unwrap();
    let before = g.node_ids();
    let params: Vec<NodeId> = g.trainable_params().into_iter().map(|p| p.1).collect();
    let grads = g.grad(l, &params).unwrap();
    let live = kiln::graph::order::ancestors_order(&g, &grads);
    for n in g.node_ids().into_iter().filter(|n| !before.contains(n)) {
        assert!(
            live.contains(&n),
            "backward node {:?} feeds no gradient",
            g.node(n).unwrap().op
        );
    }
}

#[test]
fn fused_conv_op_vjp() {
    let w2 = Window {
        kernel: vec![3, 2],
        stride: vec![2, 1],
        padding: vec![1, 1],
        dilation: vec![1, 2],
    };
    // weights at the layers' initial scale (±1/√fan_in) keep the loss small enough for f32 differences
    let small = |shape: &[usize], seed| Tensor::rand_uniform(shape.to_vec(), -0.3, 0.3, seed);
    check(
        vec![
            rand(&[2, 4, 6, 5], 1),
            small(&[6, 2, 3, 2], 2),
            rand(&[6], 3),
        ],
        |g, x| {
            g.add_op(
                Op::Conv(Conv {
                    window: w2.clone(),
                    groups: 2,
                    residual: false,
                    epilogue: vec![],
                }),
                &[x[0], x[1], x[2]],
            )
        },
    );
    let w1 = Window {
        kernel: vec![3],
        stride: vec![2],
        padding: vec![2],
        dilation: vec![1],
    };
    check(vec![rand(&[2, 3, 9], 4), small(&[2, 3, 3], 5)], |g, x| {
        g.add_op(
            Op::Conv(Conv {
                window: w1.clone(),
                groups: 1,
                residual: false,
                epilogue: vec![kiln::ops::UnaryOp::Tanh],
            }),
            &[x[0], x[1]],
        )
    });
    // a residual operand, with and without a bias, before the epilogue
    for bias in [false, true] {
        let mut values = vec![rand(&[2, 3, 9], 6), small(&[2, 3, 3], 7)];
        values.extend(bias.then(|| rand(&[2], 8)));
        values.push(rand(&[2, 2, 6], 9));
        check(values, |g, x| {
            g.add_op(
                Op::Conv(Conv {
                    window: w1.clone(),
                    groups: 1,
                    residual: true,
                    epilogue: vec![kiln::ops::UnaryOp::Tanh],
                }),
                x,
            )
        });
    }
}

#[test]
fn fused_conv_gradient_ops_vjp() {
    let w2 = Window {
        kernel: vec![3, 2],
        stride: vec![2, 1],
        padding: vec![1, 0],
        dilation: vec![1, 2],
    };
    // x [2, 4, 6, 5] → gy [2, 6, 3, 3] with groups 2
    check(
        vec![rand(&[2, 4, 6, 5], 1), rand(&[2, 6, 3, 3], 2)],
        |g, x| {
            g.add_op(
                Op::ConvKernelGrad(ConvKernelGrad {
                    window: w2.clone(),
                    groups: 2,
                }),
                &[x[0], x[1]],
            )
        },
    );
    let small = |shape: &[usize], seed| Tensor::rand_uniform(shape.to_vec(), -0.3, 0.3, seed);
    check(
        vec![small(&[6, 2, 3, 2], 3), rand(&[2, 6, 3, 3], 4)],
        |g, x| {
            g.add_op(
                Op::ConvInputGrad(ConvInputGrad {
                    window: w2.clone(),
                    groups: 2,
                    spatial: vec![6, 5],
                }),
                &[x[0], x[1]],
            )
        },
    );
    let w1 = Window {
        kernel: vec![3],
        stride: vec![1],
        padding: vec![1],
        dilation: vec![2],
    };
    check(vec![rand(&[2, 2, 7], 5), rand(&[2, 3, 5], 6)], |g, x| {
        g.add_op(
            Op::ConvKernelGrad(ConvKernelGrad {
                window: w1.clone(),
                groups: 1,
            }),
            &[x[0], x[1]],
        )
    });
    check(vec![small(&[3, 2, 3], 7), rand(&[2, 3, 5], 8)], |g, x| {
        g.add_op(
            Op::ConvInputGrad(ConvInputGrad {
                window: w1.clone(),
                groups: 1,
                spatial: vec![7],
            }),
            &[x[0], x[1]],
        )
    });
}

fn pool_window(
    kernel: &[usize],
    stride: &[usize],
    dilation: &[usize],
    pads: &[(usize, usize)],
) -> PoolWindow {
    PoolWindow {
        kernel: kernel.to_vec(),
        stride: stride.to_vec(),
        dilation: dilation.to_vec(),
        pads: pads.to_vec(),
    }
}

#[test]
fn fused_pool_ops_vjp() {
    // asymmetric (ceil_mode-like) padding and dilation in 2-D, and a 1-D window
    let cases = [
        (
            pool_window(&[3, 2], &[2, 1], &[1, 2], &[(1, 2), (0, 1)]),
            vec![2, 2, 7, 6],
        ),
        (pool_window(&[3], &[2], &[1], &[(1, 1)]), vec![2, 3, 8]),
    ];
    for (w, xshape) in cases {
        check(vec![distinct(&xshape, 1)], |g, x| {
            let pool = g.add_op(
                Op::MaxPoolWithIndices(MaxPoolWithIndices(w.clone())),
                &[x[0]],
            )?;
            g.output(pool, 0)
        });
        check(vec![distinct(&xshape, 1)], |g, x| {
            g.add_op(Op::MaxPool(MaxPool(w.clone())), &[x[0]])
        });
        for divisor in [
            AvgDivisor::Window,
            AvgDivisor::PaddedInput,
            AvgDivisor::RealCells,
        ] {
            check(vec![rand(&xshape, 2)], |g, x| {
                g.add_op(
                    Op::AvgPool(AvgPool {
                        window: w.clone(),
                        divisor,
                    }),
                    &[x[0]],
                )
            });
        }
        // the backward ops, differentiated w.r.t. the upstream gradient
        let spatial = xshape[2..].to_vec();
        let mut ys = xshape[..2].to_vec();
        ys.extend(w.out_size("pool", &spatial).unwrap().iter().copied());
        let xv = distinct(&xshape, 3);
        check(vec![rand(&ys, 4)], |g, gy| {
            let x = g.constant(xv.clone())?;
            let pool = g.add_op(Op::MaxPoolWithIndices(MaxPoolWithIndices(w.clone())), &[x])?;
            let indices = g.output(pool, 1)?;
            g.add_op(
                Op::MaxPoolBackward(MaxPoolBackward {
                    window: w.clone(),
                    spatial: spatial.clone(),
                }),
                &[gy[0], indices],
            )
        });
        check(vec![rand(&ys, 5)], |g, gy| {
            g.add_op(
                Op::AvgPoolBackward(AvgPoolBackward {
                    window: w.clone(),
                    divisor: AvgDivisor::RealCells,
                    spatial: spatial.clone(),
                }),
                &[gy[0]],
            )
        });
    }
}

#[test]
fn stop_gradient_is_the_identity_with_no_gradient() {
    // d/dx Σ stop_gradient(x)·x = stop_gradient(x) = x, not 2x
    let mut g = Graph::new();
    let x = g.input("x", [3]).unwrap();
    let s = g.stop_gradient(x).unwrap();
    let y = g.mul(s, x).unwrap();
    let l = g.sum_all(y).unwrap();
    let gx = g.grad(l, &[x]).unwrap()[0];
    let xv = t(&[3], &[1.0, -2.0, 3.0]);
    let out = compile(&g, &[s, gx], &CompileOptions::default())
        .unwrap()
        .run(&[("x", &xv)])
        .unwrap();
    assert_eq!(out[0].data(), xv.data());
    assert_eq!(out[1].data(), xv.data());
    // softmax's max shift is cut off: no max mask in its backward graph
    let mut g = Graph::new();
    let x = g.input("x", [2, 4]).unwrap();
    let p = nn::softmax(&mut g, x, -1).unwrap();
    let l = g.sum_all(p).unwrap();
    g.grad(l, &[x]).unwrap();
    assert!(g
        .node_ids()
        .iter()
        .all(|&n| !matches!(g.node(n).unwrap().op, Op::FirstMaxMask(_))));
}

#[test]
fn fused_elementwise_op_vjp() {
    use kiln::ops::fused::Instr;
    use kiln::ops::{BinaryOp, UnaryOp};
    // select(gt(tanh(a), 0), tanh(a)·b, exp(−b)·s + 0.5) with a scalar operand s
    let expr = vec![
        Instr::Operand(0),
        Instr::Operand(1),
        Instr::Operand(2),
        Instr::Unary(UnaryOp::Tanh, 0),
        Instr::Const(0.0),
        Instr::Binary(BinaryOp::Gt, 3, 4),
        Instr::Binary(BinaryOp::Mul, 3, 1),
        Instr::Unary(UnaryOp::Neg, 1),
        Instr::Unary(UnaryOp::Exp, 7),
        Instr::Binary(BinaryOp::Mul, 8, 2),
        Instr::Const(0.5),
        Instr::Binary(BinaryOp::Add, 9, 10),
        Instr::Select(5, 6, 11),
    ];
    check(
        vec![away_from_zero(&[2, 5], 1), rand(&[2, 5], 2), rand(&[1], 3)],
        |g, x| g.add_op(Op::Fused(Fused { expr: expr.clone() }), x),
    );
}

#[test]
fn bce_with_logits_is_exact_and_finite_at_zero_and_extremes() {
    // per element, against log(1 + e^x) − x·t in f64, and its gradients
    // σ(x) − t and −x, at 0 and where e^x overflows f32
    let xs = [
        0.0f32, 1.0, -1.0, 30.0, -30.0, 100.0, -100.0, 1e30, -1e30, 17.5,
    ];
    let ts = [0.0f32, 0.3, 1.0, 0.0, 1.0, 1.0, 0.0, 0.5, 0.5, 0.9];
    let n = xs.len();
    let mut g = Graph::new();
    let (x, tgt) = (g.input("x", [n]).unwrap(), g.input("t", [n]).unwrap());
    let loss = nn::binary_cross_entropy_with_logits(&mut g, x, tgt, Reduction::None).unwrap();
    let total = g.sum_all(loss).unwrap();
    let grads = g.grad(total, &[x, tgt]).unwrap();
    let out = compile(&g, &[loss, grads[0], grads[1]], &CompileOptions::default())
        .unwrap()
        .run(&[("x", &t(&[n], &xs)), ("t", &t(&[n], &ts))])
        .unwrap();
    for i in 0..n {
        let (x, t) = (xs[i] as f64, ts[i] as f64);
        let softplus = x.max(0.0) + (-x.abs()).exp().ln_1p();
        let want = [softplus - x * t, 1.0 / (1.0 + (-x).exp()) - t, -x];
        for (k, w) in want.iter().enumerate() {
            let got = out[k].data()[i] as f64;
            assert!(
                (got - w).abs() <= 1e-6 * w.abs().max(1.0),
                "x = {x}, t = {t}: output {k} is {got}, want {w}"
            );
        }
    }
    // NaN stays NaN, in the loss and the logits' gradient
    let out = compile(&g, &[loss, grads[0]], &CompileOptions::default())
        .unwrap()
        .run(&[("x", &t(&[n], &[f32::NAN; 10])), ("t", &t(&[n], &ts))])
        .unwrap();
    assert!(out[0]
        .data()
        .iter()
        .chain(out[1].data())
        .all(|v| v.is_nan()));
    // shapes must agree
    let mut g = Graph::new();
    let (a, b) = (g.input("a", [2, 3]).unwrap(), g.input("b", [3, 2]).unwrap());
    let err = nn::binary_cross_entropy_with_logits(&mut g, a, b, Reduction::Mean).unwrap_err();
    assert!(err.to_string().contains("[2, 3]"), "{err}");
}

#[test]
fn cross_entropy_label_smoothing_matches_pytorch() {
    // F.cross_entropy(logits, labels, label_smoothing=eps, reduction='none'):
    // (1 − eps)·(−log p[label]) + eps·mean_c(−log p[c]), here in f64
    let logits = [0.5f32, -1.0, 2.0, 0.0, 3.0, -2.0];
    let labels = [2i64, 0];
    let mut g = Graph::new();
    let (l, y) = (
        g.input("l", [2, 3]).unwrap(),
        g.input_i64("y", [2]).unwrap(),
    );
    for eps in [0.0f32, 0.1, 0.5, 1.0] {
        let options = nn::CrossEntropy {
            reduction: Reduction::None,
            label_smoothing: eps,
            ..nn::CrossEntropy::default()
        };
        let ce = nn::cross_entropy(&mut g, l, y, &options).unwrap();
        let out = compile(&g, &[ce], &CompileOptions::default())
            .unwrap()
            .run(&[
                ("l", &t(&[2, 3], &logits)),
                ("y", &I64Tensor::from(labels.to_vec())),
            ])
            .unwrap();
        for (i, row) in logits.chunks(3).enumerate() {
            let lse = row.iter().map(|&v| (v as f64).exp()).sum::<f64>().ln();
            let nll = lse - row[labels[i] as usize] as f64;
            let uniform = row.iter().map(|&v| lse - v as f64).sum::<f64>() / 3.0;
            let want = (1.0 - eps as f64) * nll + eps as f64 * uniform;
            let got = out[0].data()[i] as f64;
            assert!(
                (got - want).abs() < 1e-5,
                "eps {eps}, row {i}: {got} vs {want}"
            );
        }
    }
    for bad in [-0.1f32, 1.5, f32::NAN] {
        let options = nn::CrossEntropy {
            label_smoothing: bad,
            ..nn::CrossEntropy::default()
        };
        let err = nn::cross_entropy(&mut g, l, y, &options).unwrap_err();
        assert!(err.to_string().contains("label_smoothing"), "{err}");
    }
}

#[test]
fn bce_with_weight_and_pos_weight_matches_pytorch() {
    // F.binary_cross_entropy_with_logits(x, t, weight=w, pos_weight=pw), torch 2.15
    let mut g = Graph::new();
    let (x, tg) = (g.input("x", [2, 3]).unwrap(), g.input("t", [2, 3]).unwrap());
    let w = g.constant(t(&[2, 1], &[1.0, 0.5])).unwrap();
    let pw = g.constant(t(&[3], &[2.0, 0.5, 3.0])).unwrap();
    let mut options = nn::BceWithLogits {
        reduction: Reduction::None,
        weight: Some(w),
        pos_weight: Some(pw),
    };
    let none = nn::bce_with_logits(&mut g, x, tg, &options).unwrap();
    options.reduction = Reduction::Mean;
    let mean = nn::bce_with_logits(&mut g, x, tg, &options).unwrap();
    let dx = g.grad(mean, &[x]).unwrap()[0];
    let out = compile(&g, &[none, mean, dx], &CompileOptions::default())
        .unwrap()
        .run(&[
            ("x", &t(&[2, 3], &[0.5, -2.0, 3.0, 0.0, 1.5, -0.5])),
            ("t", &t(&[2, 3], &[1.0, 0.0, 0.3, 0.0, 1.0, 1.0])),
        ])
        .unwrap();
    let want = [
        0.948_154,
        0.126_928_1,
        2.177_739_6,
        0.346_573_6,
        0.050_353_32,
        1.461_115_5,
    ];
    assert_close(out[0].data(), &want, 1e-6);
    assert_close(out[1].data(), &[0.851_810_75], 1e-6);
    let want_dx = [
        -0.125_846_88,
        0.019_867_154,
        0.104_019_79,
        0.041_666_668,
        -0.007_601_065,
        -0.155_614_84,
    ];
    assert_close(out[2].data(), &want_dx, 1e-6);
    // finite differences through both weights
    check(
        vec![rand(&[3, 2], 80), rand(&[3, 2], 81), rand(&[2], 82)],
        |g, x| {
            let options = nn::BceWithLogits {
                pos_weight: Some(x[2]),
                ..nn::BceWithLogits::default()
            };
            nn::bce_with_logits(g, x[0], x[1], &options)
        },
    );
    let bad = nn::BceWithLogits {
        pos_weight: Some(g.constant(t(&[2], &[1.0, 2.0])).unwrap()),
        ..nn::BceWithLogits::default()
    };
    let e = nn::bce_with_logits(&mut g, x, tg, &bad)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("pos_weight has shape [2]") && e.contains("[2, 3]"),
        "{e}"
    );
}

#[test]
fn losses_stay_finite_where_pytorch_does() {
    // a masked (−∞) logit in another class leaves the cross-entropy finite
    let mut g = Graph::new();
    let (l, y) = (
        g.input("l", [1, 3]).unwrap(),
        g.input_i64("y", [1]).unwrap(),
    );
    let ce = nn::softmax_cross_entropy(&mut g, l, y, Reduction::Mean).unwrap();
    let out = compile(&g, &[ce], &CompileOptions::default())
        .unwrap()
        .run(&[
            ("l", &t(&[1, 3], &[1.0, f32::NEG_INFINITY, 0.0])),
            ("y", &I64Tensor::from(vec![0])),
        ])
        .unwrap();
    let want = (1.0f64 + (-1.0f64).exp()).ln(); // −log softmax([1, 0])[0]
    assert!(
        (out[0].data()[0] as f64 - want).abs() < 1e-6,
        "{:?}",
        out[0]
    );
    // no classes at all is refused
    let mut g = Graph::new();
    let (l, y) = (
        g.input("l", [2, 0]).unwrap(),
        g.input_i64("y", [2]).unwrap(),
    );
    let err = nn::softmax_cross_entropy(&mut g, l, y, Reduction::Mean).unwrap_err();
    assert!(err.to_string().contains("no classes"), "{err}");
    // BCE at infinite logits: PyTorch's (1 − t)·x + log(1 + e⁻ˣ) gives +∞
    // for x = +∞, t = 0
    let mut g = Graph::new();
    let (x, tg) = (g.input("x", [1]).unwrap(), g.input("t", [1]).unwrap());
    let bce = nn::binary_cross_entropy_with_logits(&mut g, x, tg, Reduction::None).unwrap();
    let out = compile(&g, &[bce], &CompileOptions::default())
        .unwrap()
        .run(&[("x", &t(&[1], &[f32::INFINITY])), ("t", &t(&[1], &[0.0]))])
        .unwrap();
    assert_eq!(out[0].data(), &[f32::INFINITY]);
}

/// The gradients of a node's adjacent slices (a chunk's parts, in any
/// order) accumulate into one concatenation, as PyTorch's `split`
/// backward: the same values as the sum of zero-padded parts, a −0.0
/// part's sign kept, and no pad or add left in the gradient.
#[test]
fn the_gradients_of_adjacent_slices_are_one_concatenation() {
    let mut g = Graph::new();
    let x = g.input("x", [4, 3]).unwrap();
    let scales = [-0.0, 1.0, 2.0, 3.0];
    let mut loss = None;
    for i in [2, 0, 3, 1] {
        let part = g.slice(x, 0, i, i + 1, 1).unwrap();
        let scaled = g.mul_scalar(part, scales[i]).unwrap();
        let s = g.sum_all(scaled).unwrap();
        loss = Some(match loss {
            None => s,
            Some(l) => g.add(l, s).unwrap(),
        });
    }
    let dx = g.grad(loss.unwrap(), &[x]).unwrap()[0];
    let ops: Vec<&str> = kiln::graph::order::ancestors_order(&g, &[dx])
        .iter()
        .map(|&n| g.node(n).unwrap().op.name())
        .collect();
    assert!(ops.contains(&"concat"), "{ops:?}");
    assert!(!ops.contains(&"pad") && !ops.contains(&"add"), "{ops:?}");
    let mut exe = compile(&g, &[dx], &CompileOptions::unrewritten()).unwrap();
    let out = exe.run(&[("x", &rand(&[4, 3], 5))]).unwrap();
    let want = [-0.0f32, -0.0, -0.0, 1., 1., 1., 2., 2., 2., 3., 3., 3.];
    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(out[0].data()), bits(&want));
}

/// The fused attention core's VJP (the unfused steps' gradients), with a
/// scale, a blocking and an allowing mask and a float mask whose gradient
/// it gives, over two heads.
#[test]
fn attention_core_op() {
    use kiln::ops::{Attention, ScoreMask};
    let values = vec![
        rand(&[2, 3, 4], 80),
        rand(&[2, 5, 4], 81),
        rand(&[2, 5, 3], 82),
        rand(&[3, 5], 83),
    ];
    for scale in [Some(0.4), None] {
        check(values.clone(), |g, x| {
            let allow = g.constant(t(&[1, 5], &[1., 1., 0., 1., 1.]))?;
            let block = g.constant(t(&[2, 1, 5], &[0., 0., 0., 0., 1., 1., 0., 0., 0., 0.]))?;
            let op = Attention {
                scale,
                masks: vec![
                    ScoreMask::Keep(f32::NEG_INFINITY),
                    ScoreMask::Add,
                    ScoreMask::Replace(-1e9),
                ],
            };
            g.add_op(
                kiln::Op::Attention(op),
                &[x[0], x[1], x[2], allow, x[3], block],
            )
        });
    }
}
