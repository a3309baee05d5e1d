//! Steady-state runs make no heap allocations of kiln's own: the memory
//! plan's arena holds every value, inputs are read in place and kernel
//! scratch is reused. The only allocations are the `gemm` crate's packing
//! buffers (a few per product, freed before it returns): in `MatMul` steps,
//! 1x1 and strided convolutions' products, and every convolution's where
//! kiln's tile does not run.
//! Counts are per thread (tests run side by side); one-thread runs stay on
//! the calling thread.

#[path = "common/alloc_rule.rs"]
mod alloc_rule;

use kiln::tooling::alloc_count::{installed, thread_snapshot as snapshot, CountingAlloc};
use kiln::tooling::bench::{rows, Prepared};
use kiln::CompileOptions;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

#[test]
fn every_bench_row_allocates_only_in_gemm_crate_products_on_one_thread() {
    assert!(installed());
    let options = CompileOptions {
        threads: Some(1),
        ..CompileOptions::default()
    };
    let all = rows();
    assert_eq!(
        all.len(),
        20,
        "conv, pooling, linear, five training steps and the transformer's forward"
    );
    for row in all {
        let mut p = Prepared::new(&row, &options).unwrap();
        p.run().unwrap(); // warm-up: kernel scratch grows once
        let (before, products) = (snapshot(), alloc_rule::crate_products());
        for _ in 0..2 {
            p.run().unwrap();
        }
        let used = snapshot() - before;
        alloc_rule::check(&row, used, alloc_rule::crate_products() - products, 2);
    }
}

#[test]
fn run_allocates_only_its_returned_tensors() {
    let options = CompileOptions {
        threads: Some(1),
        ..CompileOptions::default()
    };
    let row = rows()
        .into_iter()
        .find(|r| r.id() == "AvgPool2D/4x32x16x16/forward_backward")
        .unwrap();
    let mut p = Prepared::new(&row, &options).unwrap();
    let feeds = kiln::exec::feed_refs(&p.feeds);
    let outputs = p.exe.num_outputs();
    p.exe.run(&feeds).unwrap();
    let before = snapshot();
    let out = p.exe.run(&feeds).unwrap();
    let used = snapshot() - before;
    // the Vec of outputs, and per output its data and its shape
    assert_eq!(out.len(), outputs);
    assert!(used.count <= 1 + 2 * outputs as u64, "{used:?}");
}

#[test]
fn a_recurrent_training_step_allocates_only_in_gemm_crate_products() {
    use kiln::nn::{self, Layer};
    use kiln::{Graph, OpBuilder, Tensor};
    // an LSTM (one scan per direction and its gradient scans) and its gradients
    let mut g = Graph::with_seed(3);
    let x = g.input("x", [2, 6, 3]).unwrap();
    let y = nn::Lstm::new(3, 4)
        .bidirectional(true)
        .build(&mut g, x)
        .unwrap();
    let loss = g.sum_all(y).unwrap();
    let params: Vec<kiln::NodeId> = g.trainable_params().iter().map(|p| p.1).collect();
    let mut outs = vec![loss];
    outs.extend(g.grad(loss, &params).unwrap());
    let options = CompileOptions {
        threads: Some(1),
        ..CompileOptions::default()
    };
    let mut exe = kiln::compile(&g, &outs, &options).unwrap();
    let xv = Tensor::rand_uniform([2, 6, 3], -1.0, 1.0, 1);
    exe.run_in_place(&[("x", &xv)]).unwrap();
    let (before, products) = (snapshot(), alloc_rule::crate_products());
    for _ in 0..2 {
        exe.run_in_place(&[("x", &xv)]).unwrap();
    }
    let used = snapshot() - before;
    let products = alloc_rule::crate_products() - products;
    assert!(
        used.count <= 2 * products,
        "{used:?} with {products} gemm crate products"
    );
}

#[test]
fn a_scan_without_products_allocates_nothing() {
    use kiln::ops::ScanBody;
    use kiln::{Graph, OpBuilder, Tensor};
    // carry' = tanh(carry·k + x), its gradient too: no matmul anywhere
    let body = ScanBody::build(&[4], &[&[4]], &[&[4]], |b, c, x, k| {
        let ck = b.mul(c, k[0])?;
        let s = b.add(ck, x[0])?;
        b.tanh(s)
    })
    .unwrap();
    let mut g = Graph::new();
    let (c0, xs, k) = (
        g.input("c0", [4]).unwrap(),
        g.input("xs", [5, 4]).unwrap(),
        g.input("k", [4]).unwrap(),
    );
    let seq = g.scan(&body, c0, &[xs], &[k], false).unwrap();
    let loss = g.sum_all(seq).unwrap();
    let mut outs = vec![loss];
    outs.extend(g.grad(loss, &[c0, xs, k]).unwrap());
    let options = CompileOptions {
        threads: Some(1),
        ..CompileOptions::default()
    };
    let mut exe = kiln::compile(&g, &outs, &options).unwrap();
    let (cv, xv, kv) = (
        Tensor::full([4], 0.5),
        Tensor::full([5, 4], 0.1),
        Tensor::full([4], 0.9),
    );
    let feeds: [(&str, &dyn kiln::Feed); 3] = [("c0", &cv), ("xs", &xv), ("k", &kv)];
    exe.run_in_place(&feeds).unwrap();
    let before = snapshot();
    exe.run_in_place(&feeds).unwrap();
    assert_eq!((snapshot() - before).count, 0);
}
