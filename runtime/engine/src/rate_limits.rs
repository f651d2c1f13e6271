//! Keyed rate limits: how many requests, and how many model tokens, each
//! tenant may send to a provider host per period (`rate_limits:` in the
//! configuration file). Every tenant has buckets of its own per host, so
//! one tenant's traffic never spends another's allowance.
//!
//! A request over the request limit waits for its turn before it is sent
//! (the sandbox's `RequestGate` seam), rather than going out to be refused
//! by the provider; the attempt's deadline bounds the wait. Tokens are
//! known only once an answer came back: the tokens an attempt used are
//! charged to every host with a token limit that it called, and while a
//! tenant's token bucket for a host is spent (below zero), its requests to
//! that host wait until the bucket has refilled, before they are sent.
//!
//! ```yaml
//! rate_limits:
//!   api.openai.com: { requests: 500, tokens: 90000, per: 1m }   # per tenant
//!   "*.anthropic.com": { requests: 50, per: 1s }
//! ```

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Deserialize;

use orchestrator_core::plugin::HostPattern;
use orchestrator_core::tenant::TenantId;
use orchestrator_core::workflow::parse_duration;
use orchestrator_sandbox::host_guard::{AttemptId, RequestGate};

/// A rate as the configuration file writes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateSpec {
    /// Requests allowed per `per`; up to this many may go at once.
    #[serde(default)]
    pub requests: Option<u32>,
    /// Model tokens (in and out) allowed per `per`.
    #[serde(default)]
    pub tokens: Option<u64>,
    /// The period, for example `1m` or `1s`.
    pub per: String,
}

/// A bucket's size and how fast it refills.
#[derive(Debug, Clone, Copy)]
struct Rate {
    /// The most that goes at once.
    burst: f64,
    /// Regained per second.
    refill: f64,
}

/// The limits for the hosts one pattern matches.
#[derive(Debug, Clone)]
struct Rule {
    hosts: HostPattern,
    requests: Option<Rate>,
    tokens: Option<Rate>,
}

/// The rate limits of one process, and every (tenant, host) bucket.
#[derive(Debug, Default)]
pub struct RateLimits {
    rules: Vec<Rule>,
    buckets: Mutex<HashMap<(TenantId, String), Bucket>>,
    token_buckets: Mutex<HashMap<(TenantId, String), Bucket>>,
    /// Hosts with a token limit each attempt in flight called, until its
    /// tokens are charged: when it was first seen, and the hosts.
    called: Mutex<HashMap<AttemptId, (Instant, Vec<String>)>>,
}

#[derive(Debug)]
struct Bucket {
    /// What may go now; below zero, what is owed (requests already
    /// waiting, or tokens spent past the limit).
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn full(rate: Rate, now: Instant) -> Self {
        Self {
            tokens: rate.burst,
            updated: now,
        }
    }

    /// Refills for the time since it was last seen, up to the burst.
    fn refill(&mut self, rate: Rate, now: Instant) {
        let regained = now.saturating_duration_since(self.updated).as_secs_f64() * rate.refill;
        self.tokens = (self.tokens + regained).min(rate.burst);
        self.updated = now;
    }
}

/// The longest a request is told to wait (its attempt's deadline ends it
/// sooner).
const MAX_WAIT: Duration = Duration::from_secs(24 * 3600);

/// How long `owed` takes to refill at `refill` a second, at most
/// [`MAX_WAIT`]: what a plugin reports (tokens) may be absurd.
fn wait_for(owed: f64, refill: f64) -> Duration {
    Duration::try_from_secs_f64(owed / refill).map_or(MAX_WAIT, |d| d.min(MAX_WAIT))
}

/// Attempts whose tokens were never charged (a policy plugin's, one cut
/// off) are forgotten after this long.
const FORGET_AFTER: Duration = Duration::from_secs(3600);

impl RateLimits {
    /// The limits `rate_limits:` gives, by host pattern; the message of an
    /// error names the entry.
    pub fn new(spec: BTreeMap<String, RateSpec>) -> Result<Self, String> {
        let mut rules = Vec::new();
        for (host, rate) in spec {
            let at = |problem: String| format!("`rate_limits.{host}`: {problem}");
            let hosts = HostPattern::parse(&host).map_err(at)?;
            let per = parse_duration(&rate.per).map_err(at)?;
            let zero = rate.requests == Some(0) || rate.tokens == Some(0);
            if zero || per.is_zero() || (rate.requests.is_none() && rate.tokens.is_none()) {
                return Err(at(
                    "give `requests` or `tokens` (or both) and `per`, each above zero (leave the host out for no limit)"
                        .to_owned(),
                ));
            }
            let rate_of = |n: f64| Rate {
                burst: n,
                refill: n / per.as_secs_f64(),
            };
            rules.push(Rule {
                hosts,
                requests: rate.requests.map(|n| rate_of(f64::from(n))),
                #[allow(clippy::cast_precision_loss, reason = "a token count far below 2^52")]
                tokens: rate.tokens.map(|n| rate_of(n as f64)),
            });
        }
        Ok(Self {
            rules,
            ..Self::default()
        })
    }

    /// Whether any limit is set.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    fn rule(&self, host: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.hosts.matches_host(host))
    }

    /// The gate a plugin of `tenant` waits at.
    pub fn gate(self: &Arc<Self>, tenant: TenantId) -> Arc<dyn RequestGate> {
        Arc::new(TenantGate {
            limits: Arc::clone(self),
            tenant,
        })
    }

    /// Reserves a request of `tenant` to `host` and says how long it must
    /// wait first (nothing when no request limit covers the host).
    fn reserve(&self, tenant: &TenantId, host: &str, now: Instant) -> Duration {
        let Some(rate) = self.rule(host).and_then(|r| r.requests) else {
            return Duration::ZERO;
        };
        let mut buckets = self.buckets.lock().expect("buckets lock");
        let bucket = buckets
            .entry((tenant.clone(), host.to_owned()))
            .or_insert_with(|| Bucket::full(rate, now));
        bucket.refill(rate, now);
        bucket.tokens -= 1.0;
        if bucket.tokens >= 0.0 {
            Duration::ZERO
        } else {
            wait_for(-bucket.tokens, rate.refill)
        }
    }

    /// How long requests of `tenant` to `host` wait for its spent tokens
    /// to refill (nothing when no token limit covers the host or tokens
    /// are left), noting that `attempt` called it.
    fn token_debt(
        &self,
        tenant: &TenantId,
        host: &str,
        attempt: &AttemptId,
        now: Instant,
    ) -> Duration {
        let Some(rate) = self.rule(host).and_then(|r| r.tokens) else {
            return Duration::ZERO;
        };
        {
            let mut called = self.called.lock().expect("called lock");
            if called.len() > 1024 {
                called.retain(|_, (seen, _)| now.saturating_duration_since(*seen) < FORGET_AFTER);
            }
            let hosts = &mut called.entry(attempt.clone()).or_insert((now, Vec::new())).1;
            if !hosts.iter().any(|h| h == host) {
                hosts.push(host.to_owned());
            }
        }
        let mut buckets = self.token_buckets.lock().expect("buckets lock");
        let Some(bucket) = buckets.get_mut(&(tenant.clone(), host.to_owned())) else {
            return Duration::ZERO;
        };
        bucket.refill(rate, now);
        if bucket.tokens >= 0.0 {
            Duration::ZERO
        } else {
            wait_for(-bucket.tokens, rate.refill)
        }
    }

    /// Charges the `tokens` `attempt` of `tenant` used to every host with
    /// a token limit it called; its later requests there (and the
    /// tenant's others) wait while that takes the bucket below zero.
    pub fn charge(&self, tenant: &TenantId, attempt: &AttemptId, tokens: u64) {
        let Some((_, hosts)) = self.called.lock().expect("called lock").remove(attempt) else {
            return;
        };
        let now = Instant::now();
        let mut buckets = self.token_buckets.lock().expect("buckets lock");
        for host in hosts {
            let Some(rate) = self.rule(&host).and_then(|r| r.tokens) else {
                continue;
            };
            let bucket = buckets
                .entry((tenant.clone(), host))
                .or_insert_with(|| Bucket::full(rate, now));
            bucket.refill(rate, now);
            #[allow(clippy::cast_precision_loss, reason = "a token count far below 2^52")]
            let used = tokens as f64;
            // At most a day's worth owed, however much a plugin reports.
            let floor = -(rate.refill * MAX_WAIT.as_secs_f64());
            bucket.tokens = (bucket.tokens - used).max(floor);
        }
    }

    /// Returns a reserved request of `tenant` to `host` that was not sent.
    fn give_back(&self, tenant: &TenantId, host: &str) {
        let Some(rate) = self.rule(host).and_then(|r| r.requests) else {
            return;
        };
        let mut buckets = self.buckets.lock().expect("buckets lock");
        if let Some(bucket) = buckets.get_mut(&(tenant.clone(), host.to_owned())) {
            bucket.tokens = (bucket.tokens + 1.0).min(rate.burst);
        }
    }
}

/// One tenant's side of the limits.
struct TenantGate {
    limits: Arc<RateLimits>,
    tenant: TenantId,
}

impl RequestGate for TenantGate {
    fn turn<'a>(
        &'a self,
        host: &'a str,
        attempt: &'a AttemptId,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
            // Spent tokens first: the request's turn is reserved only once
            // it could go.
            loop {
                let debt = self
                    .limits
                    .token_debt(&self.tenant, host, attempt, Instant::now());
                if debt.is_zero() {
                    break;
                }
                tracing::debug!(tenant = %self.tenant, host, "token limit: waiting {debt:?}");
                tokio::time::sleep(debt).await;
            }
            let wait = self.limits.reserve(&self.tenant, host, Instant::now());
            if !wait.is_zero() {
                tracing::debug!(tenant = %self.tenant, host, "rate limited: waiting {wait:?}");
                // A request given up while it waits (its attempt timed out
                // or was cancelled) gives its turn back.
                let mut turn = Turn {
                    gate: self,
                    host,
                    taken: false,
                };
                tokio::time::sleep(wait).await;
                turn.taken = true;
            }
        })
    }
}

/// A reserved turn not yet taken.
struct Turn<'a> {
    gate: &'a TenantGate,
    host: &'a str,
    taken: bool,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        if !self.taken {
            self.gate.limits.give_back(&self.gate.tenant, self.host);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(host: &str, requests: Option<u32>, tokens: Option<u64>, per: &str) -> RateLimits {
        RateLimits::new(BTreeMap::from([(
            host.to_owned(),
            RateSpec {
                requests,
                tokens,
                per: per.to_owned(),
            },
        )]))
        .expect("valid limits")
    }

    #[test]
    fn requests_past_the_burst_wait_their_turn_per_tenant_and_host() {
        let limits = limits("api.example.com", Some(2), None, "1s");
        let (acme, globex) = (
            TenantId::new("acme").unwrap(),
            TenantId::new("globex").unwrap(),
        );
        let now = Instant::now();
        let waits: Vec<Duration> = (0..4)
            .map(|_| limits.reserve(&acme, "api.example.com", now))
            .collect();
        assert_eq!(waits[..2], [Duration::ZERO, Duration::ZERO]);
        assert_eq!(waits[2], Duration::from_millis(500));
        assert_eq!(waits[3], Duration::from_millis(1000));
        // Another tenant, another host, a host no rule covers: no wait.
        assert_eq!(
            limits.reserve(&globex, "api.example.com", now),
            Duration::ZERO
        );
        assert_eq!(
            limits.reserve(&acme, "other.example.com", now),
            Duration::ZERO
        );
        // A request given up while waiting gives its turn back.
        limits.give_back(&acme, "api.example.com");
        assert_eq!(
            limits.reserve(&acme, "api.example.com", now),
            Duration::from_millis(1000)
        );
        // Time gives requests back, up to the burst.
        let later = now + Duration::from_secs(10);
        assert_eq!(
            limits.reserve(&acme, "api.example.com", later),
            Duration::ZERO
        );
    }

    #[test]
    fn bad_limits_name_their_entry() {
        let error = RateLimits::new(BTreeMap::from([(
            "api.example.com".to_owned(),
            RateSpec {
                requests: Some(0),
                tokens: None,
                per: "1s".to_owned(),
            },
        )]))
        .unwrap_err();
        assert!(error.contains("rate_limits.api.example.com"), "{error}");
    }

    #[test]
    fn spent_tokens_hold_the_tenants_next_requests_to_that_host() {
        let limits = limits("api.example.com", None, Some(100), "1s");
        let acme = TenantId::new("acme").unwrap();
        let attempt = |n: u32| AttemptId {
            execution: Arc::from("e"),
            task: "t".into(),
            attempt: n,
        };
        let now = Instant::now();
        let host = "api.example.com";
        assert_eq!(
            limits.token_debt(&acme, host, &attempt(1), now),
            Duration::ZERO
        );
        // 250 tokens against 100 per second: 150 owed, 1.5 s to refill.
        limits.charge(&acme, &attempt(1), 250);
        let debt = limits.token_debt(&acme, host, &attempt(2), Instant::now());
        assert!(
            debt > Duration::from_millis(1400) && debt <= Duration::from_millis(1500),
            "{debt:?}"
        );
        // Only the hosts an attempt called are charged; other tenants and
        // hosts owe nothing.
        limits.charge(&acme, &attempt(9), 1000);
        let globex = TenantId::new("globex").unwrap();
        assert_eq!(
            limits.token_debt(&globex, host, &attempt(3), now),
            Duration::ZERO
        );
        assert_eq!(
            limits.token_debt(&acme, "other.example.com", &attempt(4), now),
            Duration::ZERO
        );
        let later = Instant::now() + Duration::from_secs(2);
        assert_eq!(
            limits.token_debt(&acme, host, &attempt(5), later),
            Duration::ZERO
        );
    }
}
