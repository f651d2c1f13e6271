//! The Rust SDK: the engine embedded in a program. Build an [`Engine`],
//! describe a [`Workflow`] in code (or read one from text), start it, and
//! hold its [`ExecutionHandle`]: wait, cancel, signal, follow its events.
//!
//! ```no_run
//! use orchestrator_engine::{Engine, Task, Workflow};
//! use serde_json::json;
//!
//! # async fn example() -> Result<(), orchestrator_engine::service::ServiceError> {
//! let engine = Engine::builder().store("/tmp/demo/store.redb").build().await?;
//! let workflow = Workflow::builder("shout")
//!     .input("text", "string")
//!     .task(
//!         Task::new("upper", "transform")
//!             .with("text", "${{ inputs.text }}")
//!             .with("script", "text.to_upper()"),
//!     )
//!     .output("loud", "${{ tasks.upper.output }}")
//!     .build()?;
//! let execution = engine.start(&workflow, json!({ "text": "hi" })).await?;
//! let mut events = execution.events(0);
//! while let Some(event) = events.next().await {
//!     let (number, event) = event?;
//!     println!("{number}: {:?}", event.kind);
//! }
//! let done = execution.wait().await?;
//! assert_eq!(done.record.outputs["loud"], "HI");
//! # Ok(()) }
//! ```

mod engine;
mod handle;
mod letters;
mod metered;
mod parked_run;
mod registry;
mod tenancy;
mod workflow;

pub use engine::{Engine, EngineBuilder, PARK_AFTER, StartOptions, Started};
pub use handle::{EventStream, ExecutionHandle};
pub use letters::Letter;
pub use registry::Install;
pub use tenancy::TenantUsage;
pub use workflow::{Task, Workflow, WorkflowBuilder};
