//! Policy plugins around model calls (the host's `policies:`, a parent
//! workflow's, the workflow's own). Before a guarded task (one whose plugin
//! the operator marked as calling models) is called, every `before` policy
//! checks every text that reaches the model: `system`, `prompt`, and each
//! message's `content` (a string, or the `text` of each of its parts);
//! after it answers, every `after` policy checks the answer's `text` and
//! its `json` (as JSON text). A `deny` fails the task (`denied`, with the
//! policy's reasons), a `redact` puts the policy's text in place of the
//! original (a redacted `json` must still be JSON, or the answer is
//! denied), and every verdict is added to the task's output as
//! `policies`, so `runtime status` shows them.

use std::collections::HashSet;

use serde_json::{Map, Value, json};

use orchestrator_core::scheduler::{Executor, FailureKind, TaskFailure, TaskRequest, TaskSuccess};

/// The policies of one workflow, and the tasks they guard.
#[derive(Debug, Default)]
pub struct PolicyHooks {
    /// Run on the prompt before the call.
    pub before: Vec<PolicyHook>,
    /// Run on the answer after it.
    pub after: Vec<PolicyHook>,
    /// The plugin keys of the tasks they guard.
    pub guarded: HashSet<String>,
}

/// One policy, prepared under its own plugin key.
#[derive(Debug)]
pub struct PolicyHook {
    /// The key its plugin is prepared under (`#policy-before-0`, ...).
    pub key: String,
    /// The plugin, for messages.
    pub uses: String,
    /// Its settings; `text` is added per check.
    pub with: Map<String, Value>,
}

/// What one policy said of one text.
struct Verdict {
    outcome: String,
    text: String,
    reasons: Vec<String>,
}

impl PolicyHooks {
    /// Whether `request` is a call these policies guard.
    pub(super) fn guards(&self, request: &TaskRequest) -> bool {
        !(self.before.is_empty() && self.after.is_empty())
            && self.guarded.contains(request.plugin_key().as_ref())
    }

    /// Runs the `before` policies over the request's prompt texts; returns
    /// the request with redactions made, and the verdicts.
    pub(super) async fn before<E: Executor>(
        &self,
        inner: &E,
        mut request: TaskRequest,
    ) -> Result<(TaskRequest, Vec<Value>), TaskFailure> {
        let mut verdicts = Vec::new();
        if self.before.is_empty() {
            return Ok((request, verdicts));
        }
        let Ok(mut input) = serde_json::from_str::<Value>(&request.input) else {
            // The host always hands plugins JSON; anything else is not let
            // past the policies unchecked.
            return Err(denied(format!(
                "the input of `{}` is not JSON, so the policies cannot check it",
                request.task_id
            )));
        };
        let paths = prompt_paths(&input);
        for hook in &self.before {
            for path in &paths {
                let Some(text) = input.pointer(path).and_then(Value::as_str) else {
                    continue;
                };
                let verdict = check(inner, hook, &request, text).await?;
                verdicts.push(record("before", hook, &verdict));
                match verdict.outcome.as_str() {
                    "deny" => {
                        return Err(denied(format!(
                            "policy `{}` denied the prompt before the call: {}",
                            hook.uses,
                            verdict.reasons.join("; ")
                        )));
                    }
                    "redact" => {
                        if let Some(slot) = input.pointer_mut(path) {
                            *slot = Value::String(verdict.text);
                        }
                    }
                    _ => {}
                }
            }
        }
        request.input = input.to_string();
        Ok((request, verdicts))
    }

    /// Runs the `after` policies over the answer's `text` and `json`, then
    /// adds every verdict to the output.
    pub(super) async fn after<E: Executor>(
        &self,
        inner: &E,
        request: &TaskRequest,
        mut success: TaskSuccess,
        mut verdicts: Vec<Value>,
    ) -> Result<TaskSuccess, TaskFailure> {
        for hook in &self.after {
            for field in ["text", "json"] {
                let text = match &success.output[field] {
                    Value::String(text) if field == "text" => text.clone(),
                    Value::Null => continue,
                    json if field == "json" => json.to_string(),
                    _ => continue,
                };
                let verdict = check(inner, hook, request, &text).await?;
                verdicts.push(record("after", hook, &verdict));
                let refused = |why: String| TaskFailure {
                    metering: success.metering,
                    ..denied(format!(
                        "policy `{}` denied the answer's `{field}`: {why}; it is not used",
                        hook.uses
                    ))
                };
                match verdict.outcome.as_str() {
                    "deny" => return Err(refused(verdict.reasons.join("; "))),
                    "redact" if field == "json" => match serde_json::from_str(&verdict.text) {
                        Ok(json) => success.output["json"] = json,
                        Err(_) => {
                            return Err(refused("redacted, it is no longer JSON".to_owned()));
                        }
                    },
                    "redact" => success.output["text"] = Value::String(verdict.text),
                    _ => {}
                }
            }
        }
        if let Value::Object(output) = &mut success.output {
            output.insert("policies".to_owned(), Value::Array(verdicts));
        }
        Ok(success)
    }
}

/// Where the texts a model reads are in an `llm`-shaped input: `system`,
/// `prompt`, and each message's `content`, or the `text` of each part of
/// a content given as parts.
fn prompt_paths(input: &Value) -> Vec<String> {
    let mut paths = vec!["/system".to_owned(), "/prompt".to_owned()];
    for (i, message) in input["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        match &message["content"] {
            Value::Array(parts) => {
                paths.extend((0..parts.len()).map(|j| format!("/messages/{i}/content/{j}/text")));
            }
            _ => paths.push(format!("/messages/{i}/content")),
        }
    }
    paths
}

/// Has `hook`'s plugin check `text`, for the task of `base`.
async fn check<E: Executor>(
    inner: &E,
    hook: &PolicyHook,
    base: &TaskRequest,
    text: &str,
) -> Result<Verdict, TaskFailure> {
    let mut input = hook.with.clone();
    input.insert("text".to_owned(), Value::String(text.to_owned()));
    let request = TaskRequest {
        execution_id: base.execution_id.clone(),
        tenant: base.tenant.clone(),
        task_id: hook.key.clone(),
        uses: hook.uses.clone(),
        attempt: 1,
        input: Value::Object(input).to_string(),
        limits: base.limits,
        cancel: base.cancel.clone(),
        fallback: false,
        effects: base.effects.clone(),
    };
    let checked = inner.execute(request).await.map_err(|f| TaskFailure {
        message: format!(
            "policy `{}` could not check the text: {}",
            hook.uses, f.message
        ),
        ..f
    })?;
    let output = &checked.output;
    let outcome = output["outcome"].as_str().ok_or_else(|| {
        denied(format!(
            "policy `{}` gave no `outcome` (allow, deny or redact): {output}",
            hook.uses
        ))
    })?;
    Ok(Verdict {
        outcome: outcome.to_owned(),
        text: output["text"].as_str().unwrap_or(text).to_owned(),
        reasons: output["reasons"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
    })
}

fn record(stage: &str, hook: &PolicyHook, verdict: &Verdict) -> Value {
    json!({
        "stage": stage,
        "policy": hook.uses,
        "outcome": verdict.outcome,
        "reasons": verdict.reasons,
    })
}

fn denied(message: String) -> TaskFailure {
    TaskFailure {
        kind: FailureKind::Denied,
        message,
        metering: Default::default(),
    }
}
