//! End-to-end cost per task: chains and fan-outs of 1000 no-op tasks, run by
//! the real scheduler in the real sandbox, against the same plans run by the
//! scheduler with an in-process no-op executor (orchestration alone) and the
//! sandbox called directly (isolation alone); then the same runs recorded in
//! an execution file under `strict` and `batched` durability, next to the
//! fsync latency of the disk holding the file.
//!
//! `cargo bench --bench overhead` (set `BENCH_DIR` to measure another disk
//! than the system's temporary directory).

#[path = "common/shapes.rs"]
mod shapes;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use orchestrator_engine::expr::Expressions;
use orchestrator_engine::sandbox::{Sandbox, SandboxExecutor};
use orchestrator_engine::scheduler::{
    Executor, Metering, RunOptions, RunStatus, Scheduler, TaskFailure, TaskReport, TaskRequest,
    TaskSuccess,
};
use orchestrator_engine::store::executions::{
    EventKind, ExecutionJournal, ExecutionRecord, ExecutionStatus, Executions, now_ms,
};
use orchestrator_engine::workflow::{Durability, Plan};
use serde_json::{Value, json};

const TASKS: usize = 1000;
const RUNS: usize = 7;

/// Returns at once: what is left is the scheduler's own cost.
struct InProcess;

impl Executor for InProcess {
    async fn execute(&self, _: TaskRequest) -> Result<TaskSuccess, TaskFailure> {
        Ok(TaskSuccess {
            output: Value::Null,
            usage: None,
            metering: Metering::default(),
        })
    }
}

/// `TASKS` tasks in `shape`.
fn plan(shape: &str) -> Plan {
    shapes::plan(shape, TASKS)
}

/// Median wall time per task over `RUNS` runs.
fn per_task<E: Executor>(
    tokio: &tokio::runtime::Runtime,
    scheduler: &Scheduler<E>,
    plan: &Plan,
) -> Duration {
    median(|| {
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
    })
}

/// Wall time per task of `RUNS` runs under strict and `RUNS` under batched
/// durability, each recorded in a fresh execution file in `dir`, taken in
/// turns so both see the same disk (this machine's drifts by a factor of
/// two within minutes).
fn per_task_recorded<E: Executor>(
    tokio: &tokio::runtime::Runtime,
    scheduler: &Scheduler<E>,
    plan: &Plan,
    dir: &Path,
) -> Recorded {
    let executions = Executions::beside(&dir.join("store.redb"));
    let mut plan = plan.clone();
    let runs: Vec<(Duration, Duration)> = (1..=RUNS)
        .map(|n| {
            plan.durability = Durability::Strict;
            let strict = recorded_run(tokio, scheduler, &plan, &executions, 2 * n);
            plan.durability = Durability::Batched;
            let batched = recorded_run(tokio, scheduler, &plan, &executions, 2 * n + 1);
            (strict, batched)
        })
        .collect();
    let middle = |mut values: Vec<Duration>| {
        values.sort();
        values[RUNS / 2]
    };
    let mut gaps: Vec<f64> = runs
        .iter()
        .map(|(strict, batched)| micros(*strict) - micros(*batched))
        .collect();
    gaps.sort_by(f64::total_cmp);
    Recorded {
        strict: middle(runs.iter().map(|(s, _)| *s).collect()),
        batched: middle(runs.iter().map(|(_, b)| *b).collect()),
        gap: gaps[RUNS / 2],
    }
}

/// What recorded runs cost.
struct Recorded {
    /// Median wall time per task, strict.
    strict: Duration,
    /// Median wall time per task, batched.
    batched: Duration,
    /// Median of (strict - batched) over the pairs, µs per task.
    gap: f64,
}

/// One run recorded in a fresh execution file; wall time per task.
fn recorded_run<E: Executor>(
    tokio: &tokio::runtime::Runtime,
    scheduler: &Scheduler<E>,
    plan: &Plan,
    executions: &Executions,
    n: usize,
) -> Duration {
    let record = bench_record(plan, n);
    let log = Arc::new(executions.create(&record).expect("an execution file"));
    let journal = ExecutionJournal::new(Arc::clone(&log));
    let options = RunOptions {
        concurrency: None,
        journal: Some(&journal),
        done: Vec::new(),
        retries: Vec::new(),
        overrides: Default::default(),
        started_at: None,
        cancel: Arc::default(),
        tenant: Default::default(),
        observe: &|_| {},
    };
    let started = Instant::now();
    let report = tokio.block_on(scheduler.run_with(plan, &json!({}), "bench", options));
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    let took = started.elapsed() / TASKS as u32;
    drop(journal);
    drop(log);
    executions
        .remove(&record.id)
        .expect("the bench's execution is removed");
    took
}

/// The record of the `n`th bench execution of `plan`.
fn bench_record(plan: &Plan, n: usize) -> ExecutionRecord {
    ExecutionRecord {
        id: format!("bench-{}-{n}", std::process::id()),
        tenant: "default".into(),
        workflow: plan.name.clone(),
        file: String::new(),
        source: String::new(),
        inputs: json!({}),
        durability: plan.durability,
        tasks: Vec::new(),
        plugins: Default::default(),
        status: ExecutionStatus::Running,
        created_at: now_ms(),
        finished_at: None,
        error: None,
        outputs: Default::default(),
        consumed: None,
        parent: None,
    }
}

/// Mean time to record one step of a strict chain, with no task run: the
/// attempt's start and the task's final state (the reports of a real chain
/// run) committed one by one, as a strict chain does, into a fresh file in
/// `dir`. What a strict chain pays per step beyond this is the task itself.
fn step_commit_latency(plan: &Plan, reports: &[TaskReport], dir: &Path) -> Duration {
    let executions = Executions::beside(&dir.join("store.redb"));
    let record = bench_record(plan, 0);
    let log = executions.create(&record).expect("an execution file");
    let started = Instant::now();
    for report in reports {
        log.note(EventKind::AttemptStarted {
            task: report.id.clone(),
            attempt: 1,
            fallback: false,
        });
        log.commit_tasks(std::slice::from_ref(report))
            .expect("a commit");
    }
    let took = started.elapsed() / reports.len() as u32;
    drop(log);
    executions
        .remove(&record.id)
        .expect("the bench's execution is removed");
    took
}

/// Median of 200 durable redb commits of one small value in `dir`: the floor
/// of one commit per step in a redb file.
fn redb_commit_latency(dir: &Path) -> Duration {
    let path = dir.join("commit-probe.redb");
    let db = redb::Database::create(&path).expect("a probe database");
    let table = redb::TableDefinition::<u64, &str>::new("probe");
    let mut times: Vec<Duration> = (0..200u64)
        .map(|i| {
            let started = Instant::now();
            let w = db.begin_write().expect("write");
            w.open_table(table)
                .expect("table")
                .insert(i, "a small value")
                .expect("insert");
            w.commit().expect("commit");
            started.elapsed()
        })
        .collect();
    drop(db);
    let _ = std::fs::remove_file(&path);
    times.sort();
    times[times.len() / 2]
}

/// Median of 500 commits shaped like a strict-chain step (two events and a
/// task state of realistic size in one table) into a fresh redb file in
/// `dir`, durable or not: the difference is what the fsync costs, the rest
/// is redb's own work per commit.
fn redb_step_latency(dir: &Path, durability: redb::Durability) -> Duration {
    let path = dir.join("step-probe.redb");
    let _ = std::fs::remove_file(&path);
    let db = redb::Database::create(&path).expect("a probe database");
    let table = redb::TableDefinition::<&[u8], &str>::new("log");
    let event =
        r#"{"at":1795000000000,"event":"task_finished","task":"t123","status":"succeeded"}"#;
    let state = r#"{"id":"t123","uses":"guest","status":"succeeded","output":null,"duration_us":21,"fuel":2412,"peak_memory":1114112,"attempts":1}"#;
    let mut times: Vec<Duration> = (0..500u64)
        .map(|i| {
            let started = Instant::now();
            let mut w = db.begin_write().expect("write");
            w.set_durability(durability).expect("durability");
            {
                let mut log = w.open_table(table).expect("table");
                for seq in [2 * i, 2 * i + 1] {
                    let mut key = vec![0u8];
                    key.extend_from_slice(&seq.to_be_bytes());
                    log.insert(key.as_slice(), event).expect("insert");
                }
                let key = format!("\u{1}t{i}");
                log.insert(key.as_bytes(), state).expect("insert");
            }
            w.commit().expect("commit");
            started.elapsed()
        })
        .collect();
    drop(db);
    let _ = std::fs::remove_file(&path);
    times.sort();
    times[times.len() / 2]
}

fn median(mut f: impl FnMut() -> Duration) -> Duration {
    let mut times: Vec<Duration> = (0..RUNS).map(|_| f()).collect();
    times.sort();
    times[RUNS / 2]
}

/// The latency of an `fsync` of a 4 KiB append in `dir`, over 200.
#[derive(Clone, Copy)]
struct Fsync {
    median: Duration,
    /// What a run of many commits pays on average, tail included.
    mean: Duration,
}

fn fsync_latency(dir: &Path) -> Fsync {
    use std::io::Write as _;
    let path = dir.join("fsync-probe");
    let mut file = std::fs::File::create(&path).expect("a probe file");
    let mut times: Vec<Duration> = (0..200)
        .map(|_| {
            file.write_all(&[7; 4096]).expect("write");
            let started = Instant::now();
            file.sync_data().expect("fsync");
            started.elapsed()
        })
        .collect();
    let _ = std::fs::remove_file(&path);
    let mean = times.iter().sum::<Duration>() / times.len() as u32;
    times.sort();
    Fsync {
        median: times[times.len() / 2],
        mean,
    }
}

fn main() {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio starts");
    let sandbox = Sandbox::new().expect("engine starts");
    let guest = std::fs::read(env!("TEST_GUEST_WASM")).expect("the build wrote the test guest");
    let plugin = sandbox
        .prepare("test-guest", &guest)
        .expect("test guest compiles");

    // Isolation alone: the sandbox called directly, one attempt after another.
    let request = TaskRequest {
        execution_id: Arc::from("bench"),
        tenant: Default::default(),
        task_id: "noop".into(),
        uses: "guest".into(),
        attempt: 1,
        input: "{}".into(),
        limits: Default::default(),
        cancel: Default::default(),
        fallback: false,
        effects: Default::default(),
    };
    for _ in 0..200 {
        tokio
            .block_on(sandbox.run(&plugin, request.clone()))
            .expect("warm-up");
    }
    let started = Instant::now();
    for _ in 0..TASKS * 2 {
        tokio
            .block_on(sandbox.run(&plugin, request.clone()))
            .expect("echo succeeds");
    }
    let sandbox_only = started.elapsed() / (TASKS * 2) as u32;

    let expressions = Expressions::new();
    let in_process = Arc::new(Scheduler::new(Arc::new(InProcess), expressions.clone()));
    // The executor maps each task id to its plugin (with that task's grants).
    let plugins: HashMap<String, _> = (0..TASKS)
        .map(|i| (format!("t{i}"), plugin.clone()))
        .collect();
    let sandboxed = Scheduler::new(
        Arc::new(SandboxExecutor::new(Arc::clone(&sandbox), plugins)),
        expressions,
    );

    println!(
        "sandbox alone (store + instantiate + call, sequential): {:>7.1} µs/task",
        micros(sandbox_only)
    );
    println!();
    println!(
        "{:<14} {:>22} {:>22}",
        "shape", "scheduler alone", "scheduler + sandbox"
    );
    for shape in ["chain", "fanout"] {
        let plan = Arc::new(plan(shape));
        let alone = per_task(&tokio, &in_process, &plan);
        let full = per_task(&tokio, &sandboxed, &plan);
        println!(
            "{:<14} {:>17.1} µs/task {:>17.1} µs/task",
            format!("{shape}-{TASKS}"),
            micros(alone),
            micros(full)
        );
    }

    // Durability: the same runs in the sandbox, recorded on disk.
    let dir = std::env::var_os("BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    let dir = tempfile::tempdir_in(dir).expect("a bench directory");
    println!();
    let fsync = fsync_latency(dir.path());
    println!(
        "fsync latency of {} (200 of them): median {:.1} µs, mean {:.1} µs",
        dir.path().display(),
        micros(fsync.median),
        micros(fsync.mean)
    );
    println!(
        "durable redb commit of one small value there (median of 200): {:.1} µs",
        micros(redb_commit_latency(dir.path()))
    );
    println!(
        "redb commit shaped like a chain step, without fsync (median of 500): {:.1} µs",
        micros(redb_step_latency(dir.path(), redb::Durability::None))
    );
    println!(
        "redb commit shaped like a chain step, durable (median of 500): {:.1} µs",
        micros(redb_step_latency(dir.path(), redb::Durability::Immediate))
    );
    let chain = plan("chain");
    let chain_reports = tokio
        .block_on(sandboxed.run(
            &chain,
            (&Default::default(), &json!({})),
            "bench",
            None,
            &|_| {},
        ))
        .tasks;
    println!(
        "recording one strict-chain step, no task run (mean of {TASKS}): {:.1} µs",
        micros(step_commit_latency(&chain, &chain_reports, dir.path()))
    );
    println!();
    println!(
        "{:<14} {:>18} {:>18} {:>18}   strict - batched, paired median",
        "shape", "durability off", "strict", "batched"
    );
    for shape in ["chain", "fanout"] {
        let plan = plan(shape);
        let off = per_task(&tokio, &sandboxed, &plan);
        let recorded = per_task_recorded(&tokio, &sandboxed, &plan, dir.path());
        println!(
            "{:<14} {:>13.1} µs/task {:>13.1} µs/task {:>13.1} µs/task   {:>8.1} µs/task ({:+.0} %)",
            format!("{shape}-{TASKS}"),
            micros(off),
            micros(recorded.strict),
            micros(recorded.batched),
            recorded.gap,
            100.0 * recorded.gap / micros(recorded.batched)
        );
    }
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
