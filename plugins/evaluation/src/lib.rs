//! The built-in `evaluation` executor: scores an output with metrics, each
//! with a pass threshold.
//!
//! `with:`: `output` (what is judged: text, or any JSON value), `expected`
//! (the reference, for the metrics that compare), `metrics` (a list: a
//! name, or `{ metric, threshold, ... }`), and `require_pass` (a failed
//! evaluation fails the task, `fatal`, instead of reporting it).
//!
//! Metrics, each scoring 0 to 1: `exact_match` (trimmed text equals
//! `expected`), `contains` (`value`, else `expected`, occurs in the text),
//! `regex` (`pattern` matches), `json_valid`, `json_schema` (`schema`),
//! `levenshtein` (normalized similarity to `expected`), `rouge_l`, `bleu`,
//! and `numeric` (the first number in the text is within `tolerance` of
//! `expected`). Thresholds default to 1 for the yes/no metrics, 0.8 for
//! `levenshtein`, 0.5 for `rouge_l` and 0.3 for `bleu`.
//!
//! The output is `{ passed, score, scores: [{ metric, score, threshold,
//! passed, detail? }] }`; `score` is the mean.

mod text;

use std::sync::LazyLock;

use orchestrator_sdk::{Context, Error, Info, Plugin, Value, export_plugin, json, schema};
use serde::{Deserialize, Serialize};

/// The task's `with:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    output: Value,
    #[serde(default)]
    expected: Option<Value>,
    metrics: Vec<MetricSpec>,
    #[serde(default)]
    require_pass: bool,
}

/// A metric as written: its name, or its settings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum MetricSpec {
    Name(String),
    Full(Metric),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Metric {
    metric: String,
    #[serde(default)]
    threshold: Option<f64>,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    pattern: Option<String>,
    #[serde(default)]
    schema: Option<Value>,
    #[serde(default)]
    tolerance: Option<f64>,
}

/// One metric's result.
#[derive(Debug, Serialize)]
pub struct Score {
    metric: String,
    score: f64,
    threshold: f64,
    passed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

/// The task's output.
#[derive(Debug, Serialize)]
pub struct Output {
    passed: bool,
    score: f64,
    scores: Vec<Score>,
}

/// Scores outputs.
pub struct Evaluation;

impl Plugin for Evaluation {
    type Input = Input;
    type Output = Output;

    fn info() -> Info {
        Info::new(
            "evaluation",
            env!("CARGO_PKG_VERSION"),
            "Scores an output against a reference or rules: exact match, contains, regex, JSON, JSON Schema, Levenshtein, ROUGE-L, BLEU, numeric tolerance.",
        )
        .input_schema(json!({
            "type": "object",
            "required": ["output", "metrics"],
            "properties": {
                "output": {},
                "expected": {},
                "metrics": { "type": "array" },
                "require_pass": { "type": "boolean" }
            }
        }))
        .output_schema(json!({
            "type": "object",
            "required": ["passed", "score", "scores"]
        }))
    }

    fn initialize() {
        let _ = first_number("score: 4.5 of 5");
        schema::warm();
    }

    fn execute(_: &Context, input: Input) -> Result<Output, Error> {
        evaluate(&input)
    }
}

/// Scores `input.output` with every metric.
fn evaluate(input: &Input) -> Result<Output, Error> {
    if input.metrics.is_empty() {
        return Err(Error::InvalidInput(
            "`metrics` is empty: name at least one".into(),
        ));
    }
    let scores = input
        .metrics
        .iter()
        .map(|spec| score(spec, input))
        .collect::<Result<Vec<_>, _>>()?;
    let passed = scores.iter().all(|s| s.passed);
    let mean = scores.iter().map(|s| s.score).sum::<f64>() / scores.len() as f64;
    if input.require_pass && !passed {
        let failed: Vec<String> = scores
            .iter()
            .filter(|s| !s.passed)
            .map(|s| format!("{} {:.2} < {}", s.metric, s.score, s.threshold))
            .collect();
        return Err(Error::Fatal(format!(
            "the evaluation failed: {}",
            failed.join(", ")
        )));
    }
    Ok(Output {
        passed,
        score: mean,
        scores,
    })
}

/// Text of a JSON value: a string as it is, anything else as JSON.
fn as_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn score(spec: &MetricSpec, input: &Input) -> Result<Score, Error> {
    let bare;
    let metric = match spec {
        MetricSpec::Name(name) => {
            bare = Metric {
                metric: name.clone(),
                threshold: None,
                value: None,
                pattern: None,
                schema: None,
                tolerance: None,
            };
            &bare
        }
        MetricSpec::Full(metric) => metric,
    };
    let output = as_text(&input.output);
    let name = metric.metric.as_str();
    let expected = || {
        input.expected.as_ref().map(as_text).ok_or_else(|| {
            Error::InvalidInput(format!(
                "metric `{name}` compares with `expected`, which is not given"
            ))
        })
    };
    let yes_no = |ok: bool| f64::from(u8::from(ok));
    let mut detail = None;
    let (score, default_threshold) = match name {
        "exact_match" => (yes_no(output.trim() == expected()?.trim()), 1.0),
        "contains" => {
            let needle = match &metric.value {
                Some(value) => value.clone(),
                None => expected()?,
            };
            (yes_no(output.contains(&needle)), 1.0)
        }
        "regex" => {
            let pattern = metric
                .pattern
                .as_deref()
                .ok_or_else(|| Error::InvalidInput("metric `regex` needs a `pattern`".into()))?;
            let regex = regex::Regex::new(pattern).map_err(|e| {
                Error::InvalidInput(format!("pattern `{pattern}` does not compile: {e}"))
            })?;
            (yes_no(regex.is_match(&output)), 1.0)
        }
        "json_valid" => {
            let parsed = json_of(&input.output);
            if let Err(e) = &parsed {
                detail = Some(e.clone());
            }
            (yes_no(parsed.is_ok()), 1.0)
        }
        "json_schema" => {
            let schema = metric.schema.as_ref().ok_or_else(|| {
                Error::InvalidInput("metric `json_schema` needs a `schema`".into())
            })?;
            let problem = match json_of(&input.output) {
                Ok(value) => schema::violations(schema, &value).map_err(|e| {
                    Error::InvalidInput(format!("`schema` is not a valid JSON Schema: {e}"))
                })?,
                Err(e) => Some(e),
            };
            let ok = problem.is_none();
            detail = problem;
            (yes_no(ok), 1.0)
        }
        "levenshtein" => (text::levenshtein_similarity(&output, &expected()?), 0.8),
        "rouge_l" => (text::rouge_l(&output, &expected()?), 0.5),
        "bleu" => (text::bleu(&output, &expected()?), 0.3),
        "numeric" => {
            let want = first_number(&expected()?).ok_or_else(|| {
                Error::InvalidInput("`expected` of metric `numeric` holds no number".into())
            })?;
            let tolerance = metric.tolerance.unwrap_or(0.0);
            match first_number(&output) {
                Some(got) => {
                    detail = Some(format!("{got} against {want} ± {tolerance}"));
                    (yes_no((got - want).abs() <= tolerance), 1.0)
                }
                None => {
                    detail = Some("the output holds no number".into());
                    (0.0, 1.0)
                }
            }
        }
        other => {
            return Err(Error::InvalidInput(format!(
                "unknown metric `{other}`; use exact_match, contains, regex, json_valid, json_schema, levenshtein, rouge_l, bleu or numeric"
            )));
        }
    };
    let threshold = metric.threshold.unwrap_or(default_threshold);
    Ok(Score {
        metric: name.to_owned(),
        score,
        threshold,
        passed: score >= threshold,
        detail,
    })
}

/// The output as JSON: a string is parsed, anything else already is.
fn json_of(output: &Value) -> Result<Value, String> {
    match output {
        Value::String(text) => {
            serde_json::from_str(text.trim()).map_err(|e| format!("not JSON: {e}"))
        }
        other => Ok(other.clone()),
    }
}

/// A number as written in text, compiled once per instance (by
/// `initialize`, before the host's snapshot).
static NUMBER: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?").expect("the pattern compiles")
});

/// The first number written in a text.
fn first_number(text: &str) -> Option<f64> {
    NUMBER.find(text)?.as_str().parse().ok()
}

export_plugin!(Evaluation);

#[cfg(test)]
mod tests {
    use super::*;

    fn run(with: Value) -> Result<Output, Error> {
        evaluate(&serde_json::from_value(with).unwrap())
    }

    fn scores(out: &Output) -> Vec<(&str, f64, bool)> {
        out.scores
            .iter()
            .map(|s| {
                (
                    s.metric.as_str(),
                    (s.score * 1000.0).round() / 1000.0,
                    s.passed,
                )
            })
            .collect()
    }

    #[test]
    fn every_metric_scores_and_passes_by_its_threshold() {
        let out = run(json!({
            "output": "The answer is 42.",
            "expected": "The answer is 42.",
            "metrics": [
                "exact_match",
                { "metric": "contains", "value": "42" },
                { "metric": "regex", "pattern": "^The" },
                "levenshtein",
                "rouge_l",
                "bleu",
                { "metric": "numeric", "tolerance": 0.5 }
            ]
        }))
        .unwrap();
        assert!(out.passed);
        assert!(
            out.scores.iter().all(|s| s.score > 0.99),
            "{:?}",
            scores(&out)
        );

        let out = run(json!({
            "output": "{\"score\": \"high\"}",
            "expected": "40",
            "metrics": [
                "json_valid",
                { "metric": "json_schema", "schema": { "properties": { "score": { "type": "number" } } } },
                "numeric"
            ]
        }))
        .unwrap();
        assert!(!out.passed);
        assert_eq!(
            scores(&out),
            [
                ("json_valid", 1.0, true),
                ("json_schema", 0.0, false),
                ("numeric", 0.0, false)
            ]
        );
        assert!(out.scores[1].detail.as_deref().unwrap().contains("/score"));
    }

    #[test]
    fn a_required_pass_fails_the_task_and_bad_metrics_are_invalid_input() {
        let failed = run(json!({
            "output": "no", "expected": "yes", "metrics": ["exact_match"], "require_pass": true
        }));
        assert!(matches!(failed, Err(Error::Fatal(m)) if m.contains("exact_match 0.00 < 1")));
        let unknown = run(json!({ "output": "x", "metrics": ["vibes"] }));
        assert!(
            matches!(unknown, Err(Error::InvalidInput(m)) if m.contains("unknown metric `vibes`"))
        );
        let missing = run(json!({ "output": "x", "metrics": ["bleu"] }));
        assert!(matches!(missing, Err(Error::InvalidInput(m)) if m.contains("`expected`")));
    }
}
