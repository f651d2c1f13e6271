//! The second check: the secrets the host attaches to a request. A
//! granted secret configured for the request's host is put in its header
//! (only over the schemes and ports it belongs to: otherwise the request
//! is refused before any lookup); one the plugin asked for but was not
//! granted refuses the request. Secret values never enter the plugin's
//! store: they are added here, after the plugin handed the request over.

use std::sync::Arc;

use wasmtime_wasi_http::WasiBody;

use super::Target;
use crate::secrets::Secrets;
use orchestrator_core::plugin::Allowed;

/// Attaches the plugin's granted secrets.
pub(super) struct Attach {
    allowed: Arc<Allowed>,
    secrets: Arc<Secrets>,
    /// Off when nothing goes on the wire (a replayed request).
    enabled: bool,
}

impl Attach {
    pub(super) fn new(allowed: Arc<Allowed>, secrets: Arc<Secrets>, enabled: bool) -> Self {
        Self {
            allowed,
            secrets,
            enabled,
        }
    }

    /// Attaches to `request` of `plugin`, bound for `target`, the secrets
    /// that belong to it, or says why it may not go.
    pub(super) fn attach(
        &self,
        plugin: &str,
        request: &mut http::Request<WasiBody>,
        target: &Target,
    ) -> Result<(), String> {
        if !self.enabled {
            return Ok(());
        }
        let Target { host, port, tls } = target;
        for (secret, admitted) in self.secrets.for_host(host, *port, *tls) {
            let held = self.allowed.secrets.contains(&secret.name);
            if held && !admitted {
                let scheme = if *tls { "https" } else { "http" };
                return Err(format!(
                    "plugin `{plugin}` sent a request to {scheme}://{host}:{port}, a host of secret `{}`, which goes only to {}; the request was not sent. Use https:// (or, for a test server on loopback, set `insecure_http: true` and the port on the secret in the host's config)",
                    secret.name,
                    secret.destinations()
                ));
            }
            if held {
                let value = secret.header_value().map_err(|why| {
                    format!("secret `{}` for `{host}` has no value: {why}", secret.name)
                })?;
                request
                    .headers_mut()
                    .insert(secret.header.clone(), value.clone());
            } else if admitted && self.allowed.secrets_withheld.contains(&secret.name) {
                return Err(format!(
                    "plugin `{plugin}` asked for secret `{}` (attached to requests for `{host}`), which it was not granted; grant it with `runtime install --allow-secret {}`",
                    secret.name, secret.name
                ));
            }
        }
        Ok(())
    }
}
