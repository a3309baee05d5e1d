//! `kiln::data::read_idx` on arbitrary bytes, written as-is to a file named
//! `*.gz` and to one without `.gz`, and gzip-compressed to a third file. Each
//! call must return `Ok` or `Err`, never panic or abort. Gzip is detected by
//! its magic bytes, not the name, so the two as-is files must read the same;
//! and the compressed file must read as the plain bytes do.

#![no_main]

use flate2::{write::GzEncoder, Compression};
use libfuzzer_sys::fuzz_target;
use std::io::Write;
use std::path::PathBuf;

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("kiln-fuzz-{}-{name}", std::process::id()))
}

/// The result without the path-bearing error text.
fn read(path: &PathBuf) -> Option<(Vec<usize>, Vec<u8>)> {
    kiln::data::read_idx(path).ok()
}

fuzz_target!(|data: &[u8]| {
    let plain = temp("idx-ubyte");
    let named_gz = temp("idx-ubyte.gz");
    std::fs::write(&plain, data).expect("write temp file");
    std::fs::write(&named_gz, data).expect("write temp file");
    let a = read(&plain);
    let b = read(&named_gz);
    assert_eq!(a, b, "the same bytes read differently with and without .gz in the name");

    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    enc.write_all(data).expect("gzip in memory");
    let gz = temp("compressed-idx-ubyte.gz");
    std::fs::write(&gz, enc.finish().expect("gzip in memory")).expect("write temp file");
    let c = read(&gz);
    // Bytes that are themselves gzip are decompressed once when read plain,
    // twice never: only compare when the input is not gzip.
    if !data.starts_with(&[0x1f, 0x8b]) {
        assert_eq!(a, c, "gzip-compressed bytes read differently from the plain bytes");
    }
});
