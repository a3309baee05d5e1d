//! Fast CPU kernels: pure functions on slices and shapes (no graph types).

pub mod arena;
pub mod conv;
pub mod copy;
pub mod gemm;
pub mod im2col;
pub mod math;
pub mod matmul;
pub mod par;
pub mod permute;
pub mod pool;
pub mod relu;
pub mod scratch;
pub mod simd;
pub mod transpose;
