//! What the engine counts for Prometheus: executions, tasks and attempts,
//! their time, fuel and memory, model tokens and cost, cache hits, store
//! commits, the wait of plugin calls for task slots, and (set when
//! scraped) the load of the process and of each tenant, parked runs,
//! open dead letters and breaker states. One [`Metrics`] is shared by the engines of every
//! tenant of a process; [`Metrics::render`] writes the text a scrape gets.
//!
//! Labels are bounded ([`labels::Bounded`]): no execution or task id is a
//! label, and tenants, plugins, models and providers past their bound share
//! `other`.

mod labels;
mod timed_journal;

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use orchestrator_core::fault::FailureKind;
use orchestrator_core::scheduler::{RunStatus, TaskReport};
use orchestrator_core::tenant::TenantId;

pub use labels::OTHER;
pub use timed_journal::TimedJournal;

/// The content type of [`Metrics::render`]'s text (OpenMetrics, which
/// Prometheus asks for and reads).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Distinct tenants, plugins and models each label keeps apart.
const MAX_TENANTS: usize = 1000;
const MAX_PLUGINS: usize = 200;
const MAX_MODELS: usize = 100;
const MAX_PROVIDERS: usize = 20;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TenantLabels {
    tenant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    tenant: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PluginLabels {
    tenant: String,
    plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabels {
    tenant: String,
    plugin: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    tenant: String,
    plugin: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabels {
    tenant: String,
    model: String,
    provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    tenant: String,
    model: String,
    provider: String,
    direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    tenant: String,
    state: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn seconds() -> Histogram {
    // 1 ms to ~9 min.
    Histogram::new(exponential_buckets(0.001, 2.0, 20))
}

fn fuel() -> Histogram {
    // 10 k to ~10 G instructions' worth.
    Histogram::new(exponential_buckets(10_000.0, 4.0, 11))
}

fn bytes() -> Histogram {
    // 64 KiB to 4 GiB.
    Histogram::new(exponential_buckets(65_536.0, 2.0, 17))
}

/// The process's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    executions_started: Family<TenantLabels, Counter>,
    executions_finished: Family<OutcomeLabels, Counter>,
    tasks: Family<TaskLabels, Counter>,
    attempts: Family<PluginLabels, Counter>,
    attempts_failed: Family<FailureLabels, Counter>,
    task_duration: Histograms<PluginLabels>,
    task_fuel: Histograms<PluginLabels>,
    task_memory: Histograms<PluginLabels>,
    tokens: Family<TokenLabels, Counter>,
    cost: Family<ModelLabels, Counter<f64, AtomicU64>>,
    cache_hits: Family<PluginLabels, Counter>,
    commit_duration: Histogram,
    slot_wait: Histograms<TenantLabels>,
    tenant_tasks: Family<TenantLabels, Gauge>,
    tenant_queued: Family<TenantLabels, Gauge>,
    tasks_running: Gauge,
    runs_running: Gauge,
    runs_queued: Gauge,
    parked: Family<TenantLabels, Gauge>,
    dead_letters: Family<TenantLabels, Gauge>,
    breakers: Family<StateLabels, Gauge>,
    tenants: labels::Bounded,
    plugins: labels::Bounded,
    models: labels::Bounded,
    providers: labels::Bounded,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every metric at zero, registered under the prefix `orchestrator`.
    pub fn new() -> Self {
        let mut m = Self {
            registry: Registry::with_prefix("orchestrator"),
            executions_started: Family::default(),
            executions_finished: Family::default(),
            tasks: Family::default(),
            attempts: Family::default(),
            attempts_failed: Family::default(),
            task_duration: Family::new_with_constructor(seconds),
            task_fuel: Family::new_with_constructor(fuel),
            task_memory: Family::new_with_constructor(bytes),
            tokens: Family::default(),
            cost: Family::default(),
            cache_hits: Family::default(),
            commit_duration: seconds(),
            slot_wait: Family::new_with_constructor(seconds),
            tenant_tasks: Family::default(),
            tenant_queued: Family::default(),
            tasks_running: Gauge::default(),
            runs_running: Gauge::default(),
            runs_queued: Gauge::default(),
            parked: Family::default(),
            dead_letters: Family::default(),
            breakers: Family::default(),
            tenants: labels::Bounded::new(MAX_TENANTS),
            plugins: labels::Bounded::new(MAX_PLUGINS),
            models: labels::Bounded::new(MAX_MODELS),
            providers: labels::Bounded::new(MAX_PROVIDERS),
        };
        let r = &mut m.registry;
        r.register(
            "executions_started",
            "Executions started (a resumed or woken one is not counted again)",
            m.executions_started.clone(),
        );
        r.register(
            "executions_finished",
            "Executions that reached their end, by outcome (succeeded, failed, cancelled)",
            m.executions_finished.clone(),
        );
        r.register(
            "tasks",
            "Tasks that reached their final state, by plugin and status",
            m.tasks.clone(),
        );
        r.register(
            "task_attempts",
            "Attempts tasks took, fallbacks included, by plugin",
            m.attempts.clone(),
        );
        r.register(
            "task_attempts_failed",
            "Attempts that failed, by plugin and kind of failure (retried or not)",
            m.attempts_failed.clone(),
        );
        r.register_with_unit(
            "task_duration",
            "Time a task's attempts ran, instantiation included",
            Unit::Seconds,
            m.task_duration.clone(),
        );
        r.register(
            "task_fuel",
            "Fuel a task's attempts burned",
            m.task_fuel.clone(),
        );
        r.register_with_unit(
            "task_peak_memory",
            "Largest linear memory a task's attempt reached",
            Unit::Bytes,
            m.task_memory.clone(),
        );
        r.register(
            "model_tokens",
            "Model tokens by model and direction (input, output); cached answers not counted",
            m.tokens.clone(),
        );
        r.register(
            "model_cost_usd",
            "What model calls cost in US dollars, by the host's price table",
            m.cost.clone(),
        );
        r.register(
            "response_cache_hits",
            "Tasks answered from the response cache",
            m.cache_hits.clone(),
        );
        r.register_with_unit(
            "store_commit_duration",
            "Time a commit of task states to an execution's file took",
            Unit::Seconds,
            m.commit_duration.clone(),
        );
        r.register_with_unit(
            "task_slot_wait",
            "Time a plugin call waited for a task slot (queued behind other calls)",
            Unit::Seconds,
            m.slot_wait.clone(),
        );
        r.register(
            "tenant_tasks_running",
            "A tenant's plugin calls holding a task slot, now",
            m.tenant_tasks.clone(),
        );
        r.register(
            "tenant_tasks_queued",
            "A tenant's plugin calls waiting for a task slot, now",
            m.tenant_queued.clone(),
        );
        r.register(
            "tasks_running",
            "Task slots held by running attempts, now",
            m.tasks_running.clone(),
        );
        r.register(
            "runs_running",
            "Executions holding a run slot, now",
            m.runs_running.clone(),
        );
        r.register(
            "runs_queued",
            "Executions waiting for a run slot, now",
            m.runs_queued.clone(),
        );
        r.register(
            "executions_parked",
            "Executions parked until a signal or a deadline, now",
            m.parked.clone(),
        );
        r.register(
            "dead_letters",
            "Dead letters open (not replayed or purged), now",
            m.dead_letters.clone(),
        );
        r.register(
            "breakers",
            "Circuit breakers by state (closed, open, half_open), now",
            m.breakers.clone(),
        );
        m
    }

    fn tenant(&self, tenant: &TenantId) -> String {
        self.tenants.value(tenant.as_str())
    }

    /// An execution started for the first time.
    pub fn execution_started(&self, tenant: &TenantId) {
        let tenant = self.tenant(tenant);
        self.executions_started
            .get_or_create(&TenantLabels { tenant })
            .inc();
    }

    /// An execution reached its end.
    pub fn execution_finished(&self, tenant: &TenantId, status: RunStatus) {
        let outcome = match status {
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        };
        self.executions_finished
            .get_or_create(&OutcomeLabels {
                tenant: self.tenant(tenant),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// A task reached its final state.
    pub fn task_finished(&self, tenant: &TenantId, report: &TaskReport) {
        let tenant = self.tenant(tenant);
        let plugin = self.plugins.value(labels::plugin(&report.uses));
        self.tasks
            .get_or_create(&TaskLabels {
                tenant: tenant.clone(),
                plugin: plugin.clone(),
                status: report.status.as_str().to_owned(),
            })
            .inc();
        if report.attempts == 0 {
            return;
        }
        let by_plugin = PluginLabels {
            tenant: tenant.clone(),
            plugin,
        };
        self.attempts
            .get_or_create(&by_plugin)
            .inc_by(u64::from(report.attempts));
        let metering = &report.metering;
        self.task_duration
            .get_or_create(&by_plugin)
            .observe(metering.duration.as_secs_f64());
        self.task_fuel
            .get_or_create(&by_plugin)
            .observe(metering.fuel as f64);
        self.task_memory
            .get_or_create(&by_plugin)
            .observe(metering.peak_memory as f64);
        let Some(usage) = &report.usage else {
            return;
        };
        if usage.cached {
            self.cache_hits.get_or_create(&by_plugin).inc();
            return;
        }
        let model = self
            .models
            .value(usage.model.as_deref().unwrap_or("unknown"));
        let provider = self
            .providers
            .value(usage.provider.as_deref().unwrap_or("unknown"));
        for (direction, count) in [
            ("input", usage.input_tokens),
            ("output", usage.output_tokens),
        ] {
            self.tokens
                .get_or_create(&TokenLabels {
                    tenant: tenant.clone(),
                    model: model.clone(),
                    provider: provider.clone(),
                    direction: direction.to_owned(),
                })
                .inc_by(count);
        }
        if let Some(cost) = usage.cost_usd.filter(|c| c.is_finite() && *c >= 0.0) {
            self.cost
                .get_or_create(&ModelLabels {
                    tenant,
                    model,
                    provider,
                })
                .inc_by(cost);
        }
    }

    /// An attempt of a task using `uses` failed with `kind`.
    pub fn attempt_failed(&self, tenant: &TenantId, uses: &str, kind: FailureKind) {
        self.attempts_failed
            .get_or_create(&FailureLabels {
                tenant: self.tenant(tenant),
                plugin: self.plugins.value(labels::plugin(uses)),
                kind: kind.as_str().to_owned(),
            })
            .inc();
    }

    /// A commit of task states took `took`.
    pub fn commit(&self, took: Duration) {
        self.commit_duration.observe(took.as_secs_f64());
    }

    /// The process's load now: task slots held, runs running and waiting.
    pub fn set_load(&self, tasks_running: usize, runs_running: usize, runs_queued: usize) {
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.tasks_running.set(gauge(tasks_running));
        self.runs_running.set(gauge(runs_running));
        self.runs_queued.set(gauge(runs_queued));
    }

    /// `tenant`'s plugin calls now: holding a task slot, and waiting for one.
    pub fn set_tenant_tasks(&self, tenant: &TenantId, (running, queued): (usize, usize)) {
        let labels = TenantLabels {
            tenant: self.tenant(tenant),
        };
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.tenant_tasks.get_or_create(&labels).set(gauge(running));
        self.tenant_queued.get_or_create(&labels).set(gauge(queued));
    }

    /// `tenant` has `parked` executions parked now.
    pub fn set_parked(&self, tenant: &TenantId, parked: usize) {
        self.parked
            .get_or_create(&TenantLabels {
                tenant: self.tenant(tenant),
            })
            .set(i64::try_from(parked).unwrap_or(i64::MAX));
    }

    /// `tenant` has `open` dead letters now.
    pub fn set_dead_letters(&self, tenant: &TenantId, open: u64) {
        self.dead_letters
            .get_or_create(&TenantLabels {
                tenant: self.tenant(tenant),
            })
            .set(i64::try_from(open).unwrap_or(i64::MAX));
    }

    /// `tenant`'s breakers now: how many are closed, open and half-open.
    pub fn set_breakers(&self, tenant: &TenantId, [closed, open, half_open]: [usize; 3]) {
        let tenant = self.tenant(tenant);
        for (state, n) in [("closed", closed), ("open", open), ("half_open", half_open)] {
            self.breakers
                .get_or_create(&StateLabels {
                    tenant: tenant.clone(),
                    state: state.to_owned(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// Every metric, in the OpenMetrics text format ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

impl orchestrator_sandbox::capacity::SlotWaits for Metrics {
    fn waited(&self, tenant: &TenantId, waited: Duration) {
        let labels = TenantLabels {
            tenant: self.tenant(tenant),
        };
        self.slot_wait
            .get_or_create(&labels)
            .observe(waited.as_secs_f64());
    }
}
