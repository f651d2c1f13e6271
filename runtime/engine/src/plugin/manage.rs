//! Installed plugins as operations every front end calls: find one by how
//! a workflow names it, grant it more, remove it.

use orchestrator_core::plugin::{Grants, PluginRef};
use orchestrator_core::tenant::TenantId;
use orchestrator_sandbox::Sandbox;
use orchestrator_store::Store;
use orchestrator_store::plugins::{PluginQuota, PluginRecord};

use super::catalog::{Catalog, Resolved};
use super::install::{InstallReport, InstallRequest, install};
use crate::service::ServiceError;

/// The installed plugin `plugin` names (`name`, `name@version`,
/// `sha256:<digest>`), among `tenant`'s.
pub fn find(store: &Store, tenant: &TenantId, plugin: &str) -> Result<PluginRecord, ServiceError> {
    let records = store.plugins(tenant.as_str())?;
    let catalog = Catalog::new(".", records.clone());
    let found = match catalog.resolve(plugin) {
        Ok(Resolved::Installed(found)) => records.iter().find(|r| **r == *found).cloned(),
        _ => None,
    };
    found.ok_or_else(|| {
        ServiceError::Plugin(format!(
            "no installed plugin matches `{plugin}`; `runtime plugins list` shows what is installed"
        ))
    })
}

/// Installs the component of `plugin` again under its name and version
/// with the union of its grants and `more` (a built-in too).
pub async fn grant(
    store: &Store,
    sandbox: &Sandbox,
    tenant: &TenantId,
    plugin: &str,
    more: Grants,
    quota: PluginQuota,
) -> Result<InstallReport, ServiceError> {
    let record = find(store, tenant, plugin)?;
    let bytes = store
        .plugin_blob(tenant.as_str(), &record.digest)?
        .ok_or_else(|| {
            ServiceError::Plugin(format!(
                "{}@{}: its component is missing from the store; reinstall it",
                record.name, record.version
            ))
        })?;
    let request = InstallRequest {
        bytes: &bytes,
        source: format!("{}@{}", record.name, record.version),
        name: Some(record.name.clone()),
        version: Some(record.version.clone()),
        grants: record.grants.clone().merge(more),
        builtin: record.builtin,
        quota,
    };
    Ok(install(store, sandbox, tenant.as_str(), request).await?)
}

/// What a removal did.
#[derive(Debug, Clone)]
pub struct Removed {
    /// The record removed.
    pub record: PluginRecord,
    /// Its component was deleted too: no other name used it.
    pub component_deleted: bool,
}

/// Removes `plugin`, written `name@version`; its component goes too when
/// no other name uses it.
pub fn remove(store: &Store, tenant: &TenantId, plugin: &str) -> Result<Removed, ServiceError> {
    let PluginRef::Name {
        name,
        version: Some(version),
    } = PluginRef::parse(plugin)
    else {
        return Err(ServiceError::Plugin(
            "name the plugin as `name@version` to remove it".into(),
        ));
    };
    match store.remove_plugin(tenant.as_str(), name, version)? {
        Some((record, component_deleted)) => Ok(Removed {
            record,
            component_deleted,
        }),
        None => Err(ServiceError::Plugin(format!(
            "`{plugin}` is not installed; `runtime plugins list` shows what is"
        ))),
    }
}
