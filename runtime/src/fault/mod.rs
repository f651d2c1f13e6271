//! Failure as part of a workflow: how failures are classified ([`FailureKind`])
//! and what a task does about them ([`RetryPolicy`]). Pure decisions: no I/O,
//! no clocks; the scheduler waits and the journal records.

mod kind;
mod retry;

pub use kind::FailureKind;
pub use retry::{Decision, FailedAttempt, RetryPolicy};
