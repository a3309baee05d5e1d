//! Per-thread scratch buffers for kernels (im2col columns, partial sums).
//!
//! Each thread keeps a few buffers that grow to the largest size asked for and
//! are then reused, so a kernel's scratch costs no allocation once every
//! thread has run it. Slots keep the uses that nest apart.

use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Which of a thread's scratch buffers to use.
#[derive(Clone, Copy, Debug)]
pub enum Slot {
    /// Columns of an unfolded input (im2col) or of a product before col2im.
    Columns,
    /// Per-task partial sums that are reduced afterwards.
    Partials,
    /// The GEMM's packed block of its left operand.
    PackA,
    /// The GEMM's packed block of its right operand.
    PackB,
    /// Rearranged weights (the flipped kernel of an input gradient).
    Weights,
    /// A product computed transposed, before it is written out.
    Product,
    /// A product's left operand written out row-major for the `gemm` crate.
    DenseA,
    /// A product's right operand written out row-major for the `gemm` crate.
    DenseB,
    /// A fused loop's registers, one block per instruction.
    Registers,
    /// Attention scores and weights of a block of query rows.
    Scores,
}

/// Floats of slack that let a buffer start on a 64-byte boundary.
const ALIGN_SLACK: usize = 16;

/// Slots.
const SLOTS: usize = 10;

/// Per slot, the most floats any thread has asked for, and the deepest nesting
/// any thread has seen (see [`reserve_seen`]).
static SEEN_LEN: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
static SEEN_DEPTH: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
/// Bumped whenever a slot's [`SEEN_LEN`] or [`SEEN_DEPTH`] grows.
static GROWN: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Per slot, the buffers not in use: one per level of nesting seen so far.
    static BUFFERS: [RefCell<Vec<Vec<f32>>>; SLOTS] = const {
        [const { RefCell::new(Vec::new()) }; SLOTS]
    };
    /// Per slot, the buffers taken by calls that have not returned.
    static IN_USE: [Cell<usize>; SLOTS] = const { [const { Cell::new(0) }; SLOTS] };
}

/// Calls `f` with `len` floats of this thread's `slot` buffer, starting on a
/// 64-byte (cache line) boundary (contents unspecified: NaN in builds with
/// debug assertions, so that reading scratch before writing it shows in
/// every test instead of depending on what ran before). A call nested in
/// another of the same slot on the same thread (a task a waiting thread
/// steals may be one) gets a second buffer, which is kept as well, so nesting
/// too allocates nothing once it has been seen.
pub fn with<R>(slot: Slot, len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let i = slot as usize;
    let mut buf = BUFFERS.with(|b| b[i].borrow_mut().pop().unwrap_or_default());
    // this call's buffer and those of the calls it nests in
    let depth = IN_USE.with(|u| u[i].replace(u[i].get() + 1)) + 1;
    if buf.len() < len + ALIGN_SLACK {
        let grew = (SEEN_LEN[i].fetch_max(len, Ordering::Relaxed) < len)
            | (SEEN_DEPTH[i].fetch_max(depth, Ordering::Relaxed) < depth);
        if grew {
            GROWN.fetch_add(1, Ordering::Relaxed);
        }
        buf.resize(len + ALIGN_SLACK, 0.0);
    }
    let skip = buf.as_ptr().align_offset(64).min(ALIGN_SLACK);
    let mine = &mut buf[skip..skip + len];
    if cfg!(debug_assertions) {
        // a kernel that reads scratch it did not write sees NaN, whatever
        // ran before: every compiled-against-unrewritten test then fails
        mine.fill(f32::NAN);
    }
    let r = f(mine);
    IN_USE.with(|u| u[i].set(depth - 1));
    // nested calls return first, so the outermost call's buffer stays on top
    BUFFERS.with(|b| b[i].borrow_mut().push(buf));
    r
}

/// A counter that changes whenever some thread's scratch grew past what any
/// thread had before (a new largest size or a deeper nesting of a slot).
pub fn grown() -> usize {
    GROWN.load(Ordering::Relaxed)
}

/// Grows this thread's buffers to what every thread has needed so far: per
/// slot, as many buffers as the deepest nesting seen, each of the largest
/// size asked for. Run on every thread of a pool (when [`grown`] changed),
/// it spares a thread the allocation the first time it takes a task another
/// thread has run before. Buffers in use by unfinished [`with`] calls on this
/// thread are left alone.
pub fn reserve_seen() {
    BUFFERS.with(|b| {
        for (i, slot) in b.iter().enumerate() {
            let (len, depth) = (
                SEEN_LEN[i].load(Ordering::Relaxed),
                SEEN_DEPTH[i].load(Ordering::Relaxed),
            );
            let mut slot = slot.borrow_mut();
            if slot.len() < depth {
                slot.resize_with(depth, Vec::new);
            }
            for buf in slot.iter_mut() {
                if buf.len() < len + ALIGN_SLACK {
                    buf.resize(len + ALIGN_SLACK, 0.0);
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_calls_get_their_own_buffers_and_keep_them() {
        let (outer, inner) = with(Slot::Partials, 100, |a| {
            a.fill(1.0);
            let inner = with(Slot::Partials, 10, |b| {
                b.fill(2.0);
                b.as_ptr() as usize
            });
            assert!(
                a.iter().all(|&v| v == 1.0),
                "the inner call wrote into the outer buffer"
            );
            (a.as_ptr() as usize, inner)
        });
        assert_ne!(outer, inner);
        // the same nesting again reuses the same two buffers
        let again = with(Slot::Partials, 100, |a| {
            let b = with(Slot::Partials, 10, |b| b.as_ptr() as usize);
            (a.as_ptr() as usize, b)
        });
        assert_eq!(again, (outer, inner));
    }

    #[test]
    fn a_thread_reserves_what_another_thread_needed() {
        // larger than any kernel test asks of this slot, so this test sets the maxima
        const LEN: usize = 1 << 21;
        let before = grown();
        std::thread::spawn(|| with(Slot::Weights, LEN, |_| with(Slot::Weights, LEN, |_| ())))
            .join()
            .unwrap();
        assert_ne!(grown(), before, "a new size and depth were seen");
        let free = std::thread::spawn(|| {
            reserve_seen();
            BUFFERS.with(|b| {
                let b = b[Slot::Weights as usize].borrow();
                b.iter().map(|buf| buf.len()).collect::<Vec<_>>()
            })
        })
        .join()
        .unwrap();
        assert!(free.len() >= 2, "one buffer per nesting level: {free:?}");
        assert!(free.iter().all(|&n| n >= LEN), "{free:?}");
    }
}
