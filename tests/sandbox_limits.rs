//! Limits and contract: a deadline stops a loop with fuel to spare, plugin
//! errors keep their kind, a plugin named by path sees nothing, and the
//! concurrency limit holds. (Hostile plugins: `hostile_plugins.rs`.)

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

mod common;

use indexmap::IndexMap;
use orchestrator_engine::expr::Expressions;
use orchestrator_engine::service;

use common::{Host, failure, task};
use orchestrator_engine::scheduler::{FailureKind, RunStatus, TaskStatus};

const GUEST: &str = env!("TEST_GUEST_WASM");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deadline_stops_a_busy_loop_that_has_fuel_to_spare() {
    let report = Host::new()
        .run(&"name: busy\ntasks:\n  - id: spin\n    uses: GUEST\n    with: { mode: loop }\n    limits: { fuel: 1000000000000000, deadline: 100ms }\n".replace("GUEST", GUEST))
        .await;
    let (kind, message) = failure(&report, "spin");
    assert_eq!(kind, FailureKind::Deadline, "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_errors_keep_their_kind() {
    let report = Host::new()
        .run(
            &r#"
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
"#
            .replace("GUEST", GUEST),
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
    let report = Host::new()
        .run(
            &"name: escape\ntasks:\n  - id: peek\n    uses: GUEST\n    with: { mode: escape }\n"
                .replace("GUEST", GUEST),
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
    let host = Host::with_builtins().await;
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
    let file = host.path("flow.yaml");
    std::fs::write(&file, yaml.replace("GUEST", GUEST)).unwrap();
    let workflow =
        service::load(&file, &Expressions::new(), &host.store, &Default::default()).unwrap();
    let observe = |event: orchestrator_engine::scheduler::Event<'_>| {
        use std::sync::atomic::Ordering::SeqCst;
        match event {
            orchestrator_engine::scheduler::Event::Started { .. } => {
                let now = in_flight.fetch_add(1, SeqCst) + 1;
                most.fetch_max(now, SeqCst);
            }
            orchestrator_engine::scheduler::Event::Finished(r)
                if r.metering.duration > std::time::Duration::ZERO =>
            {
                in_flight.fetch_sub(1, SeqCst);
            }
            orchestrator_engine::scheduler::Event::Finished(_) => {}
        }
    };
    let report = host
        .runner
        .run(&workflow, &host.store, IndexMap::new(), None, &observe)
        .await
        .unwrap();
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    assert_eq!(report.outputs["sum"], 39);
    assert_eq!(most.load(std::sync::atomic::Ordering::SeqCst), 3);
}

/// The per-user artifact cache: a second sandbox loads what the first compiled, and a damaged artifact is recompiled and replaced.
#[test]
fn a_second_sandbox_loads_what_the_first_compiled_and_recompiles_damage() {
    use orchestrator_engine::sandbox::Sandbox;
    use orchestrator_engine::sandbox::artifacts::ArtifactCache;
    use orchestrator_engine::sandbox::capacity::CapacityLimits;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let cache = ArtifactCache::at(dir.path().join("cache"));
    let bytes = std::fs::read(GUEST).expect("the guest was built");
    let first = Sandbox::with_options(CapacityLimits::default(), Some(cache.clone()))
        .expect("the engine starts");
    let compiled = first.compile("guest", &bytes).expect("it compiles");
    let engine = first.engine_hash().to_owned();
    let kept = cache
        .get(&engine, compiled.digest())
        .expect("the artifact is kept");
    assert!(std::fs::read(&kept.file).unwrap().len() > 1000);
    let second = Sandbox::with_options(CapacityLimits::default(), Some(cache.clone()))
        .expect("the engine starts");
    assert!(
        second.load_cached("guest", compiled.digest()).is_some(),
        "a second sandbox maps what the first compiled"
    );

    cache.put(&engine, compiled.digest(), b"damaged", &kept.seal);
    let third = Sandbox::with_options(CapacityLimits::default(), Some(cache.clone()))
        .expect("the engine starts");
    assert!(
        third.load_cached("guest", compiled.digest()).is_none(),
        "an artifact whose seal does not verify is not loaded"
    );
    let again = third.compile("guest", &bytes).expect("it compiles again");
    assert_eq!(again.digest(), compiled.digest());
    let replaced = cache.get(&engine, compiled.digest()).expect("kept again");
    assert_ne!(
        std::fs::read(&replaced.file).unwrap(),
        b"damaged",
        "the damaged artifact was replaced"
    );
}
