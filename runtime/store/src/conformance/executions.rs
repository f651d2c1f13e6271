//! The executions contract: `run(&fresh)` where `fresh()` gives a new,
//! empty backend as a function from tenant to [`Executions`].

// A test suite: a broken contract is a panic that names it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use orchestrator_core::scheduler::{
    FailureKind, Metering, PendingRetry, TaskError, TaskReport, TaskStatus,
};
use orchestrator_core::tenant::TenantId;
use orchestrator_core::workflow::Durability;

use crate::executions::listing::{ListQuery, Position};
use crate::executions::{
    DeadLetterState, EventKind, ExecutionError, ExecutionRecord, ExecutionStatus, Executions,
    LogEvent, now_ms,
};

/// A new, empty backend: a tenant's executions in it.
pub type Backend = Box<dyn Fn(&TenantId) -> Executions>;

/// One check of the contract.
pub type Check = fn(&Backend);

/// Every check, by name.
pub const CHECKS: &[(&str, Check)] = &[
    ("create_then_read", create_then_read),
    ("ids_are_unique", ids_are_unique),
    (
        "events_are_numbered_without_gaps",
        events_are_numbered_without_gaps,
    ),
    ("task_states_round_trip", task_states_round_trip),
    (
        "retries_until_the_task_finishes",
        retries_until_the_task_finishes,
    ),
    ("signals_and_waits", signals_and_waits),
    (
        "dead_letters_replay_and_purge",
        dead_letters_replay_and_purge,
    ),
    ("an_owned_execution_is_busy", an_owned_execution_is_busy),
    ("a_dropped_owner_releases", a_dropped_owner_releases),
    (
        "an_expired_lease_is_taken_over",
        an_expired_lease_is_taken_over,
    ),
    ("a_renewed_lease_holds", a_renewed_lease_holds),
    ("tenants_are_apart", tenants_are_apart),
    ("removed_executions_are_gone", removed_executions_are_gone),
    ("listing_pages_newest_first", listing_pages_newest_first),
    ("listing_filters", listing_filters),
    (
        "stored_bytes_count_what_is_kept",
        stored_bytes_count_what_is_kept,
    ),
];

/// Runs every check, each on a fresh backend from `fresh`.
pub fn run(fresh: &dyn Fn() -> Backend) {
    for (name, check) in CHECKS {
        eprintln!("conformance: {name}");
        check(&fresh());
    }
}

fn tenant() -> TenantId {
    TenantId::default()
}

/// The record of a new, running execution `id` of workflow `w`, as the
/// checks create them.
pub fn record(id: &str) -> ExecutionRecord {
    ExecutionRecord {
        id: id.into(),
        tenant: "default".into(),
        workflow: "w".into(),
        file: String::new(),
        source: "name: w".into(),
        inputs: json!({ "topic": "leases" }),
        durability: Durability::Strict,
        tasks: vec!["a".into(), "b".into()],
        plugins: BTreeMap::new(),
        status: ExecutionStatus::Running,
        created_at: now_ms(),
        finished_at: None,
        error: None,
        outputs: serde_json::Map::new(),
        consumed: None,
        parent: None,
    }
}

/// A succeeded task `id`'s final state, with `output`.
pub fn report(id: &str, output: Option<Value>) -> TaskReport {
    TaskReport {
        id: id.into(),
        uses: "p".into(),
        status: TaskStatus::Succeeded,
        output,
        error: None,
        usage: None,
        metering: Metering::default(),
        attempts: 1,
        fallback: false,
        degraded: false,
        tolerated: false,
        input: None,
    }
}

/// The final state of task `id` that failed for good.
pub fn failed(id: &str) -> TaskReport {
    TaskReport {
        status: TaskStatus::Failed,
        output: None,
        error: Some(TaskError {
            kind: Some(FailureKind::Fatal),
            message: "it broke".into(),
        }),
        input: Some(json!({ "x": 1 })),
        ..report(id, None)
    }
}

fn retry(task: &str) -> PendingRetry {
    PendingRetry {
        task: task.into(),
        attempt: 2,
        phase_attempt: 2,
        fallback: false,
        failed_at: now_ms(),
        due_at: now_ms() + 1000,
        first_started_at: now_ms(),
    }
}

fn short(executions: Executions, owner: &str) -> Executions {
    executions
        .with_owner(owner)
        .with_lease_ttl(Duration::from_millis(150))
}

fn create_then_read(backend: &Backend) {
    let executions = backend(&tenant());
    let log = executions.create(&record("e1")).unwrap();
    assert_eq!(log.record().unwrap().inputs, json!({ "topic": "leases" }));
    let events = log.events_from(0).unwrap();
    assert_eq!(events.len(), 1, "the start is the first event");
    assert!(matches!(
        events[0],
        (
            0,
            LogEvent {
                kind: EventKind::ExecutionStarted { .. },
                ..
            }
        )
    ));
    log.finish(ExecutionStatus::Succeeded, None, serde_json::Map::new())
        .unwrap();
    drop(log);
    let read = executions.read("e1").unwrap();
    let record = read.record().unwrap();
    assert_eq!(record.status, ExecutionStatus::Succeeded);
    assert!(record.finished_at.is_some());
    assert!(executions.exists("e1"));
    assert_eq!(executions.ids(), vec!["e1".to_owned()]);
    assert!(matches!(
        executions.read("nope"),
        Err(ExecutionError::Unknown { .. })
    ));
    assert!(!executions.exists("../e1"), "not an id");
}

fn ids_are_unique(backend: &Backend) {
    let executions = backend(&tenant());
    let first = executions.create(&record("e1")).unwrap();
    first
        .finish(ExecutionStatus::Failed, None, serde_json::Map::new())
        .unwrap();
    assert!(matches!(
        executions.create(&record("e1")),
        Err(ExecutionError::Exists(_))
    ));
    assert!(executions.create(&record("bad id")).is_err());
    assert_eq!(
        first.record().unwrap().status,
        ExecutionStatus::Failed,
        "a refused create changes nothing"
    );
}

fn events_are_numbered_without_gaps(backend: &Backend) {
    let executions = backend(&tenant());
    let log = executions.create(&record("e1")).unwrap();
    for attempt in 1..=3 {
        log.note(EventKind::AttemptStarted {
            task: "a".into(),
            attempt,
            fallback: false,
        });
    }
    assert_eq!(log.events().unwrap().len(), 1, "notes wait for a commit");
    log.flush_notes().unwrap();
    log.commit_tasks(&[report("a", Some(json!(1)))]).unwrap();
    let all = log.events_from(0).unwrap();
    let numbers: Vec<u64> = all.iter().map(|(n, _)| *n).collect();
    assert_eq!(numbers, vec![0, 1, 2, 3, 4]);
    let attempts: Vec<u32> = all
        .iter()
        .filter_map(|(_, e)| match e.kind {
            EventKind::AttemptStarted { attempt, .. } => Some(attempt),
            _ => None,
        })
        .collect();
    assert_eq!(attempts, vec![1, 2, 3], "in the order noted");
    let tail = log.events_from(3).unwrap();
    assert_eq!(tail.len(), 2);
    assert_eq!(tail[0].0, 3);
    assert!(log.events_from(99).unwrap().is_empty());
}

fn task_states_round_trip(backend: &Backend) {
    let executions = backend(&tenant());
    let log = executions.create(&record("e1")).unwrap();
    let big = json!({ "text": "x".repeat(5000) });
    log.commit_tasks(&[
        report("a", Some(big.clone())),
        report("b", Some(json!("small"))),
    ])
    .unwrap();
    log.commit_tasks(&[report("c", Some(big.clone()))]).unwrap();
    let tasks = log.tasks().unwrap();
    let ids: Vec<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(ids, vec!["a", "b", "c"]);
    assert_eq!(tasks[0].output.as_ref(), Some(&big));
    assert_eq!(tasks[1].output.as_ref(), Some(&json!("small")));
    assert_eq!(tasks[2].output.as_ref(), Some(&big));
    let finished = log
        .events()
        .unwrap()
        .iter()
        .filter(|e| matches!(e.kind, EventKind::TaskFinished { .. }))
        .count();
    assert_eq!(finished, 3, "each state with its event");
}

fn retries_until_the_task_finishes(backend: &Backend) {
    let executions = backend(&tenant());
    let log = executions.create(&record("e1")).unwrap();
    let failed_event = LogEvent {
        at: now_ms(),
        kind: EventKind::AttemptFailed {
            task: "a".into(),
            attempt: 1,
            kind: FailureKind::Retryable,
            error: "later".into(),
            retry_at: Some(now_ms() + 1000),
        },
    };
    let pending = retry("a");
    log.schedule_retry(failed_event, &pending).unwrap();
    assert_eq!(log.retries().unwrap(), vec![pending]);
    log.commit_tasks(&[report("a", Some(json!(2)))]).unwrap();
    assert!(
        log.retries().unwrap().is_empty(),
        "a finished task has none"
    );
}

fn signals_and_waits(backend: &Backend) {
    let executions = backend(&tenant());
    let log = executions.create(&record("e1")).unwrap();
    let deadline = log
        .start_wait("a", "approve", Some(Duration::from_secs(60)))
        .unwrap()
        .expect("a deadline");
    assert!(deadline > now_ms());
    assert_eq!(
        log.start_wait("a", "approve", Some(Duration::from_secs(1)))
            .unwrap(),
        Some(deadline),
        "the recorded deadline stands"
    );
    assert_eq!(log.start_wait("b", "other", None).unwrap(), None);
    assert_eq!(log.signal_payload("approve").unwrap(), None);
    log.signal("approve", &json!({ "ok": true })).unwrap();
    assert_eq!(
        log.signal_payload("approve").unwrap(),
        Some(json!({ "ok": true }))
    );
    assert!(log.events().unwrap().iter().any(|e| matches!(
        &e.kind,
        EventKind::SignalReceived { signal, .. } if signal == "approve"
    )));
    // A sender's retry with the same request id is recorded once.
    let received = |log: &crate::executions::ExecutionLog| {
        log.events()
            .unwrap()
            .iter()
            .filter(|e| matches!(&e.kind, EventKind::SignalReceived { .. }))
            .count()
    };
    assert!(log.signal_once("more", &json!(1), Some("r-1")).unwrap());
    assert!(!log.signal_once("more", &json!(1), Some("r-1")).unwrap());
    assert!(log.signal_once("more", &json!(2), Some("r-2")).unwrap());
    assert_eq!(received(&log), 3);
}

fn dead_letters_replay_and_purge(backend: &Backend) {
    let executions = backend(&tenant());
    let log = executions.create(&record("e1")).unwrap();
    log.commit_tasks(&[failed("a"), failed("b")]).unwrap();
    log.finish(
        ExecutionStatus::Failed,
        Some("it broke".into()),
        serde_json::Map::new(),
    )
    .unwrap();
    drop(log);
    let log = executions.open("e1").unwrap();
    let letters = log.dead_letters().unwrap();
    assert_eq!(letters.len(), 2);
    assert!(letters.iter().all(|l| l.state == DeadLetterState::Open));
    assert_eq!(executions.open_dead_letters().unwrap(), 2, "counted open");
    let listed = executions.list(&ListQuery::default()).unwrap();
    assert_eq!(listed.items[0].dead_letters, 2, "the listing shows them");
    log.replay("a", &[], Some(&json!({ "x": 2 }))).unwrap();
    assert_eq!(
        executions.open_dead_letters().unwrap(),
        1,
        "replayed: closed"
    );
    assert_eq!(log.record().unwrap().status, ExecutionStatus::Running);
    let ids: Vec<String> = log.tasks().unwrap().into_iter().map(|t| t.id).collect();
    assert_eq!(ids, vec!["b".to_owned()], "the replayed state is cleared");
    assert_eq!(
        log.overrides().unwrap().get("a").map(String::as_str),
        Some(r#"{"x":2}"#)
    );
    log.purge_dead_letter("b").unwrap();
    assert_eq!(executions.open_dead_letters().unwrap(), 0, "purged: closed");
    let states: Vec<DeadLetterState> = log
        .dead_letters()
        .unwrap()
        .iter()
        .map(|l| l.state)
        .collect();
    assert_eq!(
        states,
        vec![DeadLetterState::Replayed, DeadLetterState::Purged]
    );
    assert!(
        log.replay("a", &[], None).is_err(),
        "only open letters replay"
    );
}

fn an_owned_execution_is_busy(backend: &Backend) {
    let a = short(backend(&tenant()), "a");
    let b = short(backend(&tenant()), "b");
    let held = a.create(&record("e1")).unwrap();
    assert!(matches!(b.open("e1"), Err(ExecutionError::Busy(_))));
    assert!(matches!(b.read("e1"), Err(ExecutionError::Busy(_))));
    assert!(
        matches!(a.open("e1"), Err(ExecutionError::Busy(_))),
        "even for its owner name"
    );
    held.finish(ExecutionStatus::Succeeded, None, serde_json::Map::new())
        .unwrap();
    assert_eq!(
        b.read("e1").unwrap().record().unwrap().status,
        ExecutionStatus::Succeeded,
        "a finished execution's lease is given up"
    );
}

fn a_dropped_owner_releases(backend: &Backend) {
    let a = backend(&tenant()).with_owner("a");
    let b = backend(&tenant()).with_owner("b");
    drop(a.create(&record("e1")).unwrap());
    let taken = b.open("e1").unwrap();
    let lease = taken.lease().unwrap();
    assert_eq!((lease.owner.as_str(), lease.epoch), ("b", 2));
    taken.resumed(0).unwrap();
}

fn an_expired_lease_is_taken_over(backend: &Backend) {
    let a = short(backend(&tenant()), "a");
    let b = short(backend(&tenant()), "b");
    let stale = a.create(&record("e1")).unwrap();
    stale.note(EventKind::CancelRequested);
    std::thread::sleep(Duration::from_millis(300));
    let taken = b.open("e1").expect("taken over after expiry");
    assert_eq!(taken.lease().unwrap().epoch, 2);
    let before = taken.events().unwrap().len();
    let refused = stale.commit_tasks(&[report("a", Some(json!("late")))]);
    assert!(
        matches!(refused, Err(ExecutionError::LeaseLost { ref holder, .. }) if holder.as_deref().is_some_and(|h| h.starts_with("b "))),
        "a stale owner's write is refused: {refused:?}"
    );
    assert!(matches!(
        stale.renew(),
        Err(ExecutionError::LeaseLost { .. })
    ));
    assert_eq!(taken.events().unwrap().len(), before, "nothing was written");
    assert!(taken.tasks().unwrap().is_empty());
    drop(stale);
    taken
        .commit_tasks(&[report("a", Some(json!("new")))])
        .unwrap();
    assert_eq!(taken.tasks().unwrap()[0].output, Some(json!("new")));
}

fn a_renewed_lease_holds(backend: &Backend) {
    let a = short(backend(&tenant()), "a");
    let b = short(backend(&tenant()), "b");
    let held = a.create(&record("e1")).unwrap();
    for _ in 0..4 {
        std::thread::sleep(Duration::from_millis(75));
        held.renew().unwrap();
    }
    assert!(matches!(b.open("e1"), Err(ExecutionError::Busy(_))));
    held.resumed(0).unwrap();
}

fn tenants_are_apart(backend: &Backend) {
    let acme = TenantId::new("acme").unwrap();
    let globex = TenantId::new("globex").unwrap();
    let a = backend(&acme);
    let b = backend(&globex);
    let mut mine = record("e1");
    mine.inputs = json!("acme's");
    let log = a.create(&mine).unwrap();
    log.finish(ExecutionStatus::Succeeded, None, serde_json::Map::new())
        .unwrap();
    assert!(!b.exists("e1"));
    assert!(b.ids().is_empty());
    assert!(matches!(b.read("e1"), Err(ExecutionError::Unknown { .. })));
    assert!(matches!(b.open("e1"), Err(ExecutionError::Unknown { .. })));
    let theirs = b
        .create(&record("e1"))
        .expect("the same id in another tenant");
    theirs
        .finish(ExecutionStatus::Failed, None, serde_json::Map::new())
        .unwrap();
    drop((log, theirs));
    assert_eq!(
        a.read("e1").unwrap().record().unwrap().inputs,
        json!("acme's")
    );
    assert_eq!(
        b.read("e1").unwrap().record().unwrap().status,
        ExecutionStatus::Failed
    );
}

fn removed_executions_are_gone(backend: &Backend) {
    let executions = backend(&tenant());
    let log = executions.create(&record("e1")).unwrap();
    assert!(matches!(
        executions.remove("e1"),
        Err(ExecutionError::Busy(_))
    ));
    log.finish(ExecutionStatus::Succeeded, None, serde_json::Map::new())
        .unwrap();
    drop(log);
    executions.remove("e1").unwrap();
    assert!(!executions.exists("e1"));
    assert!(matches!(
        executions.read("e1"),
        Err(ExecutionError::Unknown { .. })
    ));
    executions
        .create(&record("e1"))
        .expect("the id is free again");
}

/// Executions `e00`..: started 1 s apart, every third failed, the rest
/// succeeded but the last (running); workflow `even` or `odd`.
fn many(executions: &Executions, n: u64) -> Vec<crate::executions::ExecutionLog> {
    (0..n)
        .map(|i| {
            let mut r = record(&format!("e{i:02}"));
            r.created_at = 1_000_000 + i * 1000;
            r.workflow = if i % 2 == 0 { "even" } else { "odd" }.into();
            let log = executions.create(&r).unwrap();
            if i + 1 < n {
                let status = if i % 3 == 0 {
                    ExecutionStatus::Failed
                } else {
                    ExecutionStatus::Succeeded
                };
                log.finish(status, None, serde_json::Map::new()).unwrap();
            }
            log
        })
        .collect()
}

fn listing_pages_newest_first(backend: &Backend) {
    let executions = backend(&tenant());
    let empty = executions
        .list(&ListQuery::default())
        .expect("an empty backend lists nothing");
    assert!(empty.items.is_empty() && empty.next.is_none());
    let _logs = many(&executions, 25);
    let mut seen = Vec::new();
    let mut after = None;
    let mut pages = 0;
    loop {
        let page = executions
            .list(&ListQuery {
                limit: 10,
                after: after.clone(),
                ..ListQuery::default()
            })
            .unwrap();
        pages += 1;
        seen.extend(page.items.iter().map(|s| s.id.clone()));
        match page.next {
            Some(next) => {
                let cursor = next.cursor();
                after = Some(Position::from_cursor(&cursor).expect("a cursor reads back"));
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let expected: Vec<String> = (0..25).rev().map(|i| format!("e{i:02}")).collect();
    assert_eq!(seen, expected, "every execution once, newest first");
    let first = executions
        .list(&ListQuery {
            limit: 1,
            ..ListQuery::default()
        })
        .unwrap();
    assert_eq!(first.items[0].status, ExecutionStatus::Running);
    assert!(Position::from_cursor("nonsense").is_none());
    executions.remove("e23").unwrap();
    let after_remove = executions
        .list(&ListQuery {
            limit: 3,
            ..ListQuery::default()
        })
        .unwrap();
    let ids: Vec<&str> = after_remove.items.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(
        ids,
        vec!["e24", "e22", "e21"],
        "a removed execution is not listed"
    );
}

fn listing_filters(backend: &Backend) {
    let executions = backend(&tenant());
    let logs = many(&executions, 12);
    let ids = |query: ListQuery| -> Vec<String> {
        let mut out = Vec::new();
        let mut query = ListQuery { limit: 2, ..query };
        loop {
            let page = executions.list(&query).unwrap();
            out.extend(page.items.into_iter().map(|s| s.id));
            match page.next {
                Some(next) => query.after = Some(next),
                None => return out,
            }
        }
    };
    let failed = ids(ListQuery {
        status: Some(ExecutionStatus::Failed),
        ..ListQuery::default()
    });
    assert_eq!(failed, vec!["e09", "e06", "e03", "e00"]);
    let odd = ids(ListQuery {
        workflow: Some("odd".into()),
        ..ListQuery::default()
    });
    assert_eq!(odd, vec!["e11", "e09", "e07", "e05", "e03", "e01"]);
    let window = ids(ListQuery {
        since: Some(1_003_000),
        until: Some(1_006_000),
        ..ListQuery::default()
    });
    assert_eq!(window, vec!["e05", "e04", "e03"]);
    let odd_failed_since = ids(ListQuery {
        status: Some(ExecutionStatus::Failed),
        workflow: Some("odd".into()),
        since: Some(1_004_000),
        ..ListQuery::default()
    });
    assert_eq!(odd_failed_since, vec!["e09"]);
    let running = ids(ListQuery {
        status: Some(ExecutionStatus::Running),
        ..ListQuery::default()
    });
    assert_eq!(running, vec!["e11"]);
    // Empty windows are empty, not errors.
    let backwards = ids(ListQuery {
        since: Some(1_006_000),
        until: Some(1_003_000),
        ..ListQuery::default()
    });
    assert!(backwards.is_empty());
    let before_since = ids(ListQuery {
        since: Some(1_006_000),
        after: Some(Position {
            created_at: 1_002_000,
            id: "e02".into(),
        }),
        ..ListQuery::default()
    });
    assert!(before_since.is_empty());
    logs[11]
        .finish(ExecutionStatus::Cancelled, None, serde_json::Map::new())
        .unwrap();
    assert!(
        ids(ListQuery {
            status: Some(ExecutionStatus::Running),
            ..ListQuery::default()
        })
        .is_empty(),
        "a status change is listed"
    );
    let mut child = record("child");
    child.created_at = 2_000_000;
    child.parent = Some(crate::executions::ParentTask {
        execution: "e00".into(),
        task: "a".into(),
    });
    drop(executions.create(&child).unwrap());
    assert_eq!(
        ids(ListQuery::default()).len(),
        12,
        "sub-workflow runs left out"
    );
    let all = ids(ListQuery {
        children: true,
        ..ListQuery::default()
    });
    assert_eq!(all.first().map(String::as_str), Some("child"));
}

fn stored_bytes_count_what_is_kept(backend: &Backend) {
    let executions = backend(&tenant());
    let others = backend(&TenantId::new("others").unwrap());
    let empty = executions.stored_bytes();
    let log = executions.create(&record("e1")).unwrap();
    log.commit_tasks(&[report("a", Some(json!("x".repeat(100_000))))])
        .unwrap();
    log.finish(ExecutionStatus::Succeeded, None, serde_json::Map::new())
        .unwrap();
    drop(log);
    let kept = executions.stored_bytes();
    assert!(kept >= empty + 100_000, "{empty} then {kept}");
    assert!(
        others.stored_bytes() < 100_000,
        "another tenant's bytes are its own"
    );
    executions.remove("e1").unwrap();
    assert!(executions.stored_bytes() < kept);
}
