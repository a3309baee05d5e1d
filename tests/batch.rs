//! The symbolic batch (`kiln::BATCH`): one graph, run and trained at any
//! batch, each batch's executable specialised on first use and sharing the
//! parameters and optimiser state.

mod common;
use common::assert_close;
use kiln::nn::{self, Layer, Reduction};
use kiln::optim::Sgd;
use kiln::{
    compile, CompileOptions, Feed, Graph, I64Tensor, NodeId, OpBuilder, Tensor, Trainer, BATCH,
};

/// A small classifier on `[batch, 6]` inputs: linear, ReLU, flatten through a
/// reshape, linear; its logits.
fn classifier(g: &mut Graph, batch: usize) -> (NodeId, NodeId) {
    let x = g.input("x", [batch, 6]).unwrap();
    let net = nn::Sequential::new()
        .push(nn::Linear::new(6, 5).name("fc1"))
        .push(nn::Relu)
        .push(nn::Linear::new(5, 3).name("fc2"));
    let h = net.build(g, x).unwrap();
    let r = g.reshape(h, &[-1]).unwrap(); // [3·batch]
    let logits = g.reshape(r, &[batch as isize, 3]).unwrap();
    (x, logits)
}

fn data(batch: usize, seed: u64) -> (Tensor, I64Tensor) {
    let x = Tensor::rand_uniform([batch, 6], -1.0, 1.0, seed);
    let labels = (0..batch).map(|i| ((i as u64 + seed) % 3) as i64).collect();
    (x, I64Tensor::from_vec([batch], labels).unwrap())
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.data().iter().map(|v| v.to_bits()).collect()
}

/// One executable runs every batch, each result bit-identical to a graph
/// built for that batch, and the specialisation in use is reported.
#[test]
fn one_executable_runs_every_batch_as_a_graph_built_for_it() {
    let mut g = Graph::with_seed(3);
    let (_, y) = classifier(&mut g, BATCH);
    let text = kiln::graph::dump::to_text(&g, &[y]);
    assert!(
        text.contains("f32[B,6]") && text.contains("f32[3B]"),
        "{text}"
    );
    let mut exe = compile(&g, &[y], &CompileOptions::default()).unwrap();
    assert_eq!(exe.batch(), Some(1));
    for b in [4, 1, 7, 4, 0] {
        let mut concrete = Graph::with_seed(3);
        let (_, yc) = classifier(&mut concrete, b);
        let want = compile(&concrete, &[yc], &CompileOptions::default())
            .unwrap()
            .run(&[("x", &data(b, 9).0)])
            .unwrap();
        let got = exe.run(&[("x", &data(b, 9).0)]).unwrap();
        assert_eq!(exe.batch(), Some(b));
        assert_eq!(got[0].shape(), &[b, 3]);
        assert_eq!(bits(&got[0]), bits(&want[0]), "batch {b}");
    }
}

/// A trainer on the symbolic graph trains exactly as one built for the
/// batch (the mean loss's gradient counts the concrete batch), evaluates
/// any batch, and a step at another batch continues from the same
/// parameters and momentum.
#[test]
fn a_trainer_trains_and_evaluates_at_any_batch() {
    let build = |batch: usize| {
        let mut g = Graph::with_seed(11);
        let (_, logits) = classifier(&mut g, batch);
        let labels = g.input_i64("labels", [batch]).unwrap();
        let loss = nn::softmax_cross_entropy(&mut g, logits, labels, Reduction::Mean).unwrap();
        Trainer::with_outputs(g, loss, &[logits], Sgd::new(0.1).momentum(0.9)).unwrap()
    };
    let (mut sym, mut at4) = (build(BATCH), build(4));
    for step in 0..3 {
        let (x, l) = data(4, step);
        let feeds: [(&str, &dyn Feed); 2] = [("x", &x), ("labels", &l)];
        let (a, b) = (sym.step(&feeds).unwrap(), at4.step(&feeds).unwrap());
        assert_eq!(a.to_bits(), b.to_bits(), "loss of step {step}");
    }
    for ((n, p), (_, q)) in sym.params().iter().zip(at4.params()) {
        assert_eq!(bits(p), bits(&q), "{n} after 3 steps at batch 4");
    }
    // evaluating one row gives that row of a bigger batch
    let (x5, _) = data(5, 42);
    let all = sym.evaluate(&[("x", &x5)]).unwrap().remove(0);
    let row = Tensor::from_vec([1, 6], x5.data()[6..12].to_vec()).unwrap();
    let one = sym.evaluate(&[("x", &row)]).unwrap().remove(0);
    assert_eq!(one.shape(), &[1, 3]);
    assert_close(one.data(), &all.data()[3..6], 1e-6);
    // a step at batch 2 continues the batch-4 run: the same update as the
    // batch-4 trainer takes on a batch holding these two rows twice
    let (x2, l2) = data(2, 7);
    let twice = |t: &Tensor, shape: Vec<usize>| {
        Tensor::from_vec(shape, [t.data(), t.data()].concat()).unwrap()
    };
    let before = sym.step(&[("x", &x2), ("labels", &l2)]).unwrap();
    let l4 = I64Tensor::from([l2.data(), l2.data()].concat());
    let x4 = twice(&x2, vec![4, 6]);
    let want = at4.step(&[("x", &x4), ("labels", &l4)]).unwrap();
    assert_close(&[before], &[want], 1e-6);
    for ((n, p), (_, q)) in sym.params().iter().zip(at4.params()) {
        assert_close(p.data(), q.data(), 1e-5);
        assert!(n.starts_with("fc"), "{n}");
    }
}

/// Feeds that do not agree on the batch, or whose size is no multiple of
/// the declared one, are refused naming the feed and the declared shape;
/// parameters cannot hold the batch; a graph that derives a size from the
/// batch other than by a multiple cannot be specialised.
#[test]
fn what_cannot_be_specialised_is_an_err_naming_it() {
    let mut g = Graph::new();
    let a = g.input("a", [BATCH, 2]).unwrap();
    let b = g.input("b", [2 * BATCH]).unwrap();
    let fa = g.reshape(a, &[-1]).unwrap();
    let s = g.add(fa, b).unwrap();
    let mut exe = compile(&g, &[s], &CompileOptions::default()).unwrap();
    let ok = exe
        .run(&[("a", &Tensor::zeros([3, 2])), ("b", &Tensor::zeros([6]))])
        .unwrap();
    assert_eq!(ok[0].shape(), &[6]);
    let e = exe
        .run(&[("a", &Tensor::zeros([3, 2])), ("b", &Tensor::zeros([8]))])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("feed `b`") && e.contains("[2B]") && e.contains("batch 3"),
        "{e}"
    );
    let e = exe
        .run(&[("a", &Tensor::zeros([3, 2])), ("b", &Tensor::zeros([7]))])
        .unwrap_err()
        .to_string();
    assert!(e.contains("7 is no multiple of 2"), "{e}");
    // the failed runs left the batch-3 executable in place
    assert_eq!(exe.batch(), Some(3));

    let e = Graph::new()
        .param("w", [BATCH, 2], kiln::Init::Zeros)
        .unwrap_err()
        .to_string();
    assert!(e.contains("\"w\"") && e.contains("symbolic batch"), "{e}");

    let mut g = Graph::new();
    let x = g.input("x", [BATCH, 2]).unwrap();
    let p = g.pad(x, &[(1, 0), (0, 0)], 0.0).unwrap(); // [B + 1, 2]
    let e = compile(&g, &[p], &CompileOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot specialise the graph for batch 1"), "{e}");
}

/// Parameter updates and state see one set of values whichever batch runs:
/// `m ← 0.5·m + Σx`, `w ← w − m` over runs at batches 2, 3 and 2.
#[test]
fn updates_carry_over_between_batches() {
    let mut g = Graph::new();
    let x = g.input("x", [BATCH]).unwrap();
    let w = g.param("w", [1], kiln::Init::Constant(10.0)).unwrap();
    let m = g.state("m", [1], kiln::Init::Zeros).unwrap();
    let sx = g.sum(x, &[0], true).unwrap();
    let hm = g.mul_scalar(m, 0.5).unwrap();
    let m2 = g.add(hm, sx).unwrap();
    let w2 = g.sub(w, m2).unwrap();
    let program = kiln::Program {
        graph: g,
        outputs: vec![w],
        updates: vec![(m, m2), (w, w2)],
    };
    let mut exe = kiln::compile_program(program, &CompileOptions::default()).unwrap();
    let (mut wv, mut mv) = (10.0f32, 0.0f32);
    for b in [2usize, 3, 2] {
        let x = Tensor::from_vec([b], vec![1.0; b]).unwrap();
        let out = exe.run(&[("x", &x)]).unwrap();
        assert_eq!(out[0].data(), &[wv], "the run returns w before its update");
        mv = 0.5 * mv + b as f32;
        wv -= mv;
        assert_eq!(exe.param("m").unwrap().data(), &[mv], "batch {b}");
        assert_eq!(exe.param("w").unwrap().data(), &[wv], "batch {b}");
    }
}

/// What the first round of probing found: a batch that is itself a
/// multiple of BATCH, a feed given twice, a wrong non-batch dimension, a
/// product of batch sizes; each an `Err` naming it, the executable left
/// running its previous batch.
#[test]
fn batches_that_cannot_be_told_apart_or_fed_are_refused_cleanly() {
    let mut g = Graph::new();
    let x = g.input("x", [BATCH, 2]).unwrap();
    let y = g.sum(x, &[0], false).unwrap();
    let mut exe = compile(&g, &[y], &CompileOptions::default()).unwrap();
    exe.run(&[("x", &Tensor::full([3, 2], 1.0))]).unwrap();
    for b in [BATCH, 2 * BATCH] {
        let e = exe
            .run(&[("x", &Tensor::zeros([b, 2]))])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&format!("batch {b} is a multiple of kiln::BATCH")),
            "{e}"
        );
        assert_eq!(exe.batch(), Some(3));
    }
    let again = exe.run(&[("x", &Tensor::full([3, 2], 1.0))]).unwrap();
    assert_eq!(again[0].data(), &[3.0, 3.0]);
    let e = exe
        .run(&[
            ("x", &Tensor::full([3, 2], 1.0)),
            ("x", &Tensor::full([4, 2], 1.0)),
        ])
        .unwrap_err()
        .to_string();
    assert!(e.contains("given twice"), "{e}");
    let e = exe
        .run(&[("x", &Tensor::full([3, 5], 1.0))])
        .unwrap_err()
        .to_string();
    assert!(e.contains("declared with shape [B, 2]"), "{e}");

    // an outer product over the batch has B² elements: not a multiple of B
    let mut g = Graph::new();
    let x = g.input("x", [BATCH, 2]).unwrap();
    let outer = g.matmul_t(x, x, false, true).unwrap();
    let flat = g.reshape(outer, &[-1]).unwrap();
    let e = compile(&g, &[flat], &CompileOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("product of batch sizes"), "{e}");
}

/// A program may update parameters without returning anything.
#[test]
fn a_program_of_updates_alone_compiles_and_runs() {
    let mut g = Graph::new();
    let x = g.input("x", [BATCH]).unwrap();
    let w = g.param("w", [1], kiln::Init::Zeros).unwrap();
    let s = g.sum(x, &[0], true).unwrap();
    let w2 = g.add(w, s).unwrap();
    let program = kiln::Program {
        graph: g,
        outputs: vec![],
        updates: vec![(w, w2)],
    };
    let mut exe = kiln::compile_program(program, &CompileOptions::default()).unwrap();
    assert!(exe
        .run(&[("x", &Tensor::full([4], 1.0))])
        .unwrap()
        .is_empty());
    exe.run(&[("x", &Tensor::full([2], 1.0))]).unwrap();
    assert_eq!(exe.param("w").unwrap().data(), &[6.0]);
}

/// The gradient of a mean over the batch and other axes counts all of them
/// once the batch is known: `d Σ mean(x, [0, 2, 3]) / dx = 1/(B·H·W)` for
/// any channel count (a per-channel count broadcast against `x` gave C
/// times that, or no graph at all), and a BatchNorm between a convolution
/// and the loss trains at any batch with the fixed-batch gradient.
#[test]
fn gradients_through_a_batch_mean_count_the_whole_batch() {
    for (c, h, w) in [(3, 1, 1), (5, 4, 4), (2, 3, 1)] {
        let mut g = Graph::new();
        let x = g.input("x", [BATCH, c, h, w]).unwrap();
        let m = g.mean(x, &[0, 2, 3], false).unwrap();
        let l = g.sum_all(m).unwrap();
        let gx = g.grad(l, &[x]).unwrap()[0];
        let mut exe = compile(&g, &[gx], &CompileOptions::default()).unwrap();
        let out = exe.run(&[("x", &Tensor::zeros([4, c, h, w]))]).unwrap();
        let want = 1.0 / (4 * h * w) as f32;
        assert!(
            out[0].data().iter().all(|&v| v == want),
            "[B, {c}, {h}, {w}]: {:?}, want {want}",
            &out[0].data()[..4]
        );
    }
    // conv → BatchNorm → pool → linear, trained: symbolic batch against fixed
    let build = |batch: usize| {
        let mut g = Graph::with_seed(3);
        let x = g.input("x", [batch, 1, 6, 6]).unwrap();
        let labels = g.input_i64("labels", [batch]).unwrap();
        let net = nn::Sequential::new()
            .push(nn::Conv2d::new(1, 5, 3))
            .push(nn::BatchNorm2d::new(5))
            .push(nn::Relu)
            .push(nn::GlobalAvgPool2d)
            .push(nn::Flatten)
            .push(nn::Linear::new(5, 3));
        let logits = net.build(&mut g, x).unwrap();
        let loss = nn::softmax_cross_entropy(&mut g, logits, labels, Reduction::Mean).unwrap();
        Trainer::with_outputs(g, loss, &[logits], Sgd::new(0.1)).unwrap()
    };
    let (mut symbolic, mut fixed) = (build(BATCH), build(4));
    let x = Tensor::rand_uniform([4, 1, 6, 6], -1.0, 1.0, 5);
    let labels = I64Tensor::from(vec![0, 1, 2, 1]);
    for _ in 0..3 {
        let feeds: [(&str, &dyn Feed); 2] = [("x", &x), ("labels", &labels)];
        let (a, b) = (symbolic.step(&feeds).unwrap(), fixed.step(&feeds).unwrap());
        assert!((a - b).abs() <= 1e-6 * (1.0 + b.abs()), "loss {a} vs {b}");
    }
    for ((_, a), (_, b)) in symbolic.params().iter().zip(fixed.params()) {
        assert_close(a.data(), b.data(), 1e-5);
    }
}
