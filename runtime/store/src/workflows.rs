//! Registered workflows, which other workflows run as tasks
//! (`uses: workflow:NAME`). Every `runtime workflows add` of changed text
//! keeps a new version; the old ones stay, so a parent pinned to
//! `workflow:NAME@2` keeps running what it was written against.
//!
//! | table | key | value |
//! |---|---|---|
//! | `workflows` | (tenant, name, version) | [`StoredWorkflow`] JSON |

use redb::{ReadableDatabase, TableDefinition, TableError};
use serde::{Deserialize, Serialize};

use super::{Store, StoreError};

const WORKFLOWS: TableDefinition<(&str, &str, u64), &str> = TableDefinition::new("workflows");

/// One version of a registered workflow.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredWorkflow {
    /// Its name (the file's `name:`).
    pub name: String,
    /// 1, 2, ... in the order they were added.
    pub version: u64,
    /// The file it was added from (relative `.wasm` paths resolve against it).
    pub file: String,
    /// Its text, as validated when added.
    pub source: String,
    /// When it was added, seconds since the epoch.
    pub added_at: u64,
}

impl Store {
    /// Every version of every registered workflow of `tenant`.
    pub fn workflows(&self, tenant: &str) -> Result<Vec<StoredWorkflow>, StoreError> {
        let read = self.db().begin_read().map_err(|e| self.redb(e))?;
        let table = match read.open_table(WORKFLOWS) {
            Ok(table) => table,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(self.redb(e)),
        };
        let mut out = Vec::new();
        for entry in table.range((tenant, "", 0)..).map_err(|e| self.redb(e))? {
            let (key, value) = entry.map_err(|e| self.redb(e))?;
            if key.value().0 != tenant {
                break;
            }
            out.push(
                serde_json::from_str(value.value())
                    .map_err(|e| self.corrupt(format!("workflow {:?}: {e}", key.value().1)))?,
            );
        }
        Ok(out)
    }

    /// Registers `source` as the next version of workflow `name`, unless
    /// it is the same text as the newest one. Returns that version and
    /// whether it is new.
    pub fn add_workflow(
        &self,
        tenant: &str,
        name: &str,
        file: &str,
        source: &str,
    ) -> Result<(u64, bool), StoreError> {
        let newest = self
            .workflows(tenant)?
            .into_iter()
            .filter(|w| w.name == name)
            .max_by_key(|w| w.version);
        if let Some(newest) = &newest
            && newest.source == source
        {
            return Ok((newest.version, false));
        }
        let version = newest.map_or(1, |w| w.version + 1);
        let stored = StoredWorkflow {
            name: name.to_owned(),
            version,
            file: file.to_owned(),
            source: source.to_owned(),
            added_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        };
        let json = serde_json::to_string(&stored).expect("workflows serialize");
        let write = self.db().begin_write().map_err(|e| self.redb(e))?;
        write
            .open_table(WORKFLOWS)
            .map_err(|e| self.redb(e))?
            .insert((tenant, name, version), json.as_str())
            .map_err(|e| self.redb(e))?;
        write.commit().map_err(|e| self.redb(e))?;
        Ok((version, true))
    }
}
