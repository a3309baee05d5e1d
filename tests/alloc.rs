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
        17,
        "conv, pooling, linear and three training steps"
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
