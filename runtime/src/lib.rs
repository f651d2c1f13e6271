//! LLM-Orchestrator's runtime: runs workflows whose every task executes in a
//! WebAssembly sandbox.
//!
//! The path through the crate: [`workflow`] reads and validates a file into a
//! [`workflow::Plan`] (using [`expr`] for Rhai and [`graph`] for the DAG);
//! [`scheduler`] runs the plan, handing each task to an [`scheduler::Executor`]
//! and retrying or falling back as [`fault`] decides;
//! [`sandbox`] is the executor that runs plugins in wasmtime with the
//! capabilities [`plugin`] grants; [`store`] keeps installed plugins in redb;
//! [`config`] holds host secrets; [`service`] wires these together for the
//! [`cli`].

pub mod breakers;
pub mod capacity;
pub mod cli;
pub mod config;
pub mod expr;
pub mod fault;
pub mod governance;
pub mod graph;
pub mod plugin;
pub mod private;
pub mod sandbox;
pub mod scheduler;
pub mod service;
pub mod store;
pub mod subworkflow;
pub mod telemetry;
pub mod workflow;
