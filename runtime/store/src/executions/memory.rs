//! The in-memory backend: executions kept in this process only, for
//! embedding and tests. Same contract as the files ([`crate::conformance`]):
//! leases, one transaction per change, tenants apart; nothing survives the
//! process.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use orchestrator_core::scheduler::{PendingRetry, TaskReport};
use orchestrator_core::tenant::TenantId;

use super::backend::{Change, ExecutionsBackend, Lease, LogBackend};
use super::listing::{ListQuery, Page, Summary, page};
use super::{DeadLetter, ExecutionError, ExecutionRecord, LogEvent, now_ms, valid_id};

/// One execution's data.
#[derive(Debug, Default)]
struct Stored {
    record: Option<ExecutionRecord>,
    events: Vec<LogEvent>,
    tasks: BTreeMap<String, TaskReport>,
    signals: HashMap<String, Value>,
    waits: HashMap<String, u64>,
    retries: BTreeMap<String, PendingRetry>,
    dead_letters: BTreeMap<String, DeadLetter>,
    overrides: HashMap<String, String>,
    lease: Option<Lease>,
}

impl Stored {
    /// What a listing shows of it, once it has a record.
    fn summary(&self) -> Option<Summary> {
        let letters: Vec<DeadLetter> = self.dead_letters.values().cloned().collect();
        Some(Summary::with_letters(self.record.as_ref()?, &letters))
    }
}

type Shared = Arc<Mutex<Stored>>;

/// Every tenant's executions, in memory. Clones share them.
#[derive(Debug, Clone, Default)]
pub struct MemoryExecutions {
    all: Arc<Mutex<All>>,
}

/// The executions by id, and the listing's index.
#[derive(Debug, Default)]
struct All {
    by_id: BTreeMap<(TenantId, String), Shared>,
    by_time: HashMap<TenantId, BTreeSet<(u64, String)>>,
}

impl MemoryExecutions {
    /// Nothing stored yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The executions of `tenant`.
    pub fn tenant(&self, tenant: &TenantId) -> MemoryTenant {
        MemoryTenant {
            all: self.clone(),
            tenant: tenant.clone(),
        }
    }
}

/// One tenant's executions in a [`MemoryExecutions`].
#[derive(Debug, Clone)]
pub struct MemoryTenant {
    all: MemoryExecutions,
    tenant: TenantId,
}

impl MemoryTenant {
    fn key(&self, id: &str) -> (TenantId, String) {
        (self.tenant.clone(), id.to_owned())
    }

    fn get(&self, id: &str) -> Option<Shared> {
        self.all
            .all
            .lock()
            .expect("executions lock")
            .by_id
            .get(&self.key(id))
            .cloned()
    }
}

impl ExecutionsBackend for MemoryTenant {
    fn location(&self) -> String {
        format!("memory (tenant {})", self.tenant)
    }

    fn create(
        &self,
        record: &ExecutionRecord,
        first: &LogEvent,
        owner: &str,
        ttl_ms: u64,
    ) -> Result<(Box<dyn LogBackend>, Lease), ExecutionError> {
        let lease = Lease::take(None, owner, now_ms(), ttl_ms, 0).expect("no lease yet");
        let stored = Arc::new(Mutex::new(Stored {
            record: Some(record.clone()),
            events: vec![first.clone()],
            lease: Some(lease.clone()),
            ..Stored::default()
        }));
        let mut all = self.all.all.lock().expect("executions lock");
        let key = self.key(&record.id);
        if all.by_id.contains_key(&key) {
            return Err(ExecutionError::Exists(record.id.clone()));
        }
        all.by_id.insert(key, Arc::clone(&stored));
        all.by_time
            .entry(self.tenant.clone())
            .or_default()
            .insert((record.created_at, record.id.clone()));
        Ok((
            Box::new(MemoryLog {
                id: record.id.clone(),
                stored,
            }),
            lease,
        ))
    }

    fn open(&self, id: &str, _write: bool) -> Result<Box<dyn LogBackend>, ExecutionError> {
        let stored =
            self.get(id)
                .filter(|_| valid_id(id))
                .ok_or_else(|| ExecutionError::Unknown {
                    id: id.to_owned(),
                    location: self.location(),
                })?;
        Ok(Box::new(MemoryLog {
            id: id.to_owned(),
            stored,
        }))
    }

    fn exists(&self, id: &str) -> bool {
        self.get(id).is_some()
    }

    fn ids(&self) -> Vec<String> {
        self.all
            .all
            .lock()
            .expect("executions lock")
            .by_id
            .keys()
            .filter(|(tenant, _)| *tenant == self.tenant)
            .map(|(_, id)| id.clone())
            .collect()
    }

    fn stored_bytes(&self) -> u64 {
        let stored: Vec<Shared> = {
            let all = self.all.all.lock().expect("executions lock");
            all.by_id
                .iter()
                .filter(|((tenant, _), _)| *tenant == self.tenant)
                .map(|(_, stored)| Arc::clone(stored))
                .collect()
        };
        stored
            .iter()
            .map(|stored| {
                let s = stored.lock().expect("execution lock");
                json(&s.record)
                    + json(&s.events)
                    + json(&s.tasks)
                    + json(&s.signals)
                    + json(&s.retries)
                    + json(&s.dead_letters)
                    + json(&s.overrides)
            })
            .sum()
    }

    fn list(&self, query: &ListQuery) -> Result<Page, ExecutionError> {
        let all = self.all.all.lock().expect("executions lock");
        let Some(by_time) = all.by_time.get(&self.tenant) else {
            return Ok(Page::default());
        };
        let lower = Bound::Included((query.since.unwrap_or(0), String::new()));
        let upper = query.upper().map(|p| (p.created_at, p.id));
        // An empty window (since after until, a cursor before since).
        if upper
            .as_ref()
            .is_some_and(|(t, id)| (*t, id.as_str()) <= (query.since.unwrap_or(0), ""))
        {
            return Ok(Page::default());
        }
        let upper = upper.map_or(Bound::Unbounded, Bound::Excluded);
        let summaries = by_time.range((lower, upper)).rev().filter_map(|(_, id)| {
            let stored = all.by_id.get(&self.key(id))?;
            let stored = stored.lock().expect("execution lock");
            stored.summary()
        });
        Ok(page(query, summaries))
    }

    fn open_dead_letters(&self) -> Result<u64, ExecutionError> {
        let all = self.all.all.lock().expect("executions lock");
        let Some(by_time) = all.by_time.get(&self.tenant) else {
            return Ok(0);
        };
        Ok(by_time
            .iter()
            .filter_map(|(_, id)| all.by_id.get(&self.key(id)))
            .filter_map(|stored| stored.lock().expect("execution lock").summary())
            .map(|s| u64::from(s.dead_letters))
            .sum())
    }

    fn remove(&self, id: &str) -> Result<(), ExecutionError> {
        let mut all = self.all.all.lock().expect("executions lock");
        let key = self.key(id);
        let Some(stored) = all.by_id.get(&key) else {
            return Err(ExecutionError::Unknown {
                id: id.to_owned(),
                location: self.location(),
            });
        };
        let (held, created_at) = {
            let stored = stored.lock().expect("execution lock");
            (
                stored.lease.as_ref().is_some_and(|l| l.live(now_ms())),
                stored.record.as_ref().map_or(0, |r| r.created_at),
            )
        };
        if held {
            return Err(ExecutionError::Busy(id.to_owned()));
        }
        all.by_id.remove(&key);
        if let Some(by_time) = all.by_time.get_mut(&self.tenant) {
            by_time.remove(&(created_at, id.to_owned()));
        }
        Ok(())
    }

    fn socket(&self, _id: &str) -> Option<std::path::PathBuf> {
        None
    }
}

/// The length of `value` as JSON: what the memory backend counts as the
/// bytes it keeps.
fn json(value: &impl serde::Serialize) -> u64 {
    serde_json::to_vec(value).map_or(0, |v| v.len() as u64)
}

/// One execution in memory.
struct MemoryLog {
    id: String,
    stored: Shared,
}

impl MemoryLog {
    fn read<T>(&self, f: impl FnOnce(&Stored) -> T) -> T {
        f(&self.stored.lock().expect("execution lock"))
    }
}

impl LogBackend for MemoryLog {
    fn location(&self) -> String {
        format!("memory:{}", self.id)
    }

    fn record(&self) -> Result<ExecutionRecord, ExecutionError> {
        self.read(|s| s.record.clone())
            .ok_or_else(|| ExecutionError::Unknown {
                id: self.id.clone(),
                location: self.location(),
            })
    }

    fn events_from(&self, from: u64) -> Result<Vec<(u64, LogEvent)>, ExecutionError> {
        Ok(self.read(|s| {
            (from..)
                .zip(
                    s.events
                        .iter()
                        .skip(usize::try_from(from).unwrap_or(usize::MAX)),
                )
                .map(|(seq, e)| (seq, e.clone()))
                .collect()
        }))
    }

    fn tasks(&self) -> Result<Vec<TaskReport>, ExecutionError> {
        Ok(self.read(|s| s.tasks.values().cloned().collect()))
    }

    fn retries(&self) -> Result<Vec<PendingRetry>, ExecutionError> {
        Ok(self.read(|s| {
            s.retries
                .values()
                .filter(|r| !s.tasks.contains_key(&r.task))
                .cloned()
                .collect()
        }))
    }

    fn signal(&self, name: &str) -> Result<Option<Value>, ExecutionError> {
        Ok(self.read(|s| s.signals.get(name).cloned()))
    }

    fn wait(&self, task: &str) -> Result<Option<u64>, ExecutionError> {
        Ok(self.read(|s| s.waits.get(task).copied()))
    }

    fn dead_letters(&self) -> Result<Vec<DeadLetter>, ExecutionError> {
        Ok(self.read(|s| s.dead_letters.values().cloned().collect()))
    }

    fn overrides(&self) -> Result<HashMap<String, String>, ExecutionError> {
        Ok(self.read(|s| s.overrides.clone()))
    }

    fn lease(&self) -> Result<(Option<Lease>, bool), ExecutionError> {
        Ok((self.read(|s| s.lease.clone()), false))
    }

    fn acquire(&self, owner: &str, ttl_ms: u64) -> Result<Lease, ExecutionError> {
        let mut stored = self.stored.lock().expect("execution lock");
        let lease = Lease::take(stored.lease.as_ref(), owner, now_ms(), ttl_ms, 0)
            .ok_or_else(|| ExecutionError::Busy(self.id.clone()))?;
        stored.lease = Some(lease.clone());
        Ok(lease)
    }

    fn apply(&self, holder: &Lease, change: &Change) -> Result<(), ExecutionError> {
        let mut s = self.stored.lock().expect("execution lock");
        if !holder.holds(s.lease.as_ref()) {
            return Err(ExecutionError::LeaseLost {
                location: self.location(),
                holder: s
                    .lease
                    .as_ref()
                    .map(|l| format!("{} (epoch {})", l.owner, l.epoch)),
            });
        }
        if let Some(lease) = &change.lease {
            s.lease = Some(lease.clone());
        }
        if let Some(record) = &change.record {
            s.record = Some(record.clone());
        }
        for id in &change.cleared {
            s.tasks.remove(id);
        }
        for report in &change.tasks {
            s.tasks.insert(report.id.clone(), report.clone());
        }
        s.events.extend(change.events.iter().cloned());
        for (name, payload) in &change.signals {
            s.signals.insert(name.clone(), payload.clone());
        }
        for (task, deadline) in &change.waits {
            s.waits.insert(task.clone(), *deadline);
        }
        for task in &change.retries_removed {
            s.retries.remove(task);
        }
        for retry in &change.retries {
            s.retries.insert(retry.task.clone(), retry.clone());
        }
        for letter in &change.dead_letters {
            s.dead_letters.insert(letter.task.clone(), letter.clone());
        }
        for (task, input) in &change.overrides {
            s.overrides.insert(task.clone(), input.clone());
        }
        Ok(())
    }
}
