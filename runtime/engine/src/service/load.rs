//! Reading a workflow against the store: the file or text validated into
//! a plan, with the catalog it was checked against, and the plugin (or
//! registered workflow) each of its executor slots resolves to.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use super::error::ServiceError;
use crate::plugin::{Catalog, Resolved};
use orchestrator_core::expr::Expressions;
use orchestrator_core::scheduler::{PluginKey, PolicyStage};
use orchestrator_core::tenant::TenantId;
use orchestrator_core::workflow::{self, MAX_WORKFLOW_BYTES, Plan, PlannedTask};
use orchestrator_store::Store;

/// A validated workflow and where it came from.
#[derive(Debug)]
pub struct LoadedWorkflow {
    /// The plan.
    pub plan: Plan,
    /// Resolves the plan's plugins.
    pub catalog: Catalog,
    /// The file, as given.
    pub file: String,
    /// Its text, as validated.
    pub source: String,
    /// Whose it is: its plugins and registered workflows are this
    /// tenant's, and so are its executions.
    pub tenant: TenantId,
}

impl LoadedWorkflow {
    /// Every plugin the tasks run: (executor key, task, `uses:`). The key is
    /// the text of a [`PluginKey`]: the task id, or `<task>#fallback` for a
    /// fallback's plugin.
    pub fn plugin_slots(&self) -> Vec<(String, &PlannedTask, &str)> {
        let mut slots = Vec::new();
        for task in self.plan.tasks.iter().filter(|t| t.wait.is_none()) {
            slots.push((task.id.clone(), task, task.uses.as_str()));
            if let Some(fallback) = &task.fallback {
                slots.push((
                    PluginKey::Fallback(task.id.clone()).to_string(),
                    task,
                    fallback.uses.as_str(),
                ));
            }
        }
        slots
    }

    /// The plugin each executor key resolves to: `sha256` hex of an
    /// installed plugin, or `file:<path>` for a component named by path.
    /// The workflow's `policies:` are recorded too, under their keys
    /// (`#policy-before-0`, ...), so a resume notices a changed policy.
    pub fn plugin_digests(
        &self,
    ) -> Result<std::collections::BTreeMap<String, String>, ServiceError> {
        let mut slots: Vec<(String, String, &str)> = self
            .plugin_slots()
            .into_iter()
            .map(|(key, task, uses)| (key, format!("task `{}`", task.id), uses))
            .collect();
        let policies = &self.plan.policies;
        for (stage, steps) in [
            (PolicyStage::Before, &policies.before),
            (PolicyStage::After, &policies.after),
        ] {
            for (index, step) in steps.iter().enumerate() {
                let whose = format!("policy {} of `policies.{}`", index + 1, stage.as_str());
                let key = PluginKey::Policy {
                    inherited: false,
                    stage,
                    index,
                };
                slots.push((key.to_string(), whose, step.uses.as_str()));
            }
        }
        let mut digests = std::collections::BTreeMap::new();
        for (key, whose, uses) in slots {
            let resolved = self
                .catalog
                .resolve(uses)
                .map_err(|e| ServiceError::Plugin(format!("{whose}: {e}")))?;
            let digest = match resolved {
                Resolved::Installed(record) => record.digest,
                Resolved::File(path) => format!("file:{}", path.display()),
                Resolved::Workflow(w) => format!("workflow:{}@{}", w.name, w.version),
            };
            digests.insert(key, digest);
        }
        Ok(digests)
    }
}

/// Reads and validates a workflow file against the plugins in `store`.
pub fn load(
    path: &Path,
    expressions: &Expressions,
    store: &Store,
    tenant: &TenantId,
) -> Result<LoadedWorkflow, ServiceError> {
    let file = path.display().to_string();
    let read_error = |source| ServiceError::Read {
        file: file.clone(),
        source,
    };
    // Read no more than a workflow may hold: the parser refuses a larger
    // text with a message naming the limit, and the rest is never read.
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| {
            f.take(MAX_WORKFLOW_BYTES as u64 + 1)
                .read_to_end(&mut bytes)
        })
        .map_err(read_error)?;
    let source = if bytes.len() > MAX_WORKFLOW_BYTES {
        // Cut where the reading stopped: the parser says the file is too large.
        String::from_utf8_lossy(&bytes).into_owned()
    } else {
        String::from_utf8(bytes).map_err(|e| {
            read_error(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                e.utf8_error(),
            ))
        })?
    };
    load_text(source, &file, expressions, store, tenant)
}

/// Validates workflow text read from `file` (relative `.wasm` paths resolve
/// against the file's directory).
pub fn load_text(
    source: String,
    file: &str,
    expressions: &Expressions,
    store: &Store,
    tenant: &TenantId,
) -> Result<LoadedWorkflow, ServiceError> {
    let base_dir = Path::new(file)
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let catalog = Catalog::new(base_dir, store.plugins(tenant.as_str())?);
    load_with(source, file, expressions, store, tenant, catalog)
}

/// Validates workflow text from someone who may not name files on this
/// host (a server's caller): a `.wasm` path in `uses:` is refused without
/// looking at the disk, so its answer says nothing of what exists there.
/// `label` names the text in messages.
pub fn load_sent_text(
    source: String,
    label: &str,
    expressions: &Expressions,
    store: &Store,
    tenant: &TenantId,
) -> Result<LoadedWorkflow, ServiceError> {
    let catalog = Catalog::new(".", store.plugins(tenant.as_str())?).without_files();
    load_with(source, label, expressions, store, tenant, catalog)
}

fn load_with(
    source: String,
    file: &str,
    expressions: &Expressions,
    store: &Store,
    tenant: &TenantId,
    catalog: Catalog,
) -> Result<LoadedWorkflow, ServiceError> {
    let catalog = catalog.with_workflows(store.workflows(tenant.as_str())?);
    let plan = workflow::load(&source, file, expressions, &catalog)?;
    Ok(LoadedWorkflow {
        plan,
        catalog,
        file: file.to_owned(),
        source,
        tenant: tenant.clone(),
    })
}
