//! The executor a run hands its tasks to: plugins run in the sandbox
//! (behind their circuit breakers), and `uses: workflow:NAME` tasks run a
//! registered workflow as a child run. The child's inputs are the task's
//! resolved `with:`, its outputs are the task's output; it runs in this
//! process with the parent's cancel, bounded by the task's deadline, and its
//! tasks' ids (and idempotency keys) are prefixed with the parent execution
//! and task. A child is not recorded on its own: a resumed parent runs an
//! unfinished child again from its start.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use indexmap::IndexMap;
use serde_json::Value;

use crate::breakers::BreakerExecutor;
use crate::expr::Expressions;
use crate::sandbox::SandboxExecutor;
use crate::scheduler::{
    Executor, FailureKind, Metering, NoJournal, RunOptions, RunStatus, Scheduler, TaskFailure,
    TaskRequest, TaskSuccess,
};
use crate::workflow::Plan;

/// How deep sub-workflows may nest (a workflow that runs itself stops here).
pub const MAX_DEPTH: usize = 8;

/// Runs a workflow's tasks: plugins, and registered workflows.
#[derive(Debug)]
pub struct TaskExecutor {
    plugins: BreakerExecutor<SandboxExecutor>,
    /// By plugin key (task id, or its fallback's key).
    children: HashMap<String, Arc<Child>>,
}

impl TaskExecutor {
    /// An executor for `plugins`, and for the tasks in `children` that run
    /// a workflow.
    pub fn new(
        plugins: BreakerExecutor<SandboxExecutor>,
        children: HashMap<String, Arc<Child>>,
    ) -> Self {
        Self { plugins, children }
    }
}

/// A registered workflow, prepared to run as a task.
#[derive(Debug)]
pub struct Child {
    /// `name@version`, for messages.
    label: String,
    plan: Plan,
    scheduler: Scheduler<TaskExecutor>,
}

impl Child {
    /// `plan` (registered as `label`) run by `executor`.
    pub fn new(
        label: String,
        plan: Plan,
        executor: TaskExecutor,
        expressions: Expressions,
    ) -> Self {
        Self {
            label,
            plan,
            scheduler: Scheduler::new(Arc::new(executor), expressions),
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
            let id = format!("{}/{}", request.execution_id, request.task_id);
            let options = RunOptions {
                concurrency: None,
                journal: None::<&NoJournal>,
                done: Vec::new(),
                retries: Vec::new(),
                overrides: HashMap::new(),
                started_at: None,
                cancel: Arc::clone(&request.cancel),
                observe: &|_| {},
            };
            let run = self.scheduler.run_with(&self.plan, &inputs, &id, options);
            let report = tokio::time::timeout(request.limits.deadline, run)
                .await
                .map_err(|_| {
                    failure(
                        FailureKind::Deadline,
                        format!(
                            "workflow `{}` ran past the task's deadline ({}); raise `limits.deadline`",
                            self.label,
                            humantime::format_duration(request.limits.deadline)
                        ),
                    )
                })?;
            let mut metering = Metering::default();
            for task in &report.tasks {
                metering.duration += task.metering.duration;
                metering.fuel += task.metering.fuel;
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
