//! The redb backend: one file per execution, `<id>.redb` in the tenant's
//! executions directory, with its control socket `<id>.sock` beside it.
//!
//! | table | key | value |
//! |---|---|---|
//! | `meta` | `"format_version"`, `"record"`, `"lease"` | format (decimal text); [`ExecutionRecord`] JSON; [`Lease`] JSON |
//! | `log` | `0x00` + sequence number (u64 big-endian, from 0) | an event: [`LogEvent`] JSON |
//! | `log` | `0x01` + task id (UTF-8) | a task's final state: [`TaskReport`] JSON (output replaced by a blob reference when large) |
//! | `blobs` | sha256 hex of the JSON text | the output's JSON text |
//! | `signals` | signal name | its payload, JSON |
//! | `retries` | task id | a scheduled retry ([`PendingRetry`]) |
//! | `dead_letters` | task id | a failed task in the dead-letter queue ([`DeadLetter`]) |
//! | `overrides` | task id | the input a dead-letter replay runs the task with, JSON |
//! | `waits` | task id | the wait's deadline, ms since the epoch (0: none) |
//!
//! The event log and the task states are two key ranges of one table, not
//! two tables: a strict chain commits once per step, and every B-tree a
//! commit touches is more pages to write and sync (a second table cost ~40 µs
//! per commit, measured; see `docs/PERFORMANCE.md`).
//!
//! Ownership: redb locks a file for the process that opens it to write.
//! Within a process, every writer of one execution shares one open
//! database and the [`Lease`] decides who writes. Across processes the
//! file lock decides: another process cannot open the file while its owner
//! has it (it is [`ExecutionError::Busy`] there; the owner answers on the
//! control socket), and a process that can open it knows every earlier
//! holder is gone, so their leases no longer keep it out.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use redb::{Database, DatabaseError, Durability, ReadOnlyDatabase};

use orchestrator_core::tenant::TenantId;

use super::backend::{Change, ExecutionsBackend, Lease, LogBackend};
use super::listing::{ListQuery, Page, Summary};
use super::{
    EventKind, ExecutionError, ExecutionLog, ExecutionRecord, ExecutionStatus, FORMAT_VERSION,
    LEASE_TTL, LogEvent, millis, now_ms, process_owner, valid_id,
};
use file::{
    BLOBS, DEAD_LETTERS, Db, META, OVERRIDES, RETRIES, RedbLog, SIGNALS, Shared, WAITS, share,
    shared, unreadable,
};
use index::Index;

mod file;
mod index;

/// One tenant's executions directory.
#[derive(Debug, Clone)]
pub struct RedbExecutions {
    dir: PathBuf,
    index: Index,
}

impl RedbExecutions {
    /// The executions of `tenant` kept beside the store file `store`:
    /// `executions/` for the default tenant, `executions/tenants/<id>/`
    /// for the others, so no id of one tenant names another's file.
    pub fn for_tenant(store: &Path, tenant: &TenantId) -> Self {
        let parent = store.parent().unwrap_or(Path::new("."));
        let dir = parent.join("executions");
        let dir = if tenant.is_default() {
            dir
        } else {
            dir.join("tenants").join(tenant.as_str())
        };
        Self {
            index: Index::in_dir(&dir),
            dir,
        }
    }

    /// The tenants other than the default one with an executions
    /// directory beside the store file `store`: whoever ran something
    /// there, however they were let in.
    pub fn tenants_beside(store: &Path) -> Vec<TenantId> {
        let parent = store.parent().unwrap_or(Path::new("."));
        let Ok(entries) = std::fs::read_dir(parent.join("executions").join("tenants")) else {
            return Vec::new();
        };
        entries
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| TenantId::new(e.file_name().to_str()?).ok())
            .collect()
    }

    /// The summary of every execution file that can be read now (one a
    /// live process holds cannot: its entry comes with its next record
    /// change).
    fn summaries(&self) -> Vec<Summary> {
        self.ids()
            .iter()
            .filter_map(|id| file::summary(self.open(id, false).ok()?.as_ref()).ok())
            .collect()
    }

    /// Writes listing entries for executions in one transaction, as if
    /// they had been created here: for moving executions in from
    /// elsewhere, and how the listing bench fills an index with 100,000.
    pub fn put_summaries(&self, summaries: &[Summary]) -> Result<(), ExecutionError> {
        self.index.put(&|| self.summaries(), summaries)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file of execution `id`.
    pub fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.redb"))
    }

    fn existing(&self, id: &str) -> Result<PathBuf, ExecutionError> {
        let path = self.path(id);
        if valid_id(id) && path.is_file() {
            Ok(path)
        } else {
            Err(ExecutionError::Unknown {
                id: id.to_owned(),
                location: self.dir.display().to_string(),
            })
        }
    }

    fn init(
        files: Option<Self>,
        db: Database,
        path: PathBuf,
        record: &ExecutionRecord,
        first: &LogEvent,
        owner: &str,
        ttl_ms: u64,
    ) -> Result<(Box<dyn LogBackend>, Lease), ExecutionError> {
        let shared = Arc::new(Shared {
            db,
            void_through: AtomicU64::new(0),
        });
        share(&path, &shared);
        let log = RedbLog {
            db: Db::Write(Arc::clone(&shared)),
            path,
            files,
        };
        let lease = Lease::take(None, owner, now_ms(), ttl_ms, 0).expect("no lease yet");
        let change = Change {
            events: vec![first.clone()],
            record: Some(record.clone()),
            lease: Some(lease.clone()),
            ..Change::default()
        };
        let run = || -> Result<(), redb::Error> {
            let mut w = shared.db.begin_write()?;
            w.set_durability(Durability::Immediate)?;
            {
                let mut meta = w.open_table(META)?;
                meta.insert("format_version", FORMAT_VERSION.to_string().as_str())?;
            }
            w.open_table(BLOBS)?;
            w.open_table(SIGNALS)?;
            w.open_table(WAITS)?;
            w.open_table(RETRIES)?;
            w.open_table(DEAD_LETTERS)?;
            w.open_table(OVERRIDES)?;
            RedbLog::write(&w, &change)?;
            w.commit()?;
            Ok(())
        };
        run().map_err(|e| log.redb(e))?;
        Ok((Box::new(log), lease))
    }

    /// Records a new execution like [`super::Executions::create`], on a
    /// redb storage backend of the caller's (tests inject faults this
    /// way). The file named by the record's id is only used in messages,
    /// and other handles do not share this one.
    pub fn create_on(
        &self,
        record: &ExecutionRecord,
        storage: impl redb::StorageBackend,
    ) -> Result<ExecutionLog, ExecutionError> {
        let path = self.path(&record.id);
        let db = redb::Builder::new()
            .create_with_backend(storage)
            .map_err(|e| unreadable(&path, e))?;
        let first = LogEvent {
            at: now_ms(),
            kind: EventKind::ExecutionStarted {
                workflow: record.workflow.clone(),
            },
        };
        let ttl = millis(LEASE_TTL);
        let (log, lease) = Self::init(
            None,
            db,
            path.with_extension("injected"),
            record,
            &first,
            process_owner(),
            ttl,
        )?;
        Ok(ExecutionLog::new(log, Some(lease), ttl))
    }

    /// Opens execution `id` to write.
    fn open_write(&self, path: PathBuf, id: &str) -> Result<RedbLog, ExecutionError> {
        match ReadOnlyDatabase::open(&path) {
            Ok(db) => drop(
                RedbLog {
                    db: Db::Read(db),
                    path: path.clone(),
                    files: Some(self.clone()),
                }
                .check_format()?,
            ),
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
        let log = RedbLog {
            db: Db::Write(Arc::new(Shared {
                db,
                void_through: AtomicU64::new(0),
            })),
            path: path.clone(),
            files: Some(self.clone()),
        }
        .check_format()?;
        let void_through = log.lease()?.0.map_or(0, |l| l.epoch);
        if let Db::Write(shared) = &log.db {
            shared.void_through.store(void_through, Ordering::Relaxed);
            share(&path, shared);
        }
        Ok(log)
    }
}

impl ExecutionsBackend for RedbExecutions {
    fn location(&self) -> String {
        self.dir.display().to_string()
    }

    fn create(
        &self,
        record: &ExecutionRecord,
        first: &LogEvent,
        owner: &str,
        ttl_ms: u64,
    ) -> Result<(Box<dyn LogBackend>, Lease), ExecutionError> {
        let path = self.path(&record.id);
        orchestrator_private::create_dir(&self.dir).map_err(|e| ExecutionError::Unreadable {
            location: self.dir.display().to_string(),
            reason: format!("cannot create the directory: {e}"),
        })?;
        if path.exists() {
            return Err(ExecutionError::Exists(record.id.clone()));
        }
        // Before the file: an entry whose file is missing is dropped by a
        // listing; a file without an entry would be missed.
        self.index
            .put(&|| self.summaries(), &[Summary::of(record)])?;
        // Created by another process meanwhile: refused; if the entry above
        // replaced that execution's, the next listing mends it.
        if path.exists() {
            return Err(ExecutionError::Exists(record.id.clone()));
        }
        orchestrator_private::prepare_file(&path).map_err(|e| unreadable(&path, e))?;
        let db = Database::create(&path).map_err(|e| unreadable(&path, e))?;
        Self::init(Some(self.clone()), db, path, record, first, owner, ttl_ms)
    }

    fn open(&self, id: &str, write: bool) -> Result<Box<dyn LogBackend>, ExecutionError> {
        let path = self.existing(id)?;
        if let Some(shared) = shared(&path) {
            return Ok(Box::new(RedbLog {
                db: Db::Write(shared),
                path,
                files: Some(self.clone()),
            }));
        }
        if write {
            return Ok(Box::new(self.open_write(path, id)?));
        }
        match ReadOnlyDatabase::open(&path) {
            Ok(db) => Ok(Box::new(
                RedbLog {
                    db: Db::Read(db),
                    path,
                    files: Some(self.clone()),
                }
                .check_format()?,
            )),
            Err(DatabaseError::DatabaseAlreadyOpen) => Err(ExecutionError::Busy(id.to_owned())),
            // A file left unclean by a killed process needs the repair only
            // a writable open does; `open_write` checks the format first.
            Err(_) => Ok(Box::new(self.open_write(path, id)?)),
        }
    }

    fn exists(&self, id: &str) -> bool {
        self.existing(id).is_ok()
    }

    fn ids(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut ids: Vec<String> = entries
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                name.strip_suffix(".redb")
                    .filter(|id| valid_id(id))
                    .map(str::to_owned)
            })
            .collect();
        ids.sort();
        ids
    }

    fn stored_bytes(&self) -> u64 {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        // The files of this tenant, its index included; not the
        // directories of other tenants below the default one's.
        entries
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".redb"))
            .filter_map(|e| e.metadata().ok())
            .filter(std::fs::Metadata::is_file)
            .map(|m| m.len())
            .sum()
    }

    fn remove(&self, id: &str) -> Result<(), ExecutionError> {
        let path = self.existing(id)?;
        std::fs::remove_file(&path).map_err(|e| ExecutionError::Backend {
            location: path.display().to_string(),
            reason: e.to_string(),
        })?;
        self.index.remove(&|| self.summaries(), id)
    }

    fn open_dead_letters(&self) -> Result<u64, ExecutionError> {
        self.index.dead_letters(&|| self.summaries())
    }

    fn list(&self, query: &ListQuery) -> Result<Page, ExecutionError> {
        let mut page = self.index.list(&|| self.summaries(), query)?;
        // Mend the entries of runs whose process died before its entry
        // caught up (or whose index write failed): read their records.
        let mut mended = Vec::new();
        page.items.retain_mut(|summary| {
            // Removed while its entry stayed (a removal cut short).
            if !self.path(&summary.id).is_file() {
                mended.push((summary.id.clone(), None));
                return false;
            }
            if summary.status != ExecutionStatus::Running {
                return true;
            }
            match self
                .open(&summary.id, false)
                .and_then(|log| file::summary(log.as_ref()))
            {
                Ok(fresh) => {
                    if fresh != *summary {
                        *summary = fresh.clone();
                        mended.push((summary.id.clone(), Some(fresh)));
                    }
                    summary.matches(query)
                }
                Err(ExecutionError::Unknown { .. }) => {
                    mended.push((summary.id.clone(), None));
                    false
                }
                Err(_) => true,
            }
        });
        for (id, fresh) in mended {
            let _ = match fresh {
                Some(fresh) => self.index.put(&|| self.summaries(), &[fresh]),
                None => self.index.remove(&|| self.summaries(), &id),
            };
        }
        Ok(page)
    }

    fn socket(&self, id: &str) -> Option<PathBuf> {
        Some(self.dir.join(format!("{id}.sock")))
    }
}

/// Whether the file starts with redb's magic number.
fn redb_file(path: &Path) -> bool {
    let mut magic = [0u8; 9];
    std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .is_ok_and(|()| magic == *b"redb\x1a\x0a\xa9\x0d\x0a")
}

#[cfg(test)]
mod tests {
    use super::file::{LOG, task_key};
    use super::*;
    use crate::conformance::{failed, record, report};
    use crate::executions::{ExecutionStatus, Executions};
    use redb::{ReadableDatabase, ReadableTableMetadata};

    #[test]
    fn the_tenants_that_ran_something_are_found_beside_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store.redb");
        assert!(RedbExecutions::tenants_beside(&store).is_empty());
        let acme = TenantId::new("acme").unwrap();
        let files = RedbExecutions::for_tenant(&store, &acme);
        std::fs::create_dir_all(files.dir()).unwrap();
        std::fs::create_dir_all(RedbExecutions::for_tenant(&store, &TenantId::default()).dir())
            .unwrap();
        // Not tenants: a file, and a name no tenant could have.
        let tenants = files.dir().parent().unwrap().to_owned();
        std::fs::write(tenants.join("notes"), "").unwrap();
        std::fs::create_dir(tenants.join("Not A Tenant!")).unwrap();
        assert_eq!(RedbExecutions::tenants_beside(&store), vec![acme]);
    }

    #[test]
    fn large_outputs_are_stored_once_and_the_state_refers_to_them() {
        let dir = tempfile::tempdir().unwrap();
        let executions = Executions::beside(&dir.path().join("store.redb"));
        let log = executions.create(&record("e1")).unwrap();
        let big = serde_json::json!({ "text": "x".repeat(5000) });
        log.commit_tasks(&[report("a", Some(big.clone()))]).unwrap();
        log.commit_tasks(&[report("b", Some(big))]).unwrap();
        drop(log);
        let files =
            RedbExecutions::for_tenant(&dir.path().join("store.redb"), &TenantId::default());
        let db = ReadOnlyDatabase::open(files.path("e1")).unwrap();
        let read = db.begin_read().unwrap();
        assert_eq!(read.open_table(BLOBS).unwrap().len().unwrap(), 1);
        let stored = read.open_table(LOG).unwrap();
        let a = stored.get(task_key("a").as_slice()).unwrap().unwrap();
        assert!(a.value().len() < 1000, "the state refers to the blob");
    }

    #[test]
    fn an_index_built_again_counts_the_open_dead_letters() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store.redb");
        let executions = Executions::beside(&store);
        let log = executions.create(&record("e1")).unwrap();
        log.commit_tasks(&[failed("a"), failed("b")]).unwrap();
        drop(log);
        assert_eq!(executions.open_dead_letters().unwrap(), 2);
        let index = dir.path().join("executions/.index.redb");
        // An index of an older version has no counts: it is built again.
        {
            let db = Database::create(&index).unwrap();
            let w = db.begin_write().unwrap();
            w.delete_table(redb::TableDefinition::<&str, u64>::new("counts"))
                .unwrap();
            w.open_table(redb::TableDefinition::<&str, &str>::new("meta"))
                .unwrap()
                .insert("built", "1")
                .unwrap();
            w.commit().unwrap();
        }
        assert_eq!(executions.open_dead_letters().unwrap(), 2);
        std::fs::remove_file(&index).unwrap();
        assert_eq!(executions.open_dead_letters().unwrap(), 2);
    }

    fn finished(executions: &Executions, id: &str, created_at: u64) {
        let log = executions
            .create(&ExecutionRecord {
                created_at,
                ..record(id)
            })
            .unwrap();
        log.finish(ExecutionStatus::Succeeded, None, serde_json::Map::new())
            .unwrap();
    }

    #[test]
    fn a_missing_index_is_rebuilt_and_a_lagging_entry_mended() {
        use crate::executions::listing::ListQuery;
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store.redb");
        let executions = Executions::beside(&store);
        let files = RedbExecutions::for_tenant(&store, &TenantId::default());
        for (i, id) in ["a", "b", "c"].iter().enumerate() {
            finished(&executions, id, 1000 + i as u64);
        }
        let all = |status| {
            executions
                .list(&ListQuery {
                    status,
                    limit: 10,
                    ..ListQuery::default()
                })
                .unwrap()
                .items
                .into_iter()
                .map(|s| (s.id, s.status))
                .collect::<Vec<_>>()
        };
        std::fs::remove_file(dir.path().join("executions/.index.redb")).unwrap();
        let rebuilt = all(None);
        assert_eq!(
            rebuilt,
            vec![
                ("c".to_owned(), ExecutionStatus::Succeeded),
                ("b".to_owned(), ExecutionStatus::Succeeded),
                ("a".to_owned(), ExecutionStatus::Succeeded),
            ]
        );
        // As if `b`'s process died between its finish and the index entry.
        let mut lagging = Summary::of(&executions.read("b").unwrap().record().unwrap());
        lagging.status = ExecutionStatus::Running;
        lagging.finished_at = None;
        files.index.put(&Vec::new, &[lagging]).unwrap();
        assert_eq!(all(None)[1], ("b".to_owned(), ExecutionStatus::Succeeded));
        assert!(all(Some(ExecutionStatus::Running)).is_empty());
        let raw = files
            .index
            .list(
                &Vec::new,
                &ListQuery {
                    status: Some(ExecutionStatus::Running),
                    limit: 10,
                    ..ListQuery::default()
                },
            )
            .unwrap();
        assert!(raw.items.is_empty(), "the entry itself was mended");
    }
}
