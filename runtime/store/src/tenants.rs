//! Tenants a host's admins created, with the limits set for each. A
//! tenant works without a record (its first API key is enough), under the
//! configuration's `quotas:`; a record's limits take the place of those
//! the configuration sets, limit by limit.

use serde::{Deserialize, Serialize};

use crate::StoreError;

/// A tenant's own limits; one left out is the configuration's.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TenantLimits {
    /// Installed plugins (name@versions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugins: Option<u64>,
    /// Bytes of installed components.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_bytes: Option<u64>,
    /// Bytes kept: executions and plugins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_bytes: Option<u64>,
    /// Model tokens per period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens: Option<u64>,
    /// US dollars per period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<f64>,
    /// Fuel per period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
}

/// One tenant's record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TenantRecord {
    /// Its id.
    pub id: String,
    /// When it was created, ms since the epoch.
    pub created_at: u64,
    /// Its limits.
    pub limits: TenantLimits,
}

/// Where tenant records are kept: one table for the host, by id.
pub trait TenantsBackend: Send + Sync {
    /// Keeps `record`; a tenant that has one already is refused (`false`,
    /// nothing written).
    fn create_tenant(&self, record: &TenantRecord) -> Result<bool, StoreError>;

    /// The record of tenant `id`.
    fn tenant(&self, id: &str) -> Result<Option<TenantRecord>, StoreError>;

    /// Every record, by id.
    fn tenants(&self) -> Result<Vec<TenantRecord>, StoreError>;

    /// Replaces tenant `id`'s limits; `false` if it has no record.
    fn set_tenant_limits(&self, id: &str, limits: &TenantLimits) -> Result<bool, StoreError>;
}
