//! `runtime serve`: the control API over the engine, for many tenants.
//!
//! One [`Host`] holds the engine (one per tenant, made on first use and
//! kept, so a tenant's running executions are driven in this process) and
//! the [`auth::KeyRing`]. [`serve`] puts the services on one port: the
//! `orchestrator.v1` services, `grpc.health.v1` health and gRPC reflection
//! (both without credentials, for probes and `grpcurl`). Started again
//! after a crash, the host takes up the executions left unfinished
//! ([`Host::resume_interrupted`]).

pub mod admin;
pub mod audit;
pub mod auth;
pub mod executions;
pub mod plugins;
mod status;
pub mod workflows;

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::{Request, Status};

use crate::pb;
use audit::{AuditLog, Caller};
use auth::{KeyRing, Principal, Role};
use orchestrator_engine::config::Config;
use orchestrator_engine::tenant::TenantId;
use orchestrator_engine::{Engine, service::ServiceError};

/// What the server runs with.
#[derive(Debug)]
pub struct ServerOptions {
    /// The store file (executions beside it).
    pub store: PathBuf,
    /// The host's configuration.
    pub config: Config,
    /// How long audit entries are kept.
    pub audit_retention: Duration,
}

/// The server's state: engines by tenant, and the keys.
#[derive(Debug)]
pub struct Host {
    /// Tenant `default`'s; the others share its sandbox and configuration.
    base: Engine,
    engines: tokio::sync::Mutex<HashMap<TenantId, Engine>>,
    keys: KeyRing,
    audit: Arc<AuditLog>,
    /// Removes old audit entries while the host lives.
    pruning: tokio::task::JoinHandle<()>,
}

impl Drop for Host {
    fn drop(&mut self) {
        self.pruning.abort();
    }
}

impl Host {
    /// A host on `options` (its sandbox started, the built-in plugins
    /// installed), with the keys its store holds.
    pub async fn new(options: ServerOptions) -> Result<Self, ServiceError> {
        let base = Engine::builder()
            .store(&options.store)
            .config(options.config)
            .without_files()
            .hold_store()
            .build()
            .await?;
        let store = base.store()?;
        let keys = KeyRing::load(store.clone())
            .map_err(|e| ServiceError::Plugin(e.message().to_owned()))?;
        let audit = Arc::new(AuditLog::new(store));
        let pruning = Arc::clone(&audit).prune(options.audit_retention);
        Ok(Self {
            base,
            engines: tokio::sync::Mutex::default(),
            keys,
            audit,
            pruning,
        })
    }

    /// Makes an admin key for tenant `default` when no key exists, so the
    /// first operator can get in: the key, to print once.
    pub fn bootstrap(&self) -> Result<Option<String>, Status> {
        if !self.keys.is_empty() {
            return Ok(None);
        }
        let made = self
            .keys
            .create(&TenantId::default(), Role::Admin, "bootstrap")?;
        Ok(Some(made.key))
    }

    /// Takes up the executions a previous run of the server (or any process)
    /// left unfinished, of tenant `default` and every tenant with a key,
    /// and runs them to their end here. Returns how many.
    pub async fn resume_interrupted(&self) -> Result<usize, ServiceError> {
        let mut tenants = vec![self.base.tenant().clone()];
        for key in self.keys.list() {
            if let Ok(tenant) = TenantId::new(&key.tenant)
                && !tenants.contains(&tenant)
            {
                tenants.push(tenant);
            }
        }
        let mut resumed = 0;
        for tenant in tenants {
            let engine = self
                .engine(&tenant)
                .await
                .map_err(|e| ServiceError::Plugin(e.message().to_owned()))?;
            for execution in engine.resume_interrupted().await? {
                tracing::info!(tenant = %tenant.as_str(), execution = execution.id(), "resumed");
                resumed += 1;
            }
        }
        Ok(resumed)
    }

    /// The caller of `request`, if it may call `rpc`. A refusal is
    /// audited, under the tenant of the key the call claimed when it names
    /// one that exists.
    pub async fn authorize<T>(&self, request: &Request<T>, rpc: &str) -> Result<Principal, Status> {
        let who = self.keys.authorize(request.metadata(), rpc);
        match &who {
            Ok(who) => {
                tracing::debug!(rpc, tenant = %who.tenant.as_str(), key = %who.key_id, "authorized")
            }
            Err(refused) => {
                tracing::info!(rpc, code = ?refused.code(), "refused");
                let caller = match self.keys.claimed(request.metadata()) {
                    Some(key) => Caller {
                        tenant: key.tenant,
                        key_id: key.id,
                        role: key.role,
                    },
                    None => Caller::default(),
                };
                self.audit.record(caller, rpc, "", Err(refused)).await;
            }
        }
        who
    }

    /// Audits `who`'s call of `rpc` on `target`, which ended as `result`
    /// says, and hands the result on.
    pub async fn audited<T>(
        &self,
        who: &Principal,
        rpc: &str,
        target: &str,
        result: Result<T, Status>,
    ) -> Result<T, Status> {
        let outcome = result.as_ref().map(drop);
        self.audit.record(who.into(), rpc, target, outcome).await;
        result
    }

    /// Whether `who` administers the host (every tenant's keys, the whole
    /// audit log): an admin key of tenant `default`, the host's own.
    pub fn is_host_admin(who: &Principal) -> bool {
        who.role == Role::Admin && who.tenant == TenantId::default()
    }

    /// The engine of `tenant`, made on first use.
    pub async fn engine(&self, tenant: &TenantId) -> Result<Engine, Status> {
        if tenant == self.base.tenant() {
            return Ok(self.base.clone());
        }
        let mut engines = self.engines.lock().await;
        if let Some(engine) = engines.get(tenant) {
            return Ok(engine.clone());
        }
        let engine = self
            .base
            .for_tenant(tenant.clone())
            .await
            .map_err(status::of)?;
        engines.insert(tenant.clone(), engine.clone());
        Ok(engine)
    }
}

/// Serves `host` on `listener` until `shutdown` resolves.
pub async fn serve(
    host: Arc<Host>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServiceError> {
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_serving::<pb::executions_server::ExecutionsServer<executions::ExecutionsService>>()
        .await;
    reporter
        .set_serving::<pb::admin_server::AdminServer<admin::AdminService>>()
        .await;
    reporter
        .set_serving::<pb::plugins_server::PluginsServer<plugins::PluginsService>>()
        .await;
    reporter
        .set_serving::<pb::workflows_server::WorkflowsServer<workflows::WorkflowsService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ServiceError::Plugin(format!("reflection: {e}")))?;
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tonic::transport::Server::builder()
        .add_service(health)
        .add_service(reflection)
        .add_service(pb::executions_server::ExecutionsServer::new(
            executions::ExecutionsService {
                host: Arc::clone(&host),
            },
        ))
        .add_service(
            pb::plugins_server::PluginsServer::new(plugins::PluginsService {
                host: Arc::clone(&host),
            })
            .max_decoding_message_size(plugins::MAX_COMPONENT_BYTES),
        )
        .add_service(pb::workflows_server::WorkflowsServer::new(
            workflows::WorkflowsService {
                host: Arc::clone(&host),
            },
        ))
        .add_service(pb::admin_server::AdminServer::new(admin::AdminService {
            host,
        }))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| ServiceError::Plugin(format!("the server stopped: {e}")))
}
