//! JSON Schema checks for plugins (feature `json-schema`), with the
//! `jsonschema` crate built without remote references: a schema that
//! points elsewhere cannot make a plugin fetch anything.

use serde_json::Value;

/// How `value` breaks `schema`: at most three problems, each `path: why`
/// (just `why` at the top), joined by `; `; `None` when it conforms. An
/// error when `schema` is not a valid JSON Schema.
pub fn violations(schema: &Value, value: &Value) -> Result<Option<String>, String> {
    let validator = jsonschema::validator_for(schema).map_err(|e| e.to_string())?;
    let problems: Vec<String> = validator
        .iter_errors(value)
        .take(3)
        .map(|e| {
            let at = e.instance_path().to_string();
            if at.is_empty() {
                e.to_string()
            } else {
                format!("{at}: {e}")
            }
        })
        .collect();
    Ok((!problems.is_empty()).then(|| problems.join("; ")))
}
