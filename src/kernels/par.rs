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

/// A raw output pointer that parallel tasks writing disjoint cells share
/// (each use says why its tasks' cells are disjoint).
#[derive(Clone, Copy, Debug)]
pub struct SharedMut(pub *mut f32);
// SAFETY: the pointer is only dereferenced by tasks that write disjoint cells.
unsafe impl Send for SharedMut {}
// SAFETY: as above.
unsafe impl Sync for SharedMut {}

impl SharedMut {
    /// The pointer (a method, so that closures capture the whole `SharedMut`).
    pub fn get(self) -> *mut f32 {
        self.0
    }
}

/// Elements of work below which a parallel task is not worth its overhead.
const TASK_MIN_WORK: usize = 1 << 14;

/// Planes per task so that each task has at least [`TASK_MIN_WORK`] elements
/// of `work` per plane.
fn planes_per_task(work: usize) -> usize {
    TASK_MIN_WORK.div_ceil(work.max(1))
}

/// Calls `f(p, plane p of out)` for every `len`-sized plane of `out`; planes
/// go to parallel tasks when threads allow and each does about `work`
/// elements of work.
pub fn for_each_plane<F>(out: &mut [f32], len: usize, work: usize, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync + Send,
{
    if len == 0 {
        return;
    }
    if threads() > 1 && out.len() > len {
        out.par_chunks_mut(len)
            .with_min_len(planes_per_task(work))
            .enumerate()
            .for_each(|(p, c)| f(p, c));
    } else {
        out.chunks_mut(len).enumerate().for_each(|(p, c)| f(p, c));
    }
}

/// [`for_each_plane`] over two outputs with planes of the same `len`.
pub fn for_each_plane2<F>(a: &mut [f32], b: &mut [f32], len: usize, work: usize, f: F)
where
    F: Fn(usize, &mut [f32], &mut [f32]) + Sync + Send,
{
    if len == 0 {
        return;
    }
    if threads() > 1 && a.len() > len {
        a.par_chunks_mut(len)
            .zip(b.par_chunks_mut(len))
            .with_min_len(planes_per_task(work))
            .enumerate()
            .for_each(|(p, (x, y))| f(p, x, y));
    } else {
        a.chunks_mut(len)
            .zip(b.chunks_mut(len))
            .enumerate()
            .for_each(|(p, (x, y))| f(p, x, y));
    }
}

/// Calls `f(x_c, g_c (empty without g), out_c)` for every channel `c` of
/// `[N, C, S]` values `dims = (N, C, S)`: the channel's `N·S` values of `x`
/// (and `g`) gathered into this thread's scratch, `f`'s result scattered
/// back into `out` (of `x`'s size); channels in parallel when threads allow.
pub fn for_each_channel<F>(
    x: &[f32],
    g: Option<&[f32]>,
    out: &mut [f32],
    (n, c, s): (usize, usize, usize),
    f: F,
) where
    F: Fn(&[f32], &[f32], &mut [f32]) + Sync + Send,
{
    use super::scratch::{self, Slot};
    let m = n * s;
    if m == 0 || c == 0 {
        return;
    }
    assert!(
        x.len() >= n * c * s && out.len() >= n * c * s,
        "channels: buffers too small"
    );
    assert!(
        g.is_none_or(|g| g.len() >= n * c * s),
        "channels: gradient too small"
    );
    let dst = SharedMut(out.as_mut_ptr());
    let run = |ch: usize| {
        scratch::with(Slot::Registers, 3 * m, |buf| {
            let (xc, rest) = buf.split_at_mut(m);
            let (gc, oc) = rest.split_at_mut(m);
            for b in 0..n {
                let at = (b * c + ch) * s;
                xc[b * s..(b + 1) * s].copy_from_slice(&x[at..at + s]);
                if let Some(g) = g {
                    gc[b * s..(b + 1) * s].copy_from_slice(&g[at..at + s]);
                }
            }
            f(xc, if g.is_some() { gc } else { &[] }, oc);
            for b in 0..n {
                let at = (b * c + ch) * s;
                // SAFETY: channel `ch` alone writes cells `(b·C + ch)·S ..
                // + S`, inside `out` (asserted above).
                unsafe {
                    std::ptr::copy_nonoverlapping(oc[b * s..].as_ptr(), dst.get().add(at), s)
                };
            }
        })
    };
    if threads() > 1 && c > 1 {
        (0..c).into_par_iter().for_each(run);
    } else {
        (0..c).for_each(run);
    }
}
