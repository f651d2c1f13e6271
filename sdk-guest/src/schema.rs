//! JSON Schema checks for plugins (feature `json-schema`), with the `boon`
//! crate. It compiles the meta-schemas it checks schemas against once per
//! instance, so a pre-initialised plugin ([`warm`] in
//! [`crate::Plugin::initialize`]) finds them ready; `jsonschema` rebuilds
//! its meta-schema validator for every schema when built for WebAssembly,
//! which cost ~57 M fuel a check. The loader here refuses every URL: a
//! schema that points elsewhere cannot make a plugin fetch anything.

use boon::{Compiler, Schemas, UrlLoader, ValidationError};
use serde_json::Value;

/// Where the schema being checked lives, for its relative references.
const ROOT: &str = "https://schema.invalid/root.json";

/// Follows no reference out of the schema itself.
struct NoRemote;

impl UrlLoader for NoRemote {
    fn load(&self, url: &str) -> Result<Value, Box<dyn std::error::Error>> {
        Err(format!(
            "`{url}` is outside the schema; references to other documents are not followed"
        )
        .into())
    }
}

/// How `value` breaks `schema`: at most three problems, each `path: why`
/// (just `why` at the top), joined by `; `; `None` when it conforms. An
/// error when `schema` is not a valid JSON Schema.
pub fn violations(schema: &Value, value: &Value) -> Result<Option<String>, String> {
    let mut compiler = Compiler::new();
    compiler.use_loader(Box::new(NoRemote));
    let mut schemas = Schemas::new();
    compiler
        .add_resource(ROOT, schema.clone())
        .map_err(|e| format!("{e:#}"))?;
    let index = compiler
        .compile(ROOT, &mut schemas)
        .map_err(|e| format!("{e:#}").replace(ROOT, "the schema"))?;
    let Err(error) = schemas.validate(value, index) else {
        return Ok(None);
    };
    let mut problems = Vec::new();
    leaves(&error, &mut problems);
    Ok(Some(problems.join("; ")))
}

/// The first three innermost errors (the ones that say what is wrong).
fn leaves(error: &ValidationError<'_, '_>, into: &mut Vec<String>) {
    if into.len() == 3 {
        return;
    }
    if error.causes.is_empty() {
        let at = error.instance_location.to_string();
        into.push(if at.is_empty() {
            error.kind.to_string()
        } else {
            format!("{at}: {}", error.kind)
        });
    }
    for cause in &error.causes {
        leaves(cause, into);
    }
}

/// Builds what every schema check needs, for [`crate::Plugin::initialize`]:
/// the draft 2020-12 meta-schema (the default draft) compiled, and a
/// schema using the common keywords compiled and used once.
pub fn warm() {
    let schema = serde_json::json!({
        "type": "object",
        "required": ["score"],
        "properties": {
            "score": { "type": "integer", "minimum": 1, "maximum": 5 },
            "reason": { "type": "string", "minLength": 1 },
            "tags": { "type": "array", "items": { "enum": ["a", "b"] } }
        }
    });
    let value = serde_json::json!({ "score": 9, "tags": ["c"] });
    // The answer does not matter: building and using the validator does.
    let _ = violations(&schema, &value);
}
