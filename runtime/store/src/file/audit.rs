//! The audit log in the store file.
//!
//! | table | key | value |
//! |---|---|---|
//! | `audit` | (tenant, number from 1) | `AuditEntry` JSON |
//! | `audit_numbers` | tenant | the last number given (pruning keeps it) |

use redb::{ReadableDatabase, ReadableTable, TableDefinition, TableError};

use super::FileStore;
use crate::StoreError;
use crate::audit::{AuditBackend, AuditEntry};

const AUDIT: TableDefinition<(&str, u64), &str> = TableDefinition::new("audit");
const NUMBERS: TableDefinition<&str, u64> = TableDefinition::new("audit_numbers");

impl AuditBackend for FileStore {
    fn append_audit(&self, entry: &AuditEntry) -> Result<u64, StoreError> {
        let json = serde_json::to_string(entry).expect("audit entries serialize");
        let tenant = entry.tenant.as_str();
        let write = self.db().begin_write().map_err(|e| self.redb(e))?;
        let number = {
            let mut numbers = write.open_table(NUMBERS).map_err(|e| self.redb(e))?;
            let last = numbers
                .get(tenant)
                .map_err(|e| self.redb(e))?
                .map_or(0, |n| n.value());
            numbers.insert(tenant, last + 1).map_err(|e| self.redb(e))?;
            write
                .open_table(AUDIT)
                .map_err(|e| self.redb(e))?
                .insert((tenant, last + 1), json.as_str())
                .map_err(|e| self.redb(e))?;
            last + 1
        };
        write.commit().map_err(|e| self.redb(e))?;
        Ok(number)
    }

    fn audit(
        &self,
        tenant: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, AuditEntry)>, StoreError> {
        let read = self.db().begin_read().map_err(|e| self.redb(e))?;
        let table = match read.open_table(AUDIT) {
            Ok(table) => table,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(self.redb(e)),
        };
        let mut out = Vec::new();
        let from = after.saturating_add(1);
        for row in table
            .range((tenant, from)..=(tenant, u64::MAX))
            .map_err(|e| self.redb(e))?
            .take(limit)
        {
            let (key, value) = row.map_err(|e| self.redb(e))?;
            let entry = serde_json::from_str(value.value())
                .map_err(|e| self.corrupt(format!("audit entry: {e}")))?;
            out.push((key.value().1, entry));
        }
        Ok(out)
    }

    fn prune_audit(&self, before: u64) -> Result<usize, StoreError> {
        let write = self.db().begin_write().map_err(|e| self.redb(e))?;
        let pruned = {
            let mut table = write.open_table(AUDIT).map_err(|e| self.redb(e))?;
            let mut old = Vec::new();
            for row in table.iter().map_err(|e| self.redb(e))? {
                let (key, value) = row.map_err(|e| self.redb(e))?;
                let entry: AuditEntry = serde_json::from_str(value.value())
                    .map_err(|e| self.corrupt(format!("audit entry: {e}")))?;
                if entry.at < before {
                    let (tenant, number) = key.value();
                    old.push((tenant.to_owned(), number));
                }
            }
            for (tenant, number) in &old {
                table
                    .remove((tenant.as_str(), *number))
                    .map_err(|e| self.redb(e))?;
            }
            old.len()
        };
        write.commit().map_err(|e| self.redb(e))?;
        Ok(pruned)
    }
}
