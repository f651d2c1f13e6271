//! Operations on recorded executions: what one looks like now, listing,
//! cancelling, signalling, removing old ones, and which ones wait to be
//! resumed. Every front end (the CLI today) calls these and only prints.
//!
//! An execution is read from its file, or asked of the process running it
//! through its control socket ([`crate::control`]) when that process holds
//! the file. A run parked by a live process ([`crate::parking`]) is read
//! from its file, counts as that process's, and is woken when a signal or
//! a cancel is recorded in its file.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::service::ServiceError;
use crate::{control, parking};
use orchestrator_core::fault::FailureKind;
use orchestrator_core::scheduler::TaskReport;
use orchestrator_store::executions::listing::{ListQuery, Position};
use orchestrator_store::executions::{
    EventKind, ExecutionError, ExecutionLog, ExecutionRecord, ExecutionStatus, Executions,
    LogEvent, now_ms,
};

/// Where an execution stands, as a person asks: is anything running it?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// A live process is running it.
    Running,
    /// Unfinished, and no process runs it (its process died or was killed):
    /// `resume` continues it.
    Interrupted,
    /// Finished, with this status.
    Finished(ExecutionStatus),
}

impl State {
    /// `running`, `interrupted` or the final status's word.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Interrupted => "interrupted",
            Self::Finished(status) => status.as_str(),
        }
    }
}

/// What is known of one execution, from its file or from its owner.
#[derive(Debug, Clone)]
pub struct ExecutionView {
    /// The record: workflow, tasks, status, outputs, parent.
    pub record: ExecutionRecord,
    /// The final state of every task (and `for_each` item) so far.
    pub tasks: Vec<TaskReport>,
    /// The event log, oldest first.
    pub events: Vec<LogEvent>,
    /// Whether a live process is running it.
    pub live: bool,
}

impl ExecutionView {
    /// Where it stands.
    pub fn state(&self) -> State {
        match (self.record.status, self.live) {
            (ExecutionStatus::Running, true) => State::Running,
            (ExecutionStatus::Running, false) => State::Interrupted,
            (status, _) => State::Finished(status),
        }
    }

    /// What happened to each task on its way, by task id, from the event
    /// log.
    pub fn histories(&self) -> BTreeMap<&str, TaskHistory> {
        let mut histories: BTreeMap<&str, TaskHistory> = BTreeMap::new();
        for event in &self.events {
            match &event.kind {
                EventKind::DeadLettered { task } => {
                    histories.entry(task).or_default().letter = Some(LetterState::Open);
                }
                EventKind::DeadLetterReplayed { task, .. } => {
                    let history = histories.entry(task).or_default();
                    history.letter = Some(LetterState::Replayed);
                    history.notes.push(HistoryNote::Replayed);
                }
                EventKind::DeadLetterPurged { task } => {
                    histories.entry(task).or_default().letter = Some(LetterState::Purged);
                }
                EventKind::AttemptStarted { task, .. } => {
                    histories.entry(task).or_default().attempts += 1;
                }
                EventKind::AttemptFailed {
                    task,
                    attempt,
                    kind,
                    error,
                    retry_at,
                } => histories
                    .entry(task)
                    .or_default()
                    .notes
                    .push(HistoryNote::AttemptFailed {
                        attempt: *attempt,
                        kind: *kind,
                        error: error.clone(),
                        retry_after: retry_at
                            .map(|at| Duration::from_millis(at.saturating_sub(event.at))),
                    }),
                _ => {}
            }
        }
        histories
    }
}

/// One task's way to its state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TaskHistory {
    /// Attempts started (a `for_each` task's attempts are its items').
    pub attempts: u32,
    /// Failed attempts and replays, in order.
    pub notes: Vec<HistoryNote>,
    /// Where its dead letter stands, the last event winning.
    pub letter: Option<LetterState>,
}

/// Something that happened to a task before its final state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HistoryNote {
    /// An attempt failed.
    AttemptFailed {
        /// Which attempt (1 is the first).
        attempt: u32,
        /// How it failed.
        kind: FailureKind,
        /// Its message.
        error: String,
        /// When a retry was due, counted from the failure.
        retry_after: Option<Duration>,
    },
    /// It was replayed from the dead-letter queue.
    Replayed,
}

/// Where a task's dead letter stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LetterState {
    /// In the queue.
    Open,
    /// Replayed.
    Replayed,
    /// Removed from the queue.
    Purged,
}

/// Where the owner of live execution `id` answers, or why there is no
/// such place (the backend keeps executions in this process only).
fn owner_socket(executions: &Executions, id: &str) -> Result<std::path::PathBuf, ServiceError> {
    executions.socket(id).ok_or_else(|| {
        ServiceError::Plugin(format!(
            "execution `{id}` is owned by another engine in this process; ask that engine"
        ))
    })
}

/// How long [`view`] keeps trying an execution whose owner is finishing:
/// its control socket is gone a moment before its file is let go.
const FINISHING: Duration = Duration::from_secs(2);

/// Reads execution `id`'s file as [`Executions::read`] does; while its
/// owner is letting the file go (its control socket is gone, the file not
/// yet closed) it reads again, up to [`FINISHING`]. A live execution is
/// `Busy` at once.
pub fn read_settled(executions: &Executions, id: &str) -> Result<ExecutionLog, ExecutionError> {
    let began = std::time::Instant::now();
    loop {
        match executions.read(id) {
            Err(ExecutionError::Busy(_))
                if began.elapsed() < FINISHING
                    && executions.socket(id).is_some_and(|socket| !socket.exists()) =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            read => return read,
        }
    }
}

/// What is known of execution `id` now.
pub fn view(executions: &Executions, id: &str) -> Result<ExecutionView, ServiceError> {
    let began = std::time::Instant::now();
    let (snapshot, live) = loop {
        match executions.read(id) {
            Ok(log) => {
                break (
                    control::snapshot(&log).map_err(ServiceError::Plugin)?,
                    false,
                );
            }
            Err(ExecutionError::Busy(_)) => {
                match control::request(&owner_socket(executions, id)?, "status") {
                    Ok(snapshot) => break (snapshot, true),
                    // The owner is letting the file go: read it again.
                    Err(_) if began.elapsed() < FINISHING => {
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => return Err(ServiceError::Plugin(format!("execution `{id}`: {e}"))),
                }
            }
            Err(e) => return Err(e.into()),
        }
    };
    let bad = |e: serde_json::Error| ServiceError::Plugin(format!("execution `{id}`: {e}"));
    let record: ExecutionRecord =
        serde_json::from_value(snapshot["record"].clone()).map_err(bad)?;
    // A parked run is a live process's, though its file is free.
    let live =
        live || (record.status == ExecutionStatus::Running && parking::is_parked(executions, id));
    Ok(ExecutionView {
        record,
        tasks: serde_json::from_value(snapshot["tasks"].clone()).map_err(bad)?,
        events: serde_json::from_value(snapshot["events"].clone()).map_err(bad)?,
        live,
    })
}

/// Which executions to list, as a person or a client asks.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Only those in this state (its word: `running`, `interrupted`,
    /// `succeeded`, `failed`, `cancelled`).
    pub state: Option<String>,
    /// Only runs of this workflow.
    pub workflow: Option<String>,
    /// At most this many (1 to 1000; 0 means 50).
    pub limit: usize,
    /// Continue where the page with this cursor ended.
    pub after: Option<String>,
}

/// One page of executions, newest first.
#[derive(Debug, Clone)]
pub struct Listing {
    /// What each looks like now.
    pub views: Vec<ExecutionView>,
    /// The cursor of the next page, if there may be one.
    pub next: Option<String>,
}

/// A page of executions (sub-workflow runs left out), from the
/// backend's index; each one on it is then read (or asked of its owner)
/// for what it looks like now. One that cannot be read is skipped with a
/// warning.
pub fn list(executions: &Executions, filter: &ListFilter) -> Result<Listing, ServiceError> {
    let status = match filter.state.as_deref() {
        None => None,
        Some("running" | "interrupted") => Some(ExecutionStatus::Running),
        Some("succeeded") => Some(ExecutionStatus::Succeeded),
        Some("failed") => Some(ExecutionStatus::Failed),
        Some("cancelled") => Some(ExecutionStatus::Cancelled),
        Some(other) => {
            return Err(ServiceError::Inputs(format!(
                "`{other}` is not a state: use running, interrupted, succeeded, failed or cancelled"
            )));
        }
    };
    let after = filter
        .after
        .as_deref()
        .map(|cursor| {
            Position::from_cursor(cursor).ok_or_else(|| {
                ServiceError::Inputs(format!(
                    "`{cursor}` is not a cursor this listing gave; start without --after"
                ))
            })
        })
        .transpose()?;
    let page = executions.list(&ListQuery {
        status,
        workflow: filter.workflow.clone(),
        after,
        limit: if filter.limit == 0 { 50 } else { filter.limit },
        ..ListQuery::default()
    })?;
    let mut views = Vec::new();
    for summary in &page.items {
        match view(executions, &summary.id) {
            Ok(view)
                if filter
                    .state
                    .as_deref()
                    .is_none_or(|s| s == view.state().as_str()) =>
            {
                views.push(view);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!("skipping execution {}: {e}", summary.id),
        }
    }
    Ok(Listing {
        views,
        next: page.next.map(|p| p.cursor()),
    })
}

/// How a cancel or a signal reached an execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// No process was running it: recorded in its file.
    Recorded,
    /// Handed to the process running it.
    Live,
}

/// An execution that has not finished.
enum Unfinished {
    /// No process runs it; this one has it open.
    Here(ExecutionLog),
    /// Another process runs it.
    Live,
    /// Its owner is between running and letting it go (or the other way).
    Settling,
}

/// Reaches unfinished execution `id` as `unfinished` says, and hands it to
/// `reach`; while its owner is settling, or answers that it just parked
/// it, tries again, up to [`FINISHING`].
fn reach_unfinished(
    executions: &Executions,
    id: &str,
    refusal: &str,
    mut reach: impl FnMut(Unfinished) -> Result<Delivery, ServiceError>,
) -> Result<Delivery, ServiceError> {
    let began = std::time::Instant::now();
    loop {
        let reached = match unfinished(executions, id, refusal)? {
            Unfinished::Settling if began.elapsed() < FINISHING => Err(None),
            Unfinished::Settling => Err(Some(ServiceError::Plugin(format!(
                "execution `{id}` is busy and its owner does not answer; try again"
            )))),
            Unfinished::Live => match reach(Unfinished::Live) {
                Err(_) if began.elapsed() < FINISHING && parking::is_parked(executions, id) => {
                    Err(None)
                }
                reached => Ok(reached),
            },
            here => Ok(reach(here)),
        };
        match reached {
            Ok(reached) => return reached,
            Err(Some(e)) => return Err(e),
            Err(None) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

fn unfinished(
    executions: &Executions,
    id: &str,
    refusal: &str,
) -> Result<Unfinished, ServiceError> {
    match executions.open(id) {
        // Its owner is letting the file go (to end it, or to park it), or
        // taking it up: the file will tell in a moment.
        Err(ExecutionError::Busy(_))
            if executions
                .socket(id)
                .is_some_and(|socket| std::fs::symlink_metadata(socket).is_err()) =>
        {
            Ok(Unfinished::Settling)
        }
        Ok(log) => {
            let record = log.record()?;
            if record.status != ExecutionStatus::Running {
                return Err(ServiceError::Plugin(format!(
                    "execution `{id}` already finished ({}); {refusal}",
                    record.status.as_str()
                )));
            }
            Ok(Unfinished::Here(log))
        }
        Err(ExecutionError::Busy(_)) => Ok(Unfinished::Live),
        Err(e) => Err(e.into()),
    }
}

/// Cancels execution `id`: recorded at once when no process runs it;
/// otherwise its process is asked, and this waits (up to 5 s) until the
/// process has recorded it.
pub fn cancel(executions: &Executions, id: &str) -> Result<Delivery, ServiceError> {
    reach_unfinished(
        executions,
        id,
        "nothing to cancel",
        |reached| match reached {
            Unfinished::Here(log) => {
                let parked = parking::is_parked(executions, id);
                let reason = if parked {
                    "cancelled while it was parked, waiting"
                } else {
                    "cancelled while no process was running it"
                };
                log.finish(
                    ExecutionStatus::Cancelled,
                    Some(reason.into()),
                    serde_json::Map::new(),
                )?;
                drop(log);
                if parked {
                    parking::wake(executions, id);
                }
                Ok(Delivery::Recorded)
            }
            Unfinished::Live | Unfinished::Settling => {
                control::request(&owner_socket(executions, id)?, "cancel")
                    .map_err(|e| ServiceError::Plugin(format!("execution `{id}`: {e}")))?;
                // The owner records the cancel when its run stops; wait for it.
                for _ in 0..100 {
                    if executions.read(id).is_ok() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Ok(Delivery::Live)
            }
        },
    )
}

/// Sends signal `name` with `payload` to execution `id`: recorded in its
/// file when no process runs it (a resume delivers it; a process that
/// parked it is woken), else handed to its process. With a `request_id`
/// seen before, nothing is recorded again.
pub fn signal(
    executions: &Executions,
    id: &str,
    name: &str,
    payload: &Value,
    request_id: Option<&str>,
) -> Result<Delivery, ServiceError> {
    reach_unfinished(executions, id, "the signal was not recorded", |reached| {
        match reached {
            Unfinished::Here(log) => {
                log.signal_once(name, payload, request_id)?;
                // Let go before the wake: the owner opens the file.
                drop(log);
                parking::wake(executions, id);
                Ok(Delivery::Recorded)
            }
            Unfinished::Live | Unfinished::Settling => {
                let request = serde_json::json!({
                    "op": "signal", "name": name, "payload": payload, "request_id": request_id,
                });
                control::request_with(&owner_socket(executions, id)?, request)
                    .map_err(|e| ServiceError::Plugin(format!("execution `{id}`: {e}")))?;
                Ok(Delivery::Live)
            }
        }
    })
}

/// Removes the files of executions that finished more than `older_than`
/// ago; returns how many.
pub fn gc(executions: &Executions, older_than: Duration) -> Result<usize, ServiceError> {
    let cutoff = now_ms().saturating_sub(u64::try_from(older_than.as_millis()).unwrap_or(u64::MAX));
    let mut removed = 0;
    for id in executions.ids() {
        let Ok(log) = executions.read(&id) else {
            continue;
        };
        let record = log.record()?;
        drop(log);
        if record.status != ExecutionStatus::Running
            && record.finished_at.is_some_and(|t| t < cutoff)
        {
            executions.remove(&id)?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Follows execution `id` from event `from`: `each(seq, event)` for every
/// event so far and then every one the process running it commits, until
/// it finished, no process runs it any more, or `each` or `wanted()`
/// (asked while nothing comes) returns false. Returns where it stands
/// then. Blocks the calling thread.
pub fn follow(
    executions: &Executions,
    id: &str,
    from: u64,
    wanted: &dyn Fn() -> bool,
    mut each: impl FnMut(u64, &LogEvent) -> bool,
) -> Result<State, ServiceError> {
    let mut next = from;
    let stopped = std::cell::Cell::new(false);
    let mut finished = None;
    loop {
        match executions.read(id) {
            Ok(log) => {
                let mut quit = false;
                for (seq, event) in log.events_from(next)? {
                    next = seq + 1;
                    if !each(seq, &event) {
                        quit = true;
                        break;
                    }
                }
                let record = log.record()?;
                drop(log);
                if !quit
                    && wanted()
                    && record.status == ExecutionStatus::Running
                    && parking::is_parked(executions, id)
                {
                    // Parked by a live process: its next events come once
                    // it is taken up again.
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
                return Ok(match record.status {
                    ExecutionStatus::Running => State::Interrupted,
                    status => State::Finished(status),
                });
            }
            Err(ExecutionError::Busy(_)) => {
                // Whether it finished or its owner went away (it ended, was
                // killed, or is not listening yet), the file tells once no
                // process holds it; until then, ask the owner again.
                let ended = control::follow_remote(
                    &owner_socket(executions, id)?,
                    next,
                    &|| !stopped.get() && wanted(),
                    |seq, event| {
                        if let EventKind::ExecutionFinished { status, .. } = &event.kind {
                            finished = Some(*status);
                        }
                        next = seq + 1;
                        stopped.set(!each(seq, &event));
                        !stopped.get()
                    },
                );
                if stopped.get() || !wanted() {
                    return Ok(State::Running);
                }
                // The owner said it finished: no need to wait for its file.
                if let (Ok(true), Some(status)) = (ended, finished) {
                    return Ok(State::Finished(status));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Follows `log`, an execution this process runs, from event `from`: the
/// events so far and then each as it is committed, in order, until it
/// finished (the `execution_finished` event is the last one sent) or the
/// receiver is dropped. Call it inside a tokio runtime.
pub fn follow_log(
    log: &Arc<ExecutionLog>,
    from: u64,
) -> tokio::sync::mpsc::Receiver<Result<(u64, LogEvent), String>> {
    let (send, receive) = tokio::sync::mpsc::channel(256);
    let mut commits = log.follow();
    // Not a strong reference: a follower never keeps an execution's file
    // open, and once the log is gone its commits end the wait below.
    let log = Arc::downgrade(log);
    tokio::spawn(async move {
        let mut next = from;
        loop {
            // Seen before reading: a commit after the read wakes the wait.
            commits.borrow_and_update();
            let Some(open) = log.upgrade() else {
                return;
            };
            let read = tokio::task::spawn_blocking(move || {
                // The status first: if it says finished, the events read
                // after it hold the end (they commit together).
                let running = open.record()?.status == ExecutionStatus::Running;
                let events = open.events_from(next)?;
                Ok::<_, ExecutionError>((events, running))
            })
            .await;
            let (events, running) = match read {
                Ok(Ok(read)) => read,
                Ok(Err(e)) => {
                    let _ = send.send(Err(e.to_string())).await;
                    return;
                }
                Err(e) => {
                    let _ = send.send(Err(e.to_string())).await;
                    return;
                }
            };
            for (seq, event) in events {
                let finished = matches!(event.kind, EventKind::ExecutionFinished { .. });
                if send.send(Ok((seq, event))).await.is_err() {
                    return;
                }
                next = seq + 1;
                if finished {
                    return;
                }
            }
            // Followed from beyond its end: it finished all the same.
            if !running {
                return;
            }
            tokio::select! {
                changed = commits.changed() => if changed.is_err() { return },
                // The follower left.
                () = send.closed() => return,
            }
        }
    });
    receive
}

/// Executions no process runs (or keeps parked) that have not finished,
/// sub-workflow runs left out (their parents resume them).
pub fn interrupted(executions: &Executions) -> Vec<String> {
    executions
        .ids()
        .into_iter()
        .filter(|id| {
            executions
                .read(id)
                .and_then(|log| log.record())
                .is_ok_and(|r| r.status == ExecutionStatus::Running && r.parent.is_none())
                && !parking::is_parked(executions, id)
        })
        .collect()
}
