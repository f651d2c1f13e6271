//! Circuit breakers: a plugin's breaker opens after failures, fails fast
//! with `breaker-open` (which retries and fallbacks see), half-opens,
//! closes, and stays open across processes; a host breaker counts what a
//! host answers (5xx, 429, unreachable) and refuses requests to it alone.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

mod common;

use common::{
    TestServer, assert_ok, cli, events, install_marking_guest, run_cli, status_json, task_json,
};

#[test]
fn a_breaker_opens_fails_fast_half_opens_and_closes() {
    let dir = tempfile::tempdir().unwrap();
    install_marking_guest(dir.path());
    // Three failures open the breaker; the next call fails fast; after
    // `open_for` (the wait), a probe goes through and closes it.
    let yaml = r#"name: breaker
breaker: { failures: 3, window: 1m, open_for: 300ms }
tasks:
  - { id: f1, uses: test-guest, with: { mode: fail, kind: fatal, message: down }, continue_on_error: true }
  - { id: f2, uses: test-guest, needs: [f1], with: { mode: fail, kind: fatal, message: down }, continue_on_error: true }
  - { id: f3, uses: test-guest, needs: [f2], with: { mode: fail, kind: fatal, message: down }, continue_on_error: true }
  - id: blocked
    uses: test-guest
    needs: [f3]
    with: { value: never runs }
    fallback: { uses: transform, with: { script: '"from the fallback"' } }
  - id: pause
    needs: [blocked]
    wait: { signal: never, timeout: 400ms, default: 0 }
  - { id: probe, uses: test-guest, needs: [pause], with: { value: probed } }
  - { id: after, uses: test-guest, needs: [probe], with: { value: closed again } }
"#;
    let (id, out) = run_cli(dir.path(), yaml);
    assert_ok(&out);
    let view = status_json(dir.path(), &id);
    let failed = events(&view, "attempt_failed", "blocked");
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0]["kind"], "breaker-open");
    let message = failed[0]["error"].as_str().unwrap();
    assert!(
        message.contains("circuit breaker of plugin `test-guest` is open"),
        "{message}"
    );
    assert!(message.contains("3 failures within 1m"), "{message}");
    let task = |id: &str| task_json(&view, id);
    assert_eq!(
        task("blocked")["output"],
        "from the fallback",
        "the fallback saw breaker-open"
    );
    assert_eq!(task("probe")["output"], "probed");
    assert_eq!(task("after")["output"], "closed again");
    let out = cli(dir.path()).args(["breakers"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("closed") && text.contains("test-guest@0.1.0"),
        "{text}"
    );
}

#[test]
fn an_open_breaker_survives_the_process() {
    let dir = tempfile::tempdir().unwrap();
    install_marking_guest(dir.path());
    let trip = r#"name: trip
breaker: { failures: 2, open_for: 1h }
tasks:
  - { id: a, uses: test-guest, with: { mode: fail, kind: retryable, message: down } }
  - { id: b, uses: test-guest, with: { mode: fail, kind: retryable, message: down } }
"#;
    let (_, out) = run_cli(dir.path(), trip);
    assert_eq!(out.status.code(), Some(1));
    let out = cli(dir.path()).args(["breakers"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("open"), "{text}");
    assert!(text.contains("2 failures within 1m"), "{text}");

    // A new process, another workflow, the same plugin: it fails fast, and
    // its retries see `breaker-open` too.
    let later = r#"name: later
breaker: {}
tasks:
  - id: c
    uses: test-guest
    with: { value: fine }
    retry: { max_attempts: 2, initial_interval: 10ms }
"#;
    let (id, out) = run_cli(dir.path(), later);
    assert_eq!(out.status.code(), Some(1));
    let view = status_json(dir.path(), &id);
    let kinds: Vec<&str> = events(&view, "attempt_failed", "c")
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["breaker-open", "breaker-open"]);
    assert_eq!(view["tasks"][0]["fuel"], 0, "no attempt reached the plugin");
}

#[test]
fn a_host_breaker_opens_on_server_errors_and_spares_other_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let flaky = TestServer::start(|path| match path {
        "/busy" => (503, Vec::new(), b"overloaded".to_vec()),
        _ => (200, Vec::new(), b"fine".to_vec()),
    });
    let other = TestServer::start(|_| (200, Vec::new(), b"other".to_vec()));
    let out = cli(dir.path())
        .args([
            "install",
            env!("TEST_GUEST_WASM"),
            "--allow-http",
            "127.0.0.1",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // Two 503s open the breaker of that host (the plugin itself succeeds:
    // it returns the status). The next request to the host is refused
    // before it is sent, even for a path that would answer; another host
    // is not affected, and the plugin has no breaker of its own.
    let yaml = format!(
        r#"name: hosts
breaker: {{ scope: hosts, failures: 2, open_for: 1h }}
tasks:
  - {{ id: a, uses: test-guest, with: {{ mode: http, url: "{busy}" }} }}
  - {{ id: b, uses: test-guest, needs: [a], with: {{ mode: http, url: "{busy}" }} }}
  - id: c
    uses: test-guest
    needs: [b]
    with: {{ mode: http, url: "{fine}" }}
    retry: {{ max_attempts: 2, initial_interval: 10ms }}
    continue_on_error: true
  - {{ id: d, uses: test-guest, needs: [c], with: {{ mode: http, url: "{elsewhere}" }} }}
"#,
        busy = flaky.url("/busy"),
        fine = flaky.url("/fine"),
        elsewhere = other.url("/"),
    );
    let (id, out) = run_cli(dir.path(), &yaml);
    assert_ok(&out);
    let paths: Vec<String> = flaky.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths, ["/busy", "/busy"], "c's requests were never sent");
    assert_eq!(other.requests().len(), 1);

    let view = status_json(dir.path(), &id);
    let failed = events(&view, "attempt_failed", "c");
    assert_eq!(failed.len(), 2, "the retry saw the open breaker too");
    let host = flaky.addr.to_string();
    for event in &failed {
        assert_eq!(event["kind"], "breaker-open");
        let message = event["error"].as_str().unwrap();
        assert!(
            message.contains(&format!("circuit breaker of host `{host}` is open")),
            "{message}"
        );
        assert!(message.contains("2 failures within 1m"), "{message}");
    }
    let task = |id: &str| task_json(&view, id);
    assert_eq!(task("a")["output"]["status"], 503);
    assert_eq!(task("d")["output"]["body"], "other");

    // The open breaker is kept: another process lists it. Only it: the
    // other host's breaker never left closed, and the plugin has none.
    let out = cli(dir.path()).args(["breakers"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    assert!(
        lines[0].starts_with("open") && lines[0].contains(&format!("host {host}")),
        "{text}"
    );
}
