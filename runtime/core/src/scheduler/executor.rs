//! The one boundary between the scheduler and whatever runs a task.
//!
//! The scheduler hands an [`Executor`] a [`TaskRequest`] and gets back a
//! [`TaskSuccess`] or a classified [`TaskFailure`]; it never sees wasmtime.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::effects::Effects;
use super::journal::Cancel;
use super::plugin_key::PluginKey;
use super::task_ref::TaskRef;
use crate::tenant::TenantId;
use crate::workflow::Limits;

pub use crate::fault::FailureKind;

/// One attempt of one task, with its input resolved.
#[derive(Debug, Clone)]
pub struct TaskRequest {
    /// The run this attempt belongs to.
    pub execution_id: Arc<str>,
    /// Whose run it is.
    pub tenant: TenantId,
    /// The task's id.
    pub task_id: String,
    /// The plugin, as the workflow's `uses:` names it.
    pub uses: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The resolved `with:`, as JSON text.
    pub input: String,
    /// Sandbox limits of this attempt.
    pub limits: Limits,
    /// Set when the run is cancelled: the executor should stop the attempt.
    pub cancel: Arc<Cancel>,
    /// Runs the task's fallback rather than its own plugin.
    pub fallback: bool,
    /// When what the attempt does may be seen outside (its HTTP requests,
    /// emits, child workflows, writes): at once, or once its needs' states
    /// are durable.
    pub effects: Effects,
}

impl TaskRequest {
    /// Which prepared plugin runs this request: the task's, or its
    /// fallback's, in its text form (the key executors keep plugins under).
    pub fn plugin_key(&self) -> std::borrow::Cow<'_, str> {
        // An item of a `for_each` (`task[3]`) runs its task's plugin.
        let task = TaskRef::parse(&self.task_id).task();
        if self.fallback {
            PluginKey::Fallback(task.to_owned()).to_string().into()
        } else {
            task.into()
        }
    }
}

/// What running an attempt cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Metering {
    /// Wall-clock time, instantiation included.
    #[serde(
        rename = "duration_us",
        serialize_with = "as_micros",
        deserialize_with = "from_micros"
    )]
    pub duration: Duration,
    /// Fuel consumed.
    pub fuel: u64,
    /// Largest linear memory reached, in bytes.
    pub peak_memory: u64,
}

/// Token usage a plugin reported, and what the host made of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    /// Tokens sent to a model.
    pub input_tokens: u64,
    /// Tokens a model produced.
    pub output_tokens: u64,
    /// The model, if known.
    pub model: Option<String>,
    /// Who served it (`openai`, `anthropic`, ...), if the plugin says
    /// (contract 0.2.0 on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// What it cost in US dollars, by the host's price table (absent when
    /// the model has no price there).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    /// Answered from the response cache: nothing was spent.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cached: bool,
}

impl Usage {
    /// The usage of several calls together (a `for_each`'s items, a run):
    /// tokens and known costs added up, cache hits spending nothing; `None`
    /// when none reported any.
    pub fn total<'a>(usages: impl IntoIterator<Item = &'a Usage>) -> Option<Usage> {
        let mut total: Option<Usage> = None;
        for usage in usages {
            let sum = total.get_or_insert_with(|| Usage {
                input_tokens: 0,
                output_tokens: 0,
                model: usage.model.clone(),
                provider: usage.provider.clone(),
                cost_usd: None,
                cached: true,
            });
            sum.cached &= usage.cached;
            if sum.model != usage.model {
                sum.model = None;
            }
            if sum.provider != usage.provider {
                sum.provider = None;
            }
            if usage.cached {
                continue;
            }
            sum.input_tokens = sum.input_tokens.saturating_add(usage.input_tokens);
            sum.output_tokens = sum.output_tokens.saturating_add(usage.output_tokens);
            if let Some(cost) = usage.cost_usd {
                sum.cost_usd = Some(sum.cost_usd.unwrap_or(0.0) + cost);
            }
        }
        total
    }
}

/// A finished attempt.
#[derive(Debug, Clone)]
pub struct TaskSuccess {
    /// The plugin's output.
    pub output: Value,
    /// Token usage, if the plugin reported any.
    pub usage: Option<Usage>,
    /// What it cost.
    pub metering: Metering,
}

/// A failed attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TaskFailure {
    /// Why, in a form retry logic can act on.
    pub kind: FailureKind,
    /// What happened and, where it helps, what to do.
    pub message: String,
    /// What it cost before failing.
    #[serde(flatten)]
    pub metering: Metering,
}

/// Runs task attempts. Implementations must contain every failure of the
/// thing they run: a failure is a [`TaskFailure`], never a panic.
pub trait Executor: Send + Sync + 'static {
    /// Runs one attempt.
    fn execute(
        &self,
        request: TaskRequest,
    ) -> impl Future<Output = Result<TaskSuccess, TaskFailure>> + Send;
}

fn as_micros<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

fn from_micros<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(Duration::from_micros)
}
