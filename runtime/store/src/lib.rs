//! What survives the process, behind one boundary.
//!
//! A [`Store`] is a handle on one backend ([`StoreBackend`]) keeping every
//! tenant's plugins ([`plugins`]), registered workflows ([`workflows`]),
//! circuit breaker states ([`breakers`]) and cached answers
//! ([`responses`]); executions, with their event logs, are kept by an
//! [`executions`] backend of their own; a server keeps its API keys
//! ([`keys`]), audit log ([`audit`]) and tenants' limits ([`tenants`])
//! here too. Every operation names its tenant
//! and every key starts with it. Two backends keep the same contract
//! ([`conformance`] checks it): [`file`], the redb store file (the
//! default), and [`memory`], for embedding and tests. Errors say where and
//! what ([`StoreError`]), never which database library failed.

pub mod audit;
pub mod backend;
pub mod breakers;
pub mod conformance;
pub mod executions;
pub mod file;
pub mod keys;
pub mod memory;
pub mod plugins;
pub mod responses;
pub mod tenants;
pub mod workflows;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use audit::AuditEntry;
pub use backend::StoreBackend;
use breakers::BreakersBackend;
use keys::ApiKeyRecord;
use orchestrator_core::fault::Breaker;
use plugins::{Artifact, Installed, PluginQuota, PluginRecord};
use responses::ResponsesBackend;
use tenants::{TenantLimits, TenantRecord};
use workflows::StoredWorkflow;

/// The tenant of embedded mode (`runtime run`, `runtime install`).
pub const DEFAULT_TENANT: &str = "default";

/// The format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

/// Environment variable naming the store file.
pub const STORE_ENV: &str = "ORCHESTRATOR_STORE";

/// Why the store could not be used. `location` is the store file, or
/// `(memory)`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store could not be opened or created.
    #[error("cannot open the store {location}: {reason}")]
    Open {
        /// Where it is.
        location: String,
        /// What went wrong and what to do.
        reason: String,
    },
    /// The file was written by a release that uses a newer format.
    #[error(
        "the store {location} has format version {found}; this runtime reads version {FORMAT_VERSION}. Use a newer runtime, or point --store at another file"
    )]
    NewerFormat {
        /// Where it is.
        location: String,
        /// Its version.
        found: u32,
    },
    /// A read or write failed.
    #[error("store {location}: {reason}")]
    Failed {
        /// Where it is.
        location: String,
        /// What the backend said.
        reason: String,
    },
    /// A stored record could not be decoded.
    #[error("store {location}: a stored record is damaged ({reason})")]
    Corrupt {
        /// Where it is.
        location: String,
        /// What could not be read.
        reason: String,
    },
}

/// A handle on the store: cheap to clone, every clone the same backend.
#[derive(Debug, Clone)]
pub struct Store {
    backend: Arc<dyn StoreBackend>,
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

    /// Opens (or creates) the store file at `path` ([`file::FileStore`]).
    /// If another process has it open, waits for it up to half a minute.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(Self::on(Arc::new(file::FileStore::open(path)?)))
    }

    /// Opens (or creates) the store file at `path` to keep it open for the
    /// life of the process ([`file::FileStore::hold`]): for a server, whose
    /// concurrent requests then share it. Other processes cannot open the
    /// file until this one ends.
    pub fn hold(path: &Path) -> Result<Self, StoreError> {
        Ok(Self::on(Arc::new(file::FileStore::hold(path)?)))
    }

    /// A store in memory ([`memory::MemoryStore`]): nothing survives the
    /// process. For embedding and tests.
    pub fn in_memory() -> Self {
        Self::on(Arc::new(memory::MemoryStore::default()))
    }

    /// A store on any backend that keeps the contract.
    pub fn on(backend: Arc<dyn StoreBackend>) -> Self {
        Self { backend }
    }

    /// Whether it is kept in memory, with no file.
    pub fn is_in_memory(&self) -> bool {
        self.backend.file().is_none()
    }

    /// The store file; `None` in memory.
    pub fn file(&self) -> Option<&Path> {
        self.backend.file()
    }

    /// Where it is, for messages: the file, or `(memory)`.
    pub fn location(&self) -> String {
        self.backend.location()
    }

    /// Where the circuit breakers of a running process are written as they
    /// change (see [`StoreBackend::breaker_log`]).
    pub fn breaker_log(&self) -> Arc<dyn BreakersBackend> {
        self.backend.breaker_log()
    }

    /// The response cache that goes with this store.
    pub fn responses(&self) -> Arc<dyn ResponsesBackend> {
        self.backend.responses()
    }

    /// Stores a plugin (see [`plugins::PluginsBackend::install_plugin`]).
    pub fn install_plugin(
        &self,
        tenant: &str,
        record: &PluginRecord,
        blob: &[u8],
        artifact: Artifact<'_>,
        quota: PluginQuota,
    ) -> Result<Installed, StoreError> {
        self.backend
            .install_plugin(tenant, record, blob, artifact, quota)
    }

    /// Every installed name@version of a tenant, ordered by name then version text.
    pub fn plugins(&self, tenant: &str) -> Result<Vec<PluginRecord>, StoreError> {
        self.backend.plugins(tenant)
    }

    /// The component bytes with this digest.
    pub fn plugin_blob(&self, tenant: &str, digest: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.backend.plugin_blob(tenant, digest)
    }

    /// The precompiled artifact of `digest` for the engine with hash `engine`.
    pub fn plugin_artifact(
        &self,
        tenant: &str,
        digest: &str,
        engine: &str,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.backend.plugin_artifact(tenant, digest, engine)
    }

    /// Adds an artifact for an installed digest (after an engine upgrade).
    pub fn put_plugin_artifact(
        &self,
        tenant: &str,
        digest: &str,
        artifact: Artifact<'_>,
    ) -> Result<(), StoreError> {
        self.backend.put_plugin_artifact(tenant, digest, artifact)
    }

    /// Removes one name@version (see [`plugins::PluginsBackend::remove_plugin`]).
    pub fn remove_plugin(
        &self,
        tenant: &str,
        name: &str,
        version: &str,
    ) -> Result<Option<(PluginRecord, bool)>, StoreError> {
        self.backend.remove_plugin(tenant, name, version)
    }

    /// How many blobs and artifacts a tenant holds.
    pub fn plugin_blob_count(&self, tenant: &str) -> Result<(usize, usize), StoreError> {
        self.backend.plugin_blob_count(tenant)
    }

    /// Every version of every registered workflow of `tenant`.
    pub fn workflows(&self, tenant: &str) -> Result<Vec<StoredWorkflow>, StoreError> {
        self.backend.workflows(tenant)
    }

    /// Registers `source` as the next version of workflow `name` (see
    /// [`workflows::WorkflowsBackend::add_workflow`]).
    pub fn add_workflow(
        &self,
        tenant: &str,
        name: &str,
        file: &str,
        source: &str,
    ) -> Result<(u64, bool), StoreError> {
        self.backend.add_workflow(tenant, name, file, source)
    }

    /// Every breaker of `tenant`, by key.
    pub fn breakers(&self, tenant: &str) -> Result<BTreeMap<String, Breaker>, StoreError> {
        self.backend.breakers(tenant)
    }

    /// Records breaker `key` of `tenant`.
    pub fn put_breaker(
        &self,
        tenant: &str,
        key: &str,
        breaker: &Breaker,
    ) -> Result<(), StoreError> {
        self.backend.put_breaker(tenant, key, breaker)
    }

    /// Keeps API key `key` (see [`keys::KeysBackend::put_key`]).
    pub fn put_key(&self, key: &ApiKeyRecord) -> Result<bool, StoreError> {
        self.backend.put_key(key)
    }

    /// The API key with id `id`.
    pub fn key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError> {
        self.backend.key(id)
    }

    /// Every API key.
    pub fn keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        self.backend.keys()
    }

    /// Revokes API key `id` at `at` (ms since the epoch).
    pub fn revoke_key(&self, id: &str, at: u64) -> Result<bool, StoreError> {
        self.backend.revoke_key(id, at)
    }

    /// Appends `entry` to its tenant's audit log; returns its number.
    pub fn append_audit(&self, entry: &AuditEntry) -> Result<u64, StoreError> {
        self.backend.append_audit(entry)
    }

    /// `tenant`'s audit entries numbered after `after`, oldest first, at
    /// most `limit`.
    pub fn audit(
        &self,
        tenant: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<(u64, AuditEntry)>, StoreError> {
        self.backend.audit(tenant, after, limit)
    }

    /// Removes audit entries made before `before` (ms since the epoch).
    pub fn prune_audit(&self, before: u64) -> Result<usize, StoreError> {
        self.backend.prune_audit(before)
    }

    /// Keeps tenant `record`; `false` if the tenant has one already.
    pub fn create_tenant(&self, record: &TenantRecord) -> Result<bool, StoreError> {
        self.backend.create_tenant(record)
    }

    /// Tenant `id`'s record.
    pub fn tenant(&self, id: &str) -> Result<Option<TenantRecord>, StoreError> {
        self.backend.tenant(id)
    }

    /// Every tenant record.
    pub fn tenants(&self) -> Result<Vec<TenantRecord>, StoreError> {
        self.backend.tenants()
    }

    /// Replaces tenant `id`'s limits; `false` if it has no record.
    pub fn set_tenant_limits(&self, id: &str, limits: &TenantLimits) -> Result<bool, StoreError> {
        self.backend.set_tenant_limits(id, limits)
    }
}
