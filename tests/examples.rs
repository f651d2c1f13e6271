//! The examples and the CLI, driven through the real `runtime` binary.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{Value, json};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn runtime(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_runtime"))
        .args(args)
        .current_dir(root())
        // One store for these tests, so built-ins are installed (compiled) once.
        .env(
            "ORCHESTRATOR_STORE",
            Path::new(env!("CARGO_TARGET_TMPDIR")).join("examples.redb"),
        )
        .env(
            "ORCHESTRATOR_CONFIG",
            root().join("tests/fixtures/no-config.yaml"),
        )
        .env_remove("RUST_LOG")
        .output()
        .expect("the runtime binary starts")
}

fn stdout_json(output: &Output) -> Value {
    assert!(
        output.status.success(),
        "exit {:?}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("stdout is JSON")
}

#[test]
fn hello_greets_and_shouts() {
    let out = stdout_json(&runtime(&["run", "examples/hello.yaml"]));
    assert_eq!(
        out,
        json!({"greeting": "Hello, world!", "shouted": "HELLO, WORLD!"})
    );
}

#[test]
fn hello_takes_inputs_from_flags_and_files() {
    let out = stdout_json(&runtime(&[
        "run",
        "examples/hello.yaml",
        "--input",
        "who=Ada",
    ]));
    assert_eq!(out["greeting"], "Hello, Ada!");

    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("inputs.json");
    std::fs::write(&inputs, r#"{"who": "Grace"}"#).unwrap();
    let out = stdout_json(&runtime(&[
        "run",
        "examples/hello.yaml",
        "--inputs",
        inputs.to_str().unwrap(),
    ]));
    assert_eq!(out["shouted"], "HELLO, GRACE!");
}

#[test]
fn progress_shows_each_task_with_duration_and_fuel() {
    let output = runtime(&["run", "examples/hello.yaml"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    for task in ["greet", "shout"] {
        let started = stderr
            .lines()
            .any(|l| l.contains("started") && l.contains(task));
        let finished = stderr
            .lines()
            .find(|l| l.contains(" ok ") && l.contains(task))
            .unwrap_or_else(|| panic!("no finish line for {task} in:\n{stderr}"));
        assert!(started, "no start line for {task} in:\n{stderr}");
        assert!(
            finished.contains("fuel ") && (finished.contains("ms") || finished.contains("µs")),
            "{finished}"
        );
    }
}

#[test]
fn json_report_has_every_task_and_its_metering() {
    let out = stdout_json(&runtime(&[
        "run",
        "examples/hello.yaml",
        "--output",
        "json",
    ]));
    assert_eq!(out["status"], "succeeded");
    assert_eq!(out["outputs"]["greeting"], "Hello, world!");
    let tasks = out["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 2);
    for task in tasks {
        assert_eq!(task["status"], "succeeded");
        assert!(task["fuel"].as_u64().unwrap() > 0, "{task}");
        assert!(task["duration_us"].as_u64().unwrap() > 0, "{task}");
        assert!(task["peak_memory"].as_u64().unwrap() > 0, "{task}");
    }
}

#[test]
fn conditional_branches_run_only_the_chosen_branch() {
    let out = stdout_json(&runtime(&[
        "run",
        "examples/conditional_branches.yaml",
        "--output",
        "json",
    ]));
    assert_eq!(out["outputs"]["route"], "on-call");
    let status = |id: &str| {
        out["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == id)
            .unwrap()["status"]
            .clone()
    };
    assert_eq!(status("page_on_call"), "succeeded");
    assert_eq!(status("queue_for_tomorrow"), "skipped");
    assert_eq!(status("reply"), "succeeded");

    let calm = stdout_json(&runtime(&[
        "run",
        "examples/conditional_branches.yaml",
        "--input",
        "ticket=How do I export my data?",
    ]));
    assert_eq!(calm["route"], "queue");
    assert!(
        calm["reply"]
            .as_str()
            .unwrap()
            .contains("queued a 6-word ticket")
    );
}

#[test]
fn multi_stage_pipeline_merges_parallel_stages() {
    let out = stdout_json(&runtime(&["run", "examples/multi_stage_pipeline.yaml"]));
    assert_eq!(out["stats"]["count"], 4);
    assert_eq!(out["stats"]["positive"], 2);
    assert_eq!(out["stats"]["about_delivery"], 2);
    assert!(
        out["report"]
            .as_str()
            .unwrap()
            .starts_with("4 reviews of the kettle")
    );
}

#[test]
fn resilient_pipeline_retries_falls_back_and_degrades() {
    let output = runtime(&["run", "examples/resilient_pipeline.yaml"]);
    let progress = String::from_utf8_lossy(&output.stderr).into_owned();
    let out = stdout_json(&output);
    assert_eq!(
        out["report"],
        "The kettle boils fast. (sentiment: neutral; keywords: failed)"
    );
    for expected in [
        "(3 attempts, fallback)",
        "DEGRADED  sentiment",
        "FAILED (continued)  keywords",
    ] {
        assert!(
            progress.contains(expected),
            "`{expected}` missing:\n{progress}"
        );
    }
}

#[test]
fn fan_out_scores_every_sentence_in_order() {
    let out = stdout_json(&runtime(&["run", "examples/fan_out.yaml"]));
    let scores = out["scores"].as_array().unwrap();
    assert_eq!(scores.len(), 4);
    assert_eq!(scores[0], json!({"n": 0, "words": 4}));
    assert_eq!(scores[1], Value::Null, "the unreadable sentence failed");
    assert_eq!(scores[3], json!({"n": 3, "words": 6}));
    assert_eq!(out["words"], 14);
}

#[test]
fn json_workflows_run_too() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("flow.json");
    std::fs::write(
        &file,
        r#"{"name": "j", "inputs": {"n": {"type": "integer", "default": 20}},
            "tasks": [{"id": "double", "uses": "transform", "with": {"n": "${{ inputs.n }}", "script": "n * 2"}}],
            "outputs": {"answer": "${{ tasks.double.output + 2 }}"}}"#,
    )
    .unwrap();
    let out = stdout_json(&runtime(&[
        "run",
        file.to_str().unwrap(),
        "--input",
        "n=20",
    ]));
    assert_eq!(out, json!({"answer": 42}));
}

#[test]
fn validate_accepts_the_examples() {
    for example in [
        "hello",
        "conditional_branches",
        "multi_stage_pipeline",
        "resilient_pipeline",
        "fan_out",
    ] {
        let file = format!("examples/{example}.yaml");
        let output = runtime(&["validate", &file]);
        assert!(
            output.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(String::from_utf8_lossy(&output.stdout).contains("is valid"));
    }
}

#[test]
fn validate_rejects_a_cycle_and_names_it() {
    let output = runtime(&["validate", "tests/fixtures/invalid/cycle.yaml"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("draft -> review -> revise -> draft"),
        "{stderr}"
    );
}

#[test]
fn run_refuses_an_invalid_workflow_without_running_anything() {
    let output = runtime(&["run", "tests/fixtures/invalid/unknown_task.yaml"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(output.stdout.is_empty());
    assert!(!String::from_utf8_lossy(&output.stderr).contains("started"));
}

#[test]
fn missing_and_unknown_inputs_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("needs_input.yaml");
    std::fs::write(
        &file,
        "name: n\ninputs:\n  topic: { type: string }\ntasks:\n  - id: t\n    uses: transform\n    with: { script: '1' }\n",
    )
    .unwrap();
    let file = file.to_str().unwrap();
    let missing = runtime(&["run", file]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("input `topic` is required"));

    let unknown = runtime(&["run", file, "--input", "topic=x", "--input", "topik=y"]);
    assert_eq!(unknown.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no input `topik`"));
}

#[test]
fn graph_draws_dot_and_mermaid() {
    let dot = runtime(&["graph", "examples/multi_stage_pipeline.yaml"]);
    let dot = String::from_utf8_lossy(&dot.stdout);
    assert!(dot.starts_with("digraph \"multi_stage_pipeline\""), "{dot}");
    assert!(dot.contains("\"clean\" -> \"sentiment\";"), "{dot}");
    assert!(dot.contains("\"merge\" -> \"report\";"), "{dot}");

    let mermaid = runtime(&[
        "graph",
        "examples/conditional_branches.yaml",
        "--format",
        "mermaid",
    ]);
    let mermaid = String::from_utf8_lossy(&mermaid.stdout);
    assert!(mermaid.contains("flowchart LR"), "{mermaid}");
    assert!(mermaid.contains("t0 --> t1"), "{mermaid}");
    // Conditional tasks are drawn as hexagons.
    assert!(
        mermaid.contains("t1{{\"page_on_call<br/>transform\"}}"),
        "{mermaid}"
    );
}

#[test]
fn garbage_wasm_is_refused_with_the_plugin_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("junk.wasm"), b"this is not wasm").unwrap();
    let file = dir.path().join("flow.yaml");
    std::fs::write(&file, "name: g\ntasks:\n  - id: t\n    uses: junk.wasm\n").unwrap();
    let output = runtime(&["run", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("plugin `junk` is not a valid WebAssembly component")
            && stderr.contains("not WebAssembly at all"),
        "{stderr}"
    );
}

#[test]
fn json_logs_are_json_lines() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("flow.yaml");
    let guest = env!("TEST_GUEST_WASM");
    std::fs::write(
        &file,
        format!("name: l\ntasks:\n  - id: spin\n    uses: {guest}\n    with: {{ mode: loop }}\n    limits: {{ fuel: 1000000 }}\n"),
    )
    .unwrap();
    let output = runtime(&["--log-format", "json", "run", file.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let log: Value = stderr
        .lines()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| panic!("no JSON log line in:\n{stderr}"));
    assert_eq!(log["fields"]["message"], "looping forever");
    assert_eq!(log["fields"]["task"], "spin");
}

#[test]
fn the_readme_workflow_runs() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let start = readme.find("## A workflow").unwrap();
    let block = &readme[start..];
    let yaml = block
        .split("```yaml\n")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("readme.yaml");
    std::fs::write(&file, yaml).unwrap();
    let out = stdout_json(&runtime(&["run", file.to_str().unwrap()]));
    assert_eq!(out, json!({"shouted": "HELLO, WORLD!"}));
}

/// The binary with the example config (prices, keys from an environment
/// that has none) against a fresh store in `dir`.
fn offline(dir: &Path) -> impl Fn(&[&str]) -> Output + '_ {
    move |args| {
        Command::new(env!("CARGO_BIN_EXE_runtime"))
            .args(["--config", "examples/config.yaml"])
            .args(args)
            .current_dir(root())
            .env("ORCHESTRATOR_STORE", dir.join("store.redb"))
            .env_remove("OPENAI_API_KEY")
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    }
}

/// Runs an example from its cassette; returns its outputs and what
/// `runtime status` says of the run.
fn replay(cli: &impl Fn(&[&str]) -> Output, example: &str) -> (Value, String) {
    let file = format!("examples/{example}.yaml");
    let cassette = format!("examples/cassettes/{example}.json");
    let out = cli(&["run", &file, "--replay", &cassette]);
    let outputs = stdout_json(&out);
    let progress = String::from_utf8_lossy(&out.stderr);
    let id = progress
        .lines()
        .next()
        .unwrap()
        .trim_start_matches("execution ");
    let status = String::from_utf8_lossy(&cli(&["status", id]).stdout).into_owned();
    (outputs, status)
}

/// The README's model example, offline: a fresh store, the recorded
/// cassette, the example config's prices; no key and no network.
#[test]
fn the_summarize_example_replays_offline_with_tokens_and_cost() {
    let dir = tempfile::tempdir().unwrap();
    let (outputs, status) = replay(&offline(dir.path()), "summarize");
    let summary = outputs["summary"].as_str().unwrap();
    assert!(
        summary.starts_with("Each pipeline step runs in its own WebAssembly sandbox")
            && summary.ends_with("which also counts their tokens."),
        "{summary}"
    );
    // 212 tokens in at $0.15 and 84 out at $0.60 per million.
    assert!(
        status.contains("usage      tokens 212 in, 84 out, $0.000082"),
        "{status}"
    );
}

/// Summarize, redact, grade by metrics and by a model as judge, offline;
/// a second run answers the summaries from the response cache.
#[test]
fn the_summarize_and_grade_example_shows_cost_policy_and_scores() {
    let dir = tempfile::tempdir().unwrap();
    let cli = offline(dir.path());
    let (outputs, status) = replay(&cli, "summarize_and_grade");
    let summary = outputs["summary"].as_str().unwrap();
    assert!(
        summary.contains("contacted at [EMAIL] or [PHONE]") && !summary.contains("@example.org"),
        "{summary}"
    );
    assert_eq!(outputs["policy"], "redact");
    assert_eq!(outputs["metrics_passed"], true);
    assert_eq!(outputs["judge"]["score"], 4);
    for line in [
        "usage      tokens 417 in, 112 out, $0.000130",
        "policy redact: redact: personal data masked (1 email, 1 phone)",
        "evaluation metrics: rouge_l 0.56, bleu 0.29, contains 1.00",
        "evaluation verdict: numeric 1.00",
        "evaluations: 2 passed, 0 failed",
    ] {
        assert!(status.contains(line), "`{line}` missing from:\n{status}");
    }
    let (_, again) = replay(&cli, "summarize_and_grade");
    assert!(
        again.contains("usage      tokens 239 in, 36 out, $0.000057; 1 answered from the cache"),
        "{again}"
    );
}
