//! Tooling that the `kiln` binary, the benches and the tests share: public,
//! but not the framework's API (signatures may change between versions).

#[allow(unsafe_code)]
pub mod alloc_count;
pub mod bench;
pub mod classify;
#[allow(unsafe_code)]
#[path = "../kernels/mod.rs"]
pub mod kernels;
pub mod lm;
