//! Per-thread scratch buffers for kernels (im2col columns, partial sums).
//!
//! Each thread keeps a few buffers that grow to the largest size asked for and
//! are then reused, so a kernel's scratch costs no allocation once every
//! thread has run it. Slots keep the uses that nest apart.

use std::cell::RefCell;

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
}

/// Floats of slack that let a buffer start on a 64-byte boundary.
const ALIGN_SLACK: usize = 16;

thread_local! {
    /// Per slot, the buffers not in use: one per level of nesting seen so far.
    static BUFFERS: [RefCell<Vec<Vec<f32>>>; 5] = const {
        [const { RefCell::new(Vec::new()) }; 5]
    };
}

/// Calls `f` with `len` floats of this thread's `slot` buffer, starting on a
/// 64-byte (cache line) boundary (contents unspecified). A call nested in
/// another of the same slot on the same thread (a task a waiting thread
/// steals may be one) gets a second buffer, which is kept as well, so nesting
/// too allocates nothing once it has been seen.
pub fn with<R>(slot: Slot, len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let i = slot as usize;
    let mut buf = BUFFERS.with(|b| b[i].borrow_mut().pop().unwrap_or_default());
    if buf.len() < len + ALIGN_SLACK {
        buf.resize(len + ALIGN_SLACK, 0.0);
    }
    let skip = buf.as_ptr().align_offset(64).min(ALIGN_SLACK);
    let r = f(&mut buf[skip..skip + len]);
    // nested calls return first, so the outermost call's buffer stays on top
    BUFFERS.with(|b| b[i].borrow_mut().push(buf));
    r
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
}
