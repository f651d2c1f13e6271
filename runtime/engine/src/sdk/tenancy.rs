//! What an [`Engine`] knows of its tenant's share of the host: the limits
//! it runs under and what it spent and keeps against them.

use super::engine::{Engine, blocking};
use crate::quotas::QuotasSpec;
use crate::service::{self, ServiceError};
use orchestrator_core::scheduler::Consumption;
use orchestrator_store::tenants::TenantLimits;

/// A tenant's spending and keeping against its limits.
#[derive(Debug, Clone)]
pub struct TenantUsage {
    /// The limits in force: the tenant's own, else the configuration's.
    pub limits: QuotasSpec,
    /// What its runs spent this period: tokens, cost, fuel.
    pub spent: Consumption,
    /// This period's start and end, ms since the epoch.
    pub period: (u64, u64),
    /// Bytes its executions keep.
    pub execution_bytes: u64,
    /// Its installed plugins (name@versions, built-ins not counted).
    pub plugins: u64,
    /// Bytes of its installed components, each counted once.
    pub plugin_bytes: u64,
}

impl Engine {
    /// Gives this tenant its own limits, each in the place of the
    /// configuration's `quotas:` (one left out stays the configuration's),
    /// for every engine sharing this one's configuration. The engine does
    /// not keep them: a host keeps them in its store and sets them again
    /// when it starts.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), orchestrator_engine::service::ServiceError> {
    /// use orchestrator_engine::store::tenants::TenantLimits;
    /// let engine = orchestrator_engine::Engine::builder().in_memory().build().await?;
    /// engine.set_limits(TenantLimits { tokens: Some(1_000_000), ..TenantLimits::default() });
    /// assert_eq!(engine.usage().await?.limits.tokens, Some(1_000_000));
    /// # Ok(()) }
    /// ```
    pub fn set_limits(&self, limits: TenantLimits) {
        self.config.quotas.set_limits(&self.tenant, limits);
    }

    /// What this tenant spent this period and keeps, against its limits.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), orchestrator_engine::service::ServiceError> {
    /// let engine = orchestrator_engine::Engine::builder().in_memory().build().await?;
    /// let usage = engine.usage().await?;
    /// println!("{} tokens spent, {} plugins", usage.spent.tokens, usage.plugins);
    /// # Ok(()) }
    /// ```
    pub async fn usage(&self) -> Result<TenantUsage, ServiceError> {
        let engine = self.clone();
        blocking(move || {
            let usage = engine
                .config
                .quotas
                .usage(&engine.tenant, engine.executions())
                .map_err(ServiceError::Plugin)?;
            let (plugins, plugin_bytes) = engine.keeping.with_store(|store| {
                let plugins = store.plugins(engine.tenant.as_str())?;
                let installed = plugins.iter().filter(|p| !p.builtin).count();
                Ok((
                    u64::try_from(installed).unwrap_or(u64::MAX),
                    service::plugin_bytes(store, &engine.tenant),
                ))
            })?;
            Ok(TenantUsage {
                limits: usage.limits,
                spent: usage.spent,
                period: usage.period,
                execution_bytes: usage.execution_bytes,
                plugins,
                plugin_bytes,
            })
        })
        .await
    }
}
