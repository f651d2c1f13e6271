//! The contract every backend keeps, as suites of checks a backend's tests
//! run: [`executions`] for an executions backend, [`store`] for a store
//! backend (plugins, workflows, breakers, cached answers). Each check
//! panics, naming itself, when the backend breaks the contract.
//! `runtime/store/tests/conformance.rs` runs both suites on redb and in
//! memory; a new backend is done when it passes them.

pub mod executions;
pub mod store;

pub use executions::{failed, record, report};
