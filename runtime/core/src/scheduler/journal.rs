//! The scheduler's one boundary to storage: a [`Journal`] makes final task
//! states durable, and a [`Cancel`] lets the outside stop a run.
//!
//! The scheduler does not know how the journal stores things. It promises to
//! hand over every final state exactly once, in an order where a task's
//! state never comes before its needs', and under `strict` durability to let
//! its dependents' effects out only after the commit holding its state has
//! returned (`effects.rs`). States that arrive while a commit is in flight
//! wait and share the next one (group commit).

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;

use tokio::sync::Notify;

use super::attempts::PendingRetry;
use super::executor::TaskFailure;
use super::report::TaskReport;

/// Where final task states go, and where waits find their signals.
pub trait Journal: Send + Sync {
    /// A task attempt is about to start (a note; need not be durable alone).
    fn attempt_started(&self, task: &str, attempt: u32, fallback: bool);

    /// `for_each` task `task` has `items` items, `finished` of them
    /// recorded before (a resumed run): a note, for progress.
    fn items_started(&self, task: &str, items: usize, finished: usize) {
        let _ = (task, items, finished);
    }

    /// An attempt failed. With `retry`, the failure and the retry are made
    /// durable before the future resolves (the scheduler waits for the
    /// retry only after that); without, it is a note written with the
    /// task's final state.
    fn attempt_failed(
        &self,
        task: &str,
        attempt: u32,
        failure: &TaskFailure,
        retry: Option<PendingRetry>,
    ) -> impl Future<Output = Result<(), String>> + Send + 'static;

    /// Makes these final states durable, all in one commit. `idle` says
    /// nothing else of the run can proceed until it returns, so the journal
    /// may block the calling thread rather than hand the work off. When
    /// not idle, the commit should start without waiting to be polled: the
    /// scheduler may run a task inline before it polls the future again.
    fn commit(
        &self,
        reports: Vec<TaskReport>,
        idle: bool,
    ) -> impl Future<Output = Result<(), String>> + Send;
}

/// What a wait got.
pub type WaitOutcome = Result<Option<Value>, String>;

/// Waiting for signals, which needs a recorded execution.
pub trait Signals {
    /// Starts task `task`'s wait for signal `signal`: records its deadline
    /// (`timeout` from now) the first time, so a resumed run keeps it, and
    /// returns it, ms since the epoch (`None`: it waits for ever).
    fn start_wait(
        &self,
        task: &str,
        signal: &str,
        timeout: Option<Duration>,
    ) -> impl Future<Output = Result<Option<u64>, String>> + Send + 'static;

    /// Waits until signal `signal` is recorded for this execution and
    /// returns its payload, or `None` once `deadline` has passed.
    fn wait(
        &self,
        signal: &str,
        deadline: Option<u64>,
    ) -> impl Future<Output = WaitOutcome> + Send + 'static;
}

impl Signals for NoJournal {
    fn start_wait(
        &self,
        _: &str,
        signal: &str,
        _: Option<Duration>,
    ) -> impl Future<Output = Result<Option<u64>, String>> + Send + 'static {
        let message = format!(
            "waiting for signal `{signal}` needs a recorded execution (`runtime run` records one)"
        );
        async move { Err(message) }
    }

    fn wait(&self, _: &str, _: Option<u64>) -> impl Future<Output = WaitOutcome> + Send + 'static {
        std::future::ready(Ok(None))
    }
}

/// A journal that keeps nothing: runs that are not recorded.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoJournal;

impl Journal for NoJournal {
    fn attempt_started(&self, _: &str, _: u32, _: bool) {}

    fn attempt_failed(
        &self,
        _: &str,
        _: u32,
        _: &TaskFailure,
        _: Option<PendingRetry>,
    ) -> impl Future<Output = Result<(), String>> + Send + 'static {
        std::future::ready(Ok(()))
    }

    async fn commit(&self, _: Vec<TaskReport>, _: bool) -> Result<(), String> {
        Ok(())
    }
}

/// Stops a run: no new task starts, and running ones are interrupted (the
/// sandbox checks [`Cancel::is_cancelled`] at every epoch tick).
#[derive(Debug, Default)]
pub struct Cancel {
    flag: AtomicBool,
    notify: Notify,
}

impl Cancel {
    /// Asks the run to stop.
    pub fn cancel(&self) {
        self.flag.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// Whether the run was asked to stop.
    pub fn is_cancelled(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }

    /// Resolves once the run is asked to stop.
    pub async fn cancelled(&self) {
        loop {
            let notified = self.notify.notified();
            if self.is_cancelled() {
                return;
            }
            notified.await;
        }
    }
}
