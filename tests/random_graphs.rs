//! A seeded run of the `graph_ops` fuzz target's check (see
//! `tests/common/random_graph.rs`): 3,000 random graphs, each compiled with
//! every pass and unrewritten, must give the same values (NaN equal to NaN)
//! and repeat themselves on a second run. The fuzz target explores further;
//! this keeps every change honest in `cargo test`.

#[path = "common/random_graph.rs"]
mod random_graph;

use arbitrary::Unstructured;
use kiln::rng::Rng;

#[test]
fn three_thousand_random_graphs_compile_to_what_they_mean() {
    let mut rng = Rng::new(20261129);
    let mut built = 0;
    for case in 0..3000 {
        // the fuzz input: 64 to 511 random bytes
        let len = 64 + (rng.next_u64() % 448) as usize;
        let bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        let r = std::panic::catch_unwind(|| random_graph::check(&mut Unstructured::new(&bytes)));
        match r {
            Ok(res) => built += usize::from(res.is_ok()),
            Err(e) => {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                panic!("case {case} (input bytes {bytes:?}):\n{msg}");
            }
        }
    }
    let compared = random_graph::COMPARED.load(std::sync::atomic::Ordering::Relaxed);
    let nodes = random_graph::COMPARED_NODES.load(std::sync::atomic::Ordering::Relaxed);
    let indexed = random_graph::COMPARED_INDEXED.load(std::sync::atomic::Ordering::Relaxed);
    println!(
        "{built} cases ran to the end, {compared} graphs compared ({indexed} reading i64 \
         indices), {nodes} nodes"
    );
    assert!(
        compared > 1500,
        "only {compared} of 3000 graphs reached the comparison"
    );
    assert!(
        indexed > 100,
        "only {indexed} compared graphs read the i64 input"
    );
}

/// Every committed input of the `graph_ops` fuzz target (its seeds and the
/// crashes it found, now fixed) replays clean.
#[test]
fn the_graph_ops_fuzz_corpus_replays_clean() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/graph_ops");
    let mut replayed = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let r = std::panic::catch_unwind(|| random_graph::check(&mut Unstructured::new(&bytes)));
        assert!(r.is_ok(), "{} fails", path.display());
        replayed += 1;
    }
    assert!(replayed >= 6, "{replayed} corpus files");
}
