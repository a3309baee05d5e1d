//! Permuting the axes of a row-major array: contiguous row copies when the
//! last axis stays, a cache-blocked transpose when the last two axes swap,
//! and a strided inner loop otherwise (no per-element index arithmetic);
//! planes or runs of rows in parallel.

use super::par;
use super::transpose::transpose;
use crate::shape::{small_strides, SmallDims};

/// Writes `x` (of shape `dims`) with its axes permuted into `out`:
/// output axis `i` is input axis `perm[i]`. Planes (or runs of output rows)
/// go to parallel tasks when threads allow; nothing is allocated up to rank 8.
pub fn permute(x: &[f32], dims: &[usize], perm: &[usize], out: &mut [f32]) {
    let r = dims.len();
    let n: usize = dims.iter().product();
    if r == 0 || n == 0 {
        out[..n].copy_from_slice(&x[..n]);
        return;
    }
    let in_strides = small_strides(dims);
    let mut od = SmallDims::zeros(r);
    let mut read = SmallDims::zeros(r);
    for ((o, s), &p) in od.iter_mut().zip(read.iter_mut()).zip(perm) {
        (*o, *s) = (dims[p], in_strides[p]);
    }
    let out = &mut out[..n];
    let swaps_last_two =
        r >= 2 && perm[r - 1] == r - 2 && perm[r - 2] == r - 1 && (0..r - 2).all(|i| perm[i] == i);
    if swaps_last_two {
        let (rows, cols) = (dims[r - 2], dims[r - 1]);
        let plane = rows * cols;
        par::for_each_plane(out, plane, plane, |p, dst| {
            transpose(&x[p * plane..(p + 1) * plane], cols, rows, cols, dst, rows)
        });
        return;
    }
    // runs of whole output rows, each task starting from its own multi-index
    let inner = od[r - 1];
    let rows_per_task = ROWS_TASK_MIN_ELEMENTS.div_ceil(inner).max(1);
    par::for_each_plane(
        out,
        rows_per_task * inner,
        rows_per_task * inner,
        |t, chunk| copy_rows(x, &od, &read, t * rows_per_task, chunk),
    );
}

/// Output elements below which a run of rows is not split further.
const ROWS_TASK_MIN_ELEMENTS: usize = 1 << 14;

/// Fills `out` with whole output rows from row `first_row` on, reading `x`
/// through the permuted strides `read` of output dims `od`.
fn copy_rows(x: &[f32], od: &[usize], read: &[usize], first_row: usize, out: &mut [f32]) {
    let r = od.len();
    let inner = od[r - 1];
    let step = read[r - 1];
    // the multi-index of `first_row` over the outer output dims, and its offset
    let mut idx = SmallDims::zeros(r - 1);
    let mut base = 0usize;
    let mut rest = first_row;
    for d in (0..r - 1).rev() {
        idx[d] = rest % od[d];
        rest /= od[d];
        base += idx[d] * read[d];
    }
    for row in out.chunks_exact_mut(inner) {
        if step == 1 {
            row.copy_from_slice(&x[base..base + inner]);
        } else {
            for (j, o) in row.iter_mut().enumerate() {
                *o = x[base + j * step];
            }
        }
        // advance the outer multi-index (output order), carrying the read offset
        let mut d = r - 1;
        while d > 0 {
            d -= 1;
            idx[d] += 1;
            base += read[d];
            if idx[d] < od[d] {
                break;
            }
            base -= read[d] * od[d];
            idx[d] = 0;
        }
    }
}
