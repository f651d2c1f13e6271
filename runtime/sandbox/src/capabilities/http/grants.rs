//! The first check: where a request goes, and whether the plugin was
//! granted that host and port. An address written in an unusual form
//! (`2130706433`, `0x7f.1`) is refused outright.

use std::sync::Arc;

use http::uri::Scheme;
use wasmtime_wasi_http::WasiBody;

use super::{Target, addresses};
use orchestrator_core::plugin::Allowed;

/// The plugin's HTTP grants.
pub(super) struct Grants {
    allowed: Arc<Allowed>,
}

impl Grants {
    pub(super) fn new(allowed: Arc<Allowed>) -> Self {
        Self { allowed }
    }

    /// Where `request` of `plugin` goes, if it was granted.
    pub(super) fn target(
        &self,
        plugin: &str,
        request: &http::Request<WasiBody>,
    ) -> Result<Target, String> {
        let uri = request.uri();
        let tls = uri.scheme() == Some(&Scheme::HTTPS);
        // An IPv6 literal comes in brackets (`[::1]`); the address is
        // without. A name's trailing dot (`127.0.0.1.`) names the same host.
        let host = uri.host().map(|h| {
            let h = h.trim_start_matches('[').trim_end_matches(']');
            h.strip_suffix('.').unwrap_or(h).to_ascii_lowercase()
        });
        let Some(host) = host else {
            return Err(format!("plugin `{plugin}` sent a request without a host"));
        };
        if let Some(why) = addresses::odd_address(&host) {
            return Err(format!(
                "plugin `{plugin}` sent a request to `{host}`, {why}; write the address in its usual form (and grant it)"
            ));
        }
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        if self.allowed.http_grant(&host, port).is_none() {
            let granted: Vec<String> = self
                .allowed
                .http_hosts
                .iter()
                .map(ToString::to_string)
                .collect();
            return Err(format!(
                "HTTP to `{host}:{port}` is not granted to plugin `{plugin}` (granted: {}); the plugin must ask for the host in describe() and the operator grant it with `runtime install --allow-http {host}`",
                if granted.is_empty() {
                    "none".to_owned()
                } else {
                    granted.join(", ")
                }
            ));
        }
        Ok(Target { host, port, tls })
    }
}
