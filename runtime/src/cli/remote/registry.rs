//! `install`, `plugins ...` and `workflows ...` against a server: the
//! tenant's plugins and registered workflows from the Plugins and
//! Workflows services, as the records the local verbs print.

use std::path::Path;

use super::{Context, client, refused};
use orchestrator_engine::service::ServiceError;
use orchestrator_engine::store::plugins::{Installed, PluginRecord};
use orchestrator_engine::store::workflows::StoredWorkflow;
use orchestrator_engine::workflows::Registered;
use orchestrator_host_api::pb;

/// What an install or a grant left, here or on a server.
pub(in crate::cli) struct Changed {
    /// The plugin's record, as stored.
    pub record: PluginRecord,
    /// New, unchanged or grants changed.
    pub outcome: Installed,
    /// Granted secrets the configuration (here, or the server's) does not
    /// hold.
    pub unconfigured: Vec<String>,
}

/// The record a server's answer carries.
fn record_of(plugin: &pb::Plugin) -> Result<PluginRecord, ServiceError> {
    serde_json::from_str(&plugin.record_json).map_err(|e| {
        ServiceError::Plugin(format!(
            "plugin {}@{}: the server's record does not read: {e}",
            plugin.name, plugin.version
        ))
    })
}

fn changed(plugin: &pb::Plugin) -> Result<Changed, ServiceError> {
    let outcome = match plugin.outcome.as_str() {
        "installed" => Installed::New,
        "grants changed" => Installed::GrantsChanged,
        _ => Installed::Unchanged,
    };
    Ok(Changed {
        record: record_of(plugin)?,
        outcome,
        unconfigured: plugin.unconfigured_secrets.clone(),
    })
}

/// Uploads the component `bytes` with `header` (name, version, grants,
/// and the file name messages call it by).
pub(in crate::cli) fn install(
    ctx: &Context,
    bytes: &[u8],
    header: pb::InstallHeader,
) -> Result<Changed, ServiceError> {
    let client = client(ctx)?;
    let plugin = ctx
        .tokio
        .block_on(client.install(header, bytes))
        .map_err(|s| refused(&s))?;
    changed(&plugin)
}

/// The tenant's plugins, built-ins included.
pub(in crate::cli) fn plugins(ctx: &Context) -> Result<Vec<PluginRecord>, ServiceError> {
    let client = client(ctx)?;
    let list = ctx
        .tokio
        .block_on(client.plugins().list(pb::ListPluginsRequest {}))
        .map_err(|s| refused(&s))?
        .into_inner();
    list.plugins.iter().map(record_of).collect()
}

/// One plugin, by `name`, `name@version` or `sha256:<digest>`.
pub(in crate::cli) fn plugin(ctx: &Context, plugin: &str) -> Result<PluginRecord, ServiceError> {
    let client = client(ctx)?;
    let request = pb::GetPluginRequest {
        plugin: plugin.to_owned(),
    };
    let found = ctx
        .tokio
        .block_on(client.plugins().get(request))
        .map_err(|s| refused(&s))?
        .into_inner();
    record_of(&found)
}

/// Grants `plugin` `grants` on top of what it has.
pub(in crate::cli) fn grant(
    ctx: &Context,
    plugin: &str,
    grants: pb::Grants,
) -> Result<Changed, ServiceError> {
    let client = client(ctx)?;
    let request = pb::GrantRequest {
        plugin: plugin.to_owned(),
        grants: Some(grants),
    };
    let granted = ctx
        .tokio
        .block_on(client.plugins().grant(request))
        .map_err(|s| refused(&s))?
        .into_inner();
    changed(&granted)
}

/// Removes `name@version`: its record, and whether its component went too.
pub(in crate::cli) fn remove(
    ctx: &Context,
    plugin: &str,
) -> Result<(PluginRecord, bool), ServiceError> {
    let client = client(ctx)?;
    let request = pb::RemovePluginRequest {
        plugin: plugin.to_owned(),
    };
    let removed = ctx
        .tokio
        .block_on(client.plugins().remove(request))
        .map_err(|s| refused(&s))?
        .into_inner();
    let record = removed
        .plugin
        .as_ref()
        .ok_or_else(|| ServiceError::Plugin("the server did not say what it removed".into()))
        .and_then(record_of)?;
    Ok((record, removed.component_deleted))
}

/// Registers the workflow in `file` as the next version of its name. The
/// server keeps this host's absolute path of the file as where it came
/// from, as a local `workflows add` does.
pub(in crate::cli) fn register(ctx: &Context, file: &Path) -> Result<Registered, ServiceError> {
    let text = std::fs::read_to_string(file).map_err(|source| ServiceError::Read {
        file: file.display().to_string(),
        source,
    })?;
    let label = std::path::absolute(file)
        .unwrap_or_else(|_| file.to_owned())
        .display()
        .to_string();
    let client = client(ctx)?;
    let registered = ctx
        .tokio
        .block_on(
            client
                .workflows()
                .register(pb::RegisterRequest { text, label }),
        )
        .map_err(|s| refused(&s))?
        .into_inner();
    Ok(Registered {
        name: registered.name,
        version: registered.version,
        new: registered.new,
    })
}

/// Every version of every workflow the tenant registered (without their
/// text, which listing does not show).
pub(in crate::cli) fn workflows(ctx: &Context) -> Result<Vec<StoredWorkflow>, ServiceError> {
    let client = client(ctx)?;
    let list = ctx
        .tokio
        .block_on(client.workflows().list(pb::ListWorkflowsRequest {}))
        .map_err(|s| refused(&s))?
        .into_inner();
    Ok(list
        .workflows
        .into_iter()
        .map(|w| StoredWorkflow {
            name: w.name,
            version: w.version,
            file: w.file,
            source: String::new(),
            added_at: w.added_at,
        })
        .collect())
}
