//! Shapes: row-major dimension lists, strides and numpy broadcasting.

use crate::error::{attr_err, shape_err, Result};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The dimensions of a tensor, outermost first (row-major).
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct Shape(pub Vec<usize>);

impl Shape {
    /// A shape from its dimensions.
    pub fn new(dims: impl Into<Vec<usize>>) -> Self {
        Shape(dims.into())
    }
    /// The dimensions.
    pub fn dims(&self) -> &[usize] {
        &self.0
    }
    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.0.len()
    }
    /// Number of elements (1 for a scalar). For a shape that was checked
    /// (every node's is, when it is built); an unchecked one may wrap: use
    /// [`checked_numel`] for those.
    pub fn numel(&self) -> usize {
        self.0.iter().product()
    }
    /// Row-major strides in elements.
    pub fn strides(&self) -> Vec<usize> {
        strides(&self.0)
    }
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl From<Vec<usize>> for Shape {
    fn from(v: Vec<usize>) -> Self {
        Shape(v)
    }
}
impl From<&[usize]> for Shape {
    fn from(v: &[usize]) -> Self {
        Shape(v.to_vec())
    }
}
impl<const N: usize> From<[usize; N]> for Shape {
    fn from(v: [usize; N]) -> Self {
        Shape(v.to_vec())
    }
}
impl<const N: usize> From<&[usize; N]> for Shape {
    fn from(v: &[usize; N]) -> Self {
        Shape(v.to_vec())
    }
}

/// The symbolic batch size. Declare an input's batch dimension with it
/// (`g.input("x", [BATCH, 16])`, like `None` in a static-graph framework);
/// every size derived from it is a multiple `k·BATCH` (a flattened
/// `[BATCH, 4]` is `[4·BATCH]`), and [`crate::compile()`] specialises the graph
/// for each concrete batch the executable is run with (mapping `k·BATCH` to
/// `k·b`), caching each specialisation. It is a prime (1,048,583) that no real
/// size is a multiple of: dumps show its multiples as `B`, `4B`, build-time
/// error messages as the number. Parameters cannot depend on it, and values
/// your own code computes from a shape (`1.0 / n as f32`) are not
/// specialised: build those from ops (`g.mean`) instead.
pub const BATCH: usize = 1_048_583;

/// `k` when `d` is `k·BATCH` with `k ≥ 1` (a symbolic size), else `None`.
pub fn batch_multiple(d: usize) -> Option<usize> {
    (d != 0 && d % BATCH == 0).then_some(d / BATCH)
}

/// Dimension `d` for batch `b`: `k·b` when `d` is `k·BATCH` (`k ≥ 1`), else `d`.
pub fn specialise_dim(d: usize, b: usize) -> usize {
    batch_multiple(d).map_or(d, |k| k * b)
}

/// One dimension as dumps and messages show it: `B`, `4B` for multiples of
/// [`BATCH`], else the number.
pub fn dim_str(d: usize) -> String {
    match batch_multiple(d) {
        Some(1) => "B".into(),
        Some(k) => format!("{k}B"),
        None => d.to_string(),
    }
}

/// `[B, 16]`: dimensions as [`dim_str`] shows them.
pub fn dims_str(dims: &[usize]) -> String {
    let d: Vec<String> = dims.iter().map(|&d| dim_str(d)).collect();
    format!("[{}]", d.join(", "))
}

/// Whether any of `dims` is a multiple of [`BATCH`] (a symbolic size).
pub fn is_symbolic(dims: &[usize]) -> bool {
    dims.iter().any(|&d| batch_multiple(d).is_some())
}

/// The most f32 elements one buffer may hold: its size in bytes must fit in
/// an `isize`, Rust's limit for one allocation (2^61 − 1 elements on 64-bit).
pub const MAX_ELEMENTS: usize = isize::MAX as usize / std::mem::size_of::<f32>();

/// The element count of `dims`, or an `Err` naming `op` when the product of
/// its non-zero dimensions overflows or exceeds [`MAX_ELEMENTS`] (no buffer
/// of that size can exist; an empty shape such as `[usize::MAX, 0]` is
/// refused too, so that no partial product of its dimensions can wrap).
/// Every node's shape passes this when it is built, so kernels may multiply
/// dimensions of a node's shape (and their partial products) unchecked.
pub fn checked_numel(op: &str, dims: &[usize]) -> Result<usize> {
    let empty = dims.contains(&0);
    dims.iter()
        .filter(|&&d| d != 0)
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .filter(|&n| n <= MAX_ELEMENTS)
        .map(|n| if empty { 0 } else { n })
        .map_or_else(
            || {
                shape_err(
                    op,
                    format!(
                        "shape {dims:?} has more elements than any buffer can hold (at most {MAX_ELEMENTS})"
                    ),
                )
            },
            Ok,
        )
}

/// One step of a size computation (`a + b`, `a · b`) for `op`, checked: the
/// value if it stays within [`MAX_ELEMENTS`], else an `Err` naming `op` and
/// `what` was being computed (`"padded input size"`, ...).
pub fn checked_size(op: &str, what: &str, value: Option<usize>) -> Result<usize> {
    match value.filter(|&v| v <= MAX_ELEMENTS) {
        Some(v) => Ok(v),
        None => shape_err(
            op,
            format!("the {what} overflows (more than {MAX_ELEMENTS})"),
        ),
    }
}

/// Row-major strides of `dims`, in elements.
pub fn strides(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1];
    }
    s
}

/// Dimensions kept inline without allocating.
const INLINE_RANK: usize = 8;

/// A short list of dimension-sized numbers (strides, a multi-index) that
/// lives on the stack up to rank 8, so that kernels walking shapes allocate
/// nothing; longer lists go to the heap.
#[derive(Clone, Debug)]
pub struct SmallDims {
    inline: [usize; INLINE_RANK],
    len: usize,
    heap: Vec<usize>,
}

impl SmallDims {
    /// `len` zeros.
    pub fn zeros(len: usize) -> Self {
        let heap = if len > INLINE_RANK {
            vec![0; len]
        } else {
            Vec::new()
        };
        SmallDims {
            inline: [0; INLINE_RANK],
            len,
            heap,
        }
    }
}

impl std::ops::Deref for SmallDims {
    type Target = [usize];
    fn deref(&self) -> &[usize] {
        if self.len > INLINE_RANK {
            &self.heap
        } else {
            &self.inline[..self.len]
        }
    }
}

impl std::ops::DerefMut for SmallDims {
    fn deref_mut(&mut self) -> &mut [usize] {
        if self.len > INLINE_RANK {
            &mut self.heap
        } else {
            &mut self.inline[..self.len]
        }
    }
}

/// Row-major strides of `dims` without allocating (up to rank 8).
pub fn small_strides(dims: &[usize]) -> SmallDims {
    let mut s = SmallDims::zeros(dims.len());
    let mut acc = 1;
    for (s, &d) in s.iter_mut().zip(dims).rev() {
        *s = acc;
        acc *= d;
    }
    s
}

/// The numpy broadcast of two shapes, or `None` if they are incompatible.
pub fn broadcast_pair(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for (i, o) in out.iter_mut().enumerate() {
        let da = dim_from_right(a, rank - 1 - i);
        let db = dim_from_right(b, rank - 1 - i);
        *o = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => return None,
        };
    }
    Some(out)
}

fn dim_from_right(s: &[usize], k: usize) -> usize {
    if k < s.len() {
        s[s.len() - 1 - k]
    } else {
        1
    }
}

/// How an operand of shape `src` repeats when broadcast to `dst`, when its
/// dimensions other than 1 form one run equal to `dst`'s there (a per-channel
/// `[1, C, 1, 1]` over `[N, C, H, W]`, a bias row `[W]`, a scalar, `dst`
/// itself): `(len, inner)`, element `i` of the result reading element
/// `i / inner % len` of `src`. `None` for other broadcasts (`[N, 1, W]`, say)
/// and for shapes that do not broadcast to `dst`.
pub fn block_repeat(src: &[usize], dst: &[usize]) -> Option<(usize, usize)> {
    let off = dst.len().checked_sub(src.len())?;
    let at = |d: usize| if d < off { 1 } else { src[d - off] };
    let Some(first) = (0..dst.len()).find(|&d| at(d) != 1) else {
        return Some((1, dst.iter().product::<usize>().max(1)));
    };
    let last = (0..dst.len()).rfind(|&d| at(d) != 1).expect("one exists");
    if (first..=last).any(|d| at(d) != dst[d]) {
        return None;
    }
    let len = dst[first..=last].iter().product();
    Some((len, dst[last + 1..].iter().product()))
}

/// Strides that read an array of shape `src` as if it had been broadcast to `dst`
/// (stride 0 along broadcast dimensions). `src` must broadcast to `dst`.
pub fn broadcast_strides(src: &[usize], dst: &[usize]) -> SmallDims {
    let s = small_strides(src);
    let off = dst.len() - src.len();
    let mut out = SmallDims::zeros(dst.len());
    for (i, o) in out.iter_mut().enumerate().skip(off) {
        if src[i - off] != 1 {
            *o = s[i - off];
        }
    }
    out
}

/// Resolves a possibly negative axis against `rank`, with a clear error for `op`.
pub fn normalize_axis(op: &str, axis: isize, rank: usize) -> Result<usize> {
    let r = rank as isize;
    if axis < -r || axis >= r {
        return attr_err(
            op,
            format!(
                "axis {axis} is out of range for a tensor of rank {rank} (valid: {} ..= {})",
                -r,
                r - 1
            ),
        );
    }
    Ok(if axis < 0 {
        (axis + r) as usize
    } else {
        axis as usize
    })
}

/// Checks that `got` equals `want` for operand `operand` of `op`.
pub fn expect_shape(op: &str, operand: usize, got: &[usize], want: &[usize]) -> Result<()> {
    if got != want {
        return shape_err(
            op,
            format!("operand {operand} has shape {got:?}, expected {want:?}"),
        );
    }
    Ok(())
}

/// Calls `f` with every multi-index of `dims` in row-major order.
pub fn for_each_index(dims: &[usize], mut f: impl FnMut(&[usize])) {
    if dims.contains(&0) {
        return;
    }
    let mut idx = vec![0usize; dims.len()];
    loop {
        f(&idx);
        let mut d = dims.len();
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            idx[d] += 1;
            if idx[d] < dims[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

/// Walks every multi-index of `dims` in row-major order and calls
/// `f(flat_index, offsets)`, where `offsets[k]` is the index dotted with
/// `strides[k]` (so operands of other layouts or broadcast operands can be read
/// alongside).
pub fn strided_walk<const K: usize>(
    dims: &[usize],
    strides: [&[usize]; K],
    mut f: impl FnMut(usize, [usize; K]),
) {
    if dims.contains(&0) {
        return;
    }
    let Some((&inner, outer_dims)) = dims.split_last() else {
        f(0, [0; K]);
        return;
    };
    let last = dims.len() - 1;
    let step: [usize; K] = std::array::from_fn(|k| strides[k][last]);
    let mut idx = SmallDims::zeros(outer_dims.len());
    let mut offs = [0usize; K];
    let total: usize = dims.iter().product();
    let mut flat = 0;
    while flat < total {
        // the innermost dimension in a plain loop
        let mut o = offs;
        for j in 0..inner {
            f(flat + j, o);
            for k in 0..K {
                o[k] += step[k];
            }
        }
        flat += inner;
        // advance the outer multi-index, carrying the offsets
        let mut d = outer_dims.len();
        while d > 0 {
            d -= 1;
            idx[d] += 1;
            for k in 0..K {
                offs[k] += strides[k][d];
            }
            if idx[d] < outer_dims[d] {
                break;
            }
            for k in 0..K {
                offs[k] -= strides[k][d] * outer_dims[d];
            }
            idx[d] = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_follows_numpy() {
        assert_eq!(
            broadcast_pair(&[8, 1, 6, 1], &[7, 1, 5]),
            Some(vec![8, 7, 6, 5])
        );
        assert_eq!(broadcast_pair(&[5, 4], &[1]), Some(vec![5, 4]));
        assert_eq!(broadcast_pair(&[], &[3]), Some(vec![3]));
        assert_eq!(broadcast_pair(&[2, 1], &[8, 4, 3]), None);
        assert_eq!(*broadcast_strides(&[3, 1], &[2, 3, 4]), [0, 1, 0]);
        // past the inline rank the same numbers come from the heap
        let long = [2, 1, 3, 1, 2, 1, 2, 1, 3, 2];
        let want: Vec<usize> = strides(&long)
            .iter()
            .zip(&long)
            .map(|(&s, &d)| if d == 1 { 0 } else { s })
            .collect();
        assert_eq!(*broadcast_strides(&long, &long), want[..]);
        assert_eq!(*small_strides(&long), strides(&long)[..]);
    }

    #[test]
    fn element_counts_are_checked_empty_shapes_included() {
        assert_eq!(checked_numel("t", &[2, 0, 3]).unwrap(), 0);
        assert_eq!(checked_numel("t", &[]).unwrap(), 1);
        assert_eq!(checked_numel("t", &[1 << 30, 1 << 30]).unwrap(), 1 << 60);
        for bad in [
            vec![1usize << 31, 1 << 31],
            vec![usize::MAX, 0],
            vec![1 << 40, 0, 1 << 40],
            vec![(1 << 62) + 1, 2, (1 << 62) + 3],
        ] {
            let e = checked_numel("t", &bad).expect_err("too many elements");
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
        assert_eq!(
            checked_size("t", "x", Some(MAX_ELEMENTS)).unwrap(),
            MAX_ELEMENTS
        );
        assert!(checked_size("t", "x", Some(MAX_ELEMENTS + 1)).is_err());
        assert!(checked_size("t", "x", None).is_err());
    }

    #[test]
    fn strides_axes_and_walks() {
        assert_eq!(strides(&[2, 3, 4]), vec![12, 4, 1]);
        assert_eq!(strides(&[]), Vec::<usize>::new());
        assert_eq!(normalize_axis("op", -1, 3).unwrap(), 2);
        assert!(normalize_axis("op", 3, 3).is_err());
        let mut seen = Vec::new();
        strided_walk(&[2, 3], [&[1, 2]], |i, [o]| seen.push((i, o)));
        assert_eq!(seen, vec![(0, 0), (1, 2), (2, 4), (3, 1), (4, 3), (5, 5)]);
        let mut scalar = Vec::new();
        strided_walk(&[], [&[]], |i, [o]| scalar.push((i, o)));
        assert_eq!(scalar, vec![(0, 0)], "a scalar is visited once");
        let mut row = Vec::new();
        strided_walk(&[3], [&[2], &[0]], |i, [a, b]| row.push((i, a, b)));
        assert_eq!(row, vec![(0, 0, 0), (1, 2, 0), (2, 4, 0)]);
        let mut n = 0;
        for_each_index(&[2, 0, 3], |_| n += 1);
        assert_eq!(n, 0);
    }
}
