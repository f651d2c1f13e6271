//! The backend in memory: plugins, workflows, breakers and cached answers
//! in ordered maps behind one lock, so every operation is one
//! transaction. Nothing survives the process; clones share the same maps.
//! For embedding and tests.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::StoreError;
use crate::audit::{AuditBackend, AuditEntry};
use crate::backend::{
    BreakersBackend, KeysBackend, PluginsBackend, ResponsesBackend, StoreBackend, WorkflowsBackend,
};
use crate::keys::ApiKeyRecord;
use crate::plugins::{Artifact, Installed, PluginQuota, PluginRecord, install_decision};
use crate::responses::{CachedAnswer, fresh};
use crate::tenants::{TenantLimits, TenantRecord, TenantsBackend};
use crate::workflows::{StoredWorkflow, next_version};
use orchestrator_core::fault::Breaker;

/// What it gives as its location.
const MEMORY: &str = "(memory)";

/// A store in memory; clones are the same store.
#[derive(Debug, Clone, Default)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
}

type Key2 = (String, String);
type Key3 = (String, String, String);

#[derive(Debug, Default)]
struct State {
    /// (tenant, digest) -> component bytes.
    blobs: BTreeMap<Key2, Vec<u8>>,
    /// (tenant, name, version) -> record.
    names: BTreeMap<Key3, PluginRecord>,
    /// (tenant, digest, engine) -> artifact.
    artifacts: BTreeMap<Key3, Vec<u8>>,
    /// (tenant, name, version) -> workflow.
    workflows: BTreeMap<(String, String, u64), StoredWorkflow>,
    /// (tenant, key) -> breaker.
    breakers: BTreeMap<Key2, Breaker>,
    /// (tenant, key) -> answer.
    answers: BTreeMap<Key2, CachedAnswer>,
    /// key id -> API key.
    api_keys: BTreeMap<String, ApiKeyRecord>,
    /// (tenant, number) -> audit entry.
    audit: BTreeMap<(String, u64), AuditEntry>,
    /// tenant -> the last audit number given.
    audit_numbers: BTreeMap<String, u64>,
    /// tenant id -> record.
    tenants: BTreeMap<String, TenantRecord>,
}

impl State {
    fn plugins(&self, tenant: &str) -> Vec<PluginRecord> {
        self.names
            .iter()
            .filter(|((t, _, _), _)| t == tenant)
            .map(|(_, record)| record.clone())
            .collect()
    }
}

fn key2(a: &str, b: &str) -> Key2 {
    (a.to_owned(), b.to_owned())
}

fn key3(a: &str, b: &str, c: &str) -> Key3 {
    (a.to_owned(), b.to_owned(), c.to_owned())
}

impl MemoryStore {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere left whole maps behind: every change is made
        // under the lock before any of it can fail.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl PluginsBackend for MemoryStore {
    fn install_plugin(
        &self,
        tenant: &str,
        record: &PluginRecord,
        blob: &[u8],
        artifact: Artifact<'_>,
        quota: PluginQuota,
    ) -> Result<Installed, StoreError> {
        let mut state = self.state();
        let key = key3(tenant, &record.name, &record.version);
        let outcome = install_decision(
            state.names.get(&key),
            || Ok(state.plugins(tenant)),
            record,
            quota,
        )?;
        if outcome.writes() {
            state
                .blobs
                .entry(key2(tenant, &record.digest))
                .or_insert_with(|| blob.to_vec());
            state.artifacts.insert(
                key3(tenant, &record.digest, artifact.engine),
                artifact.bytes.to_vec(),
            );
            state.names.insert(key, record.clone());
        }
        Ok(outcome)
    }

    fn plugins(&self, tenant: &str) -> Result<Vec<PluginRecord>, StoreError> {
        Ok(self.state().plugins(tenant))
    }

    fn plugin_blob(&self, tenant: &str, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.state().blobs.get(&key2(tenant, digest)).cloned())
    }

    fn plugin_artifact(
        &self,
        tenant: &str,
        digest: &str,
        engine: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .state()
            .artifacts
            .get(&key3(tenant, digest, engine))
            .cloned())
    }

    fn put_plugin_artifact(
        &self,
        tenant: &str,
        digest: &str,
        artifact: Artifact<'_>,
    ) -> Result<(), StoreError> {
        self.state().artifacts.insert(
            key3(tenant, digest, artifact.engine),
            artifact.bytes.to_vec(),
        );
        Ok(())
    }

    fn remove_plugin(
        &self,
        tenant: &str,
        name: &str,
        version: &str,
    ) -> Result<Option<(PluginRecord, bool)>, StoreError> {
        let mut state = self.state();
        let Some(removed) = state.names.remove(&key3(tenant, name, version)) else {
            return Ok(None);
        };
        let still_used = state
            .names
            .iter()
            .any(|((t, _, _), r)| t == tenant && r.digest == removed.digest);
        if !still_used {
            state.blobs.remove(&key2(tenant, &removed.digest));
            state
                .artifacts
                .retain(|(t, digest, _), _| !(t == tenant && *digest == removed.digest));
        }
        Ok(Some((removed, !still_used)))
    }

    fn plugin_blob_count(&self, tenant: &str) -> Result<(usize, usize), StoreError> {
        let state = self.state();
        Ok((
            state.blobs.keys().filter(|(t, _)| t == tenant).count(),
            state
                .artifacts
                .keys()
                .filter(|(t, _, _)| t == tenant)
                .count(),
        ))
    }
}

impl WorkflowsBackend for MemoryStore {
    fn workflows(&self, tenant: &str) -> Result<Vec<StoredWorkflow>, StoreError> {
        Ok(self
            .state()
            .workflows
            .iter()
            .filter(|((t, _, _), _)| t == tenant)
            .map(|(_, w)| w.clone())
            .collect())
    }

    fn add_workflow(
        &self,
        tenant: &str,
        name: &str,
        file: &str,
        source: &str,
    ) -> Result<(u64, bool), StoreError> {
        let mut state = self.state();
        let kept = state
            .workflows
            .iter()
            .filter(|((t, _, _), _)| t == tenant)
            .map(|(_, w)| w);
        match next_version(kept, name, file, source) {
            Err(version) => Ok((version, false)),
            Ok(stored) => {
                let version = stored.version;
                state
                    .workflows
                    .insert((tenant.to_owned(), name.to_owned(), version), stored);
                Ok((version, true))
            }
        }
    }
}

impl BreakersBackend for MemoryStore {
    fn breakers(&self, tenant: &str) -> Result<BTreeMap<String, Breaker>, StoreError> {
        Ok(self
            .state()
            .breakers
            .iter()
            .filter(|((t, _), _)| t == tenant)
            .map(|((_, key), b)| (key.clone(), b.clone()))
            .collect())
    }

    fn put_breaker(&self, tenant: &str, key: &str, breaker: &Breaker) -> Result<(), StoreError> {
        self.state()
            .breakers
            .insert(key2(tenant, key), breaker.clone());
        Ok(())
    }
}

impl ResponsesBackend for MemoryStore {
    fn get(
        &self,
        tenant: &str,
        key: &str,
        now: u64,
        ttl_ms: u64,
    ) -> Result<Option<CachedAnswer>, StoreError> {
        let answer = self.state().answers.get(&key2(tenant, key)).cloned();
        Ok(answer.and_then(|a| fresh(a, now, ttl_ms)))
    }

    fn put(&self, tenant: &str, key: &str, answer: &CachedAnswer) -> Result<(), StoreError> {
        self.state()
            .answers
            .insert(key2(tenant, key), answer.clone());
        Ok(())
    }
}

impl KeysBackend for MemoryStore {
    fn put_key(&self, key: &ApiKeyRecord) -> Result<bool, StoreError> {
        let mut state = self.state();
        if state.api_keys.contains_key(&key.id) {
            return Ok(false);
        }
        state.api_keys.insert(key.id.clone(), key.clone());
        Ok(true)
    }

    fn key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        Ok(self.state().api_keys.get(id).cloned())
    }

    fn keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        Ok(self.state().api_keys.values().cloned().collect())
    }

    fn revoke_key(&self, id: &str, at: u64) -> Result<bool, StoreError> {
        Ok(match self.state().api_keys.get_mut(id) {
            Some(key) => {
                key.revoked_at.get_or_insert(at);
                true
            }
            None => false,
        })
    }
}

impl AuditBackend for MemoryStore {
    fn append_audit(&self, entry: &AuditEntry) -> Result<u64, StoreError> {
        let mut state = self.state();
        let number = state.audit_numbers.entry(entry.tenant.clone()).or_default();
        *number += 1;
        let number = *number;
        state
            .audit
            .insert((entry.tenant.clone(), number), entry.clone());
        Ok(number)
    }

    fn audit(
        &self,
        tenant: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, AuditEntry)>, StoreError> {
        let state = self.state();
        let from = (tenant.to_owned(), after.saturating_add(1));
        Ok(state
            .audit
            .range(from..=(tenant.to_owned(), u64::MAX))
            .take(limit)
            .map(|((_, n), e)| (*n, e.clone()))
            .collect())
    }

    fn prune_audit(&self, before: u64) -> Result<usize, StoreError> {
        let mut state = self.state();
        let kept = state.audit.len();
        state.audit.retain(|_, e| e.at >= before);
        Ok(kept - state.audit.len())
    }
}

impl TenantsBackend for MemoryStore {
    fn create_tenant(&self, record: &TenantRecord) -> Result<bool, StoreError> {
        let mut state = self.state();
        if state.tenants.contains_key(&record.id) {
            return Ok(false);
        }
        state.tenants.insert(record.id.clone(), record.clone());
        Ok(true)
    }

    fn tenant(&self, id: &str) -> Result<Option<TenantRecord>, StoreError> {
        Ok(self.state().tenants.get(id).cloned())
    }

    fn tenants(&self) -> Result<Vec<TenantRecord>, StoreError> {
        Ok(self.state().tenants.values().cloned().collect())
    }

    fn set_tenant_limits(&self, id: &str, limits: &TenantLimits) -> Result<bool, StoreError> {
        Ok(match self.state().tenants.get_mut(id) {
            Some(record) => {
                record.limits = limits.clone();
                true
            }
            None => false,
        })
    }
}

impl StoreBackend for MemoryStore {
    fn location(&self) -> String {
        MEMORY.to_owned()
    }

    fn file(&self) -> Option<&Path> {
        None
    }

    fn breaker_log(&self) -> Arc<dyn BreakersBackend> {
        Arc::new(self.clone())
    }

    fn responses(&self) -> Arc<dyn ResponsesBackend> {
        Arc::new(self.clone())
    }
}
