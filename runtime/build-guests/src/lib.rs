//! Compiles guest components from source, for build scripts.
//!
//! The built-in plugins (`plugins/*`, embedded by the engine) and the test
//! guests (`tests/guests/*`, loaded by tests and benches) are compiled for
//! `wasm32-wasip2` by a nested cargo into their own target directory,
//! `<target>/wasm-guests`, as wasmtime's `test-programs` does, so no `.wasm`
//! is ever committed. Two build scripts may call [`build`] at once: cargo's
//! lock on that directory makes the second wait.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const WASM_TARGET: &str = "wasm32-wasip2";

/// Builds the cargo `packages` of the workspace at `root` as guests and
/// returns the directory holding their `.wasm` files. Asks cargo to run the
/// build script again when any guest source changes.
pub fn build(root: &Path, packages: &[&str]) -> PathBuf {
    for watched in [
        "wit",
        "sdk-guest",
        "plugins",
        "tests/guests",
        "Cargo.toml",
        "Cargo.lock",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(watched).display());
    }
    ensure_wasm_target();
    let target_dir = guest_target_dir();
    build_guests(root, &target_dir, packages);
    target_dir.join(WASM_TARGET).join("guest")
}

/// The component file `stem.wasm` in `dir`; panics when the build did not
/// produce it.
pub fn artifact(dir: &Path, stem: &str) -> PathBuf {
    let path = dir.join(format!("{stem}.wasm"));
    assert!(
        path.is_file(),
        "guest build did not produce {}",
        path.display()
    );
    path
}

/// A fresh machine has only the host target; install the wasm one rather than
/// failing with "can't find crate for `core`".
fn ensure_wasm_target() {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .expect("running rustc --print sysroot");
    let sysroot = PathBuf::from(String::from_utf8_lossy(&sysroot.stdout).trim());
    if sysroot.join("lib/rustlib").join(WASM_TARGET).is_dir() {
        return;
    }
    println!("cargo:warning=installing the {WASM_TARGET} target with rustup");
    let mut rustup = Command::new("rustup");
    rustup.args(["target", "add", WASM_TARGET]);
    if let Ok(toolchain) = env::var("RUSTUP_TOOLCHAIN") {
        rustup.args(["--toolchain", &toolchain]);
    }
    let status = rustup.status().unwrap_or_else(|e| {
        panic!("the {WASM_TARGET} target is missing and rustup could not run ({e}); install it with `rustup target add {WASM_TARGET}`")
    });
    assert!(
        status.success(),
        "`rustup target add {WASM_TARGET}` failed; run it yourself and build again"
    );
}

/// `<target>/wasm-guests`, beside the host's profile directories.
fn guest_target_dir() -> PathBuf {
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("set by cargo"));
    // OUT_DIR is <target>/[<triple>/]<profile>/build/<package>-<hash>/out.
    let build = out_dir
        .ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "build"))
        .expect("OUT_DIR lies under a build directory");
    let profile_dir = build.parent().expect("build/ has a parent");
    let mut target = profile_dir.parent().expect("profile dir has a parent");
    if target
        .file_name()
        .is_some_and(|n| n == env::var("TARGET").unwrap_or_default().as_str())
    {
        target = target.parent().expect("triple dir has a parent");
    }
    target.join("wasm-guests")
}

fn build_guests(root: &Path, target_dir: &Path, packages: &[&str]) {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args(["build", "--profile", "guest", "--target", WASM_TARGET])
        .arg("--target-dir")
        .arg(target_dir);
    for package in packages {
        cmd.args(["-p", package]);
    }
    // The host build's flags and wrappers (clippy, coverage, sanitizers) are
    // not meant for the guests.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_PROFILE_RELEASE_DEBUG",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("running cargo to build the guests");
    assert!(
        status.success(),
        "building the guest components failed (see the errors above)"
    );
}
