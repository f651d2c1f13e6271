//! The built-in `transform` executor: runs a Rhai script over the task's input.
//!
//! `with: { script: "...", <name>: <value>, ... }`: every key other than
//! `script` becomes a variable of that name in the script, and the value of the
//! script's last expression is the task's output. Rhai's own operation counter
//! is switched off: the host's fuel budget and deadline bound the CPU a script
//! may use, the host's memory cap bounds what it allocates.
//!
//! The Rhai engine is built once, in [`Plugin::initialize`]: the host
//! snapshots the plugin after it, so a call only compiles and runs its script.

use orchestrator_sdk::{Context, Error, Info, Plugin, Value, export_plugin, json};
use rhai::{Dynamic, Engine, Scope};
use serde::Deserialize;
use serde_json::Map;

/// The task's `with:` values.
#[derive(Deserialize)]
pub struct Input {
    script: String,
    #[serde(flatten)]
    values: Map<String, Value>,
}

/// Runs Rhai scripts over JSON.
pub struct Transform;

impl Plugin for Transform {
    type Input = Input;
    type Output = Value;

    fn info() -> Info {
        Info::new(
            "transform",
            env!("CARGO_PKG_VERSION"),
            "Runs a Rhai script over named JSON values; the last expression is the output.",
        )
        .input_schema(json!({
            "type": "object",
            "required": ["script"],
            "properties": { "script": { "type": "string" } },
            "additionalProperties": true
        }))
    }

    fn initialize() {
        ENGINE.with(|_| ());
    }

    fn execute(_: &Context, input: Input) -> Result<Value, Error> {
        ENGINE.with(|engine| run(engine, input))
    }
}

thread_local! {
    /// One engine per instance, built by `initialize` before the snapshot.
    static ENGINE: Engine = engine();
}

fn run(engine: &Engine, input: Input) -> Result<Value, Error> {
    let ast = engine
        .compile(&input.script)
        .map_err(|e| Error::InvalidInput(format!("script does not compile: {e}")))?;
    let mut scope = Scope::new();
    for (name, value) in input.values {
        let value = rhai::serde::to_dynamic(value)
            .map_err(|e| Error::InvalidInput(format!("value `{name}`: {e}")))?;
        scope.push_dynamic(name, value);
    }
    let result: Dynamic = engine
        .eval_ast_with_scope(&mut scope, &ast)
        .map_err(|e| Error::Fatal(format!("script failed: {e}")))?;
    rhai::serde::from_dynamic(&result)
        .map_err(|e| Error::Fatal(format!("script result is not JSON: {e}")))
}

fn engine() -> Engine {
    let mut engine = Engine::new();
    // CPU is bounded by the host's fuel and deadline, not by Rhai's counter.
    engine.set_max_operations(0);
    engine
}

export_plugin!(Transform);
