//! `retry:` and `breaker:` as written (workflow-wide and per task) into a
//! [`RetryPolicy`] and a [`BreakerPolicy`], with a diagnostic for every
//! value that does not make sense.

use serde_saphyr::Spanned;

use super::definition::{BreakerSpec, RetrySpec};
use super::diagnostic::Diagnostic;
use super::limits::parse_duration;
use super::parse::location_of;
use crate::expr::Expressions;
use crate::fault::{BreakerPolicy, BreakerScope, FailureKind, RetryPolicy};

/// `spec` over `inherited`: each field set in `spec` replaces the inherited one.
pub fn retry_policy(
    spec: &RetrySpec,
    inherited: &RetryPolicy,
    expressions: &Expressions,
    problems: &mut Vec<Diagnostic>,
) -> RetryPolicy {
    let mut policy = inherited.clone();
    if let Some(n) = &spec.max_attempts {
        if n.value == 0 {
            problems.push(
                Diagnostic::at(location_of(n), "`max_attempts` must be at least 1")
                    .help("it counts the first attempt: 1 means no retry, 3 means two retries"),
            );
        } else {
            policy.max_attempts = n.value;
        }
    }
    let mut duration = |field: &Option<Spanned<String>>, name: &str| {
        field.as_ref().and_then(|d| match parse_duration(&d.value) {
            Ok(duration) => Some(duration),
            Err(e) => {
                problems.push(Diagnostic::at(location_of(d), format!("`{name}`: {e}")));
                None
            }
        })
    };
    if let Some(d) = duration(&spec.initial_interval, "initial_interval") {
        policy.initial_interval = d;
    }
    if let Some(d) = duration(&spec.max_interval, "max_interval") {
        policy.max_interval = d;
    }
    if let Some(d) = duration(&spec.max_retry_duration, "max_retry_duration") {
        policy.max_retry_duration = Some(d);
    }
    if let Some(c) = &spec.backoff_coefficient {
        if c.value.is_finite() && c.value >= 1.0 {
            policy.backoff_coefficient = c.value;
        } else {
            problems.push(
                Diagnostic::at(location_of(c), "`backoff_coefficient` must be at least 1")
                    .help("1 keeps every wait the same; 2 doubles each wait"),
            );
        }
    }
    if let Some(j) = &spec.jitter {
        if (0.0..=1.0).contains(&j.value) {
            policy.jitter = j.value;
        } else {
            problems.push(
                Diagnostic::at(location_of(j), "`jitter` must be between 0 and 1")
                    .help("it is the fraction a wait may move up or down, for example 0.2"),
            );
        }
    }
    if let Some(kinds) = &spec.non_retryable {
        policy.non_retryable = kinds
            .iter()
            .filter_map(|k| {
                let kind = FailureKind::parse(&k.value);
                if kind.is_none() {
                    let known: Vec<&str> = FailureKind::ALL.iter().map(|k| k.as_str()).collect();
                    problems.push(
                        Diagnostic::at(location_of(k), format!("unknown error kind `{}`", k.value))
                            .help(format!("error kinds: {}", known.join(", "))),
                    );
                }
                kind
            })
            .collect();
    }
    if let Some(condition) = &spec.retry_if {
        match expressions.compile(condition.value.trim()) {
            Ok(expr) if !expr.reads().is_empty() => problems.push(
                Diagnostic::at(location_of(condition), "`retry_if` cannot read `tasks`")
                    .help("it sees `error.kind`, `error.message`, `attempt` and `inputs`"),
            ),
            Ok(expr) => policy.retry_if = Some(expr),
            Err(e) => problems.push(
                Diagnostic::at(
                    location_of(condition),
                    format!("`retry_if` does not compile: {e}"),
                )
                .help("for example `error.kind == \"retryable\" && attempt < 3`"),
            ),
        }
    }
    policy
}

/// `spec` over `inherited` (the workflow's breaker, if any); `None` when
/// neither asks for a breaker.
pub fn breaker_policy(
    spec: Option<&BreakerSpec>,
    inherited: Option<BreakerPolicy>,
    problems: &mut Vec<Diagnostic>,
) -> Option<BreakerPolicy> {
    let Some(spec) = spec else {
        return inherited;
    };
    let mut policy = inherited.unwrap_or_default();
    let mut at_least_one = |field: &Option<Spanned<u32>>, name: &str| {
        let n = field.as_ref()?;
        if n.value == 0 {
            problems.push(Diagnostic::at(
                location_of(n),
                format!("`{name}` must be at least 1"),
            ));
            None
        } else {
            Some(n.value)
        }
    };
    if let Some(n) = at_least_one(&spec.failures, "failures") {
        policy.failures = n;
    }
    if let Some(n) = at_least_one(&spec.min_calls, "min_calls") {
        policy.min_calls = n;
    }
    if let Some(n) = at_least_one(&spec.probes, "probes") {
        policy.probes = n;
    }
    if let Some(rate) = &spec.failure_rate {
        if rate.value > 0.0 && rate.value <= 1.0 {
            policy.failure_rate = Some(rate.value);
        } else {
            problems.push(
                Diagnostic::at(
                    location_of(rate),
                    "`failure_rate` must be above 0 and at most 1",
                )
                .help("0.5 opens the breaker when half the calls in the window failed"),
            );
        }
    }
    if let Some(scope) = &spec.scope {
        match BreakerScope::parse(&scope.value) {
            Some(parsed) => policy.scope = parsed,
            None => problems.push(
                Diagnostic::at(
                    location_of(scope),
                    format!("`scope: {}` is not a breaker scope", scope.value),
                )
                .help("use `plugin` (one breaker per plugin), `hosts` (one per host it calls) or `both`"),
            ),
        }
    }
    for (field, name, slot) in [
        (&spec.window, "window", &mut policy.window),
        (&spec.open_for, "open_for", &mut policy.open_for),
    ] {
        if let Some(text) = field {
            match parse_duration(&text.value) {
                Ok(d) => *slot = d,
                Err(e) => {
                    problems.push(Diagnostic::at(location_of(text), format!("`{name}`: {e}")))
                }
            }
        }
    }
    Some(policy)
}
