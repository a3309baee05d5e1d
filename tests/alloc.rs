//! Steady-state runs make no heap allocations of kiln's own: the memory
//! plan's arena holds every value, inputs are read in place and kernel
//! scratch is reused. The only allocations are the `gemm` crate's packing
//! buffers in a `MatMul` step (a few per product, freed before it returns),
//! and in a convolution's products where kiln's tile does not run.
//! Counts are per thread (tests run side by side); one-thread runs stay on
//! the calling thread.

use kiln::tooling::alloc_count::{installed, thread_snapshot as snapshot, CountingAlloc};
use kiln::tooling::bench::{rows, Prepared};
use kiln::tooling::kernels::gemm::tile;
use kiln::CompileOptions;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

/// `MatMul` steps per run of `p`'s executable (counted by its profile).
fn matmuls_per_run(p: &mut Prepared) -> u64 {
    p.exe.set_profiling(true);
    p.run().unwrap();
    let profile = p.exe.profile().unwrap();
    let calls = profile
        .ops
        .iter()
        .filter(|o| o.0 == "matmul")
        .map(|o| o.1)
        .sum();
    p.exe.set_profiling(false);
    calls
}

#[test]
fn every_bench_row_allocates_only_in_matmul_products_on_one_thread() {
    assert!(installed());
    let options = CompileOptions {
        threads: Some(1),
        ..CompileOptions::default()
    };
    let all = rows();
    assert_eq!(
        all.len(),
        16,
        "conv, pooling, linear and two training steps"
    );
    for row in all {
        let mut p = Prepared::new(&row, &options).unwrap();
        p.run().unwrap(); // warm-up: kernel scratch grows once
        let matmuls = matmuls_per_run(&mut p);
        let before = snapshot();
        for _ in 0..2 {
            p.run().unwrap();
        }
        let used = snapshot() - before;
        // at most two per product on one thread (the crate's packing buffer
        // and its table of packed panels); without kiln's tile (no AVX2 + FMA, or KILN_SIMD=none) convolutions'
        // products go to the crate too (not bounded here); pooling never allocates
        let pooling = row.layer.ends_with("Pool2D");
        if pooling || (matmuls == 0 && tile::available()) {
            assert_eq!(used.count, 0, "{} allocated {used:?} in 2 runs", row.id());
        } else if tile::available() {
            assert!(
                used.count <= 2 * 2 * matmuls,
                "{} allocated {used:?} in 2 runs ({matmuls} matmul steps per run)",
                row.id()
            );
        }
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
    let feeds: Vec<(&str, &kiln::Tensor)> = p.feeds.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let outputs = p.exe.num_outputs();
    p.exe.run(&feeds).unwrap();
    let before = snapshot();
    let out = p.exe.run(&feeds).unwrap();
    let used = snapshot() - before;
    // the Vec of outputs, and per output its data and its shape
    assert_eq!(out.len(), outputs);
    assert!(used.count <= 1 + 2 * outputs as u64, "{used:?}");
}
