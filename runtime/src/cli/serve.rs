//! `runtime serve`: the control API on a port (`orchestrator-host-api`).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use super::Context;
use orchestrator_engine::service::ServiceError;
use orchestrator_host_api::server::{self, Host, ServerOptions};

pub(super) fn serve(
    ctx: Context,
    listen: SocketAddr,
    audit_days: u32,
) -> Result<ExitCode, ServiceError> {
    if !listen.ip().is_loopback() {
        return Err(ServiceError::Inputs(format!(
            "`--listen {listen}`: the server speaks plaintext, so it listens on loopback only (127.0.0.1 or ::1); TLS is not available yet"
        )));
    }
    let config = ctx.config.map_err(ServiceError::Plugin)?;
    let store = ctx.store_path;
    ctx.tokio.block_on(async move {
        let audit_retention = Duration::from_secs(u64::from(audit_days) * 24 * 3600);
        let options = ServerOptions {
            store,
            config,
            audit_retention,
        };
        let host = Arc::new(Host::new(options).await?);
        let bootstrap = host
            .bootstrap()
            .map_err(|e| ServiceError::Plugin(e.message().to_owned()))?;
        if let Some(key) = bootstrap {
            note!(
                "bootstrap admin key (shown once, kept only as a hash; make others with it): {key}"
            );
        }
        let resumed = host.resume_interrupted().await?;
        if resumed > 0 {
            note!("resumed {resumed} interrupted executions");
        }
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| ServiceError::Inputs(format!("cannot listen on {listen}: {e}")))?;
        let address = listener
            .local_addr()
            .map_err(|e| ServiceError::Inputs(format!("cannot listen on {listen}: {e}")))?;
        note!("serving on http://{address}");
        server::serve(host, listener, stopped()).await
    })?;
    note!("stopped");
    Ok(ExitCode::SUCCESS)
}

/// Resolves on SIGTERM or Ctrl-C.
async fn stopped() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        () = term => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
