//! The plugin tables of the store file.
//!
//! | table | key | value |
//! |---|---|---|
//! | `plugin_blobs` | (tenant, sha256 hex) | component bytes, stored once |
//! | `plugin_names` | (tenant, name, version) | `PluginRecord` as JSON |
//! | `plugin_artifacts` | (tenant, sha256 hex, engine hash hex) | `Component::serialize` output |

use redb::{ReadableDatabase, ReadableTable, TableDefinition, TableError};

use super::FileStore;
use crate::StoreError;
use crate::plugins::{
    Artifact, Installed, PluginQuota, PluginRecord, PluginsBackend, install_decision,
};

const BLOBS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("plugin_blobs");
const NAMES: TableDefinition<(&str, &str, &str), &str> = TableDefinition::new("plugin_names");
const ARTIFACTS: TableDefinition<(&str, &str, &str), &[u8]> =
    TableDefinition::new("plugin_artifacts");

impl PluginsBackend for FileStore {
    fn install_plugin(
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
            let outcome = install_decision(
                existing.as_ref(),
                || self.read_plugins(&names, tenant),
                record,
                quota,
            )?;
            if outcome.writes() {
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
            }
            outcome
        };
        if outcome.writes() {
            write.commit().map_err(|e| self.redb(e))?;
        } else {
            write.abort().map_err(|e| self.redb(e))?;
        }
        Ok(outcome)
    }

    fn plugins(&self, tenant: &str) -> Result<Vec<PluginRecord>, StoreError> {
        let read = self.db().begin_read().map_err(|e| self.redb(e))?;
        match read.open_table(NAMES) {
            Ok(names) => self.read_plugins(&names, tenant),
            Err(TableError::TableDoesNotExist(_)) => Ok(Vec::new()),
            Err(e) => Err(self.redb(e)),
        }
    }

    fn plugin_blob(&self, tenant: &str, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
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

    fn plugin_artifact(
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

    fn put_plugin_artifact(
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

    fn remove_plugin(
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

    fn plugin_blob_count(&self, tenant: &str) -> Result<(usize, usize), StoreError> {
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
}

impl FileStore {
    /// `tenant`'s records in `names`, by name then version text.
    fn read_plugins(
        &self,
        names: &impl ReadableTable<(&'static str, &'static str, &'static str), &'static str>,
        tenant: &str,
    ) -> Result<Vec<PluginRecord>, StoreError> {
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

    fn decode(&self, json: &str) -> Result<PluginRecord, StoreError> {
        serde_json::from_str(json).map_err(|e| self.corrupt(format!("plugin record: {e}")))
    }
}
