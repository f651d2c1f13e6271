//! The plugin contract as the host runs it, whichever version a plugin was
//! built for, and the host's half of it.
//!
//! Each hosted version of `wit/` has a module of its own ([`v0_1`],
//! [`v0_2`]) whose `bindgen!` types stay there; this module is what the rest
//! of the sandbox sees: [`ExecutorPre`] and [`Instance`] over either version,
//! the version-free [`TaskContext`] and [`Returned`], and [`State`], which
//! implements both versions' `host` interface (logs and emitted progress
//! become `tracing` events tagged with the task and plugin; emits also reach
//! the run's [`Emitter`]) and hands WASI and `wasi:http` their views.

use super::quota::{LogBudget, LogVerdict, MAX_LOG_BYTES, MAX_LOG_LINE, cut};
use std::sync::Arc;

use wasmtime::Store;
use wasmtime::component::{HasSelf, InstancePre, Linker, ResourceTable};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::capabilities::http::Egress;
use super::limiter::MemoryLimiter;
use orchestrator_core::plugin::Manifest;
use orchestrator_core::scheduler::{Cancel, Effects, FailureKind, Usage};

/// What every hosted version implements alike, written once: expanded in
/// a version's module (where `types` and `host` are its generated
/// interfaces), with that version's further `host` functions as `$extra`.
macro_rules! hosted_version {
    ($($extra:item)*) => {
        impl types::Host for State {}

        impl host::Host for State {
            fn log(&mut self, level: host::LogLevel, message: String, fields: Vec<host::Field>) {
                let level = match level {
                    host::LogLevel::Trace => Level::Trace,
                    host::LogLevel::Debug => Level::Debug,
                    host::LogLevel::Info => Level::Info,
                    host::LogLevel::Warn => Level::Warn,
                    host::LogLevel::Error => Level::Error,
                };
                let fields = fields.into_iter().map(|f| (f.key, f.value)).collect();
                self.write_log(level, message, fields);
            }

            fn emit(&mut self, kind: String, data: String) {
                self.emit_data(kind, data);
            }

            $($extra)*
        }

        /// What `describe()` returned, as domain data.
        pub(super) fn manifest(info: types::PluginInfo) -> Manifest {
            let caps = info.capabilities;
            Manifest {
                name: info.name,
                version: info.version,
                description: info.description,
                input_schema: info.input_schema,
                output_schema: info.output_schema,
                capabilities: Capabilities {
                    http_hosts: caps.http_hosts,
                    filesystem: caps
                        .filesystem
                        .into_iter()
                        .map(|f| FsAccess {
                            path: f.path,
                            writable: f.writable,
                        })
                        .collect(),
                    env: caps.env,
                    secrets: caps.secrets,
                },
            }
        }

        /// The plugin's own error variant, as a failure kind and message.
        fn failure(error: types::TaskError) -> (FailureKind, String) {
            match error {
                types::TaskError::InvalidInput(m) => (FailureKind::InvalidInput, m),
                types::TaskError::Retryable(m) => (FailureKind::Retryable, m),
                types::TaskError::Fatal(m) => (FailureKind::Fatal, m),
                types::TaskError::Denied(m) => (FailureKind::Denied, m),
            }
        }
    };
}

mod v0_1;
mod v0_2;

/// Which attempt is being run: what any contract version tells a plugin of
/// it (each takes the fields it has).
#[derive(Debug, Clone)]
pub(super) struct TaskContext {
    pub(super) execution_id: String,
    pub(super) task_id: String,
    pub(super) attempt: u32,
    pub(super) idempotency_key: String,
    pub(super) uses: String,
    pub(super) deadline_ms: u64,
    pub(super) fallback: bool,
}

/// What `execute` answered: its output (JSON text) and usage, or the kind
/// and message of the error it returned.
pub(super) type Returned = Result<Output, (FailureKind, String)>;

/// A successful `execute`, whichever version answered it.
#[derive(Debug)]
pub(super) struct Output {
    /// The output, as JSON text.
    pub(super) output: String,
    /// Tokens it reports (`cost_usd` and `cached` are the host's to set).
    pub(super) usage: Option<Usage>,
}

/// A component linked for the contract version it was built for.
#[derive(Clone)]
pub(super) enum ExecutorPre {
    V0_1(v0_1::ExecutorPre<State>),
    V0_2(v0_2::ExecutorPre<State>),
}

/// An instance of an [`ExecutorPre`].
pub(super) enum Instance {
    V0_1(v0_1::Executor),
    V0_2(v0_2::Executor),
}

/// Adds every hosted version's `host` interface to `linker`.
pub(super) fn add_to_linker(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    v0_1::Executor::add_to_linker::<State, HasSelf<State>>(linker, |s| s)?;
    v0_2::Executor::add_to_linker::<State, HasSelf<State>>(linker, |s| s)
}

impl ExecutorPre {
    /// `pre` as the version whose exports it has: the newest first.
    pub(super) fn new(pre: InstancePre<State>) -> wasmtime::Result<Self> {
        match v0_2::ExecutorPre::new(pre.clone()) {
            Ok(newest) => Ok(Self::V0_2(newest)),
            Err(newest) => v0_1::ExecutorPre::new(pre)
                .map(Self::V0_1)
                .map_err(|_| newest),
        }
    }

    /// The contract version it was built for.
    pub(super) fn contract(&self) -> &'static str {
        match self {
            Self::V0_1(_) => "0.1.0",
            Self::V0_2(_) => "0.2.0",
        }
    }

    /// The linked component, whatever its version.
    pub(super) fn instance_pre(&self) -> &InstancePre<State> {
        match self {
            Self::V0_1(pre) => pre.instance_pre(),
            Self::V0_2(pre) => pre.instance_pre(),
        }
    }

    /// A fresh instance in `store`.
    pub(super) async fn instantiate_async(
        &self,
        store: &mut Store<State>,
    ) -> wasmtime::Result<Instance> {
        Ok(match self {
            Self::V0_1(pre) => Instance::V0_1(pre.instantiate_async(store).await?),
            Self::V0_2(pre) => Instance::V0_2(pre.instantiate_async(store).await?),
        })
    }
}

impl Instance {
    /// Calls `describe`.
    pub(super) async fn call_describe(
        &self,
        store: &mut Store<State>,
    ) -> wasmtime::Result<Manifest> {
        match self {
            Self::V0_1(instance) => instance.call_describe(store).await.map(v0_1::manifest),
            Self::V0_2(instance) => instance.call_describe(store).await.map(v0_2::manifest),
        }
    }

    /// Calls `execute` with `ctx` and `input` (JSON text).
    pub(super) async fn call_execute(
        &self,
        store: &mut Store<State>,
        ctx: &TaskContext,
        input: &str,
    ) -> wasmtime::Result<Returned> {
        match self {
            Self::V0_1(instance) => instance
                .call_execute(store, &v0_1::context(ctx), input)
                .await
                .map(v0_1::returned),
            Self::V0_2(instance) => instance
                .call_execute(store, &v0_2::context(ctx), input)
                .await
                .map(v0_2::returned),
        }
    }
}

/// How much a plugin's log record matters, in every version.
#[derive(Debug, Clone, Copy)]
pub(super) enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// Everything one task attempt's `Store` holds.
pub struct State {
    pub(super) wasi: WasiCtx,
    pub(super) http: WasiHttpCtx,
    pub(super) egress: Egress,
    pub(super) table: ResourceTable,
    pub(super) limiter: MemoryLimiter,
    /// What the plugin wrote to stderr (a Rust panic message lands here).
    pub(super) stderr: MemoryOutputPipe,
    pub(super) task_id: String,
    /// The execution of the attempt ("" for `describe()`).
    pub(super) execution_id: Arc<str>,
    /// The attempt number (0 for `describe()`).
    pub(super) attempt: u32,
    pub(super) plugin: Arc<str>,
    /// Where emitted progress goes, besides the log.
    pub(super) emitter: Option<Emitter>,
    /// Bytes emitted so far in this attempt.
    pub(super) emitted: usize,
    /// When emits may go out (strict durability: once the task's inputs
    /// are durable).
    pub(super) effects: Effects,
    /// Emits (kind, data) held until then.
    pub(super) held: Vec<(String, String)>,
    /// What the attempt may still log.
    pub(super) log: LogBudget,
    /// Set when the run can be cancelled (not for `describe()`).
    pub(super) cancel: Option<Arc<Cancel>>,
}

/// Receives what a plugin emits while it runs, for example streamed text a
/// front end shows as it arrives.
#[derive(Clone)]
pub struct Emitter(Arc<Receive>);

/// What an [`Emitter`] calls.
type Receive = dyn Fn(&Emit<'_>) + Send + Sync;

/// One emit of one attempt.
#[derive(Debug, Clone, Copy)]
pub struct Emit<'a> {
    /// The execution the attempt belongs to.
    pub execution: &'a str,
    /// The task (or `for_each` item).
    pub task: &'a str,
    /// The attempt number.
    pub attempt: u32,
    /// What it is, as the plugin says: `text` for streamed text.
    pub kind: &'a str,
    /// The data.
    pub data: &'a str,
}

impl Emitter {
    /// Emits go to `receive`.
    pub fn new(receive: impl Fn(&Emit<'_>) + Send + Sync + 'static) -> Self {
        Self(Arc::new(receive))
    }

    /// Hands `emit` on, as a plugin's emit would be.
    pub fn receive(&self, emit: &Emit<'_>) {
        (self.0)(emit);
    }
}

impl std::fmt::Debug for Emitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Emitter")
    }
}

/// The most an attempt may emit; beyond it, emits are dropped (and logged
/// once), so a plugin cannot flood its watchers.
pub const MAX_EMITTED_BYTES: usize = 4 << 20;

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for State {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.egress,
        }
    }
}

impl State {
    /// Whether emits are held, waiting for the task's inputs to be durable.
    pub(super) fn holds_emits(&self) -> bool {
        !self.held.is_empty()
    }

    /// Hands on the emits held so far, in order.
    pub(super) fn release_emits(&mut self) {
        let Some(emitter) = self.emitter.clone() else {
            return;
        };
        for (kind, data) in std::mem::take(&mut self.held) {
            self.deliver(&emitter, &kind, &data);
        }
    }

    fn deliver(&self, emitter: &Emitter, kind: &str, data: &str) {
        emitter.receive(&Emit {
            execution: &self.execution_id,
            task: &self.task_id,
            attempt: self.attempt,
            kind,
            data,
        });
    }
}

impl State {
    /// A plugin's log record, within the attempt's log budget.
    fn write_log(&mut self, level: Level, message: String, fields: Vec<(String, String)>) {
        let size = fields
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .fold(message.len(), usize::saturating_add);
        match self.log.take(size) {
            LogVerdict::Write => {}
            LogVerdict::DropFirst => {
                tracing::warn!(target: "plugin", task = self.task_id.as_str(), plugin = &*self.plugin,
                    "the plugin logs more than {MAX_LOG_BYTES} bytes or faster than its rate allows; further logs of this attempt are dropped");
                return;
            }
            LogVerdict::Drop => return,
        }
        // One line, message and fields together, is at most MAX_LOG_LINE.
        let message = cut(message, MAX_LOG_LINE / 2);
        let fields: Vec<String> = fields
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        let fields = cut(fields.join(" "), MAX_LOG_LINE / 2);
        let (task, plugin) = (self.task_id.as_str(), &*self.plugin);
        match level {
            Level::Trace => {
                tracing::trace!(target: "plugin", task, plugin, fields, "{message}")
            }
            Level::Debug => {
                tracing::debug!(target: "plugin", task, plugin, fields, "{message}")
            }
            Level::Info => {
                tracing::info!(target: "plugin", task, plugin, fields, "{message}")
            }
            Level::Warn => {
                tracing::warn!(target: "plugin", task, plugin, fields, "{message}")
            }
            Level::Error => {
                tracing::error!(target: "plugin", task, plugin, fields, "{message}")
            }
        }
    }

    /// A plugin's emit: to the log, and to the run's emitter within the
    /// attempt's emit budget once effects may go out.
    fn emit_data(&mut self, kind: String, data: String) {
        tracing::debug!(target: "plugin", task = self.task_id.as_str(), plugin = &*self.plugin, kind, data, "emit");
        let Some(emitter) = self.emitter.clone() else {
            return;
        };
        let before = self.emitted;
        self.emitted = before.saturating_add(kind.len() + data.len());
        if self.emitted <= MAX_EMITTED_BYTES {
            if !self.effects.is_released() {
                self.held.push((kind, data));
                return;
            }
            if self.holds_emits() {
                self.release_emits();
            }
            self.deliver(&emitter, &kind, &data);
        } else if before <= MAX_EMITTED_BYTES {
            tracing::warn!(target: "plugin", task = self.task_id.as_str(), plugin = &*self.plugin, "emitted more than {} MiB; further emits are dropped", MAX_EMITTED_BYTES >> 20);
        }
    }

    /// Whether the attempt's run was cancelled.
    fn run_cancelled(&self) -> bool {
        self.cancel.as_ref().is_some_and(|c| c.is_cancelled())
    }
}
