//! API keys in the store file.
//!
//! | table | key | value |
//! |---|---|---|
//! | `api_keys` | key id | `ApiKeyRecord` JSON (salted hash, no secret) |

use redb::{ReadableDatabase, ReadableTable, TableDefinition, TableError};

use super::FileStore;
use crate::StoreError;
use crate::keys::{ApiKeyRecord, KeysBackend};

const KEYS: TableDefinition<&str, &str> = TableDefinition::new("api_keys");

impl FileStore {
    fn decode_key(&self, json: &str) -> Result<ApiKeyRecord, StoreError> {
        serde_json::from_str(json).map_err(|e| self.corrupt(format!("API key: {e}")))
    }
}

impl KeysBackend for FileStore {
    fn put_key(&self, key: &ApiKeyRecord) -> Result<bool, StoreError> {
        let json = serde_json::to_string(key).expect("keys serialize");
        let write = self.db().begin_write().map_err(|e| self.redb(e))?;
        let taken = {
            let mut table = write.open_table(KEYS).map_err(|e| self.redb(e))?;
            let taken = table
                .get(key.id.as_str())
                .map_err(|e| self.redb(e))?
                .is_some();
            if !taken {
                table
                    .insert(key.id.as_str(), json.as_str())
                    .map_err(|e| self.redb(e))?;
            }
            taken
        };
        write.commit().map_err(|e| self.redb(e))?;
        Ok(!taken)
    }

    fn key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        let read = self.db().begin_read().map_err(|e| self.redb(e))?;
        let table = match read.open_table(KEYS) {
            Ok(table) => table,
            Err(TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(self.redb(e)),
        };
        match table.get(id).map_err(|e| self.redb(e))? {
            Some(value) => Ok(Some(self.decode_key(value.value())?)),
            None => Ok(None),
        }
    }

    fn keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        let read = self.db().begin_read().map_err(|e| self.redb(e))?;
        let table = match read.open_table(KEYS) {
            Ok(table) => table,
            Err(TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(self.redb(e)),
        };
        let mut out = Vec::new();
        for entry in table.iter().map_err(|e| self.redb(e))? {
            let (_, value) = entry.map_err(|e| self.redb(e))?;
            out.push(self.decode_key(value.value())?);
        }
        Ok(out)
    }

    fn revoke_key(&self, id: &str, at: u64) -> Result<bool, StoreError> {
        let write = self.db().begin_write().map_err(|e| self.redb(e))?;
        let found = {
            let mut table = write.open_table(KEYS).map_err(|e| self.redb(e))?;
            let found = match table.get(id).map_err(|e| self.redb(e))? {
                Some(value) => Some(self.decode_key(value.value())?),
                None => None,
            };
            if let Some(mut key) = found.clone() {
                key.revoked_at.get_or_insert(at);
                let json = serde_json::to_string(&key).expect("keys serialize");
                table.insert(id, json.as_str()).map_err(|e| self.redb(e))?;
            }
            found.is_some()
        };
        write.commit().map_err(|e| self.redb(e))?;
        Ok(found)
    }
}
