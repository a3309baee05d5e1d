//! Random graphs through the compiler: see `tests/common/random_graph.rs`,
//! which this target shares with the seeded run in `cargo test`.

#![no_main]

#[path = "../../tests/common/random_graph.rs"]
mod random_graph;

use arbitrary::Unstructured;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = random_graph::check(&mut Unstructured::new(data));
});
