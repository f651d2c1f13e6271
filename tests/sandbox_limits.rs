//! Hostile and misbehaving plugins are contained: each fails with its own
//! clear error naming the task and the limit, siblings still succeed, and the
//! host keeps running workflows afterwards.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

use indexmap::IndexMap;
use runtime::expr::Expressions;
use runtime::scheduler::{FailureKind, RunReport, RunStatus, TaskReport, TaskStatus};
use runtime::service::{self, Runner};

const GUEST: &str = env!("TEST_GUEST_WASM");

async fn run(runner: &Runner, yaml: &str) -> RunReport {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("flow.yaml");
    std::fs::write(&file, yaml.replace("GUEST", GUEST)).unwrap();
    let workflow = service::load(&file, &Expressions::new()).unwrap();
    runner
        .run(&workflow, IndexMap::new(), None, &|_| {})
        .await
        .unwrap()
}

fn task<'a>(report: &'a RunReport, id: &str) -> &'a TaskReport {
    report.tasks.iter().find(|t| t.id == id).unwrap()
}

fn failure(report: &RunReport, id: &str) -> (FailureKind, String) {
    let t = task(report, id);
    assert_eq!(t.status, TaskStatus::Failed, "{t:?}");
    let error = t.error.clone().unwrap();
    (error.kind.unwrap(), error.message)
}

const HOSTILE: &str = r#"
name: hostile
tasks:
  - id: spin
    uses: GUEST
    with: { mode: loop }
    limits: { fuel: 20000000, deadline: 30s }
  - id: hog
    uses: GUEST
    with: { mode: alloc }
    limits: { memory: 16MiB }
  - id: nap
    uses: GUEST
    with: { mode: sleep }
    limits: { deadline: 200ms }
  - id: oops
    uses: GUEST
    with: { mode: panic }
  - id: sibling
    uses: GUEST
    with: { value: { still: "here" } }
  - id: after_spin
    uses: GUEST
    needs: [spin]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_hostile_guest_fails_with_its_own_error() {
    let runner = Runner::new(Expressions::new()).unwrap();
    let report = run(&runner, HOSTILE).await;
    assert_eq!(report.status, RunStatus::Failed);

    let (kind, message) = failure(&report, "spin");
    assert_eq!(kind, FailureKind::OutOfFuel);
    assert!(message.contains("fuel budget of 20000000"), "{message}");
    assert_eq!(task(&report, "spin").metering.fuel, 20_000_000);

    let (kind, message) = failure(&report, "hog");
    assert_eq!(kind, FailureKind::MemoryLimit);
    assert!(message.contains("cap of 16.0 MiB"), "{message}");
    assert!(task(&report, "hog").metering.peak_memory <= 16 << 20);

    let (kind, message) = failure(&report, "nap");
    assert_eq!(kind, FailureKind::Deadline);
    assert!(message.contains("deadline of 200ms"), "{message}");

    let (kind, message) = failure(&report, "oops");
    assert_eq!(kind, FailureKind::Trap);
    assert!(
        message.contains("test-guest was asked to panic"),
        "{message}"
    );

    let sibling = task(&report, "sibling");
    assert_eq!(sibling.status, TaskStatus::Succeeded);
    assert_eq!(sibling.output, Some(serde_json::json!({"still": "here"})));

    let after = task(&report, "after_spin");
    assert_eq!(after.status, TaskStatus::NotRun);
    assert!(after.error.as_ref().unwrap().message.contains("`spin`"));

    // The host is unharmed: the same runner runs the next workflow.
    let again = run(
        &runner,
        "name: again\ntasks:\n  - id: echo\n    uses: GUEST\n    with: { value: 7 }\n",
    )
    .await;
    assert_eq!(again.status, RunStatus::Succeeded);
    assert_eq!(task(&again, "echo").output, Some(serde_json::json!(7)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_stops_a_busy_loop_that_has_fuel_to_spare() {
    let runner = Runner::new(Expressions::new()).unwrap();
    let report = run(
        &runner,
        "name: busy\ntasks:\n  - id: spin\n    uses: GUEST\n    with: { mode: loop }\n    limits: { fuel: 1000000000000000, deadline: 100ms }\n",
    )
    .await;
    let (kind, message) = failure(&report, "spin");
    assert_eq!(kind, FailureKind::Deadline, "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_errors_keep_their_kind() {
    let runner = Runner::new(Expressions::new()).unwrap();
    let report = run(
        &runner,
        r#"
name: errors
tasks:
  - id: rate_limited
    uses: GUEST
    with: { mode: fail, kind: retryable, message: "429 from the model" }
  - id: refused
    uses: GUEST
    with: { mode: fail, kind: denied, message: "policy says no" }
  - id: bad_input
    uses: GUEST
    with: { mode: levitate }
"#,
    )
    .await;
    assert_eq!(
        failure(&report, "rate_limited"),
        (FailureKind::Retryable, "429 from the model".into())
    );
    assert_eq!(
        failure(&report, "refused"),
        (FailureKind::Denied, "policy says no".into())
    );
    let (kind, message) = failure(&report, "bad_input");
    assert_eq!(kind, FailureKind::InvalidInput);
    assert!(message.contains("levitate"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_see_no_files_and_no_environment() {
    let runner = Runner::new(Expressions::new()).unwrap();
    let report = run(
        &runner,
        "name: escape\ntasks:\n  - id: peek\n    uses: GUEST\n    with: { mode: escape }\n",
    )
    .await;
    let peek = task(&report, "peek");
    assert_eq!(peek.status, TaskStatus::Succeeded, "{peek:?}");
    let seen = peek.output.as_ref().unwrap();
    assert!(
        seen["file"].as_str().unwrap().starts_with("denied"),
        "{seen}"
    );
    assert_eq!(seen["env"], serde_json::json!([]), "{seen}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrency_limit_is_respected_and_fanout_completes() {
    let runner = Runner::new(Expressions::new()).unwrap();
    let mut yaml = String::from("name: fan\nconcurrency: 3\ntasks:\n");
    for i in 0..40 {
        yaml.push_str(&format!(
            "  - id: t{i}\n    uses: GUEST\n    with: {{ value: {i} }}\n"
        ));
    }
    yaml.push_str("  - id: join\n    uses: transform\n    needs: [");
    yaml.push_str(
        &(0..40)
            .map(|i| format!("t{i}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    yaml.push_str("]\n    with:\n      a: ${{ tasks.t0.output }}\n      b: ${{ tasks.t39.output }}\n      script: a + b\n");
    yaml.push_str("outputs:\n  sum: ${{ tasks.join.output }}\n");

    let in_flight = std::sync::atomic::AtomicUsize::new(0);
    let most = std::sync::atomic::AtomicUsize::new(0);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("flow.yaml");
    std::fs::write(&file, yaml.replace("GUEST", GUEST)).unwrap();
    let workflow = service::load(&file, &Expressions::new()).unwrap();
    let observe = |event: runtime::scheduler::Event<'_>| {
        use std::sync::atomic::Ordering::SeqCst;
        match event {
            runtime::scheduler::Event::Started { .. } => {
                let now = in_flight.fetch_add(1, SeqCst) + 1;
                most.fetch_max(now, SeqCst);
            }
            runtime::scheduler::Event::Finished(r)
                if r.metering.duration > std::time::Duration::ZERO =>
            {
                in_flight.fetch_sub(1, SeqCst);
            }
            runtime::scheduler::Event::Finished(_) => {}
        }
    };
    let report = runner
        .run(&workflow, IndexMap::new(), None, &observe)
        .await
        .unwrap();
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    assert_eq!(report.outputs["sum"], 39);
    assert_eq!(most.load(std::sync::atomic::Ordering::SeqCst), 3);
}
