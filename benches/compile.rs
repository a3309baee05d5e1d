//! Compile time: building the `Trainer` (training step and evaluation graph,
//! autodiff, every pass, schedule and memory plan) for the cnn, a 100-layer
//! MLP and an unrolled LSTM over 256 and 1024 steps.

use criterion::{criterion_group, criterion_main, Criterion};
use kiln::nn::{self, Layer};
use kiln::optim::Sgd;
use kiln::OpBuilder;
use kiln::{models, Graph, NodeId, Trainer};

/// A `Linear(64, 64) + ReLU` stack of `depth` layers on `[32, 64]`, with a
/// cross-entropy loss over 10 classes.
fn mlp(depth: usize) -> (Graph, NodeId) {
    let mut g = Graph::with_seed(1);
    let mut h = g.input("x", [32, 64]).unwrap();
    for _ in 0..depth {
        h = nn::Linear::new(64, 64).build(&mut g, h).unwrap();
        h = g.relu(h).unwrap();
    }
    let logits = nn::Linear::new(64, 10).build(&mut g, h).unwrap();
    let labels = g.input_i64("labels", [32]).unwrap();
    let loss = nn::softmax_cross_entropy(&mut g, logits, labels, nn::Reduction::Mean).unwrap();
    (g, loss)
}

/// An LSTM(8 → 16) over `t` steps of `[4, t, 8]`, loss the sum of its outputs.
fn lstm(t: usize) -> (Graph, NodeId) {
    let mut g = Graph::with_seed(1);
    let x = g.input("x", [4, t, 8]).unwrap();
    let y = nn::Lstm::new(8, 16).build(&mut g, x).unwrap();
    let loss = g.sum_all(y).unwrap();
    (g, loss)
}

fn cnn() -> (Graph, NodeId) {
    let m = models::build("cnn", 0).unwrap();
    let mut g = m.graph;
    let labels = g.input_i64("labels", [m.inputs[0].1[0]]).unwrap();
    let loss = nn::softmax_cross_entropy(&mut g, m.output, labels, nn::Reduction::Mean).unwrap();
    (g, loss)
}

/// Builds a graph and its loss.
type Build = fn() -> (Graph, NodeId);

fn compile_time(c: &mut Criterion) {
    let mut group = c.benchmark_group("trainer_build");
    group.sample_size(10);
    let cases: Vec<(&str, Build)> = vec![
        ("cnn", cnn),
        ("mlp100", || mlp(100)),
        ("lstm256", || lstm(256)),
        ("lstm1024", || lstm(1024)),
    ];
    for (name, build) in cases {
        let (g, loss) = build();
        group.bench_function(name, |b| {
            b.iter(|| Trainer::new(g.clone(), loss, Sgd::new(0.01)).expect("compiles"))
        });
    }
    group.finish();
}

criterion_group!(benches, compile_time);
criterion_main!(benches);
