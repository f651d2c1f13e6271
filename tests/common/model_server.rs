//! A chat model server on 127.0.0.1 that speaks the OpenAI chat completions
//! API (`POST /v1/chat/completions`) and the Anthropic Messages API
//! (`POST /v1/messages`), over real HTTP/1.1 with server-sent events when
//! asked to stream. The model name picks the behaviour:
//!
//! - `echo`: answers `echo: <last user message>`; usage counts words;
//! - `json`: answers `{"score": 4, "reason": "fine"}`;
//! - `rate-limited`: 429 with `retry-after: 1` the first time, then `echo`;
//! - `down`: 500 every time;
//! - `unauthorized`: 401 with the provider's error message;
//! - `malformed`: 200 with a body that is not JSON;
//! - `slow`: waits 3 s, then `echo`;
//! - `greedy`: like `echo`, but reports `u64::MAX` tokens in and out.
//!
//! Every request is recorded with its headers and JSON body.

use std::collections::HashMap;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

/// One request the server received.
#[derive(Debug, Clone)]
pub struct ModelRequest {
    pub at: std::time::Instant,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl ModelRequest {
    /// The value of header `name` (lower case), if sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct State {
    requests: Vec<ModelRequest>,
    calls_by_model: HashMap<String, usize>,
}

/// The server; stops when dropped.
pub struct ModelServer {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl ModelServer {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1");
        let addr = listener.local_addr().expect("a bound address");
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let (shared, stopping) = (Arc::clone(&state), Arc::clone(&stop));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    let state = Arc::clone(&shared);
                    std::thread::spawn(move || serve(stream, &state));
                }
            }
        });
        Self { addr, state, stop }
    }

    /// `http://127.0.0.1:<port>/v1`, the `base_url` of both APIs.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Requests received so far.
    pub fn requests(&self) -> Vec<ModelRequest> {
        self.state.lock().expect("lock").requests.clone()
    }
}

impl Drop for ModelServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(stream: TcpStream, state: &Mutex<State>) -> std::io::Result<()> {
    let super::http::Request {
        path,
        headers,
        body,
        ..
    } = super::http::read_request(&stream)?;
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let model = body["model"].as_str().unwrap_or_default().to_owned();
    let calls = {
        let mut state = state.lock().expect("lock");
        state.requests.push(ModelRequest {
            at: std::time::Instant::now(),
            path: path.clone(),
            headers,
            body: body.clone(),
        });
        let calls = state.calls_by_model.entry(model.clone()).or_default();
        *calls += 1;
        *calls
    };
    let anthropic = path.ends_with("/messages");
    let mut out = stream;
    let error = |status: u16, extra: &str, message: &str| {
        let body = if anthropic {
            json!({ "type": "error", "error": { "type": "api_error", "message": message } })
        } else {
            json!({ "error": { "message": message, "type": "server_error" } })
        };
        (status, extra.to_owned(), body.to_string())
    };
    let reply = match model.as_str() {
        "rate-limited" if calls == 1 => Some(error(429, "retry-after: 1\r\n", "slow down")),
        "down" => Some(error(500, "", "the model is down")),
        "unauthorized" => Some(error(401, "", "invalid api key")),
        "malformed" => Some((200, String::new(), "{not json".to_owned())),
        _ => None,
    };
    if let Some((status, extra, body)) = reply {
        return respond(
            &mut out,
            status,
            "application/json",
            &extra,
            body.as_bytes(),
        );
    }
    if model == "slow" {
        std::thread::sleep(Duration::from_secs(3));
    }
    let text = if model == "json" {
        r#"{"score": 4, "reason": "fine"}"#.to_owned()
    } else {
        let last = body["messages"]
            .as_array()
            .and_then(|m| m.last())
            .and_then(|m| m["content"].as_str())
            .unwrap_or_default();
        format!("echo: {last}")
    };
    let (input_tokens, output_tokens) = if model == "greedy" {
        (u64::MAX, u64::MAX)
    } else {
        (
            body.to_string().split_whitespace().count() as u64,
            text.split_whitespace().count() as u64,
        )
    };
    if body["stream"] == true {
        return stream_answer(
            &mut out,
            anthropic,
            &model,
            &text,
            input_tokens,
            output_tokens,
        );
    }
    let answer = if anthropic {
        json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": model,
            "content": [{ "type": "text", "text": text }],
            "stop_reason": "end_turn",
            "usage": { "input_tokens": input_tokens, "output_tokens": output_tokens }
        })
    } else {
        json!({
            "id": "chatcmpl-1", "object": "chat.completion", "model": model,
            "choices": [{ "index": 0, "message": { "role": "assistant", "content": text }, "finish_reason": "stop" }],
            "usage": { "prompt_tokens": input_tokens, "completion_tokens": output_tokens }
        })
    };
    respond(
        &mut out,
        200,
        "application/json",
        "",
        answer.to_string().as_bytes(),
    )
}

fn respond(
    out: &mut TcpStream,
    status: u16,
    content_type: &str,
    extra: &str,
    body: &[u8],
) -> std::io::Result<()> {
    write!(
        out,
        "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n{extra}connection: close\r\n\r\n",
        body.len()
    )?;
    out.write_all(body)?;
    out.flush()
}

/// Sends the answer word by word as server-sent events, 30 ms apart, the
/// body running until the connection closes.
fn stream_answer(
    out: &mut TcpStream,
    anthropic: bool,
    model: &str,
    text: &str,
    input_tokens: u64,
    output_tokens: u64,
) -> std::io::Result<()> {
    write!(
        out,
        "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n"
    )?;
    let mut events = Vec::new();
    let words: Vec<String> = text.split_inclusive(' ').map(str::to_owned).collect();
    if anthropic {
        events.push(json!({ "type": "message_start", "message": { "model": model, "usage": { "input_tokens": input_tokens, "output_tokens": 1 } } }));
        for word in &words {
            events.push(json!({ "type": "content_block_delta", "index": 0, "delta": { "type": "text_delta", "text": word } }));
        }
        events.push(json!({ "type": "message_delta", "delta": { "stop_reason": "end_turn" }, "usage": { "output_tokens": output_tokens } }));
        events.push(json!({ "type": "message_stop" }));
    } else {
        for word in &words {
            events.push(json!({ "model": model, "choices": [{ "index": 0, "delta": { "content": word } }] }));
        }
        events.push(json!({ "model": model, "choices": [{ "index": 0, "delta": {}, "finish_reason": "stop" }] }));
        events.push(json!({ "choices": [], "usage": { "prompt_tokens": input_tokens, "completion_tokens": output_tokens } }));
    }
    for event in events {
        let name = event["type"]
            .as_str()
            .map(|t| format!("event: {t}\n"))
            .unwrap_or_default();
        write!(out, "{name}data: {event}\n\n")?;
        out.flush()?;
        std::thread::sleep(Duration::from_millis(30));
    }
    if !anthropic {
        write!(out, "data: [DONE]\n\n")?;
    }
    out.flush()
}
