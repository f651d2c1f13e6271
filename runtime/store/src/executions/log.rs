//! [`ExecutionLog`]: one open execution, whatever keeps it. It reads
//! through its backend and, holding the execution's lease, writes every
//! operation (commit task states, schedule a retry, signal, wait, finish,
//! renew) as one [`Change`]; it keeps the events noted since the last
//! commit and wakes followers when it commits.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use orchestrator_core::scheduler::{Consumption, PendingRetry, TaskReport};

use super::backend::LogBackend;
use super::{
    Change, DeadLetter, EventKind, ExecutionError, ExecutionRecord, ExecutionStatus, Lease,
    LogEvent, TaskEnd, millis, now_ms,
};

/// One open execution: reads, and (holding its lease) writes.
pub struct ExecutionLog {
    pub(super) backend: Box<dyn LogBackend>,
    /// The lease writes are made under; `None`: opened to read.
    lease: Mutex<Option<Lease>>,
    ttl_ms: u64,
    /// One writer at a time: notes are taken and written in order.
    writing: Mutex<()>,
    /// Attempt starts and emits noted since the last commit; written with
    /// the next one.
    notes: Mutex<Vec<LogEvent>>,
    /// Wakes waits when a signal is recorded.
    pub(super) signalled: tokio::sync::Notify,
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
    pub(super) fn write(
        &self,
        build: impl FnOnce(Vec<LogEvent>) -> Change,
    ) -> Result<(), ExecutionError> {
        let _writing = self.writing.lock().expect("writing lock");
        let lease = self
            .lease()
            .ok_or_else(|| ExecutionError::ReadOnly(self.location()))?;
        let notes = std::mem::take(&mut *self.notes.lock().expect("notes lock"));
        let noted = notes.len();
        // Every change starts its events with the notes it was given.
        let mut change = build(notes);
        // A renewal that comes after the finish gave the lease up does not
        // take it again.
        if lease.expires_at == 0 && change.lease.as_ref().is_some_and(|l| l.expires_at != 0) {
            change.lease = None;
        }
        if let Err(e) = self.backend.apply(&lease, &change) {
            // Kept for the next commit, in front of what was noted since.
            change.events.truncate(noted);
            let mut pending = self.notes.lock().expect("notes lock");
            let later = std::mem::replace(&mut *pending, change.events);
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
                        end: Some(TaskEnd::of(report)),
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
        self.signal_once(name, payload, None).map(drop)
    }

    /// Records a signal as [`ExecutionLog::signal`] does, unless one with
    /// the same `request_id` was recorded already (a sender's retry): then
    /// records nothing and returns `false`.
    pub fn signal_once(
        &self,
        name: &str,
        payload: &Value,
        request_id: Option<&str>,
    ) -> Result<bool, ExecutionError> {
        let mut seen: Result<bool, ExecutionError> = Ok(false);
        self.write(|mut events| {
            // Looked up under the write lock: two retries racing record once.
            if let Some(request) = request_id {
                seen = self.events().map(|kept| {
                    kept.iter().any(|e| {
                        matches!(&e.kind, EventKind::SignalReceived { request_id: Some(r), .. } if r == request)
                    })
                });
                if !matches!(seen, Ok(false)) {
                    return Change {
                        events,
                        ..Change::default()
                    };
                }
            }
            events.push(LogEvent {
                at: now_ms(),
                kind: EventKind::SignalReceived {
                    signal: name.to_owned(),
                    request_id: request_id.map(str::to_owned),
                },
            });
            Change {
                events,
                signals: vec![(name.to_owned(), payload.clone())],
                ..Change::default()
            }
        })?;
        if seen? {
            return Ok(false);
        }
        self.signalled.notify_waiters();
        Ok(true)
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
