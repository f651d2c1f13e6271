//! How much work one process takes on at once, across every execution it
//! runs: at most `tasks` plugin calls in flight (more wait for a slot, so a
//! burst of `for_each` items or of tenants cannot exhaust the sandbox's
//! instance pool or memory; freed slots go to tenants in turn, see
//! [`crate::fair`]), at most `runs` executions running, and at most
//! `queued_runs` waiting for one of those; past that, a new execution is
//! refused with [`Busy`] instead of queueing without bound. `per_tenant`
//! holds each tenant to a share of these: its executions first wait for a
//! run slot of their tenant (at most `per_tenant.queued_runs` of them),
//! then for one of the process (counted in `queued_runs`).
//!
//! A workflow's own `concurrency` still applies inside these limits.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::fair::{FairSlot, FairSlots};
use orchestrator_core::tenant::TenantId;

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
    /// What one tenant may take of these at once.
    pub per_tenant: TenantLimits,
}

/// One tenant's share of the process (`capacity.per_tenant`); a limit left
/// out is the process's own.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantLimits {
    /// Plugin calls of the tenant running at once.
    pub tasks: Option<usize>,
    /// Executions of the tenant running at once.
    pub runs: Option<usize>,
    /// Executions of the tenant waiting to start.
    pub queued_runs: Option<usize>,
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
            per_tenant: TenantLimits::default(),
        }
    }
}

impl CapacityLimits {
    /// Checks the limits make sense; the message names the field.
    pub fn check(&self) -> Result<(), String> {
        let per_tenant = &self.per_tenant;
        for (name, value) in [
            ("tasks", Some(self.tasks)),
            ("runs", Some(self.runs)),
            ("per_tenant.tasks", per_tenant.tasks),
            ("per_tenant.runs", per_tenant.runs),
        ] {
            if value == Some(0) {
                return Err(format!("`capacity.{name}` must be at least 1"));
            }
        }
        if self.tasks > Semaphore::MAX_PERMITS || self.runs > Semaphore::MAX_PERMITS {
            return Err("`capacity` limits must be below 2^61".to_owned());
        }
        Ok(())
    }

    /// What one tenant may take: the `per_tenant` limits, each at most the
    /// process's own.
    fn tenant(&self) -> (usize, usize, usize) {
        let per_tenant = &self.per_tenant;
        (
            per_tenant.tasks.unwrap_or(self.tasks).min(self.tasks),
            per_tenant.runs.unwrap_or(self.runs).min(self.runs),
            per_tenant.queued_runs.unwrap_or(self.queued_runs),
        )
    }
}

/// A new execution was refused: too many are running and waiting already,
/// in the process or for its tenant.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "{who} busy: {running} executions running ({limit}runs: {runs}) and {queued} waiting ({limit}queued_runs: {queued_runs}); try again later, or raise the limits under `capacity:` in the configuration file"
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
    /// Set when the tenant's own limits were reached, not the process's.
    pub tenant: Option<TenantId>,
    /// `the runtime is` or `tenant `x` is`.
    who: String,
    /// `capacity.` or `capacity.per_tenant.`.
    limit: &'static str,
}

impl Busy {
    fn new(
        running: usize,
        queued: usize,
        (runs, queued_runs): (usize, usize),
        tenant: Option<&TenantId>,
    ) -> Self {
        Self {
            running,
            queued,
            runs,
            queued_runs,
            who: tenant.map_or_else(
                || "the runtime is".to_owned(),
                |t| format!("tenant `{t}` is"),
            ),
            limit: if tenant.is_some() {
                "capacity.per_tenant."
            } else {
                "capacity."
            },
            tenant: tenant.cloned(),
        }
    }
}

/// The slots of one process.
#[derive(Debug)]
pub struct Capacity {
    limits: CapacityLimits,
    tasks: Arc<FairSlots>,
    runs: Arc<Semaphore>,
    queued: AtomicUsize,
    /// Each tenant's run slots and how many of its executions wait.
    tenants: Mutex<HashMap<TenantId, TenantRuns>>,
    /// Set when the process is stopping: no new plugin call starts.
    draining: AtomicBool,
    /// Told how long each plugin call waited for its slot.
    waits: OnceLock<Arc<dyn SlotWaits>>,
}

/// What is told how long each plugin call waited for its task slot (the
/// engine's metrics).
pub trait SlotWaits: Send + Sync + std::fmt::Debug {
    /// A call of `tenant` got its slot after `waited`.
    fn waited(&self, tenant: &TenantId, waited: Duration);
}

#[derive(Debug)]
struct TenantRuns {
    slots: Arc<Semaphore>,
    queued: usize,
}

/// A running execution's slots (its tenant's and the process's); dropping
/// it lets a waiting one start.
#[derive(Debug)]
pub struct RunSlot {
    #[allow(dead_code, reason = "held for its Drop")]
    tenant: Option<OwnedSemaphorePermit>,
    #[allow(dead_code, reason = "held for its Drop")]
    process: OwnedSemaphorePermit,
}

/// A running plugin call's slot.
#[derive(Debug)]
pub struct TaskSlot(#[allow(dead_code, reason = "held for its Drop")] FairSlot);

impl Capacity {
    /// Slots for `limits` (checked by [`CapacityLimits::check`]).
    pub fn new(limits: CapacityLimits) -> Self {
        Self {
            limits,
            tasks: Arc::new(FairSlots::new(limits.tasks, limits.tenant().0)),
            runs: Arc::new(Semaphore::new(limits.runs)),
            queued: AtomicUsize::new(0),
            tenants: Mutex::default(),
            draining: AtomicBool::new(false),
            waits: OnceLock::new(),
        }
    }

    /// Tells `waits` how long each plugin call waits for its slot from now
    /// on; the first one given is kept.
    pub fn report_waits(&self, waits: Arc<dyn SlotWaits>) {
        let _ = self.waits.set(waits);
    }

    /// `tenant`'s plugin calls running now, and those waiting for a slot.
    pub fn tasks_of(&self, tenant: &TenantId) -> (usize, usize) {
        self.tasks.load_of(tenant)
    }

    /// The limits.
    pub fn limits(&self) -> CapacityLimits {
        self.limits
    }

    /// Waits for a slot for a plugin call of `tenant`; while calls wait,
    /// freed slots go to the tenants waiting in turn, each held to its
    /// `per_tenant.tasks`.
    /// Once the process drains ([`Capacity::drain`]), no slot is given:
    /// the call waits until the process ends, and runs after it resumes.
    pub async fn task_slot(&self, tenant: &TenantId) -> TaskSlot {
        if !self.draining() {
            let waits = self.waits.get().map(|waits| (waits, Instant::now()));
            let slot = TaskSlot(self.tasks.acquire(tenant).await);
            if let Some((waits, asked)) = waits {
                waits.waited(tenant, asked.elapsed());
            }
            if !self.draining() {
                return slot;
            }
        }
        std::future::pending().await
    }

    /// Stops giving task slots: the calls running finish, no other starts.
    /// For a process that is stopping and leaves the rest to its next start.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Whether [`Capacity::drain`] was called.
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// Plugin calls running now.
    pub fn tasks_running(&self) -> usize {
        self.tasks.held()
    }

    /// Slots for a new execution of `tenant`: first its tenant's (when
    /// `per_tenant.runs` is set), then the process's; at once if free,
    /// after a wait if fewer than `queued_runs` wait already, [`Busy`]
    /// otherwise (naming whose limit).
    pub async fn admit_run(&self, tenant: &TenantId) -> Result<RunSlot, Busy> {
        let tenant_slot = match self.limits.per_tenant.runs {
            Some(_) => Some(self.admit_tenant(tenant).await?),
            None => None,
        };
        let process = self.admit_process().await?;
        Ok(RunSlot {
            tenant: tenant_slot,
            process,
        })
    }

    async fn admit_tenant(&self, tenant: &TenantId) -> Result<OwnedSemaphorePermit, Busy> {
        let (_, runs, queued_runs) = self.limits.tenant();
        let slots = {
            let mut tenants = self.tenants.lock().expect("tenants lock");
            let entry = tenants.entry(tenant.clone()).or_insert_with(|| TenantRuns {
                slots: Arc::new(Semaphore::new(runs)),
                queued: 0,
            });
            if let Ok(permit) = Arc::clone(&entry.slots).try_acquire_owned() {
                return Ok(permit);
            }
            if entry.queued >= queued_runs {
                let running = runs - entry.slots.available_permits();
                return Err(Busy::new(
                    running,
                    entry.queued,
                    (runs, queued_runs),
                    Some(tenant),
                ));
            }
            entry.queued += 1;
            Arc::clone(&entry.slots)
        };
        let leave = TenantWaiting {
            capacity: self,
            tenant,
        };
        let permit = slots
            .acquire_owned()
            .await
            .expect("a tenant's run semaphore is never closed");
        drop(leave);
        Ok(permit)
    }

    async fn admit_process(&self) -> Result<OwnedSemaphorePermit, Busy> {
        if let Ok(permit) = Arc::clone(&self.runs).try_acquire_owned() {
            return Ok(permit);
        }
        let queued = self.queued.fetch_add(1, Ordering::SeqCst);
        let waiting = Waiting(&self.queued);
        if queued >= self.limits.queued_runs {
            drop(waiting);
            return Err(Busy::new(
                self.runs_running(),
                queued,
                (self.limits.runs, self.limits.queued_runs),
                None,
            ));
        }
        let permit = Arc::clone(&self.runs)
            .acquire_owned()
            .await
            .expect("the run semaphore is never closed");
        drop(waiting);
        Ok(permit)
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

/// Counts one waiting execution of a tenant until dropped.
struct TenantWaiting<'a> {
    capacity: &'a Capacity,
    tenant: &'a TenantId,
}

impl Drop for TenantWaiting<'_> {
    fn drop(&mut self) {
        let mut tenants = self.capacity.tenants.lock().expect("tenants lock");
        if let Some(entry) = tenants.get_mut(self.tenant) {
            entry.queued -= 1;
        }
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
            per_tenant: TenantLimits::default(),
        }));
        let tenant = TenantId::default();
        let first = capacity.admit_run(&tenant).await.expect("a free slot");
        let waiting = tokio::spawn({
            let capacity = Arc::clone(&capacity);
            async move { capacity.admit_run(&TenantId::default()).await.map(|_| ()) }
        });
        while capacity.runs_queued() == 0 {
            tokio::task::yield_now().await;
        }
        let busy = capacity
            .admit_run(&tenant)
            .await
            .expect_err("the queue is full");
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

    #[tokio::test]
    async fn a_draining_process_starts_no_call_and_lets_running_ones_finish() {
        let capacity = Arc::new(Capacity::new(CapacityLimits::default()));
        let tenant = TenantId::default();
        let running = capacity.task_slot(&tenant).await;
        capacity.drain();
        assert!(capacity.draining());
        assert_eq!(
            capacity.tasks_running(),
            1,
            "the running call keeps its slot"
        );
        let next = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            capacity.task_slot(&tenant),
        )
        .await;
        assert!(next.is_err(), "a new call got a slot while draining");
        drop(running);
        assert_eq!(capacity.tasks_running(), 0);
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
