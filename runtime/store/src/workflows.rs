//! Registered workflows, which other workflows run as tasks
//! (`uses: workflow:NAME`). Every add of changed text keeps a new version;
//! the old ones stay, so a parent pinned to `workflow:NAME@2` keeps running
//! what it was written against.

use serde::{Deserialize, Serialize};

use crate::StoreError;

/// One version of a registered workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredWorkflow {
    /// Its name (the file's `name:`).
    pub name: String,
    /// 1, 2, ... in the order they were added.
    pub version: u64,
    /// The file it was added from (relative `.wasm` paths resolve against it).
    pub file: String,
    /// Its text, as validated when added.
    pub source: String,
    /// When it was added, seconds since the epoch.
    pub added_at: u64,
}

/// Where registered workflows are kept.
pub trait WorkflowsBackend: Send + Sync {
    /// Every version of every registered workflow of `tenant`, by name then
    /// version.
    fn workflows(&self, tenant: &str) -> Result<Vec<StoredWorkflow>, StoreError>;

    /// Registers `source` as the next version of workflow `name`, unless it
    /// is the same text as the newest one ([`next_version`], decided in the
    /// same transaction as the write). Returns that version and whether it
    /// is new.
    fn add_workflow(
        &self,
        tenant: &str,
        name: &str,
        file: &str,
        source: &str,
    ) -> Result<(u64, bool), StoreError>;
}

/// What adding `source` as workflow `name` does, given the versions of
/// that name kept now: `Err(version)` if the newest is the same text,
/// `Ok(record)` to write otherwise.
pub fn next_version<'a>(
    kept: impl IntoIterator<Item = &'a StoredWorkflow>,
    name: &str,
    file: &str,
    source: &str,
) -> Result<StoredWorkflow, u64> {
    let newest = kept
        .into_iter()
        .filter(|w| w.name == name)
        .max_by_key(|w| w.version);
    if let Some(newest) = newest
        && newest.source == source
    {
        return Err(newest.version);
    }
    Ok(StoredWorkflow {
        name: name.to_owned(),
        version: newest.map_or(1, |w| w.version + 1),
        file: file.to_owned(),
        source: source.to_owned(),
        added_at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    })
}
