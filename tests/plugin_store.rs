//! `runtime install` and `runtime plugins` through the real binary: content
//! addressing, idempotence, list/show/remove with garbage collection, bad
//! input that leaves the store untouched, and plugins built outside the
//! runtime's build (Rust with orchestrator-sdk, Python with componentize-py).

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{cli, root};
use orchestrator_engine::store::{DEFAULT_TENANT, Store};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const GUEST: &str = env!("TEST_GUEST_WASM");

/// Runs the binary against the store in `dir`.
fn runtime(dir: &Path, args: &[&str]) -> Output {
    cli(dir)
        .args(args)
        .output()
        .expect("the runtime binary starts")
}

fn ok(output: Output) -> String {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn refused(output: Output) -> String {
    assert_eq!(
        output.status.code(),
        Some(2),
        "stdout:\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8(output.stderr).unwrap()
}

fn listing(dir: &Path) -> Value {
    serde_json::from_str(&ok(runtime(dir, &["plugins", "list", "--json"]))).unwrap()
}

fn blobs(dir: &Path) -> (usize, usize) {
    Store::open(&dir.join("store.redb"))
        .unwrap()
        .plugin_blob_count(DEFAULT_TENANT)
        .unwrap()
}

fn sha256_of(path: &str) -> String {
    Sha256::digest(std::fs::read(path).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn install_is_content_addressed_idempotent_and_reversible() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let digest = sha256_of(GUEST);

    let out = ok(runtime(
        dir,
        &["install", GUEST, "--allow-http", "api.example.com"],
    ));
    assert!(out.starts_with("installed test-guest@0.1.0"), "{out}");
    assert!(out.contains(&format!("sha256:{digest}")), "{out}");
    assert!(
        out.contains("requested  http: *, 127.0.0.1, 169.254.169.254; dirs: /data (rw)"),
        "{out}"
    );
    assert!(out.contains("granted    http: api.example.com"), "{out}");
    assert!(out.contains("allowed    http: api.example.com"), "{out}");
    assert!(out.contains("withheld   secrets api-token"), "{out}");
    let after_first = listing(dir);
    let counts = blobs(dir);

    let again = ok(runtime(
        dir,
        &["install", GUEST, "--allow-http", "api.example.com"],
    ));
    assert!(
        again.starts_with("already installed: test-guest@0.1.0"),
        "{again}"
    );
    assert_eq!(listing(dir), after_first);
    assert_eq!(blobs(dir), counts);

    // The same bytes under a second name are stored once.
    ok(runtime(
        dir,
        &["install", GUEST, "--name", "twin", "--version", "2.0.0"],
    ));
    assert_eq!(blobs(dir), counts);
    let names: Vec<String> = listing(dir)
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{}@{}",
                r["name"].as_str().unwrap(),
                r["version"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            "evaluation@0.1.0",
            "llm@0.1.0",
            "policy@0.1.0",
            "test-guest@0.1.0",
            "transform@0.1.0",
            "twin@2.0.0"
        ]
    );

    let shown: Value =
        serde_json::from_str(&ok(runtime(dir, &["plugins", "show", "twin", "--json"]))).unwrap();
    assert_eq!(shown["digest"], digest);
    assert_eq!(shown["manifest"]["name"], "test-guest");
    assert_eq!(shown["grants"]["http_hosts"], json!([]));
    let human = ok(runtime(
        dir,
        &["plugins", "show", &format!("sha256:{digest}")],
    ));
    assert!(human.contains("Echoes, fails or misbehaves"), "{human}");

    // Workflows name plugins by name, name@version or digest.
    let flow = dir.join("flow.yaml");
    std::fs::write(
        &flow,
        format!(
            "name: refs\ntasks:\n  - {{ id: a, uses: twin, with: {{ value: 1 }} }}\n  - {{ id: b, uses: test-guest@0.1.0, with: {{ value: 2 }} }}\n  - {{ id: c, uses: 'sha256:{digest}', with: {{ value: 3 }} }}\noutputs:\n  sum: ${{{{ tasks.a.output + tasks.b.output + tasks.c.output }}}}\n"
        ),
    )
    .unwrap();
    let out: Value =
        serde_json::from_str(&ok(runtime(dir, &["run", flow.to_str().unwrap()]))).unwrap();
    assert_eq!(out["sum"], 6);

    let removed = ok(runtime(dir, &["plugins", "remove", "twin@2.0.0"]));
    assert!(removed.contains("its component stays"), "{removed}");
    assert_eq!(blobs(dir), counts);
    let removed = ok(runtime(dir, &["plugins", "remove", "test-guest@0.1.0"]));
    assert!(removed.contains("its component was deleted"), "{removed}");
    assert_eq!(blobs(dir), (counts.0 - 1, counts.1 - 1));
    let error = refused(runtime(dir, &["plugins", "remove", "test-guest@0.1.0"]));
    assert!(error.contains("is not installed"), "{error}");
    let error = refused(runtime(dir, &["run", flow.to_str().unwrap()]));
    assert!(error.contains("uses unknown plugin `twin`"), "{error}");
}

#[test]
fn bad_components_are_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    ok(runtime(dir, &["install", GUEST]));
    let before = listing(dir);
    let counts = blobs(dir);

    let file = |name: &str, bytes: &[u8]| {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let guest = std::fs::read(GUEST).unwrap();
    let cases = [
        (
            file("garbage.wasm", b"#!/bin/sh\nrm -rf /\n"),
            "not WebAssembly at all",
        ),
        (file("empty.wasm", b""), "the file is empty"),
        (
            file("truncated.wasm", &guest[..guest.len() / 2]),
            "may be truncated or damaged",
        ),
        // The smallest core module: magic and version 1, no sections.
        (
            file("core.wasm", b"\0asm\x01\0\0\0"),
            "a core WebAssembly module, not a component",
        ),
        (
            env!("OTHER_WORLD_WASM").to_owned(),
            "exports `greet` but not `describe` and `execute`",
        ),
        (
            env!("DESCRIBE_PANICS_WASM").to_owned(),
            "refuses to describe itself",
        ),
        (
            env!("DESCRIBE_SPINS_WASM").to_owned(),
            "did not finish within the install limits",
        ),
    ];
    for (path, expected) in &cases {
        let error = refused(runtime(dir, &["install", path]));
        assert!(error.contains(expected), "{path}: {error}");
        assert!(error.contains(path.as_str()), "names the file: {error}");
    }
    // Other bytes under a taken name@version.
    let error = refused(runtime(
        dir,
        &[
            "install",
            env!("DESCRIBE_PANICS_WASM"),
            "--name",
            "test-guest",
        ],
    ));
    assert!(error.contains("refuses to describe itself"), "{error}");
    let error = refused(runtime(dir, &["install", env!("CARGO_BIN_EXE_runtime")]));
    assert!(error.contains("not WebAssembly at all"), "{error}");
    let error = refused(runtime(
        dir,
        &["install", GUEST, "--allow-dir", "/data=/no/such/dir"],
    ));
    assert!(error.contains("/no/such/dir"), "{error}");
    let error = refused(runtime(
        dir,
        &["install", GUEST, "--allow-http", "bad host"],
    ));
    assert!(error.contains("not a host pattern"), "{error}");

    assert_eq!(listing(dir), before);
    assert_eq!(blobs(dir), counts);
}

#[test]
fn a_name_version_with_other_bytes_is_a_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    ok(runtime(
        dir,
        &["install", GUEST, "--name", "thing", "--version", "1.0.0"],
    ));
    let before = listing(dir);
    let slug = build_rust_example();
    let error = refused(runtime(
        dir,
        &[
            "install",
            slug.to_str().unwrap(),
            "--name",
            "thing",
            "--version",
            "1.0.0",
        ],
    ));
    assert!(
        error.contains("thing@1.0.0 is already installed with other bytes"),
        "{error}"
    );
    assert!(error.contains(&sha256_of(GUEST)), "{error}");
    assert_eq!(listing(dir), before);
}

/// Builds `examples/plugins/rust-slugify` as its README says, into the
/// target directory the build uses for guests (its dependencies are built).
fn build_rust_example() -> PathBuf {
    let target_dir = Path::new(GUEST)
        .ancestors()
        .nth(3)
        .expect("guests live in <target>/wasm-guests/wasm32-wasip2/guest")
        .to_owned();
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(root())
        .args([
            "build",
            "-p",
            "slugify",
            "--target",
            "wasm32-wasip2",
            "--profile",
            "guest",
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTC_WRAPPER")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .status()
        .unwrap();
    assert!(
        status.success(),
        "building examples/plugins/rust-slugify failed"
    );
    target_dir.join("wasm32-wasip2/guest/slugify.wasm")
}

#[test]
fn a_rust_plugin_built_outside_the_runtime_installs_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let wasm = build_rust_example();
    let wasm = wasm.to_str().unwrap();
    let out = ok(runtime(dir, &["install", wasm]));
    assert!(out.starts_with("installed slugify@0.1.0"), "{out}");
    assert!(out.contains(&sha256_of(wasm)), "{out}");
    let out: Value = serde_json::from_str(&ok(runtime(
        dir,
        &[
            "run",
            "examples/plugins/rust-slugify/flow.yaml",
            "--input",
            "title=Crème Brûlée: A Field Guide!",
        ],
    )))
    .unwrap();
    assert_eq!(out["slug"], "creme-brulee-a-field-guide");
    assert_eq!(out["words"], 5);
}

#[test]
fn a_python_plugin_built_with_componentize_py_installs_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let example = root().join("examples/plugins/python-text-stats");
    let wasm = dir.join("text_stats.wasm");
    let built = common::tools::componentize_py()
        .current_dir(&example)
        .args([
            "-d",
            "../../../wit/0.1.0",
            "-w",
            "executor",
            "componentize",
            "app",
            "-o",
        ])
        .arg(&wasm)
        .output()
        .expect("run componentize-py");
    assert!(
        built.status.success(),
        "componentize-py failed:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let wasm = wasm.to_str().unwrap();
    let out = ok(runtime(dir, &["install", wasm]));
    assert!(out.starts_with("installed text-stats@0.1.0"), "{out}");
    assert!(out.contains(&sha256_of(wasm)), "{out}");
    let again = ok(runtime(dir, &["install", wasm]));
    assert!(again.starts_with("already installed"), "{again}");

    let out: Value = serde_json::from_str(&ok(runtime(
        dir,
        &[
            "run",
            "examples/plugins/python-text-stats/flow.yaml",
            "--input",
            "text=The cat sat. The cat ran! Did the dog see?",
        ],
    )))
    .unwrap();
    assert_eq!(out["stats"]["words"], 10);
    assert_eq!(out["stats"]["sentences"], 3);
    assert_eq!(
        out["stats"]["top_words"][0],
        json!({"word": "the", "count": 3})
    );
    assert_eq!(
        out["stats"]["top_words"][1],
        json!({"word": "cat", "count": 2})
    );
}

#[test]
fn an_operator_marks_a_plugin_as_calling_models() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let out = ok(runtime(dir, &["install", GUEST]));
    assert!(!out.contains("model      yes"), "{out}");
    let out = ok(runtime(dir, &["plugins", "grant", "test-guest", "--model"]));
    assert!(
        out.contains("model      yes: policies run around its calls"),
        "{out}"
    );
    let shown: Value = serde_json::from_str(&ok(runtime(
        dir,
        &["plugins", "show", "test-guest", "--json"],
    )))
    .unwrap();
    assert_eq!(shown["grants"]["model"], true, "{shown}");
    // The built-in `llm` is one from the start.
    let shown: Value =
        serde_json::from_str(&ok(runtime(dir, &["plugins", "show", "llm", "--json"]))).unwrap();
    assert_eq!(shown["grants"]["model"], true, "{shown}");
}

#[test]
fn plugins_built_for_contract_0_1_and_0_2_run_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    // Built against wit/0.1.0 with raw wit-bindgen, as before 0.2.0.
    let old = env!("CONTRACT_0_1_WASM");
    let out = ok(runtime(dir, &["install", old]));
    assert!(out.starts_with("installed contract-0-1@1.0.0"), "{out}");
    ok(runtime(dir, &["install", GUEST]));
    let flow = dir.join("both.yaml");
    std::fs::write(
        &flow,
        "name: both\ntasks:\n  - { id: old, uses: contract-0-1, with: { n: 1 } }\n  - { id: newer, uses: test-guest, needs: [old], with: { mode: context }, limits: { deadline: 20s } }\noutputs:\n  old: ${{ tasks.old.output }}\n  new: ${{ tasks.newer.output }}\n",
    )
    .unwrap();
    let run = runtime(dir, &["run", flow.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&run.stderr).into_owned();
    let out: Value = serde_json::from_str(&ok(run)).unwrap();
    // The 0.1.0 plugin gets its context as 0.1.0 has it.
    assert_eq!(out["old"]["task"], "old");
    assert_eq!(out["old"]["attempt"], 1);
    assert!(
        out["old"]["idempotency_key"]
            .as_str()
            .unwrap()
            .ends_with("/old")
    );
    assert_eq!(out["old"]["input"], json!({ "n": 1 }));
    // The 0.2.0 plugin gets the fields 0.2.0 added.
    assert_eq!(
        out["new"],
        json!({
            "task": "newer",
            "attempt": 1,
            "uses": "test-guest",
            "deadline_ms": 20_000,
            "fallback": false,
            "cancelled": false,
        })
    );
    // Usage from both, the provider only where the contract has one.
    let id = err
        .lines()
        .find_map(|l| l.strip_prefix("execution "))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no execution id in:\n{err}"));
    let status: Value = serde_json::from_str(&ok(runtime(dir, &["status", id, "--json"]))).unwrap();
    let usage = |task: &str| -> Value {
        status["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["id"] == task)
            .unwrap()["usage"]
            .clone()
    };
    assert_eq!(usage("old")["model"], "m-0");
    assert_eq!(usage("old")["input_tokens"], 5);
    assert!(usage("old").get("provider").is_none(), "{}", usage("old"));
    assert_eq!(usage("newer")["model"], "m-1");
    assert_eq!(usage("newer")["provider"], "acme-models");
}

#[test]
fn inputs_and_outputs_are_checked_against_the_plugins_schemas() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    ok(runtime(dir, &["install", env!("CONTRACT_0_1_WASM")]));
    let flow = |name: &str, text: &str| -> String {
        let path = dir.join(format!("{name}.yaml"));
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };

    // Values known before the run: `runtime validate` names the line,
    // the field and the rule, for a third-party plugin and a built-in.
    let known = flow(
        "known",
        "name: known\ntasks:\n  - id: a\n    uses: contract-0-1\n    with:\n      n: -1\n      colour: red\n  - id: b\n    uses: llm\n    needs: [a]\n    with: { model: 3, prompt: '${{ tasks.a.output }}' }\n",
    );
    let error = refused(runtime(dir, &["validate", &known]));
    assert!(error.contains("known.yaml:6:"), "at `n`'s line: {error}");
    assert!(error.contains("/n") && error.contains(">=0"), "{error}");
    assert!(
        error.contains("'colour' not allowed"),
        "not a property: {error}"
    );
    assert!(
        error.contains("known.yaml:11:") && error.contains("/model") && error.contains("string"),
        "the built-in's schema: {error}"
    );

    // Values only the run knows: the call is refused before the plugin
    // runs, as `invalid_input` naming the field.
    let late = flow(
        "late",
        "name: late\ntasks:\n  - { id: a, uses: contract-0-1, with: { n: '${{ \"one\" }}' } }\n",
    );
    ok(runtime(dir, &["validate", &late]));
    let run = runtime(dir, &["run", &late]);
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains("invalid_input") || err.contains("invalid-input"),
        "{err}"
    );
    assert!(
        err.contains("input schema of contract-0-1")
            && err.contains("/n")
            && err.contains("integer"),
        "{err}"
    );

    // An answer that breaks the plugin's own output schema fails the task.
    let lying = flow(
        "lying",
        "name: lying\ntasks:\n  - { id: a, uses: contract-0-1, with: { n: 1, lie: true } }\n",
    );
    let run = runtime(dir, &["run", &lying]);
    assert!(!run.status.success());
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains("does not fit its own output schema") && err.contains("task"),
        "{err}"
    );
}
