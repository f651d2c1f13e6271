//! The index of a tenant's execution files, `.index.redb` in their
//! directory: what listing reads instead of opening every file.
//!
//! | table | key | value |
//! |---|---|---|
//! | `meta` | `"built"` | [`BUILT`] once it holds every execution file |
//! | `summaries` | execution id | its [`Summary`], JSON |
//! | `counts` | `"dead_letters"` | open dead letters, the sum over summaries |
//! | `by_time` | (start time, id) | its status (byte) |
//! | `by_status` | (status byte, start time, id) | nothing |
//!
//! An entry is written before its execution file is created and after each
//! change of its record, outside the execution's transaction, so it lags
//! when its process dies in between or the write fails: a listing drops
//! entries whose file is gone and reads the record of every entry that
//! says `running`, mending the entry. The file is opened for one operation at
//! a time (other processes wait their turn), and built from the files when
//! it is missing: delete it to have it rebuilt.

use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redb::{Database, DatabaseError, ReadableDatabase, ReadableTable, TableDefinition};

use crate::executions::listing::{ListQuery, Page, Summary, page};
use crate::executions::{ExecutionError, ExecutionStatus, json};

const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
const SUMMARIES: TableDefinition<&str, &str> = TableDefinition::new("summaries");
const BY_TIME: TableDefinition<(u64, &str), u8> = TableDefinition::new("by_time");
const BY_STATUS: TableDefinition<(u8, u64, &str), ()> = TableDefinition::new("by_status");
const COUNTS: TableDefinition<&str, u64> = TableDefinition::new("counts");

/// What `meta.built` says of an index built with every table above; an
/// index built by an older version (`1`: no counts) is built again.
const BUILT: &str = "2";
const DEAD_LETTERS: &str = "dead_letters";

/// How long to wait for another process using the index.
const PATIENCE: Duration = Duration::from_secs(30);

/// One operation on an index at a time in this process (redb refuses a
/// second open of a file).
static IN_USE: Mutex<()> = Mutex::new(());

fn code(status: ExecutionStatus) -> u8 {
    match status {
        ExecutionStatus::Running => 0,
        ExecutionStatus::Succeeded => 1,
        ExecutionStatus::Failed => 2,
        ExecutionStatus::Cancelled => 3,
    }
}

/// A tenant's index file.
#[derive(Debug, Clone)]
pub(super) struct Index {
    path: PathBuf,
}

impl Index {
    /// The index of the executions in `dir`.
    pub(super) fn in_dir(dir: &Path) -> Self {
        Self {
            path: dir.join(".index.redb"),
        }
    }

    fn fail(&self, e: impl std::fmt::Display) -> ExecutionError {
        ExecutionError::Backend {
            location: self.path.display().to_string(),
            reason: format!("{e}; delete the file to have it rebuilt from the executions"),
        }
    }

    /// Runs `f` on the open index, built from `all` first if it is not.
    fn with<T>(
        &self,
        all: &dyn Fn() -> Vec<Summary>,
        f: impl FnOnce(&Database) -> Result<T, redb::Error>,
    ) -> Result<T, ExecutionError> {
        let _in_use = IN_USE
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(dir) = self.path.parent() {
            orchestrator_private::create_dir(dir).map_err(|e| self.fail(e))?;
        }
        orchestrator_private::prepare_file(&self.path).map_err(|e| self.fail(e))?;
        let started = Instant::now();
        let db = loop {
            match Database::create(&self.path) {
                Ok(db) => break db,
                Err(DatabaseError::DatabaseAlreadyOpen) if started.elapsed() < PATIENCE => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(self.fail(e)),
            }
        };
        let built = {
            let read = db.begin_read().map_err(|e| self.fail(e))?;
            match read.open_table(META) {
                Ok(meta) => meta
                    .get("built")
                    .map_err(|e| self.fail(e))?
                    .is_some_and(|v| v.value() == BUILT),
                Err(_) => false,
            }
        };
        if !built {
            let summaries = all();
            let write = || -> Result<(), redb::Error> {
                let w = db.begin_write()?;
                w.delete_table(SUMMARIES)?;
                w.delete_table(BY_TIME)?;
                w.delete_table(BY_STATUS)?;
                w.delete_table(COUNTS)?;
                w.open_table(SUMMARIES)?;
                w.open_table(BY_TIME)?;
                w.open_table(BY_STATUS)?;
                w.open_table(COUNTS)?;
                for summary in &summaries {
                    put(&w, summary)?;
                }
                w.open_table(META)?.insert("built", BUILT)?;
                w.commit()?;
                Ok(())
            };
            write().map_err(|e| self.fail(e))?;
        }
        f(&db).map_err(|e| self.fail(e))
    }

    /// Records `summaries` (new, or changed) in one transaction.
    pub(super) fn put(
        &self,
        all: &dyn Fn() -> Vec<Summary>,
        summaries: &[Summary],
    ) -> Result<(), ExecutionError> {
        self.write(all, |w| summaries.iter().try_for_each(|s| put(w, s)))
    }

    /// Forgets execution `id`.
    pub(super) fn remove(
        &self,
        all: &dyn Fn() -> Vec<Summary>,
        id: &str,
    ) -> Result<(), ExecutionError> {
        self.write(all, |w| remove(w, id))
    }

    fn write(
        &self,
        all: &dyn Fn() -> Vec<Summary>,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>,
    ) -> Result<(), ExecutionError> {
        self.with(all, |db| {
            let w = db.begin_write()?;
            f(&w)?;
            w.commit()?;
            Ok(())
        })
    }

    /// The open dead letters of every execution, as the index counts them.
    pub(super) fn dead_letters(
        &self,
        all: &dyn Fn() -> Vec<Summary>,
    ) -> Result<u64, ExecutionError> {
        self.with(all, |db| {
            let read = db.begin_read()?;
            let counts = read.open_table(COUNTS)?;
            Ok(counts.get(DEAD_LETTERS)?.map_or(0, |v| v.value()))
        })
    }

    /// A page of the listing `query` asks for, as the index has it.
    pub(super) fn list(
        &self,
        all: &dyn Fn() -> Vec<Summary>,
        query: &ListQuery,
    ) -> Result<Page, ExecutionError> {
        self.with(all, |db| {
            let read = db.begin_read()?;
            let summaries = read.open_table(SUMMARIES)?;
            let upper = query.upper();
            let lower = query.since.unwrap_or(0);
            let failed = std::cell::RefCell::new(None::<redb::Error>);
            let keep = |e: redb::Error| {
                failed.borrow_mut().get_or_insert(e);
            };
            let load = |id: &str| -> Option<Summary> {
                match summaries.get(id) {
                    Ok(Some(text)) => serde_json::from_str(text.value()).ok(),
                    Ok(None) => None,
                    Err(e) => {
                        keep(e.into());
                        None
                    }
                }
            };
            // Lazily: the page stops the scan once it is full.
            let listed = if let Some(status) = query.status {
                let table = read.open_table(BY_STATUS)?;
                let s = code(status);
                let end = match &upper {
                    Some(p) => Bound::Excluded((s, p.created_at, p.id.as_str())),
                    None => Bound::Excluded((s + 1, 0, "")),
                };
                let range =
                    table.range::<(u8, u64, &str)>((Bound::Included((s, lower, "")), end))?;
                page(
                    query,
                    range.rev().filter_map(|entry| match entry {
                        Ok((key, _)) => load(key.value().2),
                        Err(e) => {
                            keep(e.into());
                            None
                        }
                    }),
                )
            } else {
                let table = read.open_table(BY_TIME)?;
                let end = match &upper {
                    Some(p) => Bound::Excluded((p.created_at, p.id.as_str())),
                    None => Bound::Unbounded,
                };
                let range = table.range::<(u64, &str)>((Bound::Included((lower, "")), end))?;
                page(
                    query,
                    range.rev().filter_map(|entry| match entry {
                        Ok((key, _)) => load(key.value().1),
                        Err(e) => {
                            keep(e.into());
                            None
                        }
                    }),
                )
            };
            match failed.into_inner() {
                Some(e) => Err(e),
                None => Ok(listed),
            }
        })
    }
}

fn put(w: &redb::WriteTransaction, summary: &Summary) -> Result<(), redb::Error> {
    remove(w, &summary.id)?;
    w.open_table(SUMMARIES)?
        .insert(summary.id.as_str(), json(summary).as_str())?;
    let status = code(summary.status);
    w.open_table(BY_TIME)?
        .insert((summary.created_at, summary.id.as_str()), status)?;
    w.open_table(BY_STATUS)?
        .insert((status, summary.created_at, summary.id.as_str()), ())?;
    count_letters(w, i64::from(summary.dead_letters))
}

/// Adds `delta` to the count of open dead letters.
fn count_letters(w: &redb::WriteTransaction, delta: i64) -> Result<(), redb::Error> {
    if delta == 0 {
        return Ok(());
    }
    let mut counts = w.open_table(COUNTS)?;
    let now = counts.get(DEAD_LETTERS)?.map_or(0, |v| v.value());
    counts.insert(DEAD_LETTERS, now.saturating_add_signed(delta))?;
    Ok(())
}

fn remove(w: &redb::WriteTransaction, id: &str) -> Result<(), redb::Error> {
    let mut summaries = w.open_table(SUMMARIES)?;
    let old: Option<Summary> = summaries
        .remove(id)?
        .and_then(|text| serde_json::from_str(text.value()).ok());
    if let Some(old) = old {
        w.open_table(BY_TIME)?.remove((old.created_at, id))?;
        w.open_table(BY_STATUS)?
            .remove((code(old.status), old.created_at, id))?;
        count_letters(w, -i64::from(old.dead_letters))?;
    }
    Ok(())
}
