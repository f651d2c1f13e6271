//! `cargo fuzz run control_request`: see `fuzz/harness.rs`.

#![no_main]

#[path = "../harness.rs"]
mod harness;

libfuzzer_sys::fuzz_target!(|data: &[u8]| harness::control_request(data));
