//! Executions: each one's record, its append-only event log, the final
//! state of every task, signals, waits, retries and dead letters, kept by a
//! storage backend behind [`backend::ExecutionsBackend`].
//!
//! [`Executions`] is one tenant's executions in one backend; it creates and
//! opens [`ExecutionLog`]s. A log opened to write holds the execution's
//! [`Lease`] (owner, epoch, expiry): every change is one transaction that
//! the backend refuses if the lease moved on, so a stale owner can never
//! write over its successor. Backends: [`redb`] (one file per execution,
//! the default) and [`memory`]; both pass [`crate::conformance`].
//!
//! Invariants: a task's final state and its `task_finished` event are written
//! in the same transaction; events are never rewritten or deleted; the
//! record's status changes only with an event saying so.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

use orchestrator_core::scheduler::{Consumption, PendingRetry, TaskReport};
use orchestrator_core::tenant::TenantId;

pub mod backend;
mod dead_letters;
mod journal;
pub mod listing;
pub mod memory;
mod record;
pub mod redb;
mod redb_index;

pub use backend::{Change, Lease};
pub use dead_letters::{DeadLetter, DeadLetterState};
pub use journal::ExecutionJournal;
pub use record::{EventKind, ExecutionRecord, ExecutionStatus, LogEvent, ParentTask};

use backend::{ExecutionsBackend, LogBackend};

/// The format of execution files this runtime writes and reads. Format 1
/// (separate `events` and `tasks` tables) was never released.
pub const FORMAT_VERSION: u32 = 2;

/// How long a lease holds unless renewed ([`ExecutionLog::renew`]).
pub const LEASE_TTL: Duration = Duration::from_secs(30);

/// Why an execution could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ExecutionError {
    /// No execution has this id.
    #[error("no execution `{id}` in {location}; `runtime list` shows the executions")]
    Unknown {
        /// The id asked for.
        id: String,
        /// Where executions live.
        location: String,
    },
    /// The id is taken.
    #[error("an execution `{0}` exists already; choose another id")]
    Exists(String),
    /// Another owner holds it: a run in another process, or another
    /// engine or handle in this one.
    #[error("execution `{0}` is held by a run (in this or another process); wait for it or ask it")]
    Busy(String),
    /// This handle no longer holds the lease: another owner took the
    /// execution over, and nothing was written.
    #[error(
        "{location}: this process no longer owns the execution (now held by {}); nothing was written",
        holder.as_deref().unwrap_or("no one")
    )]
    LeaseLost {
        /// The execution.
        location: String,
        /// Who holds it now.
        holder: Option<String>,
    },
    /// Opened to read; writes need [`Executions::open`].
    #[error("{0}: opened read-only; open it with `Executions::open` to write")]
    ReadOnly(String),
    /// The stored execution is not one this runtime can read.
    #[error("{location}: {reason}")]
    Unreadable {
        /// Where it is.
        location: String,
        /// What is wrong and what to do.
        reason: String,
    },
    /// A read or write failed.
    #[error("{location}: {reason}")]
    Backend {
        /// Where.
        location: String,
        /// The backend's words.
        reason: String,
    },
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

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Whether `id` may name an execution: 1 to 200 ASCII letters, digits,
/// `-` and `_` (it becomes a file name).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 200
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// The owner name of this process: unique per process start.
fn process_owner() -> &'static str {
    static OWNER: OnceLock<String> = OnceLock::new();
    OWNER.get_or_init(|| format!("pid{}-{:x}", std::process::id(), now_ms()))
}

/// Where every tenant's executions are kept.
#[derive(Debug, Clone)]
pub enum ExecutionsAt {
    /// Files beside this store file ([`redb::RedbExecutions`]).
    Beside(PathBuf),
    /// Memory ([`memory::MemoryExecutions`]).
    Memory(memory::MemoryExecutions),
}

impl ExecutionsAt {
    /// `tenant`'s executions there.
    pub fn tenant(&self, tenant: &TenantId) -> Executions {
        match self {
            Self::Beside(store) => Executions::for_tenant(store, tenant),
            Self::Memory(memory) => Executions::in_memory(memory, tenant),
        }
    }
}

/// One tenant's executions in one backend.
#[derive(Debug, Clone)]
pub struct Executions {
    backend: Arc<dyn ExecutionsBackend>,
    owner: Arc<str>,
    lease_ttl: Duration,
}

impl Executions {
    /// The executions of `backend`, owned by this process.
    pub fn new(backend: Arc<dyn ExecutionsBackend>) -> Self {
        Self {
            backend,
            owner: Arc::from(process_owner()),
            lease_ttl: LEASE_TTL,
        }
    }

    /// The default tenant's execution files beside the store file `store`.
    pub fn beside(store: &std::path::Path) -> Self {
        Self::for_tenant(store, &TenantId::default())
    }

    /// `tenant`'s execution files beside the store file `store`
    /// ([`redb::RedbExecutions::for_tenant`]).
    pub fn for_tenant(store: &std::path::Path, tenant: &TenantId) -> Self {
        Self::new(Arc::new(redb::RedbExecutions::for_tenant(store, tenant)))
    }

    /// `tenant`'s executions in `memory`.
    pub fn in_memory(memory: &memory::MemoryExecutions, tenant: &TenantId) -> Self {
        Self::new(Arc::new(memory.tenant(tenant)))
    }

    /// The same executions, written as `owner` (an engine's name; by
    /// default one per process).
    #[must_use]
    pub fn with_owner(mut self, owner: &str) -> Self {
        self.owner = Arc::from(owner);
        self
    }

    /// The same executions, with leases that hold `ttl` unless renewed.
    #[must_use]
    pub fn with_lease_ttl(mut self, ttl: Duration) -> Self {
        self.lease_ttl = ttl;
        self
    }

    /// Who writes through these handles.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// Where they are, for messages.
    pub fn location(&self) -> String {
        self.backend.location()
    }

    /// Records a new execution and its start; the returned log holds its
    /// lease.
    pub fn create(&self, record: &ExecutionRecord) -> Result<ExecutionLog, ExecutionError> {
        if !valid_id(&record.id) {
            return Err(ExecutionError::Unreadable {
                location: self.location(),
                reason: format!(
                    "`{}` is not an execution id: 1 to 200 letters, digits, `-` and `_`",
                    record.id
                ),
            });
        }
        let first = LogEvent {
            at: now_ms(),
            kind: EventKind::ExecutionStarted {
                workflow: record.workflow.clone(),
            },
        };
        let ttl = millis(self.lease_ttl);
        let (backend, lease) = self.backend.create(record, &first, &self.owner, ttl)?;
        Ok(ExecutionLog::new(backend, Some(lease), ttl))
    }

    /// Opens execution `id` to read it. [`ExecutionError::Busy`] while an
    /// owner holds it: ask that owner ([`Executions::socket`]).
    pub fn read(&self, id: &str) -> Result<ExecutionLog, ExecutionError> {
        let backend = self.backend.open(id, false)?;
        let (lease, gone) = backend.lease()?;
        if !gone && lease.is_some_and(|l| l.live(now_ms())) {
            return Err(ExecutionError::Busy(id.to_owned()));
        }
        Ok(ExecutionLog::new(backend, None, millis(self.lease_ttl)))
    }

    /// Opens execution `id` to write it (to resume or cancel it), taking
    /// its lease: [`ExecutionError::Busy`] while another owner holds a
    /// live one. A stored execution this runtime cannot read is refused
    /// before anything is written.
    pub fn open(&self, id: &str) -> Result<ExecutionLog, ExecutionError> {
        let backend = self.backend.open(id, true)?;
        let ttl = millis(self.lease_ttl);
        let lease = backend.acquire(&self.owner, ttl)?;
        Ok(ExecutionLog::new(backend, Some(lease), ttl))
    }

    /// Whether execution `id` exists.
    pub fn exists(&self, id: &str) -> bool {
        valid_id(id) && self.backend.exists(id)
    }

    /// Ids of every execution, in order.
    pub fn ids(&self) -> Vec<String> {
        self.backend.ids()
    }

    /// A page of executions, newest first ([`listing::ListQuery`]).
    pub fn list(&self, query: &listing::ListQuery) -> Result<listing::Page, ExecutionError> {
        self.backend.list(query)
    }

    /// What the executions started at or after `since` (ms since the
    /// epoch) consumed, as far as their records say: finished ones, each
    /// once (sub-workflow runs are counted in their parents' tasks).
    pub fn consumed_since(&self, since: u64) -> Result<Consumption, ExecutionError> {
        let mut total = Consumption::default();
        let mut query = listing::ListQuery {
            since: Some(since),
            limit: listing::MAX_PAGE,
            ..listing::ListQuery::default()
        };
        loop {
            let page = self.list(&query)?;
            for summary in &page.items {
                if let Some(consumed) = summary.consumed {
                    total.add(consumed);
                }
            }
            match page.next {
                Some(next) => query.after = Some(next),
                None => return Ok(total),
            }
        }
    }

    /// About how many bytes these executions take where they are kept.
    pub fn stored_bytes(&self) -> u64 {
        self.backend.stored_bytes()
    }

    /// Removes execution `id`; [`ExecutionError::Busy`] while it is held.
    pub fn remove(&self, id: &str) -> Result<(), ExecutionError> {
        drop(self.read(id)?);
        self.backend.remove(id)
    }

    /// Where the owner of live execution `id` answers other processes
    /// (`status`, `cancel`, `signal`, `follow`), if the backend has such a
    /// place: the files do, `<id>.sock` beside `<id>.redb`.
    pub fn socket(&self, id: &str) -> Option<PathBuf> {
        self.backend.socket(id)
    }
}

/// One open execution: reads, and (holding its lease) writes.
pub struct ExecutionLog {
    backend: Box<dyn LogBackend>,
    /// The lease writes are made under; `None`: opened to read.
    lease: Mutex<Option<Lease>>,
    ttl_ms: u64,
    /// One writer at a time: notes are taken and written in order.
    writing: Mutex<()>,
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
            .field("location", &self.backend.location())
            .finish()
    }
}

impl Drop for ExecutionLog {
    /// A handle that goes away gives its lease up, so that another owner
    /// need not wait for it to run out. Best effort: an owner that dies
    /// without this is outlived by its lease's expiry.
    fn drop(&mut self) {
        let lease = self.lease.get_mut().ok().and_then(Option::take);
        if let Some(lease) = lease.filter(|l| l.expires_at != 0) {
            let released = Lease {
                expires_at: 0,
                ..lease.clone()
            };
            let change = Change {
                lease: Some(released),
                ..Change::default()
            };
            let _ = self.backend.apply(&lease, &change);
        }
    }
}

impl ExecutionLog {
    /// A log over `backend`, writing under `lease` (none: read-only).
    pub fn new(backend: Box<dyn LogBackend>, lease: Option<Lease>, ttl_ms: u64) -> Self {
        Self {
            backend,
            lease: Mutex::new(lease),
            ttl_ms,
            writing: Mutex::new(()),
            notes: Mutex::new(Vec::new()),
            signalled: tokio::sync::Notify::new(),
            noted: Arc::default(),
            commits: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Where it is kept, for messages.
    pub fn location(&self) -> String {
        self.backend.location()
    }

    /// The lease this handle writes under, if it was opened to write.
    pub fn lease(&self) -> Option<Lease> {
        self.lease.lock().expect("lease lock").clone()
    }

    /// Applies `change` (built by `build`, given the notes taken for it)
    /// under this handle's lease, and wakes followers.
    fn write(&self, build: impl FnOnce(Vec<LogEvent>) -> Change) -> Result<(), ExecutionError> {
        let _writing = self.writing.lock().expect("writing lock");
        let lease = self
            .lease()
            .ok_or_else(|| ExecutionError::ReadOnly(self.location()))?;
        let notes = std::mem::take(&mut *self.notes.lock().expect("notes lock"));
        let mut change = build(notes.clone());
        // A renewal that comes after the finish gave the lease up does not
        // take it again.
        if lease.expires_at == 0 && change.lease.as_ref().is_some_and(|l| l.expires_at != 0) {
            change.lease = None;
        }
        if let Err(e) = self.backend.apply(&lease, &change) {
            // Kept for the next commit, in front of what was noted since.
            let mut pending = self.notes.lock().expect("notes lock");
            let later = std::mem::replace(&mut *pending, notes);
            pending.extend(later);
            return Err(e);
        }
        if let Some(new) = change.lease {
            *self.lease.lock().expect("lease lock") = Some(new);
        }
        self.commits.send_modify(|n| *n += 1);
        Ok(())
    }

    /// How often its owner renews the lease: a third of its time to live,
    /// so two renewals may fail before it runs out.
    pub fn renew_interval(&self) -> Duration {
        Duration::from_millis(self.ttl_ms / 3)
    }

    /// Extends the lease by its time to live from now; [`ExecutionError::LeaseLost`]
    /// if another owner took it meanwhile.
    pub fn renew(&self) -> Result<(), ExecutionError> {
        let Some(lease) = self.lease() else {
            return Err(ExecutionError::ReadOnly(self.location()));
        };
        let renewed = Lease {
            expires_at: now_ms().saturating_add(self.ttl_ms),
            ..lease
        };
        self.write(|notes| Change {
            events: notes,
            lease: Some(renewed),
            ..Change::default()
        })
    }

    /// Writes the record and the first event of a new execution.
    /// The execution's record.
    pub fn record(&self) -> Result<ExecutionRecord, ExecutionError> {
        self.backend.record()
    }

    /// Every event, in order.
    pub fn events(&self) -> Result<Vec<LogEvent>, ExecutionError> {
        Ok(self.events_from(0)?.into_iter().map(|(_, e)| e).collect())
    }

    /// The events numbered `from` onwards, with their numbers (the first
    /// event is 0; numbers have no gaps).
    pub fn events_from(&self, from: u64) -> Result<Vec<(u64, LogEvent)>, ExecutionError> {
        self.backend.events_from(from)
    }

    /// Wakes when this handle commits: a follower reads
    /// [`ExecutionLog::events_from`] its position again. Only the owner
    /// commits, so only its followers wake.
    pub fn follow(&self) -> tokio::sync::watch::Receiver<u64> {
        self.commits.subscribe()
    }

    /// The final state of every task that reached one, outputs included.
    pub fn tasks(&self) -> Result<Vec<TaskReport>, ExecutionError> {
        self.backend.tasks()
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

    /// Writes the noted events now, if there are any, in one durable
    /// commit: streamed text reaches followers while the task still runs.
    pub fn flush_notes(&self) -> Result<(), ExecutionError> {
        if self.notes.lock().expect("notes lock").is_empty() {
            return Ok(());
        }
        self.write(|notes| Change {
            events: notes,
            ..Change::default()
        })
    }

    /// Writes final task states, their events (and dead letters) and the
    /// notes since the last commit in one durable transaction.
    pub fn commit_tasks(&self, reports: &[TaskReport]) -> Result<(), ExecutionError> {
        self.write(|mut events| {
            let mut dead_letters = Vec::new();
            for report in reports {
                events.push(LogEvent {
                    at: now_ms(),
                    kind: EventKind::TaskFinished {
                        task: report.id.clone(),
                        status: report.status,
                        error: report.error.as_ref().map(|e| e.message.clone()),
                    },
                });
                if let Some(letter) = DeadLetter::of(report) {
                    events.push(LogEvent {
                        at: now_ms(),
                        kind: EventKind::DeadLettered {
                            task: report.id.clone(),
                        },
                    });
                    dead_letters.push(letter);
                }
            }
            Change {
                events,
                tasks: reports.to_vec(),
                dead_letters,
                ..Change::default()
            }
        })
    }

    /// Records a failed attempt and the retry that follows it, durably,
    /// with the notes since the last commit.
    pub fn schedule_retry(
        &self,
        failed: LogEvent,
        retry: &PendingRetry,
    ) -> Result<(), ExecutionError> {
        self.write(|mut events| {
            events.push(failed);
            Change {
                events,
                retries: vec![retry.clone()],
                ..Change::default()
            }
        })
    }

    /// Retries scheduled and not started, of tasks with no final state.
    pub fn retries(&self) -> Result<Vec<PendingRetry>, ExecutionError> {
        self.backend.retries()
    }

    /// Records a signal (durably) and wakes the waits for it.
    pub fn signal(&self, name: &str, payload: &Value) -> Result<(), ExecutionError> {
        self.write(|mut events| {
            events.push(LogEvent {
                at: now_ms(),
                kind: EventKind::SignalReceived {
                    signal: name.to_owned(),
                },
            });
            Change {
                events,
                signals: vec![(name.to_owned(), payload.clone())],
                ..Change::default()
            }
        })?;
        self.signalled.notify_waiters();
        Ok(())
    }

    /// The payload of signal `name`, if it was recorded.
    pub fn signal_payload(&self, name: &str) -> Result<Option<Value>, ExecutionError> {
        self.backend.signal(name)
    }

    /// The deadline of task `task`'s wait: the recorded one, or (first time)
    /// now + `timeout`, recorded durably with a `wait_started` event.
    pub fn start_wait(
        &self,
        task: &str,
        signal: &str,
        timeout: Option<Duration>,
    ) -> Result<Option<u64>, ExecutionError> {
        if let Some(deadline) = self.backend.wait(task)? {
            return Ok((deadline != 0).then_some(deadline));
        }
        let deadline = timeout.map(|t| now_ms().saturating_add(millis(t)));
        self.write(|mut events| {
            events.push(LogEvent {
                at: now_ms(),
                kind: EventKind::WaitStarted {
                    task: task.to_owned(),
                    signal: signal.to_owned(),
                    deadline,
                },
            });
            Change {
                events,
                waits: vec![(task.to_owned(), deadline.unwrap_or(0))],
                ..Change::default()
            }
        })?;
        Ok(deadline)
    }

    /// Records that this process took the execution up again.
    pub fn resumed(&self, finished_tasks: usize) -> Result<(), ExecutionError> {
        self.write(|mut events| {
            events.push(LogEvent {
                at: now_ms(),
                kind: EventKind::ExecutionResumed { finished_tasks },
            });
            Change {
                events,
                ..Change::default()
            }
        })
    }

    /// Records how the execution ended and gives the lease up.
    pub fn finish(
        &self,
        status: ExecutionStatus,
        error: Option<String>,
        outputs: serde_json::Map<String, Value>,
    ) -> Result<(), ExecutionError> {
        let mut record = self.record()?;
        record.consumed = Some(Consumption::of(&self.tasks()?));
        record.status = status;
        record.finished_at = Some(now_ms());
        record.error.clone_from(&error);
        record.outputs = outputs;
        let released = self.lease().map(|l| Lease { expires_at: 0, ..l });
        self.write(|mut events| {
            events.push(LogEvent {
                at: now_ms(),
                kind: EventKind::ExecutionFinished { status, error },
            });
            Change {
                events,
                record: Some(record),
                lease: released,
                ..Change::default()
            }
        })
    }
}
