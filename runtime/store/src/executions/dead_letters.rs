//! The dead-letter queue of an execution: tasks that failed for good, with
//! their resolved input and error, kept until they are replayed or purged.
//!
//! A dead letter is written in the same transaction as its task's failed
//! state. A replay clears that state (and the `not_run` states it caused),
//! marks the letter replayed and the execution running again, all in one
//! transaction; the run then resumes like any interrupted execution.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Change, EventKind, ExecutionError, ExecutionLog, ExecutionStatus, LogEvent, now_ms};
use orchestrator_core::scheduler::{FailureKind, TaskReport, TaskStatus};

/// A task that failed for good.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The task.
    pub task: String,
    /// Its plugin, as the workflow names it.
    pub uses: String,
    /// The input of its last attempt, resolved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
    /// The kind of its last failure.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<FailureKind>,
    /// Its last error.
    pub error: String,
    /// Attempts it took.
    pub attempts: u32,
    /// When it failed, ms since the epoch.
    pub at: u64,
    /// Whether it is still in the queue.
    pub state: DeadLetterState,
}

/// Where a dead letter stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeadLetterState {
    /// In the queue.
    Open,
    /// Replayed with `runtime dlq replay`.
    Replayed,
    /// Removed with `runtime dlq purge`.
    Purged,
}

impl DeadLetter {
    /// The dead letter a final state makes, if any: a task (not a
    /// `for_each` item) that failed by itself, not one that was cancelled,
    /// stopped by the workflow's timeout, or did not run.
    pub fn of(report: &TaskReport) -> Option<Self> {
        let error = report.error.as_ref()?;
        let kind = error.kind?;
        let dead = report.status == TaskStatus::Failed
            && !report.id.contains('[')
            && !matches!(kind, FailureKind::Cancelled | FailureKind::WorkflowTimeout);
        dead.then(|| Self {
            task: report.id.clone(),
            uses: report.uses.clone(),
            input: report.input.clone(),
            kind: Some(kind),
            error: error.message.clone(),
            attempts: report.attempts,
            at: now_ms(),
            state: DeadLetterState::Open,
        })
    }
}

impl ExecutionLog {
    /// Every dead letter of this execution, open or not.
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>, ExecutionError> {
        self.backend.dead_letters()
    }

    /// Inputs dead-letter replays gave tasks, by task.
    pub fn overrides(&self) -> Result<HashMap<String, String>, ExecutionError> {
        self.backend.overrides()
    }

    /// Takes dead letter `task` up again: its state and the states in
    /// `cleared` (the tasks it kept from running) are removed, `input` (if
    /// given) replaces its resolved input, and the execution is running
    /// again, all in one transaction. Resume the execution to run it.
    pub fn replay(
        &self,
        task: &str,
        cleared: &[String],
        input: Option<&Value>,
    ) -> Result<(), ExecutionError> {
        let mut letter = self.open_letter(task)?;
        letter.state = DeadLetterState::Replayed;
        let mut record = self.record()?;
        record.status = ExecutionStatus::Running;
        record.finished_at = None;
        record.error = None;
        record.outputs.clear();
        self.write(|mut events| {
            events.push(LogEvent {
                at: now_ms(),
                kind: EventKind::DeadLetterReplayed {
                    task: task.to_owned(),
                    input_replaced: input.is_some(),
                },
            });
            Change {
                events,
                cleared: std::iter::once(task.to_owned())
                    .chain(cleared.iter().cloned())
                    .collect(),
                retries_removed: vec![task.to_owned()],
                overrides: input
                    .map(|i| (task.to_owned(), i.to_string()))
                    .into_iter()
                    .collect(),
                dead_letters: vec![letter],
                record: Some(record),
                ..Change::default()
            }
        })
    }

    /// Removes dead letter `task` from the queue (it stays in the log).
    pub fn purge_dead_letter(&self, task: &str) -> Result<(), ExecutionError> {
        let mut letter = self.open_letter(task)?;
        letter.state = DeadLetterState::Purged;
        self.write(|mut events| {
            events.push(LogEvent {
                at: now_ms(),
                kind: EventKind::DeadLetterPurged {
                    task: task.to_owned(),
                },
            });
            Change {
                events,
                dead_letters: vec![letter],
                ..Change::default()
            }
        })
    }

    fn open_letter(&self, task: &str) -> Result<DeadLetter, ExecutionError> {
        self.dead_letters()?
            .into_iter()
            .find(|l| l.task == task && l.state == DeadLetterState::Open)
            .ok_or_else(|| ExecutionError::Unreadable {
                location: self.location(),
                reason: format!(
                    "task `{task}` has no open dead letter; `runtime dlq list` shows the open ones"
                ),
            })
    }
}
