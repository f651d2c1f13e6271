//! The Anthropic Messages API: `POST {base_url}/messages`.

use serde_json::{Value, json};

use crate::conversation::{Answer, Conversation, Format};
use crate::openai::{clip, number_at, text_at};
use crate::sse::Event;

/// Where Anthropic answers.
pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com/v1";

/// The API version this plugin speaks.
pub const VERSION: &str = "2023-06-01";

/// `max_tokens` is required by this API; used when the task sets none.
pub const DEFAULT_MAX_TOKENS: u32 = 1024;

/// The endpoint under `base_url`.
pub fn endpoint(base_url: &str) -> String {
    format!("{}/messages", base_url.trim_end_matches('/'))
}

/// The request body. The API has no JSON mode: a JSON format is asked for
/// in the system prompt (and the answer checked all the same).
pub fn body(model: &str, conversation: &Conversation) -> Value {
    let messages: Vec<Value> = conversation
        .messages
        .iter()
        .map(|m| json!({ "role": m.role, "content": m.content }))
        .collect();
    let mut body = json!({
        "model": model,
        "max_tokens": conversation.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
        "messages": messages,
    });
    let instruction = match &conversation.format {
        Format::Text => None,
        Format::Json => Some("Answer with one JSON value and nothing else.".to_owned()),
        Format::JsonSchema(schema) => Some(format!(
            "Answer with one JSON value that fits this JSON Schema, and nothing else: {schema}"
        )),
    };
    let system: Vec<String> = conversation
        .system
        .iter()
        .cloned()
        .chain(instruction)
        .collect();
    if !system.is_empty() {
        body["system"] = json!(system.join("\n\n"));
    }
    if let Some(t) = conversation.temperature {
        body["temperature"] = json!(t);
    }
    if !conversation.stop.is_empty() {
        body["stop_sequences"] = json!(conversation.stop);
    }
    if conversation.stream {
        body["stream"] = json!(true);
    }
    body
}

/// Reads a complete (not streamed) response.
pub fn answer(response: &Value) -> Result<Answer, String> {
    let blocks = response
        .get("content")
        .and_then(Value::as_array)
        .ok_or("it has no `content` list")?;
    let text: String = blocks
        .iter()
        .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
        .filter_map(|b| b.get("text").and_then(Value::as_str))
        .collect();
    Ok(Answer {
        text,
        model: text_at(response, "/model"),
        finish_reason: response
            .get("stop_reason")
            .and_then(Value::as_str)
            .map(str::to_owned),
        input_tokens: number_at(response, "/usage/input_tokens"),
        output_tokens: number_at(response, "/usage/output_tokens"),
    })
}

/// Folds one streamed event into `answer`; returns the text it added.
pub fn stream_event(answer: &mut Answer, event: &Event) -> Result<Option<String>, String> {
    if event.data.is_empty() {
        return Ok(None);
    }
    let data: Value = serde_json::from_str(&event.data)
        .map_err(|e| format!("a streamed event is not JSON ({e}): {}", clip(&event.data)))?;
    match data.get("type").and_then(Value::as_str).unwrap_or_default() {
        "message_start" => {
            answer.model = text_at(&data, "/message/model");
            answer.input_tokens = number_at(&data, "/message/usage/input_tokens");
            answer.output_tokens = number_at(&data, "/message/usage/output_tokens");
        }
        "content_block_delta" => {
            if let Some(delta) = data.pointer("/delta/text").and_then(Value::as_str) {
                answer.text.push_str(delta);
                return Ok(Some(delta.to_owned()));
            }
        }
        "message_delta" => {
            if let Some(reason) = data.pointer("/delta/stop_reason").and_then(Value::as_str) {
                answer.finish_reason = Some(reason.to_owned());
            }
            if let Some(n) = data.pointer("/usage/output_tokens").and_then(Value::as_u64) {
                answer.output_tokens = n;
            }
        }
        "error" => {
            return Err(error_message(&data).unwrap_or_else(|| clip(&event.data)));
        }
        _ => {}
    }
    Ok(None)
}

/// The provider's own words in an error body.
pub fn error_message(body: &Value) -> Option<String> {
    body.pointer("/error/message")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conversation::Message;

    #[test]
    fn system_and_json_instructions_share_the_system_prompt() {
        let conversation = Conversation {
            system: Some("be brief".into()),
            messages: vec![Message {
                role: "user".into(),
                content: "hi".into(),
            }],
            temperature: None,
            max_tokens: None,
            stop: Vec::new(),
            format: Format::Json,
            stream: false,
        };
        let body = body("claude", &conversation);
        assert_eq!(body["max_tokens"], DEFAULT_MAX_TOKENS);
        let system = body["system"].as_str().unwrap();
        assert!(system.starts_with("be brief") && system.contains("JSON"));
    }

    #[test]
    fn streamed_events_add_up_to_the_answer() {
        let mut answer = Answer::default();
        let events = [
            r#"{"type":"message_start","message":{"model":"c1","usage":{"input_tokens":7,"output_tokens":1}}}"#,
            r#"{"type":"content_block_delta","delta":{"type":"text_delta","text":"Hi"}}"#,
            r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"},"usage":{"output_tokens":4}}"#,
            r#"{"type":"message_stop"}"#,
        ];
        for data in events {
            let event = Event {
                name: String::new(),
                data: data.into(),
            };
            stream_event(&mut answer, &event).unwrap();
        }
        assert_eq!(answer.text, "Hi");
        assert_eq!(answer.model, "c1");
        assert_eq!((answer.input_tokens, answer.output_tokens), (7, 4));
    }
}
