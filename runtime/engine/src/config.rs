//! The host's own configuration file: secrets, and which hosts they belong
//! to; how much the process runs at once; what model tokens cost.
//!
//! ```yaml
//! secrets:
//!   openai:
//!     env: OPENAI_API_KEY          # or `file: /run/keys/openai`, or `value: ...`
//!     hosts: [api.openai.com]      # requests bound elsewhere never carry it
//!     header: authorization        # default
//!     insecure_http: false         # default: only https://, to port 443
//!                                  # (or the port a host names)
//!     format: "Bearer {}"          # default "{}"; `{}` is replaced by the value
//! capacity:                        # all optional; see `capacity`
//!   tasks: 256                     # plugin calls at once, across executions
//!   runs: 64                       # executions at once
//!   queued_runs: 256               # waiting beyond those; more are refused as busy
//!   per_tenant: { tasks: 32, runs: 8, queued_runs: 16 }  # one tenant's share
//! policies:                        # run around every model call, before the
//!   before: [{ uses: policy, with: { pii: true, on_pii: redact } }]  # workflow's own;
//!   after: [{ with: { deny: ["(?i)password"] } }]                   # no workflow removes them
//! rate_limits:                      # requests per tenant to a host, per period;
//!   api.openai.com: { requests: 500, per: 1m }   # more wait for their turn
//! prices:                          # US dollars per million tokens, by model
//!   gpt-4o-mini: { input: 0.15, output: 0.60 }
//!   "claude-*": { input: 3.00, output: 15.00 }   # `*` matches any suffix
//! telemetry:
//!   otlp_endpoint: http://127.0.0.1:4317   # export spans over OTLP/gRPC
//! ```
//!
//! Values are read from the environment or a file when the configuration is
//! loaded. They are never handed to a plugin: the sandbox adds them to
//! outgoing requests bound for their hosts (see `orchestrator_sandbox::egress`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use orchestrator_core::plugin::{HostPattern, PluginRef};
use orchestrator_core::workflow::{PluginCatalog, Policies, PoliciesSpec, plan_policies};
use orchestrator_sandbox::capacity::CapacityLimits;
pub use orchestrator_sandbox::secrets::{Secret, Secrets};

use crate::breakers::Breakers;
use crate::governance::{Price, Prices};
use crate::quotas::{Quotas, QuotasSpec};
use crate::rate_limits::{RateLimits, RateSpec};
use crate::service::{Runner, ServiceError};
use orchestrator_core::expr::Expressions;
use orchestrator_core::tenant::TenantId;
use orchestrator_sandbox::Sandbox;
use orchestrator_store::Store;

/// The config names plugins before any store is open.
struct AnyPlugin;

impl PluginCatalog for AnyPlugin {
    fn check(&self, _: &str) -> Result<(), String> {
        Ok(())
    }
}

/// Environment variable naming the configuration file.
pub const CONFIG_ENV: &str = "ORCHESTRATOR_CONFIG";

/// The parsed configuration.
#[derive(Debug, Default)]
pub struct Config {
    /// Secrets by name.
    pub secrets: Secrets,
    /// How much the process runs at once.
    pub capacity: CapacityLimits,
    /// What model tokens cost.
    pub prices: Prices,
    /// Policies the host runs around every model call, before any
    /// workflow's own.
    pub policies: Policies,
    /// Requests each tenant may send to a host per period.
    pub rate_limits: Arc<RateLimits>,
    /// What each tenant may keep and spend.
    pub quotas: Arc<Quotas>,
    /// Where spans are exported over OTLP/gRPC, if anywhere.
    pub otlp_endpoint: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TelemetrySpec {
    #[serde(default)]
    otlp_endpoint: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    secrets: BTreeMap<String, SecretSpec>,
    #[serde(default)]
    capacity: CapacityLimits,
    #[serde(default)]
    prices: BTreeMap<String, Price>,
    #[serde(default)]
    policies: PoliciesSpec,
    #[serde(default)]
    rate_limits: BTreeMap<String, RateSpec>,
    #[serde(default)]
    quotas: QuotasSpec,
    #[serde(default)]
    telemetry: TelemetrySpec,
    /// `runtime serve`'s own section (JWTs, client certificates, the
    /// bootstrap key), read by `orchestrator-host-api`.
    #[serde(default)]
    #[allow(dead_code)]
    server: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretSpec {
    #[serde(default)]
    env: Option<String>,
    #[serde(default)]
    file: Option<PathBuf>,
    #[serde(default)]
    value: Option<String>,
    hosts: Vec<String>,
    #[serde(default)]
    header: Option<String>,
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    insecure_http: bool,
}

impl Config {
    /// A runner for `tenant` on `sandbox` with everything this
    /// configuration sets (secrets, prices, rate limits, host policies,
    /// quotas), the tenant's circuit breakers as recorded in `store`, and
    /// the response cache that goes with it. Every front end runs with this.
    pub fn runner(
        &self,
        sandbox: Arc<Sandbox>,
        expressions: Expressions,
        store: &Store,
        tenant: &TenantId,
    ) -> Result<Runner, ServiceError> {
        let breakers = Breakers::recorded(store, tenant.as_str())?;
        Ok(Runner::on(sandbox, expressions)
            .with_secrets(self.secrets.clone())
            .with_prices(self.prices.clone())
            .with_rate_limits(Arc::clone(&self.rate_limits))
            .with_host_policies(self.policies.clone())
            .with_quotas(Arc::clone(&self.quotas))
            .with_breakers(Arc::new(breakers))
            .with_response_cache(store.responses()))
    }

    /// The file used when neither `--config` nor `ORCHESTRATOR_CONFIG` names one:
    /// `config.yaml` under the user's config directory (absent is fine).
    pub fn default_path() -> PathBuf {
        dirs::config_dir()
            .unwrap_or_else(|| PathBuf::from("."))
            .join("llm-orchestrator")
            .join("config.yaml")
    }

    /// Reads a configuration file; a missing file is an empty configuration
    /// unless `required` (it was named explicitly).
    pub fn load(path: &Path, required: bool) -> Result<Self, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                return Ok(Self::default());
            }
            Err(e) => {
                return Err(format!(
                    "cannot read the configuration {}: {e}",
                    path.display()
                ));
            }
        };
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses configuration text read from `file`.
    pub fn parse(text: &str, file: &str) -> Result<Self, String> {
        let blank = text.lines().all(|l| {
            let l = l.trim();
            l.is_empty() || l.starts_with('#')
        });
        if blank {
            return Ok(Self::default());
        }
        let spec: ConfigFile = serde_saphyr::from_str(text).map_err(|e| format!("{file}: {e}"))?;
        let mut entries = Vec::new();
        for (name, spec) in spec.secrets {
            let problem = |what: String| format!("{file}: secret `{name}`: {what}");
            let hosts = spec
                .hosts
                .iter()
                .map(|h| HostPattern::parse(h))
                .collect::<Result<Vec<_>, _>>()
                .map_err(problem)?;
            if hosts.is_empty() {
                return Err(problem(
                    "`hosts` is empty; name the hosts it belongs to".into(),
                ));
            }
            let header = spec.header.as_deref().unwrap_or("authorization");
            let header = http::HeaderName::try_from(header)
                .map_err(|_| problem(format!("`{header}` is not a header name")))?;
            let raw = match (spec.env, spec.file, spec.value) {
                (Some(var), None, None) => std::env::var(&var)
                    .map_err(|_| format!("environment variable `{var}` is not set")),
                (None, Some(path), None) => std::fs::read_to_string(&path)
                    .map(|v| v.trim_end().to_owned())
                    .map_err(|e| format!("cannot read {}: {e}", path.display())),
                (None, None, Some(value)) => Ok(value),
                _ => {
                    return Err(problem(
                        "give exactly one of `env`, `file` or `value`".into(),
                    ));
                }
            };
            let format = spec.format.as_deref().unwrap_or("{}");
            let value = raw.and_then(|raw| {
                let mut value = http::HeaderValue::try_from(format.replace("{}", &raw))
                    .map_err(|_| "its value cannot be sent in a header".to_owned())?;
                value.set_sensitive(true);
                Ok(value)
            });
            entries.push(Secret::new(name, hosts, spec.insecure_http, header, value));
        }
        spec.capacity
            .check()
            .map_err(|problem| format!("{file}: {problem}"))?;
        let prices = Prices::new(spec.prices).map_err(|problem| format!("{file}: {problem}"))?;
        let rate_limits =
            RateLimits::new(spec.rate_limits).map_err(|problem| format!("{file}: {problem}"))?;
        // Which plugins exist is checked when a run prepares them.
        let mut problems = Vec::new();
        let policies = plan_policies(&spec.policies, &AnyPlugin, &mut problems);
        let path = policies
            .before
            .iter()
            .chain(&policies.after)
            .find(|step| matches!(PluginRef::parse(&step.uses), PluginRef::Path(_)));
        if let Some(step) = path {
            return Err(format!(
                "{file}: `policies`: `{}` is a file; the host's policies name installed plugins (`runtime install` it first), so no workflow's directory can stand in for them",
                step.uses
            ));
        }
        if let Some(problem) = problems.first() {
            let at = problem
                .location
                .map_or_else(String::new, |(line, column)| format!("{line}:{column}: "));
            return Err(format!("{file}:{at}`policies`: {}", problem.message));
        }
        Ok(Self {
            secrets: Secrets::new(entries),
            capacity: spec.capacity,
            prices,
            policies,
            rate_limits: Arc::new(rate_limits),
            quotas: Arc::new(Quotas::new(spec.quotas).map_err(|p| format!("{file}: {p}"))?),
            otlp_endpoint: spec.telemetry.otlp_endpoint,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn secrets_belong_to_their_hosts() {
        let config = Config::parse(
            "secrets:\n  token:\n    value: s3cret\n    hosts: ['*.example.com']\n    format: 'Bearer {}'\n",
            "config.yaml",
        )
        .unwrap();
        let found: Vec<(&Secret, bool)> = config
            .secrets
            .for_host("api.example.com", 443, true)
            .collect();
        assert_eq!(found.len(), 1);
        assert!(found[0].1);
        assert_eq!(found[0].0.header_value().unwrap(), "Bearer s3cret");
        assert!(found[0].0.header_value().unwrap().is_sensitive());
        assert_eq!(config.secrets.for_host("evil.com", 443, true).count(), 0);
        assert!(!format!("{config:?}").contains("s3cret"));
    }

    #[test]
    fn secrets_go_only_over_tls_to_their_port() {
        let config = Config::parse(
            "secrets:\n  token:\n    value: s3cret\n    hosts: [api.example.com, 'alt.example.com:8443']\n  local:\n    value: x\n    hosts: ['127.0.0.1:8080']\n    insecure_http: true\n",
            "config.yaml",
        )
        .unwrap();
        let admits = |host: &str, port: u16, tls: bool| -> Vec<(String, bool)> {
            config
                .secrets
                .for_host(host, port, tls)
                .map(|(s, ok)| (s.name.clone(), ok))
                .collect()
        };
        assert_eq!(
            admits("api.example.com", 443, true),
            [("token".into(), true)]
        );
        // Its host by plain HTTP, or on another port: refused, not sent.
        assert_eq!(
            admits("api.example.com", 80, false),
            [("token".into(), false)]
        );
        assert_eq!(
            admits("api.example.com", 443, false),
            [("token".into(), false)]
        );
        assert_eq!(
            admits("api.example.com", 8443, true),
            [("token".into(), false)]
        );
        assert_eq!(
            admits("alt.example.com", 8443, true),
            [("token".into(), true)]
        );
        assert_eq!(
            admits("alt.example.com", 8443, false),
            [("token".into(), false)]
        );
        // A host named with its port: other ports are not its business.
        assert!(admits("alt.example.com", 443, true).is_empty());
        // A loopback test server, named with its port and marked insecure.
        assert_eq!(admits("127.0.0.1", 8080, false), [("local".into(), true)]);
        assert!(admits("127.0.0.1", 8081, false).is_empty());
        assert!(admits("other.example.com", 443, true).is_empty());
    }

    #[test]
    fn a_secret_without_a_source_is_refused() {
        let error =
            Config::parse("secrets:\n  token:\n    hosts: [a.com]\n", "c.yaml").unwrap_err();
        assert!(
            error.contains("secret `token`: give exactly one"),
            "{error}"
        );
    }

    #[test]
    fn capacity_is_read_with_defaults_for_what_is_left_out() {
        let config = Config::parse(
            "capacity:
  tasks: 8
",
            "c.yaml",
        )
        .unwrap();
        assert_eq!(config.capacity.tasks, 8);
        assert_eq!(config.capacity.runs, CapacityLimits::default().runs);
        let error = Config::parse(
            "capacity:
  runs: 0
",
            "c.yaml",
        )
        .unwrap_err();
        assert_eq!(error, "c.yaml: `capacity.runs` must be at least 1");
        let error = Config::parse(
            "capacity:
  task: 8
",
            "c.yaml",
        )
        .unwrap_err();
        assert!(error.contains("unknown field"), "{error}");
    }
}
