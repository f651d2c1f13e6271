//! `runtime serve`: the real binary on 127.0.0.1, driven through the real
//! gRPC client (`orchestrator_host_api::client`): keys and roles, tenants
//! kept apart, watching an execution across a disconnect, signals,
//! cancels, idempotent starts, health, reflection, and a drain on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};

use orchestrator_host_api::client::Client;
use orchestrator_host_api::pb;
use orchestrator_host_api::server::auth::{PERMISSIONS, Role, permitted};
use tokio_stream::StreamExt;
use tonic::Code;

/// A running `runtime serve`, stopped with SIGTERM when dropped.
struct Server {
    child: Child,
    url: String,
    admin_key: String,
    /// What it wrote to stderr after it started serving.
    log: Arc<Mutex<Vec<String>>>,
    _dir: Option<tempfile::TempDir>,
}

impl Server {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut server = Self::start_in(dir.path(), None);
        server._dir = Some(dir);
        server
    }

    /// A server on the store in `dir`; `admin_key` is the key an earlier
    /// start printed (a later one prints none).
    fn start_in(dir: &std::path::Path, admin_key: Option<String>) -> Self {
        Self::start_with(dir, admin_key, &[])
    }

    /// The same, with more arguments for `runtime serve`.
    fn start_with(dir: &std::path::Path, admin_key: Option<String>, args: &[&str]) -> Self {
        let listen = if args.contains(&"--listen") {
            &[][..]
        } else {
            &["--listen", "127.0.0.1:0"][..]
        };
        let mut child = common::cli(dir)
            .arg("serve")
            .args(listen)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let (mut admin_key, mut url) = (admin_key, None);
        while url.is_none() {
            let mut line = String::new();
            assert!(stderr.read_line(&mut line).unwrap() > 0, "the server ended");
            if let Some((_, key)) = line.trim().split_once("make others with it): ") {
                admin_key = Some(key.to_owned());
            }
            if let Some(address) = line.trim().strip_prefix("serving on ") {
                url = Some(address.to_owned());
            }
        }
        let log = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in stderr.lines() {
                let Ok(line) = line else { return };
                kept.lock().unwrap().push(line);
            }
        });
        Self {
            child,
            url: url.unwrap(),
            admin_key: admin_key.expect("a first start prints an admin key"),
            log,
            _dir: None,
        }
    }

    async fn client(&self, key: &str) -> Client {
        Client::connect(&self.url, key).await.unwrap()
    }

    /// A new key for `tenant` in `role`.
    async fn key(&self, tenant: &str, role: &str) -> String {
        let admin = self.client(&self.admin_key).await;
        admin
            .admin()
            .create_api_key(pb::CreateApiKeyRequest {
                tenant: tenant.into(),
                role: role.into(),
                name: format!("{tenant} {role}"),
            })
            .await
            .unwrap()
            .into_inner()
            .key
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const WAITING: &str = "name: approval\ntasks:\n  - { id: approve, wait: { signal: go, timeout: 1h } }\n  - { id: publish, uses: transform, needs: [approve], with: { by: '${{ tasks.approve.output.by }}', script: '\"approved by \" + by' } }\noutputs:\n  result: ${{ tasks.publish.output }}\n";

fn start(text: &str, id: &str) -> pb::StartRequest {
    pb::StartRequest {
        workflow_text: text.into(),
        execution_id: id.into(),
        ..pb::StartRequest::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_runs_tenants_workflows_apart_and_drains_on_sigterm() {
    let mut server = Server::start();
    let acme = server.client(&server.key("acme", "operator").await).await;
    let globex = server.client(&server.key("globex", "operator").await).await;

    // Health answers without credentials; reflection lists the services.
    let channel = tonic::transport::Endpoint::from_shared(server.url.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let health = tonic_health::pb::health_client::HealthClient::new(channel.clone())
        .check(tonic_health::pb::HealthCheckRequest {
            service: "orchestrator.v1.Executions".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        health.status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );
    let services = list_services(channel).await;
    for service in [
        "orchestrator.v1.Executions",
        "orchestrator.v1.Admin",
        "grpc.health.v1.Health",
    ] {
        assert!(services.contains(&service.to_owned()), "{services:?}");
    }

    // Start, watch part of the events, disconnect, resume from the next
    // number: every event once, in order, to the end.
    let started = acme
        .executions()
        .start(start(WAITING, "order-1"))
        .await
        .unwrap()
        .into_inner();
    assert!(started.created);
    let id = started.execution_id;
    let mut seen = Vec::new();
    {
        let mut events = acme
            .executions()
            .watch(pb::WatchRequest {
                execution_id: id.clone(),
                from: 0,
            })
            .await
            .unwrap()
            .into_inner();
        while let Some(event) = events.next().await {
            let event = event.unwrap();
            let waiting = event.kind == "wait_started";
            seen.push(event);
            if waiting {
                break;
            }
        }
    }
    acme.executions()
        .signal(pb::SignalRequest {
            execution_id: id.clone(),
            name: "go".into(),
            payload_json: r#"{"by":"grace"}"#.into(),
            ..pb::SignalRequest::default()
        })
        .await
        .unwrap();
    let mut events = acme
        .executions()
        .watch(pb::WatchRequest {
            execution_id: id.clone(),
            from: seen.last().unwrap().number + 1,
        })
        .await
        .unwrap()
        .into_inner();
    while let Some(event) = events.next().await {
        seen.push(event.unwrap());
    }
    let numbers: Vec<u64> = seen.iter().map(|e| e.number).collect();
    assert_eq!(
        numbers,
        (0..seen.len() as u64).collect::<Vec<_>>(),
        "no gap, no duplicate"
    );
    assert_eq!(seen.last().unwrap().kind, "execution_finished");
    let done = acme
        .executions()
        .await_result(pb::AwaitRequest {
            execution_id: id.clone(),
            timeout_ms: 30_000,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.status, "succeeded");
    assert_eq!(done.outputs_json, r#"{"result":"approved by grace"}"#);

    // A start repeated with the same id and workflow is the same execution;
    // with another workflow it is refused.
    let again = acme
        .executions()
        .start(start(WAITING, "order-1"))
        .await
        .unwrap()
        .into_inner();
    assert!(!again.created);
    let other = acme
        .executions()
        .start(start(&WAITING.replace("approval", "other"), "order-1"))
        .await
        .unwrap_err();
    assert_eq!(other.code(), Code::AlreadyExists, "{other:?}");
    let invalid = acme
        .executions()
        .start(start("name: broken\ntasks: []\n", ""))
        .await
        .unwrap_err();
    assert_eq!(invalid.code(), Code::InvalidArgument, "{invalid:?}");

    // Globex cannot see or touch acme's execution: every call answers as
    // for an execution that does not exist.
    for execution in [id.as_str(), "made-up"] {
        let ex = || globex.executions();
        let codes = [
            ex().get(pb::GetRequest {
                execution_id: execution.into(),
                ..pb::GetRequest::default()
            })
            .await
            .map(|_| ()),
            ex().signal(pb::SignalRequest {
                execution_id: execution.into(),
                name: "go".into(),
                ..pb::SignalRequest::default()
            })
            .await
            .map(|_| ()),
            ex().cancel(pb::CancelRequest {
                execution_id: execution.into(),
            })
            .await
            .map(|_| ()),
            ex().await_result(pb::AwaitRequest {
                execution_id: execution.into(),
                timeout_ms: 1,
            })
            .await
            .map(|_| ()),
            ex().watch(pb::WatchRequest {
                execution_id: execution.into(),
                from: 0,
            })
            .await
            .map(|_| ()),
        ];
        for code in codes {
            assert_eq!(code.unwrap_err().code(), Code::NotFound, "{execution}");
        }
    }
    let listed = globex
        .executions()
        .list(pb::ListRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.executions.is_empty());
    let listed = acme
        .executions()
        .list(pb::ListRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.executions.len(), 1);

    // A cancel ends a waiting execution.
    let waiting = acme
        .executions()
        .start(start(WAITING, ""))
        .await
        .unwrap()
        .into_inner()
        .execution_id;
    acme.executions()
        .cancel(pb::CancelRequest {
            execution_id: waiting.clone(),
        })
        .await
        .unwrap();
    let cancelled = acme
        .executions()
        .await_result(pb::AwaitRequest {
            execution_id: waiting,
            timeout_ms: 30_000,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.status, "cancelled");

    // SIGTERM: the server stops and says so.
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_run_finishes_the_run_when_started_again() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path(), None);
    let key = server.key("acme", "operator").await;
    let admin_key = server.admin_key.clone();
    let flow = "name: twostep\ntasks:\n  - { id: first, uses: transform, with: { script: '1 + 1' } }\n  - { id: approve, needs: [first], wait: { signal: go, timeout: 1h } }\noutputs:\n  first: ${{ tasks.first.output }}\n  by: ${{ tasks.approve.output.by }}\n";
    let client = server.client(&key).await;
    let id = client
        .executions()
        .start(start(flow, "killed"))
        .await
        .unwrap()
        .into_inner()
        .execution_id;
    let mut events = client
        .executions()
        .watch(pb::WatchRequest {
            execution_id: id.clone(),
            from: 0,
        })
        .await
        .unwrap()
        .into_inner();
    while let Some(event) = events.next().await {
        if event.unwrap().kind == "wait_started" {
            break;
        }
    }
    drop(events);
    server.child.kill().unwrap();
    server.child.wait().unwrap();

    let server = Server::start_in(dir.path(), Some(admin_key));
    let client = server.client(&key).await;
    client
        .executions()
        .signal(pb::SignalRequest {
            execution_id: id.clone(),
            name: "go".into(),
            payload_json: r#"{"by":"the second server"}"#.into(),
            ..pb::SignalRequest::default()
        })
        .await
        .unwrap();
    let done = client
        .executions()
        .await_result(pb::AwaitRequest {
            execution_id: id.clone(),
            timeout_ms: 30_000,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.status, "succeeded", "{done:?}");
    assert_eq!(done.outputs_json, r#"{"first":2,"by":"the second server"}"#);
    let mut events = client
        .executions()
        .watch(pb::WatchRequest {
            execution_id: id,
            from: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut kinds = Vec::new();
    while let Some(event) = events.next().await {
        let event = event.unwrap();
        if event.kind == "attempt_started" {
            kinds.push(format!("attempt {}", event.fields_json));
        } else {
            kinds.push(event.kind);
        }
    }
    let first_attempts = kinds
        .iter()
        .filter(|k| k.contains(r#""task":"first""#))
        .count();
    assert_eq!(
        first_attempts, 1,
        "the finished task did not run again: {kinds:?}"
    );
    assert!(kinds.contains(&"execution_resumed".to_owned()), "{kinds:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugins_and_workflows_are_each_tenants_own() {
    let server = Server::start();
    let acme = server.client(&server.key("acme", "developer").await).await;
    let acme_runs = server.client(&server.key("acme", "operator").await).await;
    let globex = server
        .client(&server.key("globex", "developer").await)
        .await;

    // Install the test guest in chunks, as acme.
    let bytes = std::fs::read(env!("TEST_GUEST_WASM")).unwrap();
    let mut chunks = vec![pb::InstallChunk {
        header: Some(pb::InstallHeader {
            name: "guest".into(),
            version: "1.0.0".into(),
            grants: Some(pb::Grants {
                http_hosts: vec!["api.example.com".into()],
                ..pb::Grants::default()
            }),
        }),
        data: Vec::new(),
    }];
    chunks.extend(bytes.chunks(1 << 20).map(|data| pb::InstallChunk {
        header: None,
        data: data.to_vec(),
    }));
    let installed = acme
        .plugins()
        .install(tokio_stream::iter(chunks))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (installed.name.as_str(), installed.outcome.as_str()),
        ("guest", "installed")
    );

    // Not a component: INVALID_ARGUMENT, naming what is wrong.
    let junk = tokio_stream::iter([pb::InstallChunk {
        header: Some(pb::InstallHeader::default()),
        data: b"not wasm".to_vec(),
    }]);
    let status = acme.plugins().install(junk).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().contains("not WebAssembly"), "{status:?}");

    // A tenant's key grants host names, not the host's addresses or secrets.
    for refused in [
        pb::Grants {
            http_hosts: vec!["127.0.0.1".into()],
            ..pb::Grants::default()
        },
        pb::Grants {
            secrets: vec!["openai".into()],
            ..pb::Grants::default()
        },
        pb::Grants {
            env: vec!["HOME".into()],
            ..pb::Grants::default()
        },
    ] {
        let status = acme
            .plugins()
            .grant(pb::GrantRequest {
                plugin: "guest".into(),
                grants: Some(refused),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    }

    // Globex sees none of it: its list has built-ins only, and acme's
    // plugin answers as one that does not exist.
    let listed = globex
        .plugins()
        .list(pb::ListPluginsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(listed.plugins.iter().all(|p| p.builtin), "{listed:?}");
    let theirs = globex
        .plugins()
        .get(pb::GetPluginRequest {
            plugin: "guest".into(),
        })
        .await
        .unwrap_err();
    let none = globex
        .plugins()
        .get(pb::GetPluginRequest {
            plugin: "nothing".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(theirs.code(), Code::NotFound);
    assert_eq!(
        theirs.message().replace("guest", "X"),
        none.message().replace("nothing", "X")
    );

    // A registered workflow runs acme's plugin as a task of another.
    let child = "name: echoing\ntasks:\n  - { id: echo, uses: guest, with: { mode: echo, value: 7 } }\noutputs:\n  value: ${{ tasks.echo.output }}\n";
    let registered = acme
        .workflows()
        .register(pb::RegisterRequest {
            text: child.into(),
            label: "echoing.yaml".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((registered.version, registered.new), (1, true));
    let parent = "name: parent\ntasks:\n  - { id: child, uses: 'workflow:echoing' }\noutputs:\n  got: ${{ tasks.child.output }}\n";
    let id = acme_runs
        .executions()
        .start(start(parent, ""))
        .await
        .unwrap()
        .into_inner()
        .execution_id;
    let done = acme_runs
        .executions()
        .await_result(pb::AwaitRequest {
            execution_id: id,
            timeout_ms: 60_000,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.status, "succeeded", "{done:?}");
    let listed = globex
        .workflows()
        .list(pb::ListWorkflowsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(listed.workflows.is_empty());

    // Text sent to the server cannot name files on its host, and its
    // answer is the same whether the file exists or not.
    let uses = |path: &str| format!("name: probe\ntasks:\n  - {{ id: p, uses: '{path}' }}\n");
    let mut messages = Vec::new();
    for path in [env!("TEST_GUEST_WASM"), "/nowhere/at/all.wasm"] {
        let status = acme
            .workflows()
            .validate(pb::ValidateRequest {
                text: uses(path),
                label: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(
            status.message().contains("names a component file"),
            "{status:?}"
        );
        messages.push(status.message().replace(path, "PATH"));
        let started = acme_runs
            .executions()
            .start(start(&uses(path), ""))
            .await
            .unwrap_err();
        assert_eq!(started.code(), Code::InvalidArgument);
    }
    assert_eq!(messages[0], messages[1]);
}

const BROKEN: &str = "name: broken\ntasks:\n  - { id: check, uses: transform, with: { script: 'throw \"broken\"' }, retry: { max_attempts: 1 } }\n  - { id: after, uses: transform, needs: [check], with: { script: '\"after\"' } }\noutputs:\n  got: ${{ tasks.check.output }}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_events_and_retried_requests_over_the_api() {
    let server = Server::start();
    let acme = server.client(&server.key("acme", "operator").await).await;
    let acme_dev = server.client(&server.key("acme", "developer").await).await;
    let globex = server.client(&server.key("globex", "operator").await).await;
    let ex = || acme.executions();

    // A task that fails for good is a dead letter; replayed with another
    // input it runs, and so does the task its failure kept from running.
    let id = ex()
        .start(start(BROKEN, ""))
        .await
        .unwrap()
        .into_inner()
        .execution_id;
    let failed = ex()
        .await_result(pb::AwaitRequest {
            execution_id: id.clone(),
            timeout_ms: 30_000,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(failed.status, "failed", "{failed:?}");
    let letters = ex()
        .list_dead_letters(pb::ListDeadLettersRequest {})
        .await
        .unwrap()
        .into_inner()
        .dead_letters;
    assert_eq!(
        letters.len(),
        1,
        "{letters:?}\n{}",
        server.log.lock().unwrap().join("\n")
    );
    let letter = &letters[0];
    assert_eq!(letter.id, format!("{id}/check"));
    assert_eq!(
        (letter.task.as_str(), letter.uses.as_str()),
        ("check", "transform")
    );
    assert!(letter.error.contains("broken"), "{letter:?}");
    // Globex sees none, and cannot replay or purge acme's.
    let theirs = globex
        .executions()
        .list_dead_letters(pb::ListDeadLettersRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(theirs.dead_letters.is_empty());
    let replay = |id: &str| pb::ReplayDeadLetterRequest {
        id: id.into(),
        input_json: r#"{"script":"\"mended\""}"#.into(),
    };
    let refused = globex
        .executions()
        .replay_dead_letter(replay(&letter.id))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::NotFound, "{refused:?}");
    let refused = globex
        .executions()
        .purge(pb::PurgeRequest {
            ids: vec![letter.id.clone()],
            all: false,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::NotFound, "{refused:?}");
    let replayed = ex()
        .replay_dead_letter(replay(&letter.id))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (replayed.task.as_str(), replayed.cleared.as_slice()),
        ("check", ["after".to_owned()].as_slice())
    );
    let mended = ex()
        .await_result(pb::AwaitRequest {
            execution_id: id.clone(),
            timeout_ms: 30_000,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(mended.status, "succeeded", "{mended:?}");
    assert_eq!(mended.outputs_json, r#"{"got":"mended"}"#);
    let letters = ex()
        .list_dead_letters(pb::ListDeadLettersRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(letters.dead_letters.is_empty(), "{letters:?}");

    // Another failure, purged: gone from the queue, kept in the record.
    let other = ex()
        .start(start(BROKEN, ""))
        .await
        .unwrap()
        .into_inner()
        .execution_id;
    ex().await_result(pb::AwaitRequest {
        execution_id: other.clone(),
        timeout_ms: 30_000,
    })
    .await
    .unwrap();
    let purged = ex()
        .purge(pb::PurgeRequest {
            ids: Vec::new(),
            all: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(purged.purged, 1);
    assert!(
        ex().list_dead_letters(pb::ListDeadLettersRequest {})
            .await
            .unwrap()
            .into_inner()
            .dead_letters
            .is_empty()
    );

    // The event log, a page at a time, is the log `Watch` gives.
    let mut paged = Vec::new();
    let mut from = 0;
    loop {
        let page = ex()
            .get_events(pb::GetEventsRequest {
                execution_id: id.clone(),
                from,
                page_size: 3,
            })
            .await
            .unwrap()
            .into_inner();
        assert!(page.events.len() <= 3);
        if page.events.is_empty() {
            assert_eq!(page.next_from, from);
            break;
        }
        from = page.next_from;
        paged.extend(page.events);
    }
    let mut watched = Vec::new();
    let mut events = ex()
        .watch(pb::WatchRequest {
            execution_id: id.clone(),
            from: 0,
        })
        .await
        .unwrap()
        .into_inner();
    while let Some(event) = events.next().await {
        watched.push(event.unwrap());
    }
    assert!(paged.len() > 6, "{paged:?}");
    assert_eq!(paged, watched);

    // A start retried with the same request id is the same execution; with
    // another workflow under that id it is refused.
    let registered = acme_dev
        .workflows()
        .register(pb::RegisterRequest {
            text: WAITING.into(),
            label: "approval.yaml".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let by_name = |request_id: &str| pb::StartRequest {
        workflow: format!("approval@{}", registered.version),
        request_id: request_id.into(),
        ..pb::StartRequest::default()
    };
    let first = ex().start(by_name("req-1")).await.unwrap().into_inner();
    let again = ex().start(by_name("req-1")).await.unwrap().into_inner();
    assert!(first.created && !again.created);
    assert_eq!(first.execution_id, again.execution_id);
    let clash = ex()
        .start(pb::StartRequest {
            workflow_text: BROKEN.into(),
            request_id: "req-1".into(),
            ..pb::StartRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(clash.code(), Code::AlreadyExists, "{clash:?}");
    let unknown = ex()
        .start(pb::StartRequest {
            workflow: "nothing@3".into(),
            ..pb::StartRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "{unknown:?}");
    let got = acme_dev
        .workflows()
        .get(pb::GetWorkflowRequest {
            name: "approval".into(),
            version: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.text, WAITING);
    let hidden = globex
        .workflows()
        .get(pb::GetWorkflowRequest {
            name: "approval".into(),
            version: 0,
        })
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound);

    // A signal retried with the same request id is recorded once.
    let waiting = first.execution_id;
    for _ in 0..2 {
        ex().signal(pb::SignalRequest {
            execution_id: waiting.clone(),
            name: "go".into(),
            payload_json: r#"{"by":"ada"}"#.into(),
            request_id: "sig-1".into(),
        })
        .await
        .unwrap();
    }
    let done = ex()
        .await_result(pb::AwaitRequest {
            execution_id: waiting.clone(),
            timeout_ms: 30_000,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.status, "succeeded", "{done:?}");
    let events = ex()
        .get_events(pb::GetEventsRequest {
            execution_id: waiting,
            from: 0,
            page_size: 1000,
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let signals = events
        .iter()
        .filter(|e| e.kind == "signal_received")
        .count();
    assert_eq!(signals, 1, "{events:?}");

    // Resume of an execution that runs here is refused; of one that
    // finished, too.
    let finished = ex()
        .resume(pb::ResumeRequest { execution_id: id })
        .await
        .unwrap_err();
    assert!(
        matches!(
            finished.code(),
            Code::FailedPrecondition | Code::InvalidArgument
        ),
        "{finished:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_log_keeps_each_tenants_changes_and_refusals() {
    let server = Server::start();
    let acme_admin = server.client(&server.key("acme", "admin").await).await;
    let acme = server.client(&server.key("acme", "operator").await).await;
    let globex_admin = server.client(&server.key("globex", "admin").await).await;
    let host = server.client(&server.admin_key).await;

    let id = acme
        .executions()
        .start(start(WAITING, "audited"))
        .await
        .unwrap()
        .into_inner()
        .execution_id;
    acme.executions()
        .cancel(pb::CancelRequest {
            execution_id: id.clone(),
        })
        .await
        .unwrap();
    // Refused: an operator may not register; globex may not reach acme.
    let refused = acme
        .workflows()
        .register(pb::RegisterRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let made_up = format!("oo_0123456789abcdef_{}", "0".repeat(64));
    let stranger = server.client(&made_up).await;
    let refused = stranger
        .executions()
        .list(pb::ListRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);

    let audit = |client: &Client, tenant: &str, host: bool| {
        let mut admin = client.admin();
        let request = pb::ListAuditRequest {
            tenant: tenant.into(),
            host,
            ..pb::ListAuditRequest::default()
        };
        async move { admin.list_audit(request).await }
    };
    let entries = audit(&acme_admin, "", false)
        .await
        .unwrap()
        .into_inner()
        .entries;
    let seen: Vec<(&str, &str, &str)> = entries
        .iter()
        .map(|e| (e.rpc.as_str(), e.target.as_str(), e.outcome.as_str()))
        .collect();
    assert!(
        seen.contains(&("orchestrator.v1.Executions/Start", "audited", "OK")),
        "{seen:?}"
    );
    assert!(
        seen.contains(&("orchestrator.v1.Executions/Cancel", "audited", "OK")),
        "{seen:?}"
    );
    assert!(
        seen.contains(&(
            "orchestrator.v1.Workflows/Register",
            "",
            "PERMISSION_DENIED"
        )),
        "{seen:?}"
    );
    assert!(entries.iter().all(|e| e.tenant == "acme"), "{entries:?}");
    let numbers: Vec<u64> = entries.iter().map(|e| e.number).collect();
    assert_eq!(numbers, (1..=entries.len() as u64).collect::<Vec<_>>());
    // Reads are not audited.
    assert!(
        !seen.iter().any(|(rpc, ..)| rpc.ends_with("/ListAudit")),
        "{seen:?}"
    );

    // Globex's admin sees its own log only, and no other tenant's keys.
    let own = audit(&globex_admin, "", false)
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert!(own.iter().all(|e| e.tenant == "globex"), "{own:?}");
    for refused in [
        audit(&globex_admin, "acme", false).await.unwrap_err(),
        audit(&globex_admin, "", true).await.unwrap_err(),
        globex_admin
            .admin()
            .list_api_keys(pb::ListApiKeysRequest {
                tenant: "acme".into(),
            })
            .await
            .unwrap_err(),
        globex_admin
            .admin()
            .create_api_key(pb::CreateApiKeyRequest {
                tenant: "acme".into(),
                role: "admin".into(),
                name: "takeover".into(),
            })
            .await
            .unwrap_err(),
    ] {
        assert_eq!(refused.code(), Code::PermissionDenied, "{refused:?}");
    }
    let acme_keys = host
        .admin()
        .list_api_keys(pb::ListApiKeysRequest {
            tenant: "acme".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .keys;
    let revoke = globex_admin
        .admin()
        .revoke_api_key(pb::RevokeApiKeyRequest {
            key_id: acme_keys[0].key_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(revoke.code(), Code::NotFound, "{revoke:?}");
    let listed = globex_admin
        .admin()
        .list_api_keys(pb::ListApiKeysRequest::default())
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert!(listed.iter().all(|k| k.tenant == "globex"), "{listed:?}");

    // The host's admin reads any tenant's log, and the host's own entries:
    // the call with a key that does not exist.
    let theirs = audit(&host, "acme", false)
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert_eq!(theirs.len(), entries.len(), "{theirs:?}");
    let hosts = audit(&host, "", true).await.unwrap().into_inner().entries;
    assert!(
        hosts
            .iter()
            .any(|e| e.rpc == "orchestrator.v1.Executions/List"
                && e.outcome == "UNAUTHENTICATED"
                && e.tenant.is_empty()),
        "{hosts:?}"
    );
    // The refused takeover is in globex's log.
    let own = audit(&globex_admin, "", false)
        .await
        .unwrap()
        .into_inner()
        .entries;
    assert!(
        own.iter()
            .any(|e| e.rpc == "orchestrator.v1.Admin/CreateApiKey"
                && e.outcome == "PERMISSION_DENIED"),
        "{own:?}"
    );
    // `runtime audit` asks the running server, and reads the store of a
    // stopped one: the same entries.
    let dir = server._dir.as_ref().unwrap().path().to_owned();
    let acme_admin_key = server.key("acme", "admin").await;
    let cli = |args: &[&str]| {
        let out = common::cli(&dir).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let remote = cli(&[
        "audit",
        "--server",
        &server.url,
        "--api-key",
        &acme_admin_key,
    ]);
    assert!(
        remote.contains("orchestrator.v1.Executions/Start audited OK"),
        "{remote}"
    );
    let mut server = server;
    assert!(server.terminate().success());
    let local = cli(&["audit", "--tenant", "acme"]);
    assert_eq!(local, remote);
    let json = cli(&["audit", "--tenant", "acme", "--json", "--limit", "1"]);
    let first: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(first["number"], 1);
    assert_eq!(first["tenant"], "acme");
}

/// The test guest, installed as `name` with `grants`, in chunks.
fn guest_chunks(name: &str, grants: pb::Grants) -> Vec<pb::InstallChunk> {
    let bytes = std::fs::read(env!("TEST_GUEST_WASM")).unwrap();
    let mut chunks = vec![pb::InstallChunk {
        header: Some(pb::InstallHeader {
            name: name.into(),
            version: "1.0.0".into(),
            grants: Some(grants),
        }),
        data: Vec::new(),
    }];
    chunks.extend(bytes.chunks(1 << 20).map(|data| pb::InstallChunk {
        header: None,
        data: data.to_vec(),
    }));
    chunks
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_rpc_reaches_another_tenants_data() {
    let server = Server::start();
    let acme = server.client(&server.key("acme", "admin").await).await;
    // Globex calls with an admin key: every RPC is permitted to it.
    let globex = server.client(&server.key("globex", "admin").await).await;

    // Acme's things: a waiting execution, a failed one with a dead letter,
    // a plugin, a registered workflow, keys, audit entries.
    let acme_grants = pb::Grants {
        http_hosts: vec!["api.acme.example".into()],
        ..pb::Grants::default()
    };
    acme.plugins()
        .install(tokio_stream::iter(guest_chunks(
            "guest",
            acme_grants.clone(),
        )))
        .await
        .unwrap();
    acme.workflows()
        .register(pb::RegisterRequest {
            text: WAITING.into(),
            label: String::new(),
        })
        .await
        .unwrap();
    acme.executions()
        .start(start(WAITING, "a-wait"))
        .await
        .unwrap();
    acme.executions()
        .start(start(BROKEN, "a-broken"))
        .await
        .unwrap();
    acme.executions()
        .await_result(pb::AwaitRequest {
            execution_id: "a-broken".into(),
            timeout_ms: 30_000,
        })
        .await
        .unwrap();
    let acme_key_id = acme
        .admin()
        .list_api_keys(pb::ListApiKeysRequest::default())
        .await
        .unwrap()
        .into_inner()
        .keys[0]
        .key_id
        .clone();
    let acme_ids = ["a-wait", "a-broken"];

    let ex = || globex.executions();
    let not_found = |result: Result<(), tonic::Status>, rpc: &str| {
        let status = result.expect_err(rpc);
        assert!(
            matches!(status.code(), Code::NotFound | Code::PermissionDenied),
            "{rpc}: {status:?}"
        );
    };
    for (rpc, _) in PERMISSIONS {
        let rpc = *rpc;
        match rpc.trim_start_matches("orchestrator.v1.") {
            "Executions/Start" => {
                // Acme's registered workflow is not globex's; the same
                // execution id is globex's own, not acme's.
                let by_name = ex()
                    .start(pb::StartRequest {
                        workflow: "approval".into(),
                        ..pb::StartRequest::default()
                    })
                    .await
                    .map(drop);
                not_found(by_name, rpc);
                let own = ex()
                    .start(start(BROKEN, "a-wait"))
                    .await
                    .unwrap()
                    .into_inner();
                assert!(own.created, "a start saw acme's execution");
            }
            "Executions/Get" => {
                let r = ex()
                    .get(pb::GetRequest {
                        execution_id: "a-broken".into(),
                        ..pb::GetRequest::default()
                    })
                    .await;
                not_found(r.map(drop), rpc);
            }
            "Executions/List" => {
                let listed = ex()
                    .list(pb::ListRequest::default())
                    .await
                    .unwrap()
                    .into_inner();
                assert!(
                    listed.executions.iter().all(|e| e.workflow != "approval"),
                    "{listed:?}"
                );
            }
            "Executions/Watch" => {
                let r = ex()
                    .watch(pb::WatchRequest {
                        execution_id: "a-broken".into(),
                        from: 0,
                    })
                    .await;
                not_found(r.map(drop), rpc);
            }
            "Executions/AwaitResult" => {
                let r = ex()
                    .await_result(pb::AwaitRequest {
                        execution_id: "a-broken".into(),
                        timeout_ms: 1,
                    })
                    .await;
                not_found(r.map(drop), rpc);
            }
            "Executions/Signal" => {
                let r = ex()
                    .signal(pb::SignalRequest {
                        execution_id: "a-broken".into(),
                        name: "go".into(),
                        ..pb::SignalRequest::default()
                    })
                    .await;
                not_found(r.map(drop), rpc);
            }
            "Executions/Cancel" => {
                let r = ex()
                    .cancel(pb::CancelRequest {
                        execution_id: "a-broken".into(),
                    })
                    .await;
                not_found(r.map(drop), rpc);
            }
            "Executions/GetEvents" => {
                let r = ex()
                    .get_events(pb::GetEventsRequest {
                        execution_id: "a-broken".into(),
                        ..pb::GetEventsRequest::default()
                    })
                    .await;
                not_found(r.map(drop), rpc);
            }
            "Executions/Resume" => {
                let r = ex()
                    .resume(pb::ResumeRequest {
                        execution_id: "a-broken".into(),
                    })
                    .await;
                not_found(r.map(drop), rpc);
            }
            "Executions/ListDeadLetters" => {
                let listed = ex()
                    .list_dead_letters(pb::ListDeadLettersRequest {})
                    .await
                    .unwrap()
                    .into_inner();
                assert!(
                    listed
                        .dead_letters
                        .iter()
                        .all(|l| !l.id.starts_with("a-broken")),
                    "{listed:?}"
                );
            }
            "Executions/ReplayDeadLetter" => {
                let r = ex()
                    .replay_dead_letter(pb::ReplayDeadLetterRequest {
                        id: "a-broken/check".into(),
                        input_json: String::new(),
                    })
                    .await;
                not_found(r.map(drop), rpc);
            }
            "Executions/Purge" => {
                let r = ex()
                    .purge(pb::PurgeRequest {
                        ids: vec!["a-broken/check".into()],
                        all: false,
                    })
                    .await;
                not_found(r.map(drop), rpc);
                // `all` is all of the caller's own.
                ex().purge(pb::PurgeRequest {
                    ids: Vec::new(),
                    all: true,
                })
                .await
                .unwrap();
            }
            "Plugins/Install" => {
                // Globex's own `guest`, with other grants: acme's stays.
                globex
                    .plugins()
                    .install(tokio_stream::iter(guest_chunks(
                        "guest",
                        pb::Grants::default(),
                    )))
                    .await
                    .unwrap();
            }
            "Plugins/List" => {
                let listed = globex
                    .plugins()
                    .list(pb::ListPluginsRequest {})
                    .await
                    .unwrap()
                    .into_inner();
                for p in &listed.plugins {
                    let granted = p.granted.clone().unwrap_or_default();
                    assert!(
                        !granted.http_hosts.contains(&"api.acme.example".into()),
                        "{p:?}"
                    );
                }
            }
            "Plugins/Get" => {
                // Before globex installs its own, acme's is unknown to it;
                // afterwards it sees its own grants, not acme's.
                if let Ok(p) = globex
                    .plugins()
                    .get(pb::GetPluginRequest {
                        plugin: "guest".into(),
                    })
                    .await
                {
                    let granted = p.into_inner().granted.unwrap_or_default();
                    assert!(granted.http_hosts.is_empty(), "{granted:?}");
                }
            }
            "Plugins/Grant" => {
                let r = globex
                    .plugins()
                    .grant(pb::GrantRequest {
                        plugin: "nothing-of-globex".into(),
                        grants: Some(pb::Grants::default()),
                    })
                    .await;
                not_found(r.map(drop), rpc);
            }
            "Plugins/Remove" => {
                // Removes globex's own `guest`, if it installed one.
                let _ = globex
                    .plugins()
                    .remove(pb::RemovePluginRequest {
                        plugin: "guest@1.0.0".into(),
                    })
                    .await;
            }
            "Workflows/Register" => {
                let text = WAITING.replace("tasks:", "# globex's\ntasks:");
                let registered = globex
                    .workflows()
                    .register(pb::RegisterRequest {
                        text,
                        label: String::new(),
                    })
                    .await
                    .unwrap()
                    .into_inner();
                assert_eq!(registered.version, 1, "acme's versions are not globex's");
            }
            "Workflows/List" => {
                let listed = globex
                    .workflows()
                    .list(pb::ListWorkflowsRequest {})
                    .await
                    .unwrap()
                    .into_inner();
                assert!(listed.workflows.len() <= 1, "{listed:?}");
            }
            "Workflows/Get" => {
                if let Ok(got) = globex
                    .workflows()
                    .get(pb::GetWorkflowRequest {
                        name: "approval".into(),
                        version: 0,
                    })
                    .await
                {
                    assert!(got.into_inner().text.contains("globex's"));
                }
            }
            "Workflows/Validate" => {
                let text = "name: p\ntasks:\n  - { id: c, uses: 'workflow:approval@9' }\n";
                let r = globex
                    .workflows()
                    .validate(pb::ValidateRequest {
                        text: text.into(),
                        label: String::new(),
                    })
                    .await;
                assert_eq!(r.unwrap_err().code(), Code::InvalidArgument);
            }
            "Admin/CreateApiKey" => {
                let r = globex
                    .admin()
                    .create_api_key(pb::CreateApiKeyRequest {
                        tenant: "acme".into(),
                        role: "admin".into(),
                        name: "takeover".into(),
                    })
                    .await;
                not_found(r.map(drop), rpc);
            }
            "Admin/ListApiKeys" => {
                let r = globex
                    .admin()
                    .list_api_keys(pb::ListApiKeysRequest {
                        tenant: "acme".into(),
                    })
                    .await;
                not_found(r.map(drop), rpc);
                let own = globex
                    .admin()
                    .list_api_keys(pb::ListApiKeysRequest::default())
                    .await
                    .unwrap()
                    .into_inner();
                assert!(own.keys.iter().all(|k| k.tenant == "globex"), "{own:?}");
            }
            "Admin/RevokeApiKey" => {
                let r = globex
                    .admin()
                    .revoke_api_key(pb::RevokeApiKeyRequest {
                        key_id: acme_key_id.clone(),
                    })
                    .await;
                not_found(r.map(drop), rpc);
            }
            "Admin/ListAudit" => {
                let r = globex
                    .admin()
                    .list_audit(pb::ListAuditRequest {
                        tenant: "acme".into(),
                        ..pb::ListAuditRequest::default()
                    })
                    .await;
                not_found(r.map(drop), rpc);
                let own = globex
                    .admin()
                    .list_audit(pb::ListAuditRequest::default())
                    .await
                    .unwrap()
                    .into_inner();
                assert!(own.entries.iter().all(|e| e.tenant == "globex"), "{own:?}");
            }
            "Admin/CreateTenant" => {
                let r = globex
                    .admin()
                    .create_tenant(pb::CreateTenantRequest {
                        tenant: "acme".into(),
                        limits: None,
                    })
                    .await;
                not_found(r.map(drop), rpc);
            }
            "Admin/SetTenantLimits" => {
                let r = globex
                    .admin()
                    .set_tenant_limits(pb::SetTenantLimitsRequest {
                        tenant: "acme".into(),
                        limits: Some(pb::TenantLimits {
                            fuel: Some(1),
                            ..pb::TenantLimits::default()
                        }),
                    })
                    .await;
                not_found(r.map(drop), rpc);
            }
            "Admin/GetTenant" => {
                let r = globex
                    .admin()
                    .get_tenant(pb::GetTenantRequest {
                        tenant: "acme".into(),
                    })
                    .await;
                not_found(r.map(drop), rpc);
                let own = globex
                    .admin()
                    .get_tenant(pb::GetTenantRequest::default())
                    .await
                    .unwrap()
                    .into_inner();
                assert_eq!(own.id, "globex");
            }
            "Admin/ListTenants" => {
                let r = globex.admin().list_tenants(pb::ListTenantsRequest {}).await;
                not_found(r.map(drop), rpc);
            }
            other => panic!("the test does not try {other} across tenants"),
        }
    }

    // Acme's things are as they were.
    for id in acme_ids {
        acme.executions()
            .get(pb::GetRequest {
                execution_id: id.into(),
                ..pb::GetRequest::default()
            })
            .await
            .unwrap();
    }
    let waiting = acme
        .executions()
        .get(pb::GetRequest {
            execution_id: "a-wait".into(),
            ..pb::GetRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(waiting.status, "running");
    let letters = acme
        .executions()
        .list_dead_letters(pb::ListDeadLettersRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(letters.dead_letters.len(), 1);
    let plugin = acme
        .plugins()
        .get(pb::GetPluginRequest {
            plugin: "guest".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(plugin.granted.unwrap().http_hosts, acme_grants.http_hosts);
    let workflows = acme
        .workflows()
        .list(pb::ListWorkflowsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(workflows.workflows.len(), 1);
    let keys = acme
        .admin()
        .list_api_keys(pb::ListApiKeysRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(
        keys.keys
            .iter()
            .all(|k| k.revoked_at_ms == 0 && k.tenant == "acme")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_starts_and_awaits_all_answer() {
    // Many clients starting and awaiting at once: every await answers with
    // the result, also when it asks just as its run lets the file go.
    let server = Server::start();
    let key = server.key("busy", "operator").await;
    let flow = "name: small\ntasks:\n  - { id: add, uses: transform, with: { script: '1 + 1' } }\noutputs:\n  sum: ${{ tasks.add.output }}\n";
    let mut clients = Vec::new();
    for _ in 0..16 {
        let client = server.client(&key).await;
        clients.push(tokio::spawn(async move {
            for _ in 0..4 {
                let id = client
                    .executions()
                    .start(start(flow, ""))
                    .await
                    .unwrap()
                    .into_inner()
                    .execution_id;
                let done = client
                    .executions()
                    .await_result(pb::AwaitRequest {
                        execution_id: id,
                        timeout_ms: 60_000,
                    })
                    .await
                    .unwrap()
                    .into_inner();
                assert_eq!(done.outputs_json, r#"{"sum":2}"#, "{done:?}");
            }
        }));
    }
    for client in clients {
        client.await.unwrap();
    }
}

/// A certificate authority and a server certificate it signed for
/// `localhost` and 127.0.0.1, written to `dir`: the CA's PEM.
fn certificates(dir: &std::path::Path) -> String {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca, rcgen::KeyPair::generate().unwrap()).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
    ca.pem()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_speaks_tls_and_plaintext_only_on_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let ca = certificates(dir.path());
    let (cert, key) = (dir.path().join("server.pem"), dir.path().join("server.key"));
    let server = Server::start_with(
        dir.path(),
        None,
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    assert!(
        server.url.starts_with("https://127.0.0.1:"),
        "{}",
        server.url
    );

    // A client that trusts the CA is served.
    let client = Client::connect_with(&server.url, &server.admin_key, Some(ca.as_bytes()))
        .await
        .unwrap();
    let keys = client
        .admin()
        .list_api_keys(pb::ListApiKeysRequest::default())
        .await
        .unwrap();
    assert_eq!(keys.into_inner().keys.len(), 1);

    // One that trusts another CA, or speaks plaintext, is not.
    let elsewhere = tempfile::tempdir().unwrap();
    let other = certificates(elsewhere.path());
    let refused =
        match Client::connect_with(&server.url, &server.admin_key, Some(other.as_bytes())).await {
            Err(_) => true,
            Ok(client) => client
                .admin()
                .list_api_keys(pb::ListApiKeysRequest::default())
                .await
                .is_err(),
        };
    assert!(
        refused,
        "a certificate the client does not trust was accepted"
    );
    let plain = server.url.replace("https://", "http://");
    let refused = match Client::connect(&plain, &server.admin_key).await {
        Err(_) => true,
        Ok(client) => client
            .admin()
            .list_api_keys(pb::ListApiKeysRequest::default())
            .await
            .is_err(),
    };
    assert!(refused, "plaintext was answered on the TLS port");

    // Without TLS, only loopback, unless plaintext is allowed outright.
    let out = common::cli(dir.path())
        .args(["serve", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("loopback only") && stderr.contains("--tls-cert"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_is_logged_under_its_request_id_and_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), None, &["--log-format", "json"]);
    let viewer = server.client(&server.key("acme", "viewer").await).await;
    let mut request = tonic::Request::new(start(WAITING, ""));
    request
        .metadata_mut()
        .insert("x-request-id", "req-7f3a".parse().unwrap());
    let refused = viewer.executions().start(request).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    let mut found = None;
    for _ in 0..100 {
        found = server
            .log
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains("req-7f3a"))
            .cloned();
        if found.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let line = found.expect("a log line with the request id");
    let record: serde_json::Value = serde_json::from_str(&line).unwrap();
    let span = &record["span"];
    assert_eq!(span["name"], "rpc", "{line}");
    assert_eq!(span["request_id"], "req-7f3a", "{line}");
    assert_eq!(span["tenant"], "acme", "{line}");
    assert_eq!(span["rpc"], "/orchestrator.v1.Executions/Start", "{line}");
    assert_eq!(record["fields"]["message"], "refused", "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_running_calls_finish_and_the_next_start_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_with(dir.path(), None, &["--grace", "20"]);
    let admin_key = server.admin_key.clone();
    let developer = server.client(&server.key("acme", "developer").await).await;
    developer
        .plugins()
        .install(tokio_stream::iter(guest_chunks(
            "guest",
            pb::Grants::default(),
        )))
        .await
        .unwrap();
    let key = server.key("acme", "operator").await;
    let client = server.client(&key).await;
    let flow = "name: drained\ntasks:\n  - { id: slow, uses: guest, with: { mode: sleep, ms: 1500 } }\n  - { id: approve, needs: [slow], wait: { signal: go, timeout: 1h } }\noutputs:\n  by: ${{ tasks.approve.output.by }}\n";
    client
        .executions()
        .start(start(flow, "drained-1"))
        .await
        .unwrap();
    // A watch of an execution that will not end before the server stops:
    // it must not keep the server from stopping.
    client
        .executions()
        .start(start(WAITING, "watched"))
        .await
        .unwrap();
    let _open_watch = client
        .executions()
        .watch(pb::WatchRequest {
            execution_id: "watched".into(),
            from: 0,
        })
        .await
        .unwrap()
        .into_inner();
    let mut events = client
        .executions()
        .watch(pb::WatchRequest {
            execution_id: "drained-1".into(),
            from: 0,
        })
        .await
        .unwrap()
        .into_inner();
    while let Some(event) = events.next().await {
        if event.unwrap().kind == "attempt_started" {
            break;
        }
    }
    let sent = std::time::Instant::now();
    let status = server.terminate();
    let took = sent.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(
        took >= std::time::Duration::from_millis(800),
        "it stopped before the running call finished: {took:?}"
    );
    assert!(
        took < std::time::Duration::from_secs(15),
        "an open watch held it: {took:?}"
    );

    // The next start takes the execution up; the call that finished while
    // draining is not made again.
    let server = Server::start_in(dir.path(), Some(admin_key));
    let client = server.client(&key).await;
    client
        .executions()
        .signal(pb::SignalRequest {
            execution_id: "drained-1".into(),
            name: "go".into(),
            payload_json: r#"{"by":"after the restart"}"#.into(),
            ..pb::SignalRequest::default()
        })
        .await
        .unwrap();
    let done = client
        .executions()
        .await_result(pb::AwaitRequest {
            execution_id: "drained-1".into(),
            timeout_ms: 30_000,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(done.status, "succeeded", "{done:?}");
    let events = client
        .executions()
        .get_events(pb::GetEventsRequest {
            execution_id: "drained-1".into(),
            from: 0,
            page_size: 1000,
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let slow_attempts = events
        .iter()
        .filter(|e| e.kind == "attempt_started" && e.fields_json.contains(r#""task":"slow""#))
        .count();
    assert_eq!(slow_attempts, 1, "{events:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_own_limits_refuse_runs_with_which_limit_and_when() {
    use tonic_types::StatusExt;
    let server = Server::start();
    let host = server.client(&server.admin_key).await;
    let limits = |fuel: u64| pb::TenantLimits {
        fuel: Some(fuel),
        ..pb::TenantLimits::default()
    };
    let created = host
        .admin()
        .create_tenant(pb::CreateTenantRequest {
            tenant: "capped".into(),
            limits: Some(limits(1)),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(created.limits.unwrap().fuel, Some(1));
    assert!(created.created_at_ms > 0);
    let again = host
        .admin()
        .create_tenant(pb::CreateTenantRequest {
            tenant: "capped".into(),
            limits: None,
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists);
    let bad = host
        .admin()
        .create_tenant(pb::CreateTenantRequest {
            tenant: "costly".into(),
            limits: Some(pb::TenantLimits {
                cost: Some(-1.0),
                ..pb::TenantLimits::default()
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);

    // A tenant's admin may read its own tenant, not set its limits.
    let capped_admin = server.client(&server.key("capped", "admin").await).await;
    let refused = capped_admin
        .admin()
        .set_tenant_limits(pb::SetTenantLimitsRequest {
            tenant: "capped".into(),
            limits: Some(limits(1_000_000_000)),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);

    // The first run starts (nothing spent yet) and spends fuel; the next
    // is refused, naming the limit and when the period ends.
    let capped = server.client(&server.key("capped", "operator").await).await;
    let flow = "name: small\ntasks:\n  - { id: add, uses: transform, with: { script: '1 + 1' } }\n";
    let id = capped
        .executions()
        .start(start(flow, ""))
        .await
        .unwrap()
        .into_inner()
        .execution_id;
    capped
        .executions()
        .await_result(pb::AwaitRequest {
            execution_id: id,
            timeout_ms: 30_000,
        })
        .await
        .unwrap();
    let refused = capped
        .executions()
        .start(start(flow, ""))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    let details = refused.get_error_details();
    let violation = &details.quota_failure().expect("which limit").violations[0];
    assert_eq!(violation.subject, "quotas.fuel");
    let wait = details
        .retry_info()
        .and_then(|r| r.retry_delay)
        .expect("when to retry");
    assert!(
        wait <= std::time::Duration::from_secs(24 * 3600),
        "{wait:?}"
    );
    let tenant = capped_admin
        .admin()
        .get_tenant(pb::GetTenantRequest::default())
        .await
        .unwrap()
        .into_inner();
    let usage = tenant.usage.unwrap();
    assert!(usage.fuel > 1, "{usage:?}");
    assert!(usage.period_start_ms < usage.period_end_ms);
    assert_eq!(tenant.in_force.unwrap().fuel, Some(1));

    // Raised, the tenant runs again; other tenants were never held.
    host.admin()
        .set_tenant_limits(pb::SetTenantLimitsRequest {
            tenant: "capped".into(),
            limits: Some(limits(1_000_000_000)),
        })
        .await
        .unwrap();
    capped.executions().start(start(flow, "")).await.unwrap();
    let free = server.client(&server.key("free", "operator").await).await;
    free.executions().start(start(flow, "")).await.unwrap();
    let listed = host
        .admin()
        .list_tenants(pb::ListTenantsRequest {})
        .await
        .unwrap()
        .into_inner();
    let ids: Vec<&str> = listed.tenants.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, ["capped"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_execution_handle_follows_across_a_server_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_in(dir.path(), None);
    let admin_key = server.admin_key.clone();
    let address = server.url.trim_start_matches("http://").to_owned();
    let key = server.key("acme", "operator").await;
    let client = server.client(&key).await;
    let execution = client.start(WAITING, &serde_json::json!({})).await.unwrap();
    assert_eq!(execution.status().await.unwrap().status, "running");
    let mut events = execution.events(0);
    let mut seen = Vec::new();
    while let Some(event) = events.next().await {
        let event = event.unwrap();
        let waiting = event.kind == "wait_started";
        seen.push(event);
        if waiting {
            break;
        }
    }
    // The server dies under the stream and comes back on the same port;
    // the same stream goes on from the next event.
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let server = Server::start_with(dir.path(), Some(admin_key), &["--listen", &address]);
    let signalled = {
        let execution = execution.clone();
        tokio::spawn(async move {
            // The client's channel connects again by itself.
            for _ in 0..100 {
                if execution
                    .signal("go", &serde_json::json!({ "by": "ada" }))
                    .await
                    .is_ok()
                {
                    return;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            panic!("the signal never got through");
        })
    };
    while let Some(event) = events.next().await {
        seen.push(event.unwrap());
    }
    signalled.await.unwrap();
    let numbers: Vec<u64> = seen.iter().map(|e| e.number).collect();
    assert_eq!(
        numbers,
        (0..seen.len() as u64).collect::<Vec<_>>(),
        "no gap, no duplicate"
    );
    assert_eq!(seen.last().unwrap().kind, "execution_finished");
    let done = execution.wait().await.unwrap();
    assert_eq!(done.outputs_json, r#"{"result":"approved by ada"}"#);
    // Cancel through a handle on an execution started elsewhere.
    let other = client.start(WAITING, &serde_json::json!({})).await.unwrap();
    client.execution(other.id()).cancel().await.unwrap();
    assert_eq!(other.wait().await.unwrap().status, "cancelled");
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_client_with_no_proto_files_drives_the_server() {
    // `examples/clients/reflection_client.py`: grpcio, with the services
    // and messages taken from the server's reflection.
    let server = Server::start();
    let key = server.key("acme", "operator").await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/clients/reflection_client.py");
    let url = server.url.clone();
    let run = move |args: Vec<String>| {
        let out = common::tools::python_with_grpc()
            .arg(&script)
            .arg(&url)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let call = |key: &str, method: &str, request: serde_json::Value| {
        let run = run.clone();
        let args = vec![key.to_owned(), method.to_owned(), request.to_string()];
        async move {
            tokio::task::spawn_blocking(move || run(args))
                .await
                .unwrap()
        }
    };
    let (code, services, err) = call("", "list", serde_json::json!({})).await;
    assert_eq!(code, Some(0), "{err}");
    assert!(
        services.contains("orchestrator.v1.Executions"),
        "{services}"
    );
    let flow = "name: py\ntasks:\n  - { id: add, uses: transform, with: { script: '1 + 1' } }\noutputs:\n  sum: ${{ tasks.add.output }}\n";
    let (code, started, err) = call(
        &key,
        "orchestrator.v1.Executions/Start",
        serde_json::json!({ "workflow_text": flow, "execution_id": "from-python" }),
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    let started: serde_json::Value = serde_json::from_str(started.trim()).unwrap();
    assert_eq!(started["execution_id"], "from-python");
    let (code, done, err) = call(
        &key,
        "orchestrator.v1.Executions/AwaitResult",
        serde_json::json!({ "execution_id": "from-python", "timeout_ms": 30000 }),
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    let done: serde_json::Value = serde_json::from_str(done.trim()).unwrap();
    assert_eq!(done["status"], "succeeded");
    assert_eq!(done["outputs_json"], r#"{"sum":2}"#);
    let (code, events, err) = call(
        &key,
        "orchestrator.v1.Executions/Watch",
        serde_json::json!({ "execution_id": "from-python" }),
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    let kinds: Vec<String> = events
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(kinds.first().map(String::as_str), Some("execution_started"));
    assert_eq!(kinds.last().map(String::as_str), Some("execution_finished"));
    let (code, _, err) = call(
        "bogus",
        "orchestrator.v1.Executions/List",
        serde_json::json!({}),
    )
    .await;
    assert_eq!(code, Some(1));
    assert!(err.contains("UNAUTHENTICATED"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_asks_a_server_and_prints_what_it_prints_here() {
    let server = Server::start();
    let dir = server._dir.as_ref().unwrap().path().to_owned();
    let key = server.key("acme", "operator").await;
    let client = server.client(&key).await;
    let flow = "name: twice\ntasks:\n  - { id: one, uses: transform, with: { script: '1 + 1' } }\n  - { id: two, uses: transform, needs: [one], with: { n: '${{ tasks.one.output }}', script: 'n * 2' } }\noutputs:\n  four: ${{ tasks.two.output }}\n";
    let done = client.start(flow, &serde_json::json!({})).await.unwrap();
    done.wait().await.unwrap();
    let waiting = client.start(WAITING, &serde_json::json!({})).await.unwrap();
    let cli = |args: &[&str]| {
        let out = common::cli(&dir).args(args).output().unwrap();
        (
            out.status.code(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let remote = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--server", &server.url, "--api-key", &key]);
        let (code, out, err) = cli(&all);
        assert_eq!(code, Some(0), "{args:?}: {err}");
        out
    };
    let status = remote(&["status", done.id()]);
    assert!(status.contains("workflow `twice`  succeeded"), "{status}");
    let events = remote(&["status", done.id(), "--events"]);
    assert!(events.contains("execution_finished"), "{events}");
    let json = remote(&["status", done.id(), "--json"]);
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["record"]["outputs"]["four"], 4);
    let followed = remote(&["status", done.id(), "--follow"]);
    assert!(followed.lines().count() > 4, "{followed}");
    let listed = remote(&["list", "--status", "succeeded"]);
    assert!(
        listed.contains(done.id()) && !listed.contains(waiting.id()),
        "{listed}"
    );
    let signalled = remote(&[
        "signal",
        waiting.id(),
        "go",
        "--payload",
        r#"{"by":"the cli"}"#,
    ]);
    assert!(signalled.contains("delivered signal `go`"), "{signalled}");
    assert_eq!(
        waiting.wait().await.unwrap().outputs_json,
        r#"{"result":"approved by the cli"}"#
    );
    let another = client.start(WAITING, &serde_json::json!({})).await.unwrap();
    let cancelled = remote(&["cancel", another.id()]);
    assert_eq!(
        cancelled.trim(),
        format!("cancelled execution {}", another.id())
    );
    assert_eq!(another.wait().await.unwrap().status, "cancelled");
    let (broken_a, broken_b) = (
        client.start(BROKEN, &serde_json::json!({})).await.unwrap(),
        client.start(BROKEN, &serde_json::json!({})).await.unwrap(),
    );
    broken_a.wait().await.unwrap();
    broken_b.wait().await.unwrap();
    let purged = remote(&["dlq", "purge", &format!("{}/check", broken_a.id())]);
    assert_eq!(purged.trim(), "purged 1 dead letters");
    let letters = remote(&["dlq", "list"]);
    assert!(
        letters.contains(broken_b.id()) && !letters.contains(broken_a.id()),
        "{letters}"
    );
    let letters_json = remote(&["dlq", "list", "--json"]);
    let listed = remote(&["list"]);

    // A verb that does not ask servers yet is refused, not run here.
    let (code, _, err) = cli(&[
        "gc",
        "--older-than",
        "1d",
        "--server",
        &server.url,
        "--api-key",
        &key,
    ]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("`runtime gc` does not work against a server yet"),
        "{err}"
    );
    let (code, _, err) = cli(&[
        "status",
        "nothing",
        "--server",
        &server.url,
        "--api-key",
        &key,
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("no execution `nothing`"), "{err}");

    // The same verbs on the stopped server's store print the same.
    let mut server = server;
    assert!(server.terminate().success());
    let here = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--tenant", "acme"]);
        let (code, out, err) = cli(&all);
        assert_eq!(code, Some(0), "{args:?}: {err}");
        out
    };
    assert_eq!(here(&["status", done.id()]), status);
    assert_eq!(here(&["status", done.id(), "--events"]), events);
    assert_eq!(here(&["status", done.id(), "--follow"]), followed);
    assert_eq!(here(&["list"]), listed);
    assert_eq!(here(&["dlq", "list"]), letters);
    assert_eq!(here(&["dlq", "list", "--json"]), letters_json);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_checks_the_key_and_the_role() {
    let server = Server::start();
    // The admin is the host's (tenant `default`): some Admin RPCs are the
    // host's alone. A tenant's admin is held to its tenant in the tests
    // across tenants.
    let mut keys = Vec::new();
    for role in Role::ALL {
        let tenant = if role == Role::Admin {
            "default"
        } else {
            "acme"
        };
        keys.push((role, server.key(tenant, role.as_str()).await));
    }
    for (rpc, _) in PERMISSIONS {
        for (role, key) in &keys {
            let code = call(&server.client(key).await, rpc).await;
            if permitted(rpc, *role) {
                assert!(
                    !matches!(code, Code::PermissionDenied | Code::Unauthenticated),
                    "{rpc} as {}: {code:?}",
                    role.as_str()
                );
            } else {
                assert_eq!(code, Code::PermissionDenied, "{rpc} as {}", role.as_str());
            }
        }
        // No key, a made-up key, a revoked key: refused, streams included.
        let code = call(&server.client("").await, rpc).await;
        assert_eq!(code, Code::Unauthenticated, "{rpc} without a key");
        let made_up = format!("oo_0123456789abcdef_{}", "0".repeat(64));
        let code = call(&server.client(&made_up).await, rpc).await;
        assert_eq!(code, Code::Unauthenticated, "{rpc} with a made-up key");
    }
    let admin = server.client(&server.admin_key).await;
    let (_, operator) = &keys[1];
    let id = operator.split('_').nth(1).unwrap().to_owned();
    admin
        .admin()
        .revoke_api_key(pb::RevokeApiKeyRequest { key_id: id })
        .await
        .unwrap();
    for rpc in [
        "orchestrator.v1.Executions/Start",
        "orchestrator.v1.Executions/Watch",
    ] {
        let code = call(&server.client(operator).await, rpc).await;
        assert_eq!(code, Code::Unauthenticated, "{rpc} with a revoked key");
    }
    // The keys listed carry no secret.
    let listed = admin
        .admin()
        .list_api_keys(pb::ListApiKeysRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.keys.len(), 5, "the bootstrap key and four more");
    let text = format!("{listed:?}");
    for (_, key) in &keys {
        assert!(!text.contains(key.rsplit('_').next().unwrap()));
    }
}

/// Calls `rpc` with an empty request as `client`; its status code (`Ok`
/// when it answered).
async fn call(client: &Client, rpc: &str) -> Code {
    let ex = client.executions();
    let admin = client.admin();
    let result = match rpc {
        "orchestrator.v1.Executions/Start" => ex.clone().start(start("", "")).await.map(|_| ()),
        "orchestrator.v1.Executions/Get" => {
            ex.clone().get(pb::GetRequest::default()).await.map(|_| ())
        }
        "orchestrator.v1.Executions/List" => ex
            .clone()
            .list(pb::ListRequest::default())
            .await
            .map(|_| ()),
        "orchestrator.v1.Executions/Watch" => ex
            .clone()
            .watch(pb::WatchRequest::default())
            .await
            .map(|_| ()),
        "orchestrator.v1.Executions/AwaitResult" => ex
            .clone()
            .await_result(pb::AwaitRequest::default())
            .await
            .map(|_| ()),
        "orchestrator.v1.Executions/Signal" => ex
            .clone()
            .signal(pb::SignalRequest::default())
            .await
            .map(|_| ()),
        "orchestrator.v1.Executions/Cancel" => ex
            .clone()
            .cancel(pb::CancelRequest::default())
            .await
            .map(|_| ()),
        "orchestrator.v1.Executions/GetEvents" => ex
            .clone()
            .get_events(pb::GetEventsRequest::default())
            .await
            .map(|_| ()),
        "orchestrator.v1.Executions/Resume" => ex
            .clone()
            .resume(pb::ResumeRequest::default())
            .await
            .map(|_| ()),
        "orchestrator.v1.Executions/ListDeadLetters" => ex
            .clone()
            .list_dead_letters(pb::ListDeadLettersRequest::default())
            .await
            .map(|_| ()),
        "orchestrator.v1.Executions/ReplayDeadLetter" => ex
            .clone()
            .replay_dead_letter(pb::ReplayDeadLetterRequest::default())
            .await
            .map(|_| ()),
        "orchestrator.v1.Executions/Purge" => ex
            .clone()
            .purge(pb::PurgeRequest::default())
            .await
            .map(|_| ()),
        "orchestrator.v1.Plugins/Install" => client
            .plugins()
            .install(tokio_stream::iter([pb::InstallChunk::default()]))
            .await
            .map(|_| ()),
        "orchestrator.v1.Plugins/Get" => client
            .plugins()
            .get(pb::GetPluginRequest::default())
            .await
            .map(|_| ()),
        "orchestrator.v1.Plugins/List" => client
            .plugins()
            .list(pb::ListPluginsRequest::default())
            .await
            .map(|_| ()),
        "orchestrator.v1.Plugins/Grant" => client
            .plugins()
            .grant(pb::GrantRequest::default())
            .await
            .map(|_| ()),
        "orchestrator.v1.Plugins/Remove" => client
            .plugins()
            .remove(pb::RemovePluginRequest::default())
            .await
            .map(|_| ()),
        "orchestrator.v1.Workflows/Register" => client
            .workflows()
            .register(pb::RegisterRequest::default())
            .await
            .map(|_| ()),
        "orchestrator.v1.Workflows/List" => client
            .workflows()
            .list(pb::ListWorkflowsRequest::default())
            .await
            .map(|_| ()),
        "orchestrator.v1.Workflows/Get" => client
            .workflows()
            .get(pb::GetWorkflowRequest::default())
            .await
            .map(|_| ()),
        "orchestrator.v1.Workflows/Validate" => client
            .workflows()
            .validate(pb::ValidateRequest::default())
            .await
            .map(|_| ()),
        "orchestrator.v1.Admin/CreateApiKey" => admin
            .clone()
            .create_api_key(pb::CreateApiKeyRequest::default())
            .await
            .map(|_| ()),
        "orchestrator.v1.Admin/ListApiKeys" => admin
            .clone()
            .list_api_keys(pb::ListApiKeysRequest::default())
            .await
            .map(|_| ()),
        "orchestrator.v1.Admin/RevokeApiKey" => admin
            .clone()
            .revoke_api_key(pb::RevokeApiKeyRequest::default())
            .await
            .map(|_| ()),
        "orchestrator.v1.Admin/ListAudit" => admin
            .clone()
            .list_audit(pb::ListAuditRequest::default())
            .await
            .map(|_| ()),
        "orchestrator.v1.Admin/CreateTenant" => admin
            .clone()
            .create_tenant(pb::CreateTenantRequest::default())
            .await
            .map(|_| ()),
        "orchestrator.v1.Admin/SetTenantLimits" => admin
            .clone()
            .set_tenant_limits(pb::SetTenantLimitsRequest::default())
            .await
            .map(|_| ()),
        "orchestrator.v1.Admin/GetTenant" => admin
            .clone()
            .get_tenant(pb::GetTenantRequest::default())
            .await
            .map(|_| ()),
        "orchestrator.v1.Admin/ListTenants" => admin
            .clone()
            .list_tenants(pb::ListTenantsRequest::default())
            .await
            .map(|_| ()),
        other => panic!("the test does not know how to call {other}"),
    };
    match result {
        Ok(()) => Code::Ok,
        Err(status) => status.code(),
    }
}

/// The services the server lists through reflection.
async fn list_services(channel: tonic::transport::Channel) -> Vec<String> {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.next().await.unwrap().unwrap();
    match answer.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("not a list of services: {other:?}"),
    }
}
