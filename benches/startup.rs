//! Start-up of `runtime run` on a warm store: from spawning the binary to
//! the line saying its first task started (the process started, read its
//! configuration, opened the store, loaded and validated the workflow,
//! loaded the built-in's artifact and began the task), and to its exit.
//!
//! `cargo bench --bench startup`

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RUNS: usize = 30;

fn main() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let flow = dir.path().join("flow.yaml");
    std::fs::write(
        &flow,
        "name: one\ntasks:\n  - id: add\n    uses: transform\n    with: { script: '1 + 1' }\n",
    )
    .expect("writes the workflow");
    // The first run installs and pre-initialises the built-ins.
    run(dir.path(), &flow);
    let mut to_first_task = Vec::with_capacity(RUNS);
    let mut to_exit = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let (first, exit) = run(dir.path(), &flow);
        to_first_task.push(first);
        to_exit.push(exit);
    }
    to_first_task.sort();
    to_exit.sort();
    println!(
        "`runtime run` of a one-task workflow on a warm store (median of {RUNS}): first task started after {:.1} ms, exited after {:.1} ms",
        millis(to_first_task[RUNS / 2]),
        millis(to_exit[RUNS / 2])
    );
}

/// Time to the first task's start line, and to the exit.
fn run(dir: &Path, flow: &Path) -> (Duration, Duration) {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_runtime"))
        .arg("run")
        .arg(flow)
        .env("ORCHESTRATOR_STORE", dir.join("store.redb"))
        .env(
            "ORCHESTRATOR_CONFIG",
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../tests/fixtures/no-config.yaml"
            ),
        )
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the runtime binary starts");
    let stderr = BufReader::new(child.stderr.take().expect("piped"));
    let mut first = None;
    for line in stderr.lines() {
        let line = line.expect("reads stderr");
        if first.is_none() && line.contains("started") && line.contains("add") {
            first = Some(started.elapsed());
        }
    }
    let status = child.wait().expect("the run ends");
    assert!(status.success(), "the run failed");
    (first.expect("a start line for the task"), started.elapsed())
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
