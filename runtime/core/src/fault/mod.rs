//! Failure as part of a workflow: how failures are classified ([`FailureKind`]),
//! what a task does about them ([`RetryPolicy`]), and when calls to a
//! failing plugin or host stop for a while ([`Breaker`]). Pure decisions: no I/O,
//! no clocks; the scheduler waits, the journal and the store record.

mod breaker;
mod kind;
mod retry;

pub use breaker::{Admission, Breaker, BreakerPolicy, BreakerScope, BreakerState, Refusal, counts};
pub use kind::FailureKind;
pub use retry::{Decision, FailedAttempt, RetryPolicy};
