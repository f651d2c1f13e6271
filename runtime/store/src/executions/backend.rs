//! The storage boundary for executions: what a backend must do to keep
//! them, and nothing about how. [`super::ExecutionLog`] builds every change
//! of an execution as one [`Change`] and hands it to its backend, which
//! writes it in one transaction if the writer still holds the execution's
//! [`Lease`]. Backends: [`super::redb`] (files, the default) and
//! [`super::memory`]; [`crate::conformance`] is the suite each must pass.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use orchestrator_core::scheduler::{PendingRetry, TaskReport};

use super::listing::{ListQuery, Page};
use super::{DeadLetter, ExecutionError, ExecutionRecord, LogEvent};

/// Who may write an execution: one owner (an engine) at a time, checked on
/// every write. A new holder gets the next epoch, so a writer that lost
/// the lease is refused even if it carries the same owner name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The engine holding it ([`super::Executions::with_owner`]).
    pub owner: String,
    /// Bumped each time the lease is taken.
    pub epoch: u64,
    /// Until when it holds, ms since the epoch; 0 once released.
    pub expires_at: u64,
}

impl Lease {
    /// Whether it still keeps others out at `now` (ms since the epoch).
    pub fn live(&self, now: u64) -> bool {
        self.expires_at > now
    }

    /// The lease `owner` takes over `current` at `now` for `ttl_ms`, or
    /// `None` while `current` is live. `void_through`: leases up to this
    /// epoch belong to owners the backend knows are gone.
    pub(super) fn take(
        current: Option<&Lease>,
        owner: &str,
        now: u64,
        ttl_ms: u64,
        void_through: u64,
    ) -> Option<Lease> {
        if current.is_some_and(|l| l.live(now) && l.epoch > void_through) {
            return None;
        }
        Some(Lease {
            owner: owner.to_owned(),
            epoch: current.map_or(1, |l| l.epoch + 1),
            expires_at: now.saturating_add(ttl_ms),
        })
    }

    /// Whether `stored` is still this lease (same owner and epoch).
    pub(super) fn holds(&self, stored: Option<&Lease>) -> bool {
        stored.is_some_and(|s| s.owner == self.owner && s.epoch == self.epoch)
    }
}

/// The writes of one transaction on one execution, applied in this order:
/// the lease, the record, task states cleared, then set (with their
/// events appended in order), signals, waits, retries, dead letters,
/// overrides.
#[derive(Debug, Default)]
pub struct Change {
    /// Events to append, numbered on from the last one.
    pub events: Vec<LogEvent>,
    /// Final task states to set.
    pub tasks: Vec<TaskReport>,
    /// Task states to remove (a dead-letter replay).
    pub cleared: Vec<String>,
    /// Signals to record, by name.
    pub signals: Vec<(String, Value)>,
    /// Wait deadlines to record, by task (0: none).
    pub waits: Vec<(String, u64)>,
    /// Retries to record.
    pub retries: Vec<PendingRetry>,
    /// Retries to forget, by task.
    pub retries_removed: Vec<String>,
    /// Dead letters to set, by their task.
    pub dead_letters: Vec<DeadLetter>,
    /// Inputs replays give tasks, by task (JSON text).
    pub overrides: Vec<(String, String)>,
    /// The record's new value.
    pub record: Option<ExecutionRecord>,
    /// The lease's new value (renewed or released), same owner and epoch.
    pub lease: Option<Lease>,
}

/// One execution in a backend, opened to read or (with a lease) to write.
pub trait LogBackend: Send + Sync {
    /// Where it is, for messages: a file, or `memory:<id>`.
    fn location(&self) -> String;
    /// The record.
    fn record(&self) -> Result<ExecutionRecord, ExecutionError>;
    /// The events numbered `from` onwards, with their numbers (from 0,
    /// without gaps).
    fn events_from(&self, from: u64) -> Result<Vec<(u64, LogEvent)>, ExecutionError>;
    /// Every final task state, outputs included, in task id order.
    fn tasks(&self) -> Result<Vec<TaskReport>, ExecutionError>;
    /// Retries recorded for tasks that have no final state.
    fn retries(&self) -> Result<Vec<PendingRetry>, ExecutionError>;
    /// The payload of signal `name`, if recorded.
    fn signal(&self, name: &str) -> Result<Option<Value>, ExecutionError>;
    /// The recorded deadline of task `task`'s wait (0: none), if recorded.
    fn wait(&self, task: &str) -> Result<Option<u64>, ExecutionError>;
    /// Every dead letter, open or not, in task id order.
    fn dead_letters(&self) -> Result<Vec<DeadLetter>, ExecutionError>;
    /// Inputs replays gave tasks, by task.
    fn overrides(&self) -> Result<HashMap<String, String>, ExecutionError>;
    /// The lease as stored, and whether the backend knows its holder is
    /// gone (then it does not keep anyone out, expired or not).
    fn lease(&self) -> Result<(Option<Lease>, bool), ExecutionError>;
    /// Takes the lease for `owner` for `ttl_ms`; [`ExecutionError::Busy`]
    /// while another holder's lease is live.
    fn acquire(&self, owner: &str, ttl_ms: u64) -> Result<Lease, ExecutionError>;
    /// Applies `change` in one transaction, durably, if `holder` still
    /// holds the lease; [`ExecutionError::LeaseLost`] otherwise, and
    /// nothing is written.
    fn apply(&self, holder: &Lease, change: &Change) -> Result<(), ExecutionError>;
}

/// Where one tenant's executions are kept: creating, finding and removing
/// them. Opening one for writing takes its lease.
pub trait ExecutionsBackend: Send + Sync + std::fmt::Debug {
    /// Where they are, for messages.
    fn location(&self) -> String;
    /// Records a new execution: its record, its first event and the lease
    /// for `owner`, in one transaction. Refused if the id is taken.
    fn create(
        &self,
        record: &ExecutionRecord,
        first: &LogEvent,
        owner: &str,
        ttl_ms: u64,
    ) -> Result<(Box<dyn LogBackend>, Lease), ExecutionError>;
    /// Opens execution `id`, to write it (then the caller takes the lease)
    /// or only to read; [`ExecutionError::Unknown`] if there is none,
    /// [`ExecutionError::Busy`] if this backend cannot reach it while
    /// another process owns it.
    fn open(&self, id: &str, write: bool) -> Result<Box<dyn LogBackend>, ExecutionError>;
    /// Whether execution `id` exists.
    fn exists(&self, id: &str) -> bool;
    /// Every id, in order.
    fn ids(&self) -> Vec<String>;
    /// About how many bytes these executions take where they are kept.
    fn stored_bytes(&self) -> u64;
    /// A page of the listing `query` asks for, from an index (newest
    /// first; a `running` execution whose owner died is listed `running`).
    fn list(&self, query: &ListQuery) -> Result<Page, ExecutionError>;
    /// How many dead letters are open, counted by the index (not by
    /// reading every execution); a sub-workflow's run's count none.
    fn open_dead_letters(&self) -> Result<u64, ExecutionError>;
    /// Removes execution `id` (one no process holds).
    fn remove(&self, id: &str) -> Result<(), ExecutionError>;
    /// Where the owner of a live execution listens for requests from other
    /// processes, if this backend has such a place.
    fn socket(&self, id: &str) -> Option<std::path::PathBuf>;
}
