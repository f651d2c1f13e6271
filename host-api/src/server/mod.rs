//! `runtime serve`: the control API over the engine, for many tenants.
//!
//! One [`Host`] holds the engine (one per tenant, made on first use and
//! kept, so a tenant's running executions are driven in this process) and
//! the [`auth::KeyRing`]. [`serve`] puts the services on one port: the
//! `orchestrator.v1` services over gRPC, gRPC-web and REST/JSON
//! ([`rest`]), `grpc.health.v1` health and gRPC reflection (both without
//! credentials, for probes and `grpcurl`), Prometheus metrics
//! ([`metrics`]) and the web console ([`console`]). Started again
//! after a crash, the host takes up the executions left unfinished
//! ([`Host::resume_interrupted`]).

pub mod admin;
pub mod audit;
pub mod auth;
pub mod config;
mod connections;
pub mod console;
pub mod executions;
pub mod metrics;
pub mod plugins;
pub mod rest;
mod status;
mod tenants;
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
use auth::{Authenticator, KeyRing, Principal, Role};
use orchestrator_engine::config::Config;
use orchestrator_engine::metrics::Metrics;
use orchestrator_engine::store::executions::redb::RedbExecutions;
use orchestrator_engine::tenant::TenantId;
use orchestrator_engine::{Engine, service::ServiceError};

/// The largest request message, plugin uploads apart (`Plugins/Install`
/// takes up to [`plugins::MAX_COMPONENT_BYTES`] in chunks).
pub const MAX_REQUEST_BYTES: usize = 4 << 20;

/// How long calls still open after a drain (watches, long polls) may take
/// to end by themselves before they are cut.
const CALLS_AFTER_DRAIN: Duration = Duration::from_secs(1);

/// How long a stopping server lets running plugin calls finish unless
/// told otherwise.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(30);

/// Connections held open at once unless told otherwise; more are closed
/// as they come.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// Calls in flight on one connection (HTTP/2 streams).
pub const MAX_STREAMS_PER_CONNECTION: u32 = 256;

/// How often a quiet connection is pinged unless told otherwise.
pub const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(30);

/// The longest a peer may take to answer a ping before its connection is
/// dropped (shorter when the ping interval is).
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The server's certificate chain and private key, PEM.
#[derive(Debug, Clone)]
pub struct Tls {
    /// The certificate chain.
    pub cert: Vec<u8>,
    /// Its private key.
    pub key: Vec<u8>,
    /// The CA client certificates must chain to, when clients may bring
    /// one (mutual TLS; a client without one still connects, for keys).
    pub client_ca: Option<Vec<u8>>,
}

/// What the server runs with.
#[derive(Debug)]
pub struct ServerOptions {
    /// The store file (executions beside it).
    pub store: PathBuf,
    /// The host's configuration.
    pub config: Config,
    /// How long audit entries are kept.
    pub audit_retention: Duration,
    /// How long a stopping server lets running plugin calls finish.
    pub grace: Duration,
    /// Who may call besides API-key holders, and the bootstrap key.
    pub server: config::ServerConfig,
    /// Connections held open at once.
    pub max_connections: usize,
    /// How often a quiet connection is pinged (HTTP/2 PING).
    pub keepalive: Duration,
}

/// What a first start did about an admin key.
#[derive(Debug, PartialEq, Eq)]
pub enum Bootstrap {
    /// Keys exist already.
    NotNeeded,
    /// The operator's key, from where it says, is kept.
    Kept(String),
    /// This key was made: print it, once.
    Made(String),
}

/// The server's state: engines by tenant, and who may call.
#[derive(Debug)]
pub struct Host {
    /// Tenant `default`'s; the others share its sandbox and configuration.
    base: Engine,
    engines: tokio::sync::Mutex<HashMap<TenantId, Engine>>,
    auth: Authenticator,
    /// The operator's admin key for a first start, and where it came from.
    bootstrap_key: Option<(String, String)>,
    audit: Arc<AuditLog>,
    /// How long a stopping server lets running plugin calls finish.
    grace: Duration,
    /// Connections held open at once.
    max_connections: usize,
    /// How often a quiet connection is pinged.
    keepalive: Duration,
    /// The names of the secrets the configuration holds.
    secret_names: Vec<String>,
    /// Removes old audit entries while the host lives.
    pruning: tokio::task::JoinHandle<()>,
    /// What every tenant's runs are counted in (`/metrics`).
    metrics: Arc<Metrics>,
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
        let secret_names = options.config.secrets.names().map(str::to_owned).collect();
        let metrics = Arc::new(Metrics::new());
        let base = Engine::builder()
            .metrics(Arc::clone(&metrics))
            .store(&options.store)
            .config(options.config)
            .without_files()
            .hold_store()
            .build()
            .await?;
        let store = base.store()?;
        let keys = KeyRing::load(store.clone())
            .map_err(|e| ServiceError::Plugin(e.message().to_owned()))?;
        let server = options.server;
        let auth = Authenticator::new(
            keys,
            server.jwt,
            server.client_certificates.map(|c| c.principals),
        );
        let audit = Arc::new(AuditLog::new(store));
        let pruning = Arc::clone(&audit).prune(options.audit_retention);
        let host = Self {
            base,
            engines: tokio::sync::Mutex::default(),
            auth,
            bootstrap_key: server.bootstrap_key,
            audit,
            grace: options.grace,
            max_connections: options.max_connections,
            keepalive: options.keepalive,
            secret_names,
            pruning,
            metrics,
        };
        host.load_tenant_limits()
            .await
            .map_err(|e| ServiceError::Plugin(e.message().to_owned()))?;
        Ok(host)
    }

    /// Gives tenant `default` an admin key when no key exists, so the
    /// first operator can get in: the operator's own (from the
    /// configuration's `server.bootstrap_key_file` or
    /// `ORCHESTRATOR_BOOTSTRAP_KEY`), or one made here, to print once.
    pub fn bootstrap(&self) -> Result<Bootstrap, Status> {
        let keys = &self.auth.keys;
        if !keys.is_empty() {
            return Ok(Bootstrap::NotNeeded);
        }
        let tenant = TenantId::default();
        match &self.bootstrap_key {
            Some((key, from)) => {
                keys.import(&tenant, Role::Admin, "bootstrap", key)
                    .map_err(|e| {
                        Status::invalid_argument(format!(
                            "the bootstrap key from {from}: {}",
                            e.message()
                        ))
                    })?;
                Ok(Bootstrap::Kept(from.clone()))
            }
            None => Ok(Bootstrap::Made(
                keys.create(&tenant, Role::Admin, "bootstrap")?.key,
            )),
        }
    }

    /// Takes up the executions a previous run of the server (or any process)
    /// left unfinished, of tenant `default`, every tenant with a key,
    /// every tenant created (`CreateTenant`) and every tenant with
    /// executions in the store's directory (callers with JWTs or
    /// certificates have no key), and runs them to their end here.
    /// Returns how many.
    pub async fn resume_interrupted(&self) -> Result<usize, ServiceError> {
        let mut tenants = vec![self.base.tenant().clone()];
        let created = self.base.store()?.tenants()?;
        let named = self.auth.keys.list().into_iter().map(|k| k.tenant);
        let ran = self
            .base
            .store_path()
            .map(RedbExecutions::tenants_beside)
            .unwrap_or_default();
        let ran = ran.iter().map(|t| t.as_str().to_owned());
        for name in named.chain(created.into_iter().map(|t| t.id)).chain(ran) {
            if let Ok(tenant) = TenantId::new(&name)
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
        let peer = request.peer_certs();
        let who = self
            .auth
            .authorize(request.metadata(), peer.as_deref().map(Vec::as_slice), rpc);
        let span = tracing::Span::current();
        match &who {
            Ok(who) => {
                span.record("tenant", tracing::field::display(who.tenant.as_str()));
                span.record("key", tracing::field::display(&who.key_id));
                tracing::debug!("authorized");
            }
            Err(refused) => {
                let caller = match self.auth.claimed(request.metadata()) {
                    Some(key) => Caller {
                        tenant: key.tenant,
                        key_id: key.id,
                        role: key.role,
                    },
                    None => Caller::default(),
                };
                span.record("tenant", tracing::field::display(&caller.tenant));
                span.record("key", tracing::field::display(&caller.key_id));
                tracing::info!(code = ?refused.code(), "refused");
                self.audit.record(caller, rpc, "", Err(refused)).await;
            }
        }
        who
    }

    /// Whether a call of `rpc` with `headers`, over the connection
    /// `extensions` describe, would be let through. The REST gateway asks
    /// before it reads a body, so a caller without a credential cannot
    /// make the server buffer and parse one; it audits nothing, the call
    /// itself does.
    pub fn admits(
        &self,
        headers: &http::HeaderMap,
        extensions: &http::Extensions,
        rpc: &str,
    ) -> bool {
        use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
        let metadata = tonic::metadata::MetadataMap::from_headers(headers.clone());
        let peer = extensions
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .and_then(TlsConnectInfo::peer_certs);
        self.auth
            .authorize(&metadata, peer.as_deref().map(Vec::as_slice), rpc)
            .is_ok()
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

    /// Whether the configuration holds the secret `name`.
    pub fn has_secret(&self, name: &str) -> bool {
        self.secret_names.iter().any(|s| s == name)
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

/// The span of one call: its RPC, the caller's request id (the
/// `x-request-id` header, or one made up), and the tenant and key once the
/// call is authenticated ([`Host::authorize`] records them). In the
/// caller's trace when it sent a W3C `traceparent` and traces are
/// exported.
fn rpc_span(request: &http::Request<()>) -> tracing::Span {
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() <= 128)
        .map_or_else(made_up_request_id, str::to_owned);
    let span = tracing::info_span!(
        "rpc",
        rpc = %request.uri().path(),
        request_id = %request_id,
        tenant = tracing::field::Empty,
        key = tracing::field::Empty,
    );
    let caller = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(request.headers()))
    });
    let _ = tracing_opentelemetry::OpenTelemetrySpanExt::set_parent(&span, caller);
    span
}

/// A request's headers, as the trace context propagator reads them.
struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl opentelemetry::propagation::Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// A request id for a call that brought none.
fn made_up_request_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros());
    format!("{started:x}-{:x}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The gRPC services for gRPC and gRPC-web calls (by their content type,
/// over HTTP/2 or HTTP/1.1); anything else that no REST route took is
/// NOT_FOUND, in the REST error's JSON.
fn grpc_or_not_found(
    grpc: axum::Router,
) -> impl tower::Service<
    axum::extract::Request,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Send,
> + Clone
+ Send
+ 'static {
    use axum::response::IntoResponse;
    use tower::{Layer, ServiceExt};
    let grpc = tonic_web::GrpcWebLayer::new().layer(grpc);
    tower::service_fn(move |request: axum::extract::Request| {
        let grpc = grpc.clone();
        async move {
            let is_grpc = request
                .headers()
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|t| t.starts_with("application/grpc"));
            if is_grpc {
                return grpc.oneshot(request).await.map(IntoResponse::into_response);
            }
            let status = Status::not_found(format!(
                "no route `{} {}`; the routes are listed at {}",
                request.method(),
                request.uri().path(),
                rest::OPENAPI_PATH
            ));
            Ok(rest::errors::response(&status))
        }
    })
}

/// Serves `host` on `listener` until `shutdown` resolves, over TLS when
/// `tls` is given.
pub async fn serve(
    host: Arc<Host>,
    listener: TcpListener,
    tls: Option<Tls>,
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
    // Reflection in both versions clients speak: v1, and v1alpha, which
    // many still ask first or only (Python's grpcio-reflection, older
    // grpcurl, Postman).
    let reflecting = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection = reflecting()
        .build_v1()
        .map_err(|e| ServiceError::Plugin(format!("reflection: {e}")))?;
    let reflection_alpha = reflecting()
        .build_v1alpha()
        .map_err(|e| ServiceError::Plugin(format!("reflection: {e}")))?;
    let incoming = connections::limited(listener, host.max_connections);
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let mut builder = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(host.keepalive))
        .http2_keepalive_timeout(Some(host.keepalive.min(KEEPALIVE_TIMEOUT)))
        .tcp_keepalive(Some(Duration::from_secs(60)))
        .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
        .trace_fn(rpc_span);
    if let Some(tls) = tls {
        let identity = tonic::transport::Identity::from_pem(tls.cert, tls.key);
        let mut config = tonic::transport::ServerTlsConfig::new().identity(identity);
        if let Some(ca) = tls.client_ca {
            config = config
                .client_ca_root(tonic::transport::Certificate::from_pem(ca))
                .client_auth_optional(true);
        }
        builder = builder
            .tls_config(config)
            .map_err(|e| ServiceError::Inputs(format!("the TLS certificate or key: {e}")))?;
    }
    let mut grpc = tonic::service::RoutesBuilder::default();
    grpc.add_service(health)
        .add_service(reflection)
        .add_service(reflection_alpha)
        .add_service(
            pb::executions_server::ExecutionsServer::new(executions::ExecutionsService {
                host: Arc::clone(&host),
            })
            .max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .add_service(
            pb::plugins_server::PluginsServer::new(plugins::PluginsService {
                host: Arc::clone(&host),
            })
            .max_decoding_message_size(plugins::MAX_COMPONENT_BYTES),
        )
        .add_service(
            pb::workflows_server::WorkflowsServer::new(workflows::WorkflowsService {
                host: Arc::clone(&host),
            })
            .max_decoding_message_size(MAX_REQUEST_BYTES),
        )
        .add_service(
            pb::admin_server::AdminServer::new(admin::AdminService {
                host: Arc::clone(&host),
            })
            .max_decoding_message_size(MAX_REQUEST_BYTES),
        );
    let grpc = grpc.routes().prepare().into_axum_router();
    let app = rest::router(grpc.clone(), Arc::clone(&host))
        .map_err(|e| ServiceError::Plugin(format!("the REST routes: {e}")))?
        .route(metrics::METRICS_PATH, metrics::route(Arc::clone(&host)));
    let app = console::routes(app).fallback_service(grpc_or_not_found(grpc));
    let serving = builder
        .accept_http1(true)
        .add_routes(tonic::service::Routes::from(app))
        .serve_with_incoming_shutdown(incoming, async move {
            shutdown.await;
            let _ = stopping_tx.send(());
        });
    let stopped = |e| ServiceError::Plugin(format!("the server stopped: {e}"));
    let mut serving = tokio::spawn(serving);
    tokio::select! {
        ended = &mut serving => {
            return ended
                .map_err(|e| ServiceError::Plugin(format!("the server failed: {e}")))?
                .map_err(stopped);
        }
        _ = stopping_rx => {}
    }
    // No new connection or call is taken now. The plugin calls running
    // finish (within the grace) and nothing else starts; then the calls
    // still open (watches of executions that will not end now) are cut.
    tracing::info!(grace = ?host.grace, "stopping: letting running plugin calls finish");
    let cut = host.base.drain(host.grace).await;
    if cut > 0 {
        tracing::warn!(
            cut,
            "plugin calls still running when the grace ran out: their tasks run again when the server starts"
        );
    }
    match tokio::time::timeout(CALLS_AFTER_DRAIN, &mut serving).await {
        Ok(ended) => ended
            .map_err(|e| ServiceError::Plugin(format!("the server failed: {e}")))?
            .map_err(stopped),
        Err(_) => {
            serving.abort();
            Ok(())
        }
    }
}
