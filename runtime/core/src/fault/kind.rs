//! How a failure is classified: the kinds retry policies, fallbacks and
//! reports act on.

use serde::{Deserialize, Serialize};

/// Classes of failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureKind {
    /// The plugin rejected its input.
    InvalidInput,
    /// The plugin says a retry may help.
    Retryable,
    /// The plugin failed for good.
    Fatal,
    /// The plugin refused by policy.
    Denied,
    /// The attempt used up its fuel budget.
    OutOfFuel,
    /// The attempt tried to grow memory past its cap.
    MemoryLimit,
    /// The attempt ran past its deadline.
    Deadline,
    /// The attempt overflowed its stack.
    StackOverflow,
    /// The attempt returned an output larger than `limits.output`.
    OutputLimit,
    /// The plugin trapped (a panic, an unreachable, a bad access).
    Trap,
    /// The plugin could not be loaded or instantiated, or broke the contract.
    Plugin,
    /// A `when:` or `${{ }}` expression failed on the host.
    Expression,
    /// The run was cancelled while the attempt ran.
    Cancelled,
    /// The task's `timeout` (across all its attempts) passed.
    TaskTimeout,
    /// The workflow's `timeout` passed before the task finished.
    WorkflowTimeout,
    /// The plugin's circuit breaker is open: the call was not made.
    BreakerOpen,
    /// The host itself failed while preparing, running or recording the
    /// task (a bug in the runtime, caught at the task's boundary).
    Internal,
}

impl FailureKind {
    /// The kebab-case name used in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::InvalidInput => "invalid-input",
            FailureKind::Retryable => "retryable",
            FailureKind::Fatal => "fatal",
            FailureKind::Denied => "denied",
            FailureKind::OutOfFuel => "out-of-fuel",
            FailureKind::MemoryLimit => "memory-limit",
            FailureKind::Deadline => "deadline",
            FailureKind::StackOverflow => "stack-overflow",
            FailureKind::OutputLimit => "output-limit",
            FailureKind::Trap => "trap",
            FailureKind::Plugin => "plugin",
            FailureKind::Expression => "expression",
            FailureKind::Cancelled => "cancelled",
            FailureKind::TaskTimeout => "task-timeout",
            FailureKind::WorkflowTimeout => "workflow-timeout",
            FailureKind::BreakerOpen => "breaker-open",
            FailureKind::Internal => "internal",
        }
    }

    /// Every kind, in declaration order.
    pub const ALL: [FailureKind; 17] = [
        FailureKind::InvalidInput,
        FailureKind::Retryable,
        FailureKind::Fatal,
        FailureKind::Denied,
        FailureKind::OutOfFuel,
        FailureKind::MemoryLimit,
        FailureKind::Deadline,
        FailureKind::StackOverflow,
        FailureKind::OutputLimit,
        FailureKind::Trap,
        FailureKind::Plugin,
        FailureKind::Expression,
        FailureKind::Cancelled,
        FailureKind::TaskTimeout,
        FailureKind::WorkflowTimeout,
        FailureKind::BreakerOpen,
        FailureKind::Internal,
    ];

    /// The kind a kebab-case name names.
    pub fn parse(name: &str) -> Option<FailureKind> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// Failures of the host or of the run, not of an attempt: no retry
    /// policy can help them.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            FailureKind::Expression
                | FailureKind::Cancelled
                | FailureKind::TaskTimeout
                | FailureKind::WorkflowTimeout
                | FailureKind::Internal
        )
    }
}
