//! The compiler's passes: each one's rewrite on a minimal graph (snapshot and
//! equal results), compiled == unrewritten on the seed layers' forward and
//! backward graphs and the cnn training step, and verification catching a
//! wrong pass.
//!
//! Tolerance for compiled vs unrewritten: `|a − b| ≤ 1e-4 · (1 + |b|)`.

mod common;
use common::*;
use kiln::compile;
use kiln::compile::{optimize, optimize_with};
use kiln::exec::schedule;
use kiln::graph::dump::to_text;
use kiln::nn::{self, Layer};
use kiln::ops::{
    AvgPool, AvgPoolBackward, Conv, ConvInputGrad, ConvKernelGrad, Fill, Fused, MatMul, MaxPool,
    MaxPoolWithIndices, Unfold,
};
use kiln::passes::PassManager;
use kiln::OpBuilder;
use kiln::Program;
use kiln::{CompileOptions, Feed, Graph, NodeId, Op, PassSelection, Tensor, Window};

fn only(pass: &str) -> CompileOptions {
    CompileOptions {
        passes: PassSelection::Named(vec![pass.into()]),
        verify: true,
        dump_dir: None,
        threads: None,
        stop_after: None,
        training: false,
    }
}

/// Runs `pass` alone on the program; checks the values are unchanged (up to
/// float rounding) and
/// returns the before/after dumps for a snapshot.
fn rewrite(
    pass: &str,
    g: Graph,
    outputs: Vec<NodeId>,
    feeds: &[(&str, &dyn Feed)],
) -> (String, Program) {
    let p = Program {
        graph: g,
        outputs,
        updates: vec![],
    };
    let before = to_text(&p.graph, &p.outputs);
    let want = schedule(&p).unwrap().run(feeds).unwrap();
    let (after, report) = optimize(p, &only(pass)).unwrap();
    assert!(
        report.rewrites.iter().any(|&(n, k)| n == pass && k > 0),
        "{pass} fired: {report:?}"
    );
    let got = schedule(&after).unwrap().run(feeds).unwrap();
    for (w, g) in want.iter().zip(&got) {
        assert_eq!(w.shape(), g.shape(), "{pass} changed a shape");
        assert_close(g.data(), w.data(), 1e-5); // a strided GEMM may round differently
    }
    (
        format!(
            "before:\n{before}\nafter {pass}:\n{}",
            to_text(&after.graph, &after.outputs)
        ),
        after,
    )
}

fn count(p: &Program, pred: impl Fn(&Op) -> bool) -> usize {
    p.live_nodes()
        .iter()
        .filter(|&&n| pred(&p.graph.node(n).unwrap().op))
        .count()
}

#[test]
fn algebraic_collapses_reshapes_transposes_and_identities() {
    let mut g = Graph::new();
    let x = g.input("x", [2, 3, 4]).unwrap();
    let r1 = g.reshape(x, &[6, 4]).unwrap();
    let r2 = g.reshape(r1, &[4, 6]).unwrap();
    let one = g.scalar(1.0).unwrap();
    let m = g.mul(r2, one).unwrap();
    let t1 = g.transpose(x, &[1, 2, 0]).unwrap();
    let t2 = g.transpose(t1, &[2, 0, 1]).unwrap(); // the inverse: back to x
                                                   // −0 is +'s identity (−0 + −0 = −0); +0 is not (+0 + −0 = +0)
    let neg_zero = g.fill(&[2, 3, 4], -0.0).unwrap();
    let s = g.add(neg_zero, t2).unwrap();
    let zero = g.fill(&[2, 3, 4], 0.0).unwrap();
    let kept = [g.add(zero, x).unwrap(), g.add(x, zero).unwrap()];
    let sub_neg = g.sub(x, neg_zero).unwrap();
    let sub_pos = g.sub(x, zero).unwrap();
    let v = rand(&[2, 3, 4], 1);
    let outs = vec![m, s, kept[0], kept[1], sub_neg, sub_pos];
    let (text, after) = rewrite("algebraic", g, outs, &[("x", &v)]);
    insta::assert_snapshot!("pass_algebraic", text);
    assert_eq!(after.outputs[1], x, "transpose∘inverse + (−0) is x itself");
    assert_eq!(after.outputs[5], x, "x − 0 is x itself");
    for i in 2..5 {
        assert_ne!(after.outputs[i], x, "output {i} turns −0.0 into +0.0: kept");
    }
    assert_eq!(count(&after, |o| matches!(o, Op::Reshape(_))), 1);
}

#[test]
fn matmul_transpose_reads_operands_by_strides() {
    let mut g = Graph::new();
    let x = g.input("x", [3, 5]).unwrap();
    let w = g.input("w", [4, 5]).unwrap();
    let wt = g.transpose(w, &[1, 0]).unwrap();
    let y = g.matmul(x, wt).unwrap();
    let (text, after) = rewrite(
        "matmul_transpose",
        g,
        vec![y],
        &[("x", &rand(&[3, 5], 1)), ("w", &rand(&[4, 5], 2))],
    );
    insta::assert_snapshot!("pass_matmul_transpose", text);
    assert_eq!(
        count(&after, |o| matches!(
            o,
            Op::MatMul(MatMul {
                trans_a: false,
                trans_b: true
            })
        )),
        1
    );
    assert_eq!(count(&after, |o| matches!(o, Op::Transpose(_))), 0);
}

#[test]
fn permute_replaces_elementwise_transposes() {
    let mut g = Graph::new();
    let x = g.input("x", [2, 3, 4]).unwrap();
    let a = g.transpose(x, &[0, 2, 1]).unwrap();
    let b = g.transpose(x, &[2, 0, 1]).unwrap();
    let (text, after) = rewrite("permute", g, vec![a, b], &[("x", &rand(&[2, 3, 4], 3))]);
    insta::assert_snapshot!("pass_permute", text);
    assert_eq!(count(&after, |o| matches!(o, Op::Permute(_))), 2);
    assert_eq!(count(&after, |o| matches!(o, Op::Transpose(_))), 0);
}

#[test]
fn cse_merges_duplicates_and_dce_drops_dead_nodes() {
    let mut g = Graph::new();
    let x = g.input("x", [4]).unwrap();
    let e1 = g.exp(x).unwrap();
    let e2 = g.exp(x).unwrap();
    let y = g.add(e1, e2).unwrap();
    let (text, after) = rewrite("cse", g, vec![y], &[("x", &rand(&[4], 4))]);
    insta::assert_snapshot!("pass_cse", text);
    assert_eq!(count(&after, |o| matches!(o, Op::Unary(_))), 1);

    let mut g = Graph::new();
    let x = g.input("x", [4]).unwrap();
    let unused = g.exp(x).unwrap();
    g.neg(unused).unwrap();
    let y = g.relu(x).unwrap();
    let (text, after) = rewrite("dce", g, vec![y], &[("x", &rand(&[4], 5))]);
    insta::assert_snapshot!("pass_dce", text);
    assert_eq!(after.graph.len(), 2, "only x and relu(x) remain");
}

#[test]
fn verification_names_a_pass_that_changes_results() {
    let mut g = Graph::new();
    let x = g.input("x", [8]).unwrap();
    let y = g.relu(x).unwrap();
    let program = Program {
        graph: g,
        outputs: vec![y],
        updates: vec![],
    };
    let mut opts = CompileOptions::unrewritten();
    opts.verify = true;
    let e = optimize_with(program.clone(), &PassManager::new().with(Broken), &opts)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`broken`") && e.contains("verification failed"),
        "{e}"
    );
    opts.verify = false;
    assert!(
        optimize_with(program, &PassManager::new().with(Broken), &opts).is_ok(),
        "without verify the bad rewrite goes through"
    );
}

#[test]
fn dump_dir_holds_the_input_and_every_changing_pass() {
    let dir = std::env::temp_dir().join(format!("kiln-dump-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let m = kiln::models::build("mlp", 0).unwrap();
    let opts = CompileOptions {
        passes: PassSelection::All,
        verify: false,
        dump_dir: Some(dir.clone()),
        threads: None,
        stop_after: None,
        training: false,
    };
    compile(&m.graph, &[m.output], &opts).unwrap();
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(
        files,
        [
            "00-input.txt",
            "01-matmul_transpose.txt",
            "02-fuse_elementwise.txt",
            "03-dce.txt"
        ]
    );
    let first = std::fs::read_to_string(dir.join("00-input.txt")).unwrap();
    assert!(
        first.contains("transpose(")
            && !std::fs::read_to_string(dir.join("03-dce.txt"))
                .unwrap()
                .contains("transpose(")
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Forward output and the gradients w.r.t. the input and every parameter,
/// given a fixed upstream gradient `gy`, compiled with `opts`.
fn forward_backward(
    layer: &dyn Layer,
    xshape: &[usize],
    relu_input: bool,
    opts: &CompileOptions,
) -> Vec<Tensor> {
    let mut g = Graph::with_seed(9);
    let x = g.input("x", xshape.to_vec()).unwrap();
    let h = if relu_input { g.relu(x).unwrap() } else { x };
    let y = layer.build(&mut g, h).unwrap();
    let gy = g.input("gy", g.shape(y).unwrap().to_vec()).unwrap();
    let prod = g.mul(y, gy).unwrap();
    let loss = g.sum_all(prod).unwrap();
    let mut wrt = vec![x];
    wrt.extend(g.trainable_params().into_iter().map(|p| p.1));
    let grads = g.grad(loss, &wrt).unwrap();
    let mut outs = vec![y];
    outs.extend(grads);
    let gy_value = rand(g.shape(gy).unwrap(), 2);
    let mut exe = compile(&g, &outs, opts).unwrap();
    let mut xv = rand(xshape, 1);
    if relu_input {
        // many exact zeros after the ReLU: tied maxima in every pooling window
        x_round(&mut xv);
    }
    exe.run(&[("x", &xv), ("gy", &gy_value)]).unwrap()
}

fn x_round(t: &mut Tensor) {
    t.data_mut()
        .iter_mut()
        .for_each(|v| *v = (*v * 2.0).round() / 2.0);
}

fn assert_equivalent(layer: &dyn Layer, xshape: &[usize], relu_input: bool) {
    let compiled = forward_backward(layer, xshape, relu_input, &CompileOptions::default());
    let plain = forward_backward(layer, xshape, relu_input, &CompileOptions::unrewritten());
    for (c, p) in compiled.iter().zip(&plain) {
        assert_eq!(c.shape(), p.shape());
        assert_close(c.data(), p.data(), 1e-4);
    }
}

#[test]
fn seed_layers_compiled_equal_unrewritten_forward_and_gradients() {
    assert_equivalent(&nn::Conv2d::new(3, 4, 3).padding(1), &[2, 3, 7, 6], false);
    assert_equivalent(
        &nn::Conv2d::new(4, 4, 3).stride(2).groups(2),
        &[2, 4, 9, 9],
        false,
    );
    assert_equivalent(
        &nn::Conv2d::new(2, 3, 3).padding(2).dilation(2),
        &[1, 2, 7, 5],
        false,
    );
    assert_equivalent(&nn::Conv1d::new(3, 4, 3).padding(1), &[2, 3, 11], false);
    assert_equivalent(
        &nn::Conv1d::new(4, 2, 3).stride(2).dilation(2).groups(2),
        &[2, 4, 13],
        false,
    );
    assert_equivalent(&nn::MaxPool2d::new(2), &[2, 3, 8, 8], true);
    assert_equivalent(
        &nn::MaxPool2d::new(3).stride(2).padding(1).ceil_mode(true),
        &[1, 2, 7, 7],
        true,
    );
    assert_equivalent(&nn::AvgPool2d::new(2), &[2, 3, 8, 8], false);
    assert_equivalent(
        &nn::AvgPool2d::new(3)
            .stride(2)
            .padding(1)
            .count_include_pad(false),
        &[1, 2, 7, 9],
        false,
    );
    assert_equivalent(&nn::Linear::new(5, 3), &[4, 5], false);
}

#[test]
fn cnn_training_step_compiled_equals_unrewritten() {
    let run = |opts: CompileOptions| -> (Vec<f32>, Tensor) {
        let mut g = Graph::with_seed(3);
        let x = g.input("x", [4, 1, 28, 28]).unwrap();
        let labels = g.input_i64("labels", [4]).unwrap();
        let logits = kiln::models::cnn().build(&mut g, x).unwrap();
        let loss = nn::softmax_cross_entropy(&mut g, logits, labels, nn::Reduction::Mean).unwrap();
        let params: Vec<(String, NodeId)> = g.trainable_params();
        let ids: Vec<NodeId> = params.iter().map(|p| p.1).collect();
        let grads = g.grad(loss, &ids).unwrap();
        let updates: Vec<(NodeId, NodeId)> = ids
            .iter()
            .zip(&grads)
            .map(|(&w, &gw)| {
                let step = g.mul_scalar(gw, 0.05).unwrap();
                (w, g.sub(w, step).unwrap())
            })
            .collect();
        let mut exe = kiln::compile_program(
            kiln::Program {
                graph: g.clone(),
                outputs: [loss].to_vec(),
                updates: updates.to_vec(),
            },
            &opts,
        )
        .unwrap();
        let xv = Tensor::rand_uniform([4, 1, 28, 28], 0.0, 1.0, 5);
        let yv = kiln::I64Tensor::from(vec![1, 7, 3, 0]);
        let losses = (0..3)
            .map(|_| exe.run(&[("x", &xv), ("labels", &yv)]).unwrap()[0].data()[0])
            .collect();
        (losses, exe.param("conv1.weight").unwrap())
    };
    let (lc, wc) = run(CompileOptions::default());
    let (lp, wp) = run(CompileOptions::unrewritten());
    assert_close(&lc, &lp, 1e-4);
    assert_close(wc.data(), wp.data(), 1e-4);
    assert!(lc[2] < lc[0], "the step trains");
}

/// The generic forms the passes exist to remove.
fn is_generic_window_op(o: &Op) -> bool {
    matches!(
        o,
        Op::Transpose(_) | Op::Unfold(Unfold(_)) | Op::Fold(_) | Op::FirstMaxMask(_)
    )
}

/// Forward output plus gradients w.r.t. the input and every parameter, after the pipeline.
fn optimized_forward_backward(mut g: Graph, x: NodeId, y: NodeId) -> Program {
    let gy = g.input("gy", g.shape(y).unwrap().to_vec()).unwrap();
    let prod = g.mul(y, gy).unwrap();
    let loss = g.sum_all(prod).unwrap();
    let mut wrt = vec![x];
    wrt.extend(g.trainable_params().into_iter().map(|p| p.1));
    let mut outputs = vec![y];
    outputs.extend(g.grad(loss, &wrt).unwrap());
    let program = Program {
        graph: g,
        outputs,
        updates: vec![],
    };
    optimize(program, &CompileOptions::default()).unwrap().0
}

#[test]
fn after_the_pipeline_seed_graphs_have_no_transpose_unfold_fold_or_first_max_mask() {
    for name in kiln::models::MODELS.iter().map(|m| m.0) {
        let m = kiln::models::build(name, 0).unwrap();
        let x = m.graph.inputs().find(|(n, _)| *n == "x").unwrap().1;
        let forward = optimize(
            kiln::models::program(name, 0, false).unwrap(),
            &CompileOptions::default(),
        )
        .unwrap()
        .0;
        let train = optimize(
            kiln::models::program(name, 0, true).unwrap(),
            &CompileOptions::default(),
        )
        .unwrap()
        .0;
        let both = optimized_forward_backward(m.graph, x, m.output);
        for (what, p) in [("forward", &forward), ("train", &train), ("fwd+bwd", &both)] {
            assert_eq!(count(p, is_generic_window_op), 0, "{name} {what}");
        }
        let fused = |p: &Program, f: fn(&Op) -> bool| count(p, f);
        let (convs, max_pools, avg_pools) = match name {
            "conv2d" | "conv1d" => (1, 0, 0),
            "cnn" => (2, 2, 0),
            "resnet" => (9, 0, 0),
            n if n.starts_with("maxpool") => (0, 1, 0),
            n if n.starts_with("avgpool") => (0, 0, 1),
            _ => (0, 0, 0),
        };
        // graphs without the pool's gradient compute no indices
        let values_only = |p: &Program| count(p, |o| matches!(o, Op::MaxPool(MaxPool(_))));
        let with_indices = |p: &Program| {
            count(p, |o| {
                matches!(o, Op::MaxPoolWithIndices(MaxPoolWithIndices(_)))
            })
        };
        assert_eq!(values_only(&forward), max_pools, "{name} forward");
        assert_eq!(with_indices(&forward), 0, "{name} forward");
        assert_eq!(values_only(&train), 0, "{name} train");
        assert_eq!(with_indices(&train), max_pools, "{name} train");
        assert_eq!(fused(&both, |o| matches!(o, Op::Conv(_))), convs, "{name}");
        assert_eq!(
            fused(&both, |o| matches!(o, Op::ConvKernelGrad(_))),
            convs,
            "{name}"
        );
        assert_eq!(
            fused(&both, |o| matches!(
                o,
                Op::MaxPoolWithIndices(MaxPoolWithIndices(_))
            )),
            max_pools,
            "{name}: one sweep gives values and indices"
        );
        assert_eq!(
            fused(&both, |o| matches!(o, Op::MaxPoolBackward(_))),
            max_pools,
            "{name}"
        );
        assert_eq!(
            fused(&both, |o| matches!(o, Op::AvgPool(_))),
            avg_pools,
            "{name}"
        );
        assert_eq!(
            fused(&both, |o| matches!(o, Op::AvgPoolBackward(_))),
            avg_pools,
            "{name}"
        );
    }
}

/// Max-pool layers with the input shape each is tested on: padding, ceil_mode,
/// dilation and a non-square window.
fn max_pool_layers() -> Vec<(nn::MaxPool2d, [usize; 4])> {
    vec![
        (nn::MaxPool2d::new(2), [2, 3, 8, 8]),
        (
            nn::MaxPool2d::new(3).stride(2).padding(1).ceil_mode(true),
            [1, 2, 7, 7],
        ),
        (
            nn::MaxPool2d::new(3).stride(2).ceil_mode(true),
            [1, 1, 6, 6],
        ),
        (
            nn::MaxPool2d::new(2).stride(1).padding(1).dilation(2),
            [2, 2, 9, 8],
        ),
        (
            nn::MaxPool2d::new(2).kernel([1, 3]).strides([1, 2]),
            [1, 2, 5, 9],
        ),
    ]
}

#[test]
fn pooling_fuses_for_every_padding_dilation_ceil_mode_and_divisor() {
    use kiln::ops::AvgDivisor;
    for (layer, shape) in max_pool_layers() {
        let (mut g, x) = graph_with_input(&shape);
        let y = layer.build(&mut g, x).unwrap();
        let p = optimized_forward_backward(g, x, y);
        assert_eq!(count(&p, is_generic_window_op), 0, "{layer:?}");
        assert_eq!(
            count(&p, |o| matches!(
                o,
                Op::MaxPoolWithIndices(MaxPoolWithIndices(_))
            )),
            1
        );
        assert_eq!(count(&p, |o| matches!(o, Op::MaxPoolBackward(_))), 1);
        assert_equivalent(&layer, &shape, true);
    }
    let avg_pools: Vec<(nn::AvgPool2d, [usize; 4], AvgDivisor)> = vec![
        (nn::AvgPool2d::new(2), [2, 3, 8, 8], AvgDivisor::Window),
        (
            nn::AvgPool2d::new(3).stride(2).padding(1),
            [1, 2, 7, 9],
            AvgDivisor::Window,
        ),
        (
            nn::AvgPool2d::new(3)
                .stride(2)
                .padding(1)
                .count_include_pad(false),
            [1, 2, 7, 9],
            AvgDivisor::RealCells,
        ),
        (
            nn::AvgPool2d::new(3).stride(2).padding(1).ceil_mode(true),
            [1, 2, 6, 6],
            AvgDivisor::PaddedInput,
        ),
        (
            nn::AvgPool2d::new(3)
                .stride(2)
                .padding(1)
                .ceil_mode(true)
                .count_include_pad(false),
            [1, 2, 6, 6],
            AvgDivisor::RealCells,
        ),
        // without padding the two count rules agree; the pass reads it as real cells
        (
            nn::AvgPool2d::new(2).ceil_mode(true),
            [1, 1, 5, 6],
            AvgDivisor::RealCells,
        ),
    ];
    for (layer, shape, divisor) in avg_pools {
        let (mut g, x) = graph_with_input(&shape);
        let y = layer.build(&mut g, x).unwrap();
        let p = optimized_forward_backward(g, x, y);
        assert_eq!(count(&p, is_generic_window_op), 0, "{layer:?}");
        assert_eq!(
            count(
                &p,
                |o| matches!(o, Op::AvgPool(AvgPool { divisor: d, .. }) if *d == divisor)
            ),
            1,
            "{layer:?}"
        );
        assert_eq!(
            count(
                &p,
                |o| matches!(o, Op::AvgPoolBackward(AvgPoolBackward { divisor: d, .. }) if *d == divisor)
            ),
            1,
            "{layer:?}"
        );
        assert_equivalent(&layer, &shape, false);
    }
}

#[test]
fn max_pool_pass_pairs_forward_and_backward_through_the_windows() {
    let (mut g, x) = graph_with_input(&[1, 2, 7, 7]);
    let h = g.relu(x).unwrap();
    let y = nn::MaxPool2d::new(3)
        .stride(2)
        .padding(1)
        .ceil_mode(true)
        .name("pool")
        .build(&mut g, h)
        .unwrap();
    let p = backward_program(g, x, y);
    let mut xv = rand(&[1, 2, 7, 7], 3);
    x_round(&mut xv);
    let gv = rand(p.graph.shape(p.outputs[0]).unwrap(), 4);
    let (text, after) = rewrite("max_pool", p.graph, p.outputs, &[("x", &xv), ("gy", &gv)]);
    insta::assert_snapshot!("pass_max_pool", text);
    assert_eq!(
        count(&after, |o| matches!(
            o,
            Op::MaxPoolWithIndices(MaxPoolWithIndices(_))
        )),
        1
    );
    assert_eq!(count(&after, |o| matches!(o, Op::MaxPoolBackward(_))), 1);
    assert_eq!(
        count(&after, |o| matches!(o, Op::FirstMaxMask(_) | Op::Fold(_))),
        0
    );
}

#[test]
fn max_pool_pass_makes_a_values_only_pool_where_no_gradient_needs_indices() {
    for (layer, shape) in max_pool_layers() {
        let (mut g, x) = graph_with_input(&shape);
        let y = layer.build(&mut g, x).unwrap();
        let mut xv = rand(&shape, 8);
        x_round(&mut xv); // ties
        xv.data_mut()[3] = f32::NAN; // a NaN window, as torch: the maximum is NaN
        xv.data_mut()[5] = f32::NEG_INFINITY;
        let (_, after) = rewrite("max_pool", g, vec![y], &[("x", &xv)]);
        assert_eq!(
            count(&after, |o| matches!(o, Op::MaxPool(MaxPool(_)))),
            1,
            "{layer:?}"
        );
        assert_eq!(
            count(&after, |o| matches!(
                o,
                Op::MaxPoolWithIndices(MaxPoolWithIndices(_)) | Op::Output(_)
            )),
            0,
            "{layer:?}"
        );
        // bit for bit the values the indexed pool gives (NaN where it has NaN)
        let run = |p: &Program| schedule(p).unwrap().run(&[("x", &xv)]).unwrap();
        let values = run(&after);
        let (mut g, x) = graph_with_input(&shape);
        let Op::MaxPool(MaxPool(window)) = &after.graph.node(after.live_nodes()[1]).unwrap().op
        else {
            panic!("{layer:?}: the pool follows the input")
        };
        let pool = g
            .add_op(
                Op::MaxPoolWithIndices(MaxPoolWithIndices(window.clone())),
                &[x],
            )
            .unwrap();
        let v = g.output(pool, 0).unwrap();
        let v = g.reshape(v, &[-1]).unwrap();
        let want = run(&Program {
            graph: g,
            outputs: vec![v],
            updates: vec![],
        });
        let bits = |t: &Tensor| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&values[0]), bits(&want[0]), "{layer:?}");
        assert!(values[0].data().iter().any(|v| v.is_nan()), "{layer:?}");
    }
}

#[test]
fn avg_pool_pass_reads_the_divisor_rule_off_the_count_structure() {
    let (mut g, x) = graph_with_input(&[1, 2, 6, 6]);
    let y = nn::AvgPool2d::new(3)
        .stride(2)
        .padding(1)
        .ceil_mode(true)
        .count_include_pad(false)
        .name("pool")
        .build(&mut g, x)
        .unwrap();
    let p = backward_program(g, x, y);
    let xv = rand(&[1, 2, 6, 6], 5);
    let gv = rand(p.graph.shape(p.outputs[0]).unwrap(), 6);
    let (text, after) = rewrite("avg_pool", p.graph, p.outputs, &[("x", &xv), ("gy", &gv)]);
    insta::assert_snapshot!("pass_avg_pool", text);
    assert_eq!(count(&after, |o| matches!(o, Op::AvgPool(_))), 1);
    assert_eq!(count(&after, |o| matches!(o, Op::AvgPoolBackward(_))), 1);
    // a divisor that is no pooling rule (here 1/5 for a 2x2 window) is left alone
    let (mut g, x) = graph_with_input(&[1, 1, 4, 4]);
    let u = g
        .unfold(
            x,
            Window {
                stride: vec![2, 2],
                ..Window::new(&[2, 2])
            },
        )
        .unwrap();
    let s = g.sum(u, &[2], false).unwrap();
    let y = g.mul_scalar(s, 0.2).unwrap();
    let program = Program {
        graph: g,
        outputs: vec![y],
        updates: vec![],
    };
    let (_, report) = optimize(program, &only("avg_pool")).unwrap();
    assert_eq!(report.rewrites[0], ("avg_pool", 0));
}

/// `y` and the gradient w.r.t. `x` given an upstream gradient input `gy`, unoptimised.
fn backward_program(mut g: Graph, x: NodeId, y: NodeId) -> Program {
    let gy = g.input("gy", g.shape(y).unwrap().to_vec()).unwrap();
    let prod = g.mul(y, gy).unwrap();
    let loss = g.sum_all(prod).unwrap();
    let gx = g.grad(loss, &[x]).unwrap()[0];
    Program {
        graph: g,
        outputs: vec![y, gx],
        updates: vec![],
    }
}

#[test]
fn const_fold_evaluates_ops_on_constants() {
    let mut g = Graph::new();
    let x = g.input("x", [2, 3]).unwrap();
    let one = g.fill(&[1, 1], 1.0).unwrap();
    let ones = g.broadcast_to(one, &[2, 3]).unwrap(); // uniform → a Fill
    let a = g.mul(ones, x).unwrap();
    let c = g.constant(t(&[3], &[1.0, 2.0, 3.0])).unwrap();
    let e = g.exp(c).unwrap(); // non-uniform → a Constant
    let b = g.add(a, e).unwrap();
    let d = g.dropout(one, 0.5, 1).unwrap(); // never folded
    let y = g.mul(b, d).unwrap();
    let (text, after) = rewrite("const_fold", g, vec![y], &[("x", &rand(&[2, 3], 6))]);
    insta::assert_snapshot!("pass_const_fold", text);
    assert_eq!(
        count(
            &after,
            |o| matches!(o, Op::Fill(Fill { shape, value }) if shape == &[2, 3] && *value == 1.0)
        ),
        1
    );
    assert_eq!(count(&after, |o| matches!(o, Op::Constant(_))), 1);
    assert_eq!(count(&after, |o| matches!(o, Op::Dropout(_))), 1);
    assert_eq!(
        count(&after, |o| matches!(o, Op::Unary(_) | Op::Broadcast(_))),
        0
    );
}

#[test]
fn conv_forward_fuses_the_layer_pattern_with_its_bias() {
    let mut g = Graph::with_seed(1);
    let x = g.input("x", [2, 4, 7, 6]).unwrap();
    let y = nn::Conv2d::new(4, 6, 3)
        .stride(2)
        .padding(1)
        .groups(2)
        .name("c")
        .build(&mut g, x)
        .unwrap();
    let (text, after) = rewrite(
        "conv_forward",
        g,
        vec![y],
        &[("x", &rand(&[2, 4, 7, 6], 7))],
    );
    insta::assert_snapshot!("pass_conv_forward", text);
    assert_eq!(
        count(&after, |o| matches!(o, Op::Conv(Conv { groups: 2, .. }))),
        1
    );
    assert_eq!(
        count(&after, |o| matches!(
            o,
            Op::Unfold(Unfold(_)) | Op::MatMul(_)
        )),
        0
    );
    // a matmul of unfolded windows with a weight of the wrong shape is left alone
    let mut g = Graph::new();
    let x = g.input("x", [1, 2, 4, 4]).unwrap();
    let w = g.input("w", [3, 8]).unwrap();
    let cols = g.unfold(x, Window::new(&[2, 2])).unwrap();
    let cols = g.reshape(cols, &[1, 1, 8, 9]).unwrap();
    let y = g.matmul(w, cols).unwrap();
    let p = Program {
        graph: g,
        outputs: vec![y],
        updates: vec![],
    };
    let (_, report) = optimize(p, &only("conv_forward")).unwrap();
    assert_eq!(report.rewrites[0], ("conv_forward", 0));
}

/// A conv layer's forward+backward program after the passes that set up the
/// gradient patterns (`algebraic`, `matmul_transpose`).
fn conv_backward_program(layer: &dyn Layer, xshape: &[usize]) -> (Program, Tensor, Tensor) {
    let mut g = Graph::with_seed(2);
    let x = g.input("x", xshape.to_vec()).unwrap();
    let y = layer.build(&mut g, x).unwrap();
    let gy = g.input("gy", g.shape(y).unwrap().to_vec()).unwrap();
    let prod = g.mul(y, gy).unwrap();
    let loss = g.sum_all(prod).unwrap();
    let mut wrt = vec![x];
    wrt.extend(g.trainable_params().into_iter().map(|p| p.1));
    let outputs = g.grad(loss, &wrt).unwrap();
    let gys = g.shape(gy).unwrap().to_vec();
    let setup = CompileOptions {
        passes: PassSelection::Named(vec![
            "algebraic".into(),
            "matmul_transpose".into(),
            "dce".into(),
        ]),
        verify: true,
        dump_dir: None,
        threads: None,
        stop_after: None,
        training: false,
    };
    let (p, _) = optimize(
        Program {
            graph: g,
            outputs,
            updates: vec![],
        },
        &setup,
    )
    .unwrap();
    (p, rand(xshape, 3), rand(&gys, 4))
}

#[test]
fn conv_kernel_and_input_grad_passes_fuse_the_backward_patterns() {
    let layer = nn::Conv2d::new(4, 6, 3)
        .stride(2)
        .padding(1)
        .groups(2)
        .name("c");
    let (p, xv, gv) = conv_backward_program(&layer, &[2, 4, 7, 6]);
    let feeds: [(&str, &dyn Feed); 2] = [("x", &xv), ("gy", &gv)];
    let (text, after) = rewrite(
        "conv_kernel_grad",
        p.graph.clone(),
        p.outputs.clone(),
        &feeds,
    );
    insta::assert_snapshot!("pass_conv_kernel_grad", text);
    assert_eq!(
        count(&after, |o| matches!(
            o,
            Op::ConvKernelGrad(ConvKernelGrad { groups: 2, .. })
        )),
        1
    );
    let (text, after) = rewrite("conv_input_grad", p.graph, p.outputs, &feeds);
    insta::assert_snapshot!("pass_conv_input_grad", text);
    assert_eq!(
        count(&after, |o| matches!(
            o,
            Op::ConvInputGrad(ConvInputGrad { groups: 2, .. })
        )),
        1
    );
    assert_eq!(count(&after, |o| matches!(o, Op::Fold(_))), 0);
}

#[test]
fn seed_conv_training_graphs_have_no_unfold_or_fold_after_the_pipeline() {
    for name in ["conv2d", "conv1d"] {
        let (after, _) = optimize(
            kiln::models::program(name, 0, true).unwrap(),
            &CompileOptions::default(),
        )
        .unwrap();
        assert_eq!(
            count(&after, |o| matches!(
                o,
                Op::Unfold(Unfold(_)) | Op::Fold(_) | Op::Transpose(_) | Op::MatMul(_)
            )),
            0,
            "{name}"
        );
        for fused in [
            |o: &Op| matches!(o, Op::Conv(_)),
            |o: &Op| matches!(o, Op::ConvKernelGrad(_)),
            |o: &Op| matches!(o, Op::ConvInputGrad(_)),
        ] {
            assert_eq!(count(&after, fused), 1, "{name}");
        }
    }
}

#[test]
fn conv_epilogue_folds_the_activation_into_the_convolution() {
    let (mut g, x) = graph_with_input(&[2, 3, 6, 6]);
    let y = nn::Sequential::new()
        .push(nn::Conv2d::new(3, 4, 3).padding(1).name("c"))
        .push(nn::Relu)
        .build(&mut g, x)
        .unwrap();
    let setup = optimize(
        Program {
            graph: g,
            outputs: vec![y],
            updates: vec![],
        },
        &CompileOptions {
            passes: PassSelection::Named(vec!["conv_forward".into(), "dce".into()]),
            verify: true,
            dump_dir: None,
            threads: None,
            stop_after: None,
            training: false,
        },
    )
    .unwrap()
    .0;
    let (text, after) = rewrite(
        "conv_epilogue",
        setup.graph,
        setup.outputs,
        &[("x", &rand(&[2, 3, 6, 6], 1))],
    );
    insta::assert_snapshot!("pass_conv_epilogue", text);
    assert_eq!(
        count(
            &after,
            |o| matches!(o, Op::Conv(Conv { epilogue, .. }) if epilogue == &[kiln::ops::UnaryOp::Relu])
        ),
        1
    );
    assert_eq!(count(&after, |o| matches!(o, Op::Unary(_))), 0);
}

#[test]
fn conv_epilogue_folds_a_residual_add_and_its_relu_into_the_convolution() {
    // relu(conv(x) + x): a residual block's end with an identity shortcut,
    // and conv(x) + r + relu with r another input
    let (mut g, x) = graph_with_input(&[2, 4, 5, 5]);
    let r = g.input("r", [2, 4, 5, 5]).unwrap();
    let c1 = nn::Conv2d::new(4, 4, 3)
        .padding(1)
        .name("c1")
        .build(&mut g, x)
        .unwrap();
    let s1 = g.add(c1, x).unwrap();
    let y1 = g.relu(s1).unwrap();
    let c2 = nn::Conv2d::new(4, 4, 3)
        .padding(1)
        .bias(false)
        .name("c2")
        .build(&mut g, y1)
        .unwrap();
    let y2 = g.add(r, c2).unwrap();
    // a broadcast add is not a residual: [1, 4, 1, 1] stays an add
    let c3 = nn::Conv2d::new(4, 4, 1)
        .name("c3")
        .build(&mut g, y2)
        .unwrap();
    let t = g.input("t", [1, 4, 1, 1]).unwrap();
    let y3 = g.add(c3, t).unwrap();
    let setup = optimize(
        Program {
            graph: g,
            outputs: vec![y3],
            updates: vec![],
        },
        &CompileOptions {
            passes: PassSelection::Named(vec!["conv_forward".into(), "dce".into()]),
            ..only("conv_forward")
        },
    )
    .unwrap()
    .0;
    let feeds: [(&str, &dyn Feed); 3] = [
        ("x", &rand(&[2, 4, 5, 5], 1)),
        ("r", &rand(&[2, 4, 5, 5], 2)),
        ("t", &rand(&[1, 4, 1, 1], 3)),
    ];
    let want = schedule(&setup).unwrap().run(&feeds).unwrap();
    let (text, after) = rewrite("conv_epilogue", setup.graph, setup.outputs, &feeds);
    insta::assert_snapshot!("pass_conv_residual", text);
    // the fused sum rounds as the add did: the same bits
    let got = schedule(&after).unwrap().run(&feeds).unwrap();
    let bits = |t: &Tensor| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&got[0]), bits(&want[0]));
    let residual = |o: &Op| matches!(o, Op::Conv(c) if c.residual);
    assert_eq!(count(&after, residual), 2);
    assert_eq!(
        count(
            &after,
            |o| matches!(o, Op::Conv(c) if c.residual && c.epilogue == [kiln::ops::UnaryOp::Relu])
        ),
        1
    );
    assert_eq!(
        count(&after, |o| matches!(o, Op::Binary(_))),
        1,
        "the broadcast add stays"
    );
    assert_eq!(count(&after, |o| matches!(o, Op::Unary(_))), 0);
    // conv + conv stays an add: fusing would run the convolution twice
    let (mut g, x) = graph_with_input(&[1, 2, 4, 4]);
    let c = nn::Conv2d::new(2, 2, 3)
        .padding(1)
        .build(&mut g, x)
        .unwrap();
    let y = g.add(c, c).unwrap();
    let (p, _) = optimize(
        Program {
            graph: g,
            outputs: vec![y],
            updates: vec![],
        },
        &CompileOptions::default(),
    )
    .unwrap();
    assert_eq!(count(&p, |o| matches!(o, Op::Conv(_))), 1);
}

#[test]
fn conv_affine_folds_an_evaluation_batch_norm_into_the_convolution() {
    let (mut g, x) = graph_with_input(&[2, 3, 6, 6]);
    let y = nn::Sequential::new()
        .push(nn::Conv2d::new(3, 4, 3).padding(1).name("c"))
        .push(nn::BatchNorm2d::new(4).name("bn"))
        .push(nn::Relu)
        .build(&mut g, x)
        .unwrap();
    // running statistics and affine parameters other than the defaults
    for (name, values) in [
        ("bn.running_mean", [0.5, -1.0, 0.0, 2.0]),
        ("bn.running_var", [4.0, 0.25, 1.0, 9.0]),
        ("bn.weight", [1.5, -0.5, 0.0, 2.0]),
        ("bn.bias", [0.1, 0.2, -0.3, 0.0]),
    ] {
        g.set_param_value(name, t(&[4], &values)).unwrap();
    }
    let mut program = Program {
        graph: g,
        outputs: vec![y],
        updates: vec![],
    };
    program.bind_mode(false).unwrap();
    let setup = optimize(
        program,
        &CompileOptions {
            passes: PassSelection::Named(vec!["conv_forward".into(), "dce".into()]),
            ..CompileOptions::default()
        },
    )
    .unwrap()
    .0;
    let (text, after) = rewrite(
        "conv_affine",
        setup.graph,
        setup.outputs,
        &[("x", &rand(&[2, 3, 6, 6], 1))],
    );
    insta::assert_snapshot!("pass_conv_affine", text);
    // every per-channel op now works on the weights: the only node of the
    // output's shape is the convolution, whose ReLU follows it directly
    let big = |o: &Op| !matches!(o, Op::Conv(_) | Op::Input(_));
    let out_sized = after
        .live_nodes()
        .into_iter()
        .filter(|&n| after.graph.shape(n).unwrap() == [2, 4, 6, 6])
        .filter(|&n| big(&after.graph.node(n).unwrap().op))
        .count();
    assert_eq!(out_sized, 1, "only the ReLU");
    // and with every pass, the ReLU is the convolution's epilogue
    let mut g = Graph::with_seed(2);
    let x = g.input("x", [2, 3, 6, 6]).unwrap();
    let net = nn::Sequential::new()
        .push(nn::Conv2d::new(3, 4, 3).padding(1))
        .push(nn::BatchNorm2d::new(4))
        .push(nn::Relu);
    let y = net.build(&mut g, x).unwrap();
    let exe = compile(&g, &[y], &CompileOptions::default()).unwrap();
    let report = exe.report();
    assert!(
        report
            .rewrites
            .iter()
            .any(|&(n, k)| n == "conv_affine" && k == 4),
        "{report:?}"
    );
    // a training graph normalises with the batch's statistics: nothing folds
    let training = CompileOptions {
        training: true,
        ..CompileOptions::default()
    };
    let exe = compile(&g, &[y], &training).unwrap();
    assert!(!exe
        .report()
        .rewrites
        .iter()
        .any(|&(n, k)| n == "conv_affine" && k > 0));
}

#[test]
fn fuse_elementwise_makes_one_loop_of_a_chain_and_keeps_shared_values() {
    let mut g = Graph::new();
    let x = g.input("x", [3, 5]).unwrap();
    let w = g.input("w", [3, 5]).unwrap();
    let lr = g.input("lr", [1]).unwrap();
    // sgd-like update: w − lr·(0.9·x + w), and a shared value t used twice
    let m = g.mul_scalar(x, 0.9).unwrap();
    let d = g.add(m, w).unwrap();
    let step = g.mul(d, lr).unwrap();
    let upd = g.sub(w, step).unwrap();
    let th = g.tanh(x).unwrap();
    let a = g.exp(th).unwrap();
    let b = g.neg(th).unwrap();
    let zero = g.scalar(0.0).unwrap();
    let c = g.gt(a, zero).unwrap();
    let s = g.select(c, a, b).unwrap();
    let feeds: [(&str, &dyn Feed); 3] = [
        ("x", &rand(&[3, 5], 1)),
        ("w", &rand(&[3, 5], 2)),
        ("lr", &t(&[1], &[0.1])),
    ];
    let (text, after) = rewrite("fuse_elementwise", g, vec![upd, s, th], &feeds);
    insta::assert_snapshot!("pass_fuse_elementwise", text);
    // one loop for the update, one for gt/neg/select; tanh (returned) and exp
    // (read twice) stay values of their own, each computed once
    assert_eq!(count(&after, |o| matches!(o, Op::Fused(_))), 2);
    assert_eq!(count(&after, |o| matches!(o, Op::Unary(_))), 2);
    assert_eq!(
        count(&after, |o| matches!(o, Op::Binary(_) | Op::Select)),
        0
    );
    // a broadcast over separated axes (`[3, 1, 5]` over `[3, 4, 5]`: neither a
    // scalar nor one repeated run of dimensions) is left alone
    let mut g = Graph::new();
    let x = g.input("x", [3, 4, 5]).unwrap();
    let b = g.input("b", [3, 1, 5]).unwrap();
    let e = g.exp(x).unwrap();
    let y = g.add(e, b).unwrap();
    fuses_nothing(g, y);
    // a chain whose result no operand's shape gives ([2, 2] + [1, 1, 2] is
    // [1, 2, 2]) is left alone rather than failing to compile
    let mut g = Graph::new();
    let a = g.input("a", [2, 2]).unwrap();
    let b = g.input("b", [1, 1, 2]).unwrap();
    let s = g.add(a, b).unwrap();
    let y = g.neg(s).unwrap();
    let after = fuses_nothing(g, y);
    assert_eq!(after.graph.shape(after.outputs[0]).unwrap(), [1, 2, 2]);
}

/// Runs `fuse_elementwise` alone on `g` returning `y`, asserts it fused
/// nothing, and returns the program after it.
fn fuses_nothing(g: Graph, y: NodeId) -> Program {
    let (after, report) = optimize(
        Program {
            graph: g,
            outputs: vec![y],
            updates: vec![],
        },
        &only("fuse_elementwise"),
    )
    .unwrap();
    assert_eq!(report.rewrites[0], ("fuse_elementwise", 0));
    after
}

#[test]
fn cnn_training_graph_keeps_no_standalone_activation_or_mask() {
    let (after, _) = optimize(
        kiln::models::program("cnn", 0, true).unwrap(),
        &CompileOptions::default(),
    )
    .unwrap();
    assert_eq!(
        count(
            &after,
            |o| matches!(o, Op::Conv(Conv { epilogue, .. }) if !epilogue.is_empty())
        ),
        2
    );
    assert_eq!(
        count(&after, |o| matches!(
            o,
            Op::Unary(kiln::ops::UnaryOp::Relu) | Op::Binary(kiln::ops::BinaryOp::Gt)
        )),
        0,
        "ReLUs ride on the convs, their gradient masks in fused loops"
    );
}

#[test]
fn linear_bias_and_relu_run_as_one_loop_after_the_gemm() {
    let (mut g, x) = graph_with_input(&[4, 6]);
    let y = nn::Sequential::new()
        .push(nn::Linear::new(6, 5))
        .push(nn::Relu)
        .build(&mut g, x)
        .unwrap();
    let program = Program {
        graph: g,
        outputs: vec![y],
        updates: vec![],
    };
    let xv = rand(&[4, 6], 3);
    let want = schedule(&program).unwrap().run(&[("x", &xv)]).unwrap();
    let (after, _) = optimize(program, &CompileOptions::default()).unwrap();
    let got = schedule(&after).unwrap().run(&[("x", &xv)]).unwrap();
    assert_close(got[0].data(), want[0].data(), 1e-5); // the strided GEMM may round differently
    assert_eq!(
        count(
            &after,
            |o| matches!(o, Op::Fused(Fused { expr }) if kiln::ops::fused::expr_text(expr) == "relu(add(%0, %1))")
        ),
        1
    );
    assert_eq!(after.graph.len(), 5, "x, weight, bias, matmul, fused");
}

#[test]
fn attention_fuses_an_evaluation_graphs_attention_core() {
    // causal SDPA over two heads, and a core whose weights another node
    // reads (it stays unfused)
    let mut g = Graph::new();
    let q = g.input("q", [2, 2, 3, 4]).unwrap();
    let k = g.input("k", [2, 2, 3, 4]).unwrap();
    let causal = nn::Sdpa {
        is_causal: true,
        ..nn::Sdpa::default()
    };
    let y = nn::scaled_dot_product_attention(&mut g, q, k, k, &causal).unwrap();
    let s = g.matmul_t(q, k, false, true).unwrap();
    let w = g.softmax(s, -1).unwrap();
    let y2 = g.matmul(w, k).unwrap();
    let feeds: [(&str, &dyn Feed); 2] = [
        ("q", &rand(&[2, 2, 3, 4], 1)),
        ("k", &rand(&[2, 2, 3, 4], 2)),
    ];
    let (text, after) = rewrite("attention", g, vec![y, y2, w], &feeds);
    insta::assert_snapshot!("pass_attention", text);
    assert_eq!(count(&after, |o| matches!(o, Op::Attention(_))), 1);
    assert_eq!(
        count(&after, |o| matches!(o, Op::Softmax(_))),
        1,
        "the read weights stay"
    );
}
