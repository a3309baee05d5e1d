//! What a benchmark row may allocate in steady-state runs, shared by the
//! one- and two-thread allocation tests.

use kiln::tooling::alloc_count::Allocations;
use kiln::tooling::bench::Row;
use kiln::tooling::kernels::gemm::dense::CRATE_PRODUCTS;
use std::sync::atomic::Ordering;

/// Products handed to the `gemm` crate so far (see [`CRATE_PRODUCTS`]).
pub fn crate_products() -> u64 {
    CRATE_PRODUCTS.load(Ordering::Relaxed)
}

/// Checks `used`, what some runs of `row` allocated, against `products`,
/// the products those runs handed to the `gemm` crate: nothing for pooling;
/// otherwise at most `per_product` allocations per product (the crate's
/// packing buffers), so nothing at all for a row whose products kiln's
/// tile computes (a convolution where AVX2 + FMA run, not `KILN_SIMD=none`).
pub fn check(row: &Row, used: Allocations, products: u64, per_product: u64) {
    let bound = if row.layer.ends_with("Pool2D") {
        0
    } else {
        per_product * products
    };
    assert!(
        used.count <= bound,
        "{} allocated {used:?} with {products} products through the gemm crate",
        row.id()
    );
}
