//! Tenants for the Admin service: their records with their own limits (in
//! the store, set on the engine's quotas at start and on every change),
//! and what each spent and keeps against them.

use tonic::Status;

use super::{Host, status};
use crate::pb;
use orchestrator_engine::quotas::QuotasSpec;
use orchestrator_engine::sdk::TenantUsage;
use orchestrator_engine::store::executions::now_ms;
use orchestrator_engine::store::tenants::{TenantLimits, TenantRecord};
use orchestrator_engine::store::{Store, StoreError};
use orchestrator_engine::tenant::TenantId;

/// Limits as the API sends them, checked.
pub fn limits_of(sent: Option<pb::TenantLimits>) -> Result<TenantLimits, Status> {
    let sent = sent.unwrap_or_default();
    if let Some(cost) = sent.cost
        && !(cost.is_finite() && cost >= 0.0)
    {
        return Err(Status::invalid_argument(format!(
            "`limits.cost` must be a number of dollars, 0 or more (not {cost})"
        )));
    }
    Ok(TenantLimits {
        plugins: sent.plugins,
        plugin_bytes: sent.plugin_bytes,
        storage_bytes: sent.storage_bytes,
        tokens: sent.tokens,
        cost: sent.cost,
        fuel: sent.fuel,
    })
}

fn limits_pb(limits: &TenantLimits) -> pb::TenantLimits {
    pb::TenantLimits {
        plugins: limits.plugins,
        plugin_bytes: limits.plugin_bytes,
        storage_bytes: limits.storage_bytes,
        tokens: limits.tokens,
        cost: limits.cost,
        fuel: limits.fuel,
    }
}

fn in_force_pb(spec: &QuotasSpec) -> pb::TenantLimits {
    pb::TenantLimits {
        plugins: spec.plugins,
        plugin_bytes: spec.plugin_bytes,
        storage_bytes: spec.storage_bytes,
        tokens: spec.tokens,
        cost: spec.cost,
        fuel: spec.fuel,
    }
}

fn usage_pb(usage: &TenantUsage) -> pb::TenantUsage {
    pb::TenantUsage {
        tokens: usage.spent.tokens,
        cost: usage.spent.cost_usd,
        fuel: usage.spent.fuel,
        period_start_ms: usage.period.0,
        period_end_ms: usage.period.1,
        execution_bytes: usage.execution_bytes,
        plugins: usage.plugins,
        plugin_bytes: usage.plugin_bytes,
    }
}

impl Host {
    /// Runs `work` on the server's store off the async threads.
    async fn on_store<T: Send + 'static>(
        &self,
        work: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, Status> {
        let store = self.base.store().map_err(status::of)?;
        tokio::task::spawn_blocking(move || work(&store))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::internal(e.to_string()))
    }

    /// Sets the limits every tenant record holds on the engine's quotas:
    /// what a server does when it starts.
    pub(super) async fn load_tenant_limits(&self) -> Result<(), Status> {
        let records = self.on_store(|store| store.tenants()).await?;
        for record in records {
            let Ok(tenant) = TenantId::new(&record.id) else {
                continue;
            };
            self.engine(&tenant).await?.set_limits(record.limits);
        }
        Ok(())
    }

    /// Tenant `tenant` as the API shows it: its record (if any), its limits
    /// in force and its usage.
    pub(super) async fn tenant(&self, tenant: &TenantId) -> Result<pb::Tenant, Status> {
        let id = tenant.as_str().to_owned();
        let record = self.on_store(move |store| store.tenant(&id)).await?;
        let usage = self
            .engine(tenant)
            .await?
            .usage()
            .await
            .map_err(status::of)?;
        Ok(pb::Tenant {
            id: tenant.as_str().to_owned(),
            created_at_ms: record.as_ref().map_or(0, |r| r.created_at),
            limits: Some(limits_pb(&record.map(|r| r.limits).unwrap_or_default())),
            in_force: Some(in_force_pb(&usage.limits)),
            usage: Some(usage_pb(&usage)),
        })
    }

    /// Makes tenant `tenant`'s record with `limits`; ALREADY_EXISTS if it
    /// has one.
    pub(super) async fn create_tenant(
        &self,
        tenant: &TenantId,
        limits: TenantLimits,
    ) -> Result<pb::Tenant, Status> {
        let record = TenantRecord {
            id: tenant.as_str().to_owned(),
            created_at: now_ms(),
            limits: limits.clone(),
        };
        let created = self
            .on_store(move |store| store.create_tenant(&record))
            .await?;
        if !created {
            return Err(Status::already_exists(format!(
                "tenant `{}` exists already; SetTenantLimits changes its limits",
                tenant.as_str()
            )));
        }
        self.engine(tenant).await?.set_limits(limits);
        self.tenant(tenant).await
    }

    /// Replaces tenant `tenant`'s limits; NOT_FOUND without a record.
    pub(super) async fn set_tenant_limits(
        &self,
        tenant: &TenantId,
        limits: TenantLimits,
    ) -> Result<pb::Tenant, Status> {
        let (id, kept) = (tenant.as_str().to_owned(), limits.clone());
        let found = self
            .on_store(move |store| store.set_tenant_limits(&id, &kept))
            .await?;
        if !found {
            return Err(Status::not_found(format!(
                "tenant `{}` has no record; CreateTenant makes one with its limits",
                tenant.as_str()
            )));
        }
        self.engine(tenant).await?.set_limits(limits);
        self.tenant(tenant).await
    }

    /// Every tenant with a record.
    pub(super) async fn tenants(&self) -> Result<Vec<pb::Tenant>, Status> {
        let records = self.on_store(|store| store.tenants()).await?;
        let mut out = Vec::new();
        for record in records {
            if let Ok(tenant) = TenantId::new(&record.id) {
                out.push(self.tenant(&tenant).await?);
            }
        }
        Ok(out)
    }
}
