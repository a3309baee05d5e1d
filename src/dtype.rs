//! Element types: [`DType`], the `i64` tensors fed as indices
//! ([`I64Tensor`]) and the [`Feed`] trait that lets one run take f32 and
//! i64 feeds together.
//!
//! kiln computes in f32. `i64` is the type of what PyTorch holds as
//! `torch.long`: class labels, embedding and gather indices. An `i64`
//! value flows only into ops that read it as an index (`gather`,
//! `one_hot`), into movement ops (reshape, slice, broadcast, transpose,
//! concat, stack) and into `to_f32`; any other op refuses it at build time.
//! At run time each `i64` feed is checked against every index bound of the
//! ops that read it (an `Err` naming the op, the feed, the position and the
//! value, where PyTorch raises `IndexError`), and is carried as an exact
//! integer (every bound is at most [`MAX_INDEX`]).

use crate::error::{KilnError, Result};
use crate::shape::{checked_numel, Shape};
use crate::tensor::Tensor;
use serde::{Deserialize, Serialize};

/// The largest index bound kiln accepts (2²⁴): every index below it is an
/// exact f32, the form in which a run carries indices.
pub const MAX_INDEX: usize = 1 << 24;

/// A value's element type.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DType {
    /// 32-bit float: every computed value.
    #[default]
    F32,
    /// 64-bit signed integer: labels and indices (`torch.long`).
    I64,
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::I64 => "i64",
        })
    }
}

/// An owned `i64` n-d array in row-major order (PyTorch's `torch.long`
/// tensor): class labels and indices fed to an input declared with
/// [`crate::Graph::input_i64`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct I64Tensor {
    shape: Shape,
    data: Vec<i64>,
}

impl I64Tensor {
    /// A tensor from row-major data; `Err` if the length does not match the
    /// shape or the shape's element count overflows.
    pub fn from_vec(shape: impl Into<Shape>, data: Vec<i64>) -> Result<Self> {
        let shape = shape.into();
        if checked_numel("I64Tensor::from_vec", shape.dims())? != data.len() {
            return Err(KilnError::TensorData {
                expected: shape.numel(),
                shape: shape.0,
                len: data.len(),
            });
        }
        Ok(I64Tensor { shape, data })
    }
    /// The shape.
    pub fn shape(&self) -> &[usize] {
        self.shape.dims()
    }
    /// The row-major data.
    pub fn data(&self) -> &[i64] {
        &self.data
    }
    /// The row-major data, mutable.
    pub fn data_mut(&mut self) -> &mut [i64] {
        &mut self.data
    }
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.data.len()
    }
}

/// A 1-D tensor from a vector.
impl From<Vec<i64>> for I64Tensor {
    fn from(data: Vec<i64>) -> Self {
        I64Tensor {
            shape: Shape(vec![data.len()]),
            data,
        }
    }
}

/// A feed's data, by element type.
#[derive(Clone, Copy, Debug)]
pub enum FeedData<'a> {
    /// f32 values, for an input declared with [`crate::Graph::input`].
    F32(&'a [f32]),
    /// i64 values, for an input declared with [`crate::Graph::input_i64`].
    I64(&'a [i64]),
}

/// A value a run can take for an input: a [`Tensor`] (f32) or an
/// [`I64Tensor`]. Runs take feeds as `&[(&str, &dyn Feed)]`, so one slice
/// mixes both: `exe.run(&[("x", &images), ("labels", &labels)])`.
pub trait Feed: std::fmt::Debug {
    /// The dimensions.
    fn shape(&self) -> &[usize];
    /// The row-major data with its element type.
    fn data(&self) -> FeedData<'_>;
    /// The element type.
    fn dtype(&self) -> DType {
        match self.data() {
            FeedData::F32(_) => DType::F32,
            FeedData::I64(_) => DType::I64,
        }
    }
}

impl Feed for Tensor {
    fn shape(&self) -> &[usize] {
        Tensor::shape(self)
    }
    fn data(&self) -> FeedData<'_> {
        FeedData::F32(Tensor::data(self))
    }
}

impl Feed for I64Tensor {
    fn shape(&self) -> &[usize] {
        I64Tensor::shape(self)
    }
    fn data(&self) -> FeedData<'_> {
        FeedData::I64(I64Tensor::data(self))
    }
}
