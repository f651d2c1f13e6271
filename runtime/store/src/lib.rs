//! The redb file: what survives the process.
//!
//! One [`Store`] wraps one redb database. Every table is keyed by tenant first,
//! so many tenants can share a file; embedded mode uses [`DEFAULT_TENANT`].
//! A `meta` table records the file's format version: a file written by a newer
//! release is refused rather than misread. The tables are documented in
//! `docs/storage.md`; [`plugins`] owns the plugin tables, [`breakers`] the
//! circuit breaker states, [`workflows`] registered sub-workflows,
//! [`executions`] the per-execution files beside the store.

pub mod breakers;
pub mod conformance;
pub mod executions;
pub mod plugins;
pub mod responses;
pub mod workflows;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use redb::{Database, DatabaseError, ReadableDatabase, TableDefinition};

/// The tenant of embedded mode (`runtime run`, `runtime install`).
pub const DEFAULT_TENANT: &str = "default";

/// The format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// Environment variable naming the store file.
pub const STORE_ENV: &str = "ORCHESTRATOR_STORE";

const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
const FORMAT_KEY: &str = "format_version";

/// What an in-memory store gives as its path.
const MEMORY: &str = "(memory)";

/// How long to wait for another process that has the file open.
const OPEN_PATIENCE: Duration = Duration::from_secs(30);

/// Why the store could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file could not be opened or created.
    #[error("cannot open the store {path}: {reason}")]
    Open {
        /// The file.
        path: PathBuf,
        /// What went wrong and what to do.
        reason: String,
    },
    /// The file was written by a release that uses a newer format.
    #[error(
        "the store {path} has format version {found}; this runtime reads version {FORMAT_VERSION}. Use a newer runtime, or point --store at another file"
    )]
    NewerFormat {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: u32,
    },
    /// A read or write failed.
    #[error("store {path}: {source}")]
    Redb {
        /// The file.
        path: PathBuf,
        /// redb's error.
        source: redb::Error,
    },
    /// A stored record could not be decoded.
    #[error("store {path}: a stored record is damaged ({reason})")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What could not be read.
        reason: String,
    },
}

/// The open database.
pub struct Store {
    db: Database,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// The file used when neither `--store` nor `ORCHESTRATOR_STORE` says otherwise:
    /// `store.redb` under the user's data directory.
    pub fn default_path() -> PathBuf {
        dirs::data_dir()
            .unwrap_or_else(|| PathBuf::from("."))
            .join("llm-orchestrator")
            .join("store.redb")
    }

    /// Opens (or creates) the store at `path`. If another process has it
    /// open, waits for it up to half a minute.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let open_error = |reason: String| StoreError::Open {
            path: path.to_owned(),
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
            db,
            path: path.to_owned(),
        };
        store.check_format()?;
        Ok(store)
    }

    /// A store in memory (redb's in-memory backend): nothing survives the
    /// process. For embedding and tests.
    pub fn in_memory() -> Result<Self, StoreError> {
        let path = PathBuf::from(MEMORY);
        let db = redb::Builder::new()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(|e| StoreError::Open {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        let store = Self { db, path };
        store.check_format()?;
        Ok(store)
    }

    /// Whether it is kept in memory ([`Store::in_memory`]).
    pub fn is_in_memory(&self) -> bool {
        self.path.as_os_str() == MEMORY
    }

    /// The file (`(memory)` for a store in memory).
    pub fn path(&self) -> &Path {
        &self.path
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
                    path: self.path.clone(),
                    found,
                }),
                Err(_) => Err(self.corrupt(format!("format version `{text}`"))),
            },
        }
    }

    pub(crate) fn redb(&self, e: impl Into<redb::Error>) -> StoreError {
        StoreError::Redb {
            path: self.path.clone(),
            source: e.into(),
        }
    }

    pub(crate) fn corrupt(&self, reason: String) -> StoreError {
        StoreError::Corrupt {
            path: self.path.clone(),
            reason,
        }
    }

    pub(crate) fn db(&self) -> &Database {
        &self.db
    }
}
