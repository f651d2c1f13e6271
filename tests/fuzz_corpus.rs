//! Every input the fuzzers kept (`fuzz/corpus/<target>/`) runs again here,
//! through the same code the fuzz targets run (`fuzz/harness.rs`): what
//! once crashed or hung a target stays fixed.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

#[path = "../fuzz/harness.rs"]
mod harness;

mod common;

/// Runs `target` on every file of its corpus; returns how many.
fn replay(target: &str, run: fn(&[u8])) -> usize {
    let dir = common::root().join("fuzz/corpus").join(target);
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        run(&std::fs::read(&path).unwrap());
        count += 1;
    }
    count
}

#[test]
fn the_workflow_corpus_replays() {
    assert!(replay("workflow", harness::workflow) > 10);
}

#[test]
fn the_install_corpus_replays() {
    assert!(replay("install", harness::install) > 10);
}

#[test]
fn the_control_request_corpus_replays() {
    assert!(replay("control_request", harness::control_request) > 10);
}
