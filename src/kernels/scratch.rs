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
    static BUFFERS: [RefCell<Vec<f32>>; 5] = const {
        [const { RefCell::new(Vec::new()) }; 5]
    };
}

/// Calls `f` with `len` floats of this thread's `slot` buffer, starting on a
/// 64-byte (cache line) boundary (contents unspecified). A call nested in
/// another of the same slot on the same thread gets a fresh buffer.
pub fn with<R>(slot: Slot, len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let i = slot as usize;
    let mut buf = BUFFERS.with(|b| std::mem::take(&mut *b[i].borrow_mut()));
    if buf.len() < len + ALIGN_SLACK {
        buf.resize(len + ALIGN_SLACK, 0.0);
    }
    let skip = buf.as_ptr().align_offset(64).min(ALIGN_SLACK);
    let r = f(&mut buf[skip..skip + len]);
    BUFFERS.with(|b| {
        let mut kept = b[i].borrow_mut();
        if kept.len() < buf.len() {
            *kept = buf;
        }
    });
    r
}
