//! Installing a component: validate everything, then write once.
//!
//! Order matters: nothing is written until the bytes are known to be a
//! component, of a contract version this host runs, whose `describe()`
//! answers within limits with a sane manifest, and whose grants make sense.
//! Then the component, its precompiled artifact and its name record go into
//! the store in one write transaction.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use orchestrator_core::plugin::Manifest;
use orchestrator_core::plugin::grants::{Allowed, Grants, HostPattern};
use orchestrator_core::plugin::valid_label;
use orchestrator_core::scheduler::FailureKind;
use orchestrator_core::workflow::Limits;
use orchestrator_sandbox::{Sandbox, SandboxError, hex};
use orchestrator_store::plugins::{Artifact, Installed, PluginQuota, PluginRecord};
use orchestrator_store::{Store, StoreError};

/// Limits `describe()` runs under at install.
pub const DESCRIBE_LIMITS: Limits = Limits {
    fuel: 500_000_000,
    memory: 256 << 20,
    deadline: Duration::from_secs(10),
    output: 1 << 20,
};

/// What to install.
#[derive(Debug, Clone)]
pub struct InstallRequest<'a> {
    /// The component bytes.
    pub bytes: &'a [u8],
    /// Where they came from, for messages.
    pub source: String,
    /// The name to install under (default: the name `describe()` gives).
    pub name: Option<String>,
    /// The version (default: the version `describe()` gives).
    pub version: Option<String>,
    /// What the operator grants.
    pub grants: Grants,
    /// Whether this is a built-in plugin.
    pub builtin: bool,
    /// How much the tenant's plugins may take (`quotas:`).
    pub quota: PluginQuota,
}

/// What an install did.
#[derive(Debug, Clone)]
pub struct InstallReport {
    /// The stored record.
    pub record: PluginRecord,
    /// New, unchanged or grants changed.
    pub outcome: Installed,
    /// What the plugin will be allowed (asked for and granted).
    pub allowed: Allowed,
}

/// Why an install was refused. Nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    /// The bytes are not a plugin this host can run.
    #[error("cannot install {file}: {reason}")]
    Invalid {
        /// The file.
        file: String,
        /// What is wrong and what to do.
        reason: String,
    },
    /// The name@version is taken by other bytes.
    #[error(
        "cannot install {file}: {name}@{version} is already installed with other bytes (sha256 {existing}); remove it first (`runtime plugins remove {name}@{version}`) or install under another version (`--version`)"
    )]
    Conflict {
        /// The file.
        file: String,
        /// The name.
        name: String,
        /// The version.
        version: String,
        /// The digest already installed.
        existing: String,
    },
    /// The tenant's quota has no room for another plugin.
    #[error(
        "cannot install {file}: tenant `{tenant}` is at its quota of {max} {what} (it has {used}); remove a plugin (`runtime plugins remove NAME@VERSION`) or raise `quotas.{limit}` in the configuration"
    )]
    OverQuota {
        /// The file.
        file: String,
        /// The tenant.
        tenant: String,
        /// The limit's name in `quotas:`.
        limit: &'static str,
        /// What it counts.
        what: &'static str,
        /// The limit.
        max: u64,
        /// What the tenant has.
        used: u64,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Validates, precompiles and stores a plugin for `tenant`.
pub async fn install(
    store: &Store,
    sandbox: &Sandbox,
    tenant: &str,
    request: InstallRequest<'_>,
) -> Result<InstallReport, InstallError> {
    let invalid = |reason: String| InstallError::Invalid {
        file: request.source.clone(),
        reason,
    };
    let label = request
        .name
        .clone()
        .unwrap_or_else(|| request.source.clone());
    let sandbox_error = |e: SandboxError| match e {
        SandboxError::Compile { reason, .. } | SandboxError::Link { reason, .. } => invalid(reason),
        SandboxError::Engine(reason) => invalid(reason),
    };
    let compiled = sandbox
        .compile(&label, request.bytes)
        .map_err(sandbox_error)?;
    let plugin = sandbox
        .link(&compiled, Allowed::default(), Arc::default())
        .map_err(sandbox_error)?;
    let manifest = sandbox
        .describe(&plugin, DESCRIBE_LIMITS)
        .await
        .map_err(|f| {
            invalid(match f.kind {
                FailureKind::OutOfFuel | FailureKind::Deadline | FailureKind::MemoryLimit => format!(
                    "its describe() did not finish within the install limits ({}: fuel {}, memory {} MiB, {} s); a plugin must describe itself quickly and without side effects",
                    f.kind.as_str(),
                    DESCRIBE_LIMITS.fuel,
                    DESCRIBE_LIMITS.memory >> 20,
                    DESCRIBE_LIMITS.deadline.as_secs()
                ),
                _ => format!("its describe() failed ({}): {}", f.kind.as_str(), f.message),
            })
        })?;
    check_manifest(&manifest).map_err(|e| invalid(format!("its describe() {e}")))?;
    check_grants(&request.grants).map_err(&invalid)?;

    let name = request
        .name
        .clone()
        .unwrap_or_else(|| manifest.name.clone());
    let version = request
        .version
        .clone()
        .unwrap_or_else(|| manifest.version.clone());
    for (what, value) in [("name", &name), ("version", &version)] {
        if !valid_label(value) {
            return Err(invalid(format!(
                "`{value}` cannot be a plugin {what}: use letters, digits, `-`, `_`, `.` or `+`"
            )));
        }
    }
    let artifact = sandbox.serialize(&compiled).map_err(sandbox_error)?;
    let allowed = Allowed::intersect(&manifest.capabilities, &request.grants);
    let record = PluginRecord {
        name,
        version,
        digest: hex(&Sha256::digest(request.bytes).into()),
        size: request.bytes.len() as u64,
        manifest,
        grants: request.grants.clone(),
        installed_at: now(),
        builtin: request.builtin,
    };
    let outcome = store.install_plugin(
        tenant,
        &record,
        request.bytes,
        Artifact {
            engine: sandbox.engine_hash(),
            bytes: &artifact,
        },
        request.quota,
    )?;
    if let Installed::OverQuota { limit, max, used } = outcome {
        return Err(InstallError::OverQuota {
            file: request.source.clone(),
            tenant: tenant.to_owned(),
            limit,
            what: if limit == "plugins" {
                "installed plugins"
            } else {
                "bytes of installed plugins"
            },
            max,
            used,
        });
    }
    if let Installed::Conflict { existing } = outcome {
        return Err(InstallError::Conflict {
            file: request.source.clone(),
            name: record.name,
            version: record.version,
            existing,
        });
    }
    Ok(InstallReport {
        record,
        outcome,
        allowed,
    })
}

/// Installs the plugins embedded in this binary when the store lacks them
/// (first start) or holds other bytes under their name and version (an
/// upgraded runtime). Returns what was installed.
pub async fn install_builtins(
    store: &Store,
    sandbox: &Sandbox,
    tenant: &str,
) -> Result<Vec<InstallReport>, InstallError> {
    let installed = store.plugins(tenant)?;
    let mut reports = Vec::new();
    for &(name, bytes, digest) in super::BUILTINS {
        if installed
            .iter()
            .any(|r| r.builtin && r.name == *name && r.digest == digest)
        {
            continue;
        }
        // A newer build keeps what the operator granted the one before.
        let grants = installed
            .iter()
            .filter(|r| r.builtin && r.name == *name)
            .max_by(|a, b| a.installed_at.cmp(&b.installed_at))
            .map_or_else(|| builtin_grants(name), |r| r.grants.clone());
        // What a built-in is (a model plugin) is not the operator's to forget.
        let grants = Grants {
            model: grants.model || builtin_grants(name).model,
            ..grants
        };
        let request = InstallRequest {
            bytes,
            source: format!("built-in plugin `{name}`"),
            name: Some((*name).to_owned()),
            version: None,
            grants,
            builtin: true,
            quota: PluginQuota::default(),
        };
        // An older build of this built-in under the same version is replaced.
        match install(store, sandbox, tenant, request.clone()).await {
            Err(InstallError::Conflict { version, .. }) => {
                store.remove_plugin(tenant, name, &version)?;
                reports.push(install(store, sandbox, tenant, request).await?);
            }
            result => reports.push(result?),
        }
    }
    Ok(reports)
}

/// What a built-in is granted when first installed: `llm` may reach the
/// OpenAI and Anthropic APIs with the `openai` and `anthropic` secrets
/// (other endpoints, a local model server say, are granted with
/// `runtime plugins grant llm --allow-http HOST`).
fn builtin_grants(name: &str) -> Grants {
    match name {
        "llm" => Grants {
            http_hosts: vec!["api.openai.com".into(), "api.anthropic.com".into()],
            secrets: vec!["openai".into(), "anthropic".into()],
            model: true,
            ..Grants::default()
        },
        _ => Grants::default(),
    }
}

fn check_manifest(manifest: &Manifest) -> Result<(), String> {
    for (what, value) in [("name", &manifest.name), ("version", &manifest.version)] {
        if !valid_label(value) {
            return Err(format!(
                "gives the {what} `{value}`, which is not a valid {what}"
            ));
        }
    }
    // Schemas the host will check every call against must compile.
    orchestrator_core::plugin::PluginSchemas::of(manifest)?;
    let caps = &manifest.capabilities;
    for host in &caps.http_hosts {
        HostPattern::parse(host).map_err(|e| format!("asks for HTTP host {e}"))?;
    }
    for fs in &caps.filesystem {
        if !fs.path.starts_with('/') {
            return Err(format!(
                "asks for directory `{}`; directories must be absolute paths such as `/data`",
                fs.path
            ));
        }
    }
    Ok(())
}

fn check_grants(grants: &Grants) -> Result<(), String> {
    for host in &grants.http_hosts {
        HostPattern::parse(host).map_err(|e| format!("--allow-http {e}"))?;
    }
    for dir in &grants.dirs {
        if !dir.path.starts_with('/') {
            return Err(format!(
                "--allow-dir: `{}` must be an absolute path as the plugin sees it, such as `/data`",
                dir.path
            ));
        }
        if !Path::new(&dir.host_dir).is_dir() {
            return Err(format!(
                "--allow-dir: {} is not a directory on this host",
                dir.host_dir.display()
            ));
        }
    }
    for name in grants.env.iter().chain(&grants.secrets) {
        if name.is_empty() || name.contains('=') {
            return Err(format!("`{name}` is not a valid variable or secret name"));
        }
    }
    Ok(())
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
