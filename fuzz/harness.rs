//! What each fuzz target does with one input, shared by the targets in
//! `fuzz/fuzz_targets/` (run by `cargo fuzz`) and `tests/fuzz_corpus.rs`
//! (which replays every kept input in `cargo test`). Each function takes
//! bytes from outside and must return, whatever they are: an error is
//! fine, a panic, a hang or an abort is a bug.

#![allow(dead_code, reason = "each includer uses the targets it needs")]

use std::sync::{Arc, OnceLock};

use orchestrator_engine::expr::{Bindings, Expressions};
use orchestrator_engine::graph::Format;
use orchestrator_engine::plugin::{self, Grants, InstallRequest};
use orchestrator_engine::sandbox::Sandbox;
use orchestrator_engine::store::{DEFAULT_TENANT, Store};
use orchestrator_engine::workflow::{self, PluginCatalog};
use serde_json::{Value, json};

/// Lets every `uses:` through, so validation goes on to the expressions.
struct AnyPlugin;

impl PluginCatalog for AnyPlugin {
    fn check(&self, _: &str) -> Result<(), String> {
        Ok(())
    }
}

/// (a) Workflow text, then (after a NUL byte, if any) inputs as JSON:
/// parse, validate, plan, draw the graph, and render every template and
/// condition with those inputs as every task's output.
pub fn workflow(data: &[u8]) {
    let (text, inputs) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &b"null"[..]),
    };
    let text = String::from_utf8_lossy(text);
    let expressions = Expressions::new();
    let Ok(plan) = workflow::load(&text, "fuzz.yaml", &expressions, &AnyPlugin) else {
        return;
    };
    let _ = plan.render(Format::Dot);
    let _ = plan.render(Format::Mermaid);
    let inputs: Value = serde_json::from_slice(inputs).unwrap_or(Value::Null);
    let output = expressions.convert(&inputs);
    let mut bindings = Bindings::new(&inputs);
    for task in &plan.tasks {
        bindings.add_task(&task.id, "succeeded", output.clone());
    }
    bindings.add_value("item", &inputs);
    bindings.add_value("index", &json!(0));
    for task in &plan.tasks {
        if let Some(when) = &task.when {
            let _ = expressions.eval_condition(when, &bindings);
        }
        if let Some(for_each) = &task.for_each {
            let _ = expressions.eval(&for_each.items, &bindings);
        }
        let _ = expressions.render(&task.input, &bindings);
        if let Some(fallback) = &task.fallback {
            let _ = expressions.render(&fallback.input, &bindings);
        }
    }
    for (_, template) in &plan.outputs {
        let _ = expressions.render(template, &bindings);
    }
}

struct Installer {
    runtime: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
    store: Store,
    sandbox: Arc<Sandbox>,
}

fn installer() -> &'static Installer {
    static INSTALLER: OnceLock<Installer> = OnceLock::new();
    INSTALLER.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = Store::open(&dir.path().join("store.redb")).expect("a store");
        Installer {
            runtime: tokio::runtime::Runtime::new().expect("a tokio runtime"),
            _dir: dir,
            store,
            sandbox: Sandbox::new().expect("the sandbox starts"),
        }
    })
}

/// (b) `runtime install` of arbitrary bytes, with every grant an operator
/// could give refused or narrowed by what the bytes ask for.
pub fn install(data: &[u8]) {
    let installer = installer();
    let request = InstallRequest {
        bytes: data,
        source: "fuzz.wasm".to_owned(),
        name: None,
        version: None,
        grants: Grants {
            http_hosts: vec!["*".to_owned()],
            ..Grants::default()
        },
        builtin: false,
        quota: Default::default(),
    };
    let _ = installer.runtime.block_on(plugin::install(
        &installer.store,
        &installer.sandbox,
        DEFAULT_TENANT,
        request,
    ));
}

/// (c) A request line another process sends to the owner of an
/// execution (`executions/<id>.sock`).
pub fn control_request(data: &[u8]) {
    let _ = orchestrator_engine::control::Request::decode(data);
}
