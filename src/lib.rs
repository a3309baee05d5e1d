//! kiln: a small graph-compiling deep-learning framework.
//!
//! Build a model once as a static op graph ([`Graph`], [`nn`] layers), compile
//! it ([`compile()`]) and run it many times ([`Executable::run`]).
//!
//! ```
//! use kiln::{compile, nn, nn::Layer, CompileOptions, Graph, Tensor};
//! # fn main() -> kiln::Result<()> {
//! let mut g = Graph::with_seed(1);
//! let x = g.input("x", [2, 4])?;
//! let y = nn::Linear::new(4, 3).build(&mut g, x)?;
//! let mut exe = compile(&g, &[y], &CompileOptions::default())?;
//! let out = exe.run(&[("x", &Tensor::zeros([2, 4]))])?;
//! assert_eq!(out[0].shape(), &[2, 3]);
//! # Ok(()) }
//! ```
//!
//! The framework is [`graph`], [`ops`], [`nn`], [`optim`], [`compile`](mod@compile),
//! [`exec`], [`trainer`], [`data`] and [`weights`]. [`tooling`] holds what the
//! `kiln` binary, the benches and the tests share (benchmark rows, a counting
//! allocator, training-loop helpers, the kernels): public, but not the
//! framework's API.

#![warn(missing_docs)]
// `unsafe` lives in the kernels (and the counting allocator); every unsafe
// block states why it is sound.
#![deny(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod autodiff;
pub mod compile;
pub mod data;
pub mod dtype;
pub mod error;
pub mod exec;
pub mod graph;
pub mod models;
pub mod nn;

pub mod ops;
pub mod optim;
#[path = "../passes/mod.rs"]
pub mod passes;
pub mod rng;
pub mod shape;
pub mod tensor;
pub mod trainer;
pub mod weights;

pub mod tooling;
pub(crate) use tooling::{alloc_count, kernels};

pub use compile::{compile, compile_program, CompileOptions, PassSelection};
pub use dtype::{DType, Feed, I64Tensor};
pub use error::{KilnError, Result};
pub use exec::{schedule_with, Executable};
pub use graph::dump::DumpFormat;
pub use graph::{Graph, Init, Node, NodeId, Program};
pub use ops::{Op, OpBuilder, Window};
pub use shape::{Shape, BATCH};
pub use tensor::Tensor;
pub use trainer::Trainer;

/// What most programs need: `use kiln::prelude::*;` brings the graph, its
/// builder methods ([`OpBuilder`]), the layer trait, compiling and tensors.
pub mod prelude {
    pub use crate::nn::{self, Layer};
    pub use crate::{
        compile, CompileOptions, Executable, Feed, Graph, I64Tensor, NodeId, OpBuilder, Tensor,
    };
}

/// The README's code blocks, compiled and run as doctests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
