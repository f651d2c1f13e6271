//! Registered workflows in the store file.
//!
//! | table | key | value |
//! |---|---|---|
//! | `workflows` | (tenant, name, version) | `StoredWorkflow` JSON |

use redb::{ReadableDatabase, ReadableTable, TableDefinition, TableError};

use super::FileStore;
use crate::StoreError;
use crate::workflows::{StoredWorkflow, WorkflowsBackend, next_version};

const WORKFLOWS: TableDefinition<(&str, &str, u64), &str> = TableDefinition::new("workflows");

impl FileStore {
    /// `tenant`'s workflows in `table`, by name then version.
    fn read_workflows(
        &self,
        table: &impl ReadableTable<(&'static str, &'static str, u64), &'static str>,
        tenant: &str,
    ) -> Result<Vec<StoredWorkflow>, StoreError> {
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
}

impl WorkflowsBackend for FileStore {
    fn workflows(&self, tenant: &str) -> Result<Vec<StoredWorkflow>, StoreError> {
        let read = self.db().begin_read().map_err(|e| self.redb(e))?;
        match read.open_table(WORKFLOWS) {
            Ok(table) => self.read_workflows(&table, tenant),
            Err(TableError::TableDoesNotExist(_)) => Ok(Vec::new()),
            Err(e) => Err(self.redb(e)),
        }
    }

    fn add_workflow(
        &self,
        tenant: &str,
        name: &str,
        file: &str,
        source: &str,
    ) -> Result<(u64, bool), StoreError> {
        let write = self.db().begin_write().map_err(|e| self.redb(e))?;
        let stored = {
            let mut table = write.open_table(WORKFLOWS).map_err(|e| self.redb(e))?;
            let kept = self.read_workflows(&table, tenant)?;
            match next_version(&kept, name, file, source) {
                Err(version) => Err(version),
                Ok(stored) => {
                    let json = serde_json::to_string(&stored).expect("workflows serialize");
                    table
                        .insert((tenant, name, stored.version), json.as_str())
                        .map_err(|e| self.redb(e))?;
                    Ok(stored.version)
                }
            }
        };
        match stored {
            Err(version) => {
                write.abort().map_err(|e| self.redb(e))?;
                Ok((version, false))
            }
            Ok(version) => {
                write.commit().map_err(|e| self.redb(e))?;
                Ok((version, true))
            }
        }
    }
}
