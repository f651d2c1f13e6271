//! Hostile plugins are contained. Each misbehaviour fails only its own task
//! with its own classified error; a sibling in the same run succeeds; the
//! host keeps serving. Also: a plugin gets only what it both asked for and
//! was granted, and a workflow can only narrow that.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{Host, TestServer, failure, task};
use orchestrator_engine::plugin::{DirGrant, Grants};
use orchestrator_engine::scheduler::{FailureKind, RunStatus, TaskStatus};
use serde_json::json;

const GUEST: &str = env!("TEST_GUEST_WASM");
const SECRET: &str = "s3cr3t-token-value";

/// The test guest asks for HTTP to `*`, `/data` read-write, env `HOME` and
/// `TEST_GUEST_TOKEN`, and secret `api-token`.
fn grants(http: &[&str], data: &std::path::Path, secrets: &[&str]) -> Grants {
    Grants {
        http_hosts: http.iter().map(ToString::to_string).collect(),
        dirs: vec![DirGrant {
            path: "/data".into(),
            host_dir: data.to_owned(),
            writable: false,
        }],
        env: vec!["HOME".into(), "PATH".into()],
        secrets: secrets.iter().map(ToString::to_string).collect(),
        model: false,
    }
}

struct Scene {
    host: Host,
    server: TestServer,
    api: TestServer,
}

/// A host whose secret `api-token` belongs to the `api` server, and three
/// installs of the same component with different grants.
async fn scene() -> Scene {
    let server = TestServer::start(|path| match path {
        "/redirect" => (
            302,
            vec![(
                "location".into(),
                "http://169.254.169.254/latest/meta-data".into(),
            )],
            Vec::new(),
        ),
        "/huge" => (200, Vec::new(), vec![b'x'; 33 << 20]),
        _ => (200, Vec::new(), b"pong".to_vec()),
    });
    let api = TestServer::start(|_| (200, Vec::new(), b"{\"ok\":true}".to_vec()));
    let config = format!(
        "secrets:\n  api-token:\n    value: {SECRET}\n    hosts: ['{}']\n    insecure_http: true\n    format: 'Bearer {{}}'\n",
        api.addr
    );
    let host = Host::with_config(&config);
    let data = host.path("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("in.txt"), "inside").unwrap();
    std::fs::write(host.path("outside.txt"), "TOP SECRET").unwrap();
    std::os::unix::fs::symlink("../outside.txt", data.join("sneaky")).unwrap();
    std::os::unix::fs::symlink("/etc", data.join("etc")).unwrap();

    host.install(GUEST, "guest", grants(&["127.0.0.1"], &data, &[]))
        .await;
    host.install(GUEST, "guest-named", grants(&["localhost"], &data, &[]))
        .await;
    host.install(
        GUEST,
        "guest-keyed",
        grants(&["127.0.0.1"], &data, &["api-token"]),
    )
    .await;
    Scene { host, server, api }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hostile_plugin_fails_alone_with_its_own_error() {
    let Scene { host, server, api } = scene().await;
    let ok = server.url("/ok");
    let yaml = format!(
        r#"
name: hostile
tasks:
  - {{ id: spin, uses: guest, with: {{ mode: loop }}, limits: {{ fuel: 20000000 }} }}
  - {{ id: nap, uses: guest, with: {{ mode: sleep }}, limits: {{ deadline: 200ms }} }}
  - {{ id: hog, uses: guest, with: {{ mode: alloc }}, limits: {{ memory: 16MiB }} }}
  - {{ id: dive, uses: guest, with: {{ mode: recurse }} }}
  - {{ id: climb, uses: guest, with: {{ mode: read, path: /data/../outside.txt }} }}
  - {{ id: passwd, uses: guest, with: {{ mode: read, path: ../../etc/passwd }} }}
  - {{ id: sneak, uses: guest, with: {{ mode: read, path: /data/sneaky }} }}
  - {{ id: sneak_abs, uses: guest, with: {{ mode: read, path: /data/etc/passwd }} }}
  - {{ id: scribble, uses: guest, with: {{ mode: write, path: /data/new.txt, value: "x" }} }}
  - {{ id: wander, uses: guest, with: {{ mode: http, url: "http://example.com/" }} }}
  - {{ id: loopback, uses: guest-named, with: {{ mode: http, url: "{ok}" }} }}
  - {{ id: rebind, uses: guest-named, with: {{ mode: http, url: "http://localhost:{port}/ok" }} }}
  - {{ id: snoop, uses: guest, with: {{ mode: env, name: PATH }} }}
  - {{ id: steal, uses: guest, with: {{ mode: http, url: "{api}" }} }}
  - {{ id: flood, uses: guest, with: {{ mode: big_output, size: 100000000 }}, limits: {{ memory: 1GiB, fuel: 50000000000 }} }}
  - {{ id: oops, uses: guest, with: {{ mode: panic }} }}
  - {{ id: sibling, uses: guest, with: {{ value: {{ still: here }} }} }}
"#,
        port = server.addr.port(),
        api = api.url("/v1/secret"),
    );
    let report = host.run(&yaml).await;
    assert_eq!(report.status, RunStatus::Failed);

    let expect = |id: &str, kind: FailureKind, needle: &str| {
        let (got, message) = failure(&report, id);
        assert_eq!(got, kind, "task {id}: {message}");
        assert!(message.contains(needle), "task {id}: {message}");
    };
    expect("spin", FailureKind::OutOfFuel, "fuel budget of 20000000");
    expect("nap", FailureKind::Deadline, "deadline of 200ms");
    expect("hog", FailureKind::MemoryLimit, "cap of 16.0 MiB");
    expect("dive", FailureKind::StackOverflow, "overflowed its stack");
    expect("climb", FailureKind::Denied, "Operation not permitted");
    expect("passwd", FailureKind::Denied, "../../etc/passwd");
    expect("sneak", FailureKind::Denied, "/data/sneaky");
    expect("sneak_abs", FailureKind::Denied, "/data/etc/passwd");
    expect("scribble", FailureKind::Denied, "Operation not permitted");
    expect(
        "wander",
        FailureKind::Denied,
        "HTTP to `example.com:80` is not granted",
    );
    expect("loopback", FailureKind::Denied, "HTTP to `127.0.0.1");
    expect("rebind", FailureKind::Denied, "(loopback)");
    expect("snoop", FailureKind::Denied, "`PATH` is not visible");
    expect("steal", FailureKind::Denied, "asked for secret `api-token`");
    expect(
        "flood",
        FailureKind::OutputLimit,
        "past the limit of 16.0 MiB",
    );
    expect("oops", FailureKind::Trap, "test-guest was asked to panic");

    let sibling = task(&report, "sibling");
    assert_eq!(sibling.status, TaskStatus::Succeeded);
    assert_eq!(sibling.output, Some(json!({"still": "here"})));

    // Nothing escaped: no file written, no request reached either server.
    assert!(!host.path("data/new.txt").exists());
    assert!(server.requests().is_empty(), "{:?}", server.requests());
    assert!(api.requests().is_empty(), "{:?}", api.requests());
    for t in &report.tasks {
        let text = serde_json::to_string(t).unwrap();
        assert!(
            !text.contains("TOP SECRET") && !text.contains("root:"),
            "{text}"
        );
    }

    // The host keeps serving.
    let again = host
        .run("name: again\ntasks:\n  - { id: echo, uses: guest, with: { value: 7 } }\n")
        .await;
    assert_eq!(again.status, RunStatus::Succeeded);
    assert_eq!(task(&again, "echo").output, Some(json!(7)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn granted_capabilities_work_and_secrets_stay_on_the_host() {
    let Scene { host, server, api } = scene().await;
    let yaml = format!(
        r#"
name: granted
tasks:
  - {{ id: read, uses: guest, with: {{ mode: read, path: /data/in.txt }} }}
  - {{ id: home, uses: guest, with: {{ mode: env, name: HOME }} }}
  - {{ id: ping, uses: guest, with: {{ mode: http, url: "{ok}" }} }}
  - {{ id: redirect, uses: guest, with: {{ mode: http, url: "{redirect}" }} }}
  - {{ id: follow, uses: guest, needs: [redirect], with: {{ mode: http, url: "${{{{ tasks.redirect.output.location }}}}" }} }}
  - {{ id: huge, uses: guest, with: {{ mode: http, url: "{huge}" }} }}
  - {{ id: keyed, uses: guest-keyed, with: {{ mode: http, url: "{api}" }} }}
  - {{ id: look, uses: guest-keyed, with: {{ mode: escape }} }}
"#,
        ok = server.url("/ok"),
        redirect = server.url("/redirect"),
        huge = server.url("/huge"),
        api = api.url("/v1/chat"),
    );
    let report = host.run(&yaml).await;
    let output = |id: &str| {
        let t = task(&report, id);
        assert_eq!(t.status, TaskStatus::Succeeded, "{t:?}");
        t.output.clone().unwrap()
    };
    assert_eq!(output("read"), json!("inside"));
    assert_eq!(output("home"), json!(std::env::var("HOME").unwrap()));
    assert_eq!(output("ping")["body"], "pong");

    // A redirect goes back to the plugin; following it is a new request,
    // checked like any other.
    let redirect = output("redirect");
    assert_eq!(redirect["status"], 302);
    let (kind, message) = failure(&report, "follow");
    assert_eq!(kind, FailureKind::Denied);
    assert!(message.contains("169.254.169.254"), "{message}");

    let (kind, message) = failure(&report, "huge");
    assert_eq!(kind, FailureKind::Denied);
    assert!(message.contains("larger than the 32 MiB"), "{message}");

    // The host attached the secret; the plugin never saw it.
    assert_eq!(output("keyed")["body"], "{\"ok\":true}");
    let sent = api.requests();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].path, "/v1/chat");
    assert_eq!(
        sent[0].header("authorization"),
        Some(format!("Bearer {SECRET}").as_str())
    );
    for t in &report.tasks {
        let text = serde_json::to_string(t).unwrap();
        assert!(!text.contains(SECRET), "{text}");
    }
    let env = output("look")["env"].clone();
    assert_eq!(env, json!(["HOME"]), "only granted names are visible");
    let paths: Vec<String> = server.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(paths.len(), 3, "{paths:?}");
    assert!(paths.contains(&"/redirect".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_narrows_grants_but_cannot_widen_them() {
    let Scene { host, server, .. } = scene().await;
    let yaml = format!(
        r#"
name: narrowed
grants: {{ env: [] }}
tasks:
  - {{ id: ping, uses: guest, with: {{ mode: http, url: "{ok}" }}, grants: {{ http: [] }} }}
  - {{ id: home, uses: guest, with: {{ mode: env, name: HOME }} }}
  - {{ id: read, uses: guest, with: {{ mode: read, path: /data/in.txt }}, grants: {{ filesystem: [] }} }}
"#,
        ok = server.url("/ok")
    );
    let report = host.run(&yaml).await;
    let (kind, message) = failure(&report, "ping");
    assert_eq!(kind, FailureKind::Denied);
    assert!(message.contains("granted: none"), "{message}");
    assert_eq!(failure(&report, "home").0, FailureKind::Denied);
    assert_eq!(failure(&report, "read").0, FailureKind::Denied);
    assert!(server.requests().is_empty());

    let wider =
        "name: wider\ntasks:\n  - { id: t, uses: guest, grants: { http: [example.com] } }\n";
    let error = host.try_run(wider).await.unwrap_err();
    assert!(error.contains("task `t`"), "{error}");
    assert!(
        error.contains("a workflow can only narrow grants"),
        "{error}"
    );
    let writable = "name: rw\ntasks:\n  - { id: t, uses: guest, grants: { filesystem: [{ path: /data, writable: true }] } }\n";
    let error = host.try_run(writable).await.unwrap_err();
    assert!(error.contains("writing to `/data`"), "{error}");
}

/// A server on 127.0.0.1 that accepts connections, counts them, and never
/// answers.
struct Silent {
    addr: std::net::SocketAddr,
    connections: Arc<AtomicUsize>,
}

impl Silent {
    fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&connections);
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming().flatten() {
                counted.fetch_add(1, Ordering::SeqCst);
                held.push(stream);
            }
        });
        Self { addr, connections }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_cannot_exhaust_the_host() {
    let Scene { host, .. } = scene().await;
    let silent = Silent::start();
    let yaml = format!(
        r#"
name: exhausting
tasks:
  - {{ id: burst, uses: guest, with: {{ mode: burst, url: "http://{addr}/", times: 40 }}, limits: {{ deadline: 20s }} }}
  - {{ id: handles, uses: guest, with: {{ mode: descriptors, path: /data/in.txt, times: 10000 }} }}
  - {{ id: shout, uses: guest, with: {{ mode: fail, size: 10000000 }}, limits: {{ memory: 256MiB }} }}
  - {{ id: sibling, uses: guest, with: {{ value: 1 }} }}
"#,
        addr = silent.addr
    );
    let report = host.run(&yaml).await;
    let (kind, message) = failure(&report, "burst");
    assert_eq!(kind, FailureKind::Denied, "{message}");
    assert!(message.contains("cap `requests_in_flight`"), "{message}");
    assert!(
        message.contains("8 of 40 requests were refused"),
        "{message}"
    );
    assert!(silent.connections.load(Ordering::SeqCst) <= 32);

    let (kind, message) = failure(&report, "handles");
    assert_eq!(kind, FailureKind::Plugin, "{message}");
    assert!(message.contains("cap `resources`"), "{message}");

    let (kind, message) = failure(&report, "shout");
    assert_eq!(kind, FailureKind::Fatal);
    assert!(message.len() < 17 << 10, "{}", message.len());
    assert!(
        message.ends_with("of 10000000 bytes cut)"),
        "{}",
        &message[message.len() - 60..]
    );

    assert_eq!(task(&report, "sibling").status, TaskStatus::Succeeded);
}

#[test]
fn floods_of_logs_and_streamed_text_are_cut_off_and_said_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = common::cli(dir.path())
        .args(["install", GUEST, "--name", "guest"])
        .output()
        .unwrap();
    common::assert_ok(&out);
    let flow = dir.path().join("flow.yaml");
    std::fs::write(
        &flow,
        "name: noisy
tasks:
  - { id: flood, uses: guest, with: { mode: log_flood, times: 100000 } }
  - { id: stream, uses: guest, needs: [flood], with: { mode: emit_flood, times: 10000, size: 1000 } }
outputs:
  lines: ${{ tasks.flood.output }}
",
    )
    .unwrap();
    let started = std::time::Instant::now();
    let out = common::cli(dir.path())
        .args(["run", flow.to_str().unwrap()])
        .output()
        .unwrap();
    common::assert_ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines = stderr
        .lines()
        .filter(|l| l.contains("flooding the log"))
        .count();
    // A burst of 200, then 100 a second for as long as it ran (a loaded
    // machine runs the 100,000 calls for longer).
    let allowed = 200 + (100.0 * started.elapsed().as_secs_f64()).ceil() as usize;
    assert!(
        (1..=allowed).contains(&lines),
        "{lines} lines written, {allowed} allowed"
    );
    assert_eq!(
        stderr
            .matches("further logs of this attempt are dropped")
            .count(),
        1
    );
    // 10 MB streamed, 4 MiB printed, and one line saying so.
    let streamed = stderr.bytes().filter(|&b| b == b'x').count();
    assert!((4_000_000..=4 << 20).contains(&streamed), "{streamed}");
    assert_eq!(stderr.matches("further emits are dropped").count(), 1);
    assert!(String::from_utf8_lossy(&out.stdout).contains("100000"));
}
