//! `kiln::weights::load` on arbitrary bytes: it must return `Ok` or `Err`,
//! never panic or abort. What loads must survive a save/load round trip
//! unchanged (names, shapes, and every value's bits).

#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::PathBuf;

fn temp(suffix: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "kiln-fuzz-{}-{suffix}.safetensors",
        std::process::id()
    ))
}

fuzz_target!(|data: &[u8]| {
    let path = temp("in");
    std::fs::write(&path, data).expect("write the input to a temp file");
    let Ok(loaded) = kiln::weights::load(&path) else {
        return;
    };
    let again = temp("again");
    kiln::weights::save(&again, &loaded).expect("saving tensors that loaded");
    let reloaded = kiln::weights::load(&again).expect("loading what was just saved");
    assert_eq!(loaded.len(), reloaded.len(), "tensor count after a round trip");
    for ((n1, t1), (n2, t2)) in loaded.iter().zip(&reloaded) {
        assert_eq!(n1, n2, "names after a round trip");
        assert_eq!(t1.shape(), t2.shape(), "shape of `{n1}` after a round trip");
        let bits = |t: &kiln::Tensor| t.data().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(t1), bits(t2), "values of `{n1}` after a round trip");
    }
});
