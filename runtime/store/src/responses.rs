//! The response cache: answers of tasks that asked for `cache:`, kept in
//! their own redb file beside the store (`responses.redb`), which the
//! process running such tasks holds open. A second process finds it taken
//! and runs without the cache (a warning says so) rather than wait.
//!
//! Keys are content addresses computed by the caller (plugin digest and the
//! normalized request); an entry older than the asking task's `ttl` is a
//! miss (and is replaced by the fresh answer).

use std::path::{Path, PathBuf};

use redb::{Database, DatabaseError, ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};
use serde_json::Value;

const RESPONSES: TableDefinition<&str, &str> = TableDefinition::new("responses");

/// One cached answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedAnswer {
    /// The task's output.
    pub output: Value,
    /// The model that gave it, if the plugin said.
    pub model: Option<String>,
    /// When it was stored, ms since the epoch.
    pub stored_at: u64,
}

/// The open cache file.
#[derive(Debug)]
pub struct ResponseCache {
    db: Database,
    path: PathBuf,
}

impl ResponseCache {
    /// Opens (or creates) the cache beside the store file `store`.
    pub fn beside(store: &Path) -> Result<Self, String> {
        let path = store
            .parent()
            .unwrap_or(Path::new("."))
            .join("responses.redb");
        orchestrator_private::prepare_file(&path)
            .map_err(|e| format!("cannot create the response cache {}: {e}", path.display()))?;
        let db = Database::create(&path).map_err(|e| match e {
            DatabaseError::DatabaseAlreadyOpen => format!(
                "the response cache {} is in use by another runtime process",
                path.display()
            ),
            e => format!("cannot open the response cache {}: {e}", path.display()),
        })?;
        Ok(Self { db, path })
    }

    /// The answer stored under `key`, if it was stored less than `ttl_ms`
    /// before `now`.
    pub fn get(&self, key: &str, now: u64, ttl_ms: u64) -> Result<Option<CachedAnswer>, String> {
        let read = self.db.begin_read().map_err(|e| self.failed(e))?;
        let table = match read.open_table(RESPONSES) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(self.failed(e)),
        };
        let Some(entry) = table.get(key).map_err(|e| self.failed(e))? else {
            return Ok(None);
        };
        let answer: CachedAnswer = serde_json::from_str(entry.value())
            .map_err(|e| format!("{}: a damaged entry: {e}", self.path.display()))?;
        Ok((answer.stored_at.saturating_add(ttl_ms) > now).then_some(answer))
    }

    /// Stores `answer` under `key`, replacing what was there.
    pub fn put(&self, key: &str, answer: &CachedAnswer) -> Result<(), String> {
        let text = serde_json::to_string(answer).expect("answers serialize");
        let write = self.db.begin_write().map_err(|e| self.failed(e))?;
        {
            let mut table = write.open_table(RESPONSES).map_err(|e| self.failed(e))?;
            table
                .insert(key, text.as_str())
                .map_err(|e| self.failed(e))?;
        }
        write.commit().map_err(|e| self.failed(e))
    }

    fn failed(&self, e: impl Into<redb::Error>) -> String {
        format!("response cache {}: {}", self.path.display(), e.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_come_back_until_they_expire_and_a_second_opener_is_refused() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = dir.path().join("store.redb");
        let cache = ResponseCache::beside(&store).expect("it opens");
        assert_eq!(cache.get("k", 0, 100), Ok(None));
        let answer = CachedAnswer {
            output: serde_json::json!({ "text": "hi" }),
            model: Some("m".into()),
            stored_at: 100,
        };
        cache.put("k", &answer).expect("it stores");
        assert_eq!(cache.get("k", 150, 100), Ok(Some(answer)));
        assert_eq!(cache.get("k", 200, 100), Ok(None), "older than the ttl");
        let refused = ResponseCache::beside(&store).unwrap_err();
        assert!(
            refused.contains("in use by another runtime process"),
            "{refused}"
        );
    }
}
