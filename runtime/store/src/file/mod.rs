//! The redb store file, the default backend: one file holding every
//! tenant's plugins, workflows and breakers (the tables are in
//! `docs/storage.md`), and the response cache in a file of its own beside
//! it. A `meta` table records the file's format version: a file written by
//! a newer release is refused rather than misread. redb lets one process
//! hold a file at a time, so a short-lived process opens the store for
//! what it does and closes it (another waits for it up to half a minute),
//! and a server holds it for its life ([`FileStore::hold`]), so that its
//! concurrent requests share one open database instead of taking turns.

mod audit;
mod breakers;
mod keys;
mod plugins;
mod responses;
mod tenants;
mod workflows;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::{Database, DatabaseError, ReadableDatabase, TableDefinition};

use crate::backend::{BreakersBackend, ResponsesBackend, StoreBackend};
use crate::{FORMAT_VERSION, StoreError};
pub use breakers::FileBreakerLog;
pub use responses::FileResponses;

const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
const FORMAT_KEY: &str = "format_version";

/// How long to wait for another process that has the file open.
const OPEN_PATIENCE: Duration = Duration::from_secs(30);

/// The open store file. Clones share the open database.
#[derive(Clone)]
pub struct FileStore {
    db: Arc<Database>,
    path: PathBuf,
    /// Whether this process keeps the file open for its life: then the
    /// breakers of a run are written through it, not by reopening it.
    held: bool,
}

impl std::fmt::Debug for FileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStore")
            .field("path", &self.path)
            .finish()
    }
}

impl FileStore {
    /// Opens (or creates) the store at `path`. If another process has it
    /// open, waits for it up to half a minute.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let open_error = |reason: String| StoreError::Open {
            location: path.display().to_string(),
            reason,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            orchestrator_private::create_dir(dir)
                .map_err(|e| open_error(format!("cannot create {}: {e}", dir.display())))?;
        }
        orchestrator_private::prepare_file(path)
            .map_err(|e| open_error(format!("cannot create it: {e}")))?;
        let started = Instant::now();
        let db = loop {
            match Database::create(path) {
                Ok(db) => break db,
                Err(DatabaseError::DatabaseAlreadyOpen) if started.elapsed() < OPEN_PATIENCE => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(DatabaseError::DatabaseAlreadyOpen) => {
                    return Err(open_error(
                        "another runtime process has kept it open for 30 s; wait for it to finish, or use another file with --store".into(),
                    ));
                }
                Err(e) => {
                    return Err(open_error(format!(
                        "{e}; it is not a store this runtime wrote (or it is damaged): point --store at another file"
                    )));
                }
            }
        };
        let store = Self {
            db: Arc::new(db),
            path: path.to_owned(),
            held: false,
        };
        store.check_format()?;
        Ok(store)
    }

    /// Opens the store at `path` as [`FileStore::open`] does, to keep it
    /// open for the life of the process: every clone, breaker log
    /// included, uses this one open database, and other processes cannot
    /// open the file meanwhile.
    pub fn hold(path: &Path) -> Result<Self, StoreError> {
        Ok(Self {
            held: true,
            ..Self::open(path)?
        })
    }

    fn check_format(&self) -> Result<(), StoreError> {
        let found = {
            let read = self.db.begin_read().map_err(|e| self.redb(e))?;
            match read.open_table(META) {
                Ok(table) => table
                    .get(FORMAT_KEY)
                    .map_err(|e| self.redb(e))?
                    .map(|v| v.value().to_owned()),
                Err(redb::TableError::TableDoesNotExist(_)) => None,
                Err(e) => return Err(self.redb(e)),
            }
        };
        match found {
            None => {
                let write = self.db.begin_write().map_err(|e| self.redb(e))?;
                {
                    let mut meta = write.open_table(META).map_err(|e| self.redb(e))?;
                    meta.insert(FORMAT_KEY, FORMAT_VERSION.to_string().as_str())
                        .map_err(|e| self.redb(e))?;
                }
                write.commit().map_err(|e| self.redb(e))
            }
            Some(text) => match text.parse::<u32>() {
                Ok(v) if v <= FORMAT_VERSION => Ok(()),
                Ok(found) => Err(StoreError::NewerFormat {
                    location: self.path.display().to_string(),
                    found,
                }),
                Err(_) => Err(self.corrupt(format!("format version `{text}`"))),
            },
        }
    }

    fn redb(&self, e: impl Into<redb::Error>) -> StoreError {
        failed(&self.path, e)
    }

    fn corrupt(&self, reason: String) -> StoreError {
        StoreError::Corrupt {
            location: self.path.display().to_string(),
            reason,
        }
    }

    fn db(&self) -> &Database {
        &self.db
    }
}

/// A failed read or write of the file at `path`.
fn failed(path: &Path, e: impl Into<redb::Error>) -> StoreError {
    StoreError::Failed {
        location: path.display().to_string(),
        reason: e.into().to_string(),
    }
}

impl StoreBackend for FileStore {
    fn location(&self) -> String {
        self.path.display().to_string()
    }

    fn file(&self) -> Option<&Path> {
        Some(&self.path)
    }

    fn breaker_log(&self) -> Arc<dyn BreakersBackend> {
        if self.held {
            Arc::new(self.clone())
        } else {
            Arc::new(FileBreakerLog::new(&self.path))
        }
    }

    fn responses(&self) -> Arc<dyn ResponsesBackend> {
        Arc::new(FileResponses::beside(&self.path))
    }
}
