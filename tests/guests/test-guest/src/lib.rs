//! A plugin for tests and benches whose behaviour its input chooses.
//!
//! `with: { mode: <mode>, ... }`, where mode is one of:
//! - `echo` (default): returns `value` (or `null`);
//! - `fail`: fails with the error kind in `kind` and the text in `message`;
//! - `flaky`: fails like `fail` in its first `times` attempts (by the
//!   attempt number the host passes), then returns `value`;
//! - `loop`: spins forever (the fuel budget or deadline must stop it);
//! - `alloc`: allocates without bound (the memory cap must stop it);
//! - `sleep`: sleeps for `ms` milliseconds, or an hour when `ms` is 0 (the
//!   deadline must stop it);
//! - `mark`: appends a line to `/data/<task id>` (so tests can count how
//!   often a task ran), sleeps `ms`, and returns `value`;
//! - `panic`: panics (a trap);
//! - `recurse`: recurses without bound (the stack limit must stop it);
//! - `read`: reads the file at `path` and returns its text;
//! - `write`: writes `value` (a string) to the file at `path`;
//! - `http`: sends a GET to `url` and returns status and body;
//! - `env`: returns the value of the environment variable `name`;
//! - `escape`: tries to read a file and the environment, and returns what it saw;
//! - `big_output`: returns a string of `size` bytes;
//! - `burst`: starts `times` GETs to `url` at once, without waiting for
//!   answers; fails naming the refusals, if the host refused any;
//! - `descriptors`: opens the file at `path` `times` times, keeping every
//!   handle; returns how many it got;
//! - `log_flood`: writes `times` log lines;
//! - `emit_flood`: emits `times` pieces of streamed text of `size` bytes;
//! - `stream`: emits `times` pieces of text, `tok0 `, `tok1 `, ..., `ms`
//!   milliseconds apart, as a model streams its answer;
//! - `span`: sleeps `ms` milliseconds and returns when it started and
//!   ended (`{start, end}`, ms since the epoch by the wall clock);
//! - `initialized`: returns how often `initialize` ran in this instance's
//!   past (1 when the host pre-initialised it once and snapshotted it);
//! - `scribble`: counts its calls in a static and keeps `size` bytes per
//!   call in a static list on the heap, and returns `{calls, kept}` (1 and
//!   `size` in an instance that starts clean).
//!
//! `fail` with a `size` fails with a message of `size` bytes.
//!
//! Failures of `read`, `write`, `http` and `env` come back as `denied` when
//! the sandbox refused, `fatal` otherwise.
//!
//! It asks for every kind of capability (`describe`), addresses included
//! (`127.0.0.1`, `169.254.169.254`), so that tests show the operator's
//! grants, not the plugin's wishes, decide what it gets.

use orchestrator_sdk::http::HttpError;
use orchestrator_sdk::{
    Capabilities, Context, Error, Info, Level, Plugin, Usage, Value, export_plugin, log,
};
use serde::Deserialize;
use std::sync::atomic::{AtomicU32, Ordering};

/// The task's `with:` values.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Input {
    #[serde(default)]
    mode: Mode,
    #[serde(default)]
    value: Value,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    path: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    size: usize,
    #[serde(default)]
    ms: u64,
    #[serde(default)]
    times: u32,
}

/// What the plugin does.
#[derive(Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Return `value`.
    #[default]
    Echo,
    /// Fail with `kind` and `message`.
    Fail,
    /// Fail in the first `times` attempts, then echo.
    Flaky,
    /// Spin forever.
    Loop,
    /// Allocate without bound.
    Alloc,
    /// Sleep for `ms`, or an hour.
    Sleep,
    /// Count an execution in `/data`, then echo.
    Mark,
    /// Panic.
    Panic,
    /// Recurse without bound.
    Recurse,
    /// Read a file.
    Read,
    /// Write a file.
    Write,
    /// Send an HTTP GET.
    Http,
    /// Read an environment variable.
    Env,
    /// Try to read a host file and the environment.
    Escape,
    /// Return a huge output.
    BigOutput,
    /// Start many requests at once.
    Burst,
    /// Hold many open files.
    Descriptors,
    /// Log without end.
    LogFlood,
    /// Stream text without end.
    EmitFlood,
    /// Stream numbered pieces of text, slowly.
    Stream,
    /// Sleep, and say when.
    Span,
    /// Say how often `initialize` ran before this call.
    Initialized,
    /// Count the call in a static and keep `size` bytes on the heap.
    Scribble,
    /// Say what the context tells it, and report usage with a provider.
    Context,
}

/// How often `initialize` ran: kept in the snapshot the host takes after it.
static INITIALIZED: AtomicU32 = AtomicU32::new(0);

/// Calls of `scribble` in this instance, and what they kept.
static CALLS: AtomicU32 = AtomicU32::new(0);
static KEPT: std::sync::Mutex<Vec<Vec<u8>>> = std::sync::Mutex::new(Vec::new());

/// The test plugin.
pub struct TestGuest;

impl Plugin for TestGuest {
    type Input = Input;
    type Output = Value;

    fn info() -> Info {
        Info::new(
            "test-guest",
            "0.1.0",
            "Echoes, fails or misbehaves as its input says.",
        )
        .capabilities(Capabilities {
            http_hosts: vec!["*".into(), "127.0.0.1".into(), "169.254.169.254".into()],
            filesystem: vec![("/data".into(), true)],
            env: vec!["HOME".into(), "TEST_GUEST_TOKEN".into()],
            secrets: vec!["api-token".into()],
        })
    }

    fn initialize() {
        INITIALIZED.fetch_add(1, Ordering::Relaxed);
    }

    fn execute(ctx: &Context, input: Input) -> Result<Value, Error> {
        match input.mode {
            Mode::Initialized => Ok(Value::from(INITIALIZED.load(Ordering::Relaxed))),
            Mode::Scribble => {
                let calls = CALLS.fetch_add(1, Ordering::Relaxed) + 1;
                let mut kept = KEPT.lock().map_err(|_| Error::Fatal("poisoned".into()))?;
                kept.push(vec![0xa5; input.size]);
                let bytes: usize = kept.iter().map(Vec::len).sum();
                Ok(serde_json::json!({ "calls": calls, "kept": bytes }))
            }
            Mode::Echo => Ok(input.value),
            Mode::Context => {
                ctx.record_usage(Usage {
                    input_tokens: 7,
                    output_tokens: 3,
                    model: Some("m-1".into()),
                    provider: Some("acme-models".into()),
                });
                Ok(serde_json::json!({
                    "task": ctx.task_id,
                    "attempt": ctx.attempt,
                    "uses": ctx.uses,
                    "deadline_ms": ctx.deadline.as_millis() as u64,
                    "fallback": ctx.fallback,
                    "cancelled": ctx.cancelled(),
                }))
            }
            Mode::Flaky if ctx.attempt > input.times => Ok(input.value),
            Mode::Fail if input.size > 0 => Err(Error::Fatal("e".repeat(input.size))),
            Mode::Fail | Mode::Flaky => Err(match input.kind.as_str() {
                "invalid-input" => Error::InvalidInput(input.message),
                "retryable" => Error::Retryable(input.message),
                "denied" => Error::Denied(input.message),
                _ => Error::Fatal(input.message),
            }),
            Mode::Loop => {
                log(Level::Info, "looping forever", &[("task", &ctx.task_id)]);
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            Mode::Alloc => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            Mode::Sleep => {
                let ms = if input.ms == 0 { 3_600_000 } else { input.ms };
                std::thread::sleep(std::time::Duration::from_millis(ms));
                Ok(Value::Null)
            }
            Mode::Mark => {
                use std::io::Write as _;
                let path = format!("/data/{}", ctx.task_id);
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .and_then(|mut f| f.write_all(format!("{}\n", ctx.attempt).as_bytes()))
                    .map_err(|e| io_error("mark", &path, &e))?;
                std::thread::sleep(std::time::Duration::from_millis(input.ms));
                Ok(input.value)
            }
            Mode::Panic => panic!("test-guest was asked to panic"),
            Mode::Recurse => Ok(Value::from(recurse(std::hint::black_box(1)))),
            Mode::Read => std::fs::read_to_string(&input.path)
                .map(Value::from)
                .map_err(|e| io_error("read", &input.path, &e)),
            Mode::Write => {
                let text = input.value.as_str().unwrap_or_default();
                std::fs::write(&input.path, text)
                    .map(|()| Value::from(text.len()))
                    .map_err(|e| io_error("write", &input.path, &e))
            }
            Mode::Http => match orchestrator_sdk::http::get(&input.url) {
                Ok(response) => Ok(serde_json::json!({
                    "status": response.status,
                    "body": response.text(),
                    "location": response.header("location"),
                })),
                Err(HttpError::Denied(m)) => Err(Error::Denied(format!("GET {}: {m}", input.url))),
                Err(e) => Err(Error::Fatal(format!("GET {}: {e}", input.url))),
            },
            Mode::Env => std::env::var(&input.name).map(Value::from).map_err(|_| {
                Error::Denied(format!(
                    "environment variable `{}` is not visible",
                    input.name
                ))
            }),
            Mode::Escape => {
                let file = match std::fs::read_to_string("/etc/hostname") {
                    Ok(text) => format!("read {} bytes", text.len()),
                    Err(e) => format!("denied: {e}"),
                };
                let env: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
                let cwd = std::env::current_dir()
                    .map(|p| p.display().to_string())
                    .ok();
                Ok(serde_json::json!({ "file": file, "env": env, "cwd": cwd }))
            }
            Mode::BigOutput => Ok(Value::from("x".repeat(input.size))),
            Mode::Burst => burst(&input.url, input.times),
            Mode::Descriptors => {
                let mut open = Vec::new();
                for _ in 0..input.times {
                    match std::fs::File::open(&input.path) {
                        Ok(file) => open.push(file),
                        Err(e) => return Err(io_error("open", &input.path, &e)),
                    }
                }
                Ok(Value::from(open.len()))
            }
            Mode::EmitFlood => {
                let piece = "x".repeat(input.size);
                for _ in 0..input.times {
                    orchestrator_sdk::emit("text", &piece);
                }
                Ok(Value::from(input.times))
            }
            Mode::Span => {
                let now = || {
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis() as u64)
                };
                let start = now();
                std::thread::sleep(std::time::Duration::from_millis(input.ms));
                Ok(serde_json::json!({ "start": start, "end": now() }))
            }
            Mode::Stream => {
                for i in 0..input.times {
                    if i > 0 {
                        std::thread::sleep(std::time::Duration::from_millis(input.ms));
                    }
                    orchestrator_sdk::emit("text", &format!("tok{i} "));
                }
                Ok(Value::from(input.times))
            }
            Mode::LogFlood => {
                for i in 0..input.times {
                    log(Level::Info, "flooding the log", &[("line", &i.to_string())]);
                }
                Ok(Value::from(input.times))
            }
        }
    }
}

/// Starts `times` GETs to `url` without waiting for any answer, then
/// gives them 300 ms and counts those the host refused by then.
fn burst(url: &str, times: u32) -> Result<Value, Error> {
    use wasip2::clocks::monotonic_clock;
    use wasip2::http::outgoing_handler;
    use wasip2::http::types::{Fields, OutgoingRequest, Scheme};
    let authority = url
        .strip_prefix("http://")
        .and_then(|rest| rest.split('/').next())
        .ok_or_else(|| Error::InvalidInput(format!("`{url}` is not an http:// URL")))?;
    let mut started = Vec::new();
    let mut refused = 0;
    for _ in 0..times {
        let request = OutgoingRequest::new(Fields::new());
        let _ = request.set_scheme(Some(&Scheme::Http));
        let _ = request.set_authority(Some(authority));
        let _ = request.set_path_with_query(Some("/"));
        match outgoing_handler::handle(request, None) {
            Ok(future) => started.push(future),
            Err(_) => refused += 1,
        }
    }
    let timer = monotonic_clock::subscribe_duration(300_000_000);
    let mut pending: Vec<_> = started.iter().map(|f| (f, f.subscribe())).collect();
    loop {
        let mut pollables: Vec<&wasip2::io::poll::Pollable> =
            pending.iter().map(|(_, p)| p).collect();
        pollables.push(&timer);
        let ready = wasip2::io::poll::poll(&pollables);
        if ready.iter().any(|&i| i as usize == pending.len()) {
            break;
        }
        let mut answered: Vec<usize> = ready.into_iter().map(|i| i as usize).collect();
        answered.sort_unstable();
        for i in answered.into_iter().rev() {
            let (future, _) = pending.remove(i);
            if let Some(Ok(Err(_))) = future.get() {
                refused += 1;
            }
        }
    }
    if refused > 0 {
        return Err(Error::Fatal(format!(
            "{refused} of {times} requests were refused"
        )));
    }
    // None refused: wait for the answers (the deadline ends it if none come).
    for (_, pollable) in &pending {
        pollable.block();
    }
    Ok(Value::from(started.len()))
}

fn io_error(what: &str, path: &str, e: &std::io::Error) -> Error {
    let message = format!("{what} {path}: {e}");
    match e.kind() {
        std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::NotFound => {
            Error::Denied(message)
        }
        _ => Error::Fatal(message),
    }
}

/// Recurses until the WebAssembly stack runs out. Only scalars live in the
/// frame (no shadow stack), and the work after the call keeps the compiler
/// from turning it into a loop.
#[inline(never)]
fn recurse(n: u64) -> u64 {
    if n == 0 {
        return 0;
    }
    let below = recurse(n.wrapping_mul(3) | 1);
    below.rotate_left(7).wrapping_mul(31) ^ n
}

export_plugin!(TestGuest);
