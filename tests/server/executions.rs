//! Executions through the API: tenants apart, watching across a
//! disconnect, signals, cancels, idempotent starts, a server killed
//! mid-run, plugins and workflows per tenant, dead letters, paged events,
//! retried requests, concurrent starts.

use crate::harness::*;

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
    // Only its wait is left, so it parks: its file closed, `<id>.sock` a
    // link to the server's parked socket. Killed then, the run is an
    // interrupted one like any other.
    let link = dir
        .path()
        .join("executions/tenants/acme")
        .join(format!("{id}.sock"));
    let parking = std::time::Instant::now();
    while !std::fs::symlink_metadata(&link).is_ok_and(|m| m.file_type().is_symlink()) {
        assert!(
            parking.elapsed() < std::time::Duration::from_secs(20),
            "the run parks"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    server.child.kill().unwrap();
    server.child.wait().unwrap();
    let acme = orchestrator_engine::tenant::TenantId::new("acme").unwrap();
    let executions =
        orchestrator_engine::store::executions::ExecutionsAt::Beside(dir.path().join("store.redb"))
            .tenant(&acme);
    assert_eq!(
        orchestrator_engine::executions::interrupted(&executions),
        [id.as_str()]
    );

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
    let chunks = guest_chunks(
        "guest",
        pb::Grants {
            http_hosts: vec!["api.example.com".into()],
            ..pb::Grants::default()
        },
    );
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
