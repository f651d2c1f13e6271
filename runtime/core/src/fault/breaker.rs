//! Circuit breakers as a state machine: closed (calls go through and are
//! counted) -> open after too many failures in a window (calls fail fast) ->
//! half-open once `open_for` has passed (a few probe calls go through) ->
//! closed when the probes succeed, open again when one fails. Time comes in
//! as milliseconds since the epoch, so the machine is pure and its state can
//! be stored and read back.

use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::FailureKind;

/// When a breaker opens, and for how long (`breaker:` in a workflow).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerPolicy {
    /// Opens after this many failures within `window`.
    pub failures: u32,
    /// Or when at least this share of the calls in `window` failed (with
    /// at least `min_calls` calls).
    pub failure_rate: Option<f64>,
    /// Calls needed before `failure_rate` applies.
    pub min_calls: u32,
    /// How far back failures count.
    pub window: Duration,
    /// How long it stays open before probing.
    pub open_for: Duration,
    /// Probe calls that must succeed, one at a time, to close again.
    pub probes: u32,
    /// What it guards: the plugin, the hosts the plugin calls, or both.
    pub scope: BreakerScope,
}

/// What a `breaker:` guards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BreakerScope {
    /// One breaker per plugin (by digest), counting how its calls end.
    #[default]
    Plugin,
    /// One breaker per host and port the plugin sends HTTP requests to,
    /// counting connection failures, 5xx and 429 answers.
    Hosts,
    /// Both.
    Both,
}

impl BreakerScope {
    /// Its name in a workflow file.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "plugin" => Some(Self::Plugin),
            "hosts" => Some(Self::Hosts),
            "both" => Some(Self::Both),
            _ => None,
        }
    }

    /// Guards the plugin itself.
    pub fn plugin(self) -> bool {
        matches!(self, Self::Plugin | Self::Both)
    }

    /// Guards the hosts the plugin calls.
    pub fn hosts(self) -> bool {
        matches!(self, Self::Hosts | Self::Both)
    }
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        Self {
            failures: 5,
            failure_rate: None,
            min_calls: 10,
            window: Duration::from_secs(60),
            open_for: Duration::from_secs(30),
            probes: 1,
            scope: BreakerScope::Plugin,
        }
    }
}

/// Where a breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// Calls fail fast until `until` (ms since the epoch).
    Open {
        /// When probing may start.
        until: u64,
    },
    /// Probe calls go through, one at a time.
    HalfOpen {
        /// A probe is running.
        probing: bool,
        /// Probes that succeeded so far.
        passed: u32,
    },
}

/// One breaker: its state and the calls it remembers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Breaker {
    /// Where it stands.
    pub state: BreakerState,
    /// Since when, ms since the epoch.
    pub since: u64,
    /// Recent calls in the window: (when, failed).
    pub calls: VecDeque<(u64, bool)>,
    /// Why it last opened, in words.
    #[serde(default)]
    pub reason: String,
}

/// A call the breaker let through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// A normal call.
    Call,
    /// A probe of a half-open breaker.
    Probe,
}

/// The breaker refused a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// How long until it will let a probe through (0 while a probe runs).
    pub retry_in: Duration,
    /// Why it opened.
    pub reason: String,
}

impl Default for Breaker {
    fn default() -> Self {
        Self {
            state: BreakerState::Closed,
            since: 0,
            calls: VecDeque::new(),
            reason: String::new(),
        }
    }
}

/// Whether a failure of this kind says something about the plugin or the
/// endpoint (and so counts against its breaker). The caller's bad input, a
/// policy refusal, the run's own timeouts or a cancel do not.
pub fn counts(kind: FailureKind) -> bool {
    matches!(
        kind,
        FailureKind::Retryable
            | FailureKind::Fatal
            | FailureKind::Deadline
            | FailureKind::Trap
            | FailureKind::Plugin
            | FailureKind::OutOfFuel
            | FailureKind::MemoryLimit
            | FailureKind::StackOverflow
            | FailureKind::OutputLimit
    )
}

impl Breaker {
    /// Lets a call through, or refuses it. An open breaker whose time is
    /// up turns half-open and lets one probe through.
    pub fn admit(&mut self, now: u64) -> Result<Admission, Refusal> {
        match self.state {
            BreakerState::Closed => Ok(Admission::Call),
            BreakerState::Open { until } if now >= until => {
                self.set(
                    BreakerState::HalfOpen {
                        probing: true,
                        passed: 0,
                    },
                    now,
                );
                Ok(Admission::Probe)
            }
            BreakerState::Open { until } => Err(Refusal {
                retry_in: Duration::from_millis(until - now),
                reason: self.reason.clone(),
            }),
            BreakerState::HalfOpen {
                probing: false,
                passed,
            } => {
                self.state = BreakerState::HalfOpen {
                    probing: true,
                    passed,
                };
                Ok(Admission::Probe)
            }
            BreakerState::HalfOpen { probing: true, .. } => Err(Refusal {
                retry_in: Duration::ZERO,
                reason: format!("{}; a probe call is running", self.reason),
            }),
        }
    }

    /// Records how an admitted call ended; returns whether it changed from
    /// closed, open or half-open to another of the three.
    pub fn record(
        &mut self,
        now: u64,
        admission: Admission,
        failed: bool,
        policy: &BreakerPolicy,
    ) -> bool {
        let before = std::mem::discriminant(&self.state);
        match (admission, self.state) {
            (Admission::Probe, BreakerState::HalfOpen { passed, .. }) => {
                if failed {
                    self.reason = format!("{}; the probe failed too", base_reason(&self.reason));
                    self.open(now, policy);
                } else if passed + 1 >= policy.probes.max(1) {
                    self.calls.clear();
                    self.set(BreakerState::Closed, now);
                } else {
                    self.state = BreakerState::HalfOpen {
                        probing: false,
                        passed: passed + 1,
                    };
                }
            }
            (Admission::Call, BreakerState::Closed) => {
                self.calls.push_back((now, failed));
                let window = u64::try_from(policy.window.as_millis()).unwrap_or(u64::MAX);
                while self
                    .calls
                    .front()
                    .is_some_and(|(at, _)| now.saturating_sub(*at) > window)
                {
                    self.calls.pop_front();
                }
                let total = self.calls.len();
                let failures = self.calls.iter().filter(|(_, f)| *f).count();
                let window_text = humantime::format_duration(policy.window);
                if failures >= policy.failures.max(1) as usize {
                    self.reason = format!("{failures} failures within {window_text}");
                    self.open(now, policy);
                } else if let Some(rate) = policy.failure_rate
                    && total >= policy.min_calls.max(1) as usize
                    && failures as f64 / total as f64 >= rate
                {
                    self.reason =
                        format!("{failures} of {total} calls failed within {window_text}");
                    self.open(now, policy);
                }
            }
            // A call admitted before another one changed the state: its
            // result no longer says anything about the current state.
            _ => {}
        }
        std::mem::discriminant(&self.state) != before
    }

    fn open(&mut self, now: u64, policy: &BreakerPolicy) {
        let open_for = u64::try_from(policy.open_for.as_millis()).unwrap_or(u64::MAX);
        self.set(
            BreakerState::Open {
                until: now.saturating_add(open_for),
            },
            now,
        );
    }

    fn set(&mut self, state: BreakerState, now: u64) {
        self.state = state;
        self.since = now;
    }

    /// The state's name.
    pub fn state_name(&self) -> &'static str {
        match self.state {
            BreakerState::Closed => "closed",
            BreakerState::Open { .. } => "open",
            BreakerState::HalfOpen { .. } => "half-open",
        }
    }
}

fn base_reason(reason: &str) -> &str {
    reason.split("; the probe failed").next().unwrap_or(reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> BreakerPolicy {
        BreakerPolicy {
            failures: 3,
            window: Duration::from_secs(10),
            open_for: Duration::from_secs(5),
            probes: 2,
            ..BreakerPolicy::default()
        }
    }

    fn call(b: &mut Breaker, now: u64, failed: bool) -> bool {
        let admission = b.admit(now).expect("admitted");
        b.record(now, admission, failed, &policy())
    }

    #[test]
    fn opens_after_failures_in_the_window_and_fails_fast() {
        let mut b = Breaker::default();
        assert!(!call(&mut b, 1_000, true));
        assert!(!call(&mut b, 2_000, false));
        // The first failure leaves the 10 s window.
        assert!(!call(&mut b, 12_000, true));
        assert!(!call(&mut b, 13_000, true));
        assert_eq!(b.state, BreakerState::Closed);
        assert!(call(&mut b, 14_000, true), "third failure in the window");
        assert_eq!(b.state, BreakerState::Open { until: 19_000 });
        let refusal = b.admit(15_000).unwrap_err();
        assert_eq!(refusal.retry_in, Duration::from_secs(4));
        assert!(refusal.reason.contains("3 failures"), "{}", refusal.reason);
    }

    #[test]
    fn half_open_probes_close_it_or_open_it_again() {
        let mut b = Breaker::default();
        for t in [1, 2, 3] {
            call(&mut b, t, true);
        }
        // Time is up: one probe at a time.
        assert_eq!(b.admit(6_000), Ok(Admission::Probe));
        assert!(b.admit(6_001).is_err(), "a probe is running");
        assert!(!b.record(6_010, Admission::Probe, false, &policy()));
        assert_eq!(b.admit(6_020), Ok(Admission::Probe));
        assert!(b.record(6_030, Admission::Probe, false, &policy()));
        assert_eq!(b.state, BreakerState::Closed);

        for t in [7_000, 7_001, 7_002] {
            call(&mut b, t, true);
        }
        assert_eq!(b.admit(13_000), Ok(Admission::Probe));
        assert!(b.record(13_001, Admission::Probe, true, &policy()));
        assert_eq!(b.state, BreakerState::Open { until: 18_001 });
    }

    #[test]
    fn a_failure_rate_opens_it_once_enough_calls_were_made() {
        let p = BreakerPolicy {
            failures: 100,
            failure_rate: Some(0.5),
            min_calls: 4,
            ..policy()
        };
        let mut b = Breaker::default();
        for (t, failed) in [(1, true), (2, false), (3, true)] {
            let a = b.admit(t).unwrap();
            assert!(!b.record(t, a, failed, &p), "too few calls yet");
        }
        let a = b.admit(4).unwrap();
        assert!(b.record(4, a, false, &p), "2 of 4 failed");
        assert!(b.reason.contains("2 of 4 calls failed"));
    }

    #[test]
    fn only_failures_of_the_plugin_count() {
        assert!(counts(FailureKind::Retryable));
        assert!(counts(FailureKind::Trap));
        assert!(!counts(FailureKind::InvalidInput));
        assert!(!counts(FailureKind::Denied));
        assert!(!counts(FailureKind::BreakerOpen));
    }
}
