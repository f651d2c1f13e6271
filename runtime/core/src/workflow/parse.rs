//! Reads a workflow file (YAML or JSON) into a [`Definition`].
//!
//! JSON is read by the same YAML 1.2 parser, so both formats report errors with
//! a line and column.

use serde_saphyr::Spanned;

use super::definition::Definition;
use super::diagnostic::{Diagnostic, WorkflowError};

/// The largest workflow file: 64 MiB.
pub const MAX_WORKFLOW_BYTES: usize = 64 << 20;

/// The most YAML values (mappings, lists, scalars) one workflow file may
/// hold: room for the largest workflow (100,000 tasks) with a few dozen
/// values each.
pub const MAX_YAML_NODES: usize = 8_000_000;

/// How deeply YAML values may nest.
pub const MAX_YAML_DEPTH: usize = 64;

/// Parses `source`, read from `file` (used only in messages).
pub fn parse(source: &str, file: &str) -> Result<Definition, WorkflowError> {
    if source.len() > MAX_WORKFLOW_BYTES {
        return Err(WorkflowError {
            file: file.to_owned(),
            diagnostics: vec![
                Diagnostic::at(
                    None,
                    format!(
                        "the workflow file is {} MiB; at most {} MiB are read",
                        source.len() >> 20,
                        MAX_WORKFLOW_BYTES >> 20
                    ),
                )
                .help("keep large data out of the workflow: pass it as an input, or read it in a task"),
            ],
        });
    }
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_reader_input_bytes: Some(MAX_WORKFLOW_BYTES),
            max_nodes: MAX_YAML_NODES,
            max_events: 3 * MAX_YAML_NODES,
            max_depth: MAX_YAML_DEPTH,
        },
    };
    serde_saphyr::from_str_with_options(source, options).map_err(|e| {
        let location = e.location().map(|l| (l.line(), l.column()));
        if let serde_saphyr::Error::Budget { breach, .. } = e.without_snippet() {
            return WorkflowError {
                file: file.to_owned(),
                diagnostics: vec![budget_breached(breach, location)],
            };
        }
        let message = first_line(&e.without_snippet().to_string());
        let help = if message.starts_with("unknown field") {
            "check the spelling; a workflow has name, description, inputs, limits, grants, durability, \
             concurrency, retry, timeout, breaker, budget, policies, tasks, outputs; a task has id, uses or wait, \
             description, needs, with, when, limits, grants, retry, timeout, fallback, default, \
             continue_on_error, for_each, concurrency, min_success_ratio, breaker, priority, cache"
        } else {
            "YAML is indentation-sensitive: check the indentation and quoting on this line and the one before"
        };
        WorkflowError {
            file: file.to_owned(),
            diagnostics: vec![Diagnostic::at(location, message).help(help)],
        }
    })
}

/// Says which of the parser's limits a file passed.
fn budget_breached(
    breach: &serde_saphyr::budget::BudgetBreach,
    location: Option<(u64, u64)>,
) -> Diagnostic {
    use serde_saphyr::budget::BudgetBreach;
    let (message, help) = match breach {
        BudgetBreach::Nodes { .. } | BudgetBreach::Events { .. } => (
            format!(
                "the workflow holds more than {MAX_YAML_NODES} YAML values, the most a workflow file may hold"
            ),
            "a workflow has at most 100,000 tasks; pass large data as an input instead of writing it into the file",
        ),
        BudgetBreach::Depth { .. } => (
            format!("values are nested more than {MAX_YAML_DEPTH} levels deep"),
            "flatten the nesting, or pass deeply nested data as an input",
        ),
        BudgetBreach::Aliases { .. } | BudgetBreach::Anchors { .. } => (
            "the file uses more YAML anchors or aliases than a workflow may".to_owned(),
            "write the values out instead of repeating them through aliases",
        ),
        other => (
            format!("the file passes a limit of the YAML reader ({other:?})"),
            "make the file smaller or simpler",
        ),
    };
    Diagnostic::at(location, message).help(help)
}

/// The line and column of a spanned value.
pub fn location_of<T>(value: &Spanned<T>) -> Option<(u64, u64)> {
    let l = value.referenced;
    (l.line() > 0).then(|| (l.line(), l.column()))
}

/// saphyr appends the position to its message; we print it in front instead.
fn first_line(message: &str) -> String {
    let line = message.lines().next().unwrap_or(message);
    match line.rfind(" at line ") {
        Some(at) => line[..at].to_owned(),
        None => line.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_the_line_of_a_syntax_error() {
        let err = parse("name: x\ntasks:\n  - id: a\n   uses: [b\n", "f.yaml").unwrap_err();
        let d = &err.diagnostics[0];
        assert!(matches!(d.location, Some((3..=5, _))), "{err}");
    }

    #[test]
    fn unknown_fields_are_errors() {
        let err = parse(
            "name: x\ntasks:\n  - id: a\n    uses: t\n    need: [b]\n",
            "f.yaml",
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("f.yaml:5:"), "{text}");
        assert!(text.contains("need"), "{text}");
    }

    #[test]
    fn the_largest_workflow_parses_and_limits_name_themselves() {
        let mut text = String::from("name: big\ntasks:\n");
        for i in 0..100_000 {
            text.push_str(&format!(
                "  - id: t{i}\n    uses: transform\n    with: {{ script: '1', n: {i} }}\n"
            ));
        }
        assert_eq!(parse(&text, "big.yaml").unwrap().tasks.len(), 100_000);

        let deep = format!(
            "name: deep\ntasks:\n  - id: a\n    uses: t\n    with: {{ x: {}{} }}\n",
            "[".repeat(100),
            "]".repeat(100)
        );
        let err = parse(&deep, "deep.yaml").unwrap_err().to_string();
        assert!(err.contains("nested more than 64 levels"), "{err}");
        assert!(!err.contains("indentation"), "{err}");

        let huge = format!(
            "name: huge\n# {}\ntasks: []\n",
            "x".repeat(MAX_WORKFLOW_BYTES)
        );
        let err = parse(&huge, "huge.yaml").unwrap_err().to_string();
        assert!(err.contains("at most 64 MiB are read"), "{err}");
    }

    #[test]
    fn reads_json() {
        let def = parse(
            r#"{"name": "j", "tasks": [{"id": "a", "uses": "t"}]}"#,
            "f.json",
        )
        .unwrap();
        assert_eq!(def.tasks[0].id.value, "a");
        assert_eq!(location_of(&def.tasks[0].id), Some((1, 32)));
    }
}
