//! Parked runs: an execution whose only unfinished tasks are `wait:`s lets
//! go of its file, task and run slot once it has waited `PARK_AFTER`, and
//! is taken up again by a signal (through its handle or from another
//! process), a cancel, or its deadline; a parked run whose runtime stopped
//! is interrupted and resumable (`tests/server/executions.rs` kills a
//! server with a run parked). All on a real store, with the `runtime`
//! binary as the other process.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

mod common;

use std::path::Path;
use std::time::Duration;

use orchestrator_engine::store::executions::{
    EventKind, ExecutionStatus, Executions, ExecutionsAt,
};
use orchestrator_engine::tenant::TenantId;
use orchestrator_engine::{Engine, ExecutionHandle, PARK_AFTER, Task, Workflow};
use serde_json::{Value, json};

/// Waits for signal `go` (with `timeout` and `default`, if given), then
/// publishes who approved.
fn approval(timeout: Option<&str>) -> Workflow {
    let mut wait = Task::wait("approve", "go");
    if let Some(timeout) = timeout {
        wait = wait.set(
            "wait",
            json!({ "signal": "go", "timeout": timeout, "default": { "by": "nobody" } }),
        );
    }
    Workflow::builder("approval")
        .task(wait)
        .task(
            Task::new("publish", "transform")
                .needs(["approve"])
                .with("by", "${{ tasks.approve.output.by }}")
                .with("script", r#""approved by " + by"#),
        )
        .output("result", "${{ tasks.publish.output }}")
        .build()
        .unwrap()
}

async fn engine(dir: &Path) -> Engine {
    Engine::builder()
        .store(dir.join("store.redb"))
        .build()
        .await
        .unwrap()
}

fn executions(dir: &Path) -> Executions {
    ExecutionsAt::Beside(dir.join("store.redb")).tenant(&TenantId::default())
}

/// Waits until `engine` keeps `count` runs parked.
async fn until_parked(engine: &Engine, count: usize) {
    let patience = tokio::time::Instant::now() + PARK_AFTER + Duration::from_secs(10);
    while engine.parked_runs() != count {
        assert!(
            tokio::time::Instant::now() < patience,
            "{} runs parked, not {count}",
            engine.parked_runs()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs the `runtime` binary with `args` against the store in `dir`, off
/// the async threads, and returns its stdout; it must succeed.
async fn cli(dir: &Path, args: &[&str]) -> String {
    let out = cli_output(dir, args).await;
    assert!(out.status.success(), "runtime {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

async fn cli_output(dir: &Path, args: &[&str]) -> std::process::Output {
    let mut command = common::cli(dir);
    command.args(args);
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

/// How many times the run was taken up as a resume after a crash.
fn resumes(view: &orchestrator_engine::executions::ExecutionView) -> usize {
    view.events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::ExecutionResumed { .. }))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_run_lets_its_file_go_and_a_handle_signal_takes_it_up() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path()).await;
    let execution = engine.start(&approval(None), json!({})).await.unwrap();
    until_parked(&engine, 1).await;

    // Its file is free: this process can open it, as any other could.
    let id = execution.id().to_owned();
    let files = executions(dir.path());
    let log = files.read(&id).expect("a parked run holds no file");
    assert_eq!(log.record().unwrap().status, ExecutionStatus::Running);
    drop(log);
    // Yet it is a live process's run, not an interrupted one.
    let view = execution.status().await.unwrap();
    assert!(view.live, "a parked run is its process's");
    assert!(orchestrator_engine::executions::interrupted(&files).is_empty());

    execution
        .signal("go", json!({ "by": "ada" }))
        .await
        .unwrap();
    let done = tokio::time::timeout(Duration::from_secs(20), execution.wait())
        .await
        .expect("the signal takes the run up")
        .unwrap();
    assert_eq!(done.record.status, ExecutionStatus::Succeeded);
    assert_eq!(done.record.outputs["result"], "approved by ada");
    assert_eq!(engine.parked_runs(), 0);
    assert_eq!(resumes(&done), 0, "waking is not a resume after a crash");
    let started: Vec<_> = done
        .events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::WaitStarted { .. }))
        .collect();
    assert_eq!(started.len(), 1, "the wait started once: {:?}", done.events);
    assert!(
        std::fs::symlink_metadata(files.socket(&id).unwrap()).is_err(),
        "nothing is left beside the file"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_sees_signals_and_cancels_a_parked_run() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path()).await;
    let signalled = engine.start(&approval(None), json!({})).await.unwrap();
    let cancelled = engine.start(&approval(None), json!({})).await.unwrap();
    until_parked(&engine, 2).await;

    // `runtime status` reads it as running, and `runtime resume` leaves it
    // to the process that parked it.
    let status: Value =
        serde_json::from_str(&cli(dir.path(), &["status", signalled.id(), "--json"]).await)
            .unwrap();
    assert_eq!(status["status"], "running", "{status}");
    let resume = cli_output(dir.path(), &["resume", signalled.id()]).await;
    assert!(!resume.status.success());
    let refusal = String::from_utf8_lossy(&resume.stderr);
    assert!(refusal.contains("is parked by a live process"), "{refusal}");
    let listed = cli(dir.path(), &["resume", "--all"]).await;
    assert!(listed.contains("no interrupted executions"), "{listed}");

    // A signal from another process is recorded in the file and wakes it.
    cli(
        dir.path(),
        &[
            "signal",
            signalled.id(),
            "go",
            "--payload",
            r#"{"by":"grace"}"#,
        ],
    )
    .await;
    let done = tokio::time::timeout(Duration::from_secs(20), signalled.wait())
        .await
        .expect("the signal from another process takes the run up")
        .unwrap();
    assert_eq!(done.record.outputs["result"], "approved by grace");

    // So does a cancel: the run ends cancelled, its task never run.
    cli(dir.path(), &["cancel", cancelled.id()]).await;
    let done = tokio::time::timeout(Duration::from_secs(20), cancelled.wait())
        .await
        .expect("the cancel ends the parked run")
        .unwrap();
    assert_eq!(done.record.status, ExecutionStatus::Cancelled);
    assert!(
        done.tasks.iter().all(|t| t.id != "publish"),
        "{:?}",
        done.tasks
    );
    assert_eq!(engine.parked_runs(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_run_wakes_at_its_deadline_and_by_a_handle_cancel() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path()).await;
    let cancelled = engine.start(&approval(None), json!({})).await.unwrap();
    let timed = engine
        .start(&approval(Some("3s")), json!({}))
        .await
        .unwrap();
    until_parked(&engine, 2).await;

    let done = tokio::time::timeout(Duration::from_secs(20), timed.wait())
        .await
        .expect("the deadline takes the run up")
        .unwrap();
    assert_eq!(done.record.status, ExecutionStatus::Succeeded);
    assert_eq!(done.record.outputs["result"], "approved by nobody");
    let waited = done.record.finished_at.unwrap() - done.record.created_at;
    assert!(
        waited >= 1500,
        "it went on at its deadline, not before ({waited} ms)"
    );

    cancelled.cancel().await.unwrap();
    let done = tokio::time::timeout(Duration::from_secs(20), cancelled.wait())
        .await
        .expect("a handle's cancel ends the parked run")
        .unwrap();
    assert_eq!(done.record.status, ExecutionStatus::Cancelled);
    assert_eq!(engine.parked_runs(), 0);
}

#[test]
fn a_parked_run_whose_runtime_stopped_is_interrupted_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    };
    // The first "process": parks the run, then its runtime goes away.
    let first = runtime();
    let id = first.block_on(async {
        let engine = engine(dir.path()).await;
        let execution: ExecutionHandle = engine.start(&approval(None), json!({})).await.unwrap();
        until_parked(&engine, 1).await;
        execution.id().to_owned()
    });
    drop(first);
    let files = executions(dir.path());
    assert!(!orchestrator_engine::parking::is_parked(&files, &id));
    assert_eq!(
        orchestrator_engine::executions::interrupted(&files),
        [id.as_str()]
    );

    // The next one takes it up as any interrupted run, and it parks there.
    let second = runtime();
    second.block_on(async {
        let engine = engine(dir.path()).await;
        let resumed = engine.resume_interrupted().await.unwrap();
        assert_eq!(resumed.len(), 1);
        until_parked(&engine, 1).await;
        resumed[0]
            .signal("go", json!({ "by": "lin" }))
            .await
            .unwrap();
        let done = resumed[0].wait().await.unwrap();
        assert_eq!(done.record.outputs["result"], "approved by lin");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_woken_run_is_cancelled_through_its_new_control_socket() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path()).await;
    let workflow = Workflow::builder("approve-then-work")
        .task(Task::wait("approve", "go"))
        .task(
            Task::new("work", env!("TEST_GUEST_WASM"))
                .needs(["approve"])
                .with("mode", "sleep"),
        )
        .build()
        .unwrap();
    let execution = engine.start(&workflow, json!({})).await.unwrap();
    until_parked(&engine, 1).await;
    execution.signal("go", json!({})).await.unwrap();
    // Taken up again, it runs its long task.
    let mut events = execution.events(0);
    loop {
        let (_, event) = events.next().await.unwrap().unwrap();
        if matches!(&event.kind, EventKind::AttemptStarted { task, .. } if task == "work") {
            break;
        }
    }
    cli(dir.path(), &["cancel", execution.id()]).await;
    let done = tokio::time::timeout(Duration::from_secs(20), execution.wait())
        .await
        .expect("the cancel reaches the run taken up again")
        .unwrap();
    assert_eq!(done.record.status, ExecutionStatus::Cancelled);
}
