//! Executions: one redb file per execution, holding its record, an
//! append-only event log, the final state of every task, and large outputs
//! by content hash.
//!
//! Files live in `executions/` beside the store file, named `<id>.redb`. The
//! process running an execution holds its file open (redb's file lock), so
//! "the file is locked" means "a live process owns this execution"; a file
//! that opens and says `running` belongs to a run that died: it can be
//! resumed. Other processes reach a live owner through its control socket
//! (`cli::control`).
//!
//! | table | key | value |
//! |---|---|---|
//! | `meta` | `"format_version"`, `"record"` | format (decimal text); [`ExecutionRecord`] JSON |
//! | `log` | `0x00` + sequence number (u64 big-endian, from 0) | an event: [`LogEvent`] JSON |
//! | `log` | `0x01` + task id (UTF-8) | a task's final state: [`TaskReport`] JSON (output replaced by a blob reference when large) |
//! | `blobs` | sha256 hex of the JSON text | the output's JSON text |
//! | `signals` | signal name | its payload, JSON |
//! | `retries` | task id | a scheduled retry ([`orchestrator_core::scheduler::PendingRetry`]) |
//! | `dead_letters` | task id | a failed task in the dead-letter queue ([`DeadLetter`]) |
//! | `overrides` | task id | the input a dead-letter replay runs the task with, JSON |
//! | `waits` | task id | the wait's deadline, ms since the epoch (0: none) |
//!
//! The event log and the task states are two key ranges of one table, not
//! two tables: a strict chain commits once per step, and every B-tree a
//! commit touches is more pages to write and sync (a second table cost ~40 µs
//! per commit, measured; see `docs/PERFORMANCE.md`).
//!
//! Invariants: a task's final state and its `task_finished` event are written
//! in the same transaction; events are never rewritten or deleted; the
//! record's status changes only with an event saying so.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use redb::{
    Database, Durability, ReadOnlyDatabase, ReadableDatabase, ReadableTable, TableDefinition,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use orchestrator_core::scheduler::{PendingRetry, TaskReport};

mod dead_letters;
mod files;
mod journal;
mod record;

pub use dead_letters::{DeadLetter, DeadLetterState};
pub use files::{Executions, valid_id};
pub use journal::ExecutionJournal;
pub use record::{EventKind, ExecutionRecord, ExecutionStatus, LogEvent, ParentTask};

/// The format of execution files this runtime writes and reads. Format 1
/// (separate `events` and `tasks` tables) was never released.
pub const FORMAT_VERSION: u32 = 2;

const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
/// Events and task states; keys by [`event_key`] and [`task_key`].
const LOG: TableDefinition<&[u8], &str> = TableDefinition::new("log");
const EVENT: u8 = 0;
const TASK: u8 = 1;

/// Events sort by sequence number, before every task state.
fn event_key(seq: u64) -> [u8; 9] {
    let mut key = [EVENT; 9];
    key[1..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// The sequence number in an event key.
fn sequence(key: &[u8]) -> u64 {
    let mut seq = [0; 8];
    seq.copy_from_slice(&key[1..9]);
    u64::from_be_bytes(seq)
}

fn task_key(id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + id.len());
    key.push(TASK);
    key.extend_from_slice(id.as_bytes());
    key
}
const BLOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("blobs");
const SIGNALS: TableDefinition<&str, &str> = TableDefinition::new("signals");
const WAITS: TableDefinition<&str, u64> = TableDefinition::new("waits");
const RETRIES: TableDefinition<&str, &str> = TableDefinition::new("retries");
const DEAD_LETTERS: TableDefinition<&str, &str> = TableDefinition::new("dead_letters");
const OVERRIDES: TableDefinition<&str, &str> = TableDefinition::new("overrides");

/// Outputs longer than this (as JSON text) are stored once in `blobs`.
pub const INLINE_OUTPUT_BYTES: usize = 1024;

/// Why an execution file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ExecutionError {
    /// No execution has this id.
    #[error("no execution `{id}` in {dir}; `runtime list` shows the executions")]
    Unknown {
        /// The id asked for.
        id: String,
        /// Where executions live.
        dir: PathBuf,
    },
    /// A live process owns it.
    #[error("execution `{0}` is running in another process")]
    Busy(String),
    /// The file is not an execution this runtime can read.
    #[error("{path}: {reason}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// What is wrong and what to do.
        reason: String,
    },
    /// A read or write failed.
    #[error("{path}: {source}")]
    Redb {
        /// The file.
        path: PathBuf,
        /// redb's error.
        source: redb::Error,
    },
}

fn unreadable(path: &Path, e: impl std::fmt::Display) -> ExecutionError {
    ExecutionError::Unreadable {
        path: path.to_owned(),
        reason: format!("{e}; it is not an execution file this runtime wrote (or it is damaged)"),
    }
}

fn json(value: &impl Serialize) -> String {
    serde_json::to_string(value).expect("execution records serialize")
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn append(w: &redb::WriteTransaction, kind: &EventKind) -> Result<(), redb::Error> {
    LogWriter::open(w)?.push(kind)
}

/// Appends events and writes task states within one write transaction: the
/// table is opened and the last sequence number read once.
struct LogWriter<'t> {
    table: redb::Table<'t, &'static [u8], &'static str>,
    next: u64,
}

impl<'t> LogWriter<'t> {
    fn open(w: &'t redb::WriteTransaction) -> Result<Self, redb::Error> {
        let table = w.open_table(LOG)?;
        let next = table
            .range(&event_key(0)[..]..&[TASK][..])?
            .next_back()
            .transpose()?
            .map_or(0, |(k, _)| sequence(k.value()) + 1);
        Ok(Self { table, next })
    }

    /// Writes a task's final state (beside the events, in the same table).
    fn put_task(&mut self, id: &str, state: &str) -> Result<(), redb::Error> {
        self.table.insert(task_key(id).as_slice(), state)?;
        Ok(())
    }

    fn push(&mut self, kind: &EventKind) -> Result<(), redb::Error> {
        self.push_event(&LogEvent {
            at: now_ms(),
            kind: kind.clone(),
        })
    }

    fn push_event(&mut self, event: &LogEvent) -> Result<(), redb::Error> {
        self.table
            .insert(&event_key(self.next)[..], json(event).as_str())?;
        self.next += 1;
        Ok(())
    }
}

/// How an execution file is open.
enum Db {
    /// By the process that runs, resumes or cancels it.
    Write(Database),
    /// To read it; nothing is written.
    Read(ReadOnlyDatabase),
}

impl Db {
    fn begin_read(&self) -> Result<redb::ReadTransaction, redb::TransactionError> {
        match self {
            Db::Write(db) => db.begin_read(),
            Db::Read(db) => db.begin_read(),
        }
    }
}

/// One open execution file.
pub struct ExecutionLog {
    db: Db,
    path: PathBuf,
    /// Attempt starts and emits noted since the last commit; written with
    /// the next one.
    notes: Mutex<Vec<LogEvent>>,
    /// Wakes waits when a signal is recorded.
    signalled: tokio::sync::Notify,
    /// Wakes whoever writes notes soon ([`ExecutionLog::on_note`]).
    noted: Arc<tokio::sync::Notify>,
    /// Counts the commits of this handle, so followers know when to read
    /// again ([`ExecutionLog::follow`]).
    commits: tokio::sync::watch::Sender<u64>,
}

impl std::fmt::Debug for ExecutionLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecutionLog")
            .field("path", &self.path)
            .finish()
    }
}

impl ExecutionLog {
    /// Writes the record and the first event of a new execution.
    fn init(db: Db, path: PathBuf, record: &ExecutionRecord) -> Result<Self, ExecutionError> {
        let log = Self::new(db, path);
        log.write(Durability::Immediate, |w| {
            let mut meta = w.open_table(META)?;
            meta.insert("format_version", FORMAT_VERSION.to_string().as_str())?;
            meta.insert("record", json(record).as_str())?;
            w.open_table(BLOBS)?;
            w.open_table(SIGNALS)?;
            w.open_table(WAITS)?;
            w.open_table(RETRIES)?;
            w.open_table(DEAD_LETTERS)?;
            w.open_table(OVERRIDES)?;
            append(
                w,
                &EventKind::ExecutionStarted {
                    workflow: record.workflow.clone(),
                },
            )
        })?;
        Ok(log)
    }

    fn new(db: Db, path: PathBuf) -> Self {
        Self {
            db,
            path,
            notes: Mutex::new(Vec::new()),
            signalled: tokio::sync::Notify::new(),
            noted: Arc::default(),
            commits: tokio::sync::watch::Sender::new(0),
        }
    }

    fn redb(&self, e: impl Into<redb::Error>) -> ExecutionError {
        ExecutionError::Redb {
            path: self.path.clone(),
            source: e.into(),
        }
    }

    fn write(
        &self,
        durability: Durability,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>,
    ) -> Result<(), ExecutionError> {
        let Db::Write(db) = &self.db else {
            return Err(ExecutionError::Unreadable {
                path: self.path.clone(),
                reason: "opened read-only; open it with `Executions::open` to write".into(),
            });
        };
        let mut w = db.begin_write().map_err(|e| self.redb(e))?;
        w.set_durability(durability).map_err(|e| self.redb(e))?;
        f(&w).map_err(|e| self.redb(e))?;
        w.commit().map_err(|e| self.redb(e))?;
        self.commits.send_modify(|n| *n += 1);
        Ok(())
    }

    fn check_format(self) -> Result<Self, ExecutionError> {
        let read = self.db.begin_read().map_err(|e| self.redb(e))?;
        let meta = read
            .open_table(META)
            .map_err(|e| unreadable(&self.path, e))?;
        let version = meta
            .get("format_version")
            .map_err(|e| self.redb(e))?
            .map(|v| v.value().to_owned())
            .unwrap_or_default();
        drop(meta);
        drop(read);
        match version.parse::<u32>() {
            Ok(v) if v == FORMAT_VERSION => Ok(self),
            Ok(v) if v < FORMAT_VERSION => Err(ExecutionError::Unreadable {
                path: self.path.clone(),
                reason: format!(
                    "written in execution format {v}, which was never released; this runtime reads format {FORMAT_VERSION}: delete the file"
                ),
            }),
            Ok(v) => Err(ExecutionError::Unreadable {
                path: self.path.clone(),
                reason: format!(
                    "written in format version {v}; this runtime reads version {FORMAT_VERSION}: use a newer runtime"
                ),
            }),
            Err(_) => Err(unreadable(&self.path, "no format version")),
        }
    }

    /// The execution's record.
    pub fn record(&self) -> Result<ExecutionRecord, ExecutionError> {
        let read = self.db.begin_read().map_err(|e| self.redb(e))?;
        let meta = read.open_table(META).map_err(|e| self.redb(e))?;
        let text = meta
            .get("record")
            .map_err(|e| self.redb(e))?
            .map(|v| v.value().to_owned())
            .ok_or_else(|| unreadable(&self.path, "no execution record"))?;
        serde_json::from_str(&text).map_err(|e| unreadable(&self.path, e))
    }

    /// Every event, in order.
    pub fn events(&self) -> Result<Vec<LogEvent>, ExecutionError> {
        Ok(self.events_from(0)?.into_iter().map(|(_, e)| e).collect())
    }

    /// The events numbered `from` onwards, with their numbers (the first
    /// event is 0; numbers have no gaps).
    pub fn events_from(&self, from: u64) -> Result<Vec<(u64, LogEvent)>, ExecutionError> {
        let read = self.db.begin_read().map_err(|e| self.redb(e))?;
        let log = read.open_table(LOG).map_err(|e| self.redb(e))?;
        let mut out = Vec::new();
        let events = log
            .range(&event_key(from)[..]..&[TASK][..])
            .map_err(|e| self.redb(e))?;
        for entry in events {
            let (k, v) = entry.map_err(|e| self.redb(e))?;
            let event = serde_json::from_str(v.value()).map_err(|e| unreadable(&self.path, e))?;
            out.push((sequence(k.value()), event));
        }
        Ok(out)
    }

    /// Wakes when this handle commits: a follower reads
    /// [`ExecutionLog::events_from`] its position again. Only the process
    /// that owns the execution commits, so only its followers wake.
    pub fn follow(&self) -> tokio::sync::watch::Receiver<u64> {
        self.commits.subscribe()
    }

    /// The final state of every task that reached one, outputs included.
    pub fn tasks(&self) -> Result<Vec<TaskReport>, ExecutionError> {
        let read = self.db.begin_read().map_err(|e| self.redb(e))?;
        let log = read.open_table(LOG).map_err(|e| self.redb(e))?;
        let blobs = read.open_table(BLOBS).map_err(|e| self.redb(e))?;
        let mut out = Vec::new();
        for entry in log.range(&[TASK][..]..).map_err(|e| self.redb(e))? {
            let (_, v) = entry.map_err(|e| self.redb(e))?;
            let stored: StoredTask =
                serde_json::from_str(v.value()).map_err(|e| unreadable(&self.path, e))?;
            let mut report = stored.report;
            if let Some(hash) = stored.output_blob {
                let text = blobs
                    .get(hash.as_str())
                    .map_err(|e| self.redb(e))?
                    .ok_or_else(|| {
                        unreadable(&self.path, format!("output blob {hash} is missing"))
                    })?;
                report.output = Some(
                    serde_json::from_slice(text.value()).map_err(|e| unreadable(&self.path, e))?,
                );
            }
            out.push(report);
        }
        Ok(out)
    }

    /// Notes an event (an attempt start, an emit); it is written with the
    /// next commit.
    pub fn note(&self, kind: EventKind) {
        let event = LogEvent { at: now_ms(), kind };
        self.notes.lock().expect("notes lock").push(event);
        self.noted.notify_one();
    }

    /// Notified (one permit) whenever an event is noted: whoever writes
    /// notes early ([`ExecutionLog::flush_notes`]) waits on it, without
    /// holding the log open meanwhile.
    pub fn on_note(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.noted)
    }

    fn take_notes(&self) -> Vec<LogEvent> {
        std::mem::take(&mut *self.notes.lock().expect("notes lock"))
    }

    /// Writes the noted events now, if there are any, in one durable
    /// commit: streamed text reaches followers while the task still runs.
    pub fn flush_notes(&self) -> Result<(), ExecutionError> {
        if self.notes.lock().expect("notes lock").is_empty() {
            return Ok(());
        }
        self.write(Durability::Immediate, |w| {
            let notes = self.take_notes();
            let mut log = LogWriter::open(w)?;
            notes.iter().try_for_each(|note| log.push_event(note))
        })
    }

    /// Writes final task states, their events and the notes since the last
    /// commit in one durable transaction.
    pub fn commit_tasks(&self, reports: &[TaskReport]) -> Result<(), ExecutionError> {
        self.write(Durability::Immediate, |w| {
            // Taken once the write transaction is ours, so notes reach the
            // log in the order they were noted.
            let notes = self.take_notes();
            let mut log = LogWriter::open(w)?;
            for note in &notes {
                log.push_event(note)?;
            }
            for report in reports {
                let mut stored = StoredTask {
                    report: report.clone(),
                    output_blob: None,
                };
                if let Some(output) = &report.output {
                    let text = output.to_string();
                    if text.len() > INLINE_OUTPUT_BYTES {
                        let hash: String = Sha256::digest(text.as_bytes())
                            .iter()
                            .map(|b| format!("{b:02x}"))
                            .collect();
                        let mut blobs = w.open_table(BLOBS)?;
                        if blobs.get(hash.as_str())?.is_none() {
                            blobs.insert(hash.as_str(), text.as_bytes())?;
                        }
                        stored.report.output = None;
                        stored.output_blob = Some(hash);
                    }
                }
                log.put_task(&report.id, &json(&stored))?;
                log.push(&EventKind::TaskFinished {
                    task: report.id.clone(),
                    status: report.status,
                    error: report.error.as_ref().map(|e| e.message.clone()),
                })?;
                if let Some(letter) = DeadLetter::of(report) {
                    w.open_table(DEAD_LETTERS)?
                        .insert(report.id.as_str(), json(&letter).as_str())?;
                    log.push(&EventKind::DeadLettered {
                        task: report.id.clone(),
                    })?;
                }
            }
            Ok(())
        })
    }

    /// Records a failed attempt and the retry that follows it, durably,
    /// with the notes since the last commit.
    pub fn schedule_retry(
        &self,
        failed: LogEvent,
        retry: &PendingRetry,
    ) -> Result<(), ExecutionError> {
        self.write(Durability::Immediate, |w| {
            // Taken once the write transaction is ours, so notes reach the
            // log in the order they were noted.
            let notes = self.take_notes();
            let mut log = LogWriter::open(w)?;
            for note in notes.iter().chain([&failed]) {
                log.push_event(note)?;
            }
            w.open_table(RETRIES)?
                .insert(retry.task.as_str(), json(retry).as_str())?;
            Ok(())
        })
    }

    /// Retries scheduled and not started, of tasks with no final state.
    pub fn retries(&self) -> Result<Vec<PendingRetry>, ExecutionError> {
        let read = self.db.begin_read().map_err(|e| self.redb(e))?;
        let table = read.open_table(RETRIES).map_err(|e| self.redb(e))?;
        let log = read.open_table(LOG).map_err(|e| self.redb(e))?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(|e| self.redb(e))? {
            let (task, retry) = entry.map_err(|e| self.redb(e))?;
            let finished = log
                .get(task_key(task.value()).as_slice())
                .map_err(|e| self.redb(e))?
                .is_some();
            if !finished {
                out.push(
                    serde_json::from_str(retry.value()).map_err(|e| unreadable(&self.path, e))?,
                );
            }
        }
        Ok(out)
    }

    /// Records a signal (durably) and wakes the waits for it.
    pub fn signal(&self, name: &str, payload: &Value) -> Result<(), ExecutionError> {
        self.write(Durability::Immediate, |w| {
            w.open_table(SIGNALS)?
                .insert(name, payload.to_string().as_str())?;
            append(
                w,
                &EventKind::SignalReceived {
                    signal: name.to_owned(),
                },
            )
        })?;
        self.signalled.notify_waiters();
        Ok(())
    }

    /// The payload of signal `name`, if it was recorded.
    pub fn signal_payload(&self, name: &str) -> Result<Option<Value>, ExecutionError> {
        let read = self.db.begin_read().map_err(|e| self.redb(e))?;
        let signals = match read.open_table(SIGNALS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(self.redb(e)),
        };
        let text = signals.get(name).map_err(|e| self.redb(e))?;
        text.map(|t| serde_json::from_str(t.value()).map_err(|e| unreadable(&self.path, e)))
            .transpose()
    }

    /// The deadline of task `task`'s wait: the recorded one, or (first time)
    /// now + `timeout`, recorded durably with a `wait_started` event.
    pub fn start_wait(
        &self,
        task: &str,
        signal: &str,
        timeout: Option<std::time::Duration>,
    ) -> Result<Option<u64>, ExecutionError> {
        {
            let read = self.db.begin_read().map_err(|e| self.redb(e))?;
            if let Ok(waits) = read.open_table(WAITS)
                && let Some(deadline) = waits.get(task).map_err(|e| self.redb(e))?
            {
                let deadline = deadline.value();
                return Ok((deadline != 0).then_some(deadline));
            }
        }
        let deadline = timeout
            .map(|t| now_ms().saturating_add(u64::try_from(t.as_millis()).unwrap_or(u64::MAX)));
        self.write(Durability::Immediate, |w| {
            w.open_table(WAITS)?.insert(task, deadline.unwrap_or(0))?;
            append(
                w,
                &EventKind::WaitStarted {
                    task: task.to_owned(),
                    signal: signal.to_owned(),
                    deadline,
                },
            )
        })?;
        Ok(deadline)
    }

    /// Records that this process took the execution up again.
    pub fn resumed(&self, finished_tasks: usize) -> Result<(), ExecutionError> {
        self.write(Durability::Immediate, |w| {
            append(w, &EventKind::ExecutionResumed { finished_tasks })
        })
    }

    /// Records how the execution ended.
    pub fn finish(
        &self,
        status: ExecutionStatus,
        error: Option<String>,
        outputs: serde_json::Map<String, Value>,
    ) -> Result<(), ExecutionError> {
        let mut record = self.record()?;
        record.status = status;
        record.finished_at = Some(now_ms());
        record.error.clone_from(&error);
        record.outputs = outputs;
        self.write(Durability::Immediate, |w| {
            // Taken once the write transaction is ours, so notes reach the
            // log in the order they were noted.
            let notes = self.take_notes();
            let mut events = LogWriter::open(w)?;
            for note in &notes {
                events.push_event(note)?;
            }
            events.push(&EventKind::ExecutionFinished { status, error })?;
            w.open_table(META)?
                .insert("record", json(&record).as_str())?;
            Ok(())
        })
    }
}

#[derive(Serialize, Deserialize)]
struct StoredTask {
    #[serde(flatten)]
    report: TaskReport,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    output_blob: Option<String>,
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use orchestrator_core::scheduler::Metering;
    use orchestrator_core::scheduler::TaskStatus;
    use orchestrator_core::workflow::Durability as WorkflowDurability;
    use redb::ReadableTableMetadata;

    #[test]
    fn large_outputs_are_stored_once_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let executions = Executions::beside(&dir.path().join("store.redb"));
        let record = ExecutionRecord {
            id: "e1".into(),
            tenant: "default".into(),
            workflow: "w".into(),
            file: String::new(),
            source: String::new(),
            inputs: Value::Null,
            durability: WorkflowDurability::Strict,
            tasks: vec!["a".into(), "b".into()],
            plugins: BTreeMap::new(),
            status: ExecutionStatus::Running,
            created_at: now_ms(),
            finished_at: None,
            error: None,
            outputs: serde_json::Map::new(),
            parent: None,
        };
        let log = executions.create(&record).unwrap();
        let big = serde_json::json!({ "text": "x".repeat(5000) });
        let report = |id: &str| TaskReport {
            id: id.into(),
            uses: "p".into(),
            status: TaskStatus::Succeeded,
            output: Some(big.clone()),
            error: None,
            usage: None,
            metering: Metering::default(),
            attempts: 1,
            fallback: false,
            degraded: false,
            tolerated: false,
            input: None,
        };
        log.commit_tasks(&[report("a")]).unwrap();
        log.commit_tasks(&[report("b")]).unwrap();
        let tasks = log.tasks().unwrap();
        assert_eq!(tasks.len(), 2);
        assert!(tasks.iter().all(|t| t.output.as_ref() == Some(&big)));
        let read = log.db.begin_read().unwrap();
        assert_eq!(read.open_table(BLOBS).unwrap().len().unwrap(), 1);
        let stored = read.open_table(LOG).unwrap();
        let a = stored.get(task_key("a").as_slice()).unwrap().unwrap();
        assert!(a.value().len() < 1000, "the state refers to the blob");
    }
}
