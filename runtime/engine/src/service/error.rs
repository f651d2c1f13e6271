//! Why an engine operation could not start: the one error type every
//! operation returns, wrapping the layers' own.

use orchestrator_core::workflow::WorkflowError;
use orchestrator_sandbox::SandboxError;
use orchestrator_sandbox::capacity::Busy;
use orchestrator_store::StoreError;
use orchestrator_store::executions::ExecutionError;

use crate::plugin::InstallError;
use crate::quotas::QuotaRefusal;

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
    /// An execution could not be recorded, found or read.
    #[error(transparent)]
    Execution(#[from] ExecutionError),
    /// Too many executions are running and waiting in this process.
    #[error(transparent)]
    Busy(#[from] Busy),
    /// The tenant has spent what its quota allows this period, or keeps
    /// what it may keep.
    #[error(transparent)]
    Quota(#[from] QuotaRefusal),
    /// What was asked for does not exist (a registered workflow, a dead
    /// letter).
    #[error("{0}")]
    NotFound(String),
    /// What was asked conflicts with what exists: an execution id taken by
    /// a start with another workflow or other inputs.
    #[error("{0}")]
    Conflict(String),
}
