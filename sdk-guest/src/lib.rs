//! Write LLM-Orchestrator plugins in Rust.
//!
//! A plugin is a WebAssembly component implementing the `executor` world of
//! `wit/`. This crate hides the generated bindings: implement [`Plugin`] on a
//! type whose input and output are serde types, then call [`export_plugin!`].
//! Input that does not deserialize becomes an `invalid-input` error without
//! reaching your code, and each [`Error`] variant maps onto the WIT
//! `task-error` case of the same name.
//!
//! A complete plugin:
//!
//! ```
//! use orchestrator_sdk::{Context, Error, Info, Plugin, export_plugin};
//! use serde::Deserialize;
//!
//! #[derive(Deserialize)]
//! struct Input { text: String }
//!
//! struct Shout;
//!
//! impl Plugin for Shout {
//!     type Input = Input;
//!     type Output = String;
//!     fn info() -> Info { Info::new("shout", "1.0.0", "Upper-cases `text`.") }
//!     fn execute(_: &Context, input: Input) -> Result<String, Error> {
//!         Ok(input.text.to_uppercase())
//!     }
//! }
//!
//! export_plugin!(Shout);
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2` from a crate
//! with `crate-type = ["cdylib"]`; the `.wasm` it writes is the component.
//!
//! Work every call would otherwise repeat (building an engine, compiling
//! fixed patterns) goes in [`Plugin::initialize`]: the component also
//! exports `wizer-initialize`, which the host runs once when it compiles the
//! plugin and snapshots, so every call starts from the initialised state.

extern crate self as orchestrator_sdk;

pub mod http;
#[cfg(feature = "json-schema")]
pub mod schema;

use std::cell::RefCell;

use serde::Serialize;
use serde::de::DeserializeOwned;
pub use serde_json::{Value, json};

/// Generated bindings of the `executor` world, plus the `wizer-initialize`
/// export the host pre-initialises plugins with. Prefer the types of this
/// crate; these are public only so that [`export_plugin!`] can reach them.
#[doc(hidden)]
#[allow(
    clippy::too_many_arguments,
    reason = "generated code mirrors the WIT signatures"
)]
pub mod bindings {
    wit_bindgen::generate!({
        inline: "
            package orchestrator:sdk;
            world plugin {
                include orchestrator:plugin/executor@0.2.0;
                export wizer-initialize: func();
            }
        ",
        world: "orchestrator:sdk/plugin",
        path: "../wit/0.2.0",
        generate_all,
        pub_export_macro: true,
        export_macro_name: "__export_executor",
        default_bindings_module: "::orchestrator_sdk::bindings",
        runtime_path: "::orchestrator_sdk::__private::wit_bindgen::rt",
    });
}

use bindings::orchestrator::plugin::{host, types as wit};

/// What a plugin says about itself, returned by [`Plugin::info`].
#[derive(Debug, Clone)]
pub struct Info {
    /// Short name, for example `transform`.
    pub name: String,
    /// Semantic version of the plugin.
    pub version: String,
    /// One sentence saying what it does.
    pub description: String,
    /// JSON Schema of the input; `{}` accepts anything.
    pub input_schema: Value,
    /// JSON Schema of the output; `{}` promises nothing.
    pub output_schema: Value,
    /// What the plugin asks to be allowed to do; nothing by default.
    pub capabilities: Capabilities,
}

impl Info {
    /// An info with open schemas and no capabilities.
    pub fn new(name: &str, version: &str, description: &str) -> Self {
        Self {
            name: name.to_owned(),
            version: version.to_owned(),
            description: description.to_owned(),
            input_schema: json!({}),
            output_schema: json!({}),
            capabilities: Capabilities::default(),
        }
    }

    /// Sets the JSON Schema of the input.
    pub fn input_schema(mut self, schema: Value) -> Self {
        self.input_schema = schema;
        self
    }

    /// Sets the JSON Schema of the output.
    pub fn output_schema(mut self, schema: Value) -> Self {
        self.output_schema = schema;
        self
    }

    /// Sets the capabilities the plugin asks for.
    pub fn capabilities(mut self, capabilities: Capabilities) -> Self {
        self.capabilities = capabilities;
        self
    }
}

/// Capabilities a plugin asks for. The host grants at most these, and only
/// what its operator also allows.
#[derive(Debug, Clone, Default)]
pub struct Capabilities {
    /// Host names (exact or `*.example.com`) to reach over HTTP.
    pub http_hosts: Vec<String>,
    /// Directories to preopen, with `true` where writing is needed.
    pub filesystem: Vec<(String, bool)>,
    /// Environment variable names to read.
    pub env: Vec<String>,
    /// Secret names the host attaches to outgoing requests.
    pub secrets: Vec<String>,
}

/// Why a task attempt failed. The host's retry logic acts on the kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The input does not fit; retrying the same input will not help.
    InvalidInput(String),
    /// A passing failure; a retry may succeed.
    Retryable(String),
    /// A permanent failure.
    Fatal(String),
    /// Refused by policy.
    Denied(String),
}

impl Error {
    /// A retryable failure that should not be retried before `after` (an
    /// HTTP 429's `Retry-After`, say). The host reads the wait from the
    /// message (`retry-after: <duration>`) and never retries sooner.
    pub fn retryable_after(message: impl std::fmt::Display, after: std::time::Duration) -> Self {
        Error::Retryable(format!("{message}; retry-after: {}ms", after.as_millis()))
    }
}

/// Token usage of a model call, reported with [`Context::record_usage`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// Tokens sent to the model.
    pub input_tokens: u64,
    /// Tokens the model produced.
    pub output_tokens: u64,
    /// The model that answered, if known.
    pub model: Option<String>,
    /// Who served it (`openai`, `anthropic`, ...), if known.
    pub provider: Option<String>,
}

/// The task attempt being run.
#[derive(Debug)]
pub struct Context {
    /// The execution this task belongs to.
    pub execution_id: String,
    /// The task's id in its workflow.
    pub task_id: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// Stable across attempts and resumptions: use it to deduplicate side effects.
    pub idempotency_key: String,
    /// The plugin as the workflow names it (`llm`, `acme/summarize@1`).
    pub uses: String,
    /// How long the attempt may run before the host stops it.
    pub deadline: std::time::Duration,
    /// Whether this attempt runs the task's fallback.
    pub fallback: bool,
    usage: RefCell<Option<Usage>>,
}

impl Context {
    /// Reports token usage, returned to the host with the output.
    pub fn record_usage(&self, usage: Usage) {
        *self.usage.borrow_mut() = Some(usage);
    }

    /// Whether the run was cancelled: the host stops the attempt at its
    /// next tick anyway; a long loop can check and stop cleanly first.
    pub fn cancelled(&self) -> bool {
        host::cancelled()
    }
}

/// A plugin: what it is, and how it runs one task attempt.
pub trait Plugin {
    /// The task's `with:` values, deserialized from JSON.
    type Input: DeserializeOwned;
    /// The task's output, serialized to JSON.
    type Output: Serialize;

    /// Describes the plugin.
    fn info() -> Info;

    /// Runs one task attempt.
    fn execute(ctx: &Context, input: Self::Input) -> Result<Self::Output, Error>;

    /// Prepares what every call needs, once: the host runs it when it
    /// compiles the plugin (at install) and keeps the memory it leaves
    /// behind, so [`Plugin::execute`] finds it ready. It runs with no
    /// capabilities (no files, network, environment or output) under the
    /// host's limits, and anything it draws at random is the same in every
    /// call afterwards. The default does nothing.
    fn initialize() {}
}

/// Writes a record to the host's log, tagged with the running task.
pub fn log(level: Level, message: &str, fields: &[(&str, &str)]) {
    let fields: Vec<host::Field> = fields
        .iter()
        .map(|(key, value)| host::Field {
            key: (*key).to_owned(),
            value: (*value).to_owned(),
        })
        .collect();
    host::log(level.into(), message, &fields);
}

/// Reports progress or a partial output while the task runs.
pub fn emit(kind: &str, data: &str) {
    host::emit(kind, data);
}

/// Severity of a [`log`] record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Very detailed tracing.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected that the plugin handled.
    Warn,
    /// A failure.
    Error,
}

impl From<Level> for host::LogLevel {
    fn from(level: Level) -> Self {
        match level {
            Level::Trace => host::LogLevel::Trace,
            Level::Debug => host::LogLevel::Debug,
            Level::Info => host::LogLevel::Info,
            Level::Warn => host::LogLevel::Warn,
            Level::Error => host::LogLevel::Error,
        }
    }
}

/// Exports a [`Plugin`] implementation as the component's `describe` and
/// `execute`. Call it once per crate.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        const _: () = {
            struct Exported;
            impl $crate::bindings::Guest for Exported {
                fn describe() -> $crate::bindings::orchestrator::plugin::types::PluginInfo {
                    $crate::__private::describe::<$plugin>()
                }
                fn execute(
                    ctx: $crate::bindings::orchestrator::plugin::types::TaskContext,
                    input: ::std::string::String,
                ) -> ::std::result::Result<
                    $crate::bindings::orchestrator::plugin::types::TaskOutput,
                    $crate::bindings::orchestrator::plugin::types::TaskError,
                > {
                    $crate::__private::execute::<$plugin>(ctx, input)
                }
                fn wizer_initialize() {
                    <$plugin as $crate::Plugin>::initialize()
                }
            }
    $crate::bindings::__export_executor!(Exported with_types_in $crate::bindings);
        };
    };
}

/// Glue called by [`export_plugin!`]; not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use wit_bindgen;

    use super::*;

    pub fn describe<P: Plugin>() -> wit::PluginInfo {
        let info = P::info();
        let caps = info.capabilities;
        wit::PluginInfo {
            name: info.name,
            version: info.version,
            description: info.description,
            input_schema: info.input_schema.to_string(),
            output_schema: info.output_schema.to_string(),
            capabilities: wit::Capabilities {
                http_hosts: caps.http_hosts,
                filesystem: caps
                    .filesystem
                    .into_iter()
                    .map(|(path, writable)| wit::FsAccess { path, writable })
                    .collect(),
                env: caps.env,
                secrets: caps.secrets,
            },
        }
    }

    pub fn execute<P: Plugin>(
        ctx: wit::TaskContext,
        input: String,
    ) -> Result<wit::TaskOutput, wit::TaskError> {
        let input: P::Input = serde_json::from_str(&input)
            .map_err(|e| wit::TaskError::InvalidInput(format!("input does not fit: {e}")))?;
        let ctx = Context {
            execution_id: ctx.execution_id,
            task_id: ctx.task_id,
            attempt: ctx.attempt,
            idempotency_key: ctx.idempotency_key,
            uses: ctx.uses,
            deadline: std::time::Duration::from_millis(ctx.deadline_ms),
            fallback: ctx.fallback,
            usage: RefCell::new(None),
        };
        let output = P::execute(&ctx, input).map_err(|e| match e {
            Error::InvalidInput(m) => wit::TaskError::InvalidInput(m),
            Error::Retryable(m) => wit::TaskError::Retryable(m),
            Error::Fatal(m) => wit::TaskError::Fatal(m),
            Error::Denied(m) => wit::TaskError::Denied(m),
        })?;
        let output = serde_json::to_string(&output)
            .map_err(|e| wit::TaskError::Fatal(format!("output does not serialize: {e}")))?;
        let usage = ctx.usage.into_inner().map(|u| wit::Usage {
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
            model: u.model,
            provider: u.provider,
        });
        Ok(wit::TaskOutput { output, usage })
    }
}
