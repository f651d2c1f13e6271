//! The operations the CLI offers, as a library: open the store, load a
//! workflow file into a plan, prepare its plugins, run it. Later front ends
//! (the gRPC service) call the same functions.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use indexmap::IndexMap;
use serde_json::Value;

use crate::config::Secrets;
use crate::expr::Expressions;
use crate::plugin::{self, Allowed, Catalog, InstallError, Resolved};
use crate::sandbox::{Compiled, Sandbox, SandboxError, SandboxExecutor};
use crate::scheduler::{Event, RunReport, Scheduler};
use crate::store::plugins::{Artifact, PluginRecord};
use crate::store::{DEFAULT_TENANT, Store, StoreError};
use crate::workflow::{self, Plan, WorkflowError};

/// Why an operation could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The workflow file could not be read.
    #[error("cannot read {file}: {source}")]
    Read {
        /// The path as given.
        file: String,
        /// Why.
        source: std::io::Error,
    },
    /// The workflow is not valid.
    #[error("{0}")]
    Workflow(#[from] WorkflowError),
    /// The inputs do not fit the workflow.
    #[error("{0}")]
    Inputs(String),
    /// A plugin could not be loaded or given its capabilities.
    #[error("{0}")]
    Plugin(String),
    /// The sandbox could not be started or a plugin could not be compiled.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    /// The store could not be used.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A plugin could not be installed.
    #[error(transparent)]
    Install(#[from] InstallError),
}

/// Opens the store and installs the built-in plugins it lacks (first start).
pub async fn open_store(path: &Path, sandbox: &Sandbox) -> Result<Store, ServiceError> {
    let store = Store::open(path)?;
    for report in plugin::install_builtins(&store, sandbox, DEFAULT_TENANT).await? {
        tracing::debug!(
            plugin = %report.record.name,
            version = %report.record.version,
            digest = %report.record.digest,
            "installed built-in plugin"
        );
    }
    Ok(store)
}

/// A validated workflow and where it came from.
#[derive(Debug)]
pub struct LoadedWorkflow {
    /// The plan.
    pub plan: Plan,
    /// Resolves the plan's plugins.
    pub catalog: Catalog,
}

/// Reads and validates a workflow file against the plugins in `store`.
pub fn load(
    path: &Path,
    expressions: &Expressions,
    store: &Store,
) -> Result<LoadedWorkflow, ServiceError> {
    let file = path.display().to_string();
    let source = std::fs::read_to_string(path).map_err(|source| ServiceError::Read {
        file: file.clone(),
        source,
    })?;
    let base_dir = path
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let catalog = Catalog::new(base_dir, store.plugins(DEFAULT_TENANT)?);
    let plan = workflow::load(&source, &file, expressions, &catalog)?;
    Ok(LoadedWorkflow { plan, catalog })
}

/// Runs workflows in one sandbox.
#[derive(Debug, Clone)]
pub struct Runner {
    sandbox: Arc<Sandbox>,
    expressions: Expressions,
    secrets: Arc<Secrets>,
}

impl Runner {
    /// A runner with a new sandbox and no secrets.
    pub fn new(expressions: Expressions) -> Result<Self, ServiceError> {
        Ok(Self::on(Sandbox::new()?, expressions))
    }

    /// A runner on an existing sandbox, with no secrets.
    pub fn on(sandbox: Arc<Sandbox>, expressions: Expressions) -> Self {
        Self {
            sandbox,
            expressions,
            secrets: Arc::default(),
        }
    }

    /// The same runner, attaching `secrets` to plugins granted them.
    pub fn with_secrets(self, secrets: Secrets) -> Self {
        Self {
            secrets: Arc::new(secrets),
            ..self
        }
    }

    /// The sandbox tasks run in.
    pub fn sandbox(&self) -> &Arc<Sandbox> {
        &self.sandbox
    }

    /// Loads every plugin the workflow uses (installed ones from their
    /// precompiled artifacts, once per digest) and gives each task the
    /// capabilities its plugin was granted, narrowed by the workflow.
    pub fn prepare(
        &self,
        workflow: &LoadedWorkflow,
        store: &Store,
    ) -> Result<SandboxExecutor, ServiceError> {
        let mut compiled: HashMap<String, (Compiled, Allowed)> = HashMap::new();
        let mut plugins = HashMap::new();
        for task in &workflow.plan.tasks {
            let in_task = |e: String| ServiceError::Plugin(format!("task `{}`: {e}", task.id));
            if !compiled.contains_key(&task.uses) {
                let loaded = match workflow.catalog.resolve(&task.uses).map_err(in_task)? {
                    Resolved::Installed(record) => {
                        let allowed =
                            Allowed::intersect(&record.manifest.capabilities, &record.grants);
                        (self.load_installed(store, &record)?, allowed)
                    }
                    Resolved::File(path) => {
                        let bytes = std::fs::read(&path).map_err(|e| {
                            in_task(format!("cannot read plugin {}: {e}", path.display()))
                        })?;
                        let name = path.file_stem().map_or_else(
                            || task.uses.clone(),
                            |s| s.to_string_lossy().into_owned(),
                        );
                        (self.sandbox.compile(&name, &bytes)?, Allowed::default())
                    }
                };
                compiled.insert(task.uses.clone(), loaded);
            }
            let (component, allowed) = &compiled[&task.uses];
            let allowed = allowed.narrow(&task.grants).map_err(in_task)?;
            let plugin = self
                .sandbox
                .link(component, allowed, Arc::clone(&self.secrets))?;
            plugins.insert(task.id.clone(), plugin);
        }
        Ok(SandboxExecutor::new(Arc::clone(&self.sandbox), plugins))
    }

    /// An installed plugin from its artifact; compiled (and the artifact
    /// stored) only if this engine has none yet, for example after an upgrade.
    fn load_installed(
        &self,
        store: &Store,
        record: &PluginRecord,
    ) -> Result<Compiled, ServiceError> {
        let engine = self.sandbox.engine_hash();
        let label = format!("{}@{}", record.name, record.version);
        if let Some(artifact) = store.plugin_artifact(DEFAULT_TENANT, &record.digest, engine)? {
            return Ok(self
                .sandbox
                .load_artifact(&label, &record.digest, &artifact)?);
        }
        let bytes = store
            .plugin_blob(DEFAULT_TENANT, &record.digest)?
            .ok_or_else(|| {
                ServiceError::Plugin(format!(
                    "{label}: its component is missing from the store; reinstall it"
                ))
            })?;
        tracing::info!(plugin = %label, "compiling for this engine (once)");
        let compiled = self.sandbox.compile(&label, &bytes)?;
        let artifact = self.sandbox.serialize(&compiled)?;
        store.put_plugin_artifact(
            DEFAULT_TENANT,
            &record.digest,
            Artifact {
                engine,
                bytes: &artifact,
            },
        )?;
        Ok(compiled)
    }

    /// Checks inputs and runs a prepared workflow to the end.
    pub async fn execute(
        &self,
        workflow: &LoadedWorkflow,
        executor: SandboxExecutor,
        inputs: IndexMap<String, Value>,
        concurrency: Option<usize>,
        observe: &(dyn Fn(Event<'_>) + Sync),
    ) -> Result<RunReport, ServiceError> {
        let inputs = workflow
            .plan
            .resolve_inputs(inputs)
            .map_err(ServiceError::Inputs)?;
        let scheduler = Scheduler::new(Arc::new(executor), self.expressions.clone());
        Ok(scheduler
            .run(
                &workflow.plan,
                &inputs,
                &new_execution_id(),
                concurrency,
                observe,
            )
            .await)
    }

    /// Prepares and runs a workflow.
    pub async fn run(
        &self,
        workflow: &LoadedWorkflow,
        store: &Store,
        inputs: IndexMap<String, Value>,
        concurrency: Option<usize>,
        observe: &(dyn Fn(Event<'_>) + Sync),
    ) -> Result<RunReport, ServiceError> {
        let executor = self.prepare(workflow, store)?;
        self.execute(workflow, executor, inputs, concurrency, observe)
            .await
    }
}

/// A run id unique on this host: time in nanoseconds and the process id.
pub fn new_execution_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{nanos:x}-{:x}", std::process::id())
}
