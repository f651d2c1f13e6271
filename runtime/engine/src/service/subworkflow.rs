//! The executor a run hands its tasks to: plugins run in the sandbox
//! (behind their circuit breakers), and `uses: workflow:NAME` tasks run a
//! registered workflow as a child run. The child's inputs are the task's
//! resolved `with:`, its outputs are the task's output; it runs in this
//! process with the parent's cancel, bounded by the task's deadline.
//!
//! When the parent is recorded, so is the child, in an execution file of
//! its own: `<parent id>-<task>` (`-<index>` for an item of a `for_each`,
//! `-fallback` for a fallback, `-tryN` for a later try after a failed
//! one). A parent that runs the task again finds it there: a child that
//! had succeeded gives its recorded outputs without running, an unfinished
//! one (the process died, or an attempt's deadline cut it off) resumes
//! with its finished tasks kept, a failed or cancelled one is tried anew.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use indexmap::IndexMap;
use serde_json::Value;

use super::child_id::ChildId;
use super::error::ServiceError;
use super::recorded::{Execution, run_recorded, running_record};
use crate::breakers::BreakerExecutor;
use crate::governance::Governed;
use orchestrator_core::expr::Expressions;
use orchestrator_core::scheduler::{
    Executor, FailureKind, Metering, NoJournal, RunOptions, RunReport, RunStatus, Scheduler,
    TaskFailure, TaskRequest, TaskSuccess,
};
use orchestrator_core::workflow::Plan;
use orchestrator_sandbox::SandboxExecutor;
use orchestrator_store::executions::{ExecutionStatus, Executions, ParentTask};

/// How a run's plugin tasks are executed: in the sandbox, behind the
/// circuit breakers, their usage priced and answers cached where asked.
pub type PluginExecutor = Governed<BreakerExecutor<SandboxExecutor>>;

/// How deep sub-workflows may nest (a workflow that runs itself stops here).
pub const MAX_DEPTH: usize = 8;

/// Runs a workflow's tasks: plugins, and registered workflows.
#[derive(Debug)]
pub struct TaskExecutor {
    plugins: PluginExecutor,
    /// By plugin key (task id, or its fallback's key).
    children: HashMap<String, Arc<Child>>,
}

impl TaskExecutor {
    /// An executor for `plugins`, and for the tasks in `children` that run
    /// a workflow.
    pub fn new(plugins: PluginExecutor, children: HashMap<String, Arc<Child>>) -> Self {
        Self { plugins, children }
    }

    /// Counts toward the budget what a resumed run had spent already.
    pub fn count_spent(&self, done: &[orchestrator_core::scheduler::TaskReport]) {
        self.plugins.count_spent(done);
    }
}

/// A registered workflow, prepared to run as a task.
#[derive(Debug)]
pub struct Child {
    /// `name@version`, for messages.
    label: String,
    plan: Plan,
    scheduler: Scheduler<TaskExecutor>,
    /// What a recorded run of it is created with.
    record: ChildRecord,
}

/// What the execution record of a child run is made of.
#[derive(Debug)]
pub struct ChildRecord {
    /// Where executions are recorded.
    pub executions: Executions,
    /// Whose runs they are (the parent's tenant).
    pub tenant: orchestrator_core::tenant::TenantId,
    /// Where what its plugins emit goes.
    pub emits: Arc<super::EmitRoutes>,
    /// The registered workflow's file name, for messages.
    pub file: String,
    /// Its text.
    pub source: String,
    /// The plugin each of its tasks resolved to.
    pub plugins: BTreeMap<String, String>,
}

impl Child {
    /// `plan` (registered as `label`) run by `executor`.
    pub fn new(
        label: String,
        plan: Plan,
        executor: TaskExecutor,
        expressions: Expressions,
        record: ChildRecord,
    ) -> Self {
        Self {
            label,
            plan,
            scheduler: Scheduler::new(Arc::new(executor), expressions),
            record,
        }
    }

    /// Runs the child for one task attempt. Boxed: a child's tasks may be
    /// children again, and a future cannot contain itself.
    fn run(
        self: Arc<Self>,
        request: TaskRequest,
    ) -> Pin<Box<dyn Future<Output = Result<TaskSuccess, TaskFailure>> + Send>> {
        Box::pin(async move {
            let failure = |kind, message: String| TaskFailure {
                kind,
                message,
                metering: Metering::default(),
            };
            let given: IndexMap<String, Value> =
                serde_json::from_str(&request.input).map_err(|e| {
                    failure(
                        FailureKind::InvalidInput,
                        format!(
                            "workflow `{}`: its inputs are not an object: {e}",
                            self.label
                        ),
                    )
                })?;
            let inputs = self.plan.resolve_inputs(given).map_err(|e| {
                failure(
                    FailureKind::InvalidInput,
                    format!("workflow `{}`: {e}", self.label),
                )
            })?;
            // The child's record, and all it does: not before the task's
            // inputs are durable.
            request
                .effects
                .wait()
                .await
                .map_err(|message| failure(FailureKind::Internal, message))?;
            let deadline = request.limits.deadline;
            let run = self.run_to_end(&request, inputs);
            let report = tokio::time::timeout(deadline, run)
                .await
                .map_err(|_| {
                    failure(
                        FailureKind::Deadline,
                        format!(
                            "workflow `{}` ran past the task's deadline ({}); raise `limits.deadline`",
                            self.label,
                            humantime::format_duration(deadline)
                        ),
                    )
                })?
                .map_err(|e| {
                    failure(
                        FailureKind::Plugin,
                        format!("workflow `{}`: recording its run failed: {e}", self.label),
                    )
                })?;
            let mut metering = Metering::default();
            for task in &report.tasks {
                metering.duration += task.metering.duration;
                metering.fuel = metering.fuel.saturating_add(task.metering.fuel);
                metering.peak_memory = metering.peak_memory.max(task.metering.peak_memory);
            }
            match report.status {
                RunStatus::Succeeded => Ok(TaskSuccess {
                    output: Value::Object(report.outputs),
                    usage: None,
                    metering,
                }),
                RunStatus::Cancelled => Err(TaskFailure {
                    metering,
                    ..failure(
                        FailureKind::Cancelled,
                        format!("workflow `{}` was cancelled", self.label),
                    )
                }),
                RunStatus::Failed => Err(TaskFailure {
                    metering,
                    ..failure(
                        FailureKind::Fatal,
                        format!(
                            "workflow `{}` failed: {}",
                            self.label,
                            report.error.unwrap_or_default()
                        ),
                    )
                }),
            }
        })
    }
}

impl Child {
    /// Runs the child to its end: recorded when its parent is, in this
    /// process's memory otherwise.
    async fn run_to_end(
        &self,
        request: &TaskRequest,
        inputs: Value,
    ) -> Result<RunReport, ServiceError> {
        let executions = &self.record.executions;
        if !executions.exists(&request.execution_id) {
            let id = format!("{}/{}", request.execution_id, request.task_id);
            let options = RunOptions {
                concurrency: None,
                journal: None::<&NoJournal>,
                done: Vec::new(),
                retries: Vec::new(),
                overrides: HashMap::new(),
                started_at: None,
                cancel: Arc::clone(&request.cancel),
                tenant: request.tenant.clone(),
                observe: &|_| {},
            };
            return Ok(self
                .scheduler
                .run_with(&self.plan, &inputs, &id, options)
                .await);
        }
        let execution = match self.latest_try(request).await? {
            Found::Succeeded(report) => return Ok(report),
            Found::Unfinished(execution) => execution,
            Found::New(id) => self.create(request, id, inputs).await?,
        };
        let execution = Execution {
            cancel: Arc::clone(&request.cancel),
            ..execution
        };
        let emits = self
            .record
            .emits
            .register(&execution.id, Arc::clone(&execution.log));
        let report = run_recorded(&self.scheduler, &self.plan, execution, None, &|_| {}).await;
        emits.close().await;
        report
    }

    /// The recorded run of this task's child to go on with, or the id of
    /// the one to create.
    async fn latest_try(&self, request: &TaskRequest) -> Result<Found, ServiceError> {
        let executions = self.record.executions.clone();
        let child = ChildId::of(request);
        blocking(move || {
            let mut latest = None;
            for n in 1u32.. {
                let id = child.try_n(n).to_string();
                if !executions.exists(&id) {
                    break;
                }
                latest = Some((n, id));
            }
            let Some((n, id)) = latest else {
                return Ok(Found::New(child.to_string()));
            };
            let log = executions.open(&id)?;
            let record = log.record()?;
            Ok(match record.status {
                ExecutionStatus::Running => {
                    Found::Unfinished(Execution::taken_up(&id, log, record)?)
                }
                ExecutionStatus::Succeeded => Found::Succeeded(RunReport {
                    workflow: record.workflow,
                    execution_id: id,
                    status: RunStatus::Succeeded,
                    error: None,
                    outputs: record.outputs,
                    tasks: log.tasks()?,
                    duration_us: 0,
                }),
                ExecutionStatus::Failed | ExecutionStatus::Cancelled => {
                    Found::New(child.try_n(n + 1).to_string())
                }
            })
        })
        .await
    }

    /// Records a new run of the child, started by `request`.
    async fn create(
        &self,
        request: &TaskRequest,
        id: String,
        inputs: Value,
    ) -> Result<Execution, ServiceError> {
        let record = running_record(
            id.clone(),
            &self.record.tenant,
            &self.plan,
            (self.record.file.clone(), self.record.source.clone()),
            inputs,
            self.record.plugins.clone(),
            Some(ParentTask {
                execution: request.execution_id.to_string(),
                task: request.task_id.clone(),
            }),
        );
        let executions = self.record.executions.clone();
        blocking(move || {
            let log = executions.create(&record)?;
            Execution::taken_up(&id, log, record)
        })
        .await
    }
}

/// A child run found on disk.
enum Found {
    /// It succeeded: its report, from the record.
    Succeeded(RunReport),
    /// It is to go on.
    Unfinished(Execution),
    /// There is none to go on with: the id of a new one.
    New(String),
}

/// Runs file work off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ServiceError> + Send + 'static,
) -> Result<T, ServiceError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ServiceError::Plugin(format!("a recording thread failed: {e}")))?
}

impl Executor for TaskExecutor {
    async fn execute(&self, request: TaskRequest) -> Result<TaskSuccess, TaskFailure> {
        // Most workflows have no children: no key to compute or look up.
        if !self.children.is_empty()
            && let Some(child) = self.children.get(request.plugin_key().as_ref())
        {
            return Arc::clone(child).run(request).await;
        }
        self.plugins.execute(request).await
    }
}
