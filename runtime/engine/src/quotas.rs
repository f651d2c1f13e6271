//! What each tenant may keep and spend (`quotas:` in the configuration,
//! or the tenant's own limits where a host's admin set them:
//! [`Quotas::set_limits`]), every tenant counted on its own:
//!
//! - `plugins`, `plugin_bytes`: installed plugins and the bytes of their
//!   components (built-ins not counted), checked by the store in the
//!   install's own transaction, so two installs at once cannot both
//!   squeeze past a limit.
//! - `storage_bytes`: what the tenant keeps, its executions and its
//!   plugins; a run is refused before it starts while it is at the limit.
//! - `tokens`, `cost`, `fuel` per `period` (default `1d`; periods are
//!   fixed windows from the Unix epoch): what the tenant's runs spent.
//!   A run is refused before it starts once a limit is reached; within a
//!   run, a model call is refused before it is sent when what was spent,
//!   what calls in flight are expected to spend and its own estimate (as
//!   for a workflow's `budget:`) would pass the limit, and any task is
//!   refused once the fuel is spent. An answer that takes the tenant past
//!   a limit is kept (it was paid for, and its usage is recorded); the
//!   calls after it are refused.
//!
//! What was spent is read from the index of the tenant's executions (the
//! consumption each finished one recorded, counted in the period it
//! started in) whenever no run of the tenant is in flight in this process,
//! and counted here as tasks finish. So runs in other processes are
//! counted once they have finished and this process starts a run of the
//! tenant with none in flight; processes running at once can pass a limit
//! together. Removing executions (`runtime gc`) removes what they spent.
//! A call whose spending cannot be estimated (no prompt) is not refused by
//! `tokens` or `cost`; it is counted.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde::Deserialize;

use orchestrator_core::scheduler::Consumption;
use orchestrator_core::tenant::TenantId;
use orchestrator_store::executions::{Executions, now_ms};
use orchestrator_store::plugins::PluginQuota;
use orchestrator_store::tenants::TenantLimits;

/// `quotas:` as the configuration file writes it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotasSpec {
    /// Installed plugins (name@versions).
    #[serde(default)]
    pub plugins: Option<u64>,
    /// Bytes of the tenant's installed components, each stored once.
    #[serde(default)]
    pub plugin_bytes: Option<u64>,
    /// Bytes the tenant keeps: its executions and its installed plugins.
    #[serde(default)]
    pub storage_bytes: Option<u64>,
    /// Model tokens (in and out) per period.
    #[serde(default)]
    pub tokens: Option<u64>,
    /// US dollars per period.
    #[serde(default)]
    pub cost: Option<f64>,
    /// Fuel per period.
    #[serde(default)]
    pub fuel: Option<u64>,
    /// The period, for example `1h` or `1d` (default `1d`).
    #[serde(default)]
    pub period: Option<String>,
}

/// Every tenant's quota, and what each spent in this process.
#[derive(Debug)]
pub struct Quotas {
    spec: QuotasSpec,
    period_ms: u64,
    ledgers: Mutex<HashMap<TenantId, Ledger>>,
    /// Tenants' own limits, each in the place of the configuration's.
    own: RwLock<HashMap<TenantId, TenantLimits>>,
}

/// The period when the configuration gives none.
const DAY_MS: u64 = 24 * 3600 * 1000;

impl Default for Quotas {
    /// No limit, counted by the day (a tenant's own limits may be set).
    fn default() -> Self {
        Self {
            spec: QuotasSpec::default(),
            period_ms: DAY_MS,
            ledgers: Mutex::default(),
            own: RwLock::default(),
        }
    }
}

/// Why a run may not start: which limit, and when trying again can help.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct QuotaRefusal {
    /// What happened and what to do.
    pub message: String,
    /// The limit reached: `tokens`, `cost`, `fuel`, `storage_bytes`.
    pub limit: &'static str,
    /// When the period ends and spending starts from zero again; `None`
    /// when waiting does not help (storage is freed by removing things).
    pub retry_after: Option<Duration>,
}

/// What a tenant spent and keeps, against its limits.
#[derive(Debug, Clone)]
pub struct Usage {
    /// The limits in force for it (its own, else the configuration's).
    pub limits: QuotasSpec,
    /// What its runs spent this period.
    pub spent: Consumption,
    /// When this period started and ends, ms since the epoch.
    pub period: (u64, u64),
    /// Bytes its executions keep.
    pub execution_bytes: u64,
}

/// What one tenant spent in the current period.
#[derive(Debug, Default)]
struct Ledger {
    period_start: u64,
    spent: Consumption,
    /// Expected from model calls in flight.
    reserved: Consumption,
    /// Its runs in flight in this process.
    runs: usize,
}

impl Quotas {
    /// The quotas `spec` gives; the message says what is wrong.
    pub fn new(spec: QuotasSpec) -> Result<Self, String> {
        if let Some(cost) = spec.cost
            && !(cost.is_finite() && cost >= 0.0)
        {
            return Err(format!(
                "`quotas.cost` must be a number of dollars, 0 or more (not {cost})"
            ));
        }
        let period = match &spec.period {
            Some(text) => orchestrator_core::workflow::parse_duration(text)
                .map_err(|e| format!("`quotas.period`: {e}"))?,
            None => Duration::from_secs(24 * 3600),
        };
        let period_ms = u64::try_from(period.as_millis()).unwrap_or(u64::MAX);
        if period_ms < 1000 {
            return Err("`quotas.period` must be at least 1s".into());
        }
        Ok(Self {
            spec,
            period_ms,
            ledgers: Mutex::default(),
            own: RwLock::default(),
        })
    }

    /// Gives `tenant` its own `limits`, each in the place of the
    /// configuration's (one left out stays the configuration's).
    pub fn set_limits(&self, tenant: &TenantId, limits: TenantLimits) {
        self.own
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(tenant.clone(), limits);
    }

    /// The limits in force for `tenant`.
    pub fn spec_for(&self, tenant: &TenantId) -> QuotasSpec {
        let mut spec = self.spec.clone();
        let own = self
            .own
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(own) = own.get(tenant) {
            spec.plugins = own.plugins.or(spec.plugins);
            spec.plugin_bytes = own.plugin_bytes.or(spec.plugin_bytes);
            spec.storage_bytes = own.storage_bytes.or(spec.storage_bytes);
            spec.tokens = own.tokens.or(spec.tokens);
            spec.cost = own.cost.or(spec.cost);
            spec.fuel = own.fuel.or(spec.fuel);
        }
        spec
    }

    /// What an install of `tenant` may add.
    pub fn plugins(&self, tenant: &TenantId) -> PluginQuota {
        let spec = self.spec_for(tenant);
        PluginQuota {
            plugins: spec.plugins,
            bytes: spec.plugin_bytes,
        }
    }

    fn limits_spending(&self, tenant: &TenantId) -> bool {
        let spec = self.spec_for(tenant);
        spec.tokens.is_some() || spec.cost.is_some() || spec.fuel.is_some()
    }

    /// The current period of these quotas: its start and end, ms since the
    /// epoch.
    fn period(&self, now: u64) -> (u64, u64) {
        let start = now - now % self.period_ms;
        (start, start.saturating_add(self.period_ms))
    }

    /// What `tenant`, whose executions are `executions`, spent this period
    /// and keeps, against its limits.
    pub fn usage(&self, tenant: &TenantId, executions: &Executions) -> Result<Usage, String> {
        let period = self.period(now_ms());
        let counted = self
            .ledgers
            .lock()
            .expect("quota lock")
            .get(tenant)
            .filter(|l| l.runs > 0 && l.period_start == period.0)
            .map(|l| l.spent);
        let spent = match counted {
            Some(spent) => spent,
            None => executions
                .consumed_since(period.0)
                .map_err(|e| format!("cannot read what tenant `{tenant}` spent: {e}"))?,
        };
        Ok(Usage {
            limits: self.spec_for(tenant),
            spent,
            period,
            execution_bytes: executions.stored_bytes(),
        })
    }

    /// Refuses a run of `tenant` while what it keeps, `plugin_bytes` of
    /// installed plugins and its `executions`, is at `storage_bytes`.
    pub fn check_storage(
        &self,
        tenant: &TenantId,
        executions: &Executions,
        plugin_bytes: impl FnOnce() -> u64,
    ) -> Result<(), QuotaRefusal> {
        let Some(max) = self.spec_for(tenant).storage_bytes else {
            return Ok(());
        };
        let kept = executions.stored_bytes().saturating_add(plugin_bytes());
        if kept >= max {
            return Err(QuotaRefusal {
                message: format!(
                    "tenant `{tenant}` keeps {kept} bytes (executions and plugins), at its quota of {max}; no run starts until it keeps less: `runtime gc` removes finished executions, `runtime plugins remove` plugins; or raise `quotas.storage_bytes`"
                ),
                limit: "storage_bytes",
                retry_after: None,
            });
        }
        Ok(())
    }

    /// Takes a run of `tenant` in, whose executions are `executions`: what
    /// the tenant spent this period is read again when none of its runs is
    /// in flight here, and the run is refused once a limit is reached.
    /// `None` when no spending limit is set.
    pub fn admit(
        self: &Arc<Self>,
        tenant: &TenantId,
        executions: &Executions,
    ) -> Result<Option<TenantSpend>, QuotaRefusal> {
        if !self.limits_spending(tenant) {
            return Ok(None);
        }
        let now = now_ms();
        let (period_start, period_end) = self.period(now);
        let idle = self
            .ledgers
            .lock()
            .expect("quota lock")
            .get(tenant)
            .is_none_or(|l| l.runs == 0 || l.period_start != period_start);
        // Read outside the lock: it reads the index.
        let recorded = if idle {
            Some(
                executions
                    .consumed_since(period_start)
                    .map_err(|e| QuotaRefusal {
                        message: format!("cannot read what tenant `{tenant}` spent: {e}"),
                        limit: "storage",
                        retry_after: None,
                    })?,
            )
        } else {
            None
        };
        let mut ledgers = self.ledgers.lock().expect("quota lock");
        let ledger = ledgers.entry(tenant.clone()).or_default();
        if ledger.period_start != period_start {
            *ledger = Ledger {
                period_start,
                runs: ledger.runs,
                ..Ledger::default()
            };
        }
        if let Some(recorded) = recorded
            && ledger.runs == 0
        {
            ledger.spent = recorded;
        }
        if let Some((reached, limit)) = self.reached(tenant, ledger) {
            return Err(QuotaRefusal {
                message: format!("{reached}; no run starts until then"),
                limit,
                retry_after: Some(Duration::from_millis(period_end.saturating_sub(now))),
            });
        }
        ledger.runs += 1;
        Ok(Some(TenantSpend {
            quotas: Arc::clone(self),
            tenant: tenant.clone(),
        }))
    }

    /// Which limit `ledger` has reached, in words, and its name, if any.
    fn reached(&self, tenant: &TenantId, ledger: &Ledger) -> Option<(String, &'static str)> {
        let spent = &ledger.spent;
        let spec = self.spec_for(tenant);
        let over = [
            spec.tokens
                .filter(|max| spent.tokens >= *max)
                .map(|max| (format!("{} of its {max} tokens", spent.tokens), "tokens")),
            spec.cost
                .filter(|max| spent.cost_usd >= *max)
                .map(|max| (format!("${:.6} of its ${max}", spent.cost_usd), "cost")),
            spec.fuel
                .filter(|max| spent.fuel >= *max)
                .map(|max| (format!("{} of its {max} fuel", spent.fuel), "fuel")),
        ];
        let (used, limit) = over.into_iter().flatten().next()?;
        let words = format!(
            "tenant `{tenant}` has spent {used} {}; raise `quotas.{limit}` or wait for the next period",
            self.period_words(ledger.period_start)
        );
        Some((words, limit))
    }

    /// "this period (1day, until 2026-12-02T00:00:00Z)".
    fn period_words(&self, start: u64) -> String {
        let end =
            std::time::UNIX_EPOCH + Duration::from_millis(start.saturating_add(self.period_ms));
        format!(
            "this period ({}, until {})",
            humantime::format_duration(Duration::from_millis(self.period_ms)),
            humantime::format_rfc3339_seconds(end)
        )
    }
}

/// A run's hold on its tenant's quota: what its tasks spend is counted
/// here. Dropping it ends the run's part.
#[derive(Debug)]
pub struct TenantSpend {
    quotas: Arc<Quotas>,
    tenant: TenantId,
}

impl Drop for TenantSpend {
    fn drop(&mut self) {
        if let Some(ledger) = self
            .quotas
            .ledgers
            .lock()
            .expect("quota lock")
            .get_mut(&self.tenant)
        {
            ledger.runs = ledger.runs.saturating_sub(1);
        }
    }
}

impl TenantSpend {
    /// Reserves a call's expected `tokens` and `cost`, or says which limit
    /// refuses it; a task of any kind is refused once the fuel is spent.
    pub fn reserve(self: &Arc<Self>, tokens: u64, cost: f64) -> Result<Reservation, String> {
        let quotas = &self.quotas;
        let mut ledgers = quotas.ledgers.lock().expect("quota lock");
        let ledger = ledgers.entry(self.tenant.clone()).or_default();
        let words = quotas.period_words(ledger.period_start);
        let tenant = &self.tenant;
        let spec = quotas.spec_for(tenant);
        if let Some(max) = spec.fuel
            && ledger.spent.fuel >= max
        {
            return Err(format!(
                "refused by tenant `{tenant}`'s quota: it has spent {} of its {max} fuel {words}; raise `quotas.fuel`",
                ledger.spent.fuel
            ));
        }
        if let Some(max) = spec.tokens {
            let committed = ledger.spent.tokens.saturating_add(ledger.reserved.tokens);
            if tokens > 0 && committed.saturating_add(tokens) > max {
                return Err(format!(
                    "refused by tenant `{tenant}`'s quota before the call: it has spent {} of its {max} tokens {words} ({} more expected from calls in flight), and this call would take about {tokens}; raise `quotas.tokens`",
                    ledger.spent.tokens, ledger.reserved.tokens
                ));
            }
        }
        if let Some(max) = spec.cost {
            let committed = ledger.spent.cost_usd + ledger.reserved.cost_usd;
            if cost > 0.0 && committed + cost > max {
                return Err(format!(
                    "refused by tenant `{tenant}`'s quota before the call: it has spent ${:.6} of its ${max} {words}, and this call would cost about ${cost:.6}; raise `quotas.cost`",
                    ledger.spent.cost_usd
                ));
            }
        }
        let reserved = Consumption {
            tokens,
            cost_usd: cost,
            fuel: 0,
        };
        ledger.reserved.add(reserved);
        Ok(Reservation {
            spend: Arc::clone(self),
            amount: reserved,
            settled: false,
        })
    }

    /// Releases `reserved` and counts what the call `consumed`.
    fn release(&self, reserved: Consumption, consumed: Consumption) {
        let mut ledgers = self.quotas.ledgers.lock().expect("quota lock");
        let ledger = ledgers.entry(self.tenant.clone()).or_default();
        ledger.reserved.tokens = ledger.reserved.tokens.saturating_sub(reserved.tokens);
        ledger.reserved.cost_usd = (ledger.reserved.cost_usd - reserved.cost_usd).max(0.0);
        ledger.spent.add(consumed);
    }
}

/// A call's expected spending, held while the call runs: settled with what
/// it consumed, or given back when dropped (the call was cut off by a
/// timeout or a cancel), so calls in flight never outlive their call.
#[derive(Debug)]
pub struct Reservation {
    spend: Arc<TenantSpend>,
    amount: Consumption,
    settled: bool,
}

impl Reservation {
    /// Counts what the call `consumed`. An answer that takes the tenant
    /// past a limit is kept (it was paid for); the calls after it that are
    /// expected to spend are refused.
    pub fn settle(mut self, consumed: Consumption) {
        self.settled = true;
        self.spend.release(self.amount, consumed);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.settled {
            self.spend.release(self.amount, Consumption::default());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orchestrator_store::conformance::{record, report};
    use orchestrator_store::executions::ExecutionStatus;
    use orchestrator_store::executions::memory::MemoryExecutions;

    fn quotas(yaml: &str) -> Arc<Quotas> {
        Arc::new(Quotas::new(serde_saphyr::from_str(yaml).unwrap()).unwrap())
    }

    /// A finished execution of `tenant` that consumed `tokens`, `cost`
    /// and `fuel`.
    fn spent(executions: &Executions, id: &str, tokens: u64, cost: f64, fuel: u64) {
        let log = executions.create(&record(id)).unwrap();
        let mut done = report("a", None);
        done.usage = Some(orchestrator_core::scheduler::Usage {
            input_tokens: tokens,
            output_tokens: 0,
            model: None,
            provider: None,
            cost_usd: Some(cost),
            cached: false,
        });
        done.metering.fuel = fuel;
        log.commit_tasks(&[done]).unwrap();
        log.finish(ExecutionStatus::Succeeded, None, serde_json::Map::new())
            .unwrap();
    }

    #[test]
    fn what_finished_runs_spent_counts_and_a_run_past_a_limit_is_refused() {
        let memory = MemoryExecutions::new();
        let acme = TenantId::new("acme").unwrap();
        let executions = Executions::in_memory(&memory, &acme);
        let quotas = quotas("{ tokens: 100, cost: 1.0, fuel: 1000 }");
        spent(&executions, "e1", 60, 0.5, 10);
        let run = Arc::new(quotas.admit(&acme, &executions).unwrap().unwrap());
        // 60 spent: an estimate of 40 fits, 41 does not.
        let fits = run.reserve(40, 0.0).unwrap();
        let error = run.reserve(1, 0.0).unwrap_err();
        assert!(
            error.contains("spent 60 of its 100 tokens") && error.contains("40 more expected"),
            "{error}"
        );
        // A call cut off gives its reservation back.
        drop(fits);
        run.reserve(40, 0.0).unwrap().settle(Consumption::default());
        let error = run.reserve(0, 0.6).map(|_| ()).unwrap_err();
        assert!(error.contains("$0.500000 of its $1"), "{error}");
        assert!(error.contains("quotas.cost"), "{error}");
        // A task with no model call is refused only once the fuel is spent.
        run.reserve(0, 0.0).unwrap().settle(Consumption {
            fuel: 990,
            ..Consumption::default()
        });
        let error = run.reserve(0, 0.0).map(|_| ()).unwrap_err();
        assert!(error.contains("1000 of its 1000 fuel"), "{error}");
        drop(run);
        // With no run in flight, what the tenant spent is read again from
        // its executions: the run above recorded its fuel when it finished.
        spent(&executions, "e2", 0, 0.0, 990);
        let error = quotas.admit(&acme, &executions).map(|_| ()).unwrap_err();
        assert!(
            error.message.contains("tenant `acme` has spent")
                && error.message.contains("no run starts"),
            "{error}"
        );
        assert_eq!(error.limit, "fuel");
        let wait = error.retry_after.expect("spending is retried next period");
        assert!(wait <= Duration::from_secs(24 * 3600), "{wait:?}");

        // Another tenant counts on its own.
        let globex = TenantId::new("globex").unwrap();
        let theirs = Executions::in_memory(&memory, &globex);
        assert!(quotas.admit(&globex, &theirs).unwrap().is_some());
    }

    #[test]
    fn a_tenant_keeping_its_storage_quota_starts_no_run() {
        let memory = MemoryExecutions::new();
        let acme = TenantId::new("acme").unwrap();
        let executions = Executions::in_memory(&memory, &acme);
        let quotas = quotas("{ storage_bytes: 50000 }");
        assert!(quotas.check_storage(&acme, &executions, || 0).is_ok());
        let log = executions.create(&record("big")).unwrap();
        log.commit_tasks(&[report("a", Some(serde_json::json!("x".repeat(30_000))))])
            .unwrap();
        drop(log);
        // 30 kB of executions: under the quota, until 20 kB of plugins.
        assert!(quotas.check_storage(&acme, &executions, || 0).is_ok());
        let error = quotas
            .check_storage(&acme, &executions, || 20_000)
            .unwrap_err();
        assert!(
            error.message.contains("tenant `acme` keeps")
                && error.message.contains("quotas.storage_bytes"),
            "{error}"
        );
        assert_eq!((error.limit, error.retry_after), ("storage_bytes", None));
        let globex = TenantId::new("globex").unwrap();
        let theirs = Executions::in_memory(&memory, &globex);
        assert!(quotas.check_storage(&globex, &theirs, || 20_000).is_ok());
    }

    #[test]
    fn a_tenants_own_limits_take_the_place_of_the_configurations() {
        let memory = MemoryExecutions::new();
        let acme = TenantId::new("acme").unwrap();
        let globex = TenantId::new("globex").unwrap();
        let quotas = quotas("{ tokens: 100, plugins: 5 }");
        quotas.set_limits(
            &acme,
            TenantLimits {
                tokens: Some(10),
                fuel: Some(50),
                ..TenantLimits::default()
            },
        );
        let spec = quotas.spec_for(&acme);
        assert_eq!(
            (spec.tokens, spec.fuel, spec.plugins),
            (Some(10), Some(50), Some(5))
        );
        assert_eq!(quotas.spec_for(&globex).tokens, Some(100));
        let executions = Executions::in_memory(&memory, &acme);
        spent(&executions, "e1", 10, 0.0, 0);
        let error = quotas.admit(&acme, &executions).map(|_| ()).unwrap_err();
        assert_eq!(error.limit, "tokens", "{error}");
        let theirs = Executions::in_memory(&memory, &globex);
        spent(&theirs, "e1", 10, 0.0, 0);
        assert!(quotas.admit(&globex, &theirs).unwrap().is_some());
        let usage = quotas.usage(&acme, &executions).unwrap();
        assert_eq!(usage.spent.tokens, 10);
        assert_eq!(usage.limits.tokens, Some(10));
        assert!(usage.period.0 <= now_ms() && now_ms() < usage.period.1);
    }

    #[test]
    fn bad_quotas_are_refused_and_no_limit_costs_nothing() {
        assert!(
            Quotas::new(serde_saphyr::from_str("{ cost: -1 }").unwrap())
                .unwrap_err()
                .contains("quotas.cost")
        );
        assert!(
            Quotas::new(serde_saphyr::from_str("{ tokens: 1, period: 1ms }").unwrap())
                .unwrap_err()
                .contains("at least 1s")
        );
        let memory = MemoryExecutions::new();
        let executions = Executions::in_memory(&memory, &TenantId::default());
        let none = quotas("{ plugins: 3 }");
        assert!(
            none.admit(&TenantId::default(), &executions)
                .unwrap()
                .is_none()
        );
    }
}
