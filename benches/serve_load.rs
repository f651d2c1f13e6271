//! `runtime serve` under load: the real binary on 127.0.0.1 and many
//! concurrent gRPC clients, each starting a small workflow (one `transform`
//! task) and awaiting its result, again and again, for a fixed time.
//! Prints starts per second, start-to-result latency (p50, p99, max) and
//! every error by code; RESOURCE_EXHAUSTED (the host's capacity answering
//! "not now") is counted apart from the errors that must not happen.
//!
//! `cargo bench --bench serve_load` (`LOAD_CLIENTS`, default 100, and
//! `LOAD_SECONDS`, default 60; `BENCH_DIR` for the store's disk;
//! `LOAD_URL` and `LOAD_ADMIN_KEY` to load a server started by hand, under
//! a profiler say, instead of starting one).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use orchestrator_host_api::client::Client;
use orchestrator_host_api::pb;

const WORKFLOW: &str = "name: small\ntasks:\n  - { id: add, uses: transform, with: { script: '1 + 1' } }\noutputs:\n  sum: ${{ tasks.add.output }}\n";

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Starts `runtime serve` on a store in `dir`: the child, its URL and the
/// admin key it printed.
fn serve(dir: &std::path::Path) -> (Child, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_runtime"))
        .args(["serve", "--listen", "127.0.0.1:0", "--log-level", "warn"])
        .env("ORCHESTRATOR_STORE", dir.join("store.redb"))
        .env("ORCHESTRATOR_CONFIG", dir.join("no-config.yaml"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runtime serve starts");
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr"));
    let (mut key, mut url) = (None, None);
    while url.is_none() {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).expect("stderr") > 0,
            "the server ended"
        );
        if let Some((_, k)) = line.trim().split_once("make others with it): ") {
            key = Some(k.to_owned());
        }
        if let Some(address) = line.trim().strip_prefix("serving on ") {
            url = Some(address.to_owned());
        }
    }
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::stderr()));
    (child, url.expect("url"), key.expect("admin key"))
}

/// What one client saw.
#[derive(Default)]
struct Seen {
    latencies: Vec<Duration>,
    exhausted: u64,
    errors: BTreeMap<String, u64>,
}

async fn client_loop(client: Client, until: Instant) -> Seen {
    let mut seen = Seen::default();
    while Instant::now() < until {
        let began = Instant::now();
        let started = client
            .executions()
            .start(pb::StartRequest {
                workflow_text: WORKFLOW.into(),
                ..pb::StartRequest::default()
            })
            .await;
        let id = match started {
            Ok(started) => started.into_inner().execution_id,
            Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                seen.exhausted += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            Err(status) => {
                *seen
                    .errors
                    .entry(format!("start: {:?}: {}", status.code(), status.message()))
                    .or_default() += 1;
                continue;
            }
        };
        let done = client
            .executions()
            .await_result(pb::AwaitRequest {
                execution_id: id,
                timeout_ms: 60_000,
            })
            .await;
        match done {
            Ok(done) if done.get_ref().status == "succeeded" => {
                seen.latencies.push(began.elapsed());
            }
            Ok(done) => {
                let status = done.into_inner().status;
                *seen.errors.entry(format!("ended {status}")).or_default() += 1;
            }
            Err(status) => {
                *seen
                    .errors
                    .entry(format!("await: {:?}: {}", status.code(), status.message()))
                    .or_default() += 1;
            }
        }
    }
    seen
}

fn main() {
    let clients = env_number("LOAD_CLIENTS", 100);
    let seconds = env_number("LOAD_SECONDS", 60);
    let base = std::env::var_os("BENCH_DIR").map_or_else(std::env::temp_dir, Into::into);
    let dir = tempfile::tempdir_in(base).expect("a temporary directory");
    std::fs::write(dir.path().join("no-config.yaml"), "{}\n").expect("config");
    let (mut child, url, admin_key) =
        match (std::env::var("LOAD_URL"), std::env::var("LOAD_ADMIN_KEY")) {
            (Ok(url), Ok(key)) => (None, url, key),
            _ => {
                let (child, url, key) = serve(dir.path());
                (Some(child), url, key)
            }
        };

    let runtime = tokio::runtime::Runtime::new().expect("tokio");
    let (seen, wall) = runtime.block_on(async {
        let admin = Client::connect(&url, &admin_key).await.expect("connect");
        let key = admin
            .admin()
            .create_api_key(pb::CreateApiKeyRequest {
                tenant: "load".into(),
                role: "operator".into(),
                name: "load".into(),
            })
            .await
            .expect("a key")
            .into_inner()
            .key;
        // One warm-up run: the tenant's engine and built-ins are made.
        let warm = Client::connect(&url, &key).await.expect("connect");
        let _ = client_loop(warm, Instant::now() + Duration::from_millis(1)).await;

        let began = Instant::now();
        let until = began + Duration::from_secs(seconds);
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let client = Client::connect(&url, &key).await.expect("connect");
            tasks.push(tokio::spawn(client_loop(client, until)));
        }
        let mut all = Seen::default();
        for task in tasks {
            let seen = task.await.expect("a client");
            all.latencies.extend(seen.latencies);
            all.exhausted += seen.exhausted;
            for (what, n) in seen.errors {
                *all.errors.entry(what).or_default() += n;
            }
        }
        (all, began.elapsed())
    });
    if let Some(child) = &mut child {
        let _ = child.kill();
        let _ = child.wait();
    }

    let mut latencies = seen.latencies;
    latencies.sort();
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    let errors: u64 = seen.errors.values().sum();
    println!("runtime serve, {clients} clients on loopback, {seconds} s, one-task workflow");
    println!(
        "  completed            {} ({:.0}/s)",
        latencies.len(),
        latencies.len() as f64 / wall.as_secs_f64()
    );
    println!(
        "  start-to-result      p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        at(1.0).as_secs_f64() * 1e3
    );
    println!("  RESOURCE_EXHAUSTED   {}", seen.exhausted);
    println!("  other errors         {errors}");
    for (what, n) in &seen.errors {
        println!("    {what}: {n}");
    }
    assert_eq!(errors, 0, "errors other than RESOURCE_EXHAUSTED");
}
