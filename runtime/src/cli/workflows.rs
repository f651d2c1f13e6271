//! `runtime workflows add | list`: workflows other workflows run as tasks
//! (`uses: workflow:NAME`), on this host's store or, with `--server`, on a
//! server's.

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;

use super::Context;
use super::remote::registry as remote;
use orchestrator_engine::service::ServiceError;
use orchestrator_engine::workflows::{self as registry, Registered};

/// What to do with registered workflows.
#[derive(Debug, Subcommand)]
pub enum WorkflowsCommand {
    /// Validates a workflow file and registers it as the next version of
    /// its `name:` (the same text again changes nothing).
    Add {
        /// The workflow file (YAML or JSON).
        file: std::path::PathBuf,
    },
    /// Lists every registered workflow and its versions.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub(super) fn workflows(
    ctx: &Context,
    command: WorkflowsCommand,
) -> Result<ExitCode, ServiceError> {
    match command {
        WorkflowsCommand::Add { file } => add(ctx, &file),
        WorkflowsCommand::List { json } => list(ctx, json),
    }
}

fn add(ctx: &Context, file: &Path) -> Result<ExitCode, ServiceError> {
    let Registered { name, version, new } = match ctx.server {
        Some(_) => remote::register(ctx, file)?,
        None => registry::add(&ctx.open_store()?, &ctx.expressions, &ctx.tenant, file)?,
    };
    if new {
        out!("registered workflow {name}@{version}; tasks run it with `uses: workflow:{name}`");
    } else {
        out!("workflow {name}@{version} is registered with this text already");
    }
    Ok(ExitCode::SUCCESS)
}

fn list(ctx: &Context, json: bool) -> Result<ExitCode, ServiceError> {
    let workflows = match ctx.server {
        Some(_) => remote::workflows(ctx)?,
        None => registry::list(&ctx.open_store()?, &ctx.tenant)?,
    };
    if json {
        let list: Vec<serde_json::Value> = workflows
            .iter()
            .map(|w| serde_json::json!({ "name": w.name, "version": w.version, "file": w.file, "added_at": w.added_at }))
            .collect();
        out!("{}", serde_json::to_string_pretty(&list).expect("JSON"));
        return Ok(ExitCode::SUCCESS);
    }
    if workflows.is_empty() {
        out!("no workflows registered (`runtime workflows add FILE`)");
    }
    for w in &workflows {
        out!("{}@{}  {}", w.name, w.version, w.file);
    }
    Ok(ExitCode::SUCCESS)
}
