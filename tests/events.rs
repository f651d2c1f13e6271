//! The event stream of an execution: what its plugins emit is recorded in
//! its log with every state change, numbered without gaps, and
//! `runtime status --follow` shows it live from another process, or from
//! any number onwards once it ended.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

mod common;

use std::io::{BufRead as _, BufReader};
use std::process::Stdio;

use common::{cli, spawn_run};
use serde_json::Value;

const GUEST: &str = env!("TEST_GUEST_WASM");

fn follow_lines(dir: &std::path::Path, args: &[&str]) -> Vec<Value> {
    let out = cli(dir).args(args).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn status_follow_streams_a_running_execution_from_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let flow = dir.join("talk.yaml");
    std::fs::write(
        &flow,
        format!(
            "name: talk\ntasks:\n  - {{ id: talk, uses: {GUEST}, with: {{ mode: stream, times: 20, ms: 100 }} }}\n  - {{ id: after, uses: transform, needs: [talk], with: {{ script: '1' }} }}\n"
        ),
    )
    .unwrap();
    let (mut run, id) = spawn_run(dir, &flow);

    let mut follower = cli(dir)
        .args(["status", &id, "--follow", "--json"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = Vec::new();
    let mut live = None;
    for line in BufReader::new(follower.stdout.take().unwrap()).lines() {
        let event: Value = serde_json::from_str(&line.unwrap()).unwrap();
        if live.is_none() && event["event"] == "emitted" {
            // The first streamed piece arrives while the run still streams.
            live = Some(run.try_wait().unwrap().is_none());
        }
        lines.push(event);
    }
    assert!(follower.wait().unwrap().success());
    assert!(run.wait().unwrap().success());
    assert_eq!(
        live,
        Some(true),
        "streamed text reached the follower only after the run"
    );

    let seqs: Vec<u64> = lines.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert_eq!(
        seqs,
        (0..seqs.len() as u64).collect::<Vec<_>>(),
        "numbered from 0 without gaps"
    );
    assert_eq!(lines[0]["event"], "execution_started");
    assert_eq!(lines.last().unwrap()["event"], "execution_finished");
    let text: String = lines
        .iter()
        .filter(|e| e["event"] == "emitted")
        .map(|e| {
            assert_eq!(
                (&e["task"], &e["kind"], &e["attempt"]),
                (&"talk".into(), &"text".into(), &1.into())
            );
            e["data"].as_str().unwrap()
        })
        .collect();
    let expected: String = (0..20).map(|i| format!("tok{i} ")).collect();
    assert_eq!(text, expected, "every piece, in order");
    let position = |what: &str, task: &str| {
        lines
            .iter()
            .position(|e| e["event"] == what && e["task"] == task)
            .unwrap()
    };
    assert!(position("emitted", "talk") < position("task_finished", "talk"));

    // Once it ended, the file answers, from any number onwards.
    let from = follow_lines(dir, &["status", &id, "--follow", "--from", "5", "--json"]);
    assert_eq!(from.first().unwrap()["seq"], 5);
    assert_eq!(from, lines[5..]);

    // People read it as `run` shows a run: tasks and their streamed text.
    let out = cli(dir).args(["status", &id, "--follow"]).output().unwrap();
    let shown = String::from_utf8_lossy(&out.stderr);
    assert!(shown.contains("started  talk"), "{shown}");
    assert!(shown.contains(&expected), "the streamed text: {shown}");
    assert!(shown.contains("ok  talk"), "{shown}");
    assert!(
        shown.contains(&format!("execution {id} succeeded")),
        "{shown}"
    );
    assert!(!shown.contains("emitted"), "no raw events: {shown}");
    // Or event by event.
    let out = cli(dir)
        .args(["status", &id, "--follow", "--events"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("emitted") && text.contains(r#""data":"tok19 ""#),
        "{text}"
    );
}

#[test]
fn what_an_attempt_emits_is_kept_up_to_its_cap() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    // 6 MiB offered; an attempt keeps at most 4 MiB.
    let (id, out) = common::run_cli(
        dir,
        &format!(
            "name: flood\ntasks:\n  - {{ id: flood, uses: {GUEST}, with: {{ mode: emit_flood, times: 6144, size: 1024 }} }}\n"
        ),
    );
    assert!(out.status.success(), "{out:?}");
    let lines = follow_lines(dir, &["status", &id, "--follow", "--json"]);
    let kept: usize = lines
        .iter()
        .filter(|e| e["event"] == "emitted")
        .map(|e| e["data"].as_str().unwrap().len() + "text".len())
        .sum();
    assert!(kept <= 4 << 20, "{kept} bytes kept");
    assert!(kept > 3 << 20, "only {kept} bytes kept");
}

#[test]
fn followers_never_keep_a_signal_or_cancel_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let flow = dir.join("approve.yaml");
    std::fs::write(
        &flow,
        "name: approve\ntasks:\n  - { id: approve, wait: { signal: go, timeout: 1h } }\n",
    )
    .unwrap();
    let (mut run, id) = spawn_run(dir, &flow);
    common::wait_for_event(dir, &id, "wait_started");
    // More followers than the owner serves requests at once.
    let mut followers: Vec<_> = (0..20)
        .map(|_| {
            cli(dir)
                .args(["status", &id, "--follow"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(500));

    let mut signal = cli(dir).args(["signal", &id, "go"]).spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(status) = signal.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            signal.kill().unwrap();
            panic!("the signal waited behind the followers");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(status.success());
    assert!(run.wait().unwrap().success());
    for follower in &mut followers {
        assert!(follower.wait().unwrap().success(), "a follower saw the end");
    }
}
