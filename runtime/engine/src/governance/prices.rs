//! The price table of the configuration (`prices:`): US dollars per
//! million input and output tokens, by model name, `*` at the end of a
//! name matching any suffix.

use std::collections::BTreeMap;

use serde::Deserialize;

use orchestrator_core::scheduler::Usage;

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

#[cfg(test)]
mod tests {
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
            provider: None,
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
