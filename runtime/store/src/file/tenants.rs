//! Tenant records in the store file.
//!
//! | table | key | value |
//! |---|---|---|
//! | `tenants` | tenant id | `TenantRecord` JSON (its limits) |

use redb::{ReadableDatabase, ReadableTable, TableDefinition, TableError};

use super::FileStore;
use crate::StoreError;
use crate::tenants::{TenantLimits, TenantRecord, TenantsBackend};

const TENANTS: TableDefinition<&str, &str> = TableDefinition::new("tenants");

impl FileStore {
    fn decode_tenant(&self, json: &str) -> Result<TenantRecord, StoreError> {
        serde_json::from_str(json).map_err(|e| self.corrupt(format!("tenant: {e}")))
    }
}

impl TenantsBackend for FileStore {
    fn create_tenant(&self, record: &TenantRecord) -> Result<bool, StoreError> {
        let json = serde_json::to_string(record).expect("tenants serialize");
        let write = self.db().begin_write().map_err(|e| self.redb(e))?;
        let taken = {
            let mut table = write.open_table(TENANTS).map_err(|e| self.redb(e))?;
            let taken = table
                .get(record.id.as_str())
                .map_err(|e| self.redb(e))?
                .is_some();
            if !taken {
                table
                    .insert(record.id.as_str(), json.as_str())
                    .map_err(|e| self.redb(e))?;
            }
            taken
        };
        write.commit().map_err(|e| self.redb(e))?;
        Ok(!taken)
    }

    fn tenant(&self, id: &str) -> Result<Option<TenantRecord>, StoreError> {
        let read = self.db().begin_read().map_err(|e| self.redb(e))?;
        let table = match read.open_table(TENANTS) {
            Ok(table) => table,
            Err(TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(self.redb(e)),
        };
        match table.get(id).map_err(|e| self.redb(e))? {
            Some(value) => Ok(Some(self.decode_tenant(value.value())?)),
            None => Ok(None),
        }
    }

    fn tenants(&self) -> Result<Vec<TenantRecord>, StoreError> {
        let read = self.db().begin_read().map_err(|e| self.redb(e))?;
        let table = match read.open_table(TENANTS) {
            Ok(table) => table,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(self.redb(e)),
        };
        let mut out = Vec::new();
        for entry in table.iter().map_err(|e| self.redb(e))? {
            let (_, value) = entry.map_err(|e| self.redb(e))?;
            out.push(self.decode_tenant(value.value())?);
        }
        Ok(out)
    }

    fn set_tenant_limits(&self, id: &str, limits: &TenantLimits) -> Result<bool, StoreError> {
        let write = self.db().begin_write().map_err(|e| self.redb(e))?;
        let found = {
            let mut table = write.open_table(TENANTS).map_err(|e| self.redb(e))?;
            let found = match table.get(id).map_err(|e| self.redb(e))? {
                Some(value) => Some(self.decode_tenant(value.value())?),
                None => None,
            };
            if let Some(mut record) = found.clone() {
                record.limits = limits.clone();
                let json = serde_json::to_string(&record).expect("tenants serialize");
                table.insert(id, json.as_str()).map_err(|e| self.redb(e))?;
            }
            found.is_some()
        };
        write.commit().map_err(|e| self.redb(e))?;
        Ok(found)
    }
}
