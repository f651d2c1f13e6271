//! What the build pulls in: only crates.io, only licenses `deny.toml`
//! allows, no banned crates (`cargo deny check licenses bans sources`).
//! Advisories need the network; the GitHub workflow checks those.
//!
//! `cargo deny` reads `cargo metadata` for every platform, so the crates
//! only Windows or macOS builds use must be on disk: a build here fetches
//! only this platform's, and `cargo fetch` (all targets) brings the rest.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

mod common;

/// Downloads every crate `Cargo.lock` names, for every target, so the
/// offline check below sees the whole graph.
fn fetch_all_targets() {
    let out = std::process::Command::new(env!("CARGO"))
        .current_dir(common::root())
        .args(["fetch", "--locked"])
        .output()
        .expect("run cargo fetch");
    assert!(
        out.status.success(),
        "`cargo fetch --locked` failed (it needs the crates.io registry):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `cargo deny` with the config at `config`, checking `checks`.
fn deny(config: &std::path::Path, checks: &[&str]) -> (bool, String) {
    let out = common::tools::cargo_deny()
        .current_dir(common::root())
        .arg("--offline")
        .arg("--config")
        .arg(config)
        .arg("check")
        .args(checks)
        .output()
        .expect("run cargo-deny");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn dependencies_come_from_crates_io_under_allowed_licenses() {
    fetch_all_targets();
    let config = common::root().join("deny.toml");
    let (ok, stderr) = deny(&config, &["licenses", "bans", "sources"]);
    assert!(ok, "{stderr}");
    assert!(!stderr.contains("error["), "{stderr}");

    // The check is real: a policy of MIT alone refuses this build.
    let dir = tempfile::tempdir().unwrap();
    let strict = dir.path().join("deny.toml");
    std::fs::write(&strict, "[licenses]\nallow = [\"MIT\"]\n").unwrap();
    let (ok, stderr) = deny(&strict, &["licenses"]);
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("error[rejected]: failed to satisfy license requirements"),
        "{stderr}"
    );
}
