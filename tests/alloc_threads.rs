//! Steady-state runs on two threads make no heap allocations of kiln's own
//! on any thread: the calling thread does its share of the work as a worker
//! of the pool, so nothing is queued for the pool. The only allocations are
//! the `gemm` crate's in a `MatMul` step (its packing buffers, and its tasks
//! when it splits a product over the threads). The counts are process-wide
//! (the pool's other worker included), so this file holds a single test: no
//! other test allocates beside it.

#[path = "common/alloc_rule.rs"]
mod alloc_rule;

use kiln::tooling::alloc_count::{installed, snapshot, CountingAlloc};
use kiln::tooling::bench::{rows, Prepared};
use kiln::CompileOptions;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

#[test]
fn every_bench_row_allocates_only_in_gemm_crate_products_on_two_threads() {
    assert!(installed());
    let options = CompileOptions {
        threads: Some(2),
        ..CompileOptions::default()
    };
    for row in rows() {
        let mut p = Prepared::new(&row, &options).unwrap();
        assert_eq!(p.exe.threads(), 2);
        // warm-up: the pool starts, and each worker's kernel scratch grows to
        // what the tasks it happens to take need
        for _ in 0..5 {
            p.run().unwrap();
        }
        let (before, products) = (snapshot(), alloc_rule::crate_products());
        // more runs than rayon's job queue has slots per block (63), so a
        // queued job per run would show
        for _ in 0..70 {
            p.run().unwrap();
        }
        let used = snapshot() - before;
        alloc_rule::check(&row, used, alloc_rule::crate_products() - products, 4);
    }
}
