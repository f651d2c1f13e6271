//! `cargo fuzz run workflow`: see `fuzz/harness.rs`.

#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::workflow(data));
