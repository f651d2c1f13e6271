//! A validated workflow, ready to run: tasks with resolved limits, compiled
//! expressions and the DAG.

use std::sync::Arc;

use indexmap::IndexMap;
use serde_json::Value;

use super::definition::InputType;
use super::limits::Limits;
use crate::expr::{Expression, Template};
use crate::fault::{BreakerPolicy, RetryPolicy};
use crate::graph::{Dag, Format, NodeLabel};

/// A workflow that passed validation.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The workflow's name.
    pub name: String,
    /// Declared inputs.
    pub inputs: IndexMap<String, InputDecl>,
    /// Tasks in file order; a task's index is its node in [`Plan::dag`].
    pub tasks: Vec<PlannedTask>,
    /// Dependencies between tasks.
    pub dag: Dag,
    /// What the workflow returns.
    pub outputs: Vec<(String, Template)>,
    /// How many tasks may run at once, when the workflow says.
    pub concurrency: Option<usize>,
    /// When a finished task's state must be durable.
    pub durability: Durability,
    /// The longest the whole run may take.
    pub timeout: Option<std::time::Duration>,
    /// The most the run may spend on models.
    pub budget: Option<Budget>,
    /// Policy plugins run around every model call.
    pub policies: Policies,
}

/// Policy plugins run around every model call (`policies:`).
#[derive(Debug, Clone, Default)]
pub struct Policies {
    /// Run on the prompt before the call.
    pub before: Vec<PolicyStep>,
    /// Run on the answer after it.
    pub after: Vec<PolicyStep>,
}

/// One policy: its plugin and settings.
#[derive(Debug, Clone)]
pub struct PolicyStep {
    /// The plugin, as `uses:` names it.
    pub uses: String,
    /// Its `with:`, to which the host adds `text`.
    pub with: serde_json::Map<String, Value>,
}

/// What a run may spend on models (`budget:`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    /// Tokens in and out, all tasks together.
    pub max_tokens: Option<u64>,
    /// US dollars, by the host's price table.
    pub max_cost: Option<f64>,
}

/// When a finished task's state must be on disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// Dependents start at once, but nothing they do can be seen outside
    /// before the commit holding their needs' states returns (one fsync per
    /// commit; completions that arrive together share it). After a crash,
    /// no finished task runs again, and only work that showed nothing does.
    #[default]
    Strict,
    /// Dependents start at once; states are committed right after, many at
    /// a time. After a crash, work whose state was not committed yet runs again.
    Batched,
}

/// A declared input.
#[derive(Debug, Clone)]
pub struct InputDecl {
    /// Its JSON type.
    pub kind: InputType,
    /// Its value when none is given; `None` makes it required.
    pub default: Option<Value>,
}

/// One task of a plan.
#[derive(Debug, Clone)]
pub struct PlannedTask {
    /// Its id.
    pub id: String,
    /// The plugin that executes it, as written in `uses:` (`wait:<signal>`
    /// for a wait).
    pub uses: String,
    /// Set when the task waits for a signal instead of running a plugin.
    pub wait: Option<WaitPlan>,
    /// Indices of the tasks it waits for.
    pub needs: Vec<usize>,
    /// Runs only when this is true.
    pub when: Option<Expression>,
    /// The plugin's input.
    pub input: Template,
    /// Indices of the tasks its expressions read.
    pub reads: Vec<usize>,
    /// Sandbox limits of each attempt.
    pub limits: Limits,
    /// What the workflow lets the plugin keep of its grants.
    pub grants: GrantLimits,
    /// How failed attempts are retried.
    pub retry: Arc<RetryPolicy>,
    /// The longest the task may take across its attempts.
    pub timeout: Option<std::time::Duration>,
    /// What runs when every attempt failed.
    pub fallback: Option<Fallback>,
    /// The output when everything failed (the task is then degraded).
    pub default: Option<Value>,
    /// A failure neither stops dependents nor fails the run.
    pub continue_on_error: bool,
    /// Set when the task runs once per element of a list.
    pub for_each: Option<ForEach>,
    /// Set when the task's plugin is guarded by a circuit breaker.
    pub breaker: Option<BreakerPolicy>,
    /// Among ready tasks, higher priorities start first.
    pub priority: i32,
    /// How long its answers are reused for the same request, when cached.
    pub cache: Option<std::time::Duration>,
}

/// A task that runs once per element of a list.
#[derive(Debug, Clone)]
pub struct ForEach {
    /// Gives the list.
    pub items: Expression,
    /// Items at once.
    pub concurrency: usize,
    /// The share of items that must succeed.
    pub min_success_ratio: f64,
}

/// The alternative a task falls back to.
#[derive(Debug, Clone)]
pub struct Fallback {
    /// Its plugin, as written (the task's own when the fallback names none).
    pub uses: String,
    /// Its input.
    pub input: Template,
}

/// A durable wait for a signal.
#[derive(Debug, Clone, PartialEq)]
pub struct WaitPlan {
    /// The signal's name.
    pub signal: String,
    /// How long to wait; forever when `None`.
    pub timeout: Option<std::time::Duration>,
    /// The output when the timeout passes; `None` makes a timeout a failure.
    pub default: Option<Value>,
}

/// Capabilities a workflow lets a task's plugin keep; `None` keeps all that
/// were granted at install.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrantLimits {
    /// Host patterns.
    pub http: Option<Vec<String>>,
    /// Environment variable names.
    pub env: Option<Vec<String>>,
    /// Secret names.
    pub secrets: Option<Vec<String>>,
    /// Directories, by the path the plugin sees, and whether writable.
    pub filesystem: Option<Vec<(String, bool)>>,
}

impl Plan {
    /// Draws the task graph.
    pub fn render(&self, format: Format) -> String {
        let labels: Vec<NodeLabel<'_>> = self
            .tasks
            .iter()
            .map(|t| NodeLabel {
                id: &t.id,
                uses: &t.uses,
                conditional: t.when.is_some(),
            })
            .collect();
        self.dag.render(&self.name, &labels, format)
    }

    /// Checks given inputs against the declarations and fills in defaults.
    /// `given` values that arrived as text (`--input k=v`) are converted to
    /// the declared type.
    pub fn resolve_inputs(&self, given: IndexMap<String, Value>) -> Result<Value, String> {
        if let Some(unknown) = given.keys().find(|k| !self.inputs.contains_key(*k)) {
            let declared: Vec<&str> = self.inputs.keys().map(String::as_str).collect();
            return Err(format!(
                "workflow `{}` has no input `{unknown}`; its inputs are: {}",
                self.name,
                if declared.is_empty() {
                    "(none)".to_owned()
                } else {
                    declared.join(", ")
                }
            ));
        }
        let mut given = given;
        let mut resolved = serde_json::Map::new();
        for (name, decl) in &self.inputs {
            let value = match given.shift_remove(name) {
                Some(value) => coerce(name, decl.kind, value)?,
                None => decl.default.clone().ok_or_else(|| {
                    format!("input `{name}` is required: pass `--input {name}=<value>`")
                })?,
            };
            resolved.insert(name.clone(), value);
        }
        Ok(Value::Object(resolved))
    }
}

/// Converts text to the declared type and checks the type of everything else.
fn coerce(name: &str, kind: InputType, value: Value) -> Result<Value, String> {
    let value = match (kind, value) {
        (InputType::String, v) => v,
        (_, Value::String(text)) => match serde_json::from_str::<Value>(&text) {
            Ok(parsed) => parsed,
            // Not JSON: keep the text, and let the type check speak.
            Err(_) => Value::String(text),
        },
        (_, v) => v,
    };
    if type_matches(kind, &value) {
        Ok(value)
    } else {
        Err(format!(
            "input `{name}` must be {}, not {value}",
            type_name(kind)
        ))
    }
}

/// Whether `value` has the JSON type `kind`.
pub fn type_matches(kind: InputType, value: &Value) -> bool {
    match kind {
        InputType::Any => true,
        InputType::String => value.is_string(),
        InputType::Number => value.is_number(),
        InputType::Integer => value.is_i64() || value.is_u64(),
        InputType::Boolean => value.is_boolean(),
        InputType::Object => value.is_object(),
        InputType::Array => value.is_array(),
    }
}

/// "a string", "an integer", ...
pub fn type_name(kind: InputType) -> &'static str {
    match kind {
        InputType::Any => "any value",
        InputType::String => "a string",
        InputType::Number => "a number",
        InputType::Integer => "an integer",
        InputType::Boolean => "true or false",
        InputType::Object => "an object",
        InputType::Array => "an array",
    }
}
