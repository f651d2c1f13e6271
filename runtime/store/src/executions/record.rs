//! What an execution file holds besides task states: the execution's
//! record (enough to resume it without the original file) and the events
//! of its log.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use orchestrator_core::scheduler::{
    Consumption, FailureKind, Metering, TaskReport, TaskStatus, Usage,
};
use orchestrator_core::workflow::Durability as WorkflowDurability;

/// Where an execution stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExecutionStatus {
    /// Started and not finished (or its process died: see [`Executions::list`]).
    Running,
    /// Finished, every task succeeded or was skipped.
    Succeeded,
    /// Finished with a failure.
    Failed,
    /// Stopped by `runtime cancel`.
    Cancelled,
}

impl ExecutionStatus {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// What an execution is: enough to resume it without the original file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecutionRecord {
    /// The id.
    pub id: String,
    /// The tenant it belongs to.
    pub tenant: String,
    /// The workflow's name.
    pub workflow: String,
    /// The workflow file it was started from (relative `.wasm` paths resolve against its directory).
    pub file: String,
    /// The workflow text, exactly as it was when the execution started.
    pub source: String,
    /// The resolved inputs.
    pub inputs: Value,
    /// Its durability setting.
    pub durability: WorkflowDurability,
    /// Every task id, in file order.
    #[serde(default)]
    pub tasks: Vec<String>,
    /// The plugin digest each task resolved to at the start (waits have none).
    pub plugins: BTreeMap<String, String>,
    /// Where it stands.
    pub status: ExecutionStatus,
    /// Milliseconds since the Unix epoch.
    pub created_at: u64,
    /// When it finished, if it did.
    pub finished_at: Option<u64>,
    /// The first failure, in words.
    pub error: Option<String>,
    /// The workflow's outputs, once it succeeded.
    pub outputs: serde_json::Map<String, Value>,
    /// What it consumed, once it finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumed: Option<Consumption>,
    /// Set for the run of a sub-workflow: the task that ran it (its parent
    /// resumes it, not `runtime resume`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ParentTask>,
}

/// The task of another execution that runs this one as a sub-workflow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentTask {
    /// The parent execution's id.
    pub execution: String,
    /// The task's id there.
    pub task: String,
}

/// One entry of the event log.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogEvent {
    /// Milliseconds since the Unix epoch.
    pub at: u64,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// How a task came to its final state, beside the state itself: what a
/// progress line or a console shows without reading the task's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskEnd {
    /// The class of its failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<FailureKind>,
    /// Token usage the plugin reported, priced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// What running it cost.
    #[serde(default)]
    pub metering: Metering,
    /// Attempts it took, fallback included.
    #[serde(default)]
    pub attempts: u32,
    /// Its output came from its fallback.
    #[serde(default)]
    pub fallback: bool,
    /// Its output is the task's `default:`.
    #[serde(default)]
    pub degraded: bool,
    /// It failed and `continue_on_error` let its dependents run.
    #[serde(default)]
    pub tolerated: bool,
}

impl TaskEnd {
    /// How `report` got to its state.
    pub fn of(report: &TaskReport) -> Self {
        Self {
            kind: report.error.as_ref().and_then(|e| e.kind),
            usage: report.usage.clone(),
            metering: report.metering,
            attempts: report.attempts,
            fallback: report.fallback,
            degraded: report.degraded,
            tolerated: report.tolerated,
        }
    }
}

/// What can happen to an execution.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventKind {
    /// The execution was created.
    ExecutionStarted {
        /// The workflow's name.
        workflow: String,
    },
    /// A process took the execution up again after its previous one stopped.
    ExecutionResumed {
        /// Tasks whose recorded states were kept.
        finished_tasks: usize,
    },
    /// A task attempt started.
    AttemptStarted {
        /// The task.
        task: String,
        /// The attempt number.
        attempt: u32,
        /// It runs the task's fallback.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        fallback: bool,
    },
    /// A task attempt failed.
    AttemptFailed {
        /// The task.
        task: String,
        /// The attempt number.
        attempt: u32,
        /// The kind of failure.
        kind: FailureKind,
        /// What happened.
        error: String,
        /// When the next attempt starts, ms since the epoch, if it is retried.
        #[serde(skip_serializing_if = "Option::is_none")]
        retry_at: Option<u64>,
    },
    /// A `for_each` task's items are known.
    ItemsStarted {
        /// The task.
        task: String,
        /// How many items it has.
        items: usize,
        /// How many of them had finished before (a resumed run).
        finished: usize,
    },
    /// A task reached its final state.
    TaskFinished {
        /// The task.
        task: String,
        /// Its state.
        status: TaskStatus,
        /// Why it failed or did not run.
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
        /// How it got there (absent in logs of earlier releases).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        end: Option<TaskEnd>,
    },
    /// `runtime cancel` reached the process running the execution.
    CancelRequested,
    /// A task began waiting for a signal.
    WaitStarted {
        /// The task.
        task: String,
        /// The signal it waits for.
        signal: String,
        /// When it gives up, ms since the epoch.
        #[serde(skip_serializing_if = "Option::is_none")]
        deadline: Option<u64>,
    },
    /// A failed task was put in the dead-letter queue.
    DeadLettered {
        /// The task.
        task: String,
    },
    /// `runtime dlq replay` took a dead letter up again.
    DeadLetterReplayed {
        /// The task.
        task: String,
        /// The replay ran with an input given on the command line.
        input_replaced: bool,
    },
    /// `runtime dlq purge` removed a dead letter from the queue.
    DeadLetterPurged {
        /// The task.
        task: String,
    },
    /// A plugin emitted something while it ran (`host.emit`): streamed
    /// text, progress. At most `MAX_EMITTED_BYTES` per attempt are kept.
    Emitted {
        /// The task (or `for_each` item).
        task: String,
        /// The attempt that emitted it.
        attempt: u32,
        /// What it is, as the plugin says: `text` for streamed text.
        kind: String,
        /// The data.
        data: String,
    },
    /// `runtime signal` delivered a signal.
    SignalReceived {
        /// Its name.
        signal: String,
        /// The id the sender gave the request: a signal sent again with
        /// the same one is not recorded again.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_id: Option<String>,
    },
    /// The execution ended.
    ExecutionFinished {
        /// How.
        status: ExecutionStatus,
        /// Why, if it failed.
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}
