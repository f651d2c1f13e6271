//! A journal that tells [`Metrics`] and traces what passes through it: the
//! same journal, each commit a span and its duration (from the call to
//! its end) observed, each failed attempt counted by plugin and kind.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::Instrument;

use super::Metrics;
use orchestrator_core::scheduler::{
    Journal, PendingRetry, Signals, TaskFailure, TaskRef, TaskReport, WaitOutcome,
};
use orchestrator_core::tenant::TenantId;
use orchestrator_core::workflow::Plan;

/// `J`, its commits timed and its failed attempts counted into `metrics`.
#[derive(Debug, Clone)]
pub struct TimedJournal<J> {
    inner: J,
    metrics: Option<Arc<Metrics>>,
    tenant: TenantId,
    /// Each task's plugin, as the workflow names it.
    plugins: Arc<HashMap<String, String>>,
}

impl<J> TimedJournal<J> {
    /// `inner`, for a run of `plan` by `tenant`, told into `metrics` when
    /// there are any.
    pub fn new(inner: J, metrics: Option<Arc<Metrics>>, tenant: &TenantId, plan: &Plan) -> Self {
        let plugins = match metrics {
            Some(_) => plan
                .tasks
                .iter()
                .map(|t| (t.id.clone(), t.uses.clone()))
                .collect(),
            None => HashMap::new(),
        };
        Self {
            inner,
            metrics,
            tenant: tenant.clone(),
            plugins: Arc::new(plugins),
        }
    }
}

impl<J: Journal> Journal for TimedJournal<J> {
    fn attempt_started(&self, task: &str, attempt: u32, fallback: bool) {
        self.inner.attempt_started(task, attempt, fallback);
    }

    fn items_started(&self, task: &str, items: usize, finished: usize) {
        self.inner.items_started(task, items, finished);
    }

    fn attempt_failed(
        &self,
        task: &str,
        attempt: u32,
        failure: &TaskFailure,
        retry: Option<PendingRetry>,
    ) -> impl Future<Output = Result<(), String>> + Send + 'static {
        if let Some(metrics) = &self.metrics {
            let uses = self
                .plugins
                .get(TaskRef::parse(task).task())
                .map_or("", String::as_str);
            metrics.attempt_failed(&self.tenant, uses, failure.kind);
        }
        self.inner.attempt_failed(task, attempt, failure, retry)
    }

    fn commit(
        &self,
        reports: Vec<TaskReport>,
        idle: bool,
    ) -> impl Future<Output = Result<(), String>> + Send {
        let started = Instant::now();
        let span = tracing::debug_span!("commit", states = reports.len());
        // Called now: the commit starts before the future is polled.
        let committing = span.in_scope(|| self.inner.commit(reports, idle));
        let metrics = self.metrics.clone();
        async move {
            let committed = committing.await;
            if let Some(metrics) = metrics {
                metrics.commit(started.elapsed());
            }
            committed
        }
        .instrument(span)
    }
}

impl<J: Signals> Signals for TimedJournal<J> {
    fn start_wait(
        &self,
        task: &str,
        signal: &str,
        timeout: Option<Duration>,
    ) -> impl Future<Output = Result<Option<u64>, String>> + Send + 'static {
        self.inner.start_wait(task, signal, timeout)
    }

    fn wait(
        &self,
        signal: &str,
        deadline: Option<u64>,
    ) -> impl Future<Output = WaitOutcome> + Send + 'static {
        self.inner.wait(signal, deadline)
    }
}
