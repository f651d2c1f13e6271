//! The durability rules, one by one (the order of commits is in
//! `commit_order.rs`): a store that fails mid-run stops the run with a
//! clear error and leaves a consistent file that resumes; bad execution ids
//! and damaged or newer files are refused without being touched; waits
//! survive a kill; resumes refuse plugins that changed.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

mod common;

use std::io;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Host, cli, root, spawn_run};
use orchestrator_engine::expr::Expressions;
use orchestrator_engine::scheduler::RunStatus;
use orchestrator_engine::service::{self, Execution};
use orchestrator_engine::store::executions::redb::RedbExecutions;
use orchestrator_engine::store::executions::{
    EventKind, ExecutionRecord, ExecutionStatus, Executions, now_ms,
};
use serde_json::{Value, json};

const GUEST: &str = env!("TEST_GUEST_WASM");

/// A file backend that fails every write and sync once `writes_left` runs
/// out, like a disk that fills up or goes away mid-run.
#[derive(Debug)]
struct FailingDisk {
    inner: redb::backends::FileBackend,
    writes_left: Arc<AtomicU64>,
}

impl FailingDisk {
    fn check(&self) -> io::Result<()> {
        let left = self.writes_left.load(Ordering::SeqCst);
        if left == 0 {
            return Err(io::Error::other("injected disk fault"));
        }
        self.writes_left.store(left - 1, Ordering::SeqCst);
        Ok(())
    }
}

impl redb::StorageBackend for FailingDisk {
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.check()?;
        self.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.check()?;
        self.inner.write(offset, data)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_disk_stops_the_run_cleanly_and_the_file_resumes() {
    let seed: u64 = std::env::var("FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(now_ms);
    eprintln!("fault injection: FAULT_SEED={seed}");
    let host = Host::new();
    host.install(GUEST, "guest", Default::default()).await;
    let mut yaml = String::from("name: faulty\ntasks:\n");
    for i in 0..40 {
        let needs = if i == 0 {
            String::new()
        } else {
            format!(", needs: [t{}]", i - 1)
        };
        yaml.push_str(&format!(
            "  - {{ id: t{i}, uses: guest, with: {{ mode: sleep, ms: 3 }}{needs} }}\n"
        ));
    }
    // Tasks of 3 ms: a strict chain's dependents no longer wait for its
    // commits, so tasks this long keep the commits many (one state or two
    // each) and the disk's budget runs out before the chain's end.
    let file = host.path("faulty.yaml");
    std::fs::write(&file, yaml).unwrap();
    let executions = Executions::beside(&host.path("store.redb"));
    let files = RedbExecutions::for_tenant(&host.path("store.redb"), &Default::default());

    for trial in 0..5u64 {
        let workflow =
            service::load(&file, &Expressions::new(), &host.store, &Default::default()).unwrap();
        let id = format!("fault-{seed}-{trial}");
        let record = ExecutionRecord {
            id: id.clone(),
            tenant: "default".into(),
            workflow: workflow.plan.name.clone(),
            file: workflow.file.clone(),
            source: workflow.source.clone(),
            inputs: json!({}),
            durability: workflow.plan.durability,
            tasks: workflow.plan.tasks.iter().map(|t| t.id.clone()).collect(),
            plugins: workflow.plugin_digests().unwrap(),
            status: ExecutionStatus::Running,
            created_at: now_ms(),
            finished_at: None,
            error: None,
            outputs: Default::default(),
            consumed: None,
            parent: None,
        };
        std::fs::create_dir_all(files.dir()).unwrap();
        let handle = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(files.path(&id))
            .unwrap();
        // The file is created on a healthy disk; then a seeded number of
        // writes (from none to a few commits' worth) succeed before faults.
        let writes_left = Arc::new(AtomicU64::new(u64::MAX));
        let disk = FailingDisk {
            inner: redb::backends::FileBackend::new(handle).unwrap(),
            writes_left: Arc::clone(&writes_left),
        };
        let log = files.create_on(&record, disk).unwrap();
        let budget = (seed.wrapping_mul(6364136223846793005).wrapping_add(trial) >> 33) % 40;
        writes_left.store(budget, Ordering::SeqCst);
        let executor = host.runner.prepare(&workflow, &host.store).unwrap();
        let execution = Execution {
            id: id.clone(),
            tenant: Default::default(),
            log: Arc::new(log),
            cancel: Arc::default(),
            inputs: json!({}),
            done: Vec::new(),
            retries: Vec::new(),
            overrides: Default::default(),
            created_at: record.created_at,
        };
        let result = host
            .runner
            .drive(&workflow, executor, execution, None, &|_| {})
            .await;
        let error = result
            .expect_err("the disk fails before 40 commits")
            .to_string();
        assert!(
            error.contains("injected disk fault"),
            "trial {trial} (budget {budget}): {error}"
        );

        // Reopened normally: readable, and every task state has its event.
        let log = executions.open(&id).unwrap();
        let record = log.record().unwrap();
        assert_eq!(record.status, ExecutionStatus::Running);
        let tasks = log.tasks().unwrap();
        let finished: Vec<String> = log
            .events()
            .unwrap()
            .into_iter()
            .filter_map(|e| match e.kind {
                EventKind::TaskFinished { task, .. } => Some(task),
                _ => None,
            })
            .collect();
        let mut ids: Vec<String> = tasks.iter().map(|t| t.id.clone()).collect();
        ids.sort();
        let mut events = finished.clone();
        events.sort();
        assert_eq!(ids, events, "trial {trial}: states and events agree");
        // A strict chain commits in order: the committed tasks are a prefix.
        for (i, task) in finished.iter().enumerate() {
            assert_eq!(task, &format!("t{i}"));
        }
        drop(log);

        let (execution, workflow) =
            service::reopen_execution(&executions, &id, &Expressions::new(), &host.store).unwrap();
        assert_eq!(execution.done.len(), finished.len());
        let executor = host.runner.prepare(&workflow, &host.store).unwrap();
        let report = host
            .runner
            .drive(&workflow, executor, execution, None, &|_| {})
            .await
            .unwrap();
        assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
        assert_eq!(report.tasks.len(), 40);
    }
}

fn runtime(dir: &Path, args: &[&str]) -> Output {
    cli(dir).args(args).output().unwrap()
}

fn refused(output: &Output) -> String {
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn bad_ids_and_damaged_files_are_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let flow = dir.join("one.yaml");
    std::fs::write(
        &flow,
        "name: one\ntasks:\n  - { id: t, uses: transform, with: { script: '1 + 1' } }\n",
    )
    .unwrap();
    let run = runtime(dir, &["run", flow.to_str().unwrap()]);
    assert!(run.status.success(), "{run:?}");

    for verb in ["status", "resume", "cancel"] {
        let error = refused(&runtime(dir, &[verb, "no-such-id"]));
        assert!(
            error.contains("no execution `no-such-id`"),
            "{verb}: {error}"
        );
    }
    let error = refused(&runtime(dir, &["status", "../../etc/passwd"]));
    assert!(error.contains("no execution"), "{error}");

    // A finished execution is not resumed or cancelled again.
    let list: Value = serde_json::from_slice(&runtime(dir, &["list", "--json"]).stdout).unwrap();
    let id = list["executions"][0]["id"].as_str().unwrap().to_owned();
    assert!(refused(&runtime(dir, &["resume", &id])).contains("already finished"));
    assert!(refused(&runtime(dir, &["cancel", &id])).contains("already finished"));

    // A damaged execution file.
    let executions = dir.join("executions");
    let junk = executions.join("18eb000000000000-1.redb");
    std::fs::write(&junk, b"not a database at all").unwrap();
    let error = refused(&runtime(dir, &["status", "18eb000000000000-1"]));
    assert!(
        error.contains("not an execution file this runtime wrote"),
        "{error}"
    );
    assert!(
        std::fs::read(&junk).unwrap() == b"not a database at all",
        "junk untouched"
    );

    // An execution file from a newer release.
    let newer = executions.join(format!("{id}.redb"));
    {
        let db = redb::Database::open(&newer).unwrap();
        let w = db.begin_write().unwrap();
        w.open_table(redb::TableDefinition::<&str, &str>::new("meta"))
            .unwrap()
            .insert("format_version", "99")
            .unwrap();
        w.commit().unwrap();
    }
    let before = std::fs::read(&newer).unwrap();
    let error = refused(&runtime(dir, &["status", &id]));
    assert!(error.contains("format version 99"), "{error}");
    assert!(error.contains("use a newer runtime"), "{error}");
    assert!(
        std::fs::read(&newer).unwrap() == before,
        "newer file untouched"
    );

    // A store file that is not a store.
    let foreign = dir.join("foreign.redb");
    std::fs::write(&foreign, b"GIF89a definitely an image").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_runtime"))
        .args(["--store", foreign.to_str().unwrap(), "plugins", "list"])
        .env(
            "ORCHESTRATOR_CONFIG",
            root().join("tests/fixtures/no-config.yaml"),
        )
        .output()
        .unwrap();
    let error = refused(&output);
    assert!(
        error.contains("it is not a store this runtime wrote"),
        "{error}"
    );
    assert!(
        std::fs::read(&foreign).unwrap() == b"GIF89a definitely an image",
        "foreign untouched"
    );
}

#[test]
fn status_shows_the_whole_log_and_cancel_stops_a_busy_task_promptly() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let installed = runtime(dir, &["install", GUEST]);
    assert!(installed.status.success(), "{installed:?}");
    let flow = dir.join("busy.yaml");
    std::fs::write(
        &flow,
        "name: busy\ntasks:\n  - { id: warm, uses: test-guest, with: { value: 1 } }\n  - { id: spin, uses: test-guest, needs: [warm], with: { mode: loop }, limits: { fuel: 1000000000000000, deadline: 120s } }\n",
    )
    .unwrap();
    let (mut child, id) = spawn_run(dir, &flow);
    // Wait until `spin` runs, as another process sees it.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = runtime(dir, &["status", &id, "--json"]);
        let view: Value = serde_json::from_slice(&status.stdout).unwrap_or(Value::Null);
        if view["status"] == "running" && view["tasks"].as_array().is_some_and(|t| t.len() == 1) {
            break;
        }
        assert!(Instant::now() < deadline, "spin never started: {view}");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(200));
    let asked = Instant::now();
    let cancel = runtime(dir, &["cancel", &id]);
    assert!(cancel.status.success(), "{cancel:?}");
    let exit = child.wait().unwrap();
    let stopped = asked.elapsed();
    assert_eq!(exit.code(), Some(1));
    // The cancel command includes starting a process; the interrupt itself
    // is one epoch tick (10 ms).
    assert!(stopped < Duration::from_secs(5), "took {stopped:?}");

    // From the owner receiving the cancel to the run recorded as ended.
    let view: Value =
        serde_json::from_slice(&runtime(dir, &["status", &id, "--json"]).stdout).unwrap();
    let at = |name: &str| {
        view["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["event"] == name)
            .and_then(|e| e["at"].as_u64())
            .unwrap_or_else(|| panic!("no {name} event: {view}"))
    };
    let interrupt_ms = at("execution_finished") - at("cancel_requested");
    eprintln!("cancel to recorded end: {interrupt_ms} ms");
    assert!(interrupt_ms < 500, "{interrupt_ms} ms");

    let status = runtime(dir, &["status", &id, "--events"]);
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("cancelled"), "{text}");
    for event in [
        "execution_started",
        "attempt_started",
        "task_finished",
        "execution_finished",
    ] {
        assert!(text.contains(event), "{event} missing:\n{text}");
    }
    let view: Value =
        serde_json::from_slice(&runtime(dir, &["status", &id, "--json"]).stdout).unwrap();
    assert_eq!(view["record"]["status"], "cancelled");
    let tasks: Vec<&str> = view["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(tasks, ["warm"], "the interrupted attempt is not a result");
}

#[test]
fn a_wait_survives_kill_9_and_completes_after_a_signal() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let flow = dir.join("approve.yaml");
    std::fs::write(
        &flow,
        r#"
name: approval
tasks:
  - { id: draft, uses: transform, with: { script: '"a draft"' } }
  - { id: approve, needs: [draft], wait: { signal: approve, timeout: 1h } }
  - id: publish
    uses: transform
    needs: [approve]
    with: { draft: "${{ tasks.draft.output }}", verdict: "${{ tasks.approve.output }}", script: 'draft + " approved by " + verdict.by' }
outputs:
  published: ${{ tasks.publish.output }}
"#,
    )
    .unwrap();
    let id = interrupt_at_wait(dir, &flow);

    let list =
        String::from_utf8(runtime(dir, &["list", "--status", "interrupted"]).stdout).unwrap();
    assert!(list.contains(&id), "{list}");
    let signal = runtime(
        dir,
        &["signal", &id, "approve", "--payload", r#"{"by": "ada"}"#],
    );
    assert!(signal.status.success(), "{signal:?}");
    let resumed = runtime(dir, &["resume", "--all"]);
    assert!(resumed.status.success(), "{resumed:?}");
    let out: Value = serde_json::from_slice(&resumed.stdout).unwrap();
    assert_eq!(out["published"], "a draft approved by ada");
    let again = runtime(dir, &["resume", "--all"]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("no interrupted executions"));
    let view: Value =
        serde_json::from_slice(&runtime(dir, &["status", &id, "--json"]).stdout).unwrap();
    let events: Vec<&str> = view["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    let waits = events.iter().filter(|e| **e == "wait_started").count();
    assert_eq!(
        waits, 1,
        "the resumed wait kept its recorded deadline: {events:?}"
    );
    assert!(events.contains(&"signal_received") && events.contains(&"execution_resumed"));

    // Ownership moved by lease: the killed run held epoch 1 (its lease had
    // not run out: the file lock told the next process it was gone), the
    // signal took epoch 2, the resume 3, and this open takes 4.
    let executions = Executions::beside(&dir.join("store.redb"));
    let log = executions.open(&id).unwrap();
    assert_eq!(log.lease().unwrap().epoch, 4);
}

#[test]
fn a_live_run_takes_signals_and_timeouts_fall_back_to_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let flow = dir.join("waits.yaml");
    std::fs::write(
        &flow,
        r#"
name: waits
tasks:
  - { id: start, wait: { signal: start } }
  - { id: quiet, wait: { signal: never, timeout: 100ms, default: "fallback" } }
outputs:
  start: ${{ tasks.start.output }}
  quiet: ${{ tasks.quiet.output }}
"#,
    )
    .unwrap();
    let (child, id) = spawn_run(dir, &flow);
    std::thread::sleep(Duration::from_millis(300));
    let signal = runtime(dir, &["signal", &id, "start", "--payload", "42"]);
    assert!(signal.status.success(), "{signal:?}");
    assert!(String::from_utf8_lossy(&signal.stdout).contains("delivered"));
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let out: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(out, json!({"start": 42, "quiet": "fallback"}));

    let strict = dir.join("strict.yaml");
    std::fs::write(
        &strict,
        "name: strict\ntasks:\n  - { id: w, wait: { signal: never, timeout: 50ms } }\n",
    )
    .unwrap();
    let failed = runtime(dir, &["run", strict.to_str().unwrap()]);
    assert_eq!(failed.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        stderr.contains("no signal `never` arrived before the wait's timeout"),
        "{stderr}"
    );
}

#[test]
fn gc_removes_finished_executions_older_than_asked() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let flow = dir.join("one.yaml");
    std::fs::write(
        &flow,
        "name: one\ntasks:\n  - { id: t, uses: transform, with: { script: '1' } }\n",
    )
    .unwrap();
    for _ in 0..2 {
        assert!(
            runtime(dir, &["run", flow.to_str().unwrap()])
                .status
                .success()
        );
    }
    let kept = runtime(dir, &["gc", "--older-than", "1h"]);
    assert!(
        String::from_utf8_lossy(&kept.stdout).contains("removed 0"),
        "{kept:?}"
    );
    std::thread::sleep(Duration::from_millis(20));
    let removed = runtime(dir, &["gc", "--older-than", "10ms"]);
    assert!(
        String::from_utf8_lossy(&removed.stdout).contains("removed 2"),
        "{removed:?}"
    );
    let list = runtime(dir, &["list"]);
    assert!(String::from_utf8_lossy(&list.stdout).contains("no executions"));
}

#[test]
fn list_pages_newest_first_and_filters_by_workflow_and_state() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let mut ids = Vec::new();
    for (name, script) in [
        ("one", "1"),
        ("two", "2"),
        ("one", "throw \"no\""),
        ("one", "4"),
    ] {
        let flow = dir.join(format!("{name}.yaml"));
        std::fs::write(
            &flow,
            format!("name: {name}\ntasks:\n  - {{ id: t, uses: transform, with: {{ script: '{script}' }} }}\n"),
        )
        .unwrap();
        let run = runtime(dir, &["run", flow.to_str().unwrap()]);
        let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
        ids.push(
            stderr
                .lines()
                .next()
                .unwrap()
                .split_whitespace()
                .last()
                .unwrap()
                .to_owned(),
        );
        // Distinct start times, so the order is the order of the runs.
        std::thread::sleep(Duration::from_millis(5));
    }
    let page = |args: &[&str]| -> Value {
        let mut all = vec!["list", "--json"];
        all.extend_from_slice(args);
        serde_json::from_slice(&runtime(dir, &all).stdout).unwrap()
    };
    let listed = |page: &Value| -> Vec<String> {
        page["executions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let first = page(&["--limit", "3"]);
    assert_eq!(
        listed(&first),
        vec![ids[3].clone(), ids[2].clone(), ids[1].clone()]
    );
    let cursor = first["next"].as_str().expect("a next page").to_owned();
    let second = page(&["--limit", "3", "--after", &cursor]);
    assert_eq!(listed(&second), vec![ids[0].clone()]);
    assert!(second["next"].is_null());
    let ones = page(&["--workflow", "one"]);
    assert_eq!(
        listed(&ones),
        vec![ids[3].clone(), ids[2].clone(), ids[0].clone()]
    );
    let failed = page(&["--status", "failed"]);
    assert_eq!(listed(&failed), vec![ids[2].clone()]);
    let text =
        String::from_utf8_lossy(&runtime(dir, &["list", "--limit", "1"]).stdout).into_owned();
    assert!(text.contains("more: runtime list --after "), "{text}");
    assert!(refused(&runtime(dir, &["list", "--after", "nonsense"])).contains("not a cursor"));
    assert!(refused(&runtime(dir, &["list", "--status", "sleeping"])).contains("not a state"));
}

/// Kills a run of `flow` (in `dir`) once its wait started, leaving it
/// interrupted; returns its execution id.
fn interrupt_at_wait(dir: &Path, flow: &Path) -> String {
    let (mut child, id) = spawn_run(dir, flow);
    common::wait_for_event(dir, &id, "wait_started");
    child.kill().unwrap();
    child.wait().unwrap();
    id
}

#[test]
fn a_resume_refuses_a_plugin_that_changed_under_a_task_its_fallback_or_a_policy() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    // Another component to install under the same name, newer.
    let (_, transform) = orchestrator_engine::plugin::builtins()
        .find(|(name, _)| *name == "transform")
        .unwrap();
    let other = dir.join("other.wasm");
    std::fs::write(&other, transform).unwrap();
    let guest = env!("TEST_GUEST_WASM");
    for (slot, first, policies) in [
        (
            "task `first`",
            // `script` too, so the newer `guest` (transform) takes the same input.
            "{ id: first, uses: guest, with: { mode: echo, script: '1' } }",
            "",
        ),
        (
            "task `first#fallback`",
            "{ id: first, uses: transform, with: { script: '1' }, fallback: { uses: guest } }",
            "",
        ),
        (
            "policy `#policy-before-0`",
            "{ id: first, uses: transform, with: { script: '1' } }",
            "policies:\n  before: [{ uses: guest }]\n",
        ),
    ] {
        let store = tempfile::tempdir_in(dir).unwrap();
        let store = store.path();
        let installed = runtime(
            store,
            &["install", guest, "--name", "guest", "--version", "1.0.0"],
        );
        assert!(installed.status.success(), "{installed:?}");
        let flow = store.join("flow.yaml");
        std::fs::write(
            &flow,
            format!(
                "name: changing\ntasks:\n  - {first}\n  - {{ id: approve, wait: {{ signal: go, timeout: 1h }} }}\n{policies}"
            ),
        )
        .unwrap();
        let id = interrupt_at_wait(store, &flow);
        let other = other.to_str().unwrap();
        let installed = runtime(
            store,
            &["install", other, "--name", "guest", "--version", "2.0.0"],
        );
        assert!(installed.status.success(), "{installed:?}");
        let resumed = runtime(store, &["resume", &id]);
        assert!(!resumed.status.success(), "{resumed:?}");
        let stderr = String::from_utf8_lossy(&resumed.stderr);
        assert!(
            stderr.contains(&format!("{slot} started with plugin"))
                && stderr.contains("which `guest` no longer resolves to"),
            "{slot}: {stderr}"
        );
    }
}
