//! What the spans cost when no trace is exported: chains and fan-outs of
//! 1000 no-op tasks run by the real scheduler in the real sandbox (a
//! `task`, an `attempt` and a `plugin_call` span each), with no
//! subscriber and with the one `runtime` installs (log lines at `info`,
//! here written to nowhere), taken in turns.
//!
//! `cargo bench --bench tracing`

#[path = "common/shapes.rs"]
mod shapes;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use orchestrator_engine::expr::Expressions;
use orchestrator_engine::sandbox::{Sandbox, SandboxExecutor};
use orchestrator_engine::scheduler::{RunStatus, Scheduler};
use orchestrator_engine::workflow::Plan;
use serde_json::json;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::{EnvFilter, Layer};

const TASKS: usize = 1000;
const RUNS: usize = 9;

/// `TASKS` tasks in `shape`.
fn plan(shape: &str) -> Plan {
    shapes::plan(shape, TASKS)
}

/// The subscriber of `runtime` without an OTLP endpoint
/// (`runtime/src/telemetry.rs`): log lines at `info`, to a sink.
fn runtime_subscriber() -> tracing::Dispatch {
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::sink)
        .without_time()
        .with_filter(EnvFilter::new("info"));
    tracing::Dispatch::new(tracing_subscriber::registry().with(logs))
}

/// A runtime whose threads all use `dispatch`, if any.
fn runtime(dispatch: Option<tracing::Dispatch>) -> tokio::runtime::Runtime {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(dispatch) = dispatch {
        builder.on_thread_start(move || {
            // Kept for the thread's life.
            std::mem::forget(tracing::dispatcher::set_default(&dispatch));
        });
    }
    builder.enable_all().build().expect("tokio starts")
}

fn per_task(
    tokio: &tokio::runtime::Runtime,
    scheduler: &Scheduler<SandboxExecutor>,
    plan: &Plan,
) -> Duration {
    let started = Instant::now();
    let report = tokio.block_on(scheduler.run(
        plan,
        (&Default::default(), &json!({})),
        "bench",
        None,
        &|_| {},
    ));
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    started.elapsed() / TASKS as u32
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    let sandbox = Sandbox::new().expect("engine starts");
    let guest = std::fs::read(env!("TEST_GUEST_WASM")).expect("the build wrote the test guest");
    let plugin = sandbox
        .prepare("test-guest", &guest)
        .expect("test guest compiles");
    let plugins: HashMap<String, _> = (0..TASKS)
        .map(|i| (format!("t{i}"), plugin.clone()))
        .collect();
    let scheduler = Scheduler::new(
        Arc::new(SandboxExecutor::new(Arc::clone(&sandbox), plugins)),
        Expressions::new(),
    );
    let plain = runtime(None);
    let traced = runtime(Some(runtime_subscriber()));
    let dispatch = runtime_subscriber();
    println!(
        "{:<14} {:>16} {:>16}   spans - none, paired median",
        "shape", "no subscriber", "runtime's"
    );
    for shape in ["chain", "fanout"] {
        let plan = plan(shape);
        // Warm-up, both ways.
        per_task(&plain, &scheduler, &plan);
        tracing::dispatcher::with_default(&dispatch, || per_task(&traced, &scheduler, &plan));
        let runs: Vec<(f64, f64)> = (0..RUNS)
            .map(|_| {
                let none = micros(per_task(&plain, &scheduler, &plan));
                let spans = tracing::dispatcher::with_default(&dispatch, || {
                    micros(per_task(&traced, &scheduler, &plan))
                });
                (none, spans)
            })
            .collect();
        let none = median(runs.iter().map(|r| r.0).collect());
        let spans = median(runs.iter().map(|r| r.1).collect());
        let gap = median(runs.iter().map(|r| r.1 - r.0).collect());
        println!(
            "{:<14} {:>11.1} µs/task {:>11.1} µs/task   {gap:+.1} µs/task ({:+.0} %)",
            format!("{shape}-{TASKS}"),
            none,
            spans,
            gap / none * 100.0
        );
    }
}
