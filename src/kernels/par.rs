//! How many threads a kernel may use, and parallel loops that fall back to
//! plain loops with one.
//!
//! A kernel runs in parallel only inside a rayon pool (the executor installs
//! its pool for a run) and not inside [`sequential`]; called from anywhere
//! else it runs on the calling thread.

use rayon::prelude::*;
use std::cell::Cell;

thread_local! {
    static SEQUENTIAL: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with every kernel it calls on the calling thread.
pub fn sequential<R>(f: impl FnOnce() -> R) -> R {
    let was = SEQUENTIAL.with(|s| s.replace(true));
    let r = f();
    SEQUENTIAL.with(|s| s.set(was));
    r
}

/// Threads the current kernel may use.
pub fn threads() -> usize {
    if SEQUENTIAL.with(|s| s.get()) || rayon::current_thread_index().is_none() {
        1
    } else {
        rayon::current_num_threads()
    }
}

/// Calls `f(i, chunk)` for every `chunk`-sized piece of `out` (the last may be
/// shorter), in parallel when threads allow and there is more than one piece.
pub fn for_each_chunk<F>(out: &mut [f32], chunk: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync + Send,
{
    let chunk = chunk.max(1);
    if threads() > 1 && out.len() > chunk {
        out.par_chunks_mut(chunk)
            .enumerate()
            .for_each(|(i, c)| f(i, c));
    } else {
        out.chunks_mut(chunk).enumerate().for_each(|(i, c)| f(i, c));
    }
}

/// How many items of `cost` work units each make a parallel task worth its
/// overhead (about 20k multiply-adds a task), at least one.
pub fn grain(items: usize, cost_per_item: usize) -> usize {
    let per_task = (1usize << 15) / cost_per_item.max(1);
    let balanced = items.div_ceil(4 * threads());
    per_task.max(balanced).max(1)
}
