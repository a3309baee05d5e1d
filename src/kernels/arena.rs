//! The arena's memory: `f32`s whose first element starts a 64-byte cache
//! line, so every place the memory plan chooses (offsets that are multiples
//! of 16 elements) starts one too, and kernels' vector loads of a value's
//! rows do not straddle lines from its first element on.

use crate::error::Result;
use std::ops::{Deref, DerefMut};

/// One cache line of the arena.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
struct Line([f32; 16]);

/// `len` zero-initialised `f32`s on a 64-byte boundary; dereferences to
/// `[f32]`.
#[derive(Debug, Default)]
pub(crate) struct Arena {
    lines: Vec<Line>,
    len: usize,
}

impl Arena {
    /// `len` zeros, or an `Err` naming `what` and the bytes asked for when
    /// the allocator refuses them (instead of aborting the process).
    pub(crate) fn try_zeros(what: &str, len: usize) -> Result<Arena> {
        let mut lines = Vec::new();
        lines.try_reserve_exact(len.div_ceil(16)).map_err(|_| {
            crate::error::KilnError::Invalid(format!(
                "{what}: {}",
                crate::tensor::alloc_failed(len)
            ))
        })?;
        lines.resize(len.div_ceil(16), Line([0.0; 16]));
        Ok(Arena { lines, len })
    }
}

impl Deref for Arena {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        // SAFETY: `lines` holds `len.div_ceil(16)` initialised lines of 16
        // f32s each (repr(C): no padding between them), so its first `len`
        // f32s are in bounds and initialised.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast(), self.len) }
    }
}

impl DerefMut for Arena {
    fn deref_mut(&mut self) -> &mut [f32] {
        // SAFETY: as in `deref`, borrowed mutably through `&mut self`.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast(), self.len) }
    }
}

/// A region of the arena: `(offset, len)` in elements.
pub(crate) type Region = (usize, usize);

/// Where one step of a level writes its value and reads its operands.
#[derive(Clone, Debug)]
pub(crate) struct StepRegions {
    /// The region the step writes.
    pub write: Region,
    /// Per operand, the region it is read from (`None`: not read from the
    /// arena, e.g. a fed input or an operand the step overwrites).
    pub reads: Vec<Option<Region>>,
}

/// Levels of steps whose regions were checked once, when the schedule was
/// fixed: every region lies in an arena of `len` elements, and within a
/// level no region a step writes overlaps a region any step of the level
/// (itself included) reads or writes. The steps of a level may therefore
/// run at once, each writing its region through a `&mut [f32]` while all
/// read theirs.
#[derive(Clone, Debug, Default)]
pub(crate) struct CheckedLevels {
    len: usize,
    levels: Vec<Vec<StepRegions>>,
}

/// A region as `(start, end, written)`.
type Span = (usize, usize, bool);

/// An `Err` message naming two overlapping regions of a level.
fn overlap(level: usize, a: Span, b: Span) -> String {
    let what =
        |(at, end, write): Span| format!("{} {at}..{end}", if write { "writes" } else { "reads" });
    format!(
        "memory plan: in level {level}, a step {} while a step {}",
        what(a),
        what(b)
    )
}

impl CheckedLevels {
    /// Checks `levels` against an arena of `len` elements; `Err` naming the
    /// level and the regions that break the rule (a memory-plan bug).
    pub(crate) fn new(
        len: usize,
        levels: Vec<Vec<StepRegions>>,
    ) -> std::result::Result<Self, String> {
        for (l, level) in levels.iter().enumerate() {
            // (start, end, written) of every non-empty region, by start
            let mut spans = Vec::new();
            for s in level {
                let reads = s.reads.iter().flatten().map(|&r| (r, false));
                for ((at, n), write) in std::iter::once((s.write, true)).chain(reads) {
                    let end = at.checked_add(n).filter(|&e| e <= len).ok_or_else(|| {
                        format!("memory plan: region {at}+{n} lies outside the arena of {len}")
                    })?;
                    if n > 0 {
                        spans.push((at, end, write));
                    }
                }
            }
            spans.sort_unstable();
            // the earlier span reaching furthest, of all and of the writes
            let (mut any, mut written): (Option<Span>, Option<Span>) = (None, None);
            for &span in &spans {
                let hit = if span.2 { any } else { written };
                if let Some(prev) = hit.filter(|p| p.1 > span.0) {
                    return Err(overlap(l, prev, span));
                }
                if any.is_none_or(|a| span.1 > a.1) {
                    any = Some(span);
                }
                if span.2 && written.is_none_or(|w| span.1 > w.1) {
                    written = Some(span);
                }
            }
        }
        Ok(CheckedLevels { len, levels })
    }

    /// Runs `f(k, out, reads)` for every step `k` of level `level` (on the
    /// rayon pool when `parallel`), `out` being the step's written region of
    /// `arena` and `reads` its operands' regions.
    pub(crate) fn for_each<F>(&self, arena: &mut [f32], level: usize, parallel: bool, f: F)
    where
        F: Fn(usize, &mut [f32], Reads<'_>) + Sync,
    {
        assert_eq!(
            arena.len(),
            self.len,
            "the arena the levels were checked for"
        );
        let base = Base(arena.as_mut_ptr());
        let steps = &self.levels[level];
        let run = |k: usize| {
            let s = &steps[k];
            // SAFETY: `new` checked that this region lies in the arena (whose
            // length was just asserted) and that no other step of the level
            // reads or writes any of it; `arena` is borrowed mutably for the
            // whole call, so nothing outside these steps touches it.
            let out =
                unsafe { std::slice::from_raw_parts_mut(base.get().add(s.write.0), s.write.1) };
            f(
                k,
                out,
                Reads {
                    base: base.get(),
                    regions: &s.reads,
                    _arena: std::marker::PhantomData,
                },
            )
        };
        if parallel && steps.len() > 1 {
            use rayon::prelude::*;
            (0..steps.len()).into_par_iter().for_each(run);
        } else {
            (0..steps.len()).for_each(run);
        }
    }
}

/// The arena's base pointer, shared by a level's steps.
#[derive(Clone, Copy)]
struct Base(*mut f32);
// SAFETY: a level's steps touch only their checked, disjoint regions (see
// `CheckedLevels`), so sharing the pointer between threads is sound.
unsafe impl Send for Base {}
// SAFETY: as for `Send`.
unsafe impl Sync for Base {}

impl Base {
    /// The pointer (a method, so closures capture the `Sync` wrapper).
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// The operand regions one step of a checked level reads.
pub(crate) struct Reads<'a> {
    base: *mut f32,
    regions: &'a [Option<Region>],
    _arena: std::marker::PhantomData<&'a [f32]>,
}

impl<'a> Reads<'a> {
    /// Operand `k`'s memory; `None` if it is not read from the arena.
    pub(crate) fn operand(&self, k: usize) -> Option<&'a [f32]> {
        let (at, len) = self.regions.get(k).copied().flatten()?;
        // SAFETY: a checked region inside the arena that no step of the
        // level writes (see `CheckedLevels`).
        Some(unsafe { std::slice::from_raw_parts(self.base.add(at), len) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The memory starts on a 64-byte boundary, holds `len` zeros and is
    /// written and read back through the slice.
    #[test]
    fn arena_is_line_aligned_zeroed_and_writable() {
        for len in [0, 1, 15, 16, 17, 1000] {
            let mut a = Arena::try_zeros("test", len).unwrap();
            assert_eq!(a.len(), len);
            assert!(a.iter().all(|&v| v.to_bits() == 0));
            if len > 0 {
                assert_eq!(a.as_ptr() as usize % 64, 0, "len {len}");
                a[len - 1] = 3.5;
                assert_eq!(a[len - 1], 3.5);
            }
        }
    }

    /// An impossible size is an `Err` naming what asked, not an abort.
    #[test]
    fn refused_arena_is_an_err_naming_the_request() {
        let e = Arena::try_zeros("compile: the arena", usize::MAX / 8).unwrap_err();
        assert!(e.to_string().contains("compile: the arena"), "{e}");
    }

    fn step(write: Region, reads: &[Option<Region>]) -> StepRegions {
        StepRegions {
            write,
            reads: reads.to_vec(),
        }
    }

    /// Only reads may share memory within a level; every region must lie in
    /// the arena; empty regions overlap nothing.
    #[test]
    fn levels_whose_steps_overlap_a_written_region_are_refused() {
        let ok = |levels: Vec<Vec<StepRegions>>| CheckedLevels::new(16, levels);
        // two steps reading the same operand, writing apart: fine
        let shared = vec![step((0, 4), &[Some((8, 4))]), step((4, 4), &[Some((8, 4))])];
        assert!(ok(vec![shared]).is_ok());
        // the same regions in different levels: fine
        assert!(ok(vec![
            vec![step((0, 4), &[])],
            vec![step((0, 4), &[Some((0, 4))])]
        ])
        .is_err());
        assert!(ok(vec![
            vec![step((0, 4), &[])],
            vec![step((4, 4), &[Some((0, 4))])]
        ])
        .is_ok());
        let bad = [
            vec![step((0, 4), &[]), step((3, 2), &[])], // two writes
            vec![step((0, 4), &[]), step((8, 2), &[Some((2, 1))])], // a write another reads
            vec![step((8, 2), &[Some((2, 1))]), step((0, 4), &[])], // in the other order
            vec![step((0, 4), &[Some((3, 4))])],        // a step reading what it writes
        ];
        for level in bad {
            let e = ok(vec![level.clone()]).unwrap_err();
            assert!(e.contains("in level 0"), "{e} for {level:?}");
        }
        assert!(ok(vec![vec![step((14, 4), &[])]])
            .unwrap_err()
            .contains("outside"));
        assert!(ok(vec![vec![step((usize::MAX, 2), &[])]]).is_err());
        // empty regions overlap nothing
        assert!(ok(vec![vec![step((2, 0), &[]), step((0, 4), &[Some((2, 0))])]]).is_ok());
    }

    /// Each step gets its written region and reads its operands' regions,
    /// sequentially and on the pool alike.
    #[test]
    fn steps_of_a_level_see_their_regions() {
        let levels = vec![vec![
            step((0, 2), &[Some((6, 2)), None]),
            step((2, 2), &[Some((6, 2))]),
            step((4, 1), &[Some((7, 1))]),
        ]];
        let checked = CheckedLevels::new(8, levels).unwrap();
        for parallel in [false, true] {
            let mut arena: Vec<f32> = (0..8).map(|i| i as f32).collect();
            checked.for_each(&mut arena, 0, parallel, |k, out, reads| {
                let src = reads.operand(0).unwrap();
                assert!(reads.operand(1).is_none() && reads.operand(5).is_none());
                for (o, &v) in out.iter_mut().zip(src) {
                    *o = v * 10.0 + k as f32;
                }
            });
            assert_eq!(arena, [60.0, 70.0, 61.0, 71.0, 72.0, 5.0, 6.0, 7.0]);
        }
    }
}
