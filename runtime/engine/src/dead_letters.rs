//! The dead-letter queue across recorded executions: tasks that failed for
//! good. A dead letter's id is `<execution id>/<task id>`.
//!
//! Replaying one clears the task's state and the `not_run` states its
//! failure caused, stores the replacement input and reopens the execution,
//! in one transaction; resuming the execution then runs them.

use serde_json::Value;

use crate::service::{self, ServiceError};
use orchestrator_core::expr::Expressions;
use orchestrator_core::scheduler::TaskStatus;
use orchestrator_store::Store;
use orchestrator_store::executions::{
    DeadLetter, DeadLetterState, EventKind, ExecutionError, Executions, LogEvent,
};

/// Splits `<execution>/<task>`.
pub fn split_id(id: &str) -> Result<(&str, &str), ServiceError> {
    id.split_once('/').ok_or_else(|| {
        ServiceError::Inputs(format!(
            "`{id}` is not a dead-letter id; they look like `<execution id>/<task id>` (`runtime dlq list`)"
        ))
    })
}

/// Open dead letters of every execution that can be read now, with their
/// execution's id. A sub-workflow run's failure is its parent task's: the
/// parent's letter is the one listed.
pub fn open_letters(executions: &Executions) -> Vec<(String, DeadLetter)> {
    let mut out = Vec::new();
    for id in executions.ids() {
        let letters = match crate::executions::read_settled(executions, &id).and_then(|log| {
            if log.record()?.parent.is_some() {
                Ok(Vec::new())
            } else {
                log.dead_letters()
            }
        }) {
            Ok(letters) => letters,
            Err(ExecutionError::Busy(_)) => continue,
            Err(e) => {
                tracing::warn!("skipping execution {id}: {e}");
                continue;
            }
        };
        out.extend(
            letters
                .into_iter()
                .filter(|l| l.state == DeadLetterState::Open)
                .map(|l| (id.clone(), l)),
        );
    }
    out
}

/// The dead letter `id` and the failed attempts its execution recorded.
pub fn find(
    executions: &Executions,
    id: &str,
) -> Result<(DeadLetter, Vec<LogEvent>), ServiceError> {
    let (execution, task) = split_id(id)?;
    let log = executions.read(execution)?;
    let letter = log
        .dead_letters()?
        .into_iter()
        .rfind(|l| l.task == task)
        .ok_or_else(|| {
            ServiceError::NotFound(format!(
                "execution `{execution}` has no dead letter for task `{task}`; `runtime dlq list` shows them"
            ))
        })?;
    let attempts = log
        .events()?
        .into_iter()
        .filter(|e| matches!(&e.kind, EventKind::AttemptFailed { task: t, .. } if t == task))
        .collect();
    Ok((letter, attempts))
}

/// A replay made ready: resuming `execution` runs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    /// The execution to resume.
    pub execution: String,
    /// The task that runs again.
    pub task: String,
    /// Tasks its failure kept from running, which run again too.
    pub cleared: Vec<String>,
}

/// Reopens the execution of dead letter `id` so that its task runs again
/// (with `input` instead of its resolved `with:`, when given), together
/// with the tasks its failure kept from running.
pub fn prepare_replay(
    executions: &Executions,
    store: &Store,
    expressions: &Expressions,
    id: &str,
    input: Option<&Value>,
) -> Result<Replay, ServiceError> {
    let (execution, task) = split_id(id)?;
    let log = executions.open(execution)?;
    let record = log.record()?;
    let workflow = service::load_recorded(&record, expressions, store)?;
    let plan = &workflow.plan;
    let start = plan
        .tasks
        .iter()
        .position(|t| t.id == task)
        .ok_or_else(|| {
            ServiceError::Inputs(format!("execution `{execution}` has no task `{task}`"))
        })?;
    let states = log.tasks()?;
    let not_run = |i: usize| {
        states
            .iter()
            .any(|r| r.id == plan.tasks[i].id && r.status == TaskStatus::NotRun)
    };
    let mut cleared = Vec::new();
    let mut stack = vec![start];
    while let Some(i) = stack.pop() {
        for dependent in plan.dag.dependents(i) {
            if not_run(dependent) && !cleared.contains(&plan.tasks[dependent].id) {
                cleared.push(plan.tasks[dependent].id.clone());
                stack.push(dependent);
            }
        }
    }
    log.replay(task, &cleared, input)?;
    Ok(Replay {
        execution: execution.to_owned(),
        task: task.to_owned(),
        cleared,
    })
}

/// Removes the dead letters `ids` from the queue, or every open one when
/// `all`; their executions keep the record. Returns how many.
pub fn purge(executions: &Executions, ids: &[String], all: bool) -> Result<usize, ServiceError> {
    let targets: Vec<String> = if all {
        open_letters(executions)
            .into_iter()
            .map(|(execution, l)| format!("{execution}/{}", l.task))
            .collect()
    } else if ids.is_empty() {
        return Err(ServiceError::Inputs(
            "name dead letters to purge (`<execution id>/<task id>`), or give --all".into(),
        ));
    } else {
        ids.to_vec()
    };
    for id in &targets {
        let (execution, task) = split_id(id)?;
        executions.open(execution)?.purge_dead_letter(task)?;
    }
    Ok(targets.len())
}
