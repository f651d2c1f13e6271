//! What the build pulls in: only crates.io, only licenses `deny.toml`
//! allows, no banned crates (`cargo deny check licenses bans sources`).
//! Advisories need the network; the GitHub workflow checks those.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

mod common;

#[test]
fn dependencies_come_from_crates_io_under_allowed_licenses() {
    let out = common::tools::cargo_deny()
        .current_dir(common::root())
        .args([
            "--offline",
            "check",
            "--config",
            "deny.toml",
            "licenses",
            "bans",
            "sources",
        ])
        .output()
        .expect("run cargo-deny");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("licenses ok"), "{stderr}");
    assert!(stderr.contains("sources ok"), "{stderr}");
}
