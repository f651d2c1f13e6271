//! The Rust SDK: `examples/embedded` run as a program, and the engine API
//! it uses (start, events, wait, signal, cancel, idempotent start) against
//! a real store, sandbox and execution files.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use orchestrator_engine::executions::ExecutionView;
use orchestrator_engine::store::executions::{EventKind, ExecutionStatus};
use orchestrator_engine::{Engine, EventStream, StartOptions, Task, Workflow};
use serde_json::{Value, json};

const GUEST: &str = env!("TEST_GUEST_WASM");

/// `target/<profile>/examples/embedded`: `cargo test` builds it with the
/// tests; a run of this test file alone builds it here.
fn example() -> PathBuf {
    let deps = std::env::current_exe().unwrap();
    let profile = deps.parent().unwrap().parent().unwrap();
    let example = profile.join("examples/embedded");
    if !example.is_file() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let built = std::process::Command::new(cargo)
            .current_dir(common::root())
            .args(["build", "-p", "runtime", "--example", "embedded"])
            .status()
            .unwrap();
        assert!(built.success());
    }
    example
}

#[test]
fn the_embedded_example_builds_runs_and_streams_a_workflow() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store.redb");
    let out = std::process::Command::new(example())
        .arg(&store)
        .arg("Ada")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    let id = lines[0].strip_prefix("execution ").unwrap();
    let events: Vec<(u64, Value)> = lines[1..lines.len() - 1]
        .iter()
        .map(|l| {
            let (n, e) = l.trim_start().split_once("  ").unwrap();
            (n.parse().unwrap(), serde_json::from_str(e).unwrap())
        })
        .collect();
    assert_eq!(
        events.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        (0..events.len() as u64).collect::<Vec<_>>()
    );
    assert_eq!(events[0].1["event"], "execution_started");
    assert_eq!(events.last().unwrap().1["event"], "execution_finished");
    let outputs: Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(outputs, json!({ "greeting": "HELLO, ADA!" }));

    // It is an execution like any other.
    let status = common::status_json(dir.path(), id);
    assert_eq!(status["status"], "succeeded");
    assert_eq!(status["record"]["workflow"], "greet");
}

fn waiting() -> Workflow {
    Workflow::builder("approval")
        .task(Task::wait("approve", "go"))
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

/// Reads `events` as they come until the wait started.
async fn until_the_wait_starts(events: &mut EventStream) {
    loop {
        let (_, event) = events.next().await.unwrap().unwrap();
        if matches!(event.kind, EventKind::WaitStarted { .. }) {
            return;
        }
    }
}

async fn engine(dir: &std::path::Path) -> Engine {
    Engine::builder()
        .store(dir.join("store.redb"))
        .build()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handle_signals_follows_and_awaits_its_execution() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path()).await;
    let execution = engine.start(&waiting(), json!({})).await.unwrap();
    let mut events = execution.events(0);
    until_the_wait_starts(&mut events).await;
    let status = execution.status().await.unwrap();
    assert!(status.live);
    assert_eq!(status.record.status, ExecutionStatus::Running);
    execution
        .signal("go", json!({ "by": "ada" }))
        .await
        .unwrap();
    let mut rest = Vec::new();
    while let Some(event) = events.next().await {
        rest.push(event.unwrap());
    }
    assert!(matches!(
        rest.last().unwrap().1.kind,
        EventKind::ExecutionFinished { .. }
    ));
    assert!(
        rest.iter()
            .any(|(_, e)| matches!(e.kind, EventKind::SignalReceived { .. }))
    );
    let done = execution.wait().await.unwrap();
    assert_eq!(done.record.status, ExecutionStatus::Succeeded);
    assert_eq!(done.record.outputs["result"], "approved by ada");

    // From any number onwards, after the end too.
    let mut from = execution.events(3);
    let (first, _) = from.next().await.unwrap().unwrap();
    assert_eq!(first, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handle_cancels_a_running_task() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path()).await;
    let workflow = Workflow::builder("slow")
        .task(Task::new("sleep", GUEST).with("mode", "sleep"))
        .build()
        .unwrap();
    let execution = engine.start(&workflow, json!({})).await.unwrap();
    let mut events = execution.events(0);
    loop {
        let (_, event) = events.next().await.unwrap().unwrap();
        if matches!(event.kind, EventKind::AttemptStarted { .. }) {
            break;
        }
    }
    execution.cancel().await.unwrap();
    let done = tokio::time::timeout(Duration::from_secs(10), execution.wait())
        .await
        .expect("cancelled promptly")
        .unwrap();
    assert_eq!(done.record.status, ExecutionStatus::Cancelled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_with_a_chosen_id_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path()).await;
    let workflow = Workflow::builder("double")
        .input("n", "integer")
        .task(
            Task::new("double", "transform")
                .with("n", "${{ inputs.n }}")
                .with("script", "n * 2"),
        )
        .output("twice", "${{ tasks.double.output }}")
        .build()
        .unwrap();
    let options = || StartOptions {
        execution_id: Some("order-17".into()),
    };
    let first = engine
        .start_with(&workflow, json!({ "n": 21 }), options())
        .await
        .unwrap();
    assert!(first.created);
    assert_eq!(first.execution.id(), "order-17");
    let done = first.execution.wait().await.unwrap();
    assert_eq!(done.record.outputs["twice"], 42);

    // The same start again: the same execution, not a second run.
    let again = engine
        .start_with(&workflow, json!({ "n": 21 }), options())
        .await
        .unwrap();
    assert!(!again.created);
    assert_eq!(again.execution.id(), "order-17");
    let seen = again.execution.wait().await.unwrap();
    assert_eq!(seen.record.outputs["twice"], 42);
    assert_eq!(seen.record.created_at, done.record.created_at);

    // Other inputs under the same id are refused.
    let other = engine
        .start_with(&workflow, json!({ "n": 1 }), options())
        .await
        .unwrap_err()
        .to_string();
    assert!(other.contains("exists already"), "{other}");
    // An id that cannot name a file is refused.
    let bad = engine
        .start_with(
            &workflow,
            json!({ "n": 1 }),
            StartOptions {
                execution_id: Some("../escape".into()),
            },
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(bad.contains("cannot be an execution id"), "{bad}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_starts_with_the_same_id_at_once_make_one_execution() {
    let dir = tempfile::tempdir().unwrap();
    let engine = engine(dir.path()).await;
    let workflow = waiting();
    let options = || StartOptions {
        execution_id: Some("once".into()),
    };
    let (a, b) = tokio::join!(
        engine.start_with(&workflow, json!({}), options()),
        engine.start_with(&workflow, json!({}), options()),
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(
        [a.created, b.created].iter().filter(|c| **c).count(),
        1,
        "exactly one of them created it"
    );
    assert_eq!((a.execution.id(), b.execution.id()), ("once", "once"));
    b.execution
        .signal("go", json!({ "by": "b" }))
        .await
        .unwrap();
    let done = a.execution.wait().await.unwrap();
    assert_eq!(done.record.outputs["result"], "approved by b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_in_memory_runs_follows_and_signals_its_own_executions() {
    let engine = Engine::builder().in_memory().build().await.unwrap();
    assert!(engine.store_path().is_none());
    let execution = engine.start(&waiting(), json!({})).await.unwrap();
    let mut events = execution.events(0);
    until_the_wait_starts(&mut events).await;
    let status = execution.status().await.unwrap();
    assert!(status.live);
    execution
        .signal("go", json!({ "by": "grace" }))
        .await
        .unwrap();
    let done = execution.wait().await.unwrap();
    assert_eq!(done.record.status, ExecutionStatus::Succeeded);
    assert_eq!(done.record.outputs["result"], "approved by grace");

    // Found again by id once it finished, with every event.
    let id = execution.id().to_owned();
    let again = engine.execution(&id).await.unwrap();
    let view = again.status().await.unwrap();
    assert!(!view.live);
    assert!(
        view.events
            .iter()
            .any(|e| matches!(e.kind, EventKind::SignalReceived { .. }))
    );
    // Another engine in memory has executions of its own.
    let other = Engine::builder().in_memory().build().await.unwrap();
    assert!(other.execution(&id).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_in_memory_keeps_cached_answers_between_starts() {
    let engine = Engine::builder().in_memory().build().await.unwrap();
    let workflow = Workflow::builder("cached")
        .task(
            Task::new("greet", "transform")
                .with("script", r#""hello""#)
                .set("cache", json!({ "ttl": "1h" })),
        )
        .output("greeting", "${{ tasks.greet.output }}")
        .build()
        .unwrap();
    let cached = |view: &ExecutionView| {
        let greet = view.tasks.iter().find(|t| t.id == "greet").unwrap();
        greet.usage.as_ref().is_some_and(|u| u.cached)
    };
    let first = engine.start(&workflow, json!({})).await.unwrap();
    let first = first.wait().await.unwrap();
    assert_eq!(first.record.outputs["greeting"], "hello");
    assert!(!cached(&first), "the first run computes its answer");
    let second = engine.start(&workflow, json!({})).await.unwrap();
    let second = second.wait().await.unwrap();
    assert_eq!(second.record.outputs["greeting"], "hello");
    assert!(cached(&second), "the second run is answered from the cache");
    // Another engine in memory has a cache of its own.
    let other = Engine::builder().in_memory().build().await.unwrap();
    let third = other.start(&workflow, json!({})).await.unwrap();
    assert!(!cached(&third.wait().await.unwrap()));
}
