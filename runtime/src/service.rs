//! The operations the CLI offers, as a library: load a workflow file into a
//! plan, prepare its plugins, run it. Later front ends (the gRPC service) call
//! the same functions.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use indexmap::IndexMap;
use serde_json::Value;

use crate::expr::Expressions;
use crate::plugin::Catalog;
use crate::sandbox::{Sandbox, SandboxError, SandboxExecutor};
use crate::scheduler::{Event, RunReport, Scheduler};
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
    /// A plugin could not be loaded.
    #[error("{0}")]
    Plugin(String),
    /// The sandbox could not be started or a plugin could not be compiled.
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
}

/// A validated workflow and where it came from.
#[derive(Debug)]
pub struct LoadedWorkflow {
    /// The plan.
    pub plan: Plan,
    /// Resolves the plan's plugins.
    pub catalog: Catalog,
}

/// Reads and validates a workflow file.
pub fn load(path: &Path, expressions: &Expressions) -> Result<LoadedWorkflow, ServiceError> {
    let file = path.display().to_string();
    let source = std::fs::read_to_string(path).map_err(|source| ServiceError::Read {
        file: file.clone(),
        source,
    })?;
    let base_dir = path
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    let catalog = Catalog::new(base_dir);
    let plan = workflow::load(&source, &file, expressions, &catalog)?;
    Ok(LoadedWorkflow { plan, catalog })
}

/// Runs workflows in one sandbox.
#[derive(Debug, Clone)]
pub struct Runner {
    sandbox: Arc<Sandbox>,
    expressions: Expressions,
}

impl Runner {
    /// A runner with a new sandbox.
    pub fn new(expressions: Expressions) -> Result<Self, ServiceError> {
        Ok(Self {
            sandbox: Sandbox::new()?,
            expressions,
        })
    }

    /// The sandbox tasks run in.
    pub fn sandbox(&self) -> &Arc<Sandbox> {
        &self.sandbox
    }

    /// Compiles and links every plugin the workflow uses, once each.
    pub fn prepare(&self, workflow: &LoadedWorkflow) -> Result<SandboxExecutor, ServiceError> {
        let mut plugins = HashMap::new();
        for task in &workflow.plan.tasks {
            if plugins.contains_key(&task.uses) {
                continue;
            }
            let loaded = workflow
                .catalog
                .load(&task.uses)
                .map_err(|e| ServiceError::Plugin(format!("task `{}`: {e}", task.id)))?;
            let plugin = self.sandbox.prepare(&loaded.name, &loaded.bytes)?;
            plugins.insert(task.uses.clone(), plugin);
        }
        Ok(SandboxExecutor::new(Arc::clone(&self.sandbox), plugins))
    }

    /// Checks inputs, prepares plugins and runs the workflow to the end.
    pub async fn run(
        &self,
        workflow: &LoadedWorkflow,
        inputs: IndexMap<String, Value>,
        concurrency: Option<usize>,
        observe: &(dyn Fn(Event<'_>) + Sync),
    ) -> Result<RunReport, ServiceError> {
        let inputs = workflow
            .plan
            .resolve_inputs(inputs)
            .map_err(ServiceError::Inputs)?;
        let executor = Arc::new(self.prepare(workflow)?);
        let scheduler = Scheduler::new(executor, self.expressions.clone());
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
}

/// A run id unique on this host: time in nanoseconds and the process id.
pub fn new_execution_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{nanos:x}-{:x}", std::process::id())
}
