//! The generated side of the plugin contract, and the host's half of it.
//!
//! `bindgen!` types stay in this file: [`State`] implements the imported
//! `host` interface (logs and emitted progress become `tracing` events tagged
//! with the task and plugin), and the rest of the crate sees domain types.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::limiter::MemoryLimiter;

wasmtime::component::bindgen!({
    world: "executor",
    path: "../wit/0.1.0",
    exports: { default: async },
});

use orchestrator::plugin::{host, types};

/// Everything one task attempt's `Store` holds.
pub struct State {
    pub(super) wasi: WasiCtx,
    pub(super) table: ResourceTable,
    pub(super) limiter: MemoryLimiter,
    /// What the plugin wrote to stderr (a Rust panic message lands here).
    pub(super) stderr: MemoryOutputPipe,
    pub(super) task_id: String,
    pub(super) plugin: Arc<str>,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for State {}

impl host::Host for State {
    fn log(&mut self, level: host::LogLevel, message: String, fields: Vec<host::Field>) {
        let fields: Vec<String> = fields
            .into_iter()
            .map(|f| format!("{}={}", f.key, f.value))
            .collect();
        let fields = fields.join(" ");
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
    }
}
