//! What model calls cost, and answers worth keeping. [`Prices`] is the
//! configuration's price table (US dollars per million input and output
//! tokens, by model name, `*` at the end of a name matching any suffix).
//! [`Governed`] wraps a run's executor: it answers tasks with a `cache:`
//! from the response cache when it holds the same request (the plugin's
//! digest and the task's resolved `with:`, JSON keys sorted), stores their
//! fresh answers there, and puts a price on the usage each answer reports,
//! so task reports, execution files and `runtime status` carry the cost as
//! it was when the call was made. A cache hit spends nothing and says so.
//!
//! Under a workflow's `budget:`, a call is refused (`denied`) before it is
//! made when what the run has spent, plus what calls in flight are
//! expected to spend, plus this call's estimate would pass a limit; the
//! estimate is a quarter token per character of the `prompt`, `system`
//! and `messages` of its `with:`, plus its `max_tokens`. After a call, an
//! answer whose actual usage takes the run past a limit is refused too.
//!
//! The tenant's `quotas:` (`crate::quotas`) count and refuse the same way,
//! across all the tenant's runs in a period.
//!
//! A workflow's `policies:` run around the calls they guard, outside all
//! of that (`policies.rs`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::Instrument;

use serde_json::Value;
use sha2::{Digest, Sha256};

use orchestrator_core::scheduler::{
    Consumption, Executor, FailureKind, Metering, TaskFailure, TaskRef, TaskReport, TaskRequest,
    TaskSuccess, Usage,
};
use orchestrator_core::tenant::TenantId;
use orchestrator_core::workflow::Budget;
use orchestrator_store::executions::now_ms;
use orchestrator_store::responses::{CachedAnswer, ResponsesBackend};

mod policies;
mod prices;

use crate::quotas::TenantSpend;
use crate::rate_limits::RateLimits;
use orchestrator_sandbox::host_guard::AttemptId;

pub use policies::{PolicyHook, PolicyHooks};
pub use prices::{Price, Prices};

/// What a task's `cache:` keys its answers by.
#[derive(Debug, Clone)]
pub struct CacheRule {
    /// The plugin's digest: another build of it answers anew.
    pub digest: String,
    /// How long an answer is reused.
    pub ttl: Duration,
}

/// An executor whose answers are priced, cached where asked, and kept
/// within the run's budget.
#[derive(Debug)]
pub struct Governed<E> {
    inner: E,
    prices: Arc<Prices>,
    /// The response cache, and the tenant whose answers this run reads
    /// and writes: its keys start with it.
    cache: Option<(Arc<dyn ResponsesBackend>, TenantId)>,
    /// By plugin key (task id, or its fallback's key).
    rules: HashMap<String, CacheRule>,
    budget: Option<Budget>,
    spent: Mutex<Spent>,
    policies: PolicyHooks,
    /// The run's hold on its tenant's quota (`quotas:`).
    quota: Option<Arc<TenantSpend>>,
    /// Token rate limits to charge what each call used to, and the tenant.
    rate_limits: Option<(Arc<RateLimits>, TenantId)>,
}

/// What a run has spent, and what calls in flight are expected to.
#[derive(Debug, Default, Clone, Copy)]
struct Spent {
    tokens: u64,
    cost: f64,
    reserved_tokens: u64,
    reserved_cost: f64,
}

impl<E> Governed<E> {
    /// Prices what `inner` reports by `prices`; answers of the plugin keys
    /// in `rules` are kept in `cache`, among the answers of its tenant.
    pub fn new(
        inner: E,
        prices: Arc<Prices>,
        cache: Option<(Arc<dyn ResponsesBackend>, TenantId)>,
        rules: HashMap<String, CacheRule>,
    ) -> Self {
        Self {
            inner,
            prices,
            cache,
            rules,
            budget: None,
            spent: Mutex::default(),
            policies: PolicyHooks::default(),
            quota: None,
            rate_limits: None,
        }
    }

    /// The same executor, charging the tokens each call used to the token
    /// rate limits of the hosts it called, for the run's tenant.
    pub fn with_rate_limits(self, rate_limits: Option<(Arc<RateLimits>, TenantId)>) -> Self {
        Self {
            rate_limits,
            ..self
        }
    }

    /// The same executor, counting what its calls spend against its
    /// tenant's quota and refusing calls past it.
    pub fn with_quota(self, quota: Option<Arc<TenantSpend>>) -> Self {
        Self { quota, ..self }
    }

    /// The same executor, running `policies` around the calls they guard.
    pub fn with_policies(self, policies: PolicyHooks) -> Self {
        Self { policies, ..self }
    }

    /// The same executor, refusing calls past `budget`.
    pub fn with_budget(self, budget: Option<Budget>) -> Self {
        Self { budget, ..self }
    }

    /// Counts what an earlier process of this run spent (a resumed run):
    /// every task's usage, a `for_each` once with its items (or its
    /// finished items, when it did not finish).
    pub fn count_spent(&self, done: &[TaskReport]) {
        let finished: HashSet<&str> = done
            .iter()
            .filter(|r| !TaskRef::is_item(&r.id))
            .map(|r| r.id.as_str())
            .collect();
        let counted = done.iter().filter(|r| match TaskRef::parse(&r.id) {
            TaskRef::Item { task, .. } => !finished.contains(task),
            TaskRef::Task(_) => true,
        });
        if let Some(total) = Usage::total(counted.filter_map(|r| r.usage.as_ref())) {
            let mut spent = self.spent.lock().expect("budget lock");
            spent.tokens = spent
                .tokens
                .saturating_add(total.input_tokens.saturating_add(total.output_tokens));
            spent.cost += finite(total.cost_usd);
        }
    }

    /// Reserves `request`'s estimate, or says why the budget refuses it.
    fn reserve<'a>(
        &'a self,
        budget: &'a Budget,
        request: &TaskRequest,
    ) -> Result<BudgetHold<'a>, TaskFailure> {
        let (tokens, cost) = estimate(&request.input, &self.prices);
        let mut spent = self.spent.lock().expect("budget lock");
        let denied = |message: String| TaskFailure {
            kind: FailureKind::Denied,
            message,
            metering: Metering::default(),
        };
        if let Some(max) = budget.max_tokens {
            let committed = spent.tokens.saturating_add(spent.reserved_tokens);
            if tokens > 0 && committed.saturating_add(tokens) > max {
                return Err(denied(format!(
                    "refused by the workflow's budget before the call: the run has spent {} of its {max} tokens ({} more expected from calls in flight), and this call would take about {tokens} (its prompt and `max_tokens`); raise `budget.max_tokens`",
                    spent.tokens, spent.reserved_tokens
                )));
            }
        }
        if let Some(max) = budget.max_cost {
            let committed = spent.cost + spent.reserved_cost;
            if cost > 0.0 && committed + cost > max {
                return Err(denied(format!(
                    "refused by the workflow's budget before the call: the run has spent ${:.6} of its ${max}, and this call would cost about ${cost:.6}; raise `budget.max_cost`",
                    spent.cost
                )));
            }
        }
        spent.reserved_tokens = spent.reserved_tokens.saturating_add(tokens);
        spent.reserved_cost += cost;
        Ok(BudgetHold {
            spent: &self.spent,
            budget,
            tokens,
            cost,
            settled: false,
        })
    }

    /// Where the answer of `request` is cached, when its task caches
    /// answers.
    fn cached(&self, request: &TaskRequest) -> Option<CacheEntry> {
        let (cache, tenant) = self.cache.as_ref()?;
        let rule = self.rules.get(request.plugin_key().as_ref())?;
        let input: Value = serde_json::from_str(&request.input).ok()?;
        let mut hasher = Sha256::new();
        hasher.update(rule.digest.as_bytes());
        hasher.update(b"\n");
        hasher.update(canonical(&input).as_bytes());
        Some(CacheEntry {
            cache: Arc::clone(cache),
            tenant: tenant.as_str().to_owned(),
            key: orchestrator_sandbox::hex(&hasher.finalize().into()),
            ttl: rule.ttl,
        })
    }
}

/// A call's share of the run's budget, held while the call is in flight;
/// dropped unsettled (the call was cut off: cancelled, timed out), it is
/// given back.
struct BudgetHold<'a> {
    spent: &'a Mutex<Spent>,
    budget: &'a Budget,
    tokens: u64,
    cost: f64,
    settled: bool,
}

impl BudgetHold<'_> {
    /// Gives the hold back.
    fn release(&mut self, spent: &mut Spent) {
        if !self.settled {
            self.settled = true;
            spent.reserved_tokens = spent.reserved_tokens.saturating_sub(self.tokens);
            spent.reserved_cost = (spent.reserved_cost - self.cost).max(0.0);
        }
    }

    /// Gives the hold back and counts what the call spent; says why the
    /// budget refuses its answer when that passed a limit.
    fn settle(mut self, usage: Option<&Usage>) -> Result<(), String> {
        let spent_lock = self.spent;
        let mut spent = spent_lock.lock().expect("budget lock");
        self.release(&mut spent);
        let budget = self.budget;
        let Some(usage) = usage.filter(|u| !u.cached) else {
            return Ok(());
        };
        // Usage comes from a plugin (and a model server behind it): a
        // reported u64::MAX must fill the budget, not wrap it.
        let used = usage.input_tokens.saturating_add(usage.output_tokens);
        spent.tokens = spent.tokens.saturating_add(used);
        spent.cost += finite(usage.cost_usd);
        if let Some(max) = budget.max_tokens
            && spent.tokens > max
        {
            return Err(format!(
                "refused by the workflow's budget after the call: it used {used} tokens, which brings the run to {} of its {max}; its answer is not used. Raise `budget.max_tokens`",
                spent.tokens
            ));
        }
        if let Some(max) = budget.max_cost
            && spent.cost > max
        {
            return Err(format!(
                "refused by the workflow's budget after the call: it cost ${:.6}, which brings the run to ${:.6} of its ${max}; its answer is not used. Raise `budget.max_cost`",
                usage.cost_usd.unwrap_or(0.0),
                spent.cost
            ));
        }
        Ok(())
    }
}

impl Drop for BudgetHold<'_> {
    fn drop(&mut self) {
        if !self.settled {
            let spent = self.spent;
            self.release(&mut spent.lock().expect("budget lock"));
        }
    }
}

/// Where one request's answer is cached: the cache, the tenant whose
/// answers it is among, its key (the plugin's digest and the request), and
/// how long it is reused.
#[derive(Debug, Clone)]
struct CacheEntry {
    cache: Arc<dyn ResponsesBackend>,
    tenant: String,
    key: String,
    ttl: Duration,
}

impl<E: Executor> Executor for Governed<E> {
    async fn execute(&self, request: TaskRequest) -> Result<TaskSuccess, TaskFailure> {
        if !self.policies.guards(&request) {
            return self.governed(request).await;
        }
        let before = tracing::debug_span!("policy_check", stage = "before");
        let (request, verdicts) = self
            .policies
            .before(&self.inner, request)
            .instrument(before)
            .await?;
        let checked = request.clone();
        let success = self.governed(request).await?;
        let after = tracing::debug_span!("policy_check", stage = "after");
        self.policies
            .after(&self.inner, &checked, success, verdicts)
            .instrument(after)
            .await
    }
}

impl<E: Executor> Governed<E> {
    /// The call itself: from the cache, or within the budget, priced.
    async fn governed(&self, request: TaskRequest) -> Result<TaskSuccess, TaskFailure> {
        let cached = self.cached(&request);
        if let Some(entry) = cached.clone() {
            let ttl = u64::try_from(entry.ttl.as_millis()).unwrap_or(u64::MAX);
            let found = tokio::task::spawn_blocking(move || {
                entry.cache.get(&entry.tenant, &entry.key, now_ms(), ttl)
            })
            .await;
            match found {
                Ok(Ok(Some(hit))) => {
                    return Ok(TaskSuccess {
                        output: hit.output,
                        usage: Some(Usage {
                            input_tokens: 0,
                            output_tokens: 0,
                            model: hit.model,
                            provider: None,
                            cost_usd: Some(0.0),
                            cached: true,
                        }),
                        metering: Metering::default(),
                    });
                }
                Ok(Ok(None)) => {}
                Ok(Err(e)) => tracing::warn!("{e}; the task runs"),
                Err(e) => tracing::warn!("the response cache lookup failed: {e}; the task runs"),
            }
        }
        let held = match &self.budget {
            Some(budget) => Some(self.reserve(budget, &request)?),
            None => None,
        };
        let quota = match &self.quota {
            Some(quota) => {
                let (tokens, cost) = estimate(&request.input, &self.prices);
                match quota.reserve(tokens, cost) {
                    // Given back if this call is cut off before it settles.
                    Ok(reservation) => Some(reservation),
                    // The budget's hold is given back as it drops.
                    Err(message) => {
                        return Err(TaskFailure {
                            kind: FailureKind::Denied,
                            message,
                            metering: Metering::default(),
                        });
                    }
                }
            }
            None => None,
        };
        let attempt = AttemptId {
            execution: Arc::clone(&request.execution_id),
            task: request.task_id.clone(),
            attempt: request.attempt,
        };
        let result = self.inner.execute(request).await;
        if let Some((limits, tenant)) = &self.rate_limits {
            let used = result
                .as_ref()
                .ok()
                .and_then(|s| s.usage.as_ref())
                .map_or(0, |u| Consumption::from_parts(Some(u), 0).tokens);
            limits.charge(tenant, &attempt, used);
        }
        let mut success = match result {
            Ok(success) => success,
            Err(failure) => {
                drop(held);
                if let Some(reservation) = quota {
                    reservation.settle(Consumption::from_parts(None, failure.metering.fuel));
                }
                return Err(failure);
            }
        };
        if let Some(usage) = &mut success.usage
            && usage.cost_usd.is_none()
        {
            usage.cost_usd = self.prices.cost(usage);
        }
        if let Some(reservation) = quota {
            reservation.settle(Consumption::from_parts(
                success.usage.as_ref(),
                success.metering.fuel,
            ));
        }
        if let Some(hold) = held
            && let Err(message) = hold.settle(success.usage.as_ref())
        {
            return Err(TaskFailure {
                kind: FailureKind::Denied,
                message,
                metering: success.metering,
            });
        }
        if let Some(entry) = cached {
            let answer = CachedAnswer {
                output: success.output.clone(),
                model: success.usage.as_ref().and_then(|u| u.model.clone()),
                stored_at: now_ms(),
            };
            let stored = tokio::task::spawn_blocking(move || {
                entry.cache.put(&entry.tenant, &entry.key, &answer)
            })
            .await;
            if let Ok(Err(e)) = stored {
                tracing::warn!("{e}; the answer was not cached");
            }
        }
        Ok(success)
    }
}

/// The tokens (and dollars, when its model has a price) a call is expected
/// to take, from its `with:`: a quarter token per character of `prompt`,
/// `system` and `messages[].content`, plus `max_tokens`. Nothing for a
/// task whose input holds no prompt (it is not a model call).
fn estimate(input: &str, prices: &Prices) -> (u64, f64) {
    let Ok(Value::Object(input)) = serde_json::from_str::<Value>(input) else {
        return (0, 0.0);
    };
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map_or(0, |s| s.chars().count());
    let mut chars = text(input.get("prompt")) + text(input.get("system"));
    let messages = input.get("messages").and_then(Value::as_array);
    for message in messages.into_iter().flatten() {
        chars += text(message.get("content"));
    }
    if chars == 0 {
        return (0, 0.0);
    }
    let prompt = (chars as u64).div_ceil(4);
    let answer = input.get("max_tokens").and_then(Value::as_u64).unwrap_or(0);
    let tokens = prompt.saturating_add(answer);
    let cost = input
        .get("model")
        .and_then(Value::as_str)
        .and_then(|m| prices.price(m))
        .map_or(0.0, |p| {
            (prompt as f64 * p.input + answer as f64 * p.output) / 1e6
        });
    (tokens, cost)
}

/// A reported cost as a number a budget can add: never negative, NaN or infinite.
fn finite(cost: Option<f64>) -> f64 {
    cost.filter(|c| c.is_finite() && *c > 0.0).unwrap_or(0.0)
}

/// JSON text with every object's keys sorted, so equal values give equal
/// text whatever order they were written in.
fn canonical(value: &Value) -> String {
    fn sorted(value: &Value) -> Value {
        match value {
            Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                Value::Object(
                    keys.into_iter()
                        .map(|k| (k.clone(), sorted(&map[k])))
                        .collect(),
                )
            }
            Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    sorted(value).to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use std::collections::BTreeMap;

    use super::*;

    #[test]
    fn canonical_json_ignores_key_order() {
        let a: Value =
            serde_json::from_str(r#"{"b":1,"a":{"y":[1,{"q":0,"p":1}],"x":2}}"#).unwrap();
        let b: Value =
            serde_json::from_str(r#"{"a":{"x":2,"y":[1,{"p":1,"q":0}]},"b":1}"#).unwrap();
        assert_eq!(canonical(&a), canonical(&b));
        assert_ne!(canonical(&a), canonical(&serde_json::json!({ "b": 2 })));
    }

    #[test]
    fn a_call_is_estimated_from_its_prompt_and_max_tokens() {
        let prices = Prices::new(BTreeMap::from([(
            "gpt-4o".to_owned(),
            Price {
                input: 2.5,
                output: 10.0,
            },
        )]))
        .unwrap();
        let input = r#"{"model":"gpt-4o","system":"abcd","prompt":"12345678","max_tokens":10}"#;
        // 12 characters are 3 tokens; 10 more may come back.
        assert_eq!(
            estimate(input, &prices),
            (13, (3.0 * 2.5 + 10.0 * 10.0) / 1e6)
        );
        assert_eq!(estimate(r#"{"script":"1 + 1"}"#, &prices), (0, 0.0));
    }
}
