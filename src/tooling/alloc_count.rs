//! A counting global allocator, so benches and tests can prove how many heap
//! allocations a run makes.
//!
//! Install it in a binary or test crate with
//! `#[global_allocator] static A: kiln::tooling::alloc_count::CountingAlloc = kiln::tooling::alloc_count::CountingAlloc;`
//! and read [`snapshot`] before and after the code in question. The counts are
//! process-wide (every thread), so they include the thread pool's workers.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// This thread's `(allocations, bytes)`.
    static THREAD: std::cell::Cell<(u64, u64)> = const { std::cell::Cell::new((0, 0)) };
}

/// The system allocator, counting allocations (and reallocations) and their bytes.
pub struct CountingAlloc;

// SAFETY: every call is forwarded unchanged to `System`; the counters are side effects only.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        System.realloc(ptr, layout, new_size)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

fn count(bytes: usize) {
    ALLOCS.fetch_add(1, Ordering::Relaxed);
    BYTES.fetch_add(bytes as u64, Ordering::Relaxed);
    // a thread being torn down has no thread-locals left; it is still counted above
    let _ = THREAD.try_with(|t| {
        let (n, b) = t.get();
        t.set((n + 1, b + bytes as u64));
    });
}

/// Allocations and allocated bytes counted so far, process-wide.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Allocations {
    /// Number of `alloc`, `alloc_zeroed` and `realloc` calls.
    pub count: u64,
    /// Bytes those calls asked for.
    pub bytes: u64,
}

impl std::ops::Sub for Allocations {
    type Output = Allocations;
    fn sub(self, rhs: Self) -> Self {
        Allocations {
            count: self.count - rhs.count,
            bytes: self.bytes - rhs.bytes,
        }
    }
}

/// The counters now.
pub fn snapshot() -> Allocations {
    Allocations {
        count: ALLOCS.load(Ordering::Relaxed),
        bytes: BYTES.load(Ordering::Relaxed),
    }
}

/// The counters of the calling thread only (exact for single-threaded runs
/// while other threads allocate).
pub fn thread_snapshot() -> Allocations {
    let (count, bytes) = THREAD.with(|t| t.get());
    Allocations { count, bytes }
}

/// Whether [`CountingAlloc`] is this process's global allocator (otherwise the
/// counters never move and [`snapshot`] reads zero).
pub fn installed() -> bool {
    let before = snapshot().count;
    let probe = std::hint::black_box(Box::new(0u64));
    drop(probe);
    snapshot().count > before
}
