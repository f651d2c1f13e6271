//! [`ExecutionHandle`]: one execution, seen from the program that embeds
//! the engine: wait for it, cancel it, signal it, follow its events, ask
//! how it stands. While this engine runs it, a handle talks to the run
//! directly; otherwise (the run ended, or another process runs it) it goes
//! through the execution's file or the control socket of the process
//! running it, as the CLI does. A handle never keeps a finished
//! execution's file open.

use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::engine::blocking;
use crate::executions::{self, ExecutionView, follow_log};
use crate::service::{Execution, ServiceError};
use orchestrator_core::scheduler::Cancel;
use orchestrator_store::executions::{
    EventKind, ExecutionLog, ExecutionRecord, Executions, LogEvent,
};

/// How long a signal sent through a handle waits for a parked run to be
/// taken up again before it records the signal in the file itself.
const TAKE_UP_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

/// How a run this engine drives ended: `Err` holds why it could not be
/// recorded to its end.
type Outcome = Option<Result<(), String>>;

/// One execution. Cheap to clone; every clone reaches the same execution.
#[derive(Debug, Clone)]
///
/// ```no_run
/// # async fn example() -> Result<(), orchestrator_engine::service::ServiceError> {
/// # let engine = orchestrator_engine::Engine::builder().in_memory().build().await?;
/// # let workflow = orchestrator_engine::Workflow::builder("approval")
/// #     .task(orchestrator_engine::Task::wait("approve", "go"))
/// #     .build()?;
/// let execution = engine.start(&workflow, serde_json::json!({})).await?;
/// execution.signal("go", serde_json::json!({ "by": "grace" })).await?;
/// let done = execution.wait().await?;
/// println!("{:?}", done.record.status);
/// # Ok(()) }
/// ```
pub struct ExecutionHandle {
    id: String,
    executions: Executions,
    /// Set when this engine started it.
    running: Option<Arc<Running>>,
}

/// A run this engine started: its log while it runs, its cancel, and how
/// it ended once it did.
#[derive(Debug)]
pub(super) struct Running {
    /// Taken when the run ends, so the file closes.
    log: Mutex<Option<Arc<ExecutionLog>>>,
    cancel: Arc<Cancel>,
    outcome: tokio::sync::watch::Sender<Outcome>,
    /// How it stood when it ended, read from the log just before the log
    /// was let go: those who asked while it ran get the end without
    /// waiting for the file to close and reading it again.
    last: Mutex<Option<ExecutionView>>,
    /// Notified whenever a signal is sent through a handle: a parked run
    /// wakes (one that runs finds the signal itself).
    wake: Arc<tokio::sync::Notify>,
    /// Notified when a parked run was taken up again.
    unparked: tokio::sync::Notify,
}

impl Running {
    /// Lets the file go while the run is parked; signals and cancels go
    /// through the file meanwhile.
    pub(super) fn park(&self) {
        self.log.lock().expect("log lock").take();
    }

    /// The run was taken up again, with `log`.
    pub(super) fn unpark(&self, log: Arc<ExecutionLog>) {
        *self.log.lock().expect("log lock") = Some(log);
        self.unparked.notify_waiters();
    }

    /// Its log, the run taken up again first if it is parked: a signal is
    /// then recorded by the run's own open file, not by opening it a
    /// second time. `None` once it ended, or if it could not be taken up
    /// within [`TAKE_UP_PATIENCE`].
    async fn live_or_woken(&self) -> Option<Arc<ExecutionLog>> {
        let patience = tokio::time::Instant::now() + TAKE_UP_PATIENCE;
        let mut outcome = self.outcome.subscribe();
        loop {
            let unparked = self.unparked.notified();
            tokio::pin!(unparked);
            unparked.as_mut().enable();
            if let Some(log) = self.live() {
                return Some(log);
            }
            if outcome.borrow_and_update().is_some() {
                return None;
            }
            self.wake.notify_one();
            tokio::select! {
                () = unparked => {}
                _ = outcome.changed() => {}
                () = tokio::time::sleep_until(patience) => return None,
            }
        }
    }

    /// What wakes the run while it is parked.
    pub(super) fn wake(&self) -> &Arc<tokio::sync::Notify> {
        &self.wake
    }

    /// Its cancel, kept across parking.
    pub(super) fn cancel(&self) -> &Arc<Cancel> {
        &self.cancel
    }

    /// The log, while the run goes on.
    pub(super) fn live(&self) -> Option<Arc<ExecutionLog>> {
        if self.outcome.borrow().is_some() {
            return None;
        }
        self.log.lock().expect("log lock").clone()
    }

    /// Records how the run ended and lets its file go, keeping how it
    /// stood at its end when it ran to one. Reads the log: call it off the
    /// async threads.
    pub(super) fn end(&self, outcome: Result<(), String>) {
        let log = self.log.lock().expect("log lock").take();
        if let (Some(log), Ok(())) = (log, &outcome) {
            let view = (|| -> Result<ExecutionView, ServiceError> {
                Ok(ExecutionView {
                    record: log.record()?,
                    tasks: log.tasks()?,
                    events: log.events()?,
                    live: false,
                })
            })();
            match view {
                Ok(view) => *self.last.lock().expect("last lock") = Some(view),
                Err(e) => tracing::debug!("the end of a run is read from its file: {e}"),
            }
        }
        self.outcome.send_replace(Some(outcome));
    }

    /// How it stood at its end, once it ended.
    pub(super) fn last(&self) -> Option<ExecutionView> {
        self.last.lock().expect("last lock").clone()
    }
}

/// Ends a run when dropped, also when its task panicked or was aborted, so
/// no `wait` waits for ever.
pub(super) struct Ending(pub(super) Arc<Running>);

impl Drop for Ending {
    fn drop(&mut self) {
        if self.0.outcome.borrow().is_none() {
            self.0.end(Err(
                "the run stopped before it was recorded to its end".to_owned()
            ));
        }
    }
}

impl ExecutionHandle {
    pub(super) fn running(executions: Executions, execution: &Execution) -> Self {
        Self {
            id: execution.id.clone(),
            executions,
            running: Some(Arc::new(Running {
                log: Mutex::new(Some(Arc::clone(&execution.log))),
                cancel: Arc::clone(&execution.cancel),
                outcome: tokio::sync::watch::Sender::new(None),
                last: Mutex::new(None),
                wake: Arc::default(),
                unparked: tokio::sync::Notify::new(),
            })),
        }
    }

    pub(super) fn existing(executions: Executions, id: &str) -> Self {
        Self {
            id: id.to_owned(),
            executions,
            running: None,
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

    /// The run behind this handle, when this engine started it.
    pub(super) fn run(&self) -> Option<Arc<Running>> {
        self.running.clone()
    }

    /// The record of a run this engine started, while it runs or as it
    /// ended.
    pub(super) fn record(running: &Running) -> Result<Option<ExecutionRecord>, ServiceError> {
        if let Some(last) = running.last() {
            return Ok(Some(last.record));
        }
        running
            .live()
            .map(|log| log.record())
            .transpose()
            .map_err(Into::into)
    }

    /// The execution's id (what `runtime status` takes).
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), orchestrator_engine::service::ServiceError> {
    /// # let engine = orchestrator_engine::Engine::builder().in_memory().build().await?;
    /// # let workflow = orchestrator_engine::Workflow::builder("approval")
    /// #     .task(orchestrator_engine::Task::wait("approve", "go"))
    /// #     .build()?;
    /// let execution = engine.start(&workflow, serde_json::json!({})).await?;
    /// println!("runtime status {}", execution.id());
    /// # Ok(()) }
    /// ```
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Waits until it finished and returns how it ended: its record
    /// (status, outputs, first error), task states and events.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), orchestrator_engine::service::ServiceError> {
    /// # let engine = orchestrator_engine::Engine::builder().in_memory().build().await?;
    /// # let workflow = orchestrator_engine::Workflow::builder("approval")
    /// #     .task(orchestrator_engine::Task::wait("approve", "go"))
    /// #     .build()?;
    /// let execution = engine.start(&workflow, serde_json::json!({})).await?;
    /// # execution.signal("go", serde_json::json!({})).await?;
    /// let done = execution.wait().await?;
    /// println!("{:?}: {}", done.record.status, serde_json::json!(done.record.outputs));
    /// # Ok(()) }
    /// ```
    pub async fn wait(&self) -> Result<ExecutionView, ServiceError> {
        if let Some(running) = &self.running {
            let mut outcome = running.outcome.subscribe();
            let ended = outcome
                .wait_for(Option::is_some)
                .await
                .map_err(|e| ServiceError::Plugin(e.to_string()))?
                .clone();
            if let Some(Err(e)) = ended {
                return Err(ServiceError::Plugin(e));
            }
            if let Some(view) = running.last() {
                return Ok(view);
            }
        }
        // To its end (its owner, here or elsewhere, lets the file go).
        let (executions, id) = (self.executions.clone(), self.id.clone());
        blocking(move || {
            executions::follow(&executions, &id, u64::MAX, &|| true, |_, _| true)?;
            executions::view(&executions, &id)
        })
        .await
    }

    /// Stops it: its tasks are interrupted and it ends `cancelled`. One
    /// that finished already is refused.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), orchestrator_engine::service::ServiceError> {
    /// # let engine = orchestrator_engine::Engine::builder().in_memory().build().await?;
    /// # let workflow = orchestrator_engine::Workflow::builder("approval")
    /// #     .task(orchestrator_engine::Task::wait("approve", "go"))
    /// #     .build()?;
    /// let execution = engine.start(&workflow, serde_json::json!({})).await?;
    /// execution.cancel().await?;
    /// let done = execution.wait().await?;
    /// assert_eq!(done.record.status, orchestrator_engine::store::executions::ExecutionStatus::Cancelled);
    /// # Ok(()) }
    /// ```
    pub async fn cancel(&self) -> Result<(), ServiceError> {
        if let Some(running) = &self.running
            && let Some(log) = running.live()
        {
            log.note(EventKind::CancelRequested);
            running.cancel.cancel();
            return Ok(());
        }
        let (executions, id) = (self.executions.clone(), self.id.clone());
        blocking(move || executions::cancel(&executions, &id).map(|_| ())).await
    }

    /// Sends signal `name` with `payload`: a `wait:` task for it completes
    /// with the payload. One that finished already is refused.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), orchestrator_engine::service::ServiceError> {
    /// # let engine = orchestrator_engine::Engine::builder().in_memory().build().await?;
    /// # let workflow = orchestrator_engine::Workflow::builder("approval")
    /// #     .task(orchestrator_engine::Task::wait("approve", "go"))
    /// #     .build()?;
    /// let execution = engine.start(&workflow, serde_json::json!({})).await?;
    /// execution.signal("go", serde_json::json!({ "approved": true })).await?;
    /// # Ok(()) }
    /// ```
    pub async fn signal(&self, name: &str, payload: Value) -> Result<(), ServiceError> {
        self.signal_once(name, payload, None).await
    }

    /// Sends signal `name` as [`ExecutionHandle::signal`] does, once per
    /// `request_id`: sent again with the same id (a retry after a lost
    /// answer), it is not recorded again.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), orchestrator_engine::service::ServiceError> {
    /// # let engine = orchestrator_engine::Engine::builder().in_memory().build().await?;
    /// # let workflow = orchestrator_engine::Workflow::builder("approval")
    /// #     .task(orchestrator_engine::Task::wait("approve", "go"))
    /// #     .build()?;
    /// let execution = engine.start(&workflow, serde_json::json!({})).await?;
    /// for _ in 0..2 {
    ///     execution.signal_once("go", serde_json::json!(true), Some("req-7".into())).await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn signal_once(
        &self,
        name: &str,
        payload: Value,
        request_id: Option<String>,
    ) -> Result<(), ServiceError> {
        let name = name.to_owned();
        let live = match &self.running {
            Some(running) => running.live_or_woken().await,
            None => None,
        };
        let sent = if let Some(log) = live {
            blocking(move || {
                Ok(log
                    .signal_once(&name, &payload, request_id.as_deref())
                    .map(drop)?)
            })
            .await
        } else {
            let (executions, id) = (self.executions.clone(), self.id.clone());
            blocking(move || {
                executions::signal(&executions, &id, &name, &payload, request_id.as_deref())
                    .map(drop)
            })
            .await
        };
        // The run may have parked before it saw the signal: it wakes, and
        // finds it in its file.
        if let Some(running) = &self.running {
            running.wake.notify_one();
        }
        sent
    }

    /// The events numbered `from` onwards, at most `limit` of them, as
    /// committed now (see [`ExecutionHandle::events`] to follow them).
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), orchestrator_engine::service::ServiceError> {
    /// # let engine = orchestrator_engine::Engine::builder().in_memory().build().await?;
    /// # let workflow = orchestrator_engine::Workflow::builder("hi")
    /// #     .task(orchestrator_engine::Task::new("a", "transform").with("script", "1"))
    /// #     .build()?;
    /// let execution = engine.start(&workflow, serde_json::json!({})).await?;
    /// execution.wait().await?;
    /// let first = execution.events_page(0, 2).await?;
    /// assert_eq!(first[0].0, 0);
    /// # Ok(()) }
    /// ```
    pub async fn events_page(
        &self,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(u64, LogEvent)>, ServiceError> {
        let events = self.status().await?.events;
        Ok((0u64..)
            .zip(events)
            .skip(usize::try_from(from).unwrap_or(usize::MAX))
            .take(limit)
            .collect())
    }

    /// How it stands now: record, task states, events.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), orchestrator_engine::service::ServiceError> {
    /// # let engine = orchestrator_engine::Engine::builder().in_memory().build().await?;
    /// # let workflow = orchestrator_engine::Workflow::builder("approval")
    /// #     .task(orchestrator_engine::Task::wait("approve", "go"))
    /// #     .build()?;
    /// let execution = engine.start(&workflow, serde_json::json!({})).await?;
    /// let view = execution.status().await?;
    /// println!("live: {}, {} events", view.live, view.events.len());
    /// # Ok(()) }
    /// ```
    pub async fn status(&self) -> Result<ExecutionView, ServiceError> {
        if let Some(view) = self.running.as_ref().and_then(|r| r.last()) {
            return Ok(view);
        }
        if let Some(log) = self.running.as_ref().and_then(|r| r.live()) {
            return blocking(move || {
                Ok(ExecutionView {
                    record: log.record()?,
                    tasks: log.tasks()?,
                    events: log.events()?,
                    live: true,
                })
            })
            .await;
        }
        let (executions, id) = (self.executions.clone(), self.id.clone());
        blocking(move || executions::view(&executions, &id)).await
    }

    /// Its events numbered `from` onwards (0 is the first), then each as
    /// it is committed, until it finished: state changes, attempts,
    /// retries, signals and what its plugins emit (streamed text).
    /// Dropping the stream stops the following.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), orchestrator_engine::service::ServiceError> {
    /// # let engine = orchestrator_engine::Engine::builder().in_memory().build().await?;
    /// # let workflow = orchestrator_engine::Workflow::builder("approval")
    /// #     .task(orchestrator_engine::Task::wait("approve", "go"))
    /// #     .build()?;
    /// let execution = engine.start(&workflow, serde_json::json!({})).await?;
    /// let mut events = execution.events(0);
    /// # execution.signal("go", serde_json::json!({})).await?;
    /// while let Some(event) = events.next().await {
    ///     let (number, event) = event?;
    ///     println!("{number}: {:?}", event.kind);
    /// }
    /// # Ok(()) }
    /// ```
    pub fn events(&self, from: u64) -> EventStream {
        let (send, receive) = tokio::sync::mpsc::channel(256);
        let (executions, id) = (self.executions.clone(), self.id.clone());
        let live = self.running.as_ref().and_then(|r| r.live());
        tokio::spawn(async move {
            let mut next = from;
            if let Some(log) = live {
                // Followed through the run's own log while it runs here.
                let mut events = follow_log(&log, from);
                drop(log);
                while let Some(item) = events.recv().await {
                    let finished = matches!(
                        &item,
                        Ok((
                            _,
                            LogEvent {
                                kind: EventKind::ExecutionFinished { .. },
                                ..
                            }
                        ))
                    );
                    if let Ok((seq, _)) = &item {
                        next = seq + 1;
                    }
                    if send.send(item).await.is_err() || finished {
                        return;
                    }
                }
            }
            // Not running here, or its run let go of its log before this
            // follower read the end: read on from storage.
            let _ = tokio::task::spawn_blocking(move || {
                let wanted = || !send.is_closed();
                let followed = executions::follow(&executions, &id, next, &wanted, |seq, event| {
                    send.blocking_send(Ok((seq, event.clone()))).is_ok()
                });
                if let Err(e) = followed {
                    let _ = send.blocking_send(Err(e.to_string()));
                }
            })
            .await;
        });
        EventStream(receive)
    }
}

/// The events of one execution, in order; see [`ExecutionHandle::events`].
#[derive(Debug)]
///
/// ```no_run
/// # async fn example() -> Result<(), orchestrator_engine::service::ServiceError> {
/// # let engine = orchestrator_engine::Engine::builder().in_memory().build().await?;
/// # let workflow = orchestrator_engine::Workflow::builder("approval")
/// #     .task(orchestrator_engine::Task::wait("approve", "go"))
/// #     .build()?;
/// let execution = engine.start(&workflow, serde_json::json!({})).await?;
/// let mut events = execution.events(0);
/// if let Some(first) = events.next().await {
///     println!("{:?}", first?.1.kind);
/// }
/// # Ok(()) }
/// ```
pub struct EventStream(tokio::sync::mpsc::Receiver<Result<(u64, LogEvent), String>>);

impl EventStream {
    /// The next event and its number; `None` once the execution finished
    /// (after its `execution_finished` event).
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), orchestrator_engine::service::ServiceError> {
    /// # let engine = orchestrator_engine::Engine::builder().in_memory().build().await?;
    /// # let workflow = orchestrator_engine::Workflow::builder("approval")
    /// #     .task(orchestrator_engine::Task::wait("approve", "go"))
    /// #     .build()?;
    /// let execution = engine.start(&workflow, serde_json::json!({})).await?;
    /// let mut events = execution.events(0);
    /// while let Some(Ok((number, event))) = events.next().await {
    ///     println!("{number} at {}", event.at);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn next(&mut self) -> Option<Result<(u64, LogEvent), ServiceError>> {
        self.0
            .recv()
            .await
            .map(|event| event.map_err(ServiceError::Plugin))
    }
}
