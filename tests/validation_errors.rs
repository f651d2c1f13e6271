//! What `runtime validate` says about broken workflows, pinned by snapshots.
//!
//! Each file in `tests/fixtures/invalid/` has a snapshot in `tests/snapshots/`.
//! After changing a message on purpose: `INSTA_UPDATE=always cargo test --test
//! validation_errors`, then review the diff.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

use std::path::Path;
use std::process::Command;

fn validate(fixture: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_runtime"))
        .args([
            "validate",
            &format!("tests/fixtures/invalid/{fixture}.yaml"),
        ])
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .env(
            "ORCHESTRATOR_STORE",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("validation-errors.redb"),
        )
        .env("ORCHESTRATOR_CONFIG", "tests/fixtures/no-config.yaml")
        .output()
        .expect("the runtime binary starts");
    assert_eq!(
        output.status.code(),
        Some(2),
        "an invalid workflow exits with 2"
    );
    assert!(output.stdout.is_empty());
    String::from_utf8(output.stderr).expect("messages are UTF-8")
}

#[test]
fn bad_yaml_reports_the_line() {
    let message = validate("bad_yaml");
    assert!(message.contains("bad_yaml.yaml:9:"), "{message}");
    insta::assert_snapshot!(message);
}

#[test]
fn cycle_is_named_task_by_task() {
    insta::assert_snapshot!(validate("cycle"));
}

#[test]
fn unknown_task_in_needs() {
    insta::assert_snapshot!(validate("unknown_task"));
}

#[test]
fn bad_rhai_reports_where() {
    insta::assert_snapshot!(validate("bad_rhai"));
}

#[test]
fn unknown_field_is_an_error() {
    insta::assert_snapshot!(validate("unknown_field"));
}

#[test]
fn every_problem_is_reported_at_once() {
    insta::assert_snapshot!(validate("many_problems"));
}

#[test]
fn a_task_id_the_expression_language_reserves_is_refused() {
    let message = validate("reserved_id");
    assert!(message.contains("reserved_id.yaml:3:"), "{message}");
    assert!(!message.contains("`fine`"), "{message}");
    insta::assert_snapshot!(message);
}
