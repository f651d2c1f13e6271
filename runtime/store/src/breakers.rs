//! Circuit breaker states in the store: read when a run starts, written
//! when a breaker changes state, so an open breaker stays open across runs,
//! processes and restarts.
//!
//! | table | key | value |
//! |---|---|---|
//! | `breakers` | (tenant, breaker key: `plugin:<sha256>`) | [`Breaker`] JSON |

use std::collections::BTreeMap;

use redb::{ReadableDatabase, TableDefinition, TableError};

use super::{Store, StoreError};
use orchestrator_core::fault::Breaker;

const BREAKERS: TableDefinition<(&str, &str), &str> = TableDefinition::new("breakers");

impl Store {
    /// Every breaker of `tenant`, by key.
    pub fn breakers(&self, tenant: &str) -> Result<BTreeMap<String, Breaker>, StoreError> {
        let read = self.db().begin_read().map_err(|e| self.redb(e))?;
        let table = match read.open_table(BREAKERS) {
            Ok(table) => table,
            Err(TableError::TableDoesNotExist(_)) => return Ok(BTreeMap::new()),
            Err(e) => return Err(self.redb(e)),
        };
        let mut out = BTreeMap::new();
        for entry in table.range((tenant, "")..).map_err(|e| self.redb(e))? {
            let (key, value) = entry.map_err(|e| self.redb(e))?;
            let (t, name) = key.value();
            if t != tenant {
                break;
            }
            let breaker = serde_json::from_str(value.value())
                .map_err(|e| self.corrupt(format!("breaker {name}: {e}")))?;
            out.insert(name.to_owned(), breaker);
        }
        Ok(out)
    }

    /// Records breaker `key` of `tenant`.
    pub fn put_breaker(
        &self,
        tenant: &str,
        key: &str,
        breaker: &Breaker,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(breaker).expect("breakers serialize");
        let write = self.db().begin_write().map_err(|e| self.redb(e))?;
        write
            .open_table(BREAKERS)
            .map_err(|e| self.redb(e))?
            .insert((tenant, key), json.as_str())
            .map_err(|e| self.redb(e))?;
        write.commit().map_err(|e| self.redb(e))
    }
}
