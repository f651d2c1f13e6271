//! What model calls cost, and answers worth keeping. [`Prices`] is the
//! configuration's price table (US dollars per million input and output
//! tokens, by model name, `*` at the end of a name matching any suffix).
//! [`Governed`] wraps a run's executor: it answers tasks with a `cache:`
//! from the response cache when it holds the same request (the plugin's
//! digest and the task's resolved `with:`, JSON keys sorted), stores their
//! fresh answers there, and puts a price on the usage each answer reports,
//! so task reports, execution files and `runtime status` carry the cost as
//! it was when the call was made. A cache hit spends nothing and says so.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::scheduler::{Executor, Metering, TaskFailure, TaskRequest, TaskSuccess, Usage};
use crate::store::executions::now_ms;
use crate::store::responses::{CachedAnswer, ResponseCache};

/// The price of one model.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// US dollars per million tokens sent.
    pub input: f64,
    /// US dollars per million tokens produced.
    pub output: f64,
}

/// Prices by model name.
#[derive(Debug, Clone, Default)]
pub struct Prices {
    by_model: BTreeMap<String, Price>,
}

impl Prices {
    /// The table as the configuration gives it; a negative or non-finite
    /// price is refused, naming the model.
    pub fn new(by_model: BTreeMap<String, Price>) -> Result<Self, String> {
        for (model, price) in &by_model {
            for (what, value) in [("input", price.input), ("output", price.output)] {
                if !value.is_finite() || value < 0.0 {
                    return Err(format!(
                        "price of `{model}`: `{what}` must be a number of dollars per million tokens, at least 0"
                    ));
                }
            }
        }
        Ok(Self { by_model })
    }

    /// The price of `model`: its own entry, else the longest `prefix*`
    /// entry it starts with.
    pub fn price(&self, model: &str) -> Option<Price> {
        if let Some(price) = self.by_model.get(model) {
            return Some(*price);
        }
        self.by_model
            .iter()
            .filter_map(|(pattern, price)| {
                let prefix = pattern.strip_suffix('*')?;
                model.starts_with(prefix).then_some((prefix.len(), *price))
            })
            .max_by_key(|(len, _)| *len)
            .map(|(_, price)| price)
    }

    /// What `usage` cost, if its model has a price.
    pub fn cost(&self, usage: &Usage) -> Option<f64> {
        let price = self.price(usage.model.as_deref()?)?;
        Some(
            (usage.input_tokens as f64 * price.input + usage.output_tokens as f64 * price.output)
                / 1e6,
        )
    }
}

/// What a task's `cache:` keys its answers by.
#[derive(Debug, Clone)]
pub struct CacheRule {
    /// The plugin's digest: another build of it answers anew.
    pub digest: String,
    /// How long an answer is reused.
    pub ttl: Duration,
}

/// An executor whose answers are priced, and cached where asked.
#[derive(Debug)]
pub struct Governed<E> {
    inner: E,
    prices: Arc<Prices>,
    cache: Option<Arc<ResponseCache>>,
    /// By plugin key (task id, or its fallback's key).
    rules: HashMap<String, CacheRule>,
}

impl<E> Governed<E> {
    /// Prices what `inner` reports by `prices`; answers of the plugin keys
    /// in `rules` are kept in `cache`.
    pub fn new(
        inner: E,
        prices: Arc<Prices>,
        cache: Option<Arc<ResponseCache>>,
        rules: HashMap<String, CacheRule>,
    ) -> Self {
        Self {
            inner,
            prices,
            cache,
            rules,
        }
    }

    /// The cache and the key of `request`, when its task caches answers.
    fn cached(&self, request: &TaskRequest) -> Option<(Arc<ResponseCache>, String, Duration)> {
        let cache = self.cache.as_ref()?;
        let rule = self.rules.get(request.plugin_key().as_ref())?;
        let input: Value = serde_json::from_str(&request.input).ok()?;
        let mut hasher = Sha256::new();
        hasher.update(rule.digest.as_bytes());
        hasher.update(b"\n");
        hasher.update(canonical(&input).as_bytes());
        let key = crate::sandbox::hex(&hasher.finalize().into());
        Some((Arc::clone(cache), key, rule.ttl))
    }
}

impl<E: Executor> Executor for Governed<E> {
    async fn execute(&self, request: TaskRequest) -> Result<TaskSuccess, TaskFailure> {
        let cached = self.cached(&request);
        if let Some((cache, key, ttl)) = &cached {
            let (cache, key) = (Arc::clone(cache), key.clone());
            let ttl = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
            let found = tokio::task::spawn_blocking(move || cache.get(&key, now_ms(), ttl)).await;
            match found {
                Ok(Ok(Some(hit))) => {
                    return Ok(TaskSuccess {
                        output: hit.output,
                        usage: Some(Usage {
                            input_tokens: 0,
                            output_tokens: 0,
                            model: hit.model,
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
        let mut success = self.inner.execute(request).await?;
        if let Some(usage) = &mut success.usage
            && usage.cost_usd.is_none()
        {
            usage.cost_usd = self.prices.cost(usage);
        }
        if let Some((cache, key, _)) = cached {
            let answer = CachedAnswer {
                output: success.output.clone(),
                model: success.usage.as_ref().and_then(|u| u.model.clone()),
                stored_at: now_ms(),
            };
            let stored = tokio::task::spawn_blocking(move || cache.put(&key, &answer)).await;
            if let Ok(Err(e)) = stored {
                tracing::warn!("{e}; the answer was not cached");
            }
        }
        Ok(success)
    }
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
    use super::*;

    fn prices() -> Prices {
        let price = |input, output| Price { input, output };
        Prices::new(BTreeMap::from([
            ("gpt-4o".to_owned(), price(2.5, 10.0)),
            ("gpt-4o-mini".to_owned(), price(0.15, 0.6)),
            ("claude-*".to_owned(), price(3.0, 15.0)),
            ("claude-3-haiku*".to_owned(), price(0.25, 1.25)),
        ]))
        .expect("valid prices")
    }

    fn usage(model: &str, input: u64, output: u64) -> Usage {
        Usage {
            input_tokens: input,
            output_tokens: output,
            model: Some(model.to_owned()),
            cost_usd: None,
            cached: false,
        }
    }

    #[test]
    fn usage_is_priced_by_exact_name_then_longest_prefix() {
        let p = prices();
        let cost = |m, i, o| p.cost(&usage(m, i, o));
        assert_eq!(cost("gpt-4o-mini", 1_000_000, 0), Some(0.15));
        assert_eq!(cost("gpt-4o", 0, 1_000_000), Some(10.0));
        assert_eq!(cost("claude-3-haiku-20240307", 1_000_000, 0), Some(0.25));
        assert_eq!(cost("claude-sonnet-4", 1_000_000, 0), Some(3.0));
        assert_eq!(cost("llama3", 10, 10), None);
    }

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
    fn negative_prices_are_refused() {
        let error = Prices::new(BTreeMap::from([(
            "m".to_owned(),
            Price {
                input: -1.0,
                output: 0.0,
            },
        )]))
        .unwrap_err();
        assert!(error.contains("price of `m`: `input`"), "{error}");
    }
}
