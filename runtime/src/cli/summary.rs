//! What a run's task reports add up to, in words: tokens and cost, and the
//! verdicts of evaluation and policy tasks (recognised by the shape of
//! their output: `{ passed, scores }` and `{ outcome, reasons }`), and of
//! the workflow's `policies:` around model calls (an output's `policies`).

use serde_json::Value;

use orchestrator_engine::scheduler::{TaskRef, TaskReport, Usage};

/// Tokens and cost of a task, or of a whole run.
pub(super) fn usage_text(usage: &Usage) -> String {
    if usage.cached && usage.input_tokens == 0 && usage.output_tokens == 0 {
        return "cached: no tokens spent".to_owned();
    }
    let cost = usage
        .cost_usd
        .map_or_else(|| ", no price".to_owned(), |c| format!(", ${c:.6}"));
    format!(
        "tokens {} in, {} out{cost}",
        usage.input_tokens, usage.output_tokens
    )
}

/// The usage of every task of a run that reported any (a `for_each`
/// counts once, with its items), and how many answers came from the cache.
pub(super) fn run_usage(tasks: &[TaskReport]) -> Option<String> {
    let total = run_total(tasks)?;
    let hits = tasks
        .iter()
        .filter(|t| !TaskRef::is_item(&t.id))
        .filter(|t| t.usage.as_ref().is_some_and(|u| u.cached))
        .count();
    let cached = if hits > 0 {
        format!("; {hits} answered from the cache")
    } else {
        String::new()
    };
    Some(format!("{}{cached}", usage_text(&total)))
}

/// What a run's tasks used together (a `for_each` once, with its items).
pub(super) fn run_total(tasks: &[TaskReport]) -> Option<Usage> {
    let total = Usage::total(
        tasks
            .iter()
            .filter(|t| !TaskRef::is_item(&t.id))
            .filter_map(|t| t.usage.as_ref()),
    )?;
    Some(Usage {
        cached: false,
        ..total
    })
}

/// One line per evaluation or policy task (a `for_each` of them counted
/// over its items), then one line adding the evaluations up.
pub(super) fn verdicts(tasks: &[TaskReport]) -> Vec<String> {
    let mut lines = Vec::new();
    let (mut passed, mut failed) = (0, 0);
    for task in tasks.iter().filter(|t| !TaskRef::is_item(&t.id)) {
        let outputs: Vec<&Value> = match &task.output {
            Some(Value::Array(items)) => items.iter().collect(),
            Some(output) => vec![output],
            None => continue,
        };
        let evaluations: Vec<&Value> = outputs
            .iter()
            .copied()
            .filter(|o| o["passed"].is_boolean() && o["scores"].is_array())
            .collect();
        if !evaluations.is_empty() {
            let ok = evaluations.iter().filter(|o| o["passed"] == true).count();
            passed += ok;
            failed += evaluations.len() - ok;
            lines.push(format!("evaluation {}: {}", task.id, scores(&evaluations)));
        }
        let policies: Vec<&Value> = outputs
            .iter()
            .copied()
            .filter(|o| o["outcome"].is_string() && o["reasons"].is_array())
            .collect();
        if !policies.is_empty() {
            lines.push(format!("policy {}: {}", task.id, outcomes(&policies)));
        }
        let guarded: Vec<&Value> = outputs
            .iter()
            .flat_map(|o| o["policies"].as_array().into_iter().flatten())
            .collect();
        if !guarded.is_empty() {
            lines.push(format!("policies {}: {}", task.id, stages(&guarded)));
        }
    }
    if passed + failed > 0 {
        lines.push(format!("evaluations: {passed} passed, {failed} failed"));
    }
    lines
}

/// `rouge_l 0.42 < 0.5 (failed), bleu 0.61`: each metric's mean score
/// over the outputs, and whether all passed.
fn scores(evaluations: &[&Value]) -> String {
    let mut metrics: Vec<(String, f64, f64, bool, usize)> = Vec::new();
    for evaluation in evaluations {
        for score in evaluation["scores"].as_array().into_iter().flatten() {
            let name = score["metric"].as_str().unwrap_or("?").to_owned();
            let value = score["score"].as_f64().unwrap_or(0.0);
            let threshold = score["threshold"].as_f64().unwrap_or(0.0);
            let ok = score["passed"] == true;
            match metrics.iter_mut().find(|m| m.0 == name) {
                Some(m) => {
                    m.1 += value;
                    m.3 &= ok;
                    m.4 += 1;
                }
                None => metrics.push((name, value, threshold, ok, 1)),
            }
        }
    }
    metrics
        .iter()
        .map(|(name, sum, threshold, ok, n)| {
            let mean = sum / *n as f64;
            if *ok {
                format!("{name} {mean:.2}")
            } else {
                format!("{name} {mean:.2} (below {threshold} in some)")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `before redact (personal data masked (1 email)), after allow`: what the
/// workflow's `policies:` said around a model call (counted over a
/// `for_each`'s calls).
fn stages(verdicts: &[&Value]) -> String {
    let mut seen: Vec<(String, usize)> = Vec::new();
    for verdict in verdicts {
        let reasons: Vec<&str> = verdict["reasons"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let mut line = format!(
            "{} {}",
            verdict["stage"].as_str().unwrap_or("?"),
            verdict["outcome"].as_str().unwrap_or("?")
        );
        if !reasons.is_empty() {
            line.push_str(&format!(" ({})", reasons.join("; ")));
        }
        match seen.iter_mut().find(|(l, _)| *l == line) {
            Some((_, n)) => *n += 1,
            None => seen.push((line, 1)),
        }
    }
    seen.into_iter()
        .map(|(line, n)| if n > 1 { format!("{line} x{n}") } else { line })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `redact: personal data masked (1 email)`, or counts of each outcome.
fn outcomes(policies: &[&Value]) -> String {
    if let [one] = policies {
        let reasons: Vec<&str> = one["reasons"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let outcome = one["outcome"].as_str().unwrap_or("?");
        return if reasons.is_empty() {
            outcome.to_owned()
        } else {
            format!("{outcome}: {}", reasons.join("; "))
        };
    }
    let count = |name: &str| policies.iter().filter(|p| p["outcome"] == name).count();
    format!(
        "{} allowed, {} redacted, {} denied",
        count("allow"),
        count("redact"),
        count("deny")
    )
}
