//! Installed plugins: component bytes by digest, names pointing at
//! digests, and precompiled artifacts per engine, all under the tenant.
//!
//! Invariant, on every backend: every digest a name points at has a blob;
//! a blob or artifact no name points at is deleted in the same transaction
//! as the last name.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::StoreError;
use orchestrator_core::plugin::{Grants, Manifest};

/// One installed `name@version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginRecord {
    /// The name workflows use.
    pub name: String,
    /// Its version.
    pub version: String,
    /// sha256 of the component, lower-case hex.
    pub digest: String,
    /// Size of the component in bytes.
    pub size: u64,
    /// What `describe()` returned at install.
    pub manifest: Manifest,
    /// What the operator granted at install.
    pub grants: Grants,
    /// Seconds since the Unix epoch.
    pub installed_at: u64,
    /// Whether the runtime installed it itself (a built-in plugin).
    pub builtin: bool,
}

/// A compiled artifact for one engine configuration.
#[derive(Debug, Clone, Copy)]
pub struct Artifact<'a> {
    /// `Engine::precompile_compatibility_hash`, as hex.
    pub engine: &'a str,
    /// `Component::serialize` output.
    pub bytes: &'a [u8],
}

/// What an install did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Installed {
    /// A new name@version.
    New,
    /// The same bytes and grants were already installed under this name@version.
    Unchanged,
    /// The same bytes were installed; their grants were replaced.
    GrantsChanged,
    /// The name@version points at other bytes; nothing was written.
    Conflict {
        /// The digest already installed.
        existing: String,
    },
    /// The tenant's quota has no room for it; nothing was written.
    OverQuota {
        /// Which limit: `plugins` or `plugin_bytes`.
        limit: &'static str,
        /// The limit.
        max: u64,
        /// What the tenant's installed plugins take now.
        used: u64,
    },
}

impl Installed {
    /// Whether the install writes (a new name, or new grants).
    pub fn writes(&self) -> bool {
        matches!(self, Self::New | Self::GrantsChanged)
    }
}

/// How much of the store one tenant's plugins may take (built-ins not
/// counted); `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PluginQuota {
    /// Installed name@versions.
    pub plugins: Option<u64>,
    /// Bytes of their components, each stored component once.
    pub bytes: Option<u64>,
}

/// Where installed plugins are kept.
pub trait PluginsBackend: Send + Sync {
    /// Stores a plugin's bytes (once per digest), its artifact and its name
    /// record in one transaction, as [`install_decision`] decides inside
    /// it (a refused install writes nothing).
    fn install_plugin(
        &self,
        tenant: &str,
        record: &PluginRecord,
        blob: &[u8],
        artifact: Artifact<'_>,
        quota: PluginQuota,
    ) -> Result<Installed, StoreError>;

    /// Every installed name@version of a tenant, ordered by name then version text.
    fn plugins(&self, tenant: &str) -> Result<Vec<PluginRecord>, StoreError>;

    /// The component bytes with this digest.
    fn plugin_blob(&self, tenant: &str, digest: &str) -> Result<Option<Vec<u8>>, StoreError>;

    /// The precompiled artifact of `digest` for the engine with hash `engine`.
    fn plugin_artifact(
        &self,
        tenant: &str,
        digest: &str,
        engine: &str,
    ) -> Result<Option<Vec<u8>>, StoreError>;

    /// Adds an artifact for an installed digest (after an engine upgrade).
    fn put_plugin_artifact(
        &self,
        tenant: &str,
        digest: &str,
        artifact: Artifact<'_>,
    ) -> Result<(), StoreError>;

    /// Removes one name@version; deletes its blob and artifacts if no other
    /// name points at them, in the same transaction. Returns the removed
    /// record and whether the blob went.
    fn remove_plugin(
        &self,
        tenant: &str,
        name: &str,
        version: &str,
    ) -> Result<Option<(PluginRecord, bool)>, StoreError>;

    /// How many blobs and artifacts a tenant holds.
    fn plugin_blob_count(&self, tenant: &str) -> Result<(usize, usize), StoreError>;
}

/// What installing `record` does, given the record its name@version has
/// now (`existing`) and, for a new name, every record the tenant has
/// (`installed`, asked only when a quota applies): the same decision on
/// every backend, taken inside the install's transaction.
pub fn install_decision(
    existing: Option<&PluginRecord>,
    installed: impl FnOnce() -> Result<Vec<PluginRecord>, StoreError>,
    record: &PluginRecord,
    quota: PluginQuota,
) -> Result<Installed, StoreError> {
    Ok(match existing {
        Some(old) if old.digest != record.digest => Installed::Conflict {
            existing: old.digest.clone(),
        },
        Some(old) if old.grants == record.grants => Installed::Unchanged,
        Some(_) => Installed::GrantsChanged,
        None if record.builtin || quota == PluginQuota::default() => Installed::New,
        None => over_quota(&installed()?, record, quota).unwrap_or(Installed::New),
    })
}

/// Whether a new `record` would take a tenant holding `installed` past
/// `quota`.
fn over_quota(
    installed: &[PluginRecord],
    record: &PluginRecord,
    quota: PluginQuota,
) -> Option<Installed> {
    let mut count = 0u64;
    let mut digests = HashMap::new();
    for installed in installed.iter().filter(|r| !r.builtin) {
        count += 1;
        digests.insert(installed.digest.as_str(), installed.size);
    }
    let bytes: u64 = digests.values().sum();
    if let Some(max) = quota.plugins
        && count >= max
    {
        return Some(Installed::OverQuota {
            limit: "plugins",
            max,
            used: count,
        });
    }
    let added = if digests.contains_key(record.digest.as_str()) {
        0
    } else {
        record.size
    };
    if let Some(max) = quota.bytes
        && bytes.saturating_add(added) > max
    {
        return Some(Installed::OverQuota {
            limit: "plugin_bytes",
            max,
            used: bytes,
        });
    }
    None
}
