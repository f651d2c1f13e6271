//! `GET /metrics`: every tenant's counts and the host's load in the
//! Prometheus (OpenMetrics) text format, for the host's admins only: its
//! labels name tenants, plugins and models. A scrape is not audited.

use std::sync::Arc;

use axum::extract::Request;
use axum::response::IntoResponse;
use axum::routing::{MethodRouter, get};
use http::header;
use tonic::Status;

use super::Host;
use super::auth::Principal;
use super::rest::errors;
use orchestrator_engine::metrics::CONTENT_TYPE;

/// Where the metrics are served.
pub const METRICS_PATH: &str = "/metrics";

/// The route of [`METRICS_PATH`] on `host`.
pub fn route(host: Arc<Host>) -> MethodRouter {
    get(move |request: Request| {
        let host = Arc::clone(&host);
        let who = caller(&host, &request);
        async move {
            match scrape(&host, who).await {
                Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
                Err(status) => errors::response(&status),
            }
        }
    })
}

/// Who sent `request`.
fn caller(host: &Host, request: &Request) -> Result<Principal, Status> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    let metadata = tonic::metadata::MetadataMap::from_headers(request.headers().clone());
    let peer = request
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(TlsConnectInfo::peer_certs);
    host.auth
        .authenticate(&metadata, peer.as_deref().map(Vec::as_slice))
}

/// The metrics text, if `who` administers the host.
async fn scrape(host: &Arc<Host>, who: Result<Principal, Status>) -> Result<String, Status> {
    let who = who?;
    if !Host::is_host_admin(&who) {
        return Err(Status::permission_denied(format!(
            "{METRICS_PATH} names every tenant: only an admin of tenant `default` (the host's) may read it"
        )));
    }
    let mut engines = vec![host.base.clone()];
    engines.extend(host.engines.lock().await.values().cloned());
    let metrics = Arc::clone(&host.metrics);
    tokio::task::spawn_blocking(move || {
        for engine in &engines {
            engine.refresh_metrics();
        }
        metrics.render()
    })
    .await
    .map_err(|e| Status::internal(format!("reading the metrics failed: {e}")))
}
