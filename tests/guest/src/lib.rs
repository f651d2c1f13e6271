//! A plugin for tests and benches whose behaviour its input chooses.
//!
//! `with: { mode: <mode>, ... }`, where mode is one of:
//! - `echo` (default): returns `value` (or `null`);
//! - `fail`: fails with the error kind in `kind` and the text in `message`;
//! - `loop`: spins forever (the fuel budget or deadline must stop it);
//! - `alloc`: allocates without bound (the memory cap must stop it);
//! - `sleep`: sleeps for an hour (the deadline must stop it);
//! - `panic`: panics (a trap);
//! - `escape`: tries to read a file and the environment, and returns what it saw.

use orchestrator_sdk::{Context, Error, Info, Level, Plugin, Value, export_plugin, log};
use serde::Deserialize;

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
    /// Spin forever.
    Loop,
    /// Allocate without bound.
    Alloc,
    /// Sleep for an hour.
    Sleep,
    /// Panic.
    Panic,
    /// Try to read a host file and the environment.
    Escape,
}

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
    }

    fn execute(ctx: &Context, input: Input) -> Result<Value, Error> {
        match input.mode {
            Mode::Echo => Ok(input.value),
            Mode::Fail => Err(match input.kind.as_str() {
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
                std::thread::sleep(std::time::Duration::from_secs(3600));
                Ok(Value::Null)
            }
            Mode::Panic => panic!("test-guest was asked to panic"),
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
        }
    }
}

export_plugin!(TestGuest);
