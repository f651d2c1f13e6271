//! Tenants: what one tenant installs, registers, runs and caches, another
//! cannot use, see or even detect, through the binary (`--tenant`) and the
//! engine API.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

mod common;

use std::path::Path;
use std::process::Output;

use common::cli;
use orchestrator_engine::{Engine, Task, Workflow, tenant::TenantId};
use serde_json::{Value, json};

const GUEST: &str = env!("TEST_GUEST_WASM");

fn as_tenant(dir: &Path, tenant: &str, args: &[&str]) -> Output {
    cli(dir)
        .arg("--tenant")
        .arg(tenant)
        .args(args)
        .output()
        .unwrap()
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The error text of a refused command, with `id` written as `ID`.
fn refusal(out: &Output, id: &str) -> String {
    assert!(!out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stderr).replace(id, "ID")
}

#[test]
fn a_tenant_cannot_use_see_or_detect_another_tenants_data() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let data = dir.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let grant = format!("/data={}", data.display());
    let install_marker = |tenant: &str| {
        let args = [
            "install",
            GUEST,
            "--name",
            "marker",
            "--allow-dir-write",
            &grant,
        ];
        ok(&as_tenant(dir, tenant, &args))
    };
    install_marker("acme");

    // Plugins: listed, shown and usable only by their tenant.
    assert!(ok(&as_tenant(dir, "acme", &["plugins", "list"])).contains("marker"));
    assert!(!ok(&as_tenant(dir, "globex", &["plugins", "list"])).contains("marker"));
    let flow = dir.join("flow.yaml");
    std::fs::write(
        &flow,
        "name: marked\ntasks:\n  - { id: mark, uses: marker, with: { mode: mark, value: 1 }, cache: { ttl: 1h } }\n  - { id: approve, needs: [mark], wait: { signal: go, timeout: 1h } }\n",
    )
    .unwrap();
    let flow = flow.to_str().unwrap();
    let refused = as_tenant(dir, "globex", &["run", flow]);
    assert!(!refused.status.success());
    let unknown = as_tenant(dir, "globex", &["plugins", "show", "marker"]);
    let nothing = as_tenant(dir, "globex", &["plugins", "show", "nothing-here"]);
    assert_eq!(
        refusal(&unknown, "marker"),
        refusal(&nothing, "nothing-here"),
        "an unknown plugin and another tenant's look the same"
    );
    let listed: Value =
        serde_json::from_str(&ok(&as_tenant(dir, "acme", &["plugins", "list", "--json"]))).unwrap();
    let version = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "marker")
        .unwrap()["version"]
        .as_str()
        .unwrap()
        .to_owned();
    let theirs = format!("marker@{version}");
    let none = format!("nothing-here@{version}");
    for (verb, extra) in [("grant", &["--allow-env", "HOME"][..]), ("remove", &[][..])] {
        let ask = |plugin: &str| {
            let mut args = vec!["plugins", verb, plugin];
            args.extend_from_slice(extra);
            as_tenant(dir, "globex", &args)
        };
        assert_eq!(
            refusal(&ask(&theirs), "marker"),
            refusal(&ask(&none), "nothing-here"),
            "plugins {verb}"
        );
    }
    assert!(
        ok(&as_tenant(dir, "acme", &["plugins", "list"])).contains("marker"),
        "acme's plugin is still there"
    );

    // Executions: acme's is invisible to globex, and indistinguishable from
    // one that does not exist.
    let (mut run, id) = common::spawn_cli(dir, &["--tenant", "acme", "run", flow]);
    let made_up = "18eb1c7ef6fc02e8-26db";
    for args in [
        vec!["status", "ID", "--json"],
        vec!["cancel", "ID"],
        vec!["signal", "ID", "go"],
        vec!["resume", "ID"],
        vec!["status", "ID", "--follow"],
    ] {
        let theirs: Vec<&str> = args
            .iter()
            .map(|a| if *a == "ID" { id.as_str() } else { a })
            .collect();
        let none: Vec<&str> = args
            .iter()
            .map(|a| if *a == "ID" { made_up } else { a })
            .collect();
        assert_eq!(
            refusal(&as_tenant(dir, "globex", &theirs), &id),
            refusal(&as_tenant(dir, "globex", &none), made_up),
            "{args:?}"
        );
    }
    assert!(!ok(&as_tenant(dir, "globex", &["list"])).contains(&id));
    assert!(ok(&as_tenant(dir, "acme", &["list"])).contains(&id));
    ok(&as_tenant(dir, "acme", &["signal", &id, "go"]));
    assert!(run.wait().unwrap().success());

    // The response cache: acme's cached answer is not globex's.
    install_marker("globex");
    let once = dir.join("once.yaml");
    std::fs::write(
        &once,
        "name: once\ntasks:\n  - { id: cached, uses: marker, with: { mode: mark, value: 2 }, cache: { ttl: 1h } }\n",
    )
    .unwrap();
    let once = once.to_str().unwrap();
    let marks = || {
        std::fs::read_to_string(data.join("cached"))
            .unwrap_or_default()
            .lines()
            .count()
    };
    ok(&as_tenant(dir, "acme", &["run", once]));
    ok(&as_tenant(dir, "acme", &["run", once]));
    assert_eq!(marks(), 1, "acme's second run is answered from its cache");
    ok(&as_tenant(dir, "globex", &["run", once]));
    assert_eq!(marks(), 2, "globex's run is not answered from acme's cache");

    // Registered workflows.
    ok(&as_tenant(dir, "acme", &["workflows", "add", once]));
    assert!(ok(&as_tenant(dir, "acme", &["workflows", "list"])).contains("once"));
    assert!(!ok(&as_tenant(dir, "globex", &["workflows", "list"])).contains("once"));

    // A tenant id that could escape is refused.
    let bad = as_tenant(dir, "../acme", &["list"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("cannot name a tenant"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_api_keeps_tenants_apart() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store.redb");
    let acme = Engine::builder()
        .store(&store)
        .tenant(TenantId::new("acme").unwrap())
        .build()
        .await
        .unwrap();
    let workflow = Workflow::builder("hello")
        .task(Task::new("hi", "transform").with("script", r#""hi""#))
        .build()
        .unwrap();
    let execution = acme.start(&workflow, json!({})).await.unwrap();
    execution.wait().await.unwrap();
    let id = execution.id().to_owned();
    assert!(acme.execution(&id).await.is_ok());

    let globex = acme
        .for_tenant(TenantId::new("globex").unwrap())
        .await
        .unwrap();
    let theirs = globex.execution(&id).await.unwrap_err().to_string();
    let none = globex
        .execution("18eb1c7ef6fc02e8-26db")
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        theirs.replace(&id, "ID"),
        none.replace("18eb1c7ef6fc02e8-26db", "ID")
    );
    // Built-in plugins are every tenant's.
    let own = globex.start(&workflow, json!({})).await.unwrap();
    assert_eq!(
        own.wait().await.unwrap().record.status,
        orchestrator_engine::store::executions::ExecutionStatus::Succeeded
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenants_fan_out_does_not_starve_another_tenants_task() {
    let dir = tempfile::tempdir().unwrap();
    // Two task slots for the whole process, shared by both tenants.
    let config =
        orchestrator_engine::config::Config::parse("capacity: { tasks: 2 }\n", "config.yaml")
            .unwrap();
    let acme = Engine::builder()
        .store(dir.path().join("store.redb"))
        .config(config)
        .tenant(TenantId::new("acme").unwrap())
        .build()
        .await
        .unwrap();
    let globex = acme
        .for_tenant(TenantId::new("globex").unwrap())
        .await
        .unwrap();
    let sleep = |id: &str| Task::new(id, GUEST).with("mode", "sleep").with("ms", 50);
    let fan_out = Workflow::builder("fan-out")
        .input("items", "array")
        .task(
            sleep("each")
                .set("for_each", "${{ inputs.items }}")
                .set("concurrency", 200),
        )
        .build()
        .unwrap();
    let items: Vec<u32> = (0..200).collect();
    let big = acme
        .start(&fan_out, json!({ "items": items }))
        .await
        .unwrap();
    // Its items hold both slots and queue for them.
    let mut events = big.events(0);
    let mut started = 0;
    while started < 2 {
        let (_, event) = events.next().await.unwrap().unwrap();
        if matches!(
            event.kind,
            orchestrator_engine::store::executions::EventKind::AttemptStarted { .. }
        ) {
            started += 1;
        }
    }

    let single = Workflow::builder("one").task(sleep("one")).build().unwrap();
    let small = globex.start(&single, json!({})).await.unwrap();
    let done = small.wait().await.unwrap();
    assert_eq!(
        done.record.status,
        orchestrator_engine::store::executions::ExecutionStatus::Succeeded
    );
    // Served in turn: it waited for one freed slot, not for acme's queue.
    let finished = big.status().await.unwrap().tasks.len();
    assert!(
        finished < 20,
        "{finished} of acme's 200 items finished before globex's one task"
    );
    big.cancel().await.unwrap();
    big.wait().await.unwrap();
}

/// An engine for tenant `acme` on a fresh store under `capacity`.
async fn acme_with(dir: &Path, capacity: &str) -> Engine {
    let config = orchestrator_engine::config::Config::parse(capacity, "config.yaml").unwrap();
    Engine::builder()
        .store(dir.join("store.redb"))
        .config(config)
        .tenant(TenantId::new("acme").unwrap())
        .build()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_runs_no_more_calls_at_once_than_its_share() {
    let dir = tempfile::tempdir().unwrap();
    let acme = acme_with(
        dir.path(),
        "capacity: { tasks: 8, per_tenant: { tasks: 2 } }\n",
    )
    .await;
    let spans = Workflow::builder("spans")
        .input("items", "array")
        .task(
            Task::new("each", GUEST)
                .with("mode", "span")
                .with("ms", 100)
                .set("for_each", "${{ inputs.items }}")
                .set("concurrency", 6),
        )
        .output("spans", "${{ tasks.each.output }}")
        .build()
        .unwrap();
    let run = acme
        .start(&spans, json!({ "items": [1, 2, 3, 4, 5, 6] }))
        .await
        .unwrap();
    let done = run.wait().await.unwrap();
    let spans: Vec<(u64, u64)> = done.record.outputs["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["start"].as_u64().unwrap(), s["end"].as_u64().unwrap()))
        .collect();
    assert_eq!(spans.len(), 6);
    // How many calls ran at once, at worst: never more than the share.
    let most = spans
        .iter()
        .map(|(start, _)| {
            spans
                .iter()
                .filter(|(s, e)| s <= start && start < e)
                .count()
        })
        .max()
        .unwrap();
    assert_eq!(most, 2, "{spans:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_past_its_runs_is_busy_and_others_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let acme = acme_with(
        dir.path(),
        "capacity: { per_tenant: { runs: 1, queued_runs: 0 } }\n",
    )
    .await;
    let globex = acme
        .for_tenant(TenantId::new("globex").unwrap())
        .await
        .unwrap();
    let waiting = Workflow::builder("approval")
        .task(Task::wait("approve", "go"))
        .build()
        .unwrap();
    let first = acme.start(&waiting, json!({})).await.unwrap();
    let mut events = first.events(0);
    loop {
        let (_, event) = events.next().await.unwrap().unwrap();
        if matches!(
            event.kind,
            orchestrator_engine::store::executions::EventKind::WaitStarted { .. }
        ) {
            break;
        }
    }
    let second = acme.start(&waiting, json!({})).await.unwrap();
    let busy = second.wait().await.unwrap_err().to_string();
    assert!(
        busy.contains("tenant `acme` is busy")
            && busy.contains("capacity.per_tenant.runs: 1")
            && busy.contains("capacity.per_tenant.queued_runs: 0"),
        "{busy}"
    );
    // Another tenant's run is not held up by acme's limit.
    let other = globex.start(&waiting, json!({})).await.unwrap();
    other.signal("go", json!(1)).await.unwrap();
    assert!(other.wait().await.is_ok());
    first.signal("go", json!(2)).await.unwrap();
    assert!(first.wait().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_past_a_tenants_rate_limit_wait_their_turn_and_others_do_not() {
    let server = common::TestServer::start(|_| (200, Vec::new(), b"ok".to_vec()));
    let dir = tempfile::tempdir().unwrap();
    let grant = server.addr.to_string();
    for tenant in ["acme", "globex"] {
        let args = ["install", GUEST, "--name", "getter", "--allow-http", &grant];
        ok(&as_tenant(dir.path(), tenant, &args));
    }
    // Two requests at once per tenant and host, then one every 500 ms.
    let acme = acme_with(
        dir.path(),
        "rate_limits: { \"127.0.0.1\": { requests: 2, per: 1s } }\n",
    )
    .await;
    let globex = acme
        .for_tenant(TenantId::new("globex").unwrap())
        .await
        .unwrap();
    let get = |path: &str| {
        Task::new("get", "getter")
            .with("mode", "http")
            .with("url", server.url(path))
    };
    let burst = Workflow::builder("burst")
        .input("items", "array")
        .task(
            get("/acme")
                .set("for_each", "${{ inputs.items }}")
                .set("concurrency", 6),
        )
        .build()
        .unwrap();
    let one = Workflow::builder("one")
        .task(get("/globex"))
        .build()
        .unwrap();
    let acme_run = acme
        .start(&burst, json!({ "items": [1, 2, 3, 4, 5, 6] }))
        .await
        .unwrap();
    let globex_run = globex.start(&one, json!({})).await.unwrap();
    acme_run.wait().await.unwrap();
    globex_run.wait().await.unwrap();

    let arrivals = |path: &str| {
        let mut at: Vec<std::time::Instant> = server
            .requests()
            .into_iter()
            .filter(|r| r.path == path)
            .map(|r| r.at)
            .collect();
        at.sort();
        at
    };
    let acme_at = arrivals("/acme");
    let globex_at = arrivals("/globex");
    assert_eq!((acme_at.len(), globex_at.len()), (6, 1));
    let after = |i: usize| acme_at[i].duration_since(acme_at[0]).as_millis();
    // The burst goes at once; the rest are paced, 500 ms apart.
    assert!(after(1) < 300, "{}", after(1));
    assert!(after(2) >= 400, "{}", after(2));
    assert!(after(5) >= 1800, "{}", after(5));
    // globex's request did not wait behind acme's queue.
    let globex_after = globex_at[0]
        .saturating_duration_since(acme_at[0])
        .as_millis();
    assert!(globex_after < 400, "globex waited {globex_after} ms");
}

/// The test guest with a custom section appended: still a valid component,
/// with other bytes (another digest).
fn another_build(dir: &Path) -> std::path::PathBuf {
    let mut bytes = std::fs::read(GUEST).unwrap();
    // Custom section (id 0): 5 bytes, a name of 4 bytes, "note".
    bytes.extend_from_slice(&[0, 5, 4, b'n', b'o', b't', b'e']);
    let path = dir.join("another.wasm");
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn a_tenant_at_its_plugin_quota_is_refused_and_others_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let size = std::fs::metadata(GUEST).unwrap().len();
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!("quotas: {{ plugins: 2, plugin_bytes: {} }}\n", size + 3),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let install = |tenant: &str, file: &str, name: &str| {
        as_tenant(
            dir,
            tenant,
            &[
                "--config",
                config,
                "install",
                file,
                "--name",
                name,
                "--version",
                "1",
            ],
        )
    };
    ok(&install("acme", GUEST, "one"));
    // The same bytes again take no more room.
    ok(&install("acme", GUEST, "two"));
    ok(&install("acme", GUEST, "two"));
    let third = install("acme", GUEST, "three");
    let error = String::from_utf8_lossy(&third.stderr);
    assert!(
        error.contains("tenant `acme` is at its quota of 2 installed plugins (it has 2)")
            && error.contains("quotas.plugins"),
        "{error}"
    );
    let listed = ok(&as_tenant(dir, "acme", &["plugins", "list"]));
    assert!(!listed.contains("three"), "nothing was written: {listed}");
    // Another tenant has a quota of its own.
    ok(&install("globex", GUEST, "one"));

    // Other bytes would pass the bytes quota.
    let other = another_build(dir);
    let other = other.to_str().unwrap();
    ok(&as_tenant(dir, "acme", &["plugins", "remove", "two@1"]));
    let bigger = install("acme", other, "other");
    let error = String::from_utf8_lossy(&bigger.stderr);
    assert!(
        error.contains(&format!(
            "at its quota of {} bytes of installed plugins",
            size + 3
        )) && error.contains("quotas.plugin_bytes"),
        "{error}"
    );
}
