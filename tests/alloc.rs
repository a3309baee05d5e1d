//! Steady-state runs make no heap allocations: the memory plan's arena holds
//! every value, inputs are read in place and kernel scratch is reused.
//! Counts are per thread (tests run side by side); one-thread runs stay on
//! the calling thread.

use kiln::alloc_count::{installed, thread_snapshot as snapshot, CountingAlloc};
use kiln::bench::{rows, Prepared};
use kiln::CompileOptions;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

#[test]
fn every_seed_row_runs_without_allocating_on_one_thread() {
    assert!(installed());
    let options = CompileOptions {
        threads: Some(1),
        ..CompileOptions::default()
    };
    let all = rows();
    assert_eq!(all.len(), 13, "conv, pooling and the cnn training step");
    for row in all {
        let mut p = Prepared::new(&row, &options).unwrap();
        p.run().unwrap(); // warm-up: kernel scratch grows once
        let before = snapshot();
        for _ in 0..2 {
            p.run().unwrap();
        }
        let used = snapshot() - before;
        assert_eq!(used.count, 0, "{} allocated {used:?} in 2 runs", row.id());
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
