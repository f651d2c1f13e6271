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
//! | `retries` | task id | a scheduled retry ([`crate::scheduler::PendingRetry`]) |
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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use redb::{
    Database, DatabaseError, Durability, ReadOnlyDatabase, ReadableDatabase, ReadableTable,
    TableDefinition,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::scheduler::{FailureKind, PendingRetry, TaskReport, TaskStatus};
use crate::workflow::Durability as WorkflowDurability;

mod dead_letters;
mod journal;

pub use dead_letters::{DeadLetter, DeadLetterState};
pub use journal::ExecutionJournal;

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

/// Where an execution stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionStatus {
    /// Started and not finished (or its process died: see [`Executions::list`]).
    Running,
    /// Finished, every task succeeded or was skipped.
    Succeeded,
    /// Finished with a failure.
    Failed,
    /// Stopped by `runtime cancel`.
    Cancelled,
}

impl ExecutionStatus {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// What an execution is: enough to resume it without the original file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecutionRecord {
    /// The id.
    pub id: String,
    /// The tenant it belongs to.
    pub tenant: String,
    /// The workflow's name.
    pub workflow: String,
    /// The workflow file it was started from (relative `.wasm` paths resolve against its directory).
    pub file: String,
    /// The workflow text, exactly as it was when the execution started.
    pub source: String,
    /// The resolved inputs.
    pub inputs: Value,
    /// Its durability setting.
    pub durability: WorkflowDurability,
    /// Every task id, in file order.
    #[serde(default)]
    pub tasks: Vec<String>,
    /// The plugin digest each task resolved to at the start (waits have none).
    pub plugins: BTreeMap<String, String>,
    /// Where it stands.
    pub status: ExecutionStatus,
    /// Milliseconds since the Unix epoch.
    pub created_at: u64,
    /// When it finished, if it did.
    pub finished_at: Option<u64>,
    /// The first failure, in words.
    pub error: Option<String>,
    /// The workflow's outputs, once it succeeded.
    pub outputs: serde_json::Map<String, Value>,
}

/// One entry of the event log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogEvent {
    /// Milliseconds since the Unix epoch.
    pub at: u64,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What can happen to an execution.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventKind {
    /// The execution was created.
    ExecutionStarted {
        /// The workflow's name.
        workflow: String,
    },
    /// A process took the execution up again after its previous one stopped.
    ExecutionResumed {
        /// Tasks whose recorded states were kept.
        finished_tasks: usize,
    },
    /// A task attempt started.
    AttemptStarted {
        /// The task.
        task: String,
        /// The attempt number.
        attempt: u32,
        /// It runs the task's fallback.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        fallback: bool,
    },
    /// A task attempt failed.
    AttemptFailed {
        /// The task.
        task: String,
        /// The attempt number.
        attempt: u32,
        /// The kind of failure.
        kind: FailureKind,
        /// What happened.
        error: String,
        /// When the next attempt starts, ms since the epoch, if it is retried.
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_at: Option<u64>,
    },
    /// A task reached its final state.
    TaskFinished {
        /// The task.
        task: String,
        /// Its state.
        status: TaskStatus,
        /// Why it failed or did not run.
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// `runtime cancel` reached the process running the execution.
    CancelRequested,
    /// A task began waiting for a signal.
    WaitStarted {
        /// The task.
        task: String,
        /// The signal it waits for.
        signal: String,
        /// When it gives up, ms since the epoch.
        #[serde(skip_serializing_if = "Option::is_none")]
        deadline: Option<u64>,
    },
    /// A failed task was put in the dead-letter queue.
    DeadLettered {
        /// The task.
        task: String,
    },
    /// `runtime dlq replay` took a dead letter up again.
    DeadLetterReplayed {
        /// The task.
        task: String,
        /// The replay ran with an input given on the command line.
        input_replaced: bool,
    },
    /// `runtime dlq purge` removed a dead letter from the queue.
    DeadLetterPurged {
        /// The task.
        task: String,
    },
    /// `runtime signal` delivered a signal.
    SignalReceived {
        /// Its name.
        signal: String,
    },
    /// The execution ended.
    ExecutionFinished {
        /// How.
        status: ExecutionStatus,
        /// Why, if it failed.
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}

/// The executions directory of a store.
#[derive(Debug, Clone)]
pub struct Executions {
    dir: PathBuf,
}

impl Executions {
    /// The executions kept beside the store file `store`.
    pub fn beside(store: &Path) -> Self {
        let parent = store.parent().unwrap_or(Path::new("."));
        Self {
            dir: parent.join("executions"),
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of execution `id`.
    pub fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.redb"))
    }

    /// The control socket of a live execution `id`.
    pub fn socket(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.sock"))
    }

    /// Creates the file of a new execution and records its start.
    pub fn create(&self, record: &ExecutionRecord) -> Result<ExecutionLog, ExecutionError> {
        let path = self.path(&record.id);
        std::fs::create_dir_all(&self.dir).map_err(|e| ExecutionError::Unreadable {
            path: self.dir.clone(),
            reason: format!("cannot create the directory: {e}"),
        })?;
        if path.exists() {
            return Err(ExecutionError::Unreadable {
                path,
                reason: "an execution with this id exists already".into(),
            });
        }
        let db = Database::create(&path).map_err(|e| unreadable(&path, e))?;
        ExecutionLog::init(Db::Write(db), path, record)
    }

    /// Like [`Executions::create`], on a storage backend of the caller's
    /// (tests inject faults this way). The file named by the record's id is
    /// only used in messages.
    pub fn create_with_backend(
        &self,
        record: &ExecutionRecord,
        backend: impl redb::StorageBackend,
    ) -> Result<ExecutionLog, ExecutionError> {
        let path = self.path(&record.id);
        let db = redb::Builder::new()
            .create_with_backend(backend)
            .map_err(|e| unreadable(&path, e))?;
        ExecutionLog::init(Db::Write(db), path, record)
    }

    /// Opens execution `id` to read it, without writing to the file.
    /// Fails with [`ExecutionError::Busy`] while another process runs it.
    pub fn read(&self, id: &str) -> Result<ExecutionLog, ExecutionError> {
        let path = self.existing(id)?;
        match ReadOnlyDatabase::open(&path) {
            Ok(db) => ExecutionLog::new(Db::Read(db), path).check_format(),
            Err(DatabaseError::DatabaseAlreadyOpen) => Err(ExecutionError::Busy(id.to_owned())),
            // A file left unclean by a killed process needs the repair only
            // a writable open does; `open` checks the format before that.
            Err(_) => self.open(id),
        }
    }

    /// Opens execution `id` for this process (to resume or cancel it). The
    /// file is checked read-only first, so a file this runtime cannot read
    /// is never written to. Fails with [`ExecutionError::Busy`] while
    /// another process runs it.
    pub fn open(&self, id: &str) -> Result<ExecutionLog, ExecutionError> {
        let path = self.existing(id)?;
        match ReadOnlyDatabase::open(&path) {
            Ok(db) => drop(ExecutionLog::new(Db::Read(db), path.clone()).check_format()?),
            Err(DatabaseError::DatabaseAlreadyOpen) => {
                return Err(ExecutionError::Busy(id.to_owned()));
            }
            Err(e) if !redb_file(&path) => return Err(unreadable(&path, e)),
            // A redb file that needs repair: repaired below, then checked.
            Err(_) => {}
        }
        let db = match Database::open(&path) {
            Ok(db) => db,
            Err(DatabaseError::DatabaseAlreadyOpen) => {
                return Err(ExecutionError::Busy(id.to_owned()));
            }
            Err(e) => return Err(unreadable(&path, e)),
        };
        ExecutionLog::new(Db::Write(db), path).check_format()
    }

    fn existing(&self, id: &str) -> Result<PathBuf, ExecutionError> {
        let path = self.path(id);
        if valid_id(id) && path.is_file() {
            Ok(path)
        } else {
            Err(ExecutionError::Unknown {
                id: id.to_owned(),
                dir: self.dir.clone(),
            })
        }
    }

    /// Ids of every execution, oldest first.
    pub fn ids(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut ids: Vec<String> = entries
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                name.strip_suffix(".redb").map(str::to_owned)
            })
            .collect();
        ids.sort();
        ids
    }
}

/// Whether the file starts with redb's magic number.
fn redb_file(path: &Path) -> bool {
    let mut magic = [0u8; 9];
    std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .is_ok_and(|()| magic == *b"redb\x1a\x0a\xa9\x0d\x0a")
}

/// Execution ids are generated here; anything else is not looked up.
fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
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
    /// Attempt starts noted since the last commit; written with the next one.
    notes: Mutex<Vec<LogEvent>>,
    /// Wakes waits when a signal is recorded.
    signalled: tokio::sync::Notify,
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
        w.commit().map_err(|e| self.redb(e))
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
        let read = self.db.begin_read().map_err(|e| self.redb(e))?;
        let log = read.open_table(LOG).map_err(|e| self.redb(e))?;
        let mut out = Vec::new();
        let events = log
            .range(&event_key(0)[..]..&[TASK][..])
            .map_err(|e| self.redb(e))?;
        for entry in events {
            let (_, v) = entry.map_err(|e| self.redb(e))?;
            out.push(serde_json::from_str(v.value()).map_err(|e| unreadable(&self.path, e))?);
        }
        Ok(out)
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

    /// Notes an attempt start; it is written with the next commit.
    pub fn note(&self, kind: EventKind) {
        let event = LogEvent { at: now_ms(), kind };
        self.notes.lock().expect("notes lock").push(event);
    }

    /// Writes final task states, their events and the notes since the last
    /// commit in one durable transaction.
    pub fn commit_tasks(&self, reports: &[TaskReport]) -> Result<(), ExecutionError> {
        let notes = std::mem::take(&mut *self.notes.lock().expect("notes lock"));
        self.write(Durability::Immediate, |w| {
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
        let notes = std::mem::take(&mut *self.notes.lock().expect("notes lock"));
        self.write(Durability::Immediate, |w| {
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
        let notes = std::mem::take(&mut *self.notes.lock().expect("notes lock"));
        self.write(Durability::Immediate, |w| {
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
    use super::*;
    use crate::scheduler::Metering;
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
