//! How much work one process takes on at once, across every execution it
//! runs: at most `tasks` plugin calls in flight (more wait for a slot, so a
//! burst of `for_each` items or of tenants cannot exhaust the sandbox's
//! instance pool or memory), at most `runs` executions running, and at most
//! `queued_runs` waiting for one of those; past that, a new execution is
//! refused with [`Busy`] instead of queueing without bound.
//!
//! A workflow's own `concurrency` still applies inside these limits.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The limits, as the configuration file's `capacity:` gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CapacityLimits {
    /// Plugin calls running at once.
    pub tasks: usize,
    /// Executions running at once.
    pub runs: usize,
    /// Executions waiting to start; one more is refused as busy.
    pub queued_runs: usize,
}

impl Default for CapacityLimits {
    /// 256 calls keep well inside the sandbox's pool of 1000 core instances
    /// (a Rust component takes about 3); executions mostly wait on their
    /// calls, so 64 running and 256 waiting are cheap.
    fn default() -> Self {
        Self {
            tasks: 256,
            runs: 64,
            queued_runs: 256,
        }
    }
}

impl CapacityLimits {
    /// Checks the limits make sense; the message names the field.
    pub fn check(&self) -> Result<(), String> {
        for (name, value) in [("tasks", self.tasks), ("runs", self.runs)] {
            if value == 0 {
                return Err(format!("`capacity.{name}` must be at least 1"));
            }
        }
        if self.tasks > Semaphore::MAX_PERMITS || self.runs > Semaphore::MAX_PERMITS {
            return Err("`capacity` limits must be below 2^61".to_owned());
        }
        Ok(())
    }
}

/// A new execution was refused: too many are running and waiting already.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "the runtime is busy: {running} executions running (capacity.runs: {runs}) and {queued} waiting (capacity.queued_runs: {queued_runs}); try again later, or raise the limits under `capacity:` in the configuration file"
)]
pub struct Busy {
    /// Executions running.
    pub running: usize,
    /// Executions waiting.
    pub queued: usize,
    /// The limit on running executions.
    pub runs: usize,
    /// The limit on waiting executions.
    pub queued_runs: usize,
}

/// The slots of one process.
#[derive(Debug)]
pub struct Capacity {
    limits: CapacityLimits,
    tasks: Arc<Semaphore>,
    runs: Arc<Semaphore>,
    queued: AtomicUsize,
}

/// A running execution's slot; dropping it lets a waiting one start.
#[derive(Debug)]
pub struct RunSlot(#[allow(dead_code, reason = "held for its Drop")] OwnedSemaphorePermit);

/// A running plugin call's slot.
#[derive(Debug)]
pub struct TaskSlot(#[allow(dead_code, reason = "held for its Drop")] OwnedSemaphorePermit);

impl Capacity {
    /// Slots for `limits` (checked by [`CapacityLimits::check`]).
    pub fn new(limits: CapacityLimits) -> Self {
        Self {
            limits,
            tasks: Arc::new(Semaphore::new(limits.tasks)),
            runs: Arc::new(Semaphore::new(limits.runs)),
            queued: AtomicUsize::new(0),
        }
    }

    /// The limits.
    pub fn limits(&self) -> CapacityLimits {
        self.limits
    }

    /// Waits for a plugin call's slot.
    pub async fn task_slot(&self) -> TaskSlot {
        let permit = Arc::clone(&self.tasks)
            .acquire_owned()
            .await
            .expect("the task semaphore is never closed");
        TaskSlot(permit)
    }

    /// Plugin calls running now.
    pub fn tasks_running(&self) -> usize {
        self.limits.tasks - self.tasks.available_permits()
    }

    /// A slot for a new execution: at once if one is free, after a wait if
    /// fewer than `queued_runs` are waiting already, [`Busy`] otherwise.
    pub async fn admit_run(&self) -> Result<RunSlot, Busy> {
        if let Ok(permit) = Arc::clone(&self.runs).try_acquire_owned() {
            return Ok(RunSlot(permit));
        }
        let queued = self.queued.fetch_add(1, Ordering::SeqCst);
        let waiting = Waiting(&self.queued);
        if queued >= self.limits.queued_runs {
            drop(waiting);
            return Err(Busy {
                running: self.runs_running(),
                queued,
                runs: self.limits.runs,
                queued_runs: self.limits.queued_runs,
            });
        }
        let permit = Arc::clone(&self.runs)
            .acquire_owned()
            .await
            .expect("the run semaphore is never closed");
        drop(waiting);
        Ok(RunSlot(permit))
    }

    /// Executions running now.
    pub fn runs_running(&self) -> usize {
        self.limits.runs - self.runs.available_permits()
    }

    /// Executions waiting to start now.
    pub fn runs_queued(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }
}

/// Counts one waiting execution until dropped (also when its wait is
/// cancelled).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_past_the_queue_are_busy_and_a_freed_slot_admits_the_next() {
        let capacity = Arc::new(Capacity::new(CapacityLimits {
            tasks: 1,
            runs: 1,
            queued_runs: 1,
        }));
        let first = capacity.admit_run().await.expect("a free slot");
        let waiting = tokio::spawn({
            let capacity = Arc::clone(&capacity);
            async move { capacity.admit_run().await.map(|_| ()) }
        });
        while capacity.runs_queued() == 0 {
            tokio::task::yield_now().await;
        }
        let busy = capacity.admit_run().await.expect_err("the queue is full");
        assert_eq!((busy.running, busy.queued), (1, 1));
        assert!(
            busy.to_string().contains("capacity.queued_runs: 1"),
            "{busy}"
        );
        assert_eq!(capacity.runs_queued(), 1, "the refused run left the queue");
        drop(first);
        waiting
            .await
            .expect("joins")
            .expect("admitted once a slot freed");
        assert_eq!(capacity.runs_queued(), 0);
    }

    #[test]
    fn zero_slots_are_refused() {
        let limits = CapacityLimits {
            tasks: 0,
            ..CapacityLimits::default()
        };
        assert_eq!(
            limits.check().unwrap_err(),
            "`capacity.tasks` must be at least 1"
        );
    }
}
