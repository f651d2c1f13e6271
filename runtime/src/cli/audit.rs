//! `runtime audit`: the control API's audit log, read from a running server
//! (the global `--server`, as an admin) or from the store file of one that
//! is stopped.

use std::process::ExitCode;

use clap::Args;

use super::Context;
use orchestrator_engine::service::ServiceError;
use orchestrator_engine::store::Store;
use orchestrator_engine::store::audit::{AuditEntry, HOST};
use orchestrator_engine::tenant::TenantId;
use orchestrator_host_api::client::Client;
use orchestrator_host_api::pb;

/// What `runtime audit` reads.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// The host's entries (calls refused before a tenant was known)
    /// instead of the tenant's.
    #[arg(long)]
    host: bool,
    /// Entries numbered after this one.
    #[arg(long, default_value_t = 0)]
    after: u64,
    /// At most this many entries.
    #[arg(long, default_value_t = 100)]
    limit: u32,
    /// Print one JSON object per entry.
    #[arg(long)]
    json: bool,
}

pub(super) fn audit(ctx: &Context, args: AuditArgs) -> Result<ExitCode, ServiceError> {
    let entries = match &ctx.server {
        Some((url, key)) => from_server(ctx, url, key.as_deref(), &args)?,
        None => from_store(ctx, &args)?,
    };
    for (number, entry) in &entries {
        if args.json {
            let mut line = serde_json::to_value(entry).unwrap_or_default();
            line["number"] = (*number).into();
            out!("{line}");
        } else {
            out!("{}", line(*number, entry));
        }
    }
    if entries.is_empty() && !args.json {
        note!("no audit entries after {}", args.after);
    }
    Ok(ExitCode::SUCCESS)
}

/// One entry as a line: number, time, who, what, how it ended.
fn line(number: u64, e: &AuditEntry) -> String {
    let time = humantime::format_rfc3339_millis(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(e.at),
    );
    let who = if e.key_id.is_empty() {
        "(no key)".to_owned()
    } else {
        format!("{} ({})", e.key_id, e.role)
    };
    let target = if e.target.is_empty() { "-" } else { &e.target };
    let mut text = format!("{number:>6} {time} {who} {} {target} {}", e.rpc, e.outcome);
    if !e.detail.is_empty() {
        text.push_str(&format!(": {}", e.detail));
    }
    text
}

fn from_store(ctx: &Context, args: &AuditArgs) -> Result<Vec<(u64, AuditEntry)>, ServiceError> {
    let store = Store::open(&ctx.store_path)?;
    let tenant = if args.host { HOST } else { ctx.tenant.as_str() };
    Ok(store.audit(tenant, args.after, args.limit as usize)?)
}

fn from_server(
    ctx: &Context,
    url: &str,
    key: Option<&str>,
    args: &AuditArgs,
) -> Result<Vec<(u64, AuditEntry)>, ServiceError> {
    let key = key.ok_or_else(|| {
        ServiceError::Inputs(
            "--server needs an admin key: --api-key or ORCHESTRATOR_API_KEY".into(),
        )
    })?;
    // The caller's own tenant unless another is named.
    let tenant = if ctx.tenant == TenantId::default() {
        String::new()
    } else {
        ctx.tenant.as_str().to_owned()
    };
    let request = pb::ListAuditRequest {
        tenant,
        host: args.host,
        after: args.after,
        page_size: args.limit,
    };
    let page = ctx.tokio.block_on(async {
        let client = Client::connect(url, key)
            .await
            .map_err(ServiceError::Plugin)?;
        client
            .admin()
            .list_audit(request)
            .await
            .map_err(|s| ServiceError::Plugin(format!("{url}: {}", s.message())))
    })?;
    Ok(page
        .into_inner()
        .entries
        .into_iter()
        .map(|e| {
            let entry = AuditEntry {
                at: e.at_ms,
                tenant: e.tenant,
                key_id: e.key_id,
                role: e.role,
                rpc: e.rpc,
                target: e.target,
                outcome: e.outcome,
                detail: e.detail,
            };
            (e.number, entry)
        })
        .collect())
}
