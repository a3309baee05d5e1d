//! `Tensor`: an owned, row-major f32 n-d array.

use crate::error::{KilnError, Result};
use crate::rng::Rng;
use crate::shape::{checked_numel, Shape};
use serde::{Deserialize, Serialize};

/// An owned f32 n-d array in row-major order. Its data always holds exactly
/// the shape's element count (constructors and deserialisation check it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "TensorParts")]
pub struct Tensor {
    shape: Shape,
    data: Vec<f32>,
}

/// A tensor's fields as deserialised, before [`Tensor::from_vec`] checks them.
#[derive(Deserialize)]
struct TensorParts {
    shape: Shape,
    data: Vec<f32>,
}

impl TryFrom<TensorParts> for Tensor {
    type Error = KilnError;
    fn try_from(p: TensorParts) -> Result<Self> {
        Tensor::from_vec(p.shape, p.data)
    }
}

/// `n` values from `f`, in memory that is reserved first: `Err` naming
/// `what` and the bytes asked for when the allocator refuses, instead of
/// aborting the process.
pub(crate) fn try_collect(what: &str, n: usize, f: impl FnMut() -> f32) -> Result<Vec<f32>> {
    let mut data = Vec::new();
    data.try_reserve_exact(n)
        .map_err(|_| KilnError::Invalid(format!("{what}: {}", alloc_failed(n))))?;
    data.extend(std::iter::repeat_with(f).take(n));
    Ok(data)
}

/// `n` zeros, or an `Err` naming `what` and the bytes asked for when the
/// allocator refuses the memory (instead of aborting the process).
pub(crate) fn try_zeros(what: &str, n: usize) -> Result<Vec<f32>> {
    try_collect(what, n, || 0.0)
}

/// "cannot allocate N bytes (X GiB) for M f32 elements": the message of a
/// refused allocation.
pub(crate) fn alloc_failed(elements: usize) -> String {
    let bytes = elements as f64 * 4.0;
    format!(
        "cannot allocate {} bytes ({:.1} GiB) for {elements} f32 elements",
        elements.saturating_mul(4),
        bytes / (1u64 << 30) as f64
    )
}

/// The element count of `shape` for an infallible constructor: panics with
/// the shape when it overflows (as `vec!` does on capacity overflow).
fn numel_or_panic(what: &str, shape: &Shape) -> usize {
    match checked_numel(what, shape.dims()) {
        Ok(n) => n,
        Err(e) => panic!("{e}"),
    }
}

impl Tensor {
    /// A tensor of zeros.
    ///
    /// # Panics
    /// If the shape has more elements than a buffer can hold
    /// ([`crate::shape::MAX_ELEMENTS`]); aborts, as `vec!`, if the memory
    /// cannot be allocated. [`Tensor::try_full`] returns an `Err` instead.
    pub fn zeros(shape: impl Into<Shape>) -> Self {
        Self::full(shape, 0.0)
    }
    /// A tensor filled with `value`.
    ///
    /// # Panics
    /// As [`Tensor::zeros`]; [`Tensor::try_full`] returns an `Err` instead.
    pub fn full(shape: impl Into<Shape>, value: f32) -> Self {
        let shape = shape.into();
        let data = vec![value; numel_or_panic("Tensor::full", &shape)];
        Tensor { shape, data }
    }
    /// A tensor filled with `value`, or an `Err` saying how much memory was
    /// asked for when the shape overflows or the allocation is refused.
    pub fn try_full(shape: impl Into<Shape>, value: f32) -> Result<Self> {
        let shape = shape.into();
        let n = checked_numel("Tensor::try_full", shape.dims())?;
        let data = try_collect("Tensor::try_full", n, || value)?;
        Ok(Tensor { shape, data })
    }
    /// A tensor from row-major data; `Err` if the length does not match the
    /// shape or the shape's element count overflows.
    pub fn from_vec(shape: impl Into<Shape>, data: Vec<f32>) -> Result<Self> {
        let shape = shape.into();
        if checked_numel("Tensor::from_vec", shape.dims())? != data.len() {
            return Err(KilnError::TensorData {
                expected: shape.numel(), // checked above
                shape: shape.0,
                len: data.len(),
            });
        }
        Ok(Tensor { shape, data })
    }
    /// A scalar (rank-0) tensor.
    pub fn scalar(value: f32) -> Self {
        Tensor {
            shape: Shape(vec![]),
            data: vec![value],
        }
    }
    /// Uniform random values in [lo, hi) from `seed`.
    ///
    /// # Panics
    /// As [`Tensor::zeros`].
    pub fn rand_uniform(shape: impl Into<Shape>, lo: f32, hi: f32, seed: u64) -> Self {
        let shape = shape.into();
        let mut rng = Rng::new(seed);
        let n = numel_or_panic("Tensor::rand_uniform", &shape);
        let data = (0..n).map(|_| rng.uniform_in(lo, hi)).collect();
        Tensor { shape, data }
    }
    /// Standard-normal random values scaled by `std`, from `seed`.
    ///
    /// # Panics
    /// As [`Tensor::zeros`].
    pub fn rand_normal(shape: impl Into<Shape>, std: f32, seed: u64) -> Self {
        let shape = shape.into();
        let mut rng = Rng::new(seed);
        let n = numel_or_panic("Tensor::rand_normal", &shape);
        let data = (0..n).map(|_| std * rng.normal()).collect();
        Tensor { shape, data }
    }
    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.shape.0
    }
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.data.len()
    }
    /// The row-major data.
    pub fn data(&self) -> &[f32] {
        &self.data
    }
    /// The row-major data, mutable.
    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }
    /// The element at a multi-index, or `None` if the index is out of bounds or of the wrong rank.
    pub fn get(&self, index: &[usize]) -> Option<f32> {
        self.offset(index).and_then(|o| self.data.get(o).copied())
    }
    /// Sets the element at a multi-index; `Err` if the index is out of bounds.
    pub fn set(&mut self, index: &[usize], value: f32) -> Result<()> {
        let o = self.offset(index).ok_or_else(|| {
            KilnError::Invalid(format!(
                "index {index:?} is out of bounds for shape {:?}",
                self.shape()
            ))
        })?;
        if let Some(v) = self.data.get_mut(o) {
            *v = value;
        }
        Ok(())
    }
    fn offset(&self, index: &[usize]) -> Option<usize> {
        if index.len() != self.shape.rank() {
            return None;
        }
        let mut o = 0;
        for (&i, &d) in index.iter().zip(self.shape()) {
            if i >= d {
                return None;
            }
            o = o * d + i;
        }
        Some(o)
    }
    /// The same data with another shape of equal size.
    pub fn reshape(self, shape: impl Into<Shape>) -> Result<Self> {
        Tensor::from_vec(shape, self.data)
    }
    /// Consumes the tensor, returning its row-major data.
    pub fn into_vec(self) -> Vec<f32> {
        self.data
    }
    /// Sum of all elements (f64 accumulation), handy as a checksum.
    pub fn sum(&self) -> f64 {
        self.data.iter().map(|&v| v as f64).sum()
    }
    /// Largest absolute element-wise difference to `other`, or `None` if shapes differ.
    pub fn max_abs_diff(&self, other: &Tensor) -> Option<f32> {
        if self.shape != other.shape {
            return None;
        }
        Some(
            self.data
                .iter()
                .zip(&other.data)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max),
        )
    }
}

impl From<Tensor> for Vec<f32> {
    fn from(t: Tensor) -> Self {
        t.data
    }
}

/// A 1-D tensor from a vector.
impl From<Vec<f32>> for Tensor {
    fn from(v: Vec<f32>) -> Self {
        Tensor {
            shape: Shape(vec![v.len()]),
            data: v,
        }
    }
}
