//! Executions: each one's record, its append-only event log, the final
//! state of every task, signals, waits, retries and dead letters, kept by a
//! storage backend behind [`backend::ExecutionsBackend`].
//!
//! [`Executions`] (here) is one tenant's executions in one backend; it
//! creates and opens [`ExecutionLog`]s (`log.rs`). A log opened to write holds the execution's
//! [`Lease`] (owner, epoch, expiry): every change is one transaction that
//! the backend refuses if the lease moved on, so a stale owner can never
//! write over its successor. Backends: [`redb`] (one file per execution,
//! the default) and [`memory`]; both pass [`crate::conformance`].
//!
//! Invariants: a task's final state and its `task_finished` event are written
//! in the same transaction; events are never rewritten or deleted; the
//! record's status changes only with an event saying so.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::Serialize;

use orchestrator_core::scheduler::Consumption;
use orchestrator_core::tenant::TenantId;

pub mod backend;
mod dead_letters;
mod journal;
pub mod listing;
mod log;
pub mod memory;
mod record;
pub mod redb;

pub use backend::{Change, Lease};
pub use dead_letters::{DeadLetter, DeadLetterState};
pub use journal::ExecutionJournal;
pub use log::ExecutionLog;
pub use record::{EventKind, ExecutionRecord, ExecutionStatus, LogEvent, ParentTask, TaskEnd};

use backend::ExecutionsBackend;

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

    /// How many dead letters are open in these executions, as the listing
    /// index counts them (a sub-workflow's run counts none: its failure is
    /// its parent task's letter).
    pub fn open_dead_letters(&self) -> Result<u64, ExecutionError> {
        self.backend.open_dead_letters()
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
