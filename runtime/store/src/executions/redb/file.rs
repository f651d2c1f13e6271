//! One execution file: its tables, how a change is written to them in one
//! transaction, how it is read, and the files this process has open (every
//! handle on one execution in this process shares its open database).
//! The tables are listed in [`super`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use redb::{
    Database, Durability, ReadOnlyDatabase, ReadableDatabase, ReadableTable, TableDefinition,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use orchestrator_core::scheduler::{PendingRetry, TaskReport};

use super::RedbExecutions;
use crate::executions::backend::{Change, Lease, LogBackend};
use crate::executions::listing::Summary;
use crate::executions::{
    DeadLetter, ExecutionError, ExecutionRecord, FORMAT_VERSION, LogEvent, json, now_ms,
};

pub(super) const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
/// Events and task states; keys by [`event_key`] and [`task_key`].
pub(super) const LOG: TableDefinition<&[u8], &str> = TableDefinition::new("log");
pub(super) const EVENT: u8 = 0;
pub(super) const TASK: u8 = 1;
pub(super) const BLOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("blobs");
pub(super) const SIGNALS: TableDefinition<&str, &str> = TableDefinition::new("signals");
pub(super) const WAITS: TableDefinition<&str, u64> = TableDefinition::new("waits");
pub(super) const RETRIES: TableDefinition<&str, &str> = TableDefinition::new("retries");
pub(super) const DEAD_LETTERS: TableDefinition<&str, &str> = TableDefinition::new("dead_letters");
pub(super) const OVERRIDES: TableDefinition<&str, &str> = TableDefinition::new("overrides");

/// Outputs longer than this (as JSON text) are stored once in `blobs`.
pub const INLINE_OUTPUT_BYTES: usize = 1024;

/// Events sort by sequence number, before every task state.
pub(super) fn event_key(seq: u64) -> [u8; 9] {
    let mut key = [EVENT; 9];
    key[1..].copy_from_slice(&seq.to_be_bytes());
    key
}

/// The sequence number in an event key.
pub(super) fn sequence(key: &[u8]) -> u64 {
    let mut seq = [0; 8];
    seq.copy_from_slice(&key[1..9]);
    u64::from_be_bytes(seq)
}

pub(super) fn task_key(id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + id.len());
    key.push(TASK);
    key.extend_from_slice(id.as_bytes());
    key
}

pub(super) fn unreadable(path: &Path, e: impl std::fmt::Display) -> ExecutionError {
    ExecutionError::Unreadable {
        location: path.display().to_string(),
        reason: format!("{e}; it is not an execution file this runtime wrote (or it is damaged)"),
    }
}

/// Appends events and writes task states within one write transaction: the
/// table is opened and the last sequence number read once.
pub(super) struct LogWriter<'t> {
    table: redb::Table<'t, &'static [u8], &'static str>,
    next: u64,
}

impl<'t> LogWriter<'t> {
    pub(super) fn open(w: &'t redb::WriteTransaction) -> Result<Self, redb::Error> {
        let table = w.open_table(LOG)?;
        let next = table
            .range(&event_key(0)[..]..&[TASK][..])?
            .next_back()
            .transpose()?
            .map_or(0, |(k, _)| sequence(k.value()) + 1);
        Ok(Self { table, next })
    }

    pub(super) fn push(&mut self, event: &LogEvent) -> Result<(), redb::Error> {
        self.table
            .insert(&event_key(self.next)[..], json(event).as_str())?;
        self.next += 1;
        Ok(())
    }
}

#[derive(Serialize, Deserialize)]
pub(super) struct StoredTask {
    #[serde(flatten)]
    report: TaskReport,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    output_blob: Option<String>,
}

/// A database this process has open to write, shared by every handle on
/// the execution in this process.
pub(super) struct Shared {
    pub(super) db: Database,
    /// The lease epoch stored when this process opened the file: holders
    /// up to it were other processes, gone since.
    pub(super) void_through: AtomicU64,
}

/// Files this process has open to write, so that a second handle shares
/// the database instead of meeting redb's lock.
pub(super) static OPEN: Mutex<Option<HashMap<PathBuf, Weak<Shared>>>> = Mutex::new(None);

pub(super) fn shared(path: &Path) -> Option<Arc<Shared>> {
    OPEN.lock()
        .expect("open files lock")
        .as_ref()?
        .get(path)
        .and_then(Weak::upgrade)
}

pub(super) fn share(path: &Path, shared: &Arc<Shared>) {
    let mut open = OPEN.lock().expect("open files lock");
    let open = open.get_or_insert_with(HashMap::new);
    open.retain(|_, s| s.strong_count() > 0);
    open.insert(path.to_owned(), Arc::downgrade(shared));
}

/// How an execution file is open.
pub(super) enum Db {
    /// To write, shared in this process.
    Write(Arc<Shared>),
    /// To read, by a process in which no one writes it.
    Read(ReadOnlyDatabase),
}

/// One execution file.
pub(super) struct RedbLog {
    pub(super) db: Db,
    pub(super) path: PathBuf,
    /// The directory it is in, whose index learns of record changes
    /// (`None` for a file on an injected storage backend).
    pub(super) files: Option<RedbExecutions>,
}

impl RedbLog {
    pub(super) fn redb(&self, e: impl Into<redb::Error>) -> ExecutionError {
        ExecutionError::Backend {
            location: self.path.display().to_string(),
            reason: e.into().to_string(),
        }
    }

    pub(super) fn begin_read(&self) -> Result<redb::ReadTransaction, ExecutionError> {
        match &self.db {
            Db::Write(shared) => shared.db.begin_read(),
            Db::Read(db) => db.begin_read(),
        }
        .map_err(|e| self.redb(e))
    }

    pub(super) fn meta(&self, key: &str) -> Result<Option<String>, ExecutionError> {
        let read = self.begin_read()?;
        let meta = read
            .open_table(META)
            .map_err(|e| unreadable(&self.path, e))?;
        Ok(meta
            .get(key)
            .map_err(|e| self.redb(e))?
            .map(|v| v.value().to_owned()))
    }

    pub(super) fn check_format(self) -> Result<Self, ExecutionError> {
        let version = self.meta("format_version")?.unwrap_or_default();
        let refuse = |reason: String| ExecutionError::Unreadable {
            location: self.path.display().to_string(),
            reason,
        };
        match version.parse::<u32>() {
            Ok(v) if v == FORMAT_VERSION => Ok(self),
            Ok(v) if v < FORMAT_VERSION => Err(refuse(format!(
                "written in execution format {v}, which was never released; this runtime reads format {FORMAT_VERSION}: delete the file"
            ))),
            Ok(v) => Err(refuse(format!(
                "written in format version {v}; this runtime reads version {FORMAT_VERSION}: use a newer runtime"
            ))),
            Err(_) => Err(unreadable(&self.path, "no format version")),
        }
    }

    pub(super) fn decode<T: serde::de::DeserializeOwned>(
        &self,
        text: &str,
    ) -> Result<T, ExecutionError> {
        serde_json::from_str(text).map_err(|e| unreadable(&self.path, e))
    }

    /// Writes `change` in the write transaction `w`, after the lease check.
    pub(super) fn write(w: &redb::WriteTransaction, change: &Change) -> Result<(), redb::Error> {
        let mut meta = w.open_table(META)?;
        if let Some(lease) = &change.lease {
            meta.insert("lease", json(lease).as_str())?;
        }
        if let Some(record) = &change.record {
            meta.insert("record", json(record).as_str())?;
        }
        let mut log = LogWriter::open(w)?;
        for id in &change.cleared {
            log.table.remove(task_key(id).as_slice())?;
        }
        for report in &change.tasks {
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
            log.table
                .insert(task_key(&report.id).as_slice(), json(&stored).as_str())?;
        }
        for event in &change.events {
            log.push(event)?;
        }
        if !change.signals.is_empty() {
            let mut signals = w.open_table(SIGNALS)?;
            for (name, payload) in &change.signals {
                signals.insert(name.as_str(), payload.to_string().as_str())?;
            }
        }
        if !change.waits.is_empty() {
            let mut waits = w.open_table(WAITS)?;
            for (task, deadline) in &change.waits {
                waits.insert(task.as_str(), deadline)?;
            }
        }
        if !(change.retries.is_empty() && change.retries_removed.is_empty()) {
            let mut retries = w.open_table(RETRIES)?;
            for task in &change.retries_removed {
                retries.remove(task.as_str())?;
            }
            for retry in &change.retries {
                retries.insert(retry.task.as_str(), json(retry).as_str())?;
            }
        }
        if !change.dead_letters.is_empty() {
            let mut letters = w.open_table(DEAD_LETTERS)?;
            for letter in &change.dead_letters {
                letters.insert(letter.task.as_str(), json(letter).as_str())?;
            }
        }
        if !change.overrides.is_empty() {
            let mut overrides = w.open_table(OVERRIDES)?;
            for (task, input) in &change.overrides {
                overrides.insert(task.as_str(), input.as_str())?;
            }
        }
        Ok(())
    }

    pub(super) fn stored_lease(
        &self,
        meta: &impl ReadableTable<&'static str, &'static str>,
    ) -> Result<Option<Lease>, ExecutionError> {
        meta.get("lease")
            .map_err(|e| self.redb(e))?
            .map(|v| self.decode(v.value()))
            .transpose()
    }
}

impl LogBackend for RedbLog {
    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn record(&self) -> Result<ExecutionRecord, ExecutionError> {
        let text = self
            .meta("record")?
            .ok_or_else(|| unreadable(&self.path, "no execution record"))?;
        self.decode(&text)
    }

    fn events_from(&self, from: u64) -> Result<Vec<(u64, LogEvent)>, ExecutionError> {
        let read = self.begin_read()?;
        let log = read.open_table(LOG).map_err(|e| self.redb(e))?;
        let mut out = Vec::new();
        let events = log
            .range(&event_key(from)[..]..&[TASK][..])
            .map_err(|e| self.redb(e))?;
        for entry in events {
            let (k, v) = entry.map_err(|e| self.redb(e))?;
            out.push((sequence(k.value()), self.decode(v.value())?));
        }
        Ok(out)
    }

    fn tasks(&self) -> Result<Vec<TaskReport>, ExecutionError> {
        let read = self.begin_read()?;
        let log = read.open_table(LOG).map_err(|e| self.redb(e))?;
        let blobs = read.open_table(BLOBS).map_err(|e| self.redb(e))?;
        let mut out = Vec::new();
        for entry in log.range(&[TASK][..]..).map_err(|e| self.redb(e))? {
            let (_, v) = entry.map_err(|e| self.redb(e))?;
            let stored: StoredTask = self.decode(v.value())?;
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

    fn retries(&self) -> Result<Vec<PendingRetry>, ExecutionError> {
        let read = self.begin_read()?;
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
                out.push(self.decode(retry.value())?);
            }
        }
        Ok(out)
    }

    fn signal(&self, name: &str) -> Result<Option<Value>, ExecutionError> {
        let read = self.begin_read()?;
        let signals = match read.open_table(SIGNALS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(self.redb(e)),
        };
        let text = signals.get(name).map_err(|e| self.redb(e))?;
        text.map(|t| self.decode(t.value())).transpose()
    }

    fn wait(&self, task: &str) -> Result<Option<u64>, ExecutionError> {
        let read = self.begin_read()?;
        let Ok(waits) = read.open_table(WAITS) else {
            return Ok(None);
        };
        Ok(waits
            .get(task)
            .map_err(|e| self.redb(e))?
            .map(|d| d.value()))
    }

    fn dead_letters(&self) -> Result<Vec<DeadLetter>, ExecutionError> {
        let read = self.begin_read()?;
        let table = read.open_table(DEAD_LETTERS).map_err(|e| self.redb(e))?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(|e| self.redb(e))? {
            let (_, letter) = entry.map_err(|e| self.redb(e))?;
            out.push(self.decode(letter.value())?);
        }
        Ok(out)
    }

    fn overrides(&self) -> Result<HashMap<String, String>, ExecutionError> {
        let read = self.begin_read()?;
        let table = read.open_table(OVERRIDES).map_err(|e| self.redb(e))?;
        let mut out = HashMap::new();
        for entry in table.iter().map_err(|e| self.redb(e))? {
            let (task, input) = entry.map_err(|e| self.redb(e))?;
            out.insert(task.value().to_owned(), input.value().to_owned());
        }
        Ok(out)
    }

    fn lease(&self) -> Result<(Option<Lease>, bool), ExecutionError> {
        let lease: Option<Lease> = self
            .meta("lease")?
            .map(|text| self.decode(&text))
            .transpose()?;
        let gone = match &self.db {
            // No process has the file open to write.
            Db::Read(_) => lease.is_some(),
            Db::Write(shared) => lease
                .as_ref()
                .is_some_and(|l| l.epoch <= shared.void_through.load(Ordering::Relaxed)),
        };
        Ok((lease, gone))
    }

    fn acquire(&self, owner: &str, ttl_ms: u64) -> Result<Lease, ExecutionError> {
        let Db::Write(shared) = &self.db else {
            return Err(ExecutionError::ReadOnly(self.location()));
        };
        let w = shared.db.begin_write().map_err(|e| self.redb(e))?;
        let lease = {
            let mut meta = w.open_table(META).map_err(|e| self.redb(e))?;
            let current = self.stored_lease(&meta)?;
            let void_through = shared.void_through.load(Ordering::Relaxed);
            let lease = Lease::take(current.as_ref(), owner, now_ms(), ttl_ms, void_through)
                .ok_or_else(|| ExecutionError::Busy(self.record_id()))?;
            meta.insert("lease", json(&lease).as_str())
                .map_err(|e| self.redb(e))?;
            lease
        };
        w.commit().map_err(|e| self.redb(e))?;
        Ok(lease)
    }

    fn apply(&self, holder: &Lease, change: &Change) -> Result<(), ExecutionError> {
        let Db::Write(shared) = &self.db else {
            return Err(ExecutionError::ReadOnly(self.location()));
        };
        let mut w = shared.db.begin_write().map_err(|e| self.redb(e))?;
        w.set_durability(Durability::Immediate)
            .map_err(|e| self.redb(e))?;
        {
            let meta = w.open_table(META).map_err(|e| self.redb(e))?;
            let stored = self.stored_lease(&meta)?;
            if !holder.holds(stored.as_ref()) {
                return Err(ExecutionError::LeaseLost {
                    location: self.location(),
                    holder: stored.map(|l| format!("{} (epoch {})", l.owner, l.epoch)),
                });
            }
        }
        Self::write(&w, change).map_err(|e| self.redb(e))?;
        w.commit().map_err(|e| self.redb(e))?;
        // After the commit: an index entry may lag behind its file (a
        // listing mends it), never run ahead of it.
        if let Some(files) = &self.files
            && (change.record.is_some() || !change.dead_letters.is_empty())
            && let Ok(summary) = summary(self)
        {
            let _ = files.index.put(&|| files.summaries(), &[summary]);
        }
        Ok(())
    }
}

impl RedbLog {
    pub(super) fn record_id(&self) -> String {
        self.path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

/// What the listing index keeps of the execution `log` holds.
pub(super) fn summary(log: &dyn LogBackend) -> Result<Summary, ExecutionError> {
    Ok(Summary::with_letters(&log.record()?, &log.dead_letters()?))
}
