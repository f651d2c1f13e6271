//! Keyed rate limits: how many requests each tenant may send to a provider
//! host per period (`rate_limits:` in the configuration file). Every tenant
//! has a bucket of its own per host, so one tenant's traffic never spends
//! another's allowance. A request over the limit waits for its turn before
//! it is sent (the sandbox's `RequestGate` seam), rather than going out to
//! be refused by the provider; the attempt's deadline bounds the wait.
//!
//! ```yaml
//! rate_limits:
//!   api.openai.com: { requests: 500, per: 1m }   # per tenant
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
use orchestrator_sandbox::host_guard::RequestGate;

/// A rate as the configuration file writes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateSpec {
    /// Requests allowed per `per`; up to this many may go at once.
    pub requests: u32,
    /// The period, for example `1m` or `1s`.
    pub per: String,
}

/// Requests per period, for the hosts one pattern matches.
#[derive(Debug, Clone)]
struct Rule {
    hosts: HostPattern,
    /// Bucket size: the most requests that go at once.
    burst: f64,
    /// Requests regained per second.
    refill: f64,
}

/// The rate limits of one process, and every (tenant, host) bucket.
#[derive(Debug, Default)]
pub struct RateLimits {
    rules: Vec<Rule>,
    buckets: Mutex<HashMap<(TenantId, String), Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    /// Requests that may go now; below zero, requests already waiting.
    tokens: f64,
    updated: Instant,
}

impl RateLimits {
    /// The limits `rate_limits:` gives, by host pattern; the message of an
    /// error names the entry.
    pub fn new(spec: BTreeMap<String, RateSpec>) -> Result<Self, String> {
        let mut rules = Vec::new();
        for (host, rate) in spec {
            let at = |problem: String| format!("`rate_limits.{host}`: {problem}");
            let hosts = HostPattern::parse(&host).map_err(at)?;
            let per = parse_duration(&rate.per).map_err(at)?;
            if rate.requests == 0 || per.is_zero() {
                return Err(at(
                    "`requests` and `per` must be above zero (leave the host out for no limit)"
                        .to_owned(),
                ));
            }
            rules.push(Rule {
                hosts,
                burst: f64::from(rate.requests),
                refill: f64::from(rate.requests) / per.as_secs_f64(),
            });
        }
        Ok(Self {
            rules,
            buckets: Mutex::default(),
        })
    }

    /// Whether any limit is set.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The gate a plugin of `tenant` waits at.
    pub fn gate(self: &Arc<Self>, tenant: TenantId) -> Arc<dyn RequestGate> {
        Arc::new(TenantGate {
            limits: Arc::clone(self),
            tenant,
        })
    }

    /// Reserves a request of `tenant` to `host` and says how long it must
    /// wait first (nothing when no limit covers the host).
    fn reserve(&self, tenant: &TenantId, host: &str, now: Instant) -> Duration {
        let Some(rule) = self.rules.iter().find(|r| r.hosts.matches_host(host)) else {
            return Duration::ZERO;
        };
        let mut buckets = self.buckets.lock().expect("buckets lock");
        let bucket = buckets
            .entry((tenant.clone(), host.to_owned()))
            .or_insert(Bucket {
                tokens: rule.burst,
                updated: now,
            });
        let regained = now.saturating_duration_since(bucket.updated).as_secs_f64() * rule.refill;
        bucket.tokens = (bucket.tokens + regained).min(rule.burst) - 1.0;
        bucket.updated = now;
        if bucket.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-bucket.tokens / rule.refill)
        }
    }
}

/// One tenant's side of the limits.
struct TenantGate {
    limits: Arc<RateLimits>,
    tenant: TenantId,
}

impl RequestGate for TenantGate {
    fn turn<'a>(&'a self, host: &'a str) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
        Box::pin(async move {
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

impl RateLimits {
    /// Returns a reserved request of `tenant` to `host` that was not sent.
    fn give_back(&self, tenant: &TenantId, host: &str) {
        let Some(rule) = self.rules.iter().find(|r| r.hosts.matches_host(host)) else {
            return;
        };
        let mut buckets = self.buckets.lock().expect("buckets lock");
        if let Some(bucket) = buckets.get_mut(&(tenant.clone(), host.to_owned())) {
            bucket.tokens = (bucket.tokens + 1.0).min(rule.burst);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(host: &str, requests: u32, per: &str) -> RateLimits {
        RateLimits::new(BTreeMap::from([(
            host.to_owned(),
            RateSpec {
                requests,
                per: per.to_owned(),
            },
        )]))
        .expect("valid limits")
    }

    #[test]
    fn requests_past_the_burst_wait_their_turn_per_tenant_and_host() {
        let limits = limits("api.example.com", 2, "1s");
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
                requests: 0,
                per: "1s".to_owned(),
            },
        )]))
        .unwrap_err();
        assert!(error.contains("rate_limits.api.example.com"), "{error}");
    }
}
