//! Executions with a file of their own: creating the record of a new one,
//! taking up one whose process stopped, and running one to its end with
//! every final task state committed ([`run_recorded`], shared by top-level
//! executions and sub-workflow runs), or until it parks ([`run_or_park`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;
use serde_json::Value;

use super::error::ServiceError;
use super::load::{LoadedWorkflow, load_text};
use crate::metrics::TimedJournal;
use orchestrator_core::expr::Expressions;
use orchestrator_core::scheduler::{
    Cancel, Event, Executor, PendingRetry, Ran, RunOptions, RunReport, RunStatus,
};
use orchestrator_core::scheduler::{PluginKey, PolicyStage, Scheduler, TaskReport};
use orchestrator_core::tenant::TenantId;
use orchestrator_core::workflow::Plan;
use orchestrator_store::Store;
use orchestrator_store::executions::{
    ExecutionJournal, ExecutionLog, ExecutionRecord, ExecutionStatus, Executions, ParentTask,
    now_ms,
};

/// An execution this process records and runs.
#[derive(Debug, Clone)]
pub struct Execution {
    /// Its id.
    pub id: String,
    /// Whose it is.
    pub tenant: TenantId,
    /// Its file, open in this process.
    pub log: Arc<ExecutionLog>,
    /// Cancels it.
    pub cancel: Arc<Cancel>,
    /// Its resolved inputs.
    pub inputs: Value,
    /// Final task states recorded before this process took it up.
    pub done: Vec<TaskReport>,
    /// Retries an earlier process scheduled and did not start.
    pub retries: Vec<PendingRetry>,
    /// Inputs dead-letter replays gave tasks, by task id (JSON text).
    pub overrides: HashMap<String, String>,
    /// When it was created, ms since the epoch.
    pub created_at: u64,
}

/// Creates the record of a new execution of `workflow`.
pub fn start_execution(
    workflow: &LoadedWorkflow,
    executions: &Executions,
    inputs: IndexMap<String, Value>,
) -> Result<Execution, ServiceError> {
    start_execution_as(workflow, executions, inputs, None)
}

/// Creates the record of a new execution of `workflow`, named `id` (a new
/// one when `None`); an execution of that id must not exist.
pub fn start_execution_as(
    workflow: &LoadedWorkflow,
    executions: &Executions,
    inputs: IndexMap<String, Value>,
    id: Option<String>,
) -> Result<Execution, ServiceError> {
    let inputs = workflow
        .plan
        .resolve_inputs(inputs)
        .map_err(ServiceError::Inputs)?;
    let id = id.unwrap_or_else(new_execution_id);
    let record = running_record(
        id.clone(),
        &workflow.tenant,
        &workflow.plan,
        (workflow.file.clone(), workflow.source.clone()),
        inputs.clone(),
        workflow.plugin_digests()?,
        None,
    );
    let log = executions.create(&record)?;
    Ok(Execution {
        id,
        tenant: workflow.tenant.clone(),
        log: Arc::new(log),
        cancel: Arc::default(),
        inputs,
        done: Vec::new(),
        retries: Vec::new(),
        overrides: HashMap::new(),
        created_at: record.created_at,
    })
}

/// The record of a new execution of `plan`, running from now; `origin` is
/// the workflow's file name and text, `parent` the task of a sub-workflow.
pub fn running_record(
    id: String,
    tenant: &TenantId,
    plan: &Plan,
    (file, source): (String, String),
    inputs: Value,
    plugins: BTreeMap<String, String>,
    parent: Option<ParentTask>,
) -> ExecutionRecord {
    ExecutionRecord {
        id,
        tenant: tenant.to_string(),
        workflow: plan.name.clone(),
        file,
        source,
        inputs,
        durability: plan.durability,
        tasks: plan.tasks.iter().map(|t| t.id.clone()).collect(),
        plugins,
        status: ExecutionStatus::Running,
        created_at: now_ms(),
        finished_at: None,
        error: None,
        outputs: serde_json::Map::new(),
        consumed: None,
        parent,
    }
}

/// The workflow of `record` as it was recorded, validated again against
/// its tenant's plugins in `store`.
pub fn load_recorded(
    record: &ExecutionRecord,
    expressions: &Expressions,
    store: &Store,
) -> Result<LoadedWorkflow, ServiceError> {
    let tenant = TenantId::new(&record.tenant)
        .map_err(|e| ServiceError::Plugin(format!("execution `{}`: {e}", record.id)))?;
    load_text(
        record.source.clone(),
        &record.file,
        expressions,
        store,
        &tenant,
    )
}

/// Refuses to take up execution `id` when a live process keeps it parked:
/// that process takes it up itself when a signal, a cancel or its deadline
/// comes.
pub fn refuse_parked(executions: &Executions, id: &str) -> Result<(), ServiceError> {
    if crate::parking::is_parked(executions, id) {
        return Err(ServiceError::Conflict(format!(
            "execution `{id}` is parked by a live process, waiting for a signal or a deadline; send the signal (`runtime signal {id} NAME`) or cancel it"
        )));
    }
    Ok(())
}

/// Takes up an execution whose process stopped: its workflow text as
/// recorded, validated again against `store`, with the plugins it started
/// with, and the task states it had committed.
pub fn reopen_execution(
    executions: &Executions,
    id: &str,
    expressions: &Expressions,
    store: &Store,
) -> Result<(Execution, LoadedWorkflow), ServiceError> {
    let log = executions.open(id)?;
    let record = log.record()?;
    if record.status != ExecutionStatus::Running {
        return Err(ServiceError::Plugin(format!(
            "execution `{id}` already finished ({}); there is nothing to resume",
            record.status.as_str()
        )));
    }
    if let Some(parent) = &record.parent {
        return Err(ServiceError::Plugin(format!(
            "execution `{id}` is the sub-workflow run of task `{}` of execution `{}`, which resumes it: `runtime resume {}`",
            parent.task, parent.execution, parent.execution
        )));
    }
    let workflow = load_recorded(&record, expressions, store)?;
    let now = workflow.plugin_digests()?;
    for (key, digest) in &record.plugins {
        if now.get(key) != Some(digest) {
            let policies = &workflow.plan.policies;
            let parsed = PluginKey::parse(key);
            let uses = match &parsed {
                Some(PluginKey::Task(task) | PluginKey::Fallback(task)) => workflow
                    .plan
                    .tasks
                    .iter()
                    .find(|t| &t.id == task)
                    .and_then(|t| match parsed {
                        Some(PluginKey::Fallback(_)) => {
                            t.fallback.as_ref().map(|f| f.uses.as_str())
                        }
                        _ => Some(t.uses.as_str()),
                    }),
                Some(PluginKey::Policy { stage, index, .. }) => match stage {
                    PolicyStage::Before => &policies.before,
                    PolicyStage::After => &policies.after,
                }
                .get(*index)
                .map(|s| s.uses.as_str()),
                None => None,
            }
            .unwrap_or("?");
            let what = if matches!(parsed, Some(PluginKey::Policy { .. })) {
                "policy"
            } else {
                "task"
            };
            return Err(ServiceError::Plugin(format!(
                "execution `{id}`: {what} `{key}` started with plugin {digest}, which `{uses}` no longer resolves to; reinstall that plugin to resume"
            )));
        }
    }
    Ok((Execution::taken_up(id, log, record)?, workflow))
}

impl Execution {
    /// An unfinished execution taken up by this process from its open
    /// file: the task states, retries and overrides recorded so far.
    pub fn taken_up(
        id: &str,
        log: ExecutionLog,
        record: ExecutionRecord,
    ) -> Result<Self, ServiceError> {
        let done = log.tasks()?;
        let retries = log.retries()?;
        let overrides = log.overrides()?;
        let tenant = TenantId::new(&record.tenant)
            .map_err(|e| ServiceError::Plugin(format!("execution `{id}`: {e}")))?;
        Ok(Self {
            id: id.to_owned(),
            tenant,
            log: Arc::new(log),
            cancel: Arc::default(),
            inputs: record.inputs,
            done,
            retries,
            overrides,
            created_at: record.created_at,
        })
    }
}

/// Runs a recorded execution with `scheduler` until it finishes or is
/// cancelled, every final task state committed to its log, then records
/// how it ended. Top-level executions ([`Runner::drive`]) and sub-workflow
/// runs go through here.
pub async fn run_recorded<E: Executor>(
    scheduler: &Scheduler<E>,
    plan: &Plan,
    execution: Execution,
    concurrency: Option<usize>,
    observe: &(dyn Fn(Event<'_>) + Sync),
) -> Result<RunReport, ServiceError> {
    match run_or_park(
        scheduler,
        plan,
        execution,
        concurrency,
        observe,
        Park::never(),
        None,
    )
    .await?
    {
        Ran::Finished(report) => Ok(report),
        Ran::Parked(_) => unreachable!("a run that may not park never parks"),
    }
}

/// Whether a recorded run may park ([`Scheduler::run_or_park`]), and
/// whether this process parked it before.
#[derive(Debug, Clone, Copy, Default)]
pub struct Park {
    /// Park once nothing but started waits has run this long.
    pub after: Option<Duration>,
    /// It was parked by this process and woken: taking it up again is not
    /// recorded as a resume.
    pub woken: bool,
}

impl Park {
    /// Runs to the end.
    pub fn never() -> Self {
        Self::default()
    }
}

/// Runs a recorded execution as [`run_recorded`] does, but parks it as
/// `park` says: then its end is not recorded, its notes are flushed, and
/// its file is let go with it.
pub async fn run_or_park<E: Executor>(
    scheduler: &Scheduler<E>,
    plan: &Plan,
    execution: Execution,
    concurrency: Option<usize>,
    observe: &(dyn Fn(Event<'_>) + Sync),
    park: Park,
    metrics: Option<Arc<crate::metrics::Metrics>>,
) -> Result<Ran, ServiceError> {
    let Execution {
        id,
        log,
        cancel,
        inputs,
        done,
        retries,
        overrides,
        created_at,
        tenant,
    } = execution;
    if !done.is_empty() && !park.woken {
        let log = Arc::clone(&log);
        let finished = done.len();
        tokio::task::spawn_blocking(move || log.resumed(finished))
            .await
            .map_err(|e| ServiceError::Plugin(e.to_string()))??;
    }
    let journal = TimedJournal::new(
        ExecutionJournal::new(Arc::clone(&log)),
        metrics,
        &tenant,
        plan,
    );
    let options = RunOptions {
        concurrency,
        journal: Some(&journal),
        done,
        retries,
        overrides,
        started_at: Some(created_at),
        cancel,
        tenant,
        observe,
    };
    let report = match scheduler
        .run_or_park(plan, &inputs, &id, options, park.after)
        .await
    {
        Ran::Finished(report) => report,
        Ran::Parked(parked) => {
            drop(journal);
            tokio::task::spawn_blocking(move || log.flush_notes())
                .await
                .map_err(|e| ServiceError::Plugin(e.to_string()))??;
            return Ok(Ran::Parked(parked));
        }
    };
    let status = match report.status {
        RunStatus::Succeeded => ExecutionStatus::Succeeded,
        RunStatus::Failed => ExecutionStatus::Failed,
        RunStatus::Cancelled => ExecutionStatus::Cancelled,
    };
    let (error, outputs) = (report.error.clone(), report.outputs.clone());
    let finished = tokio::task::spawn_blocking(move || log.finish(status, error, outputs))
        .await
        .map_err(|e| ServiceError::Plugin(e.to_string()))?;
    match (finished, &report.error) {
        (Ok(()), _) => Ok(Ran::Finished(report)),
        // The store failed during the run: that first error is the cause.
        (Err(e), Some(first)) => Err(ServiceError::Plugin(format!(
            "execution `{id}`: {first}; recording its end failed too ({e}). What was committed is kept: `runtime resume {id}` continues it"
        ))),
        (Err(e), None) => Err(e.into()),
    }
}

/// The span of `execution`'s run of `workflow`: a root in this process
/// (as a child it would keep the caller's span open for the run's life),
/// in the trace of the current span, the call that starts or resumes it.
pub fn execution_span(execution: &Execution, workflow: &str) -> tracing::Span {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let span = tracing::info_span!(
        parent: None,
        "execution",
        tenant = %execution.tenant.as_str(),
        execution = %execution.id,
        workflow = %workflow,
    );
    let _ = span.set_parent(tracing::Span::current().context());
    span
}

/// A run id unique on this host: time in nanoseconds and the process id.
pub fn new_execution_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{nanos:x}-{:x}", std::process::id())
}
