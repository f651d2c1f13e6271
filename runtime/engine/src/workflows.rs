//! Registered workflows, which other workflows run as tasks (`uses:
//! workflow:NAME`): adding one (validated like any run, then kept as the
//! next version of its name) and listing them.

use std::path::Path;

use orchestrator_core::expr::Expressions;
use orchestrator_core::tenant::TenantId;
use orchestrator_store::Store;
use orchestrator_store::workflows::StoredWorkflow;

use crate::service::{self, ServiceError};

/// What adding a workflow did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    /// Its name (the file's `name:`).
    pub name: String,
    /// The version it has now.
    pub version: u64,
    /// A new version: its text differs from the newest one's.
    pub new: bool,
}

/// Validates the workflow file `file` against `tenant`'s plugins and
/// registered workflows, and keeps it as the next version of its name
/// (the same text as the newest version changes nothing). Its path is
/// kept absolute, so its relative `.wasm` paths keep working from wherever
/// a parent runs.
pub fn add(
    store: &Store,
    expressions: &Expressions,
    tenant: &TenantId,
    file: &Path,
) -> Result<Registered, ServiceError> {
    let workflow = service::load(file, expressions, store, tenant)?;
    let absolute = std::path::absolute(file).unwrap_or_else(|_| file.to_owned());
    let name = workflow.plan.name.clone();
    let (version, new) = store.add_workflow(
        tenant.as_str(),
        &name,
        &absolute.display().to_string(),
        &workflow.source,
    )?;
    Ok(Registered { name, version, new })
}

/// Validates workflow text a caller sent (it may not name `.wasm` files:
/// [`service::load_sent_text`]) and keeps it as the next version of its
/// name, `label` standing for its file.
pub fn add_sent(
    store: &Store,
    expressions: &Expressions,
    tenant: &TenantId,
    text: String,
    label: &str,
) -> Result<Registered, ServiceError> {
    let workflow = service::load_sent_text(text, label, expressions, store, tenant)?;
    let name = workflow.plan.name.clone();
    let (version, new) = store.add_workflow(tenant.as_str(), &name, label, &workflow.source)?;
    Ok(Registered { name, version, new })
}

/// Every version of every workflow `tenant` registered, by name then
/// version.
pub fn list(store: &Store, tenant: &TenantId) -> Result<Vec<StoredWorkflow>, ServiceError> {
    Ok(store.workflows(tenant.as_str())?)
}

/// One task of a workflow as a drawing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskOutline {
    /// Its id.
    pub id: String,
    /// Its plugin, as the workflow names it (`wait` for a wait).
    pub uses: String,
    /// The ids of the tasks it needs.
    pub needs: Vec<String>,
}

/// The tasks of workflow `text` in file order, read only to draw them:
/// its plugins are not looked up (whoever runs it checks them). Empty
/// when the text does not plan.
pub fn outline(text: &str, label: &str, expressions: &Expressions) -> Vec<TaskOutline> {
    struct Anything;
    impl orchestrator_core::workflow::PluginCatalog for Anything {
        fn check(&self, _: &str) -> Result<(), String> {
            Ok(())
        }
    }
    let Ok(definition) = orchestrator_core::workflow::parse(text, label) else {
        return Vec::new();
    };
    let Ok(plan) = orchestrator_core::workflow::validate(definition, label, expressions, &Anything)
    else {
        return Vec::new();
    };
    plan.tasks
        .iter()
        .map(|task| TaskOutline {
            id: task.id.clone(),
            uses: if task.wait.is_some() {
                "wait".to_owned()
            } else {
                task.uses.clone()
            },
            needs: task
                .needs
                .iter()
                .map(|&i| plan.tasks[i].id.clone())
                .collect(),
        })
        .collect()
}
