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
}
