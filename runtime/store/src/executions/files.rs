//! The executions directory beside a store: one `<id>.redb` per execution
//! and its control socket; creating, finding and opening those files so that
//! a file this runtime cannot read is never written.

use std::path::{Path, PathBuf};

use orchestrator_core::tenant::TenantId;

use redb::{Database, DatabaseError, ReadOnlyDatabase};

use super::{Db, ExecutionError, ExecutionLog, ExecutionRecord, unreadable};

/// The executions directory of a store.
#[derive(Debug, Clone)]
pub struct Executions {
    dir: PathBuf,
}

impl Executions {
    /// The executions kept beside the store file `store`.
    pub fn beside(store: &Path) -> Self {
        Self::for_tenant(store, &TenantId::default())
    }

    /// The executions of `tenant` kept beside the store file `store`:
    /// `executions/` for the default tenant, `executions/tenants/<id>/`
    /// for the others, so no id of one tenant names another's file.
    pub fn for_tenant(store: &Path, tenant: &TenantId) -> Self {
        let parent = store.parent().unwrap_or(Path::new("."));
        let dir = parent.join("executions");
        Self {
            dir: if tenant.is_default() {
                dir
            } else {
                dir.join("tenants").join(tenant.as_str())
            },
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of execution `id`.
    pub fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.redb"))
    }

    /// The control socket of a live execution `id`.
    pub fn socket(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.sock"))
    }

    /// Creates the file of a new execution and records its start.
    pub fn create(&self, record: &ExecutionRecord) -> Result<ExecutionLog, ExecutionError> {
        let path = self.path(&record.id);
        if !valid_id(&record.id) {
            return Err(ExecutionError::Unreadable {
                path,
                reason: "an execution id is 1 to 200 letters, digits, `-` and `_`".into(),
            });
        }
        orchestrator_private::create_dir(&self.dir).map_err(|e| ExecutionError::Unreadable {
            path: self.dir.clone(),
            reason: format!("cannot create the directory: {e}"),
        })?;
        if path.exists() {
            return Err(ExecutionError::Unreadable {
                path,
                reason: "an execution with this id exists already".into(),
            });
        }
        orchestrator_private::prepare_file(&path).map_err(|e| unreadable(&path, e))?;
        let db = Database::create(&path).map_err(|e| unreadable(&path, e))?;
        ExecutionLog::init(Db::Write(db), path, record)
    }

    /// Like [`Executions::create`], on a storage backend of the caller's
    /// (tests inject faults this way). The file named by the record's id is
    /// only used in messages.
    pub fn create_with_backend(
        &self,
        record: &ExecutionRecord,
        backend: impl redb::StorageBackend,
    ) -> Result<ExecutionLog, ExecutionError> {
        let path = self.path(&record.id);
        let db = redb::Builder::new()
            .create_with_backend(backend)
            .map_err(|e| unreadable(&path, e))?;
        ExecutionLog::init(Db::Write(db), path, record)
    }

    /// Opens execution `id` to read it, without writing to the file.
    /// Fails with [`ExecutionError::Busy`] while another process runs it.
    pub fn read(&self, id: &str) -> Result<ExecutionLog, ExecutionError> {
        let path = self.existing(id)?;
        match ReadOnlyDatabase::open(&path) {
            Ok(db) => ExecutionLog::new(Db::Read(db), path).check_format(),
            Err(DatabaseError::DatabaseAlreadyOpen) => Err(ExecutionError::Busy(id.to_owned())),
            // A file left unclean by a killed process needs the repair only
            // a writable open does; `open` checks the format before that.
            Err(_) => self.open(id),
        }
    }

    /// Opens execution `id` for this process (to resume or cancel it). The
    /// file is checked read-only first, so a file this runtime cannot read
    /// is never written to. Fails with [`ExecutionError::Busy`] while
    /// another process runs it.
    pub fn open(&self, id: &str) -> Result<ExecutionLog, ExecutionError> {
        let path = self.existing(id)?;
        match ReadOnlyDatabase::open(&path) {
            Ok(db) => drop(ExecutionLog::new(Db::Read(db), path.clone()).check_format()?),
            Err(DatabaseError::DatabaseAlreadyOpen) => {
                return Err(ExecutionError::Busy(id.to_owned()));
            }
            Err(e) if !redb_file(&path) => return Err(unreadable(&path, e)),
            // A redb file that needs repair: repaired below, then checked.
            Err(_) => {}
        }
        let db = match Database::open(&path) {
            Ok(db) => db,
            Err(DatabaseError::DatabaseAlreadyOpen) => {
                return Err(ExecutionError::Busy(id.to_owned()));
            }
            Err(e) => return Err(unreadable(&path, e)),
        };
        ExecutionLog::new(Db::Write(db), path).check_format()
    }

    fn existing(&self, id: &str) -> Result<PathBuf, ExecutionError> {
        let path = self.path(id);
        if valid_id(id) && path.is_file() {
            Ok(path)
        } else {
            Err(ExecutionError::Unknown {
                id: id.to_owned(),
                dir: self.dir.clone(),
            })
        }
    }

    /// Ids of every execution, oldest first.
    pub fn ids(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut ids: Vec<String> = entries
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                name.strip_suffix(".redb").map(str::to_owned)
            })
            .collect();
        ids.sort();
        ids
    }
}

/// Whether the file starts with redb's magic number.
fn redb_file(path: &Path) -> bool {
    let mut magic = [0u8; 9];
    std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .is_ok_and(|()| magic == *b"redb\x1a\x0a\xa9\x0d\x0a")
}

/// Execution ids are generated here; anything else is not looked up.
/// Whether `id` may name an execution: 1 to 200 ASCII letters, digits,
/// `-` and `_` (it becomes a file name).
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 200
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}
