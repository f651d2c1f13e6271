//! A plugin's JSON Schemas (`input-schema`, `output-schema`), compiled once
//! and checked against what a task gives it and what it answers.
//!
//! The validator is `boon`: the crate the guest SDK checks schemas with
//! (`orchestrator_sdk::schema`), so the host and a plugin agree on what
//! conforms; it is small, implements drafts 4 to 2020-12, and says where
//! in the value each problem is. No reference leaves the schema: a `$ref`
//! to another document is refused, so a schema cannot make the host fetch
//! anything.

use boon::{Compiler, SchemaIndex, Schemas, UrlLoader, ValidationError};
use serde_json::Value;

/// Where a schema being compiled lives, for its relative references.
const ROOT: &str = "https://schema.invalid/plugin.json";

/// At most this many problems are named in one message.
const MAX_PROBLEMS: usize = 3;

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

/// One compiled JSON Schema.
pub struct Schema {
    schemas: Schemas,
    index: SchemaIndex,
    /// The schema itself, to find the schemas of single properties.
    document: Value,
}

impl std::fmt::Debug for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schema")
            .field("document", &self.document)
            .finish()
    }
}

impl Schema {
    /// `text` compiled; `None` when it accepts anything (empty, `{}` or
    /// `true`). An error says why it is not a JSON Schema.
    pub fn compile(text: &str) -> Result<Option<Self>, String> {
        let text = text.trim();
        if text.is_empty() {
            return Ok(None);
        }
        let document: Value =
            serde_json::from_str(text).map_err(|e| format!("it is not JSON ({e})"))?;
        if document == Value::Bool(true) || document.as_object().is_some_and(|o| o.is_empty()) {
            return Ok(None);
        }
        let (schemas, index) = compile(&document, ROOT)?;
        Ok(Some(Self {
            schemas,
            index,
            document,
        }))
    }

    /// How `value` breaks the schema: up to three problems, each `path:
    /// why` (the path as a JSON pointer, just `why` at the top), joined by
    /// `; `; `None` when it conforms.
    pub fn violations(&self, value: &Value) -> Option<String> {
        let error = self.schemas.validate(value, self.index).err()?;
        let mut problems = Vec::new();
        leaves(&error, &mut problems);
        Some(problems.join("; "))
    }

    /// The checks a task's `with:` can have before it runs, when only some
    /// of its fields are known (the others come from expressions): each
    /// known field against its property's schema, required fields that
    /// are not given at all, and fields the schema does not allow. All of
    /// it, when every field is known. Problems as [`Self::violations`].
    pub fn static_violations(
        &self,
        known: &serde_json::Map<String, Value>,
        given: &[&str],
    ) -> Option<String> {
        if known.len() == given.len() {
            return self.violations(&Value::Object(known.clone()));
        }
        let mut problems = Vec::new();
        let properties = self.document.get("properties").and_then(Value::as_object);
        for name in self
            .document
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !given.contains(&name) {
                problems.push(format!("missing property '{name}'"));
            }
        }
        if self.document.get("additionalProperties") == Some(&Value::Bool(false)) {
            for name in given {
                if !properties.is_some_and(|p| p.contains_key(*name)) {
                    problems.push(format!("/{name}: not a property the plugin takes"));
                }
            }
        }
        for (name, value) in known {
            if !properties.is_some_and(|p| p.contains_key(name)) {
                continue;
            }
            let pointer = format!("{ROOT}#/properties/{}", escape(name));
            let Ok((schemas, index)) = compile(&self.document, &pointer) else {
                continue;
            };
            if let Err(error) = schemas.validate(value, index) {
                let mut inner = Vec::new();
                leaves(&error, &mut inner);
                problems.extend(inner.into_iter().map(|p| {
                    if p.starts_with('/') {
                        format!("/{name}{p}")
                    } else {
                        format!("/{name}: {p}")
                    }
                }));
            }
        }
        problems.truncate(MAX_PROBLEMS);
        (!problems.is_empty()).then(|| problems.join("; "))
    }
}

/// `document` compiled at `location` (the root, or a pointer into it).
fn compile(document: &Value, location: &str) -> Result<(Schemas, SchemaIndex), String> {
    let mut compiler = Compiler::new();
    compiler.use_loader(Box::new(NoRemote));
    compiler
        .add_resource(ROOT, document.clone())
        .map_err(|e| format!("{e:#}"))?;
    let mut schemas = Schemas::new();
    let index = compiler
        .compile(location, &mut schemas)
        .map_err(|e| format!("{e:#}").replace(ROOT, "the schema"))?;
    Ok((schemas, index))
}

/// A property name as one JSON pointer segment in a URL fragment.
fn escape(name: &str) -> String {
    let pointer = name.replace('~', "~0").replace('/', "~1");
    pointer
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The first innermost errors (the ones that say what is wrong).
fn leaves(error: &ValidationError<'_, '_>, into: &mut Vec<String>) {
    if into.len() == MAX_PROBLEMS {
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

/// A plugin's two schemas, compiled.
#[derive(Debug, Default)]
pub struct PluginSchemas {
    /// What `with:` must be; `None` accepts anything.
    pub input: Option<Schema>,
    /// What the plugin answers; `None` promises nothing.
    pub output: Option<Schema>,
}

impl PluginSchemas {
    /// The schemas of `manifest`; an error names the one that is not a
    /// JSON Schema and why.
    pub fn of(manifest: &super::Manifest) -> Result<Self, String> {
        Ok(Self {
            input: Schema::compile(&manifest.input_schema)
                .map_err(|e| format!("its input schema is not a valid JSON Schema: {e}"))?,
            output: Schema::compile(&manifest.output_schema)
                .map_err(|e| format!("its output schema is not a valid JSON Schema: {e}"))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema(value: Value) -> Schema {
        Schema::compile(&value.to_string()).unwrap().unwrap()
    }

    #[test]
    fn open_schemas_accept_anything_and_broken_ones_say_why() {
        for open in ["", " ", "{}", "true"] {
            assert!(Schema::compile(open).unwrap().is_none(), "{open:?}");
        }
        assert!(Schema::compile("{").unwrap_err().contains("not JSON"));
        let bad = Schema::compile(r#"{"type": "nope"}"#).unwrap_err();
        assert!(bad.contains("type"), "{bad}");
        let remote = Schema::compile(r#"{"$ref": "https://example.com/s.json"}"#).unwrap_err();
        assert!(remote.contains("not followed"), "{remote}");
    }

    #[test]
    fn violations_name_the_field_and_the_rule() {
        let s = schema(json!({
            "type": "object",
            "required": ["text"],
            "properties": {
                "text": { "type": "string" },
                "n": { "type": "integer", "minimum": 1 }
            },
            "additionalProperties": false
        }));
        assert_eq!(s.violations(&json!({ "text": "hi", "n": 2 })), None);
        let wrong = s.violations(&json!({ "text": 3, "n": 0 })).unwrap();
        assert!(
            wrong.contains("/text") && wrong.contains("string"),
            "{wrong}"
        );
        assert!(wrong.contains("/n") && wrong.contains(">=1"), "{wrong}");
        let missing = s.violations(&json!({ "extra": 1 })).unwrap();
        assert!(missing.contains("text"), "{missing}");
    }

    #[test]
    fn known_fields_are_checked_before_the_others_are() {
        let s = schema(json!({
            "type": "object",
            "required": ["text", "model"],
            "properties": {
                "text": { "type": "string" },
                "n/2": { "type": "integer" },
                "model": { "type": "string" }
            },
            "additionalProperties": false
        }));
        let known = json!({ "n/2": "x" });
        let known = known.as_object().unwrap();
        // `text` comes from an expression: only known fields are checked.
        let found = s
            .static_violations(known, &["text", "n/2", "colour"])
            .unwrap();
        assert!(found.contains("missing property 'model'"), "{found}");
        assert!(found.contains("/colour"), "{found}");
        assert!(
            found.contains("/n/2") && found.contains("integer"),
            "{found}"
        );
        let fine = json!({ "n/2": 2 });
        assert_eq!(
            s.static_violations(fine.as_object().unwrap(), &["text", "n/2", "model"]),
            None
        );
    }
}
