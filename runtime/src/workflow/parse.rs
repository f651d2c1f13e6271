//! Reads a workflow file (YAML or JSON) into a [`Definition`].
//!
//! JSON is read by the same YAML 1.2 parser, so both formats report errors with
//! a line and column.

use serde_saphyr::Spanned;

use super::definition::Definition;
use super::diagnostic::{Diagnostic, WorkflowError};

/// Parses `source`, read from `file` (used only in messages).
pub fn parse(source: &str, file: &str) -> Result<Definition, WorkflowError> {
    serde_saphyr::from_str(source).map_err(|e| {
        let location = e.location().map(|l| (l.line(), l.column()));
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
