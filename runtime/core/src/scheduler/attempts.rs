//! One task from its first attempt to its result: retries after a backoff
//! (the failed attempt and the time of the next one are recorded before the
//! wait, so a resumed run keeps waiting instead of starting over), the task's
//! `timeout` across attempts, then its fallback. One future per task, which
//! the scheduler spawns or awaits.

use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::executor::{Executor, FailureKind, TaskFailure, TaskRequest, TaskSuccess};
use super::journal::Journal;
use crate::expr::Expressions;
use crate::fault::{Decision, FailedAttempt, RetryPolicy};

/// A retry that was scheduled and has not started: what a resumed run
/// needs to continue the task where it was.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingRetry {
    /// The task.
    pub task: String,
    /// The number of the attempt to run next (attempts of the task in all).
    pub attempt: u32,
    /// Its number within the current phase (the task's own attempts, or
    /// its fallback's), which is what the retry policy counts.
    pub phase_attempt: u32,
    /// Whether the next attempt runs the fallback.
    pub fallback: bool,
    /// When the attempt before it failed, ms since the epoch.
    pub failed_at: u64,
    /// When it may start, ms since the epoch.
    pub due_at: u64,
    /// When the task's first attempt started, ms since the epoch.
    pub first_started_at: u64,
}

/// How a task's attempts ended.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The last attempt's result.
    pub result: Result<TaskSuccess, TaskFailure>,
    /// How many attempts ran, fallback included.
    pub attempts: u32,
    /// Whether the result came from the fallback.
    pub fallback: bool,
    /// The input of the last attempt (JSON text), when it failed.
    pub input: Option<String>,
}

impl Outcome {
    /// A result that took one attempt (or none, such as a wait).
    pub fn once(result: Result<TaskSuccess, TaskFailure>) -> Self {
        Self {
            result,
            attempts: 1,
            fallback: false,
            input: None,
        }
    }
}

/// What runs, records and judges a task's attempts: the same for all of a
/// task's attempts and for every item of its `for_each`.
pub(super) struct Attempter<E, J> {
    pub executor: Arc<E>,
    pub journal: Option<J>,
    pub expressions: Expressions,
    /// The workflow's inputs, for `retry_if`.
    pub inputs: Arc<Value>,
    pub policy: Arc<RetryPolicy>,
}

impl<E, J: Clone> Clone for Attempter<E, J> {
    fn clone(&self) -> Self {
        Self {
            executor: Arc::clone(&self.executor),
            journal: self.journal.clone(),
            expressions: self.expressions.clone(),
            inputs: Arc::clone(&self.inputs),
            policy: Arc::clone(&self.policy),
        }
    }
}

/// Everything one task's attempts need, owned, so the future can be spawned.
pub(super) struct TaskAttempts<E, J> {
    pub attempter: Attempter<E, J>,
    pub request: TaskRequest,
    pub fallback: Option<TaskRequest>,
    pub timeout: Option<Duration>,
    /// Set when an earlier process scheduled a retry of this task.
    pub resume: Option<PendingRetry>,
}

impl<E: Executor, J: Journal + Clone> TaskAttempts<E, J> {
    /// Runs attempts until one succeeds or the policy gives up, then the
    /// fallback the same way.
    pub async fn run(self) -> Outcome {
        let resume = self.resume.clone();
        let first_started_at = resume.as_ref().map_or_else(now_ms, |r| r.first_started_at);
        let mut attempt = resume.as_ref().map_or(1, |r| r.attempt);
        let in_fallback = resume.as_ref().is_some_and(|r| r.fallback);
        let mut failure = None;
        if !in_fallback {
            let start = resume.as_ref().map(|r| (r.phase_attempt, r.due_at));
            match self
                .phase(&self.request, start, &mut attempt, first_started_at)
                .await
            {
                Ok(success) => {
                    return Outcome {
                        result: Ok(success),
                        attempts: attempt,
                        fallback: false,
                        input: None,
                    };
                }
                Err(f) => failure = Some(f),
            }
        }
        let own_input = Some(self.request.input.clone());
        let Some(fallback) = &self.fallback else {
            return Outcome {
                result: Err(failure.expect("the task's own attempts failed")),
                attempts: attempt,
                fallback: false,
                input: own_input,
            };
        };
        if failure.as_ref().is_some_and(|f| f.kind.is_final()) {
            return Outcome {
                result: Err(failure.expect("checked")),
                attempts: attempt,
                fallback: false,
                input: own_input,
            };
        }
        let start = resume
            .as_ref()
            .filter(|r| r.fallback)
            .map(|r| (r.phase_attempt, r.due_at));
        if start.is_none() {
            attempt += 1;
        }
        let result = self
            .phase(fallback, start, &mut attempt, first_started_at)
            .await
            .map_err(|f| match failure {
                Some(first) => TaskFailure {
                    message: format!(
                        "{}; before it, the task's own attempts failed: {}",
                        f.message, first.message
                    ),
                    ..f
                },
                None => f,
            });
        let input = result.is_err().then(|| fallback.input.clone());
        Outcome {
            result,
            attempts: attempt,
            fallback: true,
            input,
        }
    }

    /// The attempts of one phase (the task's own, or its fallback's).
    /// `start` is (attempt within the phase, when it is due) of a resumed
    /// retry; `attempt` counts the task's attempts in all.
    async fn phase(
        &self,
        template: &TaskRequest,
        start: Option<(u32, u64)>,
        attempt: &mut u32,
        first_started_at: u64,
    ) -> Result<TaskSuccess, TaskFailure> {
        let (mut phase_attempt, due_at) = start.unwrap_or((1, 0));
        let timeout_at = self
            .timeout
            .map(|t| first_started_at.saturating_add(millis(t)));
        sleep_until(due_at).await;
        loop {
            let mut request = template.clone();
            request.attempt = *attempt;
            if let Some(timeout_at) = timeout_at {
                let left = Duration::from_millis(timeout_at.saturating_sub(now_ms()));
                if left.is_zero() {
                    return Err(self.timed_out(Default::default()));
                }
                request.limits.deadline = request.limits.deadline.min(left);
            }
            if let Some(journal) = &self.attempter.journal {
                journal.attempt_started(&request.task_id, *attempt, request.fallback);
            }
            let span =
                tracing::debug_span!("attempt", attempt = *attempt, fallback = request.fallback);
            let executing = self.attempter.executor.execute(request.clone());
            let mut failure = match executing.instrument(span).await {
                Ok(success) => return Ok(success),
                Err(failure) => failure,
            };
            if failure.kind == FailureKind::Deadline && timeout_at.is_some_and(|at| now_ms() >= at)
            {
                failure = self.timed_out(failure.metering);
            }
            let failed = FailedAttempt {
                attempt: phase_attempt,
                kind: failure.kind,
                message: &failure.message,
                elapsed: Duration::from_millis(now_ms().saturating_sub(first_started_at)),
                seed: (&request.execution_id, &request.task_id),
            };
            let Attempter {
                policy,
                expressions,
                inputs,
                ..
            } = &self.attempter;
            let decision = policy.decide(failed, expressions, inputs);
            let delay = match decision {
                Decision::Retry(delay) => delay,
                Decision::GiveUp(why) => {
                    self.record_failure(&request, &failure, None).await?;
                    if !why.is_empty() {
                        failure.message = format!("{} ({why})", failure.message);
                    }
                    return Err(failure);
                }
            };
            let failed_at = now_ms();
            let due_at = failed_at.saturating_add(millis(delay));
            if timeout_at.is_some_and(|at| due_at >= at) {
                self.record_failure(&request, &failure, None).await?;
                return Err(TaskFailure {
                    message: format!(
                        "{}; the next attempt would start after it ({})",
                        self.timed_out(failure.metering).message,
                        failure.message
                    ),
                    ..self.timed_out(failure.metering)
                });
            }
            let retry = PendingRetry {
                task: request.task_id.clone(),
                attempt: *attempt + 1,
                phase_attempt: phase_attempt + 1,
                fallback: request.fallback,
                failed_at,
                due_at,
                first_started_at,
            };
            self.record_failure(&request, &failure, Some(retry)).await?;
            sleep_until(due_at).await;
            *attempt += 1;
            phase_attempt += 1;
        }
    }

    /// Records a failed attempt; with a retry, durably before the wait.
    async fn record_failure(
        &self,
        request: &TaskRequest,
        failure: &TaskFailure,
        retry: Option<PendingRetry>,
    ) -> Result<(), TaskFailure> {
        let Some(journal) = &self.attempter.journal else {
            return Ok(());
        };
        if retry.is_some() {
            // A retry is recorded for good: not before the task's inputs are.
            request
                .effects
                .recorded_needs()
                .await
                .map_err(|message| TaskFailure {
                    kind: FailureKind::Internal,
                    message,
                    metering: failure.metering,
                })?;
        }
        journal
            .attempt_failed(&request.task_id, request.attempt, failure, retry)
            .await
            .map_err(|e| TaskFailure {
                kind: FailureKind::Plugin,
                message: format!("recording the failed attempt failed: {e}"),
                metering: failure.metering,
            })
    }

    fn timed_out(&self, metering: super::Metering) -> TaskFailure {
        let timeout = self.timeout.unwrap_or_default();
        TaskFailure {
            kind: FailureKind::TaskTimeout,
            message: format!(
                "the task's `timeout` ({}) passed",
                humantime::format_duration(timeout)
            ),
            metering,
        }
    }
}

/// Milliseconds since the Unix epoch.
pub(super) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, millis)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

async fn sleep_until(at_ms: u64) {
    let left = at_ms.saturating_sub(now_ms());
    if left > 0 {
        tokio::time::sleep(Duration::from_millis(left)).await;
    }
}
