//! Many executions suspended at once in one process: 10,000 runs of a
//! workflow that waits for a signal, then a `transform`, started through
//! the SDK on a real store. Prints the resident memory and open files of
//! the process before and once every run is parked, how long starting and
//! resuming them took, and checks that every one finished with the
//! signal's value.
//!
//! `cargo bench --bench suspended` (`SUSPENDED=N` for another count)

use std::time::Instant;

use orchestrator_engine::config::Config;
use orchestrator_engine::store::executions::{EventKind, ExecutionStatus};
use orchestrator_engine::{Engine, Task, Workflow};
use serde_json::json;

fn main() {
    let count: usize = std::env::var("SUSPENDED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio starts");
    tokio.block_on(run(count));
}

async fn run(count: usize) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    // Waiting executions hold their run slots: room for all of them.
    let config = Config::parse(
        &format!("capacity: {{ runs: {count}, queued_runs: {count} }}\n"),
        "bench",
    )
    .expect("a valid config");
    let engine = Engine::builder()
        .store(dir.path().join("store.redb"))
        .config(config)
        .build()
        .await
        .expect("the engine starts");
    let workflow = Workflow::builder("approval")
        .task(Task::wait("approve", "go"))
        .task(
            Task::new("publish", "transform")
                .needs(["approve"])
                .with("by", "${{ tasks.approve.output.by }}")
                .with("script", r#""approved by " + by"#),
        )
        .output("result", "${{ tasks.publish.output }}")
        .build()
        .expect("a valid workflow");
    // One run first, so plugins are loaded and caches warm before counting.
    let warm = engine.start(&workflow, json!({})).await.expect("starts");
    warm.signal("go", json!({ "by": "warm-up" }))
        .await
        .expect("signals");
    warm.wait().await.expect("finishes");
    let before = resident_kib();

    let started = Instant::now();
    let mut handles = Vec::with_capacity(count);
    for _ in 0..count {
        handles.push(engine.start(&workflow, json!({})).await.expect("starts"));
    }
    for handle in &handles {
        let mut events = handle.events(0);
        loop {
            let (_, event) = events
                .next()
                .await
                .expect("the run goes on")
                .expect("an event");
            if matches!(event.kind, EventKind::WaitStarted { .. }) {
                break;
            }
        }
    }
    // Every run parks once it has waited for `PARK_AFTER`.
    while engine.parked_runs() < count {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let suspending = started.elapsed();
    let waiting = resident_kib();
    let files = open_files();

    let started = Instant::now();
    for (i, handle) in handles.iter().enumerate() {
        handle
            .signal("go", json!({ "by": format!("user {i}") }))
            .await
            .expect("signals");
    }
    for (i, handle) in handles.iter().enumerate() {
        let done = handle.wait().await.expect("finishes");
        assert_eq!(done.record.status, ExecutionStatus::Succeeded);
        assert_eq!(
            done.record.outputs["result"],
            format!("approved by user {i}")
        );
    }
    let resuming = started.elapsed();

    println!("{count} executions suspended on `wait:` in one process");
    println!(
        "resident memory before: {:.1} MiB; all waiting: {:.1} MiB ({:.1} KiB per execution)",
        before as f64 / 1024.0,
        waiting as f64 / 1024.0,
        waiting.saturating_sub(before) as f64 / count as f64
    );
    println!("open files of the process while all wait: {files}");
    println!(
        "starting them until all are parked: {:.2} s; signalling all and awaiting their ends: {:.2} s",
        suspending.as_secs_f64(),
        resuming.as_secs_f64()
    );
}

/// How many files this process has open.
fn open_files() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, Iterator::count)
}

/// This process's resident set, in KiB (`VmRSS` of `/proc/self/status`).
fn resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .expect("/proc/self/status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("a VmRSS line")
}
