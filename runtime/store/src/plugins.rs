//! The plugin tables: component bytes by digest, names pointing at digests,
//! and precompiled artifacts per engine.
//!
//! | table | key | value |
//! |---|---|---|
//! | `plugin_blobs` | (tenant, sha256 hex) | component bytes, stored once |
//! | `plugin_names` | (tenant, name, version) | [`PluginRecord`] as JSON |
//! | `plugin_artifacts` | (tenant, sha256 hex, engine hash hex) | `Component::serialize` output |
//!
//! Invariant: every digest a name points at has a blob; a blob or artifact
//! no name points at is deleted in the same transaction as the last name.

use redb::{ReadableDatabase, ReadableTable, TableDefinition, TableError};
use serde::{Deserialize, Serialize};

use super::{Store, StoreError};
use orchestrator_core::plugin::{Grants, Manifest};

const BLOBS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("plugin_blobs");
const NAMES: TableDefinition<(&str, &str, &str), &str> = TableDefinition::new("plugin_names");
const ARTIFACTS: TableDefinition<(&str, &str, &str), &[u8]> =
    TableDefinition::new("plugin_artifacts");

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

/// How much of the store one tenant's plugins may take (built-ins not
/// counted); `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PluginQuota {
    /// Installed name@versions.
    pub plugins: Option<u64>,
    /// Bytes of their components, each stored component once.
    pub bytes: Option<u64>,
}

impl Store {
    /// Stores a plugin's bytes (once per digest), its artifact and its name
    /// record in one write transaction, if a new one fits in `quota`
    /// (checked in that transaction).
    pub fn install_plugin(
        &self,
        tenant: &str,
        record: &PluginRecord,
        blob: &[u8],
        artifact: Artifact<'_>,
        quota: PluginQuota,
    ) -> Result<Installed, StoreError> {
        let json = serde_json::to_string(record).map_err(|e| self.corrupt(e.to_string()))?;
        let write = self.db().begin_write().map_err(|e| self.redb(e))?;
        let outcome = {
            let mut names = write.open_table(NAMES).map_err(|e| self.redb(e))?;
            let key = (tenant, record.name.as_str(), record.version.as_str());
            let existing = match names.get(key).map_err(|e| self.redb(e))? {
                Some(v) => Some(self.decode(v.value())?),
                None => None,
            };
            match existing {
                Some(old) if old.digest != record.digest => Installed::Conflict {
                    existing: old.digest,
                },
                Some(old) if old.grants == record.grants => Installed::Unchanged,
                None if !record.builtin
                    && let Some(over) = self.over_quota(&names, tenant, record, quota)? =>
                {
                    over
                }
                existing => {
                    let mut blobs = write.open_table(BLOBS).map_err(|e| self.redb(e))?;
                    if blobs
                        .get((tenant, record.digest.as_str()))
                        .map_err(|e| self.redb(e))?
                        .is_none()
                    {
                        blobs
                            .insert((tenant, record.digest.as_str()), blob)
                            .map_err(|e| self.redb(e))?;
                    }
                    let mut artifacts = write.open_table(ARTIFACTS).map_err(|e| self.redb(e))?;
                    artifacts
                        .insert(
                            (tenant, record.digest.as_str(), artifact.engine),
                            artifact.bytes,
                        )
                        .map_err(|e| self.redb(e))?;
                    names.insert(key, json.as_str()).map_err(|e| self.redb(e))?;
                    if existing.is_some() {
                        Installed::GrantsChanged
                    } else {
                        Installed::New
                    }
                }
            }
        };
        match outcome {
            Installed::New | Installed::GrantsChanged => {
                write.commit().map_err(|e| self.redb(e))?;
            }
            Installed::Unchanged | Installed::Conflict { .. } | Installed::OverQuota { .. } => {
                write.abort().map_err(|e| self.redb(e))?;
            }
        }
        Ok(outcome)
    }

    /// Whether a new `record` would take `tenant` past `quota`, counting
    /// its plugins in `names` (inside the install's transaction).
    fn over_quota(
        &self,
        names: &impl ReadableTable<(&'static str, &'static str, &'static str), &'static str>,
        tenant: &str,
        record: &PluginRecord,
        quota: PluginQuota,
    ) -> Result<Option<Installed>, StoreError> {
        if quota == PluginQuota::default() {
            return Ok(None);
        }
        let mut count = 0u64;
        let mut digests = std::collections::HashMap::new();
        for entry in names.range((tenant, "", "")..).map_err(|e| self.redb(e))? {
            let (key, value) = entry.map_err(|e| self.redb(e))?;
            if key.value().0 != tenant {
                break;
            }
            let installed: PluginRecord = self.decode(value.value())?;
            if !installed.builtin {
                count += 1;
                digests.insert(installed.digest, installed.size);
            }
        }
        let bytes: u64 = digests.values().sum();
        if let Some(max) = quota.plugins
            && count >= max
        {
            return Ok(Some(Installed::OverQuota {
                limit: "plugins",
                max,
                used: count,
            }));
        }
        let added = if digests.contains_key(&record.digest) {
            0
        } else {
            record.size
        };
        if let Some(max) = quota.bytes
            && bytes.saturating_add(added) > max
        {
            return Ok(Some(Installed::OverQuota {
                limit: "plugin_bytes",
                max,
                used: bytes,
            }));
        }
        Ok(None)
    }

    /// Every installed name@version of a tenant, ordered by name then version text.
    pub fn plugins(&self, tenant: &str) -> Result<Vec<PluginRecord>, StoreError> {
        let read = self.db().begin_read().map_err(|e| self.redb(e))?;
        let names = match read.open_table(NAMES) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(self.redb(e)),
        };
        let mut records = Vec::new();
        for entry in names.range((tenant, "", "")..).map_err(|e| self.redb(e))? {
            let (key, value) = entry.map_err(|e| self.redb(e))?;
            if key.value().0 != tenant {
                break;
            }
            records.push(self.decode(value.value())?);
        }
        Ok(records)
    }

    /// The component bytes with this digest.
    pub fn plugin_blob(&self, tenant: &str, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let read = self.db().begin_read().map_err(|e| self.redb(e))?;
        let blobs = match read.open_table(BLOBS) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(self.redb(e)),
        };
        Ok(blobs
            .get((tenant, digest))
            .map_err(|e| self.redb(e))?
            .map(|v| v.value().to_vec()))
    }

    /// The precompiled artifact of `digest` for the engine with hash `engine`.
    pub fn plugin_artifact(
        &self,
        tenant: &str,
        digest: &str,
        engine: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let read = self.db().begin_read().map_err(|e| self.redb(e))?;
        let artifacts = match read.open_table(ARTIFACTS) {
            Ok(t) => t,
            Err(TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(self.redb(e)),
        };
        Ok(artifacts
            .get((tenant, digest, engine))
            .map_err(|e| self.redb(e))?
            .map(|v| v.value().to_vec()))
    }

    /// Adds an artifact for an installed digest (after an engine upgrade).
    pub fn put_plugin_artifact(
        &self,
        tenant: &str,
        digest: &str,
        artifact: Artifact<'_>,
    ) -> Result<(), StoreError> {
        let write = self.db().begin_write().map_err(|e| self.redb(e))?;
        {
            let mut artifacts = write.open_table(ARTIFACTS).map_err(|e| self.redb(e))?;
            artifacts
                .insert((tenant, digest, artifact.engine), artifact.bytes)
                .map_err(|e| self.redb(e))?;
        }
        write.commit().map_err(|e| self.redb(e))
    }

    /// Removes one name@version; deletes its blob and artifacts if no other
    /// name points at them. Returns the removed record and whether the blob went.
    pub fn remove_plugin(
        &self,
        tenant: &str,
        name: &str,
        version: &str,
    ) -> Result<Option<(PluginRecord, bool)>, StoreError> {
        let write = self.db().begin_write().map_err(|e| self.redb(e))?;
        let removed = {
            let mut names = write.open_table(NAMES).map_err(|e| self.redb(e))?;
            let removed = match names
                .remove((tenant, name, version))
                .map_err(|e| self.redb(e))?
            {
                Some(v) => self.decode(v.value())?,
                None => return Ok(None),
            };
            let mut still_used = false;
            for entry in names.range((tenant, "", "")..).map_err(|e| self.redb(e))? {
                let (key, value) = entry.map_err(|e| self.redb(e))?;
                if key.value().0 != tenant {
                    break;
                }
                if self.decode(value.value())?.digest == removed.digest {
                    still_used = true;
                    break;
                }
            }
            if !still_used {
                let mut blobs = write.open_table(BLOBS).map_err(|e| self.redb(e))?;
                blobs
                    .remove((tenant, removed.digest.as_str()))
                    .map_err(|e| self.redb(e))?;
                let mut artifacts = write.open_table(ARTIFACTS).map_err(|e| self.redb(e))?;
                let digest = removed.digest.as_str();
                artifacts
                    .retain_in((tenant, digest, "")..(tenant, digest, "~"), |_, _| false)
                    .map_err(|e| self.redb(e))?;
            }
            (removed, !still_used)
        };
        write.commit().map_err(|e| self.redb(e))?;
        Ok(Some(removed))
    }

    /// How many blobs and artifacts a tenant holds (for tests and `plugins list`).
    pub fn plugin_blob_count(&self, tenant: &str) -> Result<(usize, usize), StoreError> {
        let read = self.db().begin_read().map_err(|e| self.redb(e))?;
        let mut counts = (0, 0);
        if let Ok(blobs) = read.open_table(BLOBS) {
            for entry in blobs.range((tenant, "")..).map_err(|e| self.redb(e))? {
                let (key, _) = entry.map_err(|e| self.redb(e))?;
                if key.value().0 != tenant {
                    break;
                }
                counts.0 += 1;
            }
        }
        if let Ok(artifacts) = read.open_table(ARTIFACTS) {
            for entry in artifacts
                .range((tenant, "", "")..)
                .map_err(|e| self.redb(e))?
            {
                let (key, _) = entry.map_err(|e| self.redb(e))?;
                if key.value().0 != tenant {
                    break;
                }
                counts.1 += 1;
            }
        }
        Ok(counts)
    }

    fn decode(&self, json: &str) -> Result<PluginRecord, StoreError> {
        serde_json::from_str(json).map_err(|e| self.corrupt(format!("plugin record: {e}")))
    }
}
