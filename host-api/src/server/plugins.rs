//! The Plugins service: the tenant's installed plugins. Through the API a
//! tenant grants host names only: addresses, directories, environment
//! variables and secrets are the host's, and only an `admin` key grants
//! them.

use std::sync::Arc;

use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::auth::{Principal, Role};
use super::{Host, status};
use crate::pb;
use orchestrator_engine::plugin::{Grants, HostPattern, InstallReport};
use orchestrator_engine::sdk::Install;
use orchestrator_engine::store::plugins::{Installed, PluginRecord};

/// The most bytes an installed component may have.
pub const MAX_COMPONENT_BYTES: usize = 64 << 20;

/// Serves `orchestrator.v1.Plugins`.
#[derive(Debug, Clone)]
pub struct PluginsService {
    pub(super) host: Arc<Host>,
}

/// The grants a caller asks for, if its role may grant them.
fn grants(asked: Option<pb::Grants>, who: &Principal) -> Result<Grants, Status> {
    let asked = asked.unwrap_or_default();
    if who.role != Role::Admin {
        if !asked.env.is_empty() || !asked.secrets.is_empty() {
            return Err(Status::permission_denied(
                "environment variables and secrets are the host's: only an admin key grants them",
            ));
        }
        for host in &asked.http_hosts {
            let pattern = HostPattern::parse(host).map_err(Status::invalid_argument)?;
            if pattern.net().is_some() {
                return Err(Status::permission_denied(format!(
                    "`{host}` is an address: addresses are the host's, only an admin key grants them"
                )));
            }
        }
    }
    Ok(Grants {
        http_hosts: asked.http_hosts,
        dirs: Vec::new(),
        env: asked.env,
        secrets: asked.secrets,
        model: asked.model,
    })
}

/// A plugin as the API shows it.
fn plugin(record: &PluginRecord, outcome: &str) -> pb::Plugin {
    pb::Plugin {
        name: record.name.clone(),
        version: record.version.clone(),
        digest: record.digest.clone(),
        size: record.size,
        builtin: record.builtin,
        description: record.manifest.description.clone(),
        granted: Some(pb::Grants {
            http_hosts: record.grants.http_hosts.clone(),
            env: record.grants.env.clone(),
            secrets: record.grants.secrets.clone(),
            model: record.grants.model,
        }),
        outcome: outcome.to_owned(),
        record_json: serde_json::to_string(record).unwrap_or_default(),
        unconfigured_secrets: Vec::new(),
    }
}

/// An installed or granted plugin, with the secrets it was granted that
/// this host's configuration lacks.
fn installed(report: &InstallReport, host: &Host) -> pb::Plugin {
    let outcome = match report.outcome {
        Installed::New => "installed",
        Installed::GrantsChanged => "grants changed",
        _ => "unchanged",
    };
    pb::Plugin {
        unconfigured_secrets: report
            .allowed
            .secrets
            .iter()
            .filter(|name| !host.has_secret(name))
            .cloned()
            .collect(),
        ..plugin(&report.record, outcome)
    }
}

#[tonic::async_trait]
impl pb::plugins_server::Plugins for PluginsService {
    async fn install(
        &self,
        request: Request<Streaming<pb::InstallChunk>>,
    ) -> Result<Response<pb::Plugin>, Status> {
        let rpc = "orchestrator.v1.Plugins/Install";
        let who = self.host.authorize(&request, rpc).await?;
        let mut chunks = request.into_inner();
        let engine = self.host.engine(&who.tenant).await?;
        let mut named = String::new();
        let report = async {
            let mut header = None;
            let mut bytes = Vec::new();
            while let Some(chunk) = chunks.next().await {
                let chunk = chunk?;
                if header.is_none() {
                    header = Some(chunk.header.unwrap_or_default());
                }
                if bytes.len() + chunk.data.len() > MAX_COMPONENT_BYTES {
                    return Err(Status::resource_exhausted(format!(
                        "a component may have at most {} MiB",
                        MAX_COMPONENT_BYTES >> 20
                    )));
                }
                bytes.extend_from_slice(&chunk.data);
            }
            let header = header.unwrap_or_default();
            named.clone_from(&header.name);
            let some = |s: String| (!s.is_empty()).then_some(s);
            let install = Install {
                bytes,
                source: if header.source.is_empty() {
                    "the uploaded component".into()
                } else {
                    header.source
                },
                name: some(header.name),
                version: some(header.version),
                grants: grants(header.grants, &who)?,
            };
            engine.install(install).await.map_err(status::of)
        }
        .await;
        let target = match &report {
            Ok(report) => format!("{}@{}", report.record.name, report.record.version),
            Err(_) => named,
        };
        let report = self.host.audited(&who, rpc, &target, report).await?;
        Ok(Response::new(installed(&report, &self.host)))
    }

    async fn list(
        &self,
        request: Request<pb::ListPluginsRequest>,
    ) -> Result<Response<pb::ListPluginsResponse>, Status> {
        let who = self
            .host
            .authorize(&request, "orchestrator.v1.Plugins/List")
            .await?;
        let engine = self.host.engine(&who.tenant).await?;
        let plugins = engine.plugins().await.map_err(status::of)?;
        Ok(Response::new(pb::ListPluginsResponse {
            plugins: plugins.iter().map(|p| plugin(p, "")).collect(),
        }))
    }

    async fn list_breakers(
        &self,
        request: Request<pb::ListBreakersRequest>,
    ) -> Result<Response<pb::ListBreakersResponse>, Status> {
        use orchestrator_engine::fault::BreakerState;
        let who = self
            .host
            .authorize(&request, "orchestrator.v1.Plugins/ListBreakers")
            .await?;
        let engine = self.host.engine(&who.tenant).await?;
        let views = tokio::task::spawn_blocking(move || {
            let store = engine.store()?;
            orchestrator_engine::breakers::list(&store, engine.tenant().as_str())
                .map_err(orchestrator_engine::service::ServiceError::from)
        })
        .await
        .map_err(|e| Status::internal(format!("reading the breakers failed: {e}")))?
        .map_err(status::of)?;
        let breakers = views
            .into_iter()
            .map(|view| {
                let (state, open_until_ms) = match view.breaker.state {
                    BreakerState::Closed => ("closed", 0),
                    BreakerState::Open { until } => ("open", until),
                    BreakerState::HalfOpen { .. } => ("half_open", 0),
                };
                pb::Breaker {
                    key: view.key,
                    guards: view.guards,
                    state: state.to_owned(),
                    since_ms: view.breaker.since,
                    open_until_ms,
                    reason: view.breaker.reason,
                }
            })
            .collect();
        Ok(Response::new(pb::ListBreakersResponse { breakers }))
    }

    async fn get(
        &self,
        request: Request<pb::GetPluginRequest>,
    ) -> Result<Response<pb::Plugin>, Status> {
        let who = self
            .host
            .authorize(&request, "orchestrator.v1.Plugins/Get")
            .await?;
        let engine = self.host.engine(&who.tenant).await?;
        let found = engine
            .plugin(&request.get_ref().plugin)
            .await
            .map_err(|e| Status::not_found(e.to_string()))?;
        Ok(Response::new(plugin(&found, "")))
    }

    async fn grant(
        &self,
        request: Request<pb::GrantRequest>,
    ) -> Result<Response<pb::Plugin>, Status> {
        let rpc = "orchestrator.v1.Plugins/Grant";
        let who = self.host.authorize(&request, rpc).await?;
        let request = request.into_inner();
        let engine = self.host.engine(&who.tenant).await?;
        let report = async {
            let more = grants(request.grants, &who)?;
            engine
                .plugin(&request.plugin)
                .await
                .map_err(|e| Status::not_found(e.to_string()))?;
            engine
                .grant(&request.plugin, more)
                .await
                .map_err(status::of)
        }
        .await;
        let report = self
            .host
            .audited(&who, rpc, &request.plugin, report)
            .await?;
        Ok(Response::new(installed(&report, &self.host)))
    }

    async fn remove(
        &self,
        request: Request<pb::RemovePluginRequest>,
    ) -> Result<Response<pb::RemovePluginResponse>, Status> {
        let rpc = "orchestrator.v1.Plugins/Remove";
        let who = self.host.authorize(&request, rpc).await?;
        let engine = self.host.engine(&who.tenant).await?;
        let target = &request.get_ref().plugin;
        let removed = engine
            .remove(target)
            .await
            .map_err(|e| Status::not_found(e.to_string()));
        let removed = self.host.audited(&who, rpc, target, removed).await?;
        Ok(Response::new(pb::RemovePluginResponse {
            component_deleted: removed.component_deleted,
            plugin: Some(plugin(&removed.record, "")),
        }))
    }
}
