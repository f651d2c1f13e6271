//! Breaker states in the store file, and [`FileBreakerLog`], which a
//! running process writes them through.
//!
//! | table | key | value |
//! |---|---|---|
//! | `breakers` | (tenant, breaker key: `plugin:<sha256>`) | `Breaker` JSON |

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use redb::{ReadableDatabase, TableDefinition, TableError};

use super::FileStore;
use crate::StoreError;
use crate::breakers::BreakersBackend;
use orchestrator_core::fault::Breaker;

const BREAKERS: TableDefinition<(&str, &str), &str> = TableDefinition::new("breakers");

impl BreakersBackend for FileStore {
    fn breakers(&self, tenant: &str) -> Result<BTreeMap<String, Breaker>, StoreError> {
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

    fn put_breaker(&self, tenant: &str, key: &str, breaker: &Breaker) -> Result<(), StoreError> {
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

/// Writes breaker states to the store file at a path, opening it for each
/// write: a running process does not keep the file, which other processes
/// (an install, another run) open between its writes.
#[derive(Debug, Clone)]
pub struct FileBreakerLog {
    path: PathBuf,
}

impl FileBreakerLog {
    /// A log writing to the store file `path`.
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
        }
    }
}

impl BreakersBackend for FileBreakerLog {
    fn breakers(&self, tenant: &str) -> Result<BTreeMap<String, Breaker>, StoreError> {
        FileStore::open(&self.path)?.breakers(tenant)
    }

    fn put_breaker(&self, tenant: &str, key: &str, breaker: &Breaker) -> Result<(), StoreError> {
        FileStore::open(&self.path)?.put_breaker(tenant, key, breaker)
    }
}
