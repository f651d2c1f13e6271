//! The audit log of the control API: every call that changed something
//! and every call that was refused, per tenant, append-only. A tenant's
//! entries are numbered from 1 in the order they were made; calls refused
//! before a tenant was known (no key, a made-up one) are the host's, under
//! the empty tenant `""`. Entries are never edited; the host removes those
//! older than its retention period ([`AuditBackend::prune_audit`]).

use serde::{Deserialize, Serialize};

use crate::StoreError;

/// The tenant of calls refused before a tenant was known.
pub const HOST: &str = "";

/// One audited call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// When, ms since the epoch.
    pub at: u64,
    /// The tenant it acted for ([`HOST`] when none was known).
    pub tenant: String,
    /// The API key's id ("" when the call carried none that was known).
    pub key_id: String,
    /// The key's role ("" when unknown).
    pub role: String,
    /// The RPC, `orchestrator.v1.Executions/Start`.
    pub rpc: String,
    /// What it acted on: an execution id, `plugin@version`, a key id, ...
    pub target: String,
    /// How it ended: the gRPC code's name (`OK`, `PERMISSION_DENIED`, ...).
    pub outcome: String,
    /// The error's message, when it failed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// Where the audit log is kept.
pub trait AuditBackend: Send + Sync {
    /// Appends `entry` to its tenant's log; returns its number there.
    fn append_audit(&self, entry: &AuditEntry) -> Result<u64, StoreError>;

    /// `tenant`'s entries numbered after `after`, oldest first, at most
    /// `limit`.
    fn audit(
        &self,
        tenant: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, AuditEntry)>, StoreError>;

    /// Removes every tenant's entries made before `before` (ms since the
    /// epoch); numbers are not reused. Returns how many.
    fn prune_audit(&self, before: u64) -> Result<usize, StoreError>;
}
