//! What a benchmark row may allocate in steady-state runs, shared by the
//! one- and two-thread allocation tests.

use kiln::tooling::alloc_count::Allocations;
use kiln::tooling::bench::{Prepared, Row};
use kiln::tooling::kernels::gemm::tile;

/// Checks `used` over `runs` runs of `row`, which has `matmuls` `MatMul`
/// steps per run: nothing for pooling, nor for any row without a `MatMul`
/// where kiln's tile runs (AVX2 + FMA, not `KILN_SIMD=none`); at most
/// `per_product` allocations per product (the `gemm` crate's packing
/// buffers) otherwise. Without the tile, convolutions' products go to the
/// crate too, which is not bounded here.
pub fn check(row: &Row, used: Allocations, runs: u64, matmuls: u64, per_product: u64) {
    let pooling = row.layer.ends_with("Pool2D");
    if pooling || (matmuls == 0 && tile::available()) {
        assert_eq!(
            used.count,
            0,
            "{} allocated {used:?} in {runs} runs",
            row.id()
        );
    } else if tile::available() {
        assert!(
            used.count <= runs * per_product * matmuls,
            "{} allocated {used:?} in {runs} runs ({matmuls} matmul steps per run)",
            row.id()
        );
    }
}

/// `MatMul` steps per run of `p`'s executable (counted by its profile; one
/// profiled run).
pub fn matmuls_per_run(p: &mut Prepared) -> u64 {
    p.exe.set_profiling(true);
    p.run().unwrap();
    let profile = p.exe.profile().unwrap();
    let calls = profile
        .ops
        .iter()
        .filter(|o| o.0 == "matmul")
        .map(|o| o.1)
        .sum();
    p.exe.set_profiling(false);
    calls
}
