//! The workflow file as written: serde types that mirror YAML/JSON one to one.
//!
//! Unknown fields are rejected (`deny_unknown_fields`) so a typo such as
//! `need:` is an error rather than a silently ignored key. Every value a later
//! check may complain about is [`Spanned`], so diagnostics can point at its line.

use indexmap::IndexMap;
use serde::Deserialize;
use serde_saphyr::Spanned;

/// A whole workflow file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Definition {
    /// Human name of the workflow.
    pub name: String,
    /// What the workflow does.
    #[serde(default)]
    pub description: Option<String>,
    /// Named parameters supplied at run time.
    #[serde(default)]
    pub inputs: IndexMap<String, InputSpec>,
    /// Sandbox limits for every task that does not set its own.
    #[serde(default)]
    pub limits: LimitsSpec,
    /// Narrows what every task's plugin may do (a task's own `grants:` wins).
    #[serde(default)]
    pub grants: GrantsSpec,
    /// When a finished task's state must be durable: `strict` or `batched`.
    #[serde(default)]
    pub durability: super::plan::Durability,
    /// How many tasks may run at once.
    #[serde(default)]
    pub concurrency: Option<Spanned<usize>>,
    /// How failed attempts are retried, for every task that does not say.
    #[serde(default)]
    pub retry: RetrySpec,
    /// The longest the whole run may take, for example `1h`.
    #[serde(default)]
    pub timeout: Option<Spanned<String>>,
    /// Guards every task's plugin with a circuit breaker.
    #[serde(default)]
    pub breaker: Option<BreakerSpec>,
    /// The most the run may spend on models.
    #[serde(default)]
    pub budget: Option<BudgetSpec>,
    /// Policy plugins run around every model call.
    #[serde(default)]
    pub policies: PoliciesSpec,
    /// The steps of the workflow. Boxed: a `TaskSpec` is 2.6 KB, and a list
    /// of 100,000 growing by doubling spent a quarter of planning time
    /// moving them.
    pub tasks: Vec<Box<TaskSpec>>,
    /// Values the workflow returns: expressions or `${{ }}` templates.
    #[serde(default)]
    pub outputs: IndexMap<String, Spanned<serde_json::Value>>,
}

/// One declared input.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// The JSON type a value must have.
    #[serde(rename = "type", default)]
    pub kind: InputType,
    /// Used when no value is supplied; without it the input is required.
    #[serde(default)]
    pub default: Option<serde_json::Value>,
    /// What the input means.
    #[serde(default)]
    pub description: Option<String>,
}

/// JSON types an input may declare.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InputType {
    /// Any JSON value.
    #[default]
    Any,
    /// A string.
    String,
    /// Any number.
    Number,
    /// A whole number.
    Integer,
    /// `true` or `false`.
    Boolean,
    /// A JSON object.
    Object,
    /// A JSON array.
    Array,
}

/// One task.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskSpec {
    /// Unique name; other tasks and expressions refer to it.
    pub id: Spanned<String>,
    /// The plugin that executes it: `name`, `name@version`, `sha256:<digest>`
    /// or a path to a `.wasm` file. A task has `uses:` or `wait:`.
    #[serde(default)]
    pub uses: Option<Spanned<String>>,
    /// Suspends until a named signal arrives (`runtime signal`); its output
    /// is the signal's payload.
    #[serde(default)]
    pub wait: Option<WaitSpec>,
    /// What the task does.
    #[serde(default)]
    pub description: Option<String>,
    /// Tasks that must finish first.
    #[serde(default)]
    pub needs: Vec<Spanned<String>>,
    /// The plugin's input; string values may hold `${{ }}` templates.
    #[serde(default, rename = "with")]
    pub with: IndexMap<String, Spanned<serde_json::Value>>,
    /// A Rhai condition; the task is skipped when it is false.
    #[serde(default)]
    pub when: Option<Spanned<String>>,
    /// Sandbox limits for this task.
    #[serde(default)]
    pub limits: LimitsSpec,
    /// Narrows what the plugin may do for this task.
    #[serde(default)]
    pub grants: GrantsSpec,
    /// How failed attempts are retried (fields not set come from the workflow's `retry:`).
    #[serde(default)]
    pub retry: RetrySpec,
    /// The longest the task may take across all its attempts, for example `5m`.
    #[serde(default)]
    pub timeout: Option<Spanned<String>>,
    /// What runs when every attempt failed: another plugin, or the same
    /// plugin with other `with:` values.
    #[serde(default)]
    pub fallback: Option<FallbackSpec>,
    /// The output when everything failed; the task is then marked degraded.
    #[serde(default)]
    pub default: Option<serde_json::Value>,
    /// A failure does not stop dependents or fail the run; they see
    /// `tasks.<id>.status == "failed"`.
    #[serde(default)]
    pub continue_on_error: bool,
    /// Runs the task once per element of this list (an expression); `with:`
    /// sees `item` and `index`, and the output is the list of results.
    #[serde(default)]
    pub for_each: Option<Spanned<String>>,
    /// How many items of a `for_each` run at once (default 8).
    #[serde(default)]
    pub concurrency: Option<Spanned<usize>>,
    /// The share of items that must succeed for a `for_each` task to
    /// succeed (default 1).
    #[serde(default)]
    pub min_success_ratio: Option<Spanned<f64>>,
    /// Guards the task's plugin with a circuit breaker (fields not set come
    /// from the workflow's `breaker:`).
    #[serde(default)]
    pub breaker: Option<BreakerSpec>,
    /// Among ready tasks, higher priorities start first (default 0).
    #[serde(default)]
    pub priority: i32,
    /// Reuses the answer to the same request (same plugin, same resolved
    /// `with:`) for `ttl`.
    #[serde(default)]
    pub cache: Option<CacheSpec>,
}

/// `budget:` of a workflow.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BudgetSpec {
    /// Tokens in and out, all tasks together.
    #[serde(default)]
    pub max_tokens: Option<Spanned<u64>>,
    /// US dollars, by the host's price table.
    #[serde(default)]
    pub max_cost: Option<Spanned<f64>>,
}

/// `policies:` of a workflow: policy plugins run on the prompt of every
/// `llm` task before it is sent, and on its answer after.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoliciesSpec {
    /// Run on the prompt (`prompt` and each message) before the call.
    #[serde(default)]
    pub before: Vec<PolicyStepSpec>,
    /// Run on the answer's `text` after the call.
    #[serde(default)]
    pub after: Vec<PolicyStepSpec>,
}

/// One policy of `policies:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyStepSpec {
    /// The policy plugin (default `policy`).
    #[serde(default)]
    pub uses: Option<Spanned<String>>,
    /// Its settings; the host adds `text`.
    #[serde(default)]
    pub with: Option<Spanned<serde_json::Value>>,
}

/// `cache:` of a task.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSpec {
    /// How long an answer is reused, for example `1h`.
    pub ttl: Spanned<String>,
}

/// A circuit breaker as written; unset fields inherit.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerSpec {
    /// Opens after this many failures within `window` (default 5).
    #[serde(default)]
    pub failures: Option<Spanned<u32>>,
    /// Or when this share of the calls in `window` failed, for example `0.5`.
    #[serde(default)]
    pub failure_rate: Option<Spanned<f64>>,
    /// Calls needed before `failure_rate` applies (default 10).
    #[serde(default)]
    pub min_calls: Option<Spanned<u32>>,
    /// How far back failures count, for example `1m` (the default).
    #[serde(default)]
    pub window: Option<Spanned<String>>,
    /// How long it stays open before a probe, for example `30s` (the default).
    #[serde(default)]
    pub open_for: Option<Spanned<String>>,
    /// Probe calls that must succeed to close it again (default 1).
    #[serde(default)]
    pub probes: Option<Spanned<u32>>,
    /// What it guards: `plugin` (the default), `hosts` (each host the
    /// plugin sends HTTP requests to) or `both`.
    #[serde(default)]
    pub scope: Option<Spanned<String>>,
}

/// A retry policy as written; unset fields inherit.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySpec {
    /// Attempts in all, the first included.
    #[serde(default)]
    pub max_attempts: Option<Spanned<u32>>,
    /// The wait before the second attempt, for example `250ms`.
    #[serde(default)]
    pub initial_interval: Option<Spanned<String>>,
    /// Each wait is this many times the one before.
    #[serde(default)]
    pub backoff_coefficient: Option<Spanned<f64>>,
    /// The longest wait.
    #[serde(default)]
    pub max_interval: Option<Spanned<String>>,
    /// Fraction by which a wait may move up or down, for example `0.2`.
    #[serde(default)]
    pub jitter: Option<Spanned<f64>>,
    /// No retry starts later than this after the first attempt.
    #[serde(default)]
    pub max_retry_duration: Option<Spanned<String>>,
    /// Error kinds never retried (default: `invalid-input`, `denied`).
    #[serde(default)]
    pub non_retryable: Option<Vec<Spanned<String>>>,
    /// A Rhai condition over `error.kind`, `error.message`, `attempt` and `inputs`.
    #[serde(default)]
    pub retry_if: Option<Spanned<String>>,
}

impl RetrySpec {
    /// Nothing set: everything inherited.
    pub fn is_empty(&self) -> bool {
        let Self {
            max_attempts,
            initial_interval,
            backoff_coefficient,
            max_interval,
            jitter,
            max_retry_duration,
            non_retryable,
            retry_if,
        } = self;
        max_attempts.is_none()
            && initial_interval.is_none()
            && backoff_coefficient.is_none()
            && max_interval.is_none()
            && jitter.is_none()
            && max_retry_duration.is_none()
            && non_retryable.is_none()
            && retry_if.is_none()
    }
}

/// The alternative a task falls back to.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackSpec {
    /// Its plugin; the task's own when absent.
    #[serde(default)]
    pub uses: Option<Spanned<String>>,
    /// Its input; the task's own `with:` when absent.
    #[serde(default, rename = "with")]
    pub with: Option<IndexMap<String, Spanned<serde_json::Value>>>,
}

/// A durable wait for a signal.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitSpec {
    /// The signal's name, as `runtime signal ID NAME` sends it.
    pub signal: Spanned<String>,
    /// How long to wait, for example `24h`; forever when absent.
    #[serde(default)]
    pub timeout: Option<Spanned<String>>,
    /// The output when the timeout passes; without it a timeout fails the task.
    #[serde(default)]
    pub default: Option<serde_json::Value>,
}

/// Capabilities a workflow lets a plugin keep: each list, when present,
/// replaces the installed grants with a subset of them.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantsSpec {
    /// Host patterns it may still reach.
    #[serde(default)]
    pub http: Option<Vec<String>>,
    /// Environment variable names it may still read.
    #[serde(default)]
    pub env: Option<Vec<String>>,
    /// Secrets still attached to its requests.
    #[serde(default)]
    pub secrets: Option<Vec<String>>,
    /// Directories it may still see, and whether it may still write there.
    #[serde(default)]
    pub filesystem: Option<Vec<FsSpec>>,
}

/// One directory in a workflow's `grants.filesystem`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FsSpec {
    /// The path as the plugin sees it.
    pub path: String,
    /// Whether it may write there (default: no).
    #[serde(default)]
    pub writable: bool,
}

/// Sandbox limits as written; unset fields inherit.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpec {
    /// Fuel budget (roughly, WebAssembly instructions).
    #[serde(default)]
    pub fuel: Option<Spanned<u64>>,
    /// Memory cap, for example `64MiB`.
    #[serde(default)]
    pub memory: Option<Spanned<String>>,
    /// Wall-clock deadline per attempt, for example `30s`.
    #[serde(default)]
    pub deadline: Option<Spanned<String>>,
    /// Largest output a task may return, for example `16MiB`.
    #[serde(default)]
    pub output: Option<Spanned<String>>,
}
