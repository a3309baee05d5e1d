//! Steady-state runs on two threads make no heap allocations on any thread:
//! the calling thread does its share of the work as a worker of the pool, so
//! nothing is queued for the pool. The counts are process-wide (the pool's
//! other worker included), so this file holds a single test: no other test
//! allocates beside it.

use kiln::alloc_count::{installed, snapshot, CountingAlloc};
use kiln::bench::{rows, Prepared};
use kiln::CompileOptions;

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

#[test]
fn every_seed_row_runs_without_allocating_on_two_threads() {
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
        let before = snapshot();
        // more runs than rayon's job queue has slots per block (63), so a
        // queued job per run would show
        for _ in 0..70 {
            p.run().unwrap();
        }
        let used = snapshot() - before;
        assert_eq!(used.count, 0, "{} allocated {used:?} in 70 runs", row.id());
    }
}
