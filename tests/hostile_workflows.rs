//! Hostile or careless workflow authors, through the real binary: no
//! expression, duration or size crashes or stalls the host, grants cannot
//! be widened to addresses the operator never named, secrets go only over
//! TLS to their own port, and a panic inside the host's own code fails one
//! task, not the process.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

mod common;

use std::fmt::Write as _;
use std::path::Path;
use std::process::Output;
use std::sync::Arc;

use common::{TestServer, assert_ok, cli, status_json, task_json};
use orchestrator_engine::expr::Expressions;
use orchestrator_engine::scheduler::{
    Executor, FailureKind, Metering, RunStatus, Scheduler, TaskFailure, TaskRequest, TaskStatus,
    TaskSuccess,
};
use orchestrator_engine::workflow::{self, PluginCatalog};

const GUEST: &str = env!("TEST_GUEST_WASM");

/// Writes `yaml` to a file and runs `runtime <command> FILE` on it.
fn on_flow(dir: &Path, command: &str, yaml: &str) -> Output {
    let file = dir.join("flow.yaml");
    std::fs::write(&file, yaml).unwrap();
    cli(dir)
        .args([command, file.to_str().unwrap()])
        .output()
        .unwrap()
}

fn run(dir: &Path, yaml: &str) -> Output {
    on_flow(dir, "run", yaml)
}

fn validate(dir: &Path, yaml: &str) -> Output {
    on_flow(dir, "validate", yaml)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The execution id `runtime run` printed first.
fn execution(out: &Output) -> String {
    stderr(out)
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("execution "))
        .unwrap_or_else(|| panic!("no execution id in: {}", stderr(out)))
        .to_owned()
}

/// Exits 1 (the run failed) or 2 (refused): never a panic's 101.
fn assert_exit(out: &Output, code: i32) {
    assert_eq!(out.status.code(), Some(code), "{}", stderr(out));
    assert!(!stderr(out).contains("panicked"), "{}", stderr(out));
}

#[test]
fn expressions_cannot_sleep_block_or_panic_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        dir.path(),
        r#"name: sleepy
tasks:
  - { id: nap, uses: transform, with: { x: "${{ sleep(1e300) }}", script: x } }
  - { id: doze, uses: transform, with: { x: "${{ sleep(3) }}", script: x } }
  - { id: clock, uses: transform, with: { x: "${{ timestamp() }}", script: x } }
  - { id: fine, uses: transform, with: { script: "1 + 1" } }
"#,
    );
    assert_exit(&out, 1);
    let view = status_json(dir.path(), &execution(&out));
    for id in ["nap", "doze", "clock"] {
        let task = task_json(&view, id);
        assert_eq!(task["status"], "failed", "{task}");
        assert_eq!(task["error"]["kind"], "expression", "{task}");
        let message = task["error"]["message"].as_str().unwrap();
        assert!(message.contains("not found"), "{message}");
    }
    assert_eq!(task_json(&view, "fine")["status"], "succeeded");
}

#[test]
fn huge_durations_and_limits_are_validation_errors_with_their_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "name: t\ntimeout: 10000000000000000000s\ntasks:\n  - { id: a, uses: transform, with: { script: '1' } }\n",
            "flow.yaml:2:",
            "365 days",
        ),
        (
            "name: t\ntasks:\n  - id: a\n    uses: transform\n    with: { script: '1' }\n    limits: { deadline: 48h }\n",
            "flow.yaml:6:",
            "longer than one attempt may run",
        ),
        (
            "name: t\ntasks:\n  - id: a\n    uses: transform\n    with: { script: '1' }\n    retry: { max_attempts: 2, max_interval: 99999999999999s }\n",
            "flow.yaml:6:",
            "365 days",
        ),
        (
            "name: t\ntasks:\n  - id: a\n    uses: transform\n    with: { script: '1' }\n    limits: { output: 900GiB }\n",
            "flow.yaml:6:",
            "more than a task may return",
        ),
    ];
    for (yaml, at, says) in cases {
        for out in [validate(dir.path(), yaml), run(dir.path(), yaml)] {
            assert_exit(&out, 2);
            let text = stderr(&out);
            assert!(text.contains(at) && text.contains(says), "{yaml}\n{text}");
        }
    }
}

#[test]
fn the_largest_workflow_validates_and_one_task_more_names_the_task_limit() {
    let dir = tempfile::tempdir().unwrap();
    let tasks = |n: usize| {
        let mut yaml = String::from("name: big\ntasks:\n");
        for i in 0..n {
            let _ = writeln!(
                yaml,
                "  - {{ id: t{i}, uses: transform, with: {{ script: '1' }} }}"
            );
        }
        yaml
    };
    assert_ok(&validate(dir.path(), &tasks(100_000)));
    let out = validate(dir.path(), &tasks(100_001));
    assert_exit(&out, 2);
    assert!(
        stderr(&out).contains("has 100001 tasks; at most 100000 are allowed"),
        "{}",
        stderr(&out)
    );
}

/// Every request gets `200 pong`.
fn pong(_: &str) -> common::Reply {
    (200, Vec::new(), b"pong".to_vec())
}

/// Installs the test guest (which asks for `*`, `127.0.0.1` and
/// `169.254.169.254`) as `name` with `args`.
fn install_guest(dir: &Path, name: &str, args: &[&str]) {
    let out = cli(dir)
        .args(["install", GUEST, "--name", name])
        .args(args)
        .output()
        .unwrap();
    assert_ok(&out);
}

#[test]
fn neither_a_plugin_nor_a_workflow_widens_a_wildcard_grant_to_an_address() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let server = TestServer::start(pong);
    let url = server.url("/ping");
    // The operator grants the public internet: every name, no address.
    install_guest(dir, "guest", &["--allow-http", "*"]);

    // The plugin asked for 127.0.0.1 and 169.254.169.254 in describe();
    // `*` does not grant them.
    let out = run(
        dir,
        &format!(
            "name: asks\ntasks:\n  - {{ id: local, uses: guest, with: {{ mode: http, url: \"{url}\" }} }}\n  - {{ id: metadata, uses: guest, with: {{ mode: http, url: \"http://169.254.169.254/latest/meta-data\" }} }}\n"
        ),
    );
    assert_exit(&out, 1);
    let view = status_json(dir, &execution(&out));
    for id in ["local", "metadata"] {
        let task = task_json(&view, id);
        assert_eq!(task["error"]["kind"], "denied", "{task}");
        let message = task["error"]["message"].as_str().unwrap();
        assert!(message.contains("is not granted"), "{message}");
    }

    // A workflow naming the address is refused before anything runs.
    let narrowed = format!(
        "name: narrows\ngrants: {{ http: [\"127.0.0.1\"] }}\ntasks:\n  - {{ id: local, uses: guest, with: {{ mode: http, url: \"{url}\" }} }}\n"
    );
    let out = run(dir, &narrowed);
    assert_exit(&out, 2);
    assert!(
        stderr(&out).contains("a workflow can only narrow grants"),
        "{}",
        stderr(&out)
    );

    // The built-in `llm`, granted `*` so users may name any provider, is
    // pointed at loopback by a workflow that "narrows" to it.
    assert_ok(
        &cli(dir)
            .args(["plugins", "grant", "llm", "--allow-http", "*"])
            .output()
            .unwrap(),
    );
    let base = server.url("/v1");
    let llm = |grants: &str| {
        format!(
            "name: model\n{grants}tasks:\n  - {{ id: ask, uses: llm, with: {{ base_url: \"{base}\", model: m, prompt: hi }} }}\n"
        )
    };
    let out = run(dir, &llm("grants: { http: [\"127.0.0.1\"] }\n"));
    assert_exit(&out, 2);
    assert!(stderr(&out).contains("a workflow can only narrow grants"));
    let out = run(dir, &llm(""));
    assert_exit(&out, 1);
    let view = status_json(dir, &execution(&out));
    assert_eq!(task_json(&view, "ask")["error"]["kind"], "denied");

    assert!(
        server.requests().is_empty(),
        "nothing reached loopback: {:?}",
        server.requests()
    );

    // The operator naming the address is what grants it.
    install_guest(dir, "local-guest", &["--allow-http", "127.0.0.1"]);
    let out = run(
        dir,
        &format!(
            "name: granted\ntasks:\n  - {{ id: local, uses: local-guest, with: {{ mode: http, url: \"{url}\" }} }}\n"
        ),
    );
    assert_ok(&out);
    assert_eq!(server.requests().len(), 1);

    // An IPv6 literal works the same way: refused under `*`, reached when
    // the operator grants it.
    let v6 = TestServer::start_on("[::1]:0", pong);
    let flow = |plugin: &str| {
        format!(
            "name: v6\ntasks:\n  - {{ id: local, uses: {plugin}, with: {{ mode: http, url: \"{}\" }} }}\n",
            v6.url("/ping")
        )
    };
    assert_exit(&run(dir, &flow("guest")), 1);
    assert!(v6.requests().is_empty());
    install_guest(dir, "v6-guest", &["--allow-http", "[::1]"]);
    assert_ok(&run(dir, &flow("v6-guest")));
    assert_eq!(v6.requests().len(), 1);
}

#[test]
fn a_secret_goes_only_over_tls_to_its_own_port_unless_marked_insecure() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let server = TestServer::start(pong);
    let config = dir.join("config.yaml");
    let write_config = |insecure: bool| {
        std::fs::write(
            &config,
            format!(
                "secrets:\n  api-token:\n    value: s3cret-value\n    hosts: ['{}']\n    insecure_http: {insecure}\n",
                server.addr
            ),
        )
        .unwrap();
    };
    install_guest(
        dir,
        "keyed",
        &["--allow-http", "127.0.0.1", "--allow-secret", "api-token"],
    );
    let flow = dir.join("flow.yaml");
    std::fs::write(
        &flow,
        format!(
            "name: keyed\ntasks:\n  - {{ id: request, uses: keyed, with: {{ mode: http, url: \"{}\" }} }}\n",
            server.url("/v1")
        ),
    )
    .unwrap();
    let run = || {
        cli(dir)
            .env("ORCHESTRATOR_CONFIG", &config)
            .args(["run", flow.to_str().unwrap()])
            .output()
            .unwrap()
    };

    write_config(false);
    let out = run();
    assert_exit(&out, 1);
    let view = status_json(dir, &execution(&out));
    let message = task_json(&view, "request")["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains(&format!("goes only to https://{}", server.addr)),
        "{message}"
    );
    assert!(server.requests().is_empty(), "nothing was sent");

    write_config(true);
    assert_ok(&run());
    let sent = server.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].header("authorization"), Some("s3cret-value"));
}

/// Panics on the task named `boom`; echoes its input otherwise.
struct Faulty;

impl Executor for Faulty {
    async fn execute(&self, request: TaskRequest) -> Result<TaskSuccess, TaskFailure> {
        assert_ne!(request.task_id, "boom", "a bug in the host");
        Ok(TaskSuccess {
            output: serde_json::from_str(&request.input).unwrap(),
            usage: None,
            metering: Metering::default(),
        })
    }
}

struct AnyPlugin;

impl PluginCatalog for AnyPlugin {
    fn check(&self, _: &str) -> Result<(), String> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_in_the_host_fails_its_task_and_the_run_goes_on() {
    let expressions = Expressions::new();
    let scheduler = Scheduler::new(Arc::new(Faulty), expressions.clone());
    // `boom` alone (run inline), then beside `fine` (spawned).
    for yaml in [
        "name: p\ntasks:\n  - { id: boom, uses: x, with: { a: 1 } }\n",
        "name: p\ntasks:\n  - { id: boom, uses: x, with: { a: 1 } }\n  - { id: fine, uses: x, with: { a: 2 } }\n  - { id: after, uses: x, needs: [fine], with: { a: 3 } }\n",
    ] {
        let plan = workflow::load(yaml, "p.yaml", &expressions, &AnyPlugin).unwrap();
        let report = scheduler
            .run(
                &plan,
                (&Default::default(), &serde_json::json!({})),
                "e",
                None,
                &|_| {},
            )
            .await;
        assert_eq!(report.status, RunStatus::Failed);
        let boom = report.tasks.iter().find(|t| t.id == "boom").unwrap();
        let error = boom.error.as_ref().unwrap();
        assert_eq!(error.kind, Some(FailureKind::Internal));
        assert!(
            error.message.contains("a bug in the host"),
            "{}",
            error.message
        );
        for other in report.tasks.iter().filter(|t| t.id != "boom") {
            assert_eq!(other.status, TaskStatus::Succeeded, "{other:?}");
        }
    }
}

#[test]
fn a_for_each_past_its_item_limit_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("inputs.json");
    let list: Vec<u32> = (0..100_001).collect();
    std::fs::write(&inputs, serde_json::json!({ "list": list }).to_string()).unwrap();
    let flow = dir.path().join("flow.yaml");
    std::fs::write(
        &flow,
        "name: wide\ninputs:\n  list: { type: array }\ntasks:\n  - { id: each, uses: transform, for_each: \"${{ inputs.list }}\", with: { script: '1' } }\n",
    )
    .unwrap();
    let out = cli(dir.path())
        .args(["run", flow.to_str().unwrap(), "--inputs"])
        .arg(&inputs)
        .output()
        .unwrap();
    assert_exit(&out, 1);
    let view = status_json(dir.path(), &execution(&out));
    let message = task_json(&view, "each")["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("at most 100000"), "{message}");
}

#[test]
fn local_files_are_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let flow = dir.join("flow.yaml");
    std::fs::write(
        &flow,
        "name: private\ntasks:\n  - { id: a, uses: transform, with: { script: '1' }, cache: { ttl: 1h } }\n",
    )
    .unwrap();
    let cassette = dir.join("cassette.json");
    let store = dir.join("state");
    let mut command = cli(dir);
    command
        .env("ORCHESTRATOR_STORE", store.join("store.redb"))
        .env("ORCHESTRATOR_CACHE", dir.join("cache"));
    // The runtime under a umask that would leave everything open to all.
    let out = std::process::Command::new("sh")
        .current_dir(common::root())
        .envs(command.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .args(["-c", "umask 000; exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_runtime"))
        .args(["run", flow.to_str().unwrap(), "--record"])
        .arg(&cassette)
        .output()
        .unwrap();
    assert_ok(&out);
    let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
    let id = execution(&out);
    for private_dir in [store.clone(), store.join("executions"), dir.join("cache")] {
        assert_eq!(mode(&private_dir), 0o700, "{}", private_dir.display());
    }
    let mut files = vec![
        store.join("store.redb"),
        store.join("responses.redb"),
        store.join("executions").join(format!("{id}.redb")),
        cassette,
    ];
    for engine in std::fs::read_dir(dir.join("cache")).unwrap() {
        let engine = engine.unwrap().path();
        assert_eq!(mode(&engine), 0o700, "{}", engine.display());
        for artifact in std::fs::read_dir(&engine).unwrap() {
            files.push(artifact.unwrap().path());
        }
    }
    assert!(
        files.len() > 5,
        "the built-ins were compiled into the cache"
    );
    for file in files {
        assert_eq!(mode(&file), 0o600, "{}", file.display());
    }
}
