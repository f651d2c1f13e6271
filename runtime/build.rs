//! Builds the guest components from source.
//!
//! The built-in plugins (`plugins/*`) and the test guests (`tests/guests/*`) are
//! compiled for `wasm32-wasip2` by a nested cargo into their own target
//! directory, as wasmtime's `test-programs` does, so no `.wasm` is ever
//! committed. Built-ins are embedded in the binary (`$OUT_DIR/builtin.rs`); the
//! test guests' paths are handed to tests and benches as `*_WASM` variables.

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

const WASM_TARGET: &str = "wasm32-wasip2";

/// Built-in plugins: (name the workflow `uses:`, cargo package, artifact stem).
const BUILTINS: &[(&str, &str, &str)] = &[
    ("transform", "transform", "transform"),
    ("llm", "llm", "llm"),
    ("policy", "policy", "policy"),
    ("evaluation", "evaluation", "evaluation"),
];

/// Guests that only tests and benches load: (cargo package, artifact stem, env var).
const TEST_GUESTS: &[(&str, &str, &str)] = &[
    ("test-guest", "test_guest", "TEST_GUEST_WASM"),
    ("describe-panics", "describe_panics", "DESCRIBE_PANICS_WASM"),
    ("describe-spins", "describe_spins", "DESCRIBE_SPINS_WASM"),
    ("other-world", "other_world", "OTHER_WORLD_WASM"),
];

fn main() {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest_dir
        .parent()
        .expect("runtime/ sits in the workspace")
        .to_owned();
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
    let guest_target_dir = guest_target_dir();
    build_guests(&root, &guest_target_dir);

    let artifacts = guest_target_dir.join(WASM_TARGET).join("guest");
    let mut builtin_rs = String::from(
        "/// Built-in plugins compiled from `plugins/`: (name, component bytes).\n\
         pub static BUILTINS: &[(&str, &[u8])] = &[\n",
    );
    for (name, _, stem) in BUILTINS {
        let wasm = artifact(&artifacts, stem);
        writeln!(
            builtin_rs,
            "    ({name:?}, include_bytes!({:?})),",
            wasm.display()
        )
        .expect("writing to a String");
    }
    builtin_rs.push_str("];\n");
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("set by cargo"));
    std::fs::write(out_dir.join("builtin.rs"), builtin_rs).expect("writing $OUT_DIR/builtin.rs");

    for (_, stem, var) in TEST_GUESTS {
        println!(
            "cargo:rustc-env={var}={}",
            artifact(&artifacts, stem).display()
        );
    }
}

fn artifact(dir: &Path, stem: &str) -> PathBuf {
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
    // OUT_DIR is <target>/[<triple>/]<profile>/build/runtime-<hash>/out.
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

fn build_guests(root: &Path, target_dir: &Path) {
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args(["build", "--profile", "guest", "--target", WASM_TARGET])
        .arg("--target-dir")
        .arg(target_dir);
    for (_, package, _) in BUILTINS {
        cmd.args(["-p", package]);
    }
    for (package, _, _) in TEST_GUESTS {
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
