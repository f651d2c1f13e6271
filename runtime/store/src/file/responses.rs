//! The response cache of the file backend: a redb file of its own beside
//! the store (`responses.redb`), opened the first time it is used and then
//! held by this process (every handle in the process shares it). A second
//! process finds it taken: its lookups fail with a message saying so, and
//! its tasks run without the cache rather than wait.
//!
//! | table | key | value |
//! |---|---|---|
//! | `answers` | (tenant, key) | `CachedAnswer` JSON |

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use redb::{Database, DatabaseError, ReadableDatabase, TableDefinition};

use crate::StoreError;
use crate::responses::{CachedAnswer, ResponsesBackend, fresh};

const ANSWERS: TableDefinition<(&str, &str), &str> = TableDefinition::new("answers");

/// The cache files this process has open, by path: redb refuses a second
/// open of one file, in a process as across processes.
static OPEN: Mutex<Option<HashMap<PathBuf, Weak<Database>>>> = Mutex::new(None);

/// The cache file beside a store file.
#[derive(Debug)]
pub struct FileResponses {
    path: PathBuf,
    db: OnceLock<Result<Arc<Database>, String>>,
}

impl FileResponses {
    /// The cache beside the store file `store` (not opened yet).
    pub fn beside(store: &Path) -> Self {
        Self {
            path: store
                .parent()
                .unwrap_or(Path::new("."))
                .join("responses.redb"),
            db: OnceLock::new(),
        }
    }

    fn db(&self) -> Result<&Database, StoreError> {
        match self.db.get_or_init(|| open(&self.path)) {
            Ok(db) => Ok(db),
            Err(reason) => Err(StoreError::Open {
                location: self.path.display().to_string(),
                reason: reason.clone(),
            }),
        }
    }

    fn failed(&self, e: impl Into<redb::Error>) -> StoreError {
        super::failed(&self.path, e)
    }
}

/// The open cache file at `path`, shared with this process's other handles.
fn open(path: &Path) -> Result<Arc<Database>, String> {
    let mut open = OPEN.lock().unwrap_or_else(|e| e.into_inner());
    let open = open.get_or_insert_with(HashMap::new);
    open.retain(|_, db| db.strong_count() > 0);
    if let Some(db) = open.get(path).and_then(Weak::upgrade) {
        return Ok(db);
    }
    orchestrator_private::prepare_file(path).map_err(|e| format!("cannot create it: {e}"))?;
    let db = Database::create(path).map_err(|e| match e {
        DatabaseError::DatabaseAlreadyOpen => "it is in use by another runtime process".to_owned(),
        e => e.to_string(),
    })?;
    let db = Arc::new(db);
    open.insert(path.to_owned(), Arc::downgrade(&db));
    Ok(db)
}

impl ResponsesBackend for FileResponses {
    fn get(
        &self,
        tenant: &str,
        key: &str,
        now: u64,
        ttl_ms: u64,
    ) -> Result<Option<CachedAnswer>, StoreError> {
        let read = self.db()?.begin_read().map_err(|e| self.failed(e))?;
        let table = match read.open_table(ANSWERS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(self.failed(e)),
        };
        let Some(entry) = table.get((tenant, key)).map_err(|e| self.failed(e))? else {
            return Ok(None);
        };
        let answer: CachedAnswer =
            serde_json::from_str(entry.value()).map_err(|e| StoreError::Corrupt {
                location: self.path.display().to_string(),
                reason: format!("a cached answer: {e}"),
            })?;
        Ok(fresh(answer, now, ttl_ms))
    }

    fn put(&self, tenant: &str, key: &str, answer: &CachedAnswer) -> Result<(), StoreError> {
        let text = serde_json::to_string(answer).expect("answers serialize");
        let write = self.db()?.begin_write().map_err(|e| self.failed(e))?;
        {
            let mut table = write.open_table(ANSWERS).map_err(|e| self.failed(e))?;
            table
                .insert((tenant, key), text.as_str())
                .map_err(|e| self.failed(e))?;
        }
        write.commit().map_err(|e| self.failed(e))
    }
}
