//! What an engine tells its [`Metrics`] when they are read: the gauges
//! that say how things stand now rather than count what happened.

use std::sync::Arc;

use super::engine::Engine;
use crate::metrics::Metrics;
use orchestrator_core::fault::BreakerState;

impl Engine {
    /// The metrics its runs are counted in, if it was given any
    /// ([`super::EngineBuilder::metrics`]).
    pub fn metrics(&self) -> Option<&Arc<Metrics>> {
        self.metrics.as_ref()
    }

    /// Sets the gauges of its metrics to how things stand now: the
    /// process's task and run slots, this tenant's parked runs, its open
    /// dead letters and its breakers by state. Reads the store: call it off the async threads.
    pub fn refresh_metrics(&self) {
        let Some(metrics) = &self.metrics else {
            return;
        };
        let capacity = self.sandbox.capacity();
        metrics.set_load(
            capacity.tasks_running(),
            capacity.runs_running(),
            capacity.runs_queued(),
        );
        metrics.set_tenant_tasks(&self.tenant, capacity.tasks_of(&self.tenant));
        metrics.set_parked(&self.tenant, self.parked.len());
        match self.executions.open_dead_letters() {
            Ok(open) => metrics.set_dead_letters(&self.tenant, open),
            Err(e) => tracing::warn!(tenant = %self.tenant, "cannot count dead letters: {e}"),
        }
        let breakers = self
            .store()
            .ok()
            .and_then(|store| store.breakers(self.tenant.as_str()).ok());
        if let Some(breakers) = breakers {
            let mut counts = [0; 3];
            for breaker in breakers.values() {
                let i = match breaker.state {
                    BreakerState::Closed => 0,
                    BreakerState::Open { .. } => 1,
                    BreakerState::HalfOpen { .. } => 2,
                };
                counts[i] += 1;
            }
            metrics.set_breakers(&self.tenant, counts);
        }
    }
}
