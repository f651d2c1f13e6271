//! Pre-initialisation through the real binary: a plugin's `initialize`
//! (its `wizer-initialize` export) runs once when it is compiled and every
//! call starts from the snapshot; the built-ins start with their engines,
//! detectors and meta-schemas ready; an initialisation that spins is
//! stopped under its limits and the plugin refused.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

mod common;

use common::{cli, run_cli, status_json, task_json};
use serde_json::Value;

#[test]
fn initialize_runs_once_at_install_and_every_call_starts_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let out = cli(dir)
        .args(["install", env!("TEST_GUEST_WASM")])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Two tasks, each in a fresh instance: both see the one initialisation
    // of the snapshot (0 would mean none ran, 2 that the call ran it).
    let (id, out) = run_cli(
        dir,
        "name: init\ntasks:\n\
         \x20 - { id: a, uses: test-guest, with: { mode: initialized } }\n\
         \x20 - { id: b, uses: test-guest, needs: [a], with: { mode: initialized } }\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let view = status_json(dir, &id);
    for task in ["a", "b"] {
        assert_eq!(task_json(&view, task)["output"], 1, "{view}");
    }
    // The same file named by path is compiled (and pre-initialised) by the run.
    let (id, out) = run_cli(
        dir,
        &format!(
            "name: by_path\ntasks:\n  - {{ id: a, uses: '{}', with: {{ mode: initialized }} }}\n",
            env!("TEST_GUEST_WASM")
        ),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(task_json(&status_json(dir, &id), "a")["output"], 1);
}

#[test]
fn no_call_sees_what_the_calls_before_it_wrote() {
    // Instances reuse slots of the pool, whose memory is reset between
    // them: a chain runs in the same slot again and again, a fan-out in
    // several at once. Each call writes a static and 200 KiB of heap.
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let with = "{ mode: scribble, size: 204800 }";
    let mut yaml = String::from("name: scribbles\ntasks:\n");
    for i in 0..30 {
        let needs = if i == 0 {
            String::new()
        } else {
            format!(", needs: [c{}]", i - 1)
        };
        yaml.push_str(&format!(
            "  - {{ id: c{i}, uses: '{}', with: {with}{needs} }}\n",
            env!("TEST_GUEST_WASM")
        ));
    }
    let items: Vec<String> = (0..40).map(|i| i.to_string()).collect();
    yaml.push_str(&format!(
        "  - {{ id: fan, uses: '{}', for_each: \"${{{{ [{}] }}}}\", concurrency: 4, with: {with} }}\n",
        env!("TEST_GUEST_WASM"),
        items.join(", ")
    ));
    let (id, out) = run_cli(dir, &yaml);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let view = status_json(dir, &id);
    let clean = serde_json::json!({ "calls": 1, "kept": 204800 });
    for i in 0..30 {
        assert_eq!(task_json(&view, &format!("c{i}"))["output"], clean, "c{i}");
    }
    let items = task_json(&view, "fan")["output"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(items.len(), 40);
    assert!(items.iter().all(|item| item == &clean), "{items:?}");
}

#[test]
fn built_ins_start_initialised() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let (id, out) = run_cli(
        dir,
        r#"name: builtins
tasks:
  - id: transform
    uses: transform
    with: { script: "1 + 1" }
  - id: policy
    uses: policy
    with:
      text: "Write to ada@example.org or call +44 20 7946 0958."
      pii: true
  - id: schema
    uses: policy
    with:
      text: '{"score": 4}'
      json: { type: object, required: [score], properties: { score: { type: integer, maximum: 5 } } }
  - id: numeric
    uses: evaluation
    with:
      output: "score: 4"
      expected: 5
      metrics: [{ metric: numeric, tolerance: 1 }]
"#,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let view = status_json(dir, &id);
    assert_eq!(task_json(&view, "transform")["output"], 2);
    assert_eq!(task_json(&view, "policy")["output"]["outcome"], "redact");
    assert_eq!(task_json(&view, "schema")["output"]["outcome"], "allow");
    assert_eq!(task_json(&view, "numeric")["output"]["passed"], true);
    // Built fresh in every call these took 4.4 M (a Rhai engine), 38 M
    // (the detectors), 57 M (a meta-schema validator) and 7 M (a regex)
    // fuel; started from the snapshot, each is a fraction of one million.
    for (task, most) in [
        ("transform", 200_000),
        ("policy", 1_000_000),
        ("schema", 1_000_000),
        ("numeric", 500_000),
    ] {
        let fuel = task_json(&view, task)["fuel"].as_u64().unwrap();
        assert!(fuel <= most, "{task} took {fuel} fuel, more than {most}");
    }
}

#[test]
fn an_initialisation_that_spins_is_stopped_and_the_plugin_refused() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let out = cli(dir)
        .args(["install", env!("INIT_SPINS_WASM")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(
        error.contains(env!("INIT_SPINS_WASM")),
        "names the file: {error}"
    );
    assert!(
        error.contains("wizer-initialize") && error.contains("did not finish within its limits"),
        "{error}"
    );
    let listed = cli(dir)
        .args(["plugins", "list", "--json"])
        .output()
        .unwrap();
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert!(
        !listed.to_string().contains("init-spins"),
        "nothing installed: {listed}"
    );
}
