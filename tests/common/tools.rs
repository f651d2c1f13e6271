//! Outside tools the tests need, provided by the tests themselves, so that
//! `cargo test --workspace` passes on a machine with nothing but rustup,
//! cargo and python3 with pip.
//!
//! A tool already on the `PATH` at the pinned version is used as it is;
//! otherwise it is installed once under cargo's `target/tmp/tools` with the
//! machine's own package managers: `python3 -m pip install --target` (which
//! works without a virtual environment and on distributions that protect the
//! system Python), `cargo install --root`. A lock file keeps concurrent test processes from installing
//! the same tool twice.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The componentize-py release the Python example is built with.
pub const COMPONENTIZE_PY_VERSION: &str = "0.25.1";

/// A command that runs componentize-py at [`COMPONENTIZE_PY_VERSION`].
pub fn componentize_py() -> Command {
    if on_path("componentize-py", COMPONENTIZE_PY_VERSION) {
        return Command::new("componentize-py");
    }
    let dir = pip_installed(
        &format!("componentize-py-{COMPONENTIZE_PY_VERSION}"),
        &[format!("componentize-py=={COMPONENTIZE_PY_VERSION}")],
    );
    let mut command = Command::new("python3");
    command
        .env("PYTHONPATH", dir.join("site"))
        .args(["-c", "import sys, componentize_py; sys.argv[0] = 'componentize-py'; sys.exit(componentize_py.script())"]);
    command
}

/// The grpcio release the Python client of the control API runs with.
pub const GRPCIO_VERSION: &str = "1.85.1";

/// `python3` with `grpcio` and `grpcio-reflection` at [`GRPCIO_VERSION`]
/// importable: a gRPC client in another language than the server's.
pub fn python_with_grpc() -> Command {
    let dir = pip_installed(
        &format!("grpcio-{GRPCIO_VERSION}"),
        &[
            format!("grpcio=={GRPCIO_VERSION}"),
            format!("grpcio-reflection=={GRPCIO_VERSION}"),
        ],
    );
    let mut command = Command::new("python3");
    command.env("PYTHONPATH", dir.join("site"));
    command
}

/// The cargo-deny release the supply-chain checks run.
pub const CARGO_DENY_VERSION: &str = "0.20.2";

/// A command that runs cargo-deny at [`CARGO_DENY_VERSION`].
pub fn cargo_deny() -> Command {
    if on_path("cargo-deny", CARGO_DENY_VERSION) {
        return Command::new("cargo-deny");
    }
    Command::new(cargo_installed(
        "cargo-deny",
        CARGO_DENY_VERSION,
        "cargo-deny",
    ))
}

/// The grpcurl-rs release the control API's `grpcurl` examples run with:
/// grpcurl's command line (the same flags, reflection, JSON in and out),
/// built from crates.io, since Go's grpcurl has no package here.
pub const GRPCURL_VERSION: &str = "0.2.1";

/// The directory holding a `grpcurl` at [`GRPCURL_VERSION`], to put first
/// on the `PATH` of the shell that runs the documented commands.
pub fn grpcurl_dir() -> PathBuf {
    cargo_installed("grpcurl-rs", GRPCURL_VERSION, "grpcurl")
        .parent()
        .expect("a binary is in a directory")
        .to_owned()
}

/// `binary` of crate `package` at `version`, installed once with
/// `cargo install --locked --root` under the tools directory.
fn cargo_installed(package: &str, version: &str, binary: &str) -> PathBuf {
    let dir = tools_dir().join(format!("{package}-{version}"));
    let path = dir.join("bin").join(binary);
    with_lock(&dir, || {
        if path.exists() {
            return;
        }
        let status = Command::new(env!("CARGO"))
            .args(["install", "--locked", "--quiet", "--root"])
            .arg(&dir)
            .arg(format!("{package}@{version}"))
            .env("CARGO_TARGET_DIR", dir.join("build"))
            .status()
            .unwrap_or_else(|e| panic!("cargo is needed to install {package}: {e}"));
        assert!(
            status.success(),
            "`cargo install {package}@{version}` failed"
        );
        let _ = fs::remove_dir_all(dir.join("build"));
    });
    path
}

/// The directory `packages` are installed in (once, with
/// `python3 -m pip install --target <dir>/site`), named `name` under the
/// tools directory.
fn pip_installed(name: &str, packages: &[String]) -> PathBuf {
    let dir = tools_dir().join(name);
    let ready = dir.join(".installed");
    with_lock(&dir, || {
        if ready.exists() {
            return;
        }
        let status = Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--root-user-action=ignore",
            ])
            .arg("--target")
            .arg(dir.join("site"))
            .args(packages)
            .status()
            .unwrap_or_else(|e| panic!("python3 with pip is needed to install {packages:?}: {e}"));
        assert!(
            status.success(),
            "`python3 -m pip install {}` failed",
            packages.join(" ")
        );
        fs::write(&ready, "").expect("mark the packages installed");
    });
    dir
}

/// Whether `program --version` runs and names `version`.
fn on_path(program: &str, version: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|out| {
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains(version)
        })
}

/// Where installed tools live: cargo's scratch directory for tests.
fn tools_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("tools")
}

/// Runs `f` holding an exclusive lock beside `dir` (created if missing).
fn with_lock(dir: &Path, f: impl FnOnce()) {
    fs::create_dir_all(dir).expect("create the tools directory");
    let lock = File::create(dir.with_extension("lock")).expect("create the tools lock");
    lock.lock().expect("lock the tools directory");
    f();
    drop(lock);
}

/// Where Debian's Chromium is, the browser the web console is tested in.
const CHROMIUM: &str = "/usr/bin/chromium";

/// Debian's `chromium` (headless, for the console's browser test),
/// installed with `apt-get` when missing (as root, or through `sudo -n`).
pub fn chromium() -> PathBuf {
    let path = PathBuf::from(CHROMIUM);
    with_lock(&tools_dir().join("chromium"), || {
        if path.exists() {
            return;
        }
        let root = rustix::process::geteuid().is_root();
        let apt = |args: &[&str]| {
            let mut command = if root {
                Command::new("apt-get")
            } else {
                let mut sudo = Command::new("sudo");
                sudo.args(["-n", "apt-get"]);
                sudo
            };
            let status = command
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .unwrap_or_else(|e| panic!("apt-get is needed to install chromium: {e}"));
            assert!(
                status.success(),
                "`apt-get {}` failed: install Debian's `chromium` package (as root) and run the tests again",
                args.join(" ")
            );
        };
        apt(&["update", "-qq"]);
        apt(&[
            "install",
            "-y",
            "-qq",
            "--no-install-recommends",
            "chromium",
        ]);
    });
    assert!(
        path.exists(),
        "{CHROMIUM} is missing after installing `chromium`"
    );
    path
}
