//! What a run reports: per-task results, progress events, the run's outcome.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::executor::{FailureKind, Metering, TaskFailure, Usage};

/// How a task ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    /// It ran and returned an output.
    Succeeded,
    /// It ran (or its input could not be resolved) and failed.
    Failed,
    /// Its `when:` was false.
    Skipped,
    /// A task it needs failed or did not run.
    NotRun,
}

impl TaskStatus {
    /// The snake_case name, as expressions see it in `tasks.<id>.status`.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Succeeded => "succeeded",
            TaskStatus::Failed => "failed",
            TaskStatus::Skipped => "skipped",
            TaskStatus::NotRun => "not_run",
        }
    }
}

/// The outcome of one task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskReport {
    /// The task's id.
    pub id: String,
    /// The plugin it uses.
    pub uses: String,
    /// How it ended.
    pub status: TaskStatus,
    /// Its output, when it succeeded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<Value>,
    /// Why it failed or did not run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<TaskError>,
    /// Token usage the plugin reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// What running it cost (zero when it did not run).
    #[serde(flatten)]
    pub metering: Metering,
    /// Attempts it took, fallback included (0 when it did not run).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts: u32,
    /// Its output came from its fallback.
    #[serde(default, skip_serializing_if = "is_false")]
    pub fallback: bool,
    /// Everything failed and its output is the task's `default:` (`error`
    /// says what failed).
    #[serde(default, skip_serializing_if = "is_false")]
    pub degraded: bool,
    /// It failed, and `continue_on_error` let its dependents run anyway.
    #[serde(default, skip_serializing_if = "is_false")]
    pub tolerated: bool,
    /// The resolved input of its last attempt, kept when it failed (for
    /// the dead-letter queue and for reading what went wrong).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Value>,
}

impl TaskReport {
    /// The state a task (or a `for_each` item) reached after its attempts:
    /// succeeded with the output, or failed with the error and the input
    /// of its last attempt.
    pub fn from_outcome(id: &str, uses: &str, outcome: super::Outcome) -> Self {
        let mut report = Self {
            id: id.to_owned(),
            uses: uses.to_owned(),
            status: TaskStatus::Succeeded,
            output: None,
            error: None,
            usage: None,
            metering: Metering::default(),
            attempts: outcome.attempts,
            fallback: outcome.fallback,
            degraded: false,
            tolerated: false,
            input: None,
        };
        match outcome.result {
            Ok(success) => {
                report.output = Some(success.output);
                report.usage = success.usage;
                report.metering = success.metering;
            }
            Err(failure) => {
                report.status = TaskStatus::Failed;
                report.metering = failure.metering;
                report.error = Some(TaskError::from(failure));
                report.input = outcome
                    .input
                    .as_deref()
                    .and_then(|text| serde_json::from_str(text).ok());
            }
        }
        report
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Why a task failed or did not run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskError {
    /// The class of failure; `None` when the task did not run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<FailureKind>,
    /// What happened.
    pub message: String,
}

impl From<TaskFailure> for TaskError {
    fn from(f: TaskFailure) -> Self {
        Self {
            kind: Some(f.kind),
            message: f.message,
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Every task succeeded or was skipped, and the outputs were computed.
    Succeeded,
    /// A task failed, or an output could not be computed.
    Failed,
    /// The run was cancelled before it finished.
    Cancelled,
}

/// The outcome of a run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// The workflow's name.
    pub workflow: String,
    /// This run's id.
    pub execution_id: String,
    /// How it ended.
    pub status: RunStatus,
    /// The first failure, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The workflow's outputs (empty when the run failed).
    pub outputs: serde_json::Map<String, Value>,
    /// Every task, in file order.
    pub tasks: Vec<TaskReport>,
    /// Wall-clock time of the whole run.
    pub duration_us: u64,
}

/// Progress, reported while a run goes on.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// A task attempt was handed to the executor.
    Started {
        /// The task's id.
        id: &'a str,
        /// Its plugin.
        uses: &'a str,
        /// The attempt number.
        attempt: u32,
    },
    /// A task reached its final state.
    Finished(&'a TaskReport),
}

/// What runs consumed: model tokens (in and out, cached answers not
/// counted), what they cost, and fuel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Consumption {
    /// Model tokens, in and out.
    pub tokens: u64,
    /// Their cost in US dollars, where a price was known.
    pub cost_usd: f64,
    /// Fuel the plugins burned.
    pub fuel: u64,
}

impl Consumption {
    /// What the final states `tasks` consumed: each task once, a
    /// `for_each` through its own state (which adds its items up), or
    /// through its finished items while it has none.
    pub fn of(tasks: &[TaskReport]) -> Self {
        let finished: std::collections::HashSet<&str> = tasks
            .iter()
            .filter(|r| !super::TaskRef::is_item(&r.id))
            .map(|r| r.id.as_str())
            .collect();
        let mut total = Self::default();
        for report in tasks {
            if let super::TaskRef::Item { task, .. } = super::TaskRef::parse(&report.id)
                && finished.contains(task)
            {
                continue;
            }
            total.add(Self::from_parts(
                report.usage.as_ref(),
                report.metering.fuel,
            ));
        }
        total
    }

    /// What one answer consumed: its usage (nothing when it came from the
    /// cache) and `fuel`.
    pub fn from_parts(usage: Option<&Usage>, fuel: u64) -> Self {
        let usage = usage.filter(|u| !u.cached);
        Self {
            tokens: usage.map_or(0, |u| u.input_tokens.saturating_add(u.output_tokens)),
            cost_usd: usage
                .and_then(|u| u.cost_usd)
                .filter(|c| c.is_finite() && *c >= 0.0)
                .unwrap_or(0.0),
            fuel,
        }
    }

    /// Adds `other` in (counts saturate).
    pub fn add(&mut self, other: Self) {
        self.tokens = self.tokens.saturating_add(other.tokens);
        // Costs come from plugins: a sum stays a finite number.
        self.cost_usd = (self.cost_usd + other.cost_usd).min(f64::MAX);
        self.fuel = self.fuel.saturating_add(other.fuel);
    }
}
