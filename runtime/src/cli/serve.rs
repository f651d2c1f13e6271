//! `runtime serve`: the control API on a port (`orchestrator-host-api`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use super::Context;
use orchestrator_engine::service::ServiceError;
use orchestrator_host_api::server::config::ServerConfig;
use orchestrator_host_api::server::{self, Bootstrap, Host, ServerOptions, Tls};

/// How `runtime serve` listens.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The address to listen on (port 0 picks a free one). Without TLS,
    /// loopback only unless `--allow-plaintext`.
    #[arg(long, default_value = "127.0.0.1:7233")]
    listen: SocketAddr,
    /// The server's TLS certificate chain, PEM (with `--tls-key`).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of `--tls-cert`, PEM.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Listen without TLS on an address other than loopback: API keys
    /// then cross the network in the clear.
    #[arg(long)]
    allow_plaintext: bool,
    /// Days the audit log keeps an entry.
    #[arg(long, default_value_t = 90, value_name = "DAYS")]
    audit_days: u32,
    /// Seconds a stopping server (SIGTERM, Ctrl-C) lets running plugin
    /// calls finish; executions left unfinished resume at the next start.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    grace: u64,
    /// Connections held open at once; more are closed as they come.
    #[arg(long, default_value_t = server::DEFAULT_MAX_CONNECTIONS as u64, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..))]
    max_connections: u64,
    /// Seconds between HTTP/2 pings on a connection; a peer that does not
    /// answer within 10 s (or this, if shorter) is dropped. Keep it under
    /// the idle timeout of any load balancer in front.
    #[arg(long, default_value_t = server::DEFAULT_KEEPALIVE.as_secs(), value_name = "SECONDS",
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    keepalive: u64,
}

/// Reads a PEM file named by `flag`.
fn pem(flag: &str, path: &Path) -> Result<Vec<u8>, ServiceError> {
    std::fs::read(path).map_err(|e| {
        ServiceError::Inputs(format!("`{flag} {}`: cannot read it: {e}", path.display()))
    })
}

pub(super) fn serve(ctx: Context, args: ServeArgs) -> Result<ExitCode, ServiceError> {
    let listen = args.listen;
    let (config_path, required) = &ctx.config_path;
    let mut server_config =
        ServerConfig::load(config_path, *required).map_err(ServiceError::Inputs)?;
    let client_ca = server_config
        .client_certificates
        .as_ref()
        .map(|c| c.ca.clone());
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(Tls {
            cert: pem("--tls-cert", cert)?,
            key: pem("--tls-key", key)?,
            client_ca,
        }),
        _ if client_ca.is_some() => {
            return Err(ServiceError::Inputs(format!(
                "{}: `server.client_certificates` needs TLS: give --tls-cert and --tls-key",
                config_path.display()
            )));
        }
        _ => None,
    };
    if tls.is_none() && !listen.ip().is_loopback() && !args.allow_plaintext {
        return Err(ServiceError::Inputs(format!(
            "`--listen {listen}`: without TLS the server listens on loopback only (127.0.0.1 or ::1); give --tls-cert and --tls-key, or --allow-plaintext to send API keys in the clear"
        )));
    }
    let (audit_days, grace) = (args.audit_days, args.grace);
    let max_connections = usize::try_from(args.max_connections).unwrap_or(usize::MAX);
    let keepalive = Duration::from_secs(args.keepalive);
    let config = ctx.config.map_err(ServiceError::Plugin)?;
    let store = ctx.store_path;
    ctx.tokio.block_on(async move {
        let audit_retention = Duration::from_secs(u64::from(audit_days) * 24 * 3600);
        let options = ServerOptions {
            store,
            config,
            audit_retention,
            grace: Duration::from_secs(grace),
            server: std::mem::take(&mut server_config),
            max_connections,
            keepalive,
        };
        let host = Arc::new(Host::new(options).await?);
        let bootstrap = host
            .bootstrap()
            .map_err(|e| ServiceError::Plugin(e.message().to_owned()))?;
        match bootstrap {
            Bootstrap::Made(key) => note!(
                "bootstrap admin key (shown once, kept only as a hash; make others with it): {key}"
            ),
            Bootstrap::Kept(from) => note!("bootstrap admin key: the one in {from}"),
            Bootstrap::NotNeeded => {}
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
        let scheme = if tls.is_some() { "https" } else { "http" };
        note!("serving on {scheme}://{address}");
        server::serve(host, listener, tls, stopped()).await
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
