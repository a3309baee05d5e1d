//! `Tensor`: an owned, row-major f32 n-d array.

use crate::error::{KilnError, Result};
use crate::rng::Rng;
use crate::shape::Shape;
use serde::{Deserialize, Serialize};

/// An owned f32 n-d array in row-major order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tensor {
    shape: Shape,
    data: Vec<f32>,
}

impl Tensor {
    /// A tensor of zeros.
    pub fn zeros(shape: impl Into<Shape>) -> Self {
        Self::full(shape, 0.0)
    }
    /// A tensor filled with `value`.
    pub fn full(shape: impl Into<Shape>, value: f32) -> Self {
        let shape = shape.into();
        let data = vec![value; shape.numel()];
        Tensor { shape, data }
    }
    /// A tensor from row-major data; `Err` if the length does not match the shape.
    pub fn from_vec(shape: impl Into<Shape>, data: Vec<f32>) -> Result<Self> {
        let shape = shape.into();
        if shape.numel() != data.len() {
            return Err(KilnError::TensorData {
                expected: shape.numel(),
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
    pub fn rand_uniform(shape: impl Into<Shape>, lo: f32, hi: f32, seed: u64) -> Self {
        let shape = shape.into();
        let mut rng = Rng::new(seed);
        let data = (0..shape.numel()).map(|_| rng.uniform_in(lo, hi)).collect();
        Tensor { shape, data }
    }
    /// Standard-normal random values scaled by `std`, from `seed`.
    pub fn rand_normal(shape: impl Into<Shape>, std: f32, seed: u64) -> Self {
        let shape = shape.into();
        let mut rng = Rng::new(seed);
        let data = (0..shape.numel()).map(|_| std * rng.normal()).collect();
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
        self.offset(index).map(|o| self.data[o])
    }
    /// Sets the element at a multi-index; `Err` if the index is out of bounds.
    pub fn set(&mut self, index: &[usize], value: f32) -> Result<()> {
        let o = self.offset(index).ok_or_else(|| {
            KilnError::Invalid(format!(
                "index {index:?} is out of bounds for shape {:?}",
                self.shape()
            ))
        })?;
        self.data[o] = value;
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
