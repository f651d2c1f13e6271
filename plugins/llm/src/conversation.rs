//! What a call asks of a model, independent of the provider: the messages,
//! sampling settings, the answer's format, and whether to stream it.

use serde::Deserialize;
use serde_json::Value;

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// Its text.
    pub content: String,
}

/// What form the answer must take.
#[derive(Debug, Clone, PartialEq)]
pub enum Format {
    /// Free text.
    Text,
    /// Any JSON value.
    Json,
    /// JSON that fits this schema.
    JsonSchema(Value),
}

/// A call, minus which model answers it.
#[derive(Debug, Clone)]
pub struct Conversation {
    /// The system prompt, if any.
    pub system: Option<String>,
    /// The messages, oldest first (system messages moved to `system`).
    pub messages: Vec<Message>,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Most tokens to produce.
    pub max_tokens: Option<u32>,
    /// Sequences that end the answer.
    pub stop: Vec<String>,
    /// The answer's form.
    pub format: Format,
    /// Stream the answer as it is produced.
    pub stream: bool,
}

/// The model's answer, whatever the provider.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Answer {
    /// The text.
    pub text: String,
    /// The model that answered, as the provider names it.
    pub model: String,
    /// Why it stopped (`stop`, `length`, `end_turn`, ...).
    pub finish_reason: Option<String>,
    /// Tokens read.
    pub input_tokens: u64,
    /// Tokens written.
    pub output_tokens: u64,
}
