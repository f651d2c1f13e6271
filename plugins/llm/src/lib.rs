//! The built-in `llm` executor: one chat model call, through `wasi:http`, so
//! the host's egress rules and breakers apply and credentials are attached
//! by the host (this plugin never sees an API key).
//!
//! `with:`: `provider` (`openai`, the default, for any OpenAI-compatible
//! server; or `anthropic`), `model`, `base_url`, `system`, `prompt` and/or
//! `messages`, `temperature`, `max_tokens`, `stop`, `response_format`
//! (`text`, `json`, or `{ json_schema: {...} }`), `stream` (the text is
//! emitted to the host as it arrives) and `fallback_models` (provider/model
//! pairs tried in order when a model fails or its host is refused).
//!
//! Provider errors become task errors the host's retry policy can act on:
//! 429, 408 and 5xx are `retryable` (passing on `Retry-After`), other 4xx
//! `fatal` with the provider's message, a malformed answer `retryable`.

mod anthropic;
mod conversation;
mod openai;
mod sse;

use orchestrator_sdk::http::{self, HttpError};
use orchestrator_sdk::{
    Capabilities, Context, Error, Info, Plugin, Usage, Value, emit, export_plugin, json, schema,
};
use serde::{Deserialize, Serialize};

use conversation::{Answer, Conversation, Format, Message};

/// Who serves the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// The OpenAI chat completions API (OpenAI, vLLM, llama.cpp, Ollama, ...).
    #[default]
    Openai,
    /// The Anthropic Messages API.
    Anthropic,
}

impl Provider {
    fn name(self) -> &'static str {
        match self {
            Provider::Openai => "openai",
            Provider::Anthropic => "anthropic",
        }
    }

    fn default_base_url(self) -> &'static str {
        match self {
            Provider::Openai => openai::DEFAULT_BASE_URL,
            Provider::Anthropic => anthropic::DEFAULT_BASE_URL,
        }
    }
}

/// The task's `with:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    #[serde(default)]
    provider: Provider,
    model: String,
    #[serde(default)]
    base_url: Option<String>,
    #[serde(default)]
    system: Option<String>,
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    messages: Vec<Message>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    max_tokens: Option<u32>,
    #[serde(default)]
    stop: Option<Stop>,
    #[serde(default)]
    response_format: Option<FormatSpec>,
    #[serde(default)]
    stream: bool,
    #[serde(default)]
    fallback_models: Vec<ModelChoice>,
}

/// `stop:` as one string or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

/// `response_format:` as `text`, `json` or `{ json_schema: ... }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum FormatSpec {
    Name(String),
    Schema { json_schema: Value },
}

/// A model to try after the first: unset fields are the task's.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelChoice {
    #[serde(default)]
    provider: Option<Provider>,
    model: String,
    #[serde(default)]
    base_url: Option<String>,
}

/// One model at one endpoint.
#[derive(Debug, Clone)]
struct Candidate {
    provider: Provider,
    model: String,
    base_url: String,
}

impl Candidate {
    fn label(&self) -> String {
        format!("{}/{}", self.provider.name(), self.model)
    }
}

/// The task's output.
#[derive(Debug, Serialize)]
pub struct Output {
    /// The answer.
    text: String,
    /// The answer parsed, when `response_format` asked for JSON.
    #[serde(skip_serializing_if = "Option::is_none")]
    json: Option<Value>,
    /// The model that answered.
    model: String,
    /// Its provider.
    provider: &'static str,
    /// Why the answer ended.
    finish_reason: Option<String>,
    /// Tokens read and written.
    usage: TokenCounts,
    /// Models tried before this one, and why each failed.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    failed_models: Vec<FailedModel>,
}

#[derive(Debug, Serialize)]
struct TokenCounts {
    input_tokens: u64,
    output_tokens: u64,
}

#[derive(Debug, Serialize)]
struct FailedModel {
    model: String,
    error: String,
}

/// Calls chat models.
pub struct Llm;

impl Plugin for Llm {
    type Input = Input;
    type Output = Output;

    fn info() -> Info {
        Info::new(
            "llm",
            env!("CARGO_PKG_VERSION"),
            "Calls a chat model (OpenAI-compatible or Anthropic); credentials are attached by the host.",
        )
        .input_schema(json!({
            "type": "object",
            "required": ["model"],
            "properties": {
                "provider": { "enum": ["openai", "anthropic"] },
                "model": { "type": "string" },
                "base_url": { "type": "string" },
                "system": { "type": "string" },
                "prompt": { "type": "string" },
                "messages": { "type": "array" },
                "temperature": { "type": "number" },
                "max_tokens": { "type": "integer" },
                "stream": { "type": "boolean" },
                "fallback_models": { "type": "array" }
            }
        }))
        .output_schema(json!({
            "type": "object",
            "required": ["text", "model", "provider", "usage"]
        }))
        .capabilities(Capabilities {
            http_hosts: vec!["*".into()],
            secrets: vec!["openai".into(), "anthropic".into()],
            ..Capabilities::default()
        })
    }

    fn initialize() {
        schema::warm();
    }

    fn execute(ctx: &Context, input: Input) -> Result<Output, Error> {
        let conversation = conversation(&input)?;
        let mut failed_models = Vec::new();
        let mut last_error = None;
        for candidate in candidates(&input) {
            let result = call(&candidate, &conversation).and_then(|answer| {
                let json = parsed(&answer.text, &conversation.format)?;
                Ok((answer, json))
            });
            match result {
                Ok((answer, json)) => {
                    let model = if answer.model.is_empty() {
                        candidate.model.clone()
                    } else {
                        answer.model
                    };
                    ctx.record_usage(Usage {
                        input_tokens: answer.input_tokens,
                        output_tokens: answer.output_tokens,
                        model: Some(model.clone()),
                        provider: Some(candidate.provider.name().to_owned()),
                    });
                    return Ok(Output {
                        text: answer.text,
                        json,
                        model,
                        provider: candidate.provider.name(),
                        finish_reason: answer.finish_reason,
                        usage: TokenCounts {
                            input_tokens: answer.input_tokens,
                            output_tokens: answer.output_tokens,
                        },
                        failed_models,
                    });
                }
                Err(error) => {
                    failed_models.push(FailedModel {
                        model: candidate.label(),
                        error: message(&error).to_owned(),
                    });
                    last_error = Some(error);
                }
            }
        }
        let last = last_error.expect("there is always a first model");
        if failed_models.len() == 1 {
            return Err(last);
        }
        let trail: Vec<String> = failed_models
            .iter()
            .map(|f| format!("{}: {}", f.model, f.error))
            .collect();
        let summary = format!("every model failed: {}", trail.join("; "));
        Err(match last {
            Error::Retryable(_) => Error::Retryable(summary),
            Error::Denied(_) => Error::Denied(summary),
            Error::InvalidInput(_) => Error::InvalidInput(summary),
            Error::Fatal(_) => Error::Fatal(summary),
        })
    }
}

fn message(error: &Error) -> &str {
    match error {
        Error::InvalidInput(m) | Error::Retryable(m) | Error::Fatal(m) | Error::Denied(m) => m,
    }
}

/// The conversation the input describes: `messages`, then `prompt` as the
/// last user message; system messages join `system`.
fn conversation(input: &Input) -> Result<Conversation, Error> {
    let mut system: Vec<String> = input.system.iter().cloned().collect();
    let mut messages = Vec::new();
    for message in &input.messages {
        match message.role.as_str() {
            "system" => system.push(message.content.clone()),
            "user" | "assistant" => messages.push(message.clone()),
            other => {
                return Err(Error::InvalidInput(format!(
                    "message role `{other}` is not one of system, user, assistant"
                )));
            }
        }
    }
    if let Some(prompt) = &input.prompt {
        messages.push(Message {
            role: "user".into(),
            content: prompt.clone(),
        });
    }
    if messages.is_empty() {
        return Err(Error::InvalidInput(
            "give a `prompt` or `messages` for the model to answer".into(),
        ));
    }
    let format = match &input.response_format {
        None => Format::Text,
        Some(FormatSpec::Name(name)) => match name.as_str() {
            "text" => Format::Text,
            "json" | "json_object" => Format::Json,
            other => {
                return Err(Error::InvalidInput(format!(
                    "`response_format: {other}` is not `text`, `json` or `{{ json_schema: ... }}`"
                )));
            }
        },
        Some(FormatSpec::Schema { json_schema }) => Format::JsonSchema(json_schema.clone()),
    };
    Ok(Conversation {
        system: (!system.is_empty()).then(|| system.join("\n\n")),
        messages,
        temperature: input.temperature,
        max_tokens: input.max_tokens,
        stop: match &input.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(list)) => list.clone(),
        },
        format,
        stream: input.stream,
    })
}

/// The task's model, then its `fallback_models`, each filled in from the
/// task: the same provider, and the same `base_url` when the provider is
/// the same (its default otherwise).
fn candidates(input: &Input) -> Vec<Candidate> {
    let first = Candidate {
        provider: input.provider,
        model: input.model.clone(),
        base_url: input
            .base_url
            .clone()
            .unwrap_or_else(|| input.provider.default_base_url().to_owned()),
    };
    let mut all = vec![first.clone()];
    for choice in &input.fallback_models {
        let provider = choice.provider.unwrap_or(first.provider);
        let base_url = match &choice.base_url {
            Some(url) => url.clone(),
            None if provider == first.provider => first.base_url.clone(),
            None => provider.default_base_url().to_owned(),
        };
        all.push(Candidate {
            provider,
            model: choice.model.clone(),
            base_url,
        });
    }
    all
}

/// One call to one model.
fn call(candidate: &Candidate, conversation: &Conversation) -> Result<Answer, Error> {
    let (url, body, headers): (String, Value, Vec<(&str, &str)>) = match candidate.provider {
        Provider::Openai => (
            openai::endpoint(&candidate.base_url),
            openai::body(&candidate.model, conversation),
            Vec::new(),
        ),
        Provider::Anthropic => (
            anthropic::endpoint(&candidate.base_url),
            anthropic::body(&candidate.model, conversation),
            vec![("anthropic-version", anthropic::VERSION)],
        ),
    };
    let stream_event = match candidate.provider {
        Provider::Openai => openai::stream_event,
        Provider::Anthropic => anthropic::stream_event,
    };
    let text = body.to_string();
    let mut streamed = Answer::default();
    let mut parser = sse::Parser::default();
    let mut stream_error: Option<String> = None;
    let mut on_chunk = |chunk: &[u8]| {
        if !conversation.stream {
            return;
        }
        for event in parser.push(chunk) {
            match stream_event(&mut streamed, &event) {
                Ok(Some(delta)) => emit("text", &delta),
                Ok(None) => {}
                Err(e) => {
                    stream_error.get_or_insert(e);
                }
            }
        }
    };
    let response = http::request_streaming(
        "POST",
        &url,
        &[&[("content-type", "application/json")], headers.as_slice()].concat(),
        Some(text.as_bytes()),
        &mut on_chunk,
    )
    .map_err(|e| match e {
        HttpError::Denied(m) => Error::Denied(format!("POST {url}: {m}")),
        HttpError::Invalid(m) => Error::InvalidInput(format!("POST {url}: {m}")),
        HttpError::Failed(m) => Error::Retryable(format!("POST {url} failed: {m}")),
    })?;
    if !(200..300).contains(&response.status) {
        return Err(status_error(candidate.provider, &url, &response));
    }
    let event_stream = response
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/event-stream"));
    if conversation.stream && event_stream {
        if let Some(event) = parser.finish()
            && let Err(e) = stream_event(&mut streamed, &event)
        {
            stream_error.get_or_insert(e);
        }
        return match stream_error {
            Some(e) => Err(Error::Retryable(format!(
                "the stream from {url} failed: {e}"
            ))),
            None => Ok(streamed),
        };
    }
    let value: Value = serde_json::from_slice(&response.body).map_err(|e| {
        Error::Retryable(format!(
            "the response from {url} is not JSON ({e}): {}",
            openai::clip(&response.text())
        ))
    })?;
    let answer = match candidate.provider {
        Provider::Openai => openai::answer(&value),
        Provider::Anthropic => anthropic::answer(&value),
    };
    answer.map_err(|why| Error::Retryable(format!("the response from {url} is malformed: {why}")))
}

/// A non-2xx answer, as a task error.
fn status_error(provider: Provider, url: &str, response: &http::Response) -> Error {
    let said = serde_json::from_slice::<Value>(&response.body)
        .ok()
        .and_then(|body| match provider {
            Provider::Openai => openai::error_message(&body),
            Provider::Anthropic => anthropic::error_message(&body),
        })
        .unwrap_or_else(|| openai::clip(&response.text()));
    let status = response.status;
    let what = format!("{url} answered {status}: {said}");
    match status {
        429 | 408 | 409 | 500..=599 => match retry_after(response) {
            Some(wait) => Error::retryable_after(what, wait),
            None => Error::Retryable(what),
        },
        401 | 403 => Error::Fatal(format!(
            "{what}. The provider refused the credentials: configure a secret for this host in the host's config file and grant it to this plugin"
        )),
        _ => Error::Fatal(what),
    }
}

/// `Retry-After` in seconds (an HTTP date is not followed).
fn retry_after(response: &http::Response) -> Option<std::time::Duration> {
    let seconds: f64 = response.header("retry-after")?.trim().parse().ok()?;
    std::time::Duration::try_from_secs_f64(seconds).ok()
}

/// The answer as JSON, when the format asks for JSON; an answer in a
/// Markdown code fence is taken from inside it.
fn parsed(text: &str, format: &Format) -> Result<Option<Value>, Error> {
    if *format == Format::Text {
        return Ok(None);
    }
    let trimmed = text.trim();
    let inner = trimmed
        .strip_prefix("```json")
        .or_else(|| trimmed.strip_prefix("```"))
        .and_then(|rest| rest.strip_suffix("```"))
        .unwrap_or(trimmed);
    let value: Value = serde_json::from_str(inner.trim()).map_err(|e| {
        Error::Retryable(format!(
            "the model's answer is not the JSON that `response_format` asks for ({e}): {}",
            openai::clip(text)
        ))
    })?;
    if let Format::JsonSchema(schema) = format {
        let problems = schema::violations(schema, &value).map_err(|e| {
            Error::InvalidInput(format!(
                "`response_format.json_schema` is not a valid JSON Schema: {e}"
            ))
        })?;
        if let Some(problems) = problems {
            return Err(Error::Retryable(format!(
                "the model's answer does not fit the `json_schema`: {problems}"
            )));
        }
    }
    Ok(Some(value))
}

export_plugin!(Llm);

#[cfg(test)]
mod tests {
    use super::*;

    fn input(extra: Value) -> Input {
        let mut base = json!({ "model": "m", "prompt": "hi" });
        base.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        serde_json::from_value(base).unwrap()
    }

    #[test]
    fn fallbacks_inherit_provider_and_endpoint() {
        let input = input(json!({
            "base_url": "http://127.0.0.1:9/v1",
            "fallback_models": [
                { "model": "small" },
                { "provider": "anthropic", "model": "claude" }
            ]
        }));
        let all: Vec<(String, String)> = candidates(&input)
            .iter()
            .map(|c| (c.label(), c.base_url.clone()))
            .collect();
        assert_eq!(
            all,
            [
                ("openai/m".into(), "http://127.0.0.1:9/v1".into()),
                ("openai/small".into(), "http://127.0.0.1:9/v1".into()),
                (
                    "anthropic/claude".into(),
                    anthropic::DEFAULT_BASE_URL.into()
                ),
            ]
        );
    }

    #[test]
    fn json_answers_are_parsed_and_checked() {
        let schema = Format::JsonSchema(json!({ "type": "object", "required": ["score"] }));
        assert_eq!(
            parsed("```json\n{\"score\": 3}\n```", &schema).unwrap(),
            Some(json!({ "score": 3 }))
        );
        let missing = parsed("{\"x\": 1}", &schema);
        assert!(
            matches!(&missing, Err(Error::Retryable(m)) if m.contains("missing properties 'score'")),
            "{missing:?}"
        );
        let typed = Format::JsonSchema(json!({ "properties": { "score": { "type": "integer" } } }));
        let wrong = parsed("{\"score\": \"high\"}", &typed);
        assert!(
            matches!(&wrong, Err(Error::Retryable(m)) if m.contains("/score")),
            "{wrong:?}"
        );
        assert!(matches!(
            parsed("not json", &Format::Json),
            Err(Error::Retryable(_))
        ));
        assert_eq!(parsed("free text", &Format::Text).unwrap(), None);
    }

    #[test]
    fn a_conversation_needs_something_to_answer() {
        let empty: Input = serde_json::from_value(json!({ "model": "m" })).unwrap();
        assert!(matches!(conversation(&empty), Err(Error::InvalidInput(_))));
    }
}
