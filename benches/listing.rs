//! How long a page of `runtime list` takes with 100,000 executions, on
//! both backends: the first page, a page deep in by cursor, and filters
//! that match 1 in 100 (status, workflow) or a time window.
//!
//! The memory backend is filled through `Executions::create`; the redb
//! backend's index is filled with `RedbExecutions::put_summaries` (creating
//! 100,000 files would take minutes and a listing of finished executions
//! reads only the index). `cargo bench -p orchestrator-store --bench listing`.

use std::time::{Duration, Instant};

use orchestrator_core::tenant::TenantId;
use orchestrator_core::workflow::Durability;
use orchestrator_store::executions::listing::{ListQuery, Summary};
use orchestrator_store::executions::memory::MemoryExecutions;
use orchestrator_store::executions::redb::RedbExecutions;
use orchestrator_store::executions::{ExecutionRecord, ExecutionStatus, Executions};

const EXECUTIONS: u64 = 100_000;
const RUNS: usize = 21;

/// Execution `i`: started `i` seconds in; 1 in 100 failed and 1 in 100 a
/// run of workflow `rare`.
fn summary(i: u64) -> Summary {
    Summary {
        id: format!("e{i:06}"),
        workflow: if i % 100 == 7 { "rare" } else { "common" }.into(),
        status: if i % 100 == 3 {
            ExecutionStatus::Failed
        } else {
            ExecutionStatus::Succeeded
        },
        created_at: 1_700_000_000_000 + i * 1000,
        finished_at: Some(1_700_000_000_000 + i * 1000 + 500),
        parent: None,
        consumed: None,
        dead_letters: u32::from(i % 100 == 3),
    }
}

fn record(s: &Summary) -> ExecutionRecord {
    ExecutionRecord {
        id: s.id.clone(),
        tenant: "default".into(),
        workflow: s.workflow.clone(),
        file: String::new(),
        source: String::new(),
        inputs: serde_json::Value::Null,
        durability: Durability::Strict,
        tasks: Vec::new(),
        plugins: Default::default(),
        status: ExecutionStatus::Running,
        created_at: s.created_at,
        finished_at: None,
        error: None,
        outputs: Default::default(),
        consumed: None,
        parent: None,
    }
}

/// Median time of `query`, and how many it listed.
fn median(executions: &Executions, query: &ListQuery) -> (Duration, usize) {
    let mut times = Vec::new();
    let mut listed = 0;
    for _ in 0..RUNS {
        let started = Instant::now();
        let page = executions.list(query).expect("a page");
        times.push(started.elapsed());
        listed = page.items.len();
    }
    times.sort();
    (times[RUNS / 2], listed)
}

fn report(name: &str, executions: &Executions) {
    let first = executions
        .list(&ListQuery {
            limit: 50,
            ..ListQuery::default()
        })
        .expect("a page");
    let middle = summary(EXECUTIONS / 2).position();
    let queries = [
        ("first page (50)", ListQuery::default()),
        (
            "page by cursor, halfway",
            ListQuery {
                after: Some(middle),
                ..ListQuery::default()
            },
        ),
        (
            "status failed (1%)",
            ListQuery {
                status: Some(ExecutionStatus::Failed),
                ..ListQuery::default()
            },
        ),
        (
            "workflow rare (1%)",
            ListQuery {
                workflow: Some("rare".into()),
                ..ListQuery::default()
            },
        ),
        (
            "one hour's window",
            ListQuery {
                since: Some(summary(50_000).created_at),
                until: Some(summary(53_600).created_at),
                ..ListQuery::default()
            },
        ),
    ];
    assert_eq!(first.items.len(), 50);
    for (label, query) in queries {
        let query = ListQuery { limit: 50, ..query };
        let (took, listed) = median(executions, &query);
        assert_eq!(listed, 50, "{label}: a full page");
        println!(
            "{name:<6} {label:<26} {:>9.3} ms",
            took.as_secs_f64() * 1000.0
        );
    }
}

fn main() {
    let all: Vec<Summary> = (0..EXECUTIONS).map(summary).collect();

    let memory = MemoryExecutions::new();
    let in_memory = Executions::in_memory(&memory, &TenantId::default());
    for s in &all {
        let log = in_memory.create(&record(s)).expect("created");
        let status = s.status;
        log.finish(status, None, Default::default())
            .expect("finished");
    }

    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = dir.path().join("store.redb");
    RedbExecutions::for_tenant(&store, &TenantId::default())
        .put_summaries(&all)
        .expect("the index filled");
    let files = Executions::beside(&store);

    println!("{EXECUTIONS} executions, median of {RUNS} runs per page of 50");
    report("memory", &in_memory);
    report("redb", &files);
}
