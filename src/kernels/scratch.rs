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
}

thread_local! {
    static BUFFERS: [RefCell<Vec<f32>>; 2] = const { [RefCell::new(Vec::new()), RefCell::new(Vec::new())] };
}

/// Calls `f` with `len` floats of this thread's `slot` buffer (contents
/// unspecified). A call nested in another of the same slot on the same thread
/// gets a fresh buffer.
pub fn with<R>(slot: Slot, len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let i = slot as usize;
    let mut buf = BUFFERS.with(|b| std::mem::take(&mut *b[i].borrow_mut()));
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    let r = f(&mut buf[..len]);
    BUFFERS.with(|b| {
        let mut kept = b[i].borrow_mut();
        if kept.len() < buf.len() {
            *kept = buf;
        }
    });
    r
}
