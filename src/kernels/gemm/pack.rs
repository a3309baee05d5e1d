//! The operands of [`gemm`](super::gemm): how a block of `A` or `B` becomes
//! the panels the tiles read ([`PackA`], [`PackB`]), or tells the tiles
//! where its rows lie instead; and [`MatRef`], a strided matrix that packs
//! itself.

use super::*;

/// A read-only matrix: element `(i, j)` is `data[i·row_stride + j·col_stride]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    /// The elements.
    pub data: &'a [f32],
    /// Distance between rows.
    pub row_stride: usize,
    /// Distance between columns.
    pub col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// A row-major `rows × cols` matrix, or its transpose when `transposed`
    /// (then `data` holds the `cols × rows` matrix row-major).
    pub fn new(data: &'a [f32], rows: usize, cols: usize, transposed: bool) -> Self {
        let (row_stride, col_stride) = if transposed { (1, rows) } else { (cols, 1) };
        MatRef {
            data,
            row_stride,
            col_stride,
        }
    }
    /// Whether every element of a `rows × cols` view lies inside `data`
    /// (offsets computed without overflow; strides beyond `isize` never fit,
    /// as the `gemm` crate takes them signed).
    pub fn fits(&self, rows: usize, cols: usize) -> bool {
        if rows == 0 || cols == 0 {
            return true;
        }
        let signed = |s: usize| isize::try_from(s).is_ok();
        let last = (rows - 1)
            .checked_mul(self.row_stride)
            .zip((cols - 1).checked_mul(self.col_stride))
            .and_then(|(r, c)| r.checked_add(c));
        signed(self.row_stride)
            && signed(self.col_stride)
            && last.is_some_and(|l| l < self.data.len())
    }
    pub(super) fn at(&self, i: usize, j: usize) -> f32 {
        self.data[i * self.row_stride + j * self.col_stride]
    }
}

/// A right-hand operand that packs blocks of itself for [`gemm()`].
pub trait PackB: Sync {
    /// Writes `B[k0 .. k0+kc, n0 .. n0+nc]` into `dst` as `NR`-column panels:
    /// element `(kk, j)` goes to `(j / NR)·kc·NR + kk·NR + j % NR`. The cells of
    /// the last panel past column `nc` are zero on entry and must stay zero.
    fn pack(&self, k0: usize, kc: usize, n0: usize, nc: usize, dst: &mut [f32]);
    /// The operand as a strided matrix, if it is one (products of two go
    /// to the `gemm` crate); `None` by default.
    fn as_mat(&self) -> Option<MatRef<'_>> {
        None
    }
    /// Writes the `k × n` operand into `buf` (`k·n` floats) as a strided
    /// matrix for the `gemm` crate; by default row-major through [`PackB::pack`].
    fn write_dense<'b>(&self, k: usize, n: usize, buf: &'b mut [f32]) -> MatRef<'b>
    where
        Self: Sized,
    {
        dense::dense_b(self, k, n, buf);
        MatRef::new(buf, k, n, false)
    }
    /// Whether the tiles may read `B` where it lies (im2col columns of a
    /// padded image) instead of packed, through [`PackB::row_starts`],
    /// [`PackB::panel_start`] and [`PackB::source`]; false by default.
    fn reads_in_place(&self) -> bool {
        false
    }
    /// With [`PackB::reads_in_place`]: writes where rows `k0 ..
    /// k0+starts.len()` start in [`PackB::source`].
    fn row_starts(&self, k0: usize, starts: &mut [usize]) {
        let _ = (k0, starts);
    }
    /// With [`PackB::row_starts`]: the offset from every row start of
    /// columns `j0 .. j0+NR` when they lie side by side in every row.
    fn panel_start(&self, j0: usize) -> Option<usize> {
        let _ = j0;
        None
    }
    /// The slice that [`PackB::row_starts`] indexes.
    fn source(&self) -> &[f32] {
        &[]
    }
}

/// A left-hand operand that packs blocks of itself for [`gemm()`], or has the
/// tiles read it where it lies (im2col rows of a padded image).
pub trait PackA: Sync {
    /// Whether every element of an `m × k` view exists.
    fn fits(&self, m: usize, k: usize) -> bool;
    /// Writes `A[i0 .. i0+mc, k0 .. k0+kc]` into `dst` as `MR`-row panels:
    /// element `(ii, kk)` goes to `(ii / MR)·kc·MR + kk·MR + ii % MR`; the
    /// rows of the last panel past `mc` are zero.
    fn pack(&self, i0: usize, mc: usize, k0: usize, kc: usize, dst: &mut [f32]);
    /// The operand as a strided matrix, if it is one (see [`PackB::as_mat`]).
    fn as_mat(&self) -> Option<MatRef<'_>> {
        None
    }
    /// Writes the `m × k` operand into `buf` (`m·k` floats) as a strided
    /// matrix for the `gemm` crate; by default row-major through [`PackA::pack`].
    fn write_dense<'b>(&self, m: usize, k: usize, buf: &'b mut [f32]) -> MatRef<'b>
    where
        Self: Sized,
    {
        dense::dense_a(self, m, k, buf);
        MatRef::new(buf, m, k, false)
    }
    /// Whether the tiles may read `A` where it lies: element `(i, kk)` at
    /// `source()[row_start(i) + step_offset(kk)]`; false by default.
    fn reads_in_place(&self) -> bool {
        false
    }
    /// With [`PackA::reads_in_place`]: writes where rows `i0 ..
    /// i0+starts.len()` start in [`PackA::source`].
    fn row_starts(&self, i0: usize, starts: &mut [usize]) {
        let _ = (i0, starts);
    }
    /// With [`PackA::reads_in_place`]: writes the offsets of steps `k0 ..
    /// k0+offsets.len()` from a row's start.
    fn step_offsets(&self, k0: usize, offsets: &mut [usize]) {
        let _ = (k0, offsets);
    }
    /// The slice that [`PackA::row_starts`] indexes.
    fn source(&self) -> &[f32] {
        &[]
    }
}

/// Spreads row `kk` of a block (`row`, up to `NC` columns) over the
/// block's `NR`-column panels, each `kc` rows long.
#[inline]
pub fn pack_row(row: &[f32], kk: usize, kc: usize, dst: &mut [f32]) {
    pack_run(0, row, kk, kc, dst);
}

/// Like [`pack_row`] for a piece of row `kk` that starts at block column `q`.
#[inline]
pub fn pack_run(mut q: usize, mut run: &[f32], kk: usize, kc: usize, dst: &mut [f32]) {
    while !run.is_empty() {
        let j = q % NR;
        let take = (NR - j).min(run.len());
        // a run is at most a panel row: no memmove call per run
        copy_short(&mut dst[((q / NR) * kc + kk) * NR + j..], &run[..take]);
        (q, run) = (q + take, &run[take..]);
    }
}

impl PackB for MatRef<'_> {
    fn as_mat(&self) -> Option<MatRef<'_>> {
        Some(*self)
    }
    fn pack(&self, k0: usize, kc: usize, n0: usize, nc: usize, dst: &mut [f32]) {
        if self.col_stride == 1 {
            for kk in 0..kc {
                let at = (k0 + kk) * self.row_stride + n0;
                pack_row(&self.data[at..at + nc], kk, kc, dst);
            }
            return;
        }
        for (p, panel) in dst.chunks_exact_mut(kc * NR).enumerate() {
            let j0 = n0 + p * NR;
            let cols = NR.min(n0 + nc - j0);
            if self.row_stride == 1 {
                // the panel's columns are runs of `data`: transpose them in
                let at = j0 * self.col_stride + k0;
                transpose(&self.data[at..], self.col_stride, cols, kc, panel, NR);
            } else {
                for (kk, d) in panel.chunks_exact_mut(NR).enumerate() {
                    for (jj, d) in d[..cols].iter_mut().enumerate() {
                        *d = self.at(k0 + kk, j0 + jj);
                    }
                }
            }
        }
    }
}

impl PackA for MatRef<'_> {
    fn fits(&self, m: usize, k: usize) -> bool {
        MatRef::fits(self, m, k)
    }
    fn as_mat(&self) -> Option<MatRef<'_>> {
        Some(*self)
    }
    fn pack(&self, i0: usize, mc: usize, k0: usize, kc: usize, dst: &mut [f32]) {
        pack_a(self, i0, mc, k0, kc, dst)
    }
}

/// Packs `A[i0 .. i0+mc, k0 .. k0+kc]` into `MR`-row panels (rows past `mc` zero).
fn pack_a(a: &MatRef, i0: usize, mc: usize, k0: usize, kc: usize, dst: &mut [f32]) {
    for (t, panel) in dst.chunks_exact_mut(kc * MR).enumerate() {
        let r0 = i0 + t * MR;
        let rows = MR.min(i0 + mc - r0);
        if rows < MR {
            panel.fill(0.0);
        }
        if a.row_stride == 1 {
            for (kk, d) in panel.chunks_exact_mut(MR).enumerate() {
                let at = (k0 + kk) * a.col_stride + r0;
                d[..rows].copy_from_slice(&a.data[at..at + rows]);
            }
        } else if a.col_stride == 1 && rows == MR {
            // read MR rows side by side, write the panel in order
            let row = |ii: usize| &a.data[(r0 + ii) * a.row_stride + k0..][..kc];
            let rs: [&[f32]; MR] = std::array::from_fn(row);
            for (kk, d) in panel.chunks_exact_mut(MR).enumerate() {
                for (d, r) in d.iter_mut().zip(&rs) {
                    *d = r[kk];
                }
            }
        } else {
            for (kk, d) in panel.chunks_exact_mut(MR).enumerate() {
                for (ii, d) in d[..rows].iter_mut().enumerate() {
                    *d = a.at(r0 + ii, k0 + kk);
                }
            }
        }
    }
}
