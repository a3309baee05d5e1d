//! kiln's own single-threaded packed GEMM: `C[m × n] (+)= A[m × k] · B[k × n]`.
//!
//! The classic blocked loop nest: a block of `B` (`KC × NC`) is packed into
//! `NR`-wide panels, a block of `A` (`MC × KC`) into `MR`-high panels, and the
//! [`tile`] kernel multiplies one panel pair into an `MR × NR` tile of `C`
//! held in registers. `A` and `B` come through the [`PackA`] and [`PackB`]
//! traits, so a convolution packs its im2col columns straight from the image
//! without materialising them, or has the tiles read them in the padded
//! image through tables of row starts and step offsets, packing nothing:
//! as `B` where every panel's columns lie side by side (output rows a
//! multiple of `NR` wide), as `A` (rows of the columns or of their
//! transpose) always. Packing buffers are per-thread scratch: a call
//! allocates nothing once its thread has run a product of that size.
//! Callers parallelise over independent products or column ranges (see
//! `kernels::conv`, `kernels::matmul`).

pub mod dense;
mod pack;
pub mod tile;

pub use pack::{pack_row, pack_run, MatRef, PackA, PackB};

pub use tile::NR;

use super::copy::copy_short;
use super::scratch::{self, Slot};
use super::transpose::transpose;
use tile::{Indexed, IndexedA, Packed, PackedA, Rows, Steps, Store, MR, SHORT_ROWS};

/// Inner-dimension block, split evenly (576 → one block of 576): large
/// enough that a 3x3 convolution over 64 channels stores each `C` tile once
/// instead of re-reading it per block; on this kind of machine (Zen 3, 32 KiB
/// L1, 512 KiB L2) 192 to 640 measured within noise of each other.
/// [`PackB::pack`] is never asked for more than `KC` rows.
pub const KC: usize = 640;
/// Inner-dimension block when A or B is read in place ([`PackA::reads_in_place`],
/// [`PackB::reads_in_place`]): small enough that a panel's rows, scattered
/// over the image, stay in L1 while the tiles reuse them.
const KC_IN_PLACE: usize = 256;
/// Where step `kk` of a packed panel starts: `kk·NR`.
static PACKED_STARTS: [usize; KC] = {
    let mut starts = [0; KC];
    let mut kk = 0;
    while kk < KC {
        starts[kk] = kk * NR;
        kk += 1;
    }
    starts
};
/// Rows of `A` per packed block (`MC × KC` stays in L2).
pub const MC: usize = 144;
/// Columns of `B` per packed block: [`PackB::pack`] is never asked for more.
/// A whole 32x32 image's positions, so that `A` is packed once per image.
pub const NC: usize = 1024;

/// What a product does with what `C` held.
#[derive(Clone, Copy, Debug)]
pub enum Init<'a> {
    /// `C = A·B`.
    Overwrite,
    /// `C += A·B`.
    Add,
    /// `C = A·B + bias[i]` for row `i` (`bias` has `m` values).
    RowBias(&'a [f32]),
}

/// The step that splits `total` into the fewest blocks of at most `max`,
/// each a multiple of `unit`.
fn block_step(total: usize, max: usize, unit: usize) -> usize {
    let blocks = total.div_ceil(max).max(1);
    total.div_ceil(blocks).next_multiple_of(unit)
}

/// `C[m × n] = init ∘ A·B`, `C` row-major with row stride `ldc`, on this thread.
///
/// # Panics
/// When an operand is smaller than its shape needs (an internal invariant:
/// ops check shapes before they call kernels).
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    m: usize,
    k: usize,
    n: usize,
    a: &impl PackA,
    b: &impl PackB,
    c: &mut [f32],
    ldc: usize,
    init: Init,
) {
    assert!(
        a.fits(m, k) && ldc >= n && (m == 0 || n == 0 || c.len() >= (m - 1) * ldc + n),
        "gemm: buffers too small"
    );
    if let Init::RowBias(bias) = init {
        assert!(bias.len() >= m, "gemm: bias shorter than the rows");
    }
    // SAFETY: the assertion above keeps every C cell inside `c`.
    unsafe { gemm_raw(m, k, n, a, b, c.as_mut_ptr(), ldc, init) }
}

/// [`gemm()`] into a raw `C`, so that parallel callers can give tasks disjoint
/// column ranges of the same rows.
///
/// # Safety
/// `c` addresses `m` rows of `n` writable floats `ldc` apart that no one else
/// touches during the call; `a` fits `m × k`, `bias` (if any) has `m` values,
/// and `b` packs a `k × n` matrix.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_raw(
    m: usize,
    k: usize,
    n: usize,
    a: &impl PackA,
    b: &impl PackB,
    c: *mut f32,
    ldc: usize,
    init: Init,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        // SAFETY: the caller's contract.
        return unsafe { start_rows(m, n, c, ldc, init) };
    }
    // kiln's tile runs where it is built (AVX2 + FMA) for operands it reads
    // in place or packs from an image; every other product goes to the
    // `gemm` crate
    if let (Some(am), Some(bm)) = (a.as_mat(), b.as_mat()) {
        assert!(am.fits(m, k) && bm.fits(k, n), "gemm: operands too small");
        // SAFETY: the operands fit (checked); C is the caller's.
        return unsafe { dense::product(m, k, n, am, bm, c, ldc, init, 1) };
    }
    if !tile::available() {
        // SAFETY: the caller's contract.
        return unsafe { dense::product_of(m, k, n, a, b, c, ldc, init) };
    }
    let in_place = a.reads_in_place() || b.reads_in_place();
    let (kc_step, mc_step, nc_step) = (
        block_step(k, if in_place { KC_IN_PLACE } else { KC }, 1),
        block_step(m, MC, MR),
        block_step(n, NC, NR),
    );
    let a_len = kc_step * mc_step;
    let b_len = kc_step * nc_step;
    // where each step of a block's rows starts in `b.source()`, and each
    // step's offset in A's rows (in place)
    let (mut starts, mut offsets) = ([0usize; KC], [0usize; KC]);
    scratch::with(Slot::PackA, a_len, |abuf| {
        scratch::with(Slot::PackB, b_len, |bbuf| {
            for jc in (0..n).step_by(nc_step) {
                let nc = nc_step.min(n - jc);
                let panels = nc.div_ceil(NR);
                for pc in (0..k).step_by(kc_step) {
                    let kc = kc_step.min(k - pc);
                    let blk = Block {
                        m,
                        n,
                        kc,
                        pc,
                        jc,
                        panels,
                        mc_step,
                    };
                    if a.reads_in_place() {
                        a.step_offsets(pc, &mut offsets[..kc]);
                    }
                    let offsets = &offsets[..kc];
                    if b.reads_in_place() {
                        b.row_starts(pc, &mut starts[..kc]);
                        // read B where it lies; only panels whose columns are
                        // not side by side (or would read past `src`) are packed
                        let src = b.source();
                        let last = starts[..kc].iter().max().copied().unwrap_or(0);
                        let at = |p: usize| {
                            let j = jc + p * NR;
                            let at = b.panel_start(j).filter(|_| n - j >= NR)?;
                            (last + at + NR <= src.len()).then_some(at)
                        };
                        for p in (0..panels).filter(|&p| at(p).is_none()) {
                            let (j, cols) = (jc + p * NR, NR.min(nc - p * NR));
                            let panel = &mut bbuf[p * kc * NR..(p + 1) * kc * NR];
                            if cols < NR {
                                panel.fill(0.0);
                            }
                            b.pack(pc, kc, j, cols, panel);
                        }
                        let rows = |p: usize| match at(p) {
                            Some(at) => Indexed {
                                base: src[at..].as_ptr(),
                                starts: starts.as_ptr(),
                            },
                            None => Indexed {
                                base: bbuf[p * kc * NR..].as_ptr(),
                                starts: PACKED_STARTS.as_ptr(),
                            },
                        };
                        // SAFETY: each step's NR values lie inside `src` (checked
                        // by `at`) or inside the packed panel; C is the caller's.
                        unsafe { blk.run(a, abuf, offsets, rows, c, ldc, init) };
                    } else {
                        if nc % NR != 0 {
                            bbuf[(panels - 1) * kc * NR..panels * kc * NR].fill(0.0);
                        }
                        b.pack(pc, kc, jc, nc, &mut bbuf[..panels * kc * NR]);
                        let rows = |p: usize| Packed(bbuf[p * kc * NR..].as_ptr());
                        // SAFETY: the panels hold kc steps each; C is the caller's.
                        unsafe { blk.run(a, abuf, offsets, rows, c, ldc, init) };
                    }
                }
            }
        })
    })
}

/// Sets C to what `init` makes of an empty sum: +0.0, unchanged, or the
/// row's bias (an empty product's result, and where a product through the
/// `gemm` crate starts).
///
/// # Safety
/// `c` addresses `m` rows of `n` writable floats `ldc` apart; a bias has `m` values.
unsafe fn start_rows(m: usize, n: usize, c: *mut f32, ldc: usize, init: Init) {
    let value = |i: usize| match init {
        Init::Overwrite => Some(0.0),
        Init::Add => None,
        Init::RowBias(bias) => Some(bias[i]),
    };
    for i in 0..m {
        if let Some(v) = value(i) {
            // SAFETY: row i of C, by the caller's contract.
            unsafe { std::slice::from_raw_parts_mut(c.add(i * ldc), n) }.fill(v);
        }
    }
}

/// One `KC × NC` block of B against all of A's rows.
struct Block {
    m: usize,
    n: usize,
    kc: usize,
    /// First step (row of B) of the block.
    pc: usize,
    /// First column of the block.
    jc: usize,
    panels: usize,
    mc_step: usize,
}

impl Block {
    /// Runs A's rows block by block (packed, or read in place through
    /// `offsets` when A allows it and every read stays inside its source)
    /// against the B panels that `rows(p)` finds.
    ///
    /// # Safety
    /// Every `rows(p)` addresses `kc` steps of `NR` floats; `c` as for [`gemm_raw`].
    #[allow(clippy::too_many_arguments)]
    unsafe fn run<B: Rows>(
        &self,
        a: &impl PackA,
        abuf: &mut [f32],
        offsets: &[usize],
        rows: impl Fn(usize) -> B,
        c: *mut f32,
        ldc: usize,
        init: Init,
    ) {
        let Block { m, kc, mc_step, .. } = *self;
        let mut starts = [0usize; MC];
        for ic in (0..m).step_by(mc_step) {
            let mc = mc_step.min(m - ic);
            let tiles = mc.div_ceil(MR);
            if a.reads_in_place() {
                let starts = &mut starts[..mc];
                a.row_starts(ic, starts);
                let src = a.source();
                let last = starts.iter().max().copied().unwrap_or(0);
                let reach = offsets.iter().max().copied().unwrap_or(0);
                if last + reach < src.len() {
                    let base = src.as_ptr();
                    let panel = |t: usize| IndexedA {
                        // rows past the block's read as its first (dropped)
                        rows: std::array::from_fn(|i| {
                            let r = starts.get(t * MR + i).unwrap_or(&starts[t * MR]);
                            // SAFETY: every start plus every offset is inside `src`.
                            unsafe { base.add(*r) }
                        }),
                        offsets: offsets.as_ptr(),
                    };
                    // SAFETY: checked above; the rest is the caller's contract.
                    unsafe { self.tiles(ic, mc, panel, &rows, c, ldc, init) };
                    continue;
                }
            }
            let ablk = &mut abuf[..tiles * kc * MR];
            a.pack(ic, mc, self.pc, kc, ablk);
            let panel = |t: usize| PackedA(ablk[t * kc * MR..].as_ptr());
            // SAFETY: each packed panel holds kc steps; the rest is the caller's.
            unsafe { self.tiles(ic, mc, panel, &rows, c, ldc, init) };
        }
    }

    /// The tiles of A's rows `ic .. ic+mc` (panel `t` found by `panel(t)`)
    /// against every B panel of the block.
    ///
    /// # Safety
    /// As [`Block::run`], with every `panel(t)` addressing `kc` steps.
    #[allow(clippy::too_many_arguments)]
    unsafe fn tiles<A: Steps, B: Rows>(
        &self,
        ic: usize,
        mc: usize,
        panel: impl Fn(usize) -> A,
        rows: impl Fn(usize) -> B,
        c: *mut f32,
        ldc: usize,
        init: Init,
    ) {
        let Block {
            m,
            n,
            kc,
            pc,
            jc,
            panels,
            ..
        } = *self;
        let tiles = mc.div_ceil(MR);
        let first = pc == 0;
        let store_at = |i: usize, rows: usize| match init {
            _ if !first => Store::Add,
            Init::Overwrite => Store::Overwrite,
            Init::Add => Store::Add,
            Init::RowBias(bias) => Store::Bias(&bias[i..i + rows]),
        };
        // a last tile of fewer than MR rows goes two panels at a time below
        let short = mc % MR != 0;
        for p in 0..panels {
            let j = jc + p * NR;
            let cols = NR.min(n - j);
            let bp = rows(p);
            for t in 0..tiles - usize::from(short) {
                let i = ic + t * MR;
                let rows = MR.min(m - i);
                let store = store_at(i, rows);
                let ap = panel(t);
                // SAFETY: the panels hold kc steps each; the tile
                // (or the edge copy) stays inside C's m × n.
                unsafe {
                    let ct = c.add(i * ldc + j);
                    if rows == MR && cols == NR {
                        tile::tile(kc, ap, bp, ct, ldc, store);
                    } else {
                        edge_tile(kc, ap, bp, ct, ldc, rows, cols, store);
                    }
                }
            }
        }
        if short {
            let t = tiles - 1;
            let (i, ap) = (ic + t * MR, panel(t));
            let rows_left = m - i;
            let store = store_at(i, rows_left);
            // at most SHORT_ROWS rows per short tile: 4 = 2 + 2, 5 = 3 + 2
            let upper = if rows_left > SHORT_ROWS {
                rows_left - 2
            } else {
                rows_left
            };
            let mut p = 0;
            while p < panels {
                let j = jc + p * NR;
                // SAFETY: as above; a pair of panels is used only
                // when both exist and are full width.
                unsafe {
                    let ct = c.add(i * ldc + j);
                    if p + 1 < panels && n - j >= 2 * NR {
                        let pair = [rows(p), rows(p + 1)];
                        for (r0, r) in [(0, upper), (upper, rows_left - upper)] {
                            if r > 0 {
                                let (a, st) = (ap.skip_rows(r0), store_at(i + r0, r));
                                tile::short_tile(r, kc, a, pair, ct.add(r0 * ldc), ldc, st);
                            }
                        }
                        p += 2;
                    } else {
                        let cols = NR.min(n - j);
                        edge_tile(kc, ap, rows(p), ct, ldc, rows_left, cols, store);
                        p += 1;
                    }
                }
            }
        }
    }
}

/// A tile cut by C's edge: computed whole into a local tile, then the
/// `rows × cols` that exist are stored.
///
/// # Safety
/// As [`tile::tile`] for the panels; `c` addresses `rows × cols` cells `ldc` apart.
#[allow(clippy::too_many_arguments)]
unsafe fn edge_tile<A: Steps, B: Rows>(
    kc: usize,
    a: A,
    b: B,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
    store: Store,
) {
    let mut local = [0f32; MR * NR];
    // SAFETY: the local tile is MR × NR with row stride NR.
    unsafe { tile::tile(kc, a, b, local.as_mut_ptr(), NR, Store::Overwrite) };
    for (i, src) in local.chunks_exact(NR).take(rows).enumerate() {
        // SAFETY: row i of the cut tile, by the caller's contract.
        let dst = unsafe { std::slice::from_raw_parts_mut(c.add(i * ldc), cols) };
        tile::store_row(dst, src, store, i);
    }
}

#[cfg(test)]
mod tests;
