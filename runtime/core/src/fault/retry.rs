//! Retry policies: whether a failed attempt is tried again, and after how
//! long. Pure decisions; the scheduler sleeps and the journal records.

use std::hash::{Hash, Hasher};
use std::time::Duration;

use serde_json::json;

use super::FailureKind;
use crate::expr::{Bindings, Expression, Expressions};

/// How a task's failed attempts are retried (`retry:` in a workflow).
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; 1 means no retry.
    pub max_attempts: u32,
    /// The wait before the second attempt.
    pub initial_interval: Duration,
    /// Each wait is this many times the one before.
    pub backoff_coefficient: f64,
    /// No wait is longer than this.
    pub max_interval: Duration,
    /// Each wait is moved by up to this fraction of itself, up or down.
    pub jitter: f64,
    /// No retry starts later than this after the first attempt started.
    pub max_retry_duration: Option<Duration>,
    /// Kinds of failure that are never retried.
    pub non_retryable: Vec<FailureKind>,
    /// Retries only when this is true; it sees `error.kind`,
    /// `error.message`, `attempt` (the one that failed) and `inputs`.
    pub retry_if: Option<Expression>,
}

impl Default for RetryPolicy {
    /// One attempt: no retries unless the workflow asks for them.
    fn default() -> Self {
        Self {
            max_attempts: 1,
            initial_interval: Duration::from_secs(1),
            backoff_coefficient: 2.0,
            max_interval: Duration::from_secs(60),
            jitter: 0.0,
            max_retry_duration: None,
            non_retryable: vec![FailureKind::InvalidInput, FailureKind::Denied],
            retry_if: None,
        }
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Try again after this wait.
    Retry(Duration),
    /// Stop; the text says why, for the task's error.
    GiveUp(String),
}

/// What failed, as a policy sees it.
#[derive(Debug, Clone, Copy)]
pub struct FailedAttempt<'a> {
    /// The attempt's number within this policy's attempts, from 1.
    pub attempt: u32,
    /// Its kind.
    pub kind: FailureKind,
    /// Its message.
    pub message: &'a str,
    /// Time since the first attempt started.
    pub elapsed: Duration,
    /// Identifies the task attempt, so the jitter differs between tasks and
    /// executions yet is the same when computed again.
    pub seed: (&'a str, &'a str),
}

impl RetryPolicy {
    /// Whether this policy ever retries.
    pub fn retries(&self) -> bool {
        self.max_attempts > 1
    }

    /// The wait after failed attempt `attempt` (from 1), before jitter.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exponent = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
        let secs = self.initial_interval.as_secs_f64() * self.backoff_coefficient.powi(exponent);
        let capped = secs.min(self.max_interval.as_secs_f64());
        Duration::try_from_secs_f64(capped).unwrap_or(self.max_interval)
    }

    /// Decides what follows a failed attempt. `inputs` are the workflow's,
    /// for `retry_if`.
    pub fn decide(
        &self,
        failed: FailedAttempt<'_>,
        expressions: &Expressions,
        inputs: &serde_json::Value,
    ) -> Decision {
        let kind = failed.kind.as_str();
        if failed.kind.is_final() {
            return Decision::GiveUp(String::new());
        }
        if self.non_retryable.contains(&failed.kind) {
            return Decision::GiveUp(if self.retries() {
                format!("`{kind}` is not retried")
            } else {
                String::new()
            });
        }
        if failed.attempt >= self.max_attempts {
            return Decision::GiveUp(if self.retries() {
                format!("gave up after {} attempts", failed.attempt)
            } else {
                String::new()
            });
        }
        if let Some(retry_if) = &self.retry_if {
            let mut bindings = Bindings::new(inputs);
            bindings.add_value("error", &json!({ "kind": kind, "message": failed.message }));
            bindings.add_value("attempt", &json!(failed.attempt));
            match expressions.eval_condition(retry_if, &bindings) {
                Ok(true) => {}
                Ok(false) => {
                    return Decision::GiveUp(format!(
                        "`retry_if` ({}) was false",
                        retry_if.source()
                    ));
                }
                Err(e) => return Decision::GiveUp(format!("`retry_if` failed: {e}")),
            }
        }
        let mut delay = self.jittered(self.backoff(failed.attempt), failed);
        // A rate-limited service said how long to wait: never retry sooner.
        if let Some(asked) = retry_after(failed.message)
            && failed.kind == FailureKind::Retryable
        {
            delay = delay.max(asked);
        }
        if let Some(limit) = self.max_retry_duration
            && failed.elapsed + delay > limit
        {
            return Decision::GiveUp(format!(
                "gave up after {} attempts: the next would start after `max_retry_duration` ({})",
                failed.attempt,
                humantime::format_duration(limit)
            ));
        }
        Decision::Retry(delay)
    }

    fn jittered(&self, delay: Duration, failed: FailedAttempt<'_>) -> Duration {
        if self.jitter <= 0.0 {
            return delay;
        }
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (failed.seed, failed.attempt).hash(&mut hasher);
        // A fraction in [-1, 1), the same for the same task attempt.
        let unit = (hasher.finish() >> 11) as f64 / (1u64 << 53) as f64;
        let factor = 1.0 + self.jitter * (2.0 * unit - 1.0);
        Duration::try_from_secs_f64(delay.as_secs_f64() * factor.max(0.0)).unwrap_or(delay)
    }
}

/// The wait a plugin passed on in a retryable error's message, as
/// `retry-after: <duration>` (for example `retry-after: 2s`, from an HTTP
/// 429's `Retry-After` header).
pub fn retry_after(message: &str) -> Option<Duration> {
    const MARK: &str = "retry-after: ";
    let start = message.rfind(MARK)? + MARK.len();
    let text: String = message[start..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == ' ')
        .collect();
    // The message comes from a plugin (and from a server behind it): a wait
    // of centuries would overflow the clock it is added to.
    const LONGEST: Duration = Duration::from_secs(24 * 3600);
    humantime::parse_duration(text.trim())
        .ok()
        .map(|wait| wait.min(LONGEST))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(attempt: u32, kind: FailureKind) -> FailedAttempt<'static> {
        FailedAttempt {
            attempt,
            kind,
            message: "boom",
            elapsed: Duration::ZERO,
            seed: ("e", "t"),
        }
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 5,
            initial_interval: Duration::from_millis(100),
            backoff_coefficient: 2.0,
            max_interval: Duration::from_millis(500),
            ..RetryPolicy::default()
        }
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = policy();
        let waits: Vec<u128> = (1..=5).map(|n| p.backoff(n).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 500, 500]);
    }

    #[test]
    fn gives_up_at_max_attempts_and_on_non_retryable_kinds() {
        let (e, inputs) = (Expressions::new(), serde_json::Value::Null);
        let p = policy();
        assert_eq!(
            p.decide(failed(1, FailureKind::Retryable), &e, &inputs),
            Decision::Retry(Duration::from_millis(100))
        );
        assert!(matches!(
            p.decide(failed(5, FailureKind::Retryable), &e, &inputs),
            Decision::GiveUp(why) if why.contains("after 5 attempts")
        ));
        assert!(matches!(
            p.decide(failed(1, FailureKind::InvalidInput), &e, &inputs),
            Decision::GiveUp(why) if why.contains("`invalid-input` is not retried")
        ));
        assert!(matches!(
            p.decide(failed(1, FailureKind::Cancelled), &e, &inputs),
            Decision::GiveUp(_)
        ));
    }

    #[test]
    fn retry_if_sees_the_error_and_the_attempt() {
        let e = Expressions::new();
        let p = RetryPolicy {
            retry_if: Some(
                e.compile(r#"error.kind == "retryable" && attempt < 2"#)
                    .unwrap(),
            ),
            ..policy()
        };
        let inputs = serde_json::Value::Null;
        assert!(matches!(
            p.decide(failed(1, FailureKind::Retryable), &e, &inputs),
            Decision::Retry(_)
        ));
        assert!(matches!(
            p.decide(failed(2, FailureKind::Retryable), &e, &inputs),
            Decision::GiveUp(why) if why.contains("retry_if")
        ));
        assert!(matches!(
            p.decide(failed(1, FailureKind::Fatal), &e, &inputs),
            Decision::GiveUp(_)
        ));
    }

    #[test]
    fn jitter_stays_within_its_fraction_and_repeats() {
        let (e, inputs) = (Expressions::new(), serde_json::Value::Null);
        let p = RetryPolicy {
            jitter: 0.5,
            ..policy()
        };
        let mut seen = std::collections::HashSet::new();
        for task in ["a", "b", "c", "d", "e", "f"] {
            let f = FailedAttempt {
                seed: ("exec", task),
                ..failed(1, FailureKind::Retryable)
            };
            let Decision::Retry(wait) = p.decide(f, &e, &inputs) else {
                panic!("retries");
            };
            assert!((50..=150).contains(&wait.as_millis()), "{wait:?}");
            assert_eq!(p.decide(f, &e, &inputs), Decision::Retry(wait));
            seen.insert(wait);
        }
        assert!(seen.len() > 1, "jitter spreads tasks apart");
    }

    #[test]
    fn max_retry_duration_stops_retries() {
        let (e, inputs) = (Expressions::new(), serde_json::Value::Null);
        let p = RetryPolicy {
            max_retry_duration: Some(Duration::from_millis(250)),
            ..policy()
        };
        let f = FailedAttempt {
            elapsed: Duration::from_millis(200),
            ..failed(1, FailureKind::Retryable)
        };
        assert!(matches!(
            p.decide(f, &e, &inputs),
            Decision::GiveUp(why) if why.contains("max_retry_duration")
        ));
    }

    #[test]
    fn a_retry_after_hint_lengthens_the_wait() {
        let (e, inputs) = (Expressions::new(), serde_json::Value::Null);
        let f = FailedAttempt {
            message: "rate limited (429); retry-after: 2s",
            ..failed(1, FailureKind::Retryable)
        };
        assert_eq!(
            policy().decide(f, &e, &inputs),
            Decision::Retry(Duration::from_secs(2))
        );
        assert_eq!(
            retry_after("x (retry-after: 1500ms)"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(retry_after("no hint"), None);
        // A plugin asking for centuries gets a day.
        assert_eq!(
            retry_after("x (retry-after: 10000000000000000000s)"),
            Some(Duration::from_secs(24 * 3600))
        );
        // A shorter hint does not shorten the backoff.
        let f = FailedAttempt {
            message: "retry-after: 1ms",
            ..failed(1, FailureKind::Retryable)
        };
        assert_eq!(
            policy().decide(f, &e, &inputs),
            Decision::Retry(Duration::from_millis(100))
        );
    }
}
