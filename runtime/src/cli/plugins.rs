//! `runtime install` and `runtime plugins list | show | grant | remove`,
//! on this host's store or, with `--server`, on a server's.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::Context;
use super::remote::registry::{self, Changed};
use orchestrator_engine::plugin::{self, Allowed, Capabilities, DirGrant, Grants, InstallRequest};
use orchestrator_engine::service::ServiceError;
use orchestrator_engine::store::plugins::{Installed, PluginRecord};
use orchestrator_host_api::pb;

/// `runtime install FILE.wasm [--name N] [--version V] [grants...]`.
#[derive(Debug, Args)]
pub struct InstallArgs {
    /// The component file.
    file: PathBuf,
    /// Install under this name instead of the one `describe()` gives.
    #[arg(long)]
    name: Option<String>,
    /// Install under this version instead of the one `describe()` gives.
    #[arg(long)]
    version: Option<String>,
    #[command(flatten)]
    grants: GrantArgs,
}

/// What an operator grants a plugin.
#[derive(Debug, Args)]
pub struct GrantArgs {
    /// Let it reach this host over HTTP (`api.example.com`, `*.example.com`,
    /// an IP address; optionally `:port`). Repeat for more.
    #[arg(long = "allow-http", value_name = "HOST")]
    http: Vec<String>,
    /// Show it a host directory, read-only, at a path of its own. Repeat for more.
    #[arg(long = "allow-dir", value_name = "PLUGIN_PATH=HOST_DIR")]
    dirs: Vec<String>,
    /// Show it a host directory it may write to. Repeat for more.
    #[arg(long = "allow-dir-write", value_name = "PLUGIN_PATH=HOST_DIR")]
    writable_dirs: Vec<String>,
    /// Let it read this environment variable. Repeat for more.
    #[arg(long = "allow-env", value_name = "NAME")]
    env: Vec<String>,
    /// Attach this configured secret to its requests. Repeat for more.
    #[arg(long = "allow-secret", value_name = "NAME")]
    secrets: Vec<String>,
    /// It calls models: run policies (the host's and every workflow's)
    /// around each of its calls, however a task names it.
    #[arg(long)]
    model: bool,
}

/// `runtime plugins ...`.
#[derive(Debug, Subcommand)]
pub enum PluginsCommand {
    /// Lists installed plugins.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Shows one plugin: manifest, digest, requested and granted capabilities.
    Show {
        /// `name`, `name@version` or `sha256:<digest>`.
        plugin: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Removes `name@version`; its component goes too when no other name uses it.
    Remove {
        /// `name@version`.
        plugin: String,
    },
    /// Grants an installed plugin (a built-in too) more, on top of what it
    /// was granted: `runtime plugins grant llm --allow-http 127.0.0.1:8000`.
    Grant {
        /// `name`, `name@version` or `sha256:<digest>`.
        plugin: String,
        #[command(flatten)]
        grants: GrantArgs,
    },
}

pub(super) fn install(ctx: &Context, args: InstallArgs) -> Result<ExitCode, ServiceError> {
    let file = args.file.display().to_string();
    let bytes = std::fs::read(&args.file).map_err(|source| ServiceError::Read {
        file: file.clone(),
        source,
    })?;
    if ctx.server.is_some() {
        let header = pb::InstallHeader {
            name: args.name.unwrap_or_default(),
            version: args.version.unwrap_or_default(),
            grants: Some(
                sent_grants(&args.grants)
                    .map_err(|e| ServiceError::Plugin(format!("cannot install {file}: {e}")))?,
            ),
            source: file,
        };
        let changed = registry::install(ctx, &bytes, header)?;
        return Ok(print_changed(&changed, true));
    }
    let grants = grants(&args.grants)
        .map_err(|e| ServiceError::Plugin(format!("cannot install {file}: {e}")))?;
    let store = ctx.open_store()?;
    let request = InstallRequest {
        bytes: &bytes,
        source: file,
        name: args.name,
        version: args.version,
        grants,
        builtin: false,
        quota: ctx.config()?.quotas.plugins(&ctx.tenant),
    };
    let report = ctx.tokio.block_on(plugin::install(
        &store,
        &ctx.sandbox,
        ctx.tenant.as_str(),
        request,
    ))?;
    Ok(print_changed(&here(ctx, report)?, false))
}

/// What an install or a grant on this host left, with the granted secrets
/// this host's configuration lacks.
fn here(ctx: &Context, report: plugin::InstallReport) -> Result<Changed, ServiceError> {
    let secrets = &ctx.config()?.secrets;
    Ok(Changed {
        unconfigured: report
            .allowed
            .secrets
            .iter()
            .filter(|s| !secrets.contains(s))
            .cloned()
            .collect(),
        record: report.record,
        outcome: report.outcome,
    })
}

/// What an install or grant did; `on_server` when a server did it.
fn print_changed(changed: &Changed, on_server: bool) -> ExitCode {
    let record = &changed.record;
    let what = match changed.outcome {
        Installed::New => "installed",
        Installed::GrantsChanged => "updated the grants of",
        // An install reports conflicts and quotas as errors.
        Installed::Unchanged | Installed::Conflict { .. } | Installed::OverQuota { .. } => {
            "already installed:"
        }
    };
    out!("{what} {}@{}", record.name, record.version);
    print_details(record);
    for name in &changed.unconfigured {
        if on_server {
            out!(
                "  note       secret `{name}` is not configured on the server yet; its operator adds it to the server's configuration file before running"
            );
        } else {
            out!(
                "  note       secret `{name}` is not configured on this host yet; add it to the configuration file (`--config`) before running"
            );
        }
    }
    ExitCode::SUCCESS
}

/// The grants sent to a server: directories are the server host's, named
/// in its own configuration, not this host's.
fn sent_grants(args: &GrantArgs) -> Result<pb::Grants, String> {
    if let Some(dir) = args.dirs.iter().chain(&args.writable_dirs).next() {
        return Err(format!(
            "`{dir}` names a directory, and directories are the server host's: a server does not take --allow-dir or --allow-dir-write (grant them on that host with `runtime plugins grant`)"
        ));
    }
    Ok(pb::Grants {
        http_hosts: args.http.clone(),
        env: args.env.clone(),
        secrets: args.secrets.clone(),
        model: args.model,
    })
}

fn grants(args: &GrantArgs) -> Result<Grants, String> {
    let mut dirs = Vec::new();
    for (spec, writable) in args
        .dirs
        .iter()
        .map(|d| (d, false))
        .chain(args.writable_dirs.iter().map(|d| (d, true)))
    {
        let (path, host) = spec.split_once('=').ok_or_else(|| {
            format!("`{spec}` is not PLUGIN_PATH=HOST_DIR (for example `/data=./data`)")
        })?;
        let host_dir = std::fs::canonicalize(host).map_err(|e| format!("directory {host}: {e}"))?;
        dirs.push(DirGrant {
            path: path.to_owned(),
            host_dir,
            writable,
        });
    }
    Ok(Grants {
        http_hosts: args.http.clone(),
        dirs,
        env: args.env.clone(),
        secrets: args.secrets.clone(),
        model: args.model,
    })
}

pub(super) fn plugins(ctx: &Context, command: PluginsCommand) -> Result<ExitCode, ServiceError> {
    match command {
        PluginsCommand::List { json } => {
            let records = match ctx.server {
                Some(_) => registry::plugins(ctx)?,
                None => ctx.open_store()?.plugins(ctx.tenant.as_str())?,
            };
            print_list(&records, json);
        }
        PluginsCommand::Show { plugin, json } => {
            let record = match ctx.server {
                Some(_) => registry::plugin(ctx, &plugin)?,
                None => plugin::find(&ctx.open_store()?, &ctx.tenant, &plugin)?,
            };
            if json {
                out!("{}", to_json(&record));
                return Ok(ExitCode::SUCCESS);
            }
            out!("{}@{}", record.name, record.version);
            out!("  description  {}", record.manifest.description);
            print_details(&record);
            out!("  input schema   {}", record.manifest.input_schema);
            out!("  output schema  {}", record.manifest.output_schema);
        }
        PluginsCommand::Grant {
            plugin,
            grants: more,
        } => {
            let cannot = |e: String| ServiceError::Plugin(format!("cannot grant: {e}"));
            if ctx.server.is_some() {
                let changed = registry::grant(ctx, &plugin, sent_grants(&more).map_err(cannot)?)?;
                return Ok(print_changed(&changed, true));
            }
            let more = grants(&more).map_err(cannot)?;
            let report = ctx.tokio.block_on(plugin::grant(
                &ctx.open_store()?,
                &ctx.sandbox,
                &ctx.tenant,
                &plugin,
                more,
                ctx.config()?.quotas.plugins(&ctx.tenant),
            ))?;
            return Ok(print_changed(&here(ctx, report)?, false));
        }
        PluginsCommand::Remove { plugin } => {
            let (record, component_deleted) = match ctx.server {
                Some(_) => registry::remove(ctx, &plugin)?,
                None => {
                    let removed = plugin::remove(&ctx.open_store()?, &ctx.tenant, &plugin)?;
                    (removed.record, removed.component_deleted)
                }
            };
            let blob = if component_deleted {
                "its component was deleted (no other name uses it)"
            } else {
                "its component stays (another name uses it)"
            };
            out!("removed {}@{}; {blob}", record.name, record.version);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn print_list(records: &[PluginRecord], json: bool) {
    if json {
        out!("{}", to_json(&records));
        return;
    }
    if records.is_empty() {
        out!("no plugins installed");
    }
    let width = records
        .iter()
        .map(|r| r.name.len() + r.version.len() + 1)
        .max()
        .unwrap_or(0);
    for r in records {
        let id = format!("{}@{}", r.name, r.version);
        let builtin = if r.builtin { "  built-in" } else { "" };
        out!(
            "{id:width$}  sha256:{}  {:>9}{builtin}",
            r.digest.get(..12).unwrap_or(&r.digest),
            size(r.size)
        );
    }
}

/// The digest, size, and what the plugin asks for, was granted and is
/// allowed (what it asks for and was granted).
fn print_details(record: &PluginRecord) {
    let allowed = &Allowed::intersect(&record.manifest.capabilities, &record.grants);
    out!("  digest     sha256:{}", record.digest);
    out!("  size       {}", size(record.size));
    out!(
        "  requested  {}",
        describe_capabilities(&record.manifest.capabilities)
    );
    let granted = &record.grants;
    let dirs: Vec<String> = granted.dirs.iter().map(dir).collect();
    out!(
        "  granted    {}",
        list_all(&granted.http_hosts, &dirs, &granted.env, &granted.secrets)
    );
    if granted.model {
        out!("  model      yes: policies run around its calls");
    }
    let hosts: Vec<String> = allowed.http_hosts.iter().map(ToString::to_string).collect();
    let dirs: Vec<String> = allowed.dirs.iter().map(dir).collect();
    out!(
        "  allowed    {}",
        list_all(&hosts, &dirs, &allowed.env, &allowed.secrets)
    );
    if !allowed.secrets_withheld.is_empty() {
        out!(
            "  withheld   secrets {} (asked for, not granted: requests to their hosts are refused)",
            allowed.secrets_withheld.join(", ")
        );
    }
}

fn describe_capabilities(caps: &Capabilities) -> String {
    let dirs: Vec<String> = caps
        .filesystem
        .iter()
        .map(|f| format!("{}{}", f.path, if f.writable { " (rw)" } else { " (ro)" }))
        .collect();
    list_all(&caps.http_hosts, &dirs, &caps.env, &caps.secrets)
}

fn dir(d: &DirGrant) -> String {
    format!(
        "{}={}{}",
        d.path,
        d.host_dir.display(),
        if d.writable { " (rw)" } else { " (ro)" }
    )
}

fn list_all(http: &[String], dirs: &[String], env: &[String], secrets: &[String]) -> String {
    let parts: Vec<String> = [
        ("http", http),
        ("dirs", dirs),
        ("env", env),
        ("secrets", secrets),
    ]
    .into_iter()
    .filter(|(_, items)| !items.is_empty())
    .map(|(what, items)| format!("{what}: {}", items.join(", ")))
    .collect();
    if parts.is_empty() {
        "nothing".to_owned()
    } else {
        parts.join("; ")
    }
}

fn size(bytes: u64) -> String {
    if bytes >= 1 << 20 {
        format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
    } else {
        format!("{:.1} KiB", bytes as f64 / 1024.0)
    }
}

fn to_json(value: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(value).expect("records serialize")
}

/// `runtime breakers`: every circuit breaker, named by the plugins or the
/// host it guards.
pub(super) fn breakers(ctx: &Context, json: bool) -> Result<ExitCode, ServiceError> {
    let breakers = orchestrator_engine::breakers::list(&ctx.open_store()?, ctx.tenant.as_str())?;
    if json {
        let list: Vec<serde_json::Value> = breakers
            .iter()
            .map(|b| serde_json::json!({ "key": b.key, "plugins": b.guards, "breaker": b.breaker }))
            .collect();
        out!("{}", serde_json::to_string_pretty(&list).expect("JSON"));
        return Ok(ExitCode::SUCCESS);
    }
    if breakers.is_empty() {
        out!("no circuit breakers yet (a workflow asks for them with `breaker:`)");
    }
    let now = orchestrator_engine::store::executions::now_ms();
    for view in &breakers {
        let b = &view.breaker;
        let detail = match b.state {
            orchestrator_engine::fault::BreakerState::Open { until } => format!(
                "open for {} more ({})",
                humantime::format_duration(std::time::Duration::from_secs(
                    until.saturating_sub(now).div_ceil(1000)
                )),
                b.reason
            ),
            orchestrator_engine::fault::BreakerState::HalfOpen { .. } => {
                format!("half-open: probing ({})", b.reason)
            }
            orchestrator_engine::fault::BreakerState::Closed => {
                let failures = b.calls.iter().filter(|(_, failed)| *failed).count();
                format!(
                    "closed: {failures} recent failures of {} calls",
                    b.calls.len()
                )
            }
        };
        out!("{:<9}  {}  {detail}", b.state_name(), view.guards);
    }
    Ok(ExitCode::SUCCESS)
}
