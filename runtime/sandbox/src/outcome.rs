//! Turns what a call produced into the scheduler's terms: output and usage, or
//! a classified failure whose message names the limit and what to change.

use super::quota::{MAX_MESSAGE_BYTES, MAX_RESOURCES, cut};
use wasmtime::Trap;
use wasmtime::component::ResourceTableError;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

use super::bindings::Output;
use super::capabilities::http::Refused;
use super::limiter::MemoryLimitExceeded;
use orchestrator_core::scheduler::{FailureKind, Metering, TaskFailure, TaskSuccess};
use orchestrator_core::workflow::Limits;

/// A failure before metering is attached.
pub(super) struct Failure {
    pub(super) kind: FailureKind,
    pub(super) message: String,
}

impl Failure {
    pub(super) fn deadline(limits: &Limits) -> Self {
        Self {
            kind: FailureKind::Deadline,
            message: format!(
                "ran past its deadline of {}; raise `limits.deadline` if it needs longer",
                humantime::format_duration(limits.deadline)
            ),
        }
    }

    /// If the host refused something the plugin tried (an HTTP request, a
    /// secret), that refusal is the cause: the failure becomes `denied` (or
    /// `breaker-open`, when only open host breakers refused) and says what
    /// was refused, followed by what the plugin reported.
    pub(super) fn refused_by_host(self, refusals: &[Refused]) -> Self {
        if refusals.is_empty() {
            return self;
        }
        let kind = if refusals.iter().all(|r| r.breaker_open) {
            FailureKind::BreakerOpen
        } else {
            FailureKind::Denied
        };
        // Distinct already (`capabilities::http::refuse` keeps each message once).
        let refused: Vec<&str> = refusals.iter().map(|r| r.message.as_str()).collect();
        Self {
            kind,
            message: format!(
                "the sandbox refused: {}; the plugin then reported: {}",
                refused.join("; "),
                self.message
            ),
        }
    }

    pub(super) fn into_task_failure(self, metering: Metering) -> TaskFailure {
        TaskFailure {
            kind: self.kind,
            // A plugin writes most of this text: keep reports, events and
            // dead letters small whatever it wrote.
            message: cut(self.message, MAX_MESSAGE_BYTES),
            metering,
        }
    }
}

/// Classifies an error raised while instantiating or calling the plugin.
pub(super) fn classify(
    error: &wasmtime::Error,
    limits: &Limits,
    stderr: &MemoryOutputPipe,
) -> Failure {
    if let Some(exceeded) = error.downcast_ref::<MemoryLimitExceeded>() {
        return Failure {
            kind: FailureKind::MemoryLimit,
            message: format!(
                "tried to grow its memory to {} past the cap of {}; raise `limits.memory` if it needs more",
                mib(exceeded.wanted as u64),
                mib(limits.memory)
            ),
        };
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => Failure {
            kind: FailureKind::OutOfFuel,
            message: format!(
                "used up its fuel budget of {} (a loop that never ends?); raise `limits.fuel` if it needs more",
                limits.fuel
            ),
        },
        Some(Trap::Interrupt) => Failure::deadline(limits),
        Some(Trap::StackOverflow) => Failure {
            kind: FailureKind::StackOverflow,
            message: "overflowed its stack (unbounded recursion?)".to_owned(),
        },
        Some(trap) => {
            let mut message = trap.to_string();
            let written = String::from_utf8_lossy(&stderr.contents()).into_owned();
            let written: Vec<&str> = written
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with("note: run with `RUST_BACKTRACE"))
                .collect();
            if !written.is_empty() {
                let tail = &written[written.len().saturating_sub(5)..];
                message.push_str(&format!("; its stderr: {}", tail.join(" | ")));
            }
            Failure {
                kind: FailureKind::Trap,
                message,
            }
        }
        None if error.downcast_ref::<ResourceTableError>().is_some() => Failure {
            kind: FailureKind::Plugin,
            message: format!(
                "held more than {MAX_RESOURCES} handles at once (open files, streams, requests), the most one attempt may hold (cap `resources`): {error:#}"
            ),
        },
        None => Failure {
            kind: FailureKind::Plugin,
            message: format!("{error:#}"),
        },
    }
}

/// The error a plugin returned.
pub(super) fn from_plugin_error((kind, message): (FailureKind, String)) -> Failure {
    Failure { kind, message }
}

/// Checks the output's size and parses it as JSON.
pub(super) fn success(
    output: Output,
    limits: &Limits,
    metering: Metering,
) -> Result<TaskSuccess, TaskFailure> {
    let size = output.output.len() as u64;
    if size > limits.output {
        return Err(TaskFailure {
            kind: FailureKind::OutputLimit,
            message: format!(
                "returned an output of {} past the limit of {}; raise `limits.output` if it needs more",
                mib(size),
                mib(limits.output)
            ),
            metering,
        });
    }
    let value = serde_json::from_str(&output.output).map_err(|e| TaskFailure {
        kind: FailureKind::Plugin,
        message: format!(
            "returned an output that is not JSON ({e}): the plugin breaks the contract"
        ),
        metering,
    })?;
    Ok(TaskSuccess {
        output: value,
        usage: output.usage,
        metering,
    })
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}
