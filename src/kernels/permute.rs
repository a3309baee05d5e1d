//! Permuting the axes of a row-major array: contiguous row copies when the
//! last axis stays, a cache-blocked transpose when the last two axes swap,
//! and a strided inner loop otherwise (no per-element index arithmetic).

/// Tile edge of the blocked transpose.
const TILE: usize = 32;

/// Writes `x` (of shape `dims`) with its axes permuted into `out`:
/// output axis `i` is input axis `perm[i]`.
pub fn permute(x: &[f32], dims: &[usize], perm: &[usize], out: &mut [f32]) {
    let r = dims.len();
    let n: usize = dims.iter().product();
    if r == 0 || n == 0 {
        out[..n].copy_from_slice(&x[..n]);
        return;
    }
    let mut in_strides = vec![1usize; r];
    for i in (0..r - 1).rev() {
        in_strides[i] = in_strides[i + 1] * dims[i + 1];
    }
    let od: Vec<usize> = perm.iter().map(|&p| dims[p]).collect();
    let read: Vec<usize> = perm.iter().map(|&p| in_strides[p]).collect();
    let swaps_last_two =
        r >= 2 && perm[r - 1] == r - 2 && perm[r - 2] == r - 1 && (0..r - 2).all(|i| perm[i] == i);
    if swaps_last_two {
        let (rows, cols) = (dims[r - 2], dims[r - 1]);
        for (src, dst) in x
            .chunks_exact(rows * cols)
            .zip(out.chunks_exact_mut(rows * cols))
        {
            transpose_2d(src, rows, cols, dst);
        }
        return;
    }
    let inner = od[r - 1];
    let step = read[r - 1];
    let mut idx = vec![0usize; r - 1];
    let mut base = 0usize;
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

/// `dst[cols, rows] = src[rows, cols]ᵀ`, in `TILE × TILE` blocks.
fn transpose_2d(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    for i0 in (0..rows).step_by(TILE) {
        for j0 in (0..cols).step_by(TILE) {
            for i in i0..(i0 + TILE).min(rows) {
                for j in j0..(j0 + TILE).min(cols) {
                    dst[j * rows + i] = src[i * cols + j];
                }
            }
        }
    }
}
