//! Copies the `kiln` CLI's clap definitions (the `Cli` struct, its `Command`
//! enum and `TrainArgs`) out of `../src/bin/kiln.rs` into `$OUT_DIR/cli.rs`,
//! so the `cli_args` target parses with exactly the binary's definitions
//! without running any command. The binary's `main` and command handlers
//! (which train, benchmark, ...) are left out: the copy stops at `fn main`.

use std::path::PathBuf;

fn main() {
    let src = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap())
        .join("../src/bin/kiln.rs");
    println!("cargo:rerun-if-changed={}", src.display());
    let text = std::fs::read_to_string(&src)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", src.display()));
    let start = text
        .find("#[derive(Parser)]")
        .expect("src/bin/kiln.rs: no `#[derive(Parser)]` (the Cli struct) to copy");
    let end = text[start..]
        .find("\nfn main(")
        .map(|i| start + i)
        .expect("src/bin/kiln.rs: no `fn main(` after the Cli definitions");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("cli.rs");
    std::fs::write(&out, &text[start..end]).expect("write cli.rs");
}
