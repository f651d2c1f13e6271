//! The server's audit log: every call that changed something and every
//! refused call, written to the store ([`orchestrator_engine::store::audit`])
//! before the caller gets its answer, and entries older than the
//! retention period removed once an hour.

use std::sync::Arc;
use std::time::Duration;

use tonic::Status;

use super::auth::Principal;
use orchestrator_engine::store::Store;
use orchestrator_engine::store::audit::AuditEntry;
use orchestrator_engine::store::executions::now_ms;

/// How long entries are kept unless the server is told otherwise.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(90 * 24 * 3600);

/// How often old entries are looked for.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Writes and reads the audit log.
#[derive(Debug, Clone)]
pub struct AuditLog {
    store: Store,
}

/// Who made a call, as far as is known.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// The tenant (`""` when unknown).
    pub tenant: String,
    /// The key id (`""` when unknown).
    pub key_id: String,
    /// The role (`""` when unknown).
    pub role: String,
}

impl From<&Principal> for Caller {
    fn from(who: &Principal) -> Self {
        Self {
            tenant: who.tenant.as_str().to_owned(),
            key_id: who.key_id.clone(),
            role: who.role.as_str().to_owned(),
        }
    }
}

/// The name of a gRPC code as the standard spells it (`PERMISSION_DENIED`).
pub fn code_name(code: tonic::Code) -> String {
    let mut name = String::new();
    for (i, c) in format!("{code:?}").chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

impl AuditLog {
    /// The log kept in `store`.
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// Records that `caller` called `rpc` on `target` and how it ended. A
    /// failure to write is logged, and the call's answer stands.
    pub async fn record(
        &self,
        caller: Caller,
        rpc: &str,
        target: &str,
        outcome: Result<(), &Status>,
    ) {
        let entry = AuditEntry {
            at: now_ms(),
            tenant: caller.tenant,
            key_id: caller.key_id,
            role: caller.role,
            rpc: rpc.to_owned(),
            target: target.to_owned(),
            outcome: code_name(outcome.map_or_else(Status::code, |()| tonic::Code::Ok)),
            detail: outcome
                .err()
                .map(|s| s.message().to_owned())
                .unwrap_or_default(),
        };
        let store = self.store.clone();
        let written = tokio::task::spawn_blocking(move || store.append_audit(&entry)).await;
        match written {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::error!(rpc, "the audit log could not be written: {e}"),
            Err(e) => tracing::error!(rpc, "the audit log could not be written: {e}"),
        }
    }

    /// `tenant`'s entries numbered after `after`, at most `limit`.
    pub async fn list(
        &self,
        tenant: String,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, AuditEntry)>, Status> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.audit(&tenant, after, limit))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(|e| Status::internal(e.to_string()))
    }

    /// Removes entries older than `retention` now and every hour after, for
    /// as long as the returned task runs.
    pub fn prune(self: Arc<Self>, retention: Duration) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                let before = now_ms()
                    .saturating_sub(u64::try_from(retention.as_millis()).unwrap_or(u64::MAX));
                let store = self.store.clone();
                match tokio::task::spawn_blocking(move || store.prune_audit(before)).await {
                    Ok(Ok(0)) => {}
                    Ok(Ok(n)) => tracing::info!(removed = n, "old audit entries removed"),
                    Ok(Err(e)) => tracing::warn!("old audit entries not removed: {e}"),
                    Err(e) => tracing::warn!("old audit entries not removed: {e}"),
                }
                tokio::time::sleep(PRUNE_EVERY).await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::code_name;

    #[test]
    fn codes_are_named_as_the_standard_names_them() {
        assert_eq!(code_name(tonic::Code::Ok), "OK");
        assert_eq!(
            code_name(tonic::Code::PermissionDenied),
            "PERMISSION_DENIED"
        );
        assert_eq!(code_name(tonic::Code::Unauthenticated), "UNAUTHENTICATED");
        assert_eq!(code_name(tonic::Code::NotFound), "NOT_FOUND");
    }
}
