//! Task slots shared fairly between tenants. A freed slot goes to the next
//! tenant in turn that has a call waiting, not to whichever call waited
//! longest, so one tenant's ten thousand queued `for_each` items delay
//! another tenant's single task by at most one slot's turn. A tenant may
//! also be held to at most `per_tenant` slots at once; its calls past that
//! wait while other tenants' calls take the free slots.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use orchestrator_core::tenant::TenantId;

/// `total` slots, handed out in turns between tenants.
#[derive(Debug)]
pub struct FairSlots {
    total: usize,
    /// The most one tenant holds at once.
    per_tenant: usize,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Slots nobody holds. While any are free, every tenant with calls
    /// waiting holds `per_tenant` slots.
    free: usize,
    /// Waiting calls by tenant, first come first.
    waiting: HashMap<TenantId, VecDeque<oneshot::Sender<()>>>,
    /// Tenants with waiting calls, in the order their turns come.
    turns: VecDeque<TenantId>,
    /// Slots each tenant holds.
    held: HashMap<TenantId, usize>,
}

impl State {
    fn held_by(&self, tenant: &TenantId) -> usize {
        self.held.get(tenant).copied().unwrap_or(0)
    }

    fn take(&mut self, tenant: &TenantId) {
        *self.held.entry(tenant.clone()).or_default() += 1;
    }

    fn give_back(&mut self, tenant: &TenantId) {
        if let Some(held) = self.held.get_mut(tenant) {
            *held -= 1;
            if *held == 0 {
                self.held.remove(tenant);
            }
        }
    }
}

/// A held slot; dropping it hands the slot on.
#[derive(Debug)]
pub struct FairSlot {
    slots: Arc<FairSlots>,
    tenant: TenantId,
}

impl Drop for FairSlot {
    fn drop(&mut self) {
        self.slots.release(&self.tenant);
    }
}

impl FairSlots {
    /// `total` slots, at most `per_tenant` of them held by one tenant.
    pub fn new(total: usize, per_tenant: usize) -> Self {
        Self {
            total,
            per_tenant: per_tenant.max(1),
            state: Mutex::new(State {
                free: total,
                ..State::default()
            }),
        }
    }

    /// Slots held now.
    pub fn held(&self) -> usize {
        self.total - self.state.lock().expect("slots lock").free
    }

    /// Slots `tenant` holds now, and its calls waiting for one.
    pub fn load_of(&self, tenant: &TenantId) -> (usize, usize) {
        let state = self.state.lock().expect("slots lock");
        let waiting = state.waiting.get(tenant).map_or(0, VecDeque::len);
        (state.held_by(tenant), waiting)
    }

    /// Waits for a slot for a call of `tenant`.
    pub async fn acquire(self: &Arc<Self>, tenant: &TenantId) -> FairSlot {
        let receiver = {
            let mut state = self.state.lock().expect("slots lock");
            // Free slots exist only while every tenant waiting is at its
            // cap, so a call under its own cap may take one.
            if state.free > 0 && state.held_by(tenant) < self.per_tenant {
                state.free -= 1;
                state.take(tenant);
                return FairSlot {
                    slots: Arc::clone(self),
                    tenant: tenant.clone(),
                };
            }
            let (sender, receiver) = oneshot::channel();
            let queue = state.waiting.entry(tenant.clone()).or_default();
            queue.push_back(sender);
            if queue.len() == 1 {
                state.turns.push_back(tenant.clone());
            }
            receiver
        };
        let mut wait = Wait {
            slots: Arc::clone(self),
            tenant: tenant.clone(),
            receiver: Some(receiver),
        };
        let granted = wait.receiver.as_mut().expect("set above").await.is_ok();
        wait.receiver = None;
        // A sender is only dropped unsent when its receiver was closed.
        debug_assert!(granted);
        FairSlot {
            slots: Arc::clone(self),
            tenant: tenant.clone(),
        }
    }

    /// Takes back the slot `holder` held and hands it to the next tenant in
    /// turn that is under its cap, or keeps it free.
    fn release(&self, holder: &TenantId) {
        let mut state = self.state.lock().expect("slots lock");
        state.give_back(holder);
        // Each tenant in turn is looked at once: those at their cap keep
        // their place and are passed over.
        let mut passes = state.turns.len();
        while passes > 0 {
            passes -= 1;
            let Some(tenant) = state.turns.pop_front() else {
                break;
            };
            if state.held_by(&tenant) >= self.per_tenant {
                state.turns.push_back(tenant);
                continue;
            }
            let queue = state
                .waiting
                .get_mut(&tenant)
                .expect("a tenant in turn waits");
            let next = queue.pop_front();
            if queue.is_empty() {
                state.waiting.remove(&tenant);
            } else {
                state.turns.push_back(tenant.clone());
                // Its next call may be looked at again in this release.
                passes += 1;
            }
            // A waiter that gave up (its task was cancelled) is skipped.
            if let Some(next) = next
                && next.send(()).is_ok()
            {
                state.take(&tenant);
                return;
            }
        }
        state.free += 1;
    }
}

/// A call waiting for a slot. Dropped before its grant was taken (the
/// task was cancelled while it waited), a slot granted meanwhile is handed
/// on.
struct Wait {
    slots: Arc<FairSlots>,
    tenant: TenantId,
    receiver: Option<oneshot::Receiver<()>>,
}

impl Drop for Wait {
    fn drop(&mut self) {
        if let Some(mut receiver) = self.receiver.take() {
            receiver.close();
            if receiver.try_recv().is_ok() {
                self.slots.release(&self.tenant);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(id: &str) -> TenantId {
        TenantId::new(id).expect("a tenant id")
    }

    #[tokio::test]
    async fn a_freed_slot_goes_to_the_next_tenant_in_turn() {
        let slots = Arc::new(FairSlots::new(1, 1));
        let held = slots.acquire(&tenant("big")).await;
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiting = Vec::new();
        // `big` queues five calls, then `small` one.
        for (who, n) in [
            ("big", 0),
            ("big", 1),
            ("big", 2),
            ("big", 3),
            ("big", 4),
            ("small", 0),
        ] {
            let (shared, order) = (Arc::clone(&slots), Arc::clone(&order));
            waiting.push(tokio::spawn(async move {
                let slot = shared.acquire(&tenant(who)).await;
                order.lock().expect("order lock").push(format!("{who}{n}"));
                drop(slot);
            }));
            // Queued in this order.
            while slots
                .state
                .lock()
                .expect("lock")
                .waiting
                .values()
                .map(VecDeque::len)
                .sum::<usize>()
                < waiting.len()
            {
                tokio::task::yield_now().await;
            }
        }
        drop(held);
        for task in waiting {
            task.await.expect("joins");
        }
        let order = order.lock().expect("order lock").clone();
        assert_eq!(order[..2], ["big0", "small0"], "{order:?}");
        assert_eq!(slots.held(), 0);
    }

    #[tokio::test]
    async fn a_waiter_that_gives_up_loses_no_slot() {
        let slots = Arc::new(FairSlots::new(1, 1));
        let held = slots.acquire(&tenant("a")).await;
        let gave_up = tokio::spawn({
            let slots = Arc::clone(&slots);
            async move { drop(slots.acquire(&tenant("b")).await) }
        });
        while slots.state.lock().expect("lock").turns.is_empty() {
            tokio::task::yield_now().await;
        }
        gave_up.abort();
        let _ = gave_up.await;
        drop(held);
        // The slot is free again: taken at once.
        let again = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            slots.acquire(&tenant("c")),
        )
        .await
        .expect("the slot was not lost");
        drop(again);
        assert_eq!(slots.held(), 0);
    }
}
