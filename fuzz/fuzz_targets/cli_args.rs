//! The `kiln` CLI's argument parsing on arbitrary argv. The input is split
//! on NUL and newline bytes into arguments (kept as raw bytes, so non-UTF-8
//! arguments reach clap too) after a leading `kiln`. Parsing must return
//! `Ok` or a clap error, and rendering that error (help, version, usage,
//! suggestions) must not panic. No command is ever executed.
//!
//! The parser definitions are the binary's own: build.rs copies them out of
//! `src/bin/kiln.rs` (from `#[derive(Parser)]` up to `fn main`) into
//! `$OUT_DIR/cli.rs`, included here.

#![no_main]
#![allow(dead_code)]

use clap::{CommandFactory, Parser, Subcommand};
use libfuzzer_sys::fuzz_target;
use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::sync::Once;
#[allow(unused_imports)] // the CLI definitions may name paths
use std::path::PathBuf;

include!(concat!(env!("OUT_DIR"), "/cli.rs"));

static CHECKED: Once = Once::new();

fuzz_target!(|data: &[u8]| {
    // clap's own consistency checks of the definitions, once per process.
    CHECKED.call_once(|| Cli::command().debug_assert());
    let args = std::iter::once(OsString::from("kiln")).chain(
        data.split(|&b| b == 0 || b == b'\n')
            .map(|a| OsString::from_vec(a.to_vec())),
    );
    if let Err(e) = Cli::try_parse_from(args) {
        let _ = e.render().to_string();
        let _ = e.kind();
    }
});
