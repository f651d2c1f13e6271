//! The process's capacity: plugin calls across executions share one limit,
//! a burst bigger than the sandbox's instance pool waits instead of
//! failing, and executions beyond the running and waiting limits are
//! refused as busy while the others finish.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::{Host, TestServer, task};
use orchestrator_engine::plugin::Grants;
use orchestrator_engine::scheduler::{RunStatus, TaskStatus};

const GUEST: &str = env!("TEST_GUEST_WASM");

/// A list of `n` numbers, as a workflow input with that default.
fn items_input(n: usize) -> String {
    let items: Vec<String> = (0..n).map(|i| i.to_string()).collect();
    format!(
        "inputs:\n  items: {{ type: array, default: [{}] }}\n",
        items.join(", ")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_bigger_than_the_instance_pool_waits_instead_of_failing() {
    // More calls at once than the pool has instances (1000 core instances,
    // about 3 per call of this guest), with no task limit below that: the
    // calls that find the pool full wait for a free slot.
    let host = Host::with_config("capacity: { tasks: 5000 }\n");
    let yaml = format!(
        "name: burst\n{}tasks:\n  - id: nap\n    uses: {GUEST}\n    for_each: ${{{{ inputs.items }}}}\n    concurrency: 1200\n    with: {{ mode: sleep, ms: 300 }}\n",
        items_input(1200)
    );
    let report = host.run(&yaml).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    assert_eq!(task(&report, "nap").status, TaskStatus::Succeeded);
}

/// A server whose `/slow` answers after 200 ms and which remembers the
/// most requests it was answering at once.
fn counting_server() -> (TestServer, Arc<AtomicUsize>) {
    let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let peak = Arc::clone(&most);
    let server = TestServer::start(move |_| {
        let running = now.fetch_add(1, Ordering::SeqCst) + 1;
        most.fetch_max(running, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(200));
        now.fetch_sub(1, Ordering::SeqCst);
        (200, Vec::new(), b"done".to_vec())
    });
    (server, peak)
}

async fn install_guest(host: &Host) {
    let grants = Grants {
        http_hosts: vec!["127.0.0.1".into()],
        ..Grants::default()
    };
    host.install(GUEST, "guest", grants).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executions_share_the_process_task_limit() {
    let host = Host::with_config("capacity: { tasks: 3 }\n");
    install_guest(&host).await;
    let (server, peak) = counting_server();
    // Two executions, each allowing 6 calls at once: 12 could run together,
    // the process allows 3.
    let yaml = format!(
        "name: calls\n{}tasks:\n  - id: fetch\n    uses: guest\n    for_each: ${{{{ inputs.items }}}}\n    concurrency: 6\n    with: {{ mode: http, url: \"{}\" }}\n",
        items_input(6),
        server.url("/slow")
    );
    let (first, second) = tokio::join!(host.run(&yaml), host.run(&yaml));
    assert_eq!(first.status, RunStatus::Succeeded, "{:?}", first.error);
    assert_eq!(second.status, RunStatus::Succeeded, "{:?}", second.error);
    assert_eq!(server.requests().len(), 12);
    let peak = peak.load(Ordering::SeqCst);
    assert!(peak <= 3, "{peak} calls ran at once");
    assert!(peak >= 2, "the limit still lets calls overlap ({peak})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executions_past_the_queue_are_busy_and_the_queued_one_runs_later() {
    let host = Host::with_config("capacity: { runs: 1, queued_runs: 1 }\n");
    install_guest(&host).await;
    let release = Arc::new(AtomicBool::new(false));
    let released = Arc::clone(&release);
    let server = TestServer::start(move |path| {
        while path == "/hold" && !released.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(10));
        }
        (200, Vec::new(), path.as_bytes().to_vec())
    });
    let flow = |path: &str| {
        format!(
            "name: one\ntasks:\n  - {{ id: get, uses: guest, with: {{ mode: http, url: \"{}\" }} }}\n",
            server.url(path)
        )
    };
    let (hold, quick) = (flow("/hold"), flow("/quick"));
    let capacity = || host.runner.sandbox().capacity();
    let arrived = |path: &str| server.requests().iter().any(|r| r.path == path);

    let holding = host.run(&hold);
    let queued = async {
        while !arrived("/hold") {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        host.run(&quick).await
    };
    let refused = async {
        while capacity().runs_queued() == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(capacity().runs_running(), 1);
        let refused = host.try_run(&quick).await;
        release.store(true, Ordering::SeqCst);
        refused
    };
    let (held, queued, refused) = tokio::join!(holding, queued, refused);

    let error = refused.unwrap_err();
    assert!(
        error
            .contains("the runtime is busy: 1 executions running (capacity.runs: 1) and 1 waiting"),
        "{error}"
    );
    assert_eq!(held.status, RunStatus::Succeeded, "{:?}", held.error);
    assert_eq!(queued.status, RunStatus::Succeeded, "{:?}", queued.error);
    let paths: Vec<String> = server.requests().iter().map(|r| r.path.clone()).collect();
    assert_eq!(
        paths,
        ["/hold", "/quick"],
        "the queued run started after the first; the refused one never ran"
    );
    assert_eq!(capacity().runs_queued(), 0);
    assert_eq!(capacity().runs_running(), 0);
}
