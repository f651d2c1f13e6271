//! The engine: every operation on executions, plugins, workflows and
//! governance, for the `runtime` CLI and for Rust programs that embed it.
//!
//! [`service`] opens a store, loads a workflow and runs it: the plan from
//! [`workflow`] is handed to the [`scheduler`], whose tasks run in the
//! [`sandbox`] (through [`service::subworkflow`], [`breakers`] and
//! [`governance`]) and
//! whose states the [`store`] keeps. [`plugin`] installs components,
//! [`config`] reads the host's configuration, [`control`] reaches an
//! execution another process runs.
//!
//! A Rust program embeds it through [`sdk`]: an [`Engine`], workflows built
//! in code ([`Workflow::builder`]) and an [`ExecutionHandle`] per execution.
//!
//! The layers below are re-exported so that one dependency is enough: the
//! model and scheduler from `orchestrator-core`, the sandbox from
//! `orchestrator-sandbox`, the store from `orchestrator-store`.

pub mod breakers;
pub mod config;
pub mod control;
pub mod dead_letters;
pub mod executions;
pub mod governance;
pub mod metrics;
pub mod parking;
pub mod plugin;
pub mod quotas;
pub mod rate_limits;
pub mod sdk;
pub mod service;
pub mod workflows;

pub use orchestrator_core::{expr, fault, graph, scheduler, tenant, workflow};
pub use orchestrator_sandbox as sandbox;
pub use orchestrator_sandbox::capacity;
pub use orchestrator_store as store;
pub use sdk::{
    Engine, EngineBuilder, EventStream, ExecutionHandle, PARK_AFTER, StartOptions, Started, Task,
    Workflow, WorkflowBuilder,
};
