//! [`ExecutionHandle`]: one execution, seen from the program that embeds
//! the engine: wait for it, cancel it, signal it, follow its events, ask
//! how it stands. A handle on an execution this engine started talks to
//! its run directly; one on an execution found in the store (another
//! process's, or one that exists already) goes through its file or the
//! control socket of the process running it, as the CLI does.

use std::sync::Arc;

use serde_json::Value;

use super::engine::blocking;
use crate::executions::{self, ExecutionView, follow_log};
use crate::service::{Execution, ServiceError};
use orchestrator_core::scheduler::Cancel;
use orchestrator_store::executions::{EventKind, ExecutionLog, Executions, LogEvent};

/// How a run this engine drives ended: `Err` holds why it could not be
/// recorded to its end.
type Outcome = Option<Result<(), String>>;

/// One execution. Cheap to clone; every clone reaches the same execution.
#[derive(Debug, Clone)]
pub struct ExecutionHandle {
    id: String,
    executions: Executions,
    /// Set when this engine runs it.
    running: Option<Arc<Running>>,
}

/// An execution this engine started: its open log, its cancel, and how its
/// run ended once it did.
#[derive(Debug)]
pub(super) struct Running {
    log: Arc<ExecutionLog>,
    cancel: Arc<Cancel>,
    outcome: tokio::sync::watch::Sender<Outcome>,
}

impl ExecutionHandle {
    pub(super) fn running(executions: Executions, execution: &Execution) -> Self {
        Self {
            id: execution.id.clone(),
            executions,
            running: Some(Arc::new(Running {
                log: Arc::clone(&execution.log),
                cancel: Arc::clone(&execution.cancel),
                outcome: tokio::sync::watch::Sender::new(None),
            })),
        }
    }

    /// Another handle on a run this engine started.
    pub(super) fn of(executions: Executions, id: &str, running: Arc<Running>) -> Self {
        Self {
            id: id.to_owned(),
            executions,
            running: Some(running),
        }
    }

    /// What another handle on the same run needs, while this one lives.
    pub(super) fn shared(&self) -> Option<std::sync::Weak<Running>> {
        self.running.as_ref().map(Arc::downgrade)
    }

    /// The record of a run this engine started, read from its open log.
    pub(super) fn record(
        running: &Running,
    ) -> Result<orchestrator_store::executions::ExecutionRecord, ServiceError> {
        Ok(running.log.record()?)
    }

    pub(super) fn existing(executions: Executions, id: &str) -> Self {
        Self {
            id: id.to_owned(),
            executions,
            running: None,
        }
    }

    pub(super) fn outcome_sender(&self) -> tokio::sync::watch::Sender<Outcome> {
        self.running
            .as_ref()
            .map(|r| r.outcome.clone())
            .expect("a handle on a run this engine started")
    }

    /// The execution's id (what `runtime status` takes).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Waits until it finished and returns how it ended: its record
    /// (status, outputs, first error), task states and events.
    pub async fn wait(&self) -> Result<ExecutionView, ServiceError> {
        match &self.running {
            Some(running) => {
                let mut outcome = running.outcome.subscribe();
                let ended = outcome
                    .wait_for(Option::is_some)
                    .await
                    .map_err(|e| ServiceError::Plugin(e.to_string()))?
                    .clone();
                if let Some(Err(e)) = ended {
                    return Err(ServiceError::Plugin(e));
                }
                let log = Arc::clone(&running.log);
                let id = self.id.clone();
                blocking(move || {
                    Ok(ExecutionView {
                        record: log.record()?,
                        tasks: log.tasks()?,
                        events: log.events()?,
                        live: false,
                    })
                })
                .await
                .map_err(|e| ServiceError::Plugin(format!("execution `{id}`: {e}")))
            }
            None => {
                let mut events = self.events(0);
                while events.next().await.is_some() {}
                self.status().await
            }
        }
    }

    /// Stops it: its tasks are interrupted and it ends `cancelled`.
    pub async fn cancel(&self) -> Result<(), ServiceError> {
        match &self.running {
            Some(running) => {
                running.log.note(EventKind::CancelRequested);
                running.cancel.cancel();
                Ok(())
            }
            None => {
                let (executions, id) = (self.executions.clone(), self.id.clone());
                blocking(move || executions::cancel(&executions, &id).map(|_| ())).await
            }
        }
    }

    /// Sends signal `name` with `payload`: a `wait:` task for it completes
    /// with the payload.
    pub async fn signal(&self, name: &str, payload: Value) -> Result<(), ServiceError> {
        let name = name.to_owned();
        match &self.running {
            Some(running) => {
                let log = Arc::clone(&running.log);
                blocking(move || Ok(log.signal(&name, &payload)?)).await
            }
            None => {
                let (executions, id) = (self.executions.clone(), self.id.clone());
                blocking(move || executions::signal(&executions, &id, &name, &payload).map(|_| ()))
                    .await
            }
        }
    }

    /// How it stands now: record, task states, events.
    pub async fn status(&self) -> Result<ExecutionView, ServiceError> {
        let (executions, id) = (self.executions.clone(), self.id.clone());
        match &self.running {
            Some(running) => {
                let log = Arc::clone(&running.log);
                let live = running.outcome.borrow().is_none();
                blocking(move || {
                    Ok(ExecutionView {
                        record: log.record()?,
                        tasks: log.tasks()?,
                        events: log.events()?,
                        live,
                    })
                })
                .await
            }
            None => blocking(move || executions::view(&executions, &id)).await,
        }
    }

    /// Its events numbered `from` onwards (0 is the first), then each as
    /// it is committed, until it finished: state changes, attempts,
    /// retries, signals and what its plugins emit (streamed text).
    pub fn events(&self, from: u64) -> EventStream {
        match &self.running {
            Some(running) => EventStream(follow_log(Arc::clone(&running.log), from)),
            None => {
                let (send, receive) = tokio::sync::mpsc::channel(256);
                let (executions, id) = (self.executions.clone(), self.id.clone());
                tokio::task::spawn_blocking(move || {
                    let followed = executions::follow(&executions, &id, from, |seq, event| {
                        // A dropped stream stops nothing here; the rest is
                        // read and let go.
                        let _ = send.blocking_send(Ok((seq, event.clone())));
                    });
                    if let Err(e) = followed {
                        let _ = send.blocking_send(Err(e.to_string()));
                    }
                });
                EventStream(receive)
            }
        }
    }
}

/// The events of one execution, in order; see [`ExecutionHandle::events`].
#[derive(Debug)]
pub struct EventStream(tokio::sync::mpsc::Receiver<Result<(u64, LogEvent), String>>);

impl EventStream {
    /// The next event and its number; `None` once the execution finished
    /// (after its `execution_finished` event).
    pub async fn next(&mut self) -> Option<Result<(u64, LogEvent), ServiceError>> {
        self.0
            .recv()
            .await
            .map(|event| event.map_err(ServiceError::Plugin))
    }
}
