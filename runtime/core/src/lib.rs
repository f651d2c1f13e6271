//! The workflow model and the scheduler: everything about running a workflow
//! that needs neither wasmtime nor storage.
//!
//! [`workflow`] reads and validates a file into a [`workflow::Plan`] (using
//! [`expr`] for Rhai and [`graph`] for the DAG); [`scheduler`] runs the plan,
//! handing each task to a [`scheduler::Executor`] and retrying or falling back
//! as [`fault`] decides. [`plugin`] says how workflows name plugins and what
//! they may be granted; [`tenant`] who owns what. Nothing here reads a file, opens a socket or a
//! database: the sandbox and the store are other crates, reached through the
//! traits in [`scheduler`] and [`workflow`].

pub mod expr;
pub mod fault;
pub mod graph;
pub mod plugin;
pub mod scheduler;
pub mod tenant;
pub mod workflow;
