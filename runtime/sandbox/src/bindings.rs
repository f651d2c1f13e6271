//! The generated side of the plugin contract, and the host's half of it.
//!
//! `bindgen!` types stay in this file: [`State`] implements the imported
//! `host` interface (logs and emitted progress become `tracing` events tagged
//! with the task and plugin; emits also reach the run's [`Emitter`]) and hands WASI and `wasi:http` their views;
//! [`manifest`] maps `describe()`'s answer to the domain [`Manifest`].

use super::quota::{LogBudget, LogVerdict, MAX_LOG_BYTES, MAX_LOG_LINE, cut};
use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::capabilities::http::Egress;
use super::limiter::MemoryLimiter;
use orchestrator_core::plugin::{Capabilities, FsAccess, Manifest};
use orchestrator_core::scheduler::Effects;

wasmtime::component::bindgen!({
    world: "executor",
    path: "../../wit/0.1.0",
    exports: { default: async },
});

use orchestrator::plugin::{host, types};

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

impl types::Host for State {}

/// What `describe()` returned, as domain data.
pub(super) fn manifest(info: PluginInfo) -> Manifest {
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

impl host::Host for State {
    fn log(&mut self, level: host::LogLevel, message: String, fields: Vec<host::Field>) {
        let size = fields
            .iter()
            .map(|f| f.key.len() + f.value.len())
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
            .map(|f| format!("{}={}", f.key, f.value))
            .collect();
        let fields = cut(fields.join(" "), MAX_LOG_LINE / 2);
        let (task, plugin) = (self.task_id.as_str(), &*self.plugin);
        match level {
            host::LogLevel::Trace => {
                tracing::trace!(target: "plugin", task, plugin, fields, "{message}")
            }
            host::LogLevel::Debug => {
                tracing::debug!(target: "plugin", task, plugin, fields, "{message}")
            }
            host::LogLevel::Info => {
                tracing::info!(target: "plugin", task, plugin, fields, "{message}")
            }
            host::LogLevel::Warn => {
                tracing::warn!(target: "plugin", task, plugin, fields, "{message}")
            }
            host::LogLevel::Error => {
                tracing::error!(target: "plugin", task, plugin, fields, "{message}")
            }
        }
    }

    fn emit(&mut self, kind: String, data: String) {
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
}
