//! The OpenAI chat completions API, as OpenAI, vLLM, llama.cpp's server,
//! Ollama and others speak it: `POST {base_url}/chat/completions`.

use serde_json::{Value, json};

use crate::conversation::{Answer, Conversation, Format};
use crate::sse::Event;

/// Where OpenAI itself answers.
pub const DEFAULT_BASE_URL: &str = "https://api.openai.com/v1";

/// The endpoint under `base_url`.
pub fn endpoint(base_url: &str) -> String {
    format!("{}/chat/completions", base_url.trim_end_matches('/'))
}

/// The request body.
pub fn body(model: &str, conversation: &Conversation) -> Value {
    let mut messages = Vec::new();
    if let Some(system) = &conversation.system {
        messages.push(json!({ "role": "system", "content": system }));
    }
    for message in &conversation.messages {
        messages.push(json!({ "role": message.role, "content": message.content }));
    }
    let mut body = json!({ "model": model, "messages": messages });
    if let Some(t) = conversation.temperature {
        body["temperature"] = json!(t);
    }
    if let Some(n) = conversation.max_tokens {
        body["max_tokens"] = json!(n);
    }
    if !conversation.stop.is_empty() {
        body["stop"] = json!(conversation.stop);
    }
    match &conversation.format {
        Format::Text => {}
        Format::Json => body["response_format"] = json!({ "type": "json_object" }),
        Format::JsonSchema(schema) => {
            body["response_format"] = json!({
                "type": "json_schema",
                "json_schema": { "name": "output", "schema": schema, "strict": true }
            });
        }
    }
    if conversation.stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({ "include_usage": true });
    }
    body
}

/// Reads a complete (not streamed) response.
pub fn answer(response: &Value) -> Result<Answer, String> {
    let choice = response
        .pointer("/choices/0")
        .ok_or("it has no `choices[0]`")?;
    let text = choice
        .pointer("/message/content")
        .and_then(Value::as_str)
        .ok_or("`choices[0].message.content` is missing or not text")?;
    Ok(Answer {
        text: text.to_owned(),
        model: text_at(response, "/model"),
        finish_reason: choice
            .get("finish_reason")
            .and_then(Value::as_str)
            .map(str::to_owned),
        input_tokens: number_at(response, "/usage/prompt_tokens"),
        output_tokens: number_at(response, "/usage/completion_tokens"),
    })
}

/// Folds one streamed event into `answer`; returns the text it added.
pub fn stream_event(answer: &mut Answer, event: &Event) -> Result<Option<String>, String> {
    if event.data.trim() == "[DONE]" {
        return Ok(None);
    }
    let chunk: Value = serde_json::from_str(&event.data)
        .map_err(|e| format!("a streamed chunk is not JSON ({e}): {}", clip(&event.data)))?;
    if let Some(message) = error_message(&chunk) {
        return Err(message);
    }
    if let Some(model) = chunk.get("model").and_then(Value::as_str) {
        answer.model = model.to_owned();
    }
    if chunk.get("usage").is_some_and(|u| !u.is_null()) {
        answer.input_tokens = number_at(&chunk, "/usage/prompt_tokens");
        answer.output_tokens = number_at(&chunk, "/usage/completion_tokens");
    }
    if let Some(reason) = chunk
        .pointer("/choices/0/finish_reason")
        .and_then(Value::as_str)
    {
        answer.finish_reason = Some(reason.to_owned());
    }
    let delta = chunk
        .pointer("/choices/0/delta/content")
        .and_then(Value::as_str)
        .filter(|d| !d.is_empty());
    if let Some(delta) = delta {
        answer.text.push_str(delta);
    }
    Ok(delta.map(str::to_owned))
}

/// The provider's own words in an error body.
pub fn error_message(body: &Value) -> Option<String> {
    match body.get("error")? {
        Value::String(message) => Some(message.clone()),
        error => error
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_owned),
    }
}

pub(crate) fn text_at(value: &Value, pointer: &str) -> String {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

pub(crate) fn number_at(value: &Value, pointer: &str) -> u64 {
    value.pointer(pointer).and_then(Value::as_u64).unwrap_or(0)
}

/// At most 200 characters of `text`, for messages.
pub(crate) fn clip(text: &str) -> String {
    let mut clipped: String = text.chars().take(200).collect();
    if clipped.len() < text.len() {
        clipped.push_str("...");
    }
    clipped
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conversation::Message;

    #[test]
    fn a_request_carries_the_conversation_and_settings() {
        let conversation = Conversation {
            system: Some("be brief".into()),
            messages: vec![Message {
                role: "user".into(),
                content: "hi".into(),
            }],
            temperature: Some(0.2),
            max_tokens: Some(5),
            stop: vec!["\n".into()],
            format: Format::Json,
            stream: true,
        };
        let body = body("m", &conversation);
        assert_eq!(body["messages"][0]["role"], "system");
        assert_eq!(body["messages"][1]["content"], "hi");
        assert_eq!(body["response_format"]["type"], "json_object");
        assert_eq!(body["stream_options"]["include_usage"], true);
    }

    #[test]
    fn streamed_chunks_add_up_to_the_answer() {
        let mut answer = Answer::default();
        let event = |data: &str| Event {
            name: String::new(),
            data: data.into(),
        };
        let chunks = [
            r#"{"model":"m1","choices":[{"delta":{"content":"Hel"}}]}"#,
            r#"{"choices":[{"delta":{"content":"lo"},"finish_reason":"stop"}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}"#,
            "[DONE]",
        ];
        let deltas: Vec<Option<String>> = chunks
            .iter()
            .map(|c| stream_event(&mut answer, &event(c)).unwrap())
            .collect();
        assert_eq!(deltas, [Some("Hel".into()), Some("lo".into()), None, None]);
        assert_eq!(answer.text, "Hello");
        assert_eq!((answer.input_tokens, answer.output_tokens), (3, 2));
        assert_eq!(answer.finish_reason.as_deref(), Some("stop"));
    }
}
