//! The built-in `policy` executor: checks a text and says `allow`, `deny` or
//! `redact`, with its reasons.
//!
//! `with:`: `text` (what to check: a prompt, an answer) and the checks, all
//! optional: `pii` (kinds to find: `email`, `phone`, `card`, `iban`,
//! `api_key`; `true` for all), `on_pii` (`redact`, the default, or `deny`),
//! `deny` (patterns that must not match), `allow` (patterns of which one
//! must match), `max_length` (characters), `max_tokens` (estimated at four
//! characters a token) and `json` (`true`: the text must be JSON; a JSON
//! Schema: the text must be JSON that conforms to it).
//!
//! The output is `{ outcome, text, reasons, findings }`, where `text` is the
//! redacted text when the outcome is `redact`. A `deny` is an output too
//! (so a pipeline can route on it) unless `fail_on_deny: true`, which makes
//! it a `denied` task error instead.

mod pii;

use std::collections::BTreeMap;

use orchestrator_sdk::{Context, Error, Info, Plugin, Value, export_plugin, json, schema};
use regex::Regex;
use serde::{Deserialize, Serialize};

use pii::Kind;

/// The task's `with:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    text: String,
    #[serde(default)]
    pii: Option<PiiSpec>,
    #[serde(default)]
    on_pii: OnPii,
    #[serde(default)]
    deny: Vec<String>,
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    max_length: Option<usize>,
    #[serde(default)]
    max_tokens: Option<usize>,
    #[serde(default)]
    json: Option<JsonSpec>,
    #[serde(default)]
    fail_on_deny: bool,
}

/// `pii: true` or a list of kinds.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum PiiSpec {
    All(bool),
    Kinds(Vec<String>),
}

/// What found personal data does to the outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum OnPii {
    #[default]
    Redact,
    Deny,
}

/// `json: true`, or `json: <a JSON Schema>`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum JsonSpec {
    Plain(bool),
    Schema(Value),
}

/// The verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Nothing to object to.
    Allow,
    /// The text may not go on.
    Deny,
    /// It may go on as `text` (personal data masked).
    Redact,
}

/// The task's output.
#[derive(Debug, Serialize)]
pub struct Output {
    outcome: Outcome,
    /// The text to use: redacted when the outcome is `redact`.
    text: String,
    /// Why, one line per check that objected.
    reasons: Vec<String>,
    /// How many of each kind of personal data were found.
    findings: BTreeMap<&'static str, usize>,
}

/// Checks text against policies.
pub struct Policy;

impl Plugin for Policy {
    type Input = Input;
    type Output = Output;

    fn info() -> Info {
        Info::new(
            "policy",
            env!("CARGO_PKG_VERSION"),
            "Checks text for personal data, forbidden patterns, length and JSON shape; allows, denies or redacts it.",
        )
        .input_schema(json!({
            "type": "object",
            "required": ["text"],
            "properties": {
                "text": { "type": "string" },
                "pii": {},
                "on_pii": { "enum": ["redact", "deny"] },
                "deny": { "type": "array", "items": { "type": "string" } },
                "allow": { "type": "array", "items": { "type": "string" } },
                "max_length": { "type": "integer" },
                "max_tokens": { "type": "integer" },
                "json": {},
                "fail_on_deny": { "type": "boolean" }
            }
        }))
        .output_schema(json!({
            "type": "object",
            "required": ["outcome", "text", "reasons", "findings"]
        }))
    }

    fn initialize() {
        pii::warm();
        schema::warm();
    }

    fn execute(_: &Context, input: Input) -> Result<Output, Error> {
        let output = check(&input)?;
        if output.outcome == Outcome::Deny && input.fail_on_deny {
            return Err(Error::Denied(format!(
                "the policy denied the text: {}",
                output.reasons.join("; ")
            )));
        }
        Ok(output)
    }
}

/// Runs every check the input asks for.
fn check(input: &Input) -> Result<Output, Error> {
    let text = &input.text;
    let mut denials = Vec::new();
    let compile = |pattern: &String| {
        Regex::new(pattern)
            .map_err(|e| Error::InvalidInput(format!("pattern `{pattern}` does not compile: {e}")))
    };
    for pattern in &input.deny {
        if let Some(m) = compile(pattern)?.find(text) {
            denials.push(format!(
                "matches the denied pattern `{pattern}` (`{}`)",
                m.as_str()
            ));
        }
    }
    if !input.allow.is_empty() {
        let allowed = input
            .allow
            .iter()
            .map(compile)
            .collect::<Result<Vec<_>, _>>()?;
        if !allowed.iter().any(|r| r.is_match(text)) {
            denials.push(format!(
                "matches none of the allowed patterns ({})",
                input.allow.join(", ")
            ));
        }
    }
    let length = text.chars().count();
    if let Some(max) = input.max_length
        && length > max
    {
        denials.push(format!("is {length} characters long, more than {max}"));
    }
    if let Some(max) = input.max_tokens {
        let tokens = length.div_ceil(4);
        if tokens > max {
            denials.push(format!("is about {tokens} tokens long, more than {max}"));
        }
    }
    if let Some(spec) = &input.json
        && let Some(problem) = json_problem(text, spec)?
    {
        denials.push(problem);
    }

    let kinds = pii_kinds(input.pii.as_ref())?;
    let findings = pii::find(text, &kinds);
    let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    for finding in &findings {
        *counts.entry(finding.kind.name()).or_default() += 1;
    }
    let found: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
    let mut reasons = denials.clone();
    let outcome = if !denials.is_empty() {
        Outcome::Deny
    } else if findings.is_empty() {
        Outcome::Allow
    } else if input.on_pii == OnPii::Deny {
        reasons.push(format!("holds personal data ({})", found.join(", ")));
        Outcome::Deny
    } else {
        reasons.push(format!("personal data masked ({})", found.join(", ")));
        Outcome::Redact
    };
    let text = if outcome == Outcome::Redact {
        pii::redact(text, &findings)
    } else {
        text.clone()
    };
    Ok(Output {
        outcome,
        text,
        reasons,
        findings: counts,
    })
}

fn pii_kinds(spec: Option<&PiiSpec>) -> Result<Vec<Kind>, Error> {
    match spec {
        None | Some(PiiSpec::All(false)) => Ok(Vec::new()),
        Some(PiiSpec::All(true)) => Ok(Kind::ALL.to_vec()),
        Some(PiiSpec::Kinds(names)) => names
            .iter()
            .map(|name| {
                Kind::parse(name).ok_or_else(|| {
                    Error::InvalidInput(format!(
                        "`pii: {name}` is not one of email, phone, card, iban, api_key"
                    ))
                })
            })
            .collect(),
    }
}

/// Why the text is not the JSON asked for, if it is not.
fn json_problem(text: &str, spec: &JsonSpec) -> Result<Option<String>, Error> {
    let schema = match spec {
        JsonSpec::Plain(false) => return Ok(None),
        JsonSpec::Plain(true) => None,
        JsonSpec::Schema(schema) => Some(schema),
    };
    let value: Value = match serde_json::from_str(text.trim()) {
        Ok(value) => value,
        Err(e) => return Ok(Some(format!("is not JSON ({e})"))),
    };
    let Some(schema) = schema else {
        return Ok(None);
    };
    let problems = schema::violations(schema, &value)
        .map_err(|e| Error::InvalidInput(format!("the JSON Schema is not valid: {e}")))?;
    Ok(problems.map(|p| format!("does not fit the JSON Schema: {p}")))
}

export_plugin!(Policy);

#[cfg(test)]
mod tests {
    use super::*;

    fn run(with: Value) -> Output {
        check(&serde_json::from_value(with).unwrap()).unwrap()
    }

    #[test]
    fn personal_data_is_redacted_or_denied() {
        let out = run(json!({ "text": "mail ada@example.org", "pii": true }));
        assert_eq!(out.outcome, Outcome::Redact);
        assert_eq!(out.text, "mail [EMAIL]");
        assert_eq!(out.findings["email"], 1);
        let out =
            run(json!({ "text": "mail ada@example.org", "pii": ["email"], "on_pii": "deny" }));
        assert_eq!(out.outcome, Outcome::Deny);
        assert_eq!(out.text, "mail ada@example.org");
        let out = run(json!({ "text": "mail ada@example.org", "pii": ["card"] }));
        assert_eq!(out.outcome, Outcome::Allow);
    }

    #[test]
    fn patterns_length_and_json_deny_with_reasons() {
        let out = run(json!({
            "text": "drop table users",
            "deny": ["(?i)drop\\s+table"],
            "allow": ["^select"],
            "max_length": 5,
            "json": true
        }));
        assert_eq!(out.outcome, Outcome::Deny);
        assert_eq!(out.reasons.len(), 4, "{:?}", out.reasons);
        assert!(out.reasons[0].contains("`drop table`"));
        let schema = json!({ "type": "object", "required": ["answer"], "properties": { "answer": { "type": "integer" } } });
        let out = run(json!({ "text": "{\"answer\": 1}", "json": schema }));
        assert_eq!(out.outcome, Outcome::Allow);
        let out = run(json!({ "text": "{\"answer\": \"one\"}", "json": schema }));
        assert_eq!(out.outcome, Outcome::Deny);
        assert!(out.reasons[0].contains("/answer"), "{:?}", out.reasons);
    }

    #[test]
    fn a_bad_pattern_is_invalid_input() {
        let input: Input = serde_json::from_value(json!({ "text": "x", "deny": ["("] })).unwrap();
        assert!(matches!(check(&input), Err(Error::InvalidInput(m)) if m.contains("`(`")));
    }
}
