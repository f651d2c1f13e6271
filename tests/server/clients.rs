//! Other clients: the Rust remote handle across a restart, a Python
//! client with no proto files, the command line with `--server`.

use crate::harness::*;

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
    let followed = remote(&["status", done.id(), "--follow", "--events"]);
    assert!(followed.lines().count() > 4, "{followed}");
    // A run on the server shows a fan-out's progress as a local one does.
    let fan_out = dir.join("fan-out.yaml");
    std::fs::write(
        &fan_out,
        "name: fan\ntasks:\n  - id: each\n    uses: transform\n    for_each: ${{ [1, 2, 3, 4, 5, 6, 7, 8, 9, 10] }}\n    with: { n: '${{ item }}', script: 'n * 2' }\n",
    )
    .unwrap();
    let (code, _, err) = cli(&[
        "run",
        fan_out.to_str().unwrap(),
        "--server",
        &server.url,
        "--api-key",
        &key,
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("started  each  transform  10 items"), "{err}");
    assert!(err.contains("items  each  10/10 items"), "{err}");
    assert!(
        err.contains(" wall, ") && err.contains(" in items"),
        "{err}"
    );
    // And a follower sees it the same way.
    let fan_id = err
        .lines()
        .find_map(|l| l.strip_prefix("execution "))
        .expect("the run names its execution")
        .to_owned();
    let (code, _, shown) = cli(&[
        "status",
        &fan_id,
        "--follow",
        "--server",
        &server.url,
        "--api-key",
        &key,
    ]);
    assert_eq!(code, Some(0), "{shown}");
    for line in [
        "started  each  transform  10 items",
        "items  each  10/10 items",
        " in items",
    ] {
        assert!(shown.contains(line), "{line}: {shown}");
    }
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
    // A purged letter is still shown, as purged.
    let purged_letter = format!("{}/check", broken_a.id());
    let purged_shown = remote(&["dlq", "show", &purged_letter]);
    assert!(
        purged_shown.starts_with(&format!("dead letter {purged_letter}  (purged)")),
        "{purged_shown}"
    );
    let letters_json = remote(&["dlq", "list", "--json"]);
    let listed = remote(&["list"]);

    // A verb that works on this host's store only is refused, not run here.
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
        err.contains("`runtime gc` works on this host's store only"),
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
    assert_eq!(
        here(&["status", done.id(), "--follow", "--events"]),
        followed
    );
    assert_eq!(here(&["list"]), listed);
    assert_eq!(here(&["dlq", "list"]), letters);
    assert_eq!(here(&["dlq", "list", "--json"]), letters_json);
    assert_eq!(here(&["dlq", "show", &purged_letter]), purged_shown);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_runs_resumes_and_replays_on_a_server() {
    let mut server = Server::start();
    let dir = server._dir.as_ref().unwrap().path().to_owned();
    let key = server.key("acme", "operator").await;
    let url = server.url.clone();
    let flows = tempfile::tempdir().unwrap();
    let flow = flows.path().join("twice.yaml");
    std::fs::write(
        &flow,
        "name: twice\ninputs:\n  n: { type: string }\ntasks:\n  - { id: one, uses: transform, with: { n: '${{ inputs.n }}', script: 'parse_int(n) + 1' } }\n  - { id: two, uses: transform, needs: [one], with: { n: '${{ tasks.one.output }}', script: 'n * 2' } }\noutputs:\n  doubled: ${{ tasks.two.output }}\n",
    )
    .unwrap();
    let broken = flows.path().join("broken.yaml");
    std::fs::write(&broken, BROKEN).unwrap();
    let cli = |args: &[&str], remote: bool| {
        let mut all = args.to_vec();
        if remote {
            all.extend(["--server", &url, "--api-key", &key]);
        } else {
            all.extend(["--tenant", "acme"]);
        }
        let out = common::cli(&dir).args(&all).output().unwrap();
        (
            out.status.code(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let flow_arg = flow.to_str().unwrap();

    // A run on the server prints its progress from the event stream, then
    // the summary and outputs a run here prints.
    let (code, out, err) = cli(&["run", flow_arg, "--input", "n=20"], true);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap(),
        serde_json::json!({"doubled": 42})
    );
    let id = err
        .lines()
        .find_map(|l| l.strip_prefix("execution "))
        .expect("the execution's id first")
        .to_owned();
    for line in ["started  one  transform", "started  two  transform"] {
        assert!(err.contains(line), "{line}: {err}");
    }
    assert!(
        err.contains(&format!("workflow `twice` ({id}) succeeded in")),
        "{err}"
    );
    let (code, out, _) = cli(
        &["run", flow_arg, "--input", "n=1", "--output", "json"],
        true,
    );
    assert_eq!(code, Some(0));
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["status"], "succeeded");
    assert_eq!(report["outputs"]["doubled"], 4);
    assert_eq!(report["tasks"].as_array().unwrap().len(), 2);
    let (code, _, err) = cli(
        &["run", flow_arg, "--input", "n=1", "--concurrency", "2"],
        true,
    );
    assert_eq!(code, Some(2));
    assert!(err.contains("--concurrency"), "{err}");

    // A failing run: exit 1, its dead letter shown and replayed remotely.
    let (code, _, err) = cli(&["run", broken.to_str().unwrap()], true);
    assert_eq!(code, Some(1), "{err}");
    let failed = err
        .lines()
        .find_map(|l| l.strip_prefix("execution "))
        .unwrap()
        .to_owned();
    let letter = format!("{failed}/check");
    let (code, shown, err) = cli(&["dlq", "show", &letter], true);
    assert_eq!(code, Some(0), "{err}");
    assert!(shown.contains(&format!("dead letter {letter}")), "{shown}");
    assert!(shown.contains("attempt 1 failed"), "{shown}");
    let (code, _, err) = cli(&["dlq", "show", &format!("{failed}/after")], true);
    assert_eq!(code, Some(2));
    assert!(err.contains("has no dead letter for task `after`"), "{err}");
    let (code, _, err) = cli(&["dlq", "replay", &letter], true);
    assert_eq!(code, Some(1), "it fails again: {err}");
    assert!(
        err.contains(&format!(
            "dead letter {letter}: replaying `check`, then 1 tasks that did not run"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("workflow `broken` ({failed}) failed in")),
        "{err}"
    );

    let (_, shown, _) = cli(&["dlq", "show", &letter], true);
    let (_, shown_json, _) = cli(&["dlq", "show", &letter, "--json"], true);
    assert_eq!(shown.matches("attempt 1 failed").count(), 2, "{shown}");
    let (code, out, err) = cli(&["resume", "--all"], true);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.trim(), "no interrupted executions");

    // The stopped server's store shows the same dead letter.
    assert!(server.terminate().success());
    let (code, here, err) = cli(&["dlq", "show", &letter], false);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(here, shown);
    assert_eq!(
        cli(&["dlq", "show", &letter, "--json"], false).1,
        shown_json
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_installs_plugins_and_registers_workflows_on_a_server() {
    let mut server = Server::start();
    let dir = server._dir.as_ref().unwrap().path().to_owned();
    let developer = server.key("acme", "developer").await;
    let admin = server.key("acme", "admin").await;
    let url = server.url.clone();
    let files = tempfile::tempdir().unwrap();
    let flow = files.path().join("twice.yaml");
    std::fs::write(
        &flow,
        "name: twice\ntasks:\n  - { id: one, uses: transform, with: { script: '1 + 1' } }\noutputs:\n  two: ${{ tasks.one.output }}\n",
    )
    .unwrap();
    let not_wasm = files.path().join("notes.wasm");
    std::fs::write(&not_wasm, "not a component").unwrap();
    let cli = |args: &[&str], key: Option<&str>| {
        let mut all = args.to_vec();
        match key {
            Some(key) => all.extend(["--server", &url, "--api-key", key]),
            None => all.extend(["--tenant", "acme"]),
        }
        let out = common::cli(&dir).args(&all).output().unwrap();
        (
            out.status.code(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let remote = |args: &[&str]| {
        let (code, out, err) = cli(args, Some(&developer));
        assert_eq!(code, Some(0), "{args:?}: {err}");
        out
    };
    let guest = env!("TEST_GUEST_WASM");

    let installed = remote(&[
        "install",
        guest,
        "--name",
        "guest",
        "--version",
        "1.0.0",
        "--allow-http",
        "api.example.com",
    ]);
    assert!(
        installed.starts_with("installed guest@1.0.0\n"),
        "{installed}"
    );
    assert!(
        installed.contains("  granted    http: api.example.com"),
        "{installed}"
    );
    let again = remote(&[
        "install",
        guest,
        "--name",
        "guest",
        "--version",
        "1.0.0",
        "--allow-http",
        "api.example.com",
    ]);
    assert!(
        again.starts_with("already installed: guest@1.0.0"),
        "{again}"
    );
    // Bad bytes are refused naming the file, as here.
    let (code, _, err) = cli(&["install", not_wasm.to_str().unwrap()], Some(&developer));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("notes.wasm"), "{err}");
    // Directories are the server host's; environment variables an admin's.
    let (code, _, err) = cli(
        &["plugins", "grant", "guest", "--allow-dir", "/data=/tmp"],
        Some(&developer),
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("directories are the server host's"), "{err}");
    let (code, _, err) = cli(
        &["plugins", "grant", "guest", "--allow-env", "HOME"],
        Some(&developer),
    );
    assert_ne!(code, Some(0), "{err}");
    assert!(err.contains("only an admin key grants them"), "{err}");
    let granted = remote(&[
        "plugins",
        "grant",
        "guest",
        "--allow-http",
        "docs.example.com",
    ]);
    assert!(
        granted.starts_with("updated the grants of guest@1.0.0"),
        "{granted}"
    );
    let (code, secret, err) = cli(
        &["plugins", "grant", "guest", "--allow-secret", "api-token"],
        Some(&admin),
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(
        secret.contains("note       secret `api-token` is not configured on the server yet"),
        "{secret}"
    );

    let registered = remote(&["workflows", "add", flow.to_str().unwrap()]);
    assert_eq!(
        registered.trim(),
        "registered workflow twice@1; tasks run it with `uses: workflow:twice`"
    );
    let same = remote(&["workflows", "add", flow.to_str().unwrap()]);
    assert_eq!(
        same.trim(),
        "workflow twice@1 is registered with this text already"
    );
    let broken = files.path().join("broken.yaml");
    std::fs::write(
        &broken,
        "name: broken\ntasks:\n  - { id: a, uses: nowhere }\n",
    )
    .unwrap();
    let (code, _, err) = cli(
        &["workflows", "add", broken.to_str().unwrap()],
        Some(&developer),
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("broken.yaml:3:"), "{err}");

    // The same bytes under a second name, removed again: the component
    // stays for the first.
    remote(&["install", guest, "--name", "spare", "--version", "0.1.0"]);
    assert_eq!(
        remote(&["plugins", "remove", "spare@0.1.0"]).trim(),
        "removed spare@0.1.0; its component stays (another name uses it)"
    );

    let listed = remote(&["plugins", "list"]);
    assert!(listed.contains("guest@1.0.0"), "{listed}");
    assert!(listed.contains("built-in"), "{listed}");
    let listed_json = remote(&["plugins", "list", "--json"]);
    let shown = remote(&["plugins", "show", "guest"]);
    assert!(shown.contains("  input schema"), "{shown}");
    let shown_json = remote(&["plugins", "show", "guest@1.0.0", "--json"]);
    let workflows = remote(&["workflows", "list"]);
    assert!(workflows.contains("twice@1  "), "{workflows}");
    let workflows_json = remote(&["workflows", "list", "--json"]);

    // The stopped server's store prints the same.
    assert!(server.terminate().success());
    let here = |args: &[&str]| {
        let (code, out, err) = cli(args, None);
        assert_eq!(code, Some(0), "{args:?}: {err}");
        out
    };
    assert_eq!(here(&["plugins", "list"]), listed);
    assert_eq!(here(&["plugins", "list", "--json"]), listed_json);
    assert_eq!(here(&["plugins", "show", "guest"]), shown);
    assert_eq!(
        here(&["plugins", "show", "guest@1.0.0", "--json"]),
        shown_json
    );
    assert_eq!(here(&["workflows", "list"]), workflows);
    assert_eq!(here(&["workflows", "list", "--json"]), workflows_json);

    assert_eq!(
        here(&["plugins", "remove", "guest@1.0.0"]).trim(),
        "removed guest@1.0.0; its component was deleted (no other name uses it)"
    );
}
