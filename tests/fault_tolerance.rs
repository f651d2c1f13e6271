//! Failure as part of a workflow: retries with backoff (checked against the
//! recorded attempt times, not the wall clock of the test), non-retryable
//! kinds, `retry_if`, timeouts per task and per workflow, fallbacks,
//! `default:` and `continue_on_error`, a backoff that survives `kill -9`,
//! and the dead-letter queue. Circuit breakers are in `breakers.rs`.
//!
//! Tasks use the test guest's `flaky` mode, which fails in its first `times`
//! attempts by the attempt number the host passes.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

mod common;

use std::time::{Duration, Instant};

use common::{
    Host, assert_ok, cli, events, failure, install_marking_guest, run_cli, spawn_run, status_json,
    task,
};
use orchestrator_engine::scheduler::{FailureKind, RunStatus, TaskStatus};
use serde_json::{Value, json};

const GUEST: &str = env!("TEST_GUEST_WASM");

#[test]
fn retries_back_off_as_recorded_then_succeed() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        r#"name: flaky
tasks:
  - id: fetch
    uses: {GUEST}
    with: {{ mode: flaky, times: 2, kind: retryable, message: rate limited, value: done }}
    retry: {{ max_attempts: 4, initial_interval: 60ms, backoff_coefficient: 2 }}
outputs:
  result: ${{{{ tasks.fetch.output }}}}
"#
    );
    let (id, out) = run_cli(dir.path(), &yaml);
    assert_ok(&out);
    let view = status_json(dir.path(), &id);
    let started = events(&view, "attempt_started", "fetch");
    let failed = events(&view, "attempt_failed", "fetch");
    assert_eq!(started.len(), 3, "two failures, then success");
    assert_eq!(failed.len(), 2);
    let attempts: Vec<u64> = started
        .iter()
        .map(|e| e["attempt"].as_u64().unwrap())
        .collect();
    assert_eq!(attempts, [1, 2, 3]);
    // Each wait is the backoff (60 ms, then 120 ms) from the failure, and
    // the next attempt starts no earlier than the recorded retry time.
    for (n, expected) in [(0usize, 60u64), (1, 120)] {
        let at = failed[n]["at"].as_u64().unwrap();
        let retry_at = failed[n]["retry_at"].as_u64().unwrap();
        let wait = retry_at.saturating_sub(at);
        assert!(
            wait <= expected && wait + 10 >= expected,
            "attempt {} waits {wait} ms, backoff says {expected}",
            n + 1
        );
        assert_eq!(failed[n]["kind"], "retryable");
        assert!(started[n + 1]["at"].as_u64().unwrap() >= retry_at);
    }
    let tasks = view["tasks"].as_array().unwrap();
    assert_eq!(tasks[0]["attempts"], 3);
    assert_eq!(tasks[0]["output"], "done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_retryable_kinds_and_retry_if_stop_retries() {
    let host = Host::new();
    let report = host
        .run(&format!(
            r#"name: stops
tasks:
  - id: bad_input
    uses: {GUEST}
    with: {{ mode: flaky, times: 9, kind: invalid-input, message: no text }}
    retry: {{ max_attempts: 5, initial_interval: 1ms }}
  - id: only_rate_limits
    uses: {GUEST}
    with: {{ mode: flaky, times: 9, kind: retryable, message: server exploded }}
    retry:
      max_attempts: 5
      initial_interval: 1ms
      retry_if: error.message.contains("rate") && attempt < 4
  - id: fatal_made_retryable
    uses: {GUEST}
    with: {{ mode: flaky, times: 1, kind: fatal, message: flaky disk, value: ok }}
    retry: {{ max_attempts: 2, initial_interval: 1ms, non_retryable: [denied] }}
"#
        ))
        .await;
    let bad = task(&report, "bad_input");
    assert_eq!(bad.attempts, 1);
    let (kind, message) = failure(&report, "bad_input");
    assert_eq!(kind, FailureKind::InvalidInput);
    assert!(
        message.contains("`invalid-input` is not retried"),
        "{message}"
    );

    assert_eq!(task(&report, "only_rate_limits").attempts, 1);
    let (_, message) = failure(&report, "only_rate_limits");
    assert!(message.contains("`retry_if`"), "{message}");

    let fixed = task(&report, "fatal_made_retryable");
    assert_eq!(fixed.status, TaskStatus::Succeeded);
    assert_eq!(fixed.attempts, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_default_and_continue_on_error() {
    let host = Host::new();
    let report = host
        .run(&format!(
            r#"name: degrade
tasks:
  - id: with_fallback
    uses: {GUEST}
    with: {{ mode: fail, kind: retryable, message: big model down }}
    retry: {{ max_attempts: 2, initial_interval: 1ms }}
    fallback:
      with: {{ mode: echo, value: small model answer }}
  - id: with_default
    uses: {GUEST}
    with: {{ mode: fail, kind: fatal, message: no answer }}
    default: n/a
  - id: tolerated
    uses: {GUEST}
    with: {{ mode: fail, kind: fatal, message: optional step broke }}
    continue_on_error: true
  - id: after
    uses: {GUEST}
    needs: [with_fallback, with_default, tolerated]
    with:
      value: ${{{{ [tasks.with_fallback.output, tasks.with_default.output, tasks.tolerated.status] }}}}
"#
        ))
        .await;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    let fb = task(&report, "with_fallback");
    assert!(fb.fallback);
    assert_eq!(fb.attempts, 3, "two of its own, one of the fallback");
    let def = task(&report, "with_default");
    assert!(def.degraded);
    assert_eq!(def.status, TaskStatus::Succeeded);
    assert!(def.error.as_ref().unwrap().message.contains("no answer"));
    let tol = task(&report, "tolerated");
    assert_eq!(tol.status, TaskStatus::Failed);
    assert!(tol.tolerated);
    assert_eq!(
        task(&report, "after").output,
        Some(json!(["small model answer", "n/a", "failed"]))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_fallback_fails_the_task_naming_both() {
    let host = Host::new();
    let report = host
        .run(&format!(
            r#"name: both_fail
tasks:
  - id: t
    uses: {GUEST}
    with: {{ mode: fail, kind: fatal, message: primary broke }}
    fallback:
      with: {{ mode: fail, kind: fatal, message: fallback broke too }}
"#
        ))
        .await;
    assert_eq!(report.status, RunStatus::Failed);
    let (_, message) = failure(&report, "t");
    assert!(message.contains("fallback broke too"), "{message}");
    assert!(message.contains("primary broke"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_and_workflow_timeouts_are_distinct_errors() {
    let host = Host::new();
    // Attempts of 150 ms each, retried: the task's timeout cuts the
    // attempts short before max_attempts does.
    let started = Instant::now();
    let report = host
        .run(&format!(
            r#"name: task_timeout
tasks:
  - id: slow
    uses: {GUEST}
    with: {{ mode: sleep, ms: 5000 }}
    limits: {{ deadline: 150ms }}
    retry: {{ max_attempts: 50, initial_interval: 1ms, non_retryable: [] }}
    timeout: 400ms
"#
        ))
        .await;
    let (kind, message) = failure(&report, "slow");
    assert_eq!(kind, FailureKind::TaskTimeout, "{message}");
    assert!(message.contains("timeout"), "{message}");
    let slow = task(&report, "slow");
    assert!(
        (2..=4).contains(&slow.attempts),
        "attempts: {}",
        slow.attempts
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    let started = Instant::now();
    let report = host
        .run(&format!(
            r#"name: workflow_timeout
timeout: 300ms
tasks:
  - id: quick
    uses: {GUEST}
  - id: forever
    uses: {GUEST}
    needs: [quick]
    with: {{ mode: sleep, ms: 0 }}
"#
        ))
        .await;
    assert_eq!(report.status, RunStatus::Failed);
    let error = report.error.unwrap();
    assert!(error.contains("timed out"), "{error}");
    assert!(error.contains("1 of 2 tasks finished"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[test]
fn a_backoff_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("flow.yaml");
    std::fs::write(
        &file,
        format!(
            r#"name: durable_backoff
tasks:
  - id: fetch
    uses: {GUEST}
    with: {{ mode: flaky, times: 1, kind: retryable, message: try later, value: second time lucky }}
    retry: {{ max_attempts: 3, initial_interval: 1500ms }}
"#
        ),
    )
    .unwrap();
    let (mut child, id) = spawn_run(dir.path(), &file);
    // Wait until the failed attempt and its retry are recorded, then kill.
    let deadline = Instant::now() + Duration::from_secs(60);
    let retry_at = loop {
        assert!(Instant::now() < deadline, "the retry was never recorded");
        let out = cli(dir.path())
            .args(["status", &id, "--json"])
            .output()
            .unwrap();
        if let Ok(view) = serde_json::from_slice::<Value>(&out.stdout)
            && let Some(failed) = events(&view, "attempt_failed", "fetch").first()
        {
            break failed["retry_at"].as_u64().unwrap();
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    child.kill().unwrap();
    child.wait().unwrap();

    let out = cli(dir.path()).args(["resume", &id]).output().unwrap();
    assert_ok(&out);
    let view = status_json(dir.path(), &id);
    let started = events(&view, "attempt_started", "fetch");
    let attempts: Vec<u64> = started
        .iter()
        .map(|e| e["attempt"].as_u64().unwrap())
        .collect();
    assert_eq!(attempts, [1, 2], "the resumed run continued the count");
    assert!(
        started[1]["at"].as_u64().unwrap() >= retry_at,
        "the resumed attempt waited for the recorded retry time"
    );
    assert_eq!(view["tasks"][0]["output"], "second time lucky");
    assert_eq!(view["status"], "succeeded");
}

#[test]
fn status_shows_retries_fallbacks_and_degraded_results() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        r#"name: visible
tasks:
  - id: retried
    uses: {GUEST}
    with: {{ mode: flaky, times: 1, kind: retryable, message: rate limited, value: ok }}
    retry: {{ max_attempts: 2, initial_interval: 5ms }}
  - id: fell_back
    uses: {GUEST}
    with: {{ mode: fail, kind: fatal, message: big model down }}
    fallback: {{ with: {{ value: small }} }}
  - id: defaulted
    uses: {GUEST}
    with: {{ mode: fail, kind: fatal, message: no luck }}
    default: 0
"#
    );
    let (id, out) = run_cli(dir.path(), &yaml);
    assert!(out.status.success());
    let out = cli(dir.path()).args(["status", &id]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "attempt 1 failed: retryable: rate limited; retried after 5ms",
        "(2 attempts)",
        "(2 attempts, fallback)",
        "attempt 1 failed: fatal: big model down",
        "DEGRADED  defaulted",
        "output is the task's `default:`; fatal: no luck",
    ] {
        assert!(
            text.contains(expected),
            "`{expected}` missing from:\n{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_retry_and_breaker_settings_are_validation_errors() {
    let host = Host::new();
    let error = host
        .try_run(&format!(
            r#"name: bad
retry: {{ max_attempts: 0 }}
breaker: {{ scope: everywhere, failures: 0 }}
tasks:
  - id: t
    uses: {GUEST}
    retry:
      jitter: 3
      initial_interval: soon
      non_retryable: [flaky]
      retry_if: "error.kind =="
    fallback: {{ uses: no-such-plugin }}
"#
        ))
        .await
        .unwrap_err();
    for expected in [
        "`max_attempts` must be at least 1",
        "`jitter` must be between 0 and 1",
        "`initial_interval`: `soon` is not a duration",
        "unknown error kind `flaky`",
        "`retry_if` does not compile",
        "unknown plugin `no-such-plugin`",
        "`scope: everywhere` is not a breaker scope",
        "`failures` must be at least 1",
    ] {
        assert!(
            error.contains(expected),
            "`{expected}` missing from:\n{error}"
        );
    }
}

#[test]
fn dead_letters_are_listed_shown_replayed_and_purged() {
    let dir = tempfile::tempdir().unwrap();
    let data = install_marking_guest(dir.path());
    // `load` reads a file that does not exist yet: it fails for good (after
    // two attempts) and lands in the dead-letter queue; `report` does not run.
    let yaml = r#"name: dlq
tasks:
  - id: retried
    uses: test-guest
    with: { mode: flaky, times: 1, kind: retryable, message: rate limited, value: ok }
    retry: { max_attempts: 2, initial_interval: 5ms }
  - id: fell_back
    uses: test-guest
    with: { mode: fail, kind: fatal, message: big model down }
    fallback: { with: { value: small } }
  - id: load
    uses: test-guest
    with: { mode: read, path: /data/input.txt }
    retry: { max_attempts: 2, initial_interval: 5ms, non_retryable: [] }
  - id: report
    uses: test-guest
    needs: [load, retried, fell_back]
    with: { value: "${{ tasks.load.output + '/' + tasks.retried.output + '/' + tasks.fell_back.output }}" }
outputs:
  report: ${{ tasks.report.output }}
"#;
    let (id, out) = run_cli(dir.path(), yaml);
    assert_eq!(out.status.code(), Some(1), "the run fails");
    let letter = format!("{id}/load");

    let out = cli(dir.path()).args(["dlq", "list"]).output().unwrap();
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(list.contains(&letter), "{list}");
    assert!(list.contains("2 attempts"), "{list}");

    let out = cli(dir.path())
        .args(["dlq", "show", &letter, "--json"])
        .output()
        .unwrap();
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        shown["letter"]["input"],
        json!({ "mode": "read", "path": "/data/input.txt" })
    );
    assert_eq!(shown["attempts"].as_array().unwrap().len(), 2);

    // Retries, the fallback and the dead letter, all in one status.
    let out = cli(dir.path()).args(["status", &id]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "attempt 1 failed: retryable: rate limited; retried after 5ms",
        "(2 attempts, fallback)",
        "in the dead-letter queue: `runtime dlq show",
        "not run",
    ] {
        assert!(
            text.contains(expected),
            "`{expected}` missing from:\n{text}"
        );
    }

    // The cause is fixed; the replay runs `load` again, then `report`.
    std::fs::write(data.join("input.txt"), "data").unwrap();
    let out = cli(dir.path())
        .args(["dlq", "replay", &letter])
        .output()
        .unwrap();
    assert_ok(&out);
    let view = status_json(dir.path(), &id);
    assert_eq!(view["status"], "succeeded");
    assert_eq!(view["record"]["outputs"]["report"], "data/ok/small");
    let replayed: Vec<&Value> = events(&view, "dead_letter_replayed", "load");
    assert_eq!(replayed.len(), 1);
    let out = cli(dir.path()).args(["dlq", "list"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("no dead letters"));
    let out = cli(dir.path()).args(["status", &id]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("replayed from the dead-letter queue"));
}

#[test]
fn a_replay_can_replace_the_input_and_purge_empties_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        r#"name: dlq_input
tasks:
  - id: broken
    uses: {GUEST}
    with: {{ mode: fail, kind: invalid-input, message: bad prompt }}
  - id: after
    uses: {GUEST}
    needs: [broken]
    with: {{ value: "${{{{ tasks.broken.output }}}}" }}
outputs:
  result: ${{{{ tasks.after.output }}}}
"#
    );
    let (first, _) = run_cli(dir.path(), &yaml);
    let (second, _) = run_cli(dir.path(), &yaml);

    let out = cli(dir.path())
        .args([
            "dlq",
            "replay",
            &format!("{first}/broken"),
            "--input",
            r#"{"mode": "echo", "value": "fixed by hand"}"#,
        ])
        .output()
        .unwrap();
    assert_ok(&out);
    let view = status_json(dir.path(), &first);
    assert_eq!(view["record"]["outputs"]["result"], "fixed by hand");
    assert_eq!(
        events(&view, "dead_letter_replayed", "broken")[0]["input_replaced"],
        true
    );

    let out = cli(dir.path()).args(["dlq", "list"]).output().unwrap();
    let list = String::from_utf8_lossy(&out.stdout);
    assert!(list.contains(&format!("{second}/broken")), "{list}");
    let out = cli(dir.path())
        .args(["dlq", "purge", "--all"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("purged 1 dead letters"));
    let out = cli(dir.path()).args(["dlq", "list"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("no dead letters"));

    // Bad ids are clear errors.
    let out = cli(dir.path())
        .args(["dlq", "show", "nonsense"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("<execution id>/<task id>"));
    let out = cli(dir.path())
        .args(["dlq", "replay", &format!("{second}/broken")])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "a purged letter is not replayed"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("no open dead letter"));
}
