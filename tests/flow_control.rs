//! Flow control: `for_each` fan-outs (results in order, a success ratio, and
//! a 1000-item run killed midway that resumes only unfinished items), task
//! priorities, and registered workflows run as tasks (recorded on their own,
//! so a parent killed during one resumes it where it stopped).

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

mod common;

use std::time::{Duration, Instant};

use common::{
    Host, assert_ok, cli, failure, install_marking_guest, run_cli, spawn_run, status_json, task,
};
use orchestrator_engine::scheduler::{RunStatus, TaskRef};
use serde_json::{Value, json};

const GUEST: &str = env!("TEST_GUEST_WASM");

/// How many times each item of task `fan` ran, from the lines it appended.
fn item_runs(data: &std::path::Path) -> std::collections::BTreeMap<usize, usize> {
    std::fs::read_dir(data)
        .unwrap()
        .filter_map(|e| {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            let index = TaskRef::parse(&name).item()?;
            let runs = std::fs::read_to_string(e.path()).unwrap().lines().count();
            Some((index, runs))
        })
        .collect()
}

/// Writes `yaml` to `<dir>/<file>` and registers it; returns what
/// `runtime workflows add` printed.
fn register_workflow(dir: &std::path::Path, file: &str, yaml: &str) -> String {
    let path = dir.join(file);
    std::fs::write(&path, yaml).unwrap();
    let out = cli(dir)
        .args(["workflows", "add", path.to_str().unwrap()])
        .output()
        .unwrap();
    assert_ok(&out);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_fan_out_killed_midway_resumes_only_unfinished_items() {
    let dir = tempfile::tempdir().unwrap();
    let data = install_marking_guest(dir.path());
    let items: Vec<usize> = (0..1000).collect();
    let file = dir.path().join("fan.yaml");
    std::fs::write(
        &file,
        format!(
            r#"name: fan_out
inputs:
  items: {{ type: array, default: {} }}
tasks:
  - id: fan
    uses: test-guest
    for_each: ${{{{ inputs.items }}}}
    concurrency: 8
    with: {{ mode: mark, ms: 3, value: "${{{{ item * 2 }}}}" }}
outputs:
  doubled: ${{{{ tasks.fan.output }}}}
"#,
            serde_json::to_string(&items).unwrap()
        ),
    )
    .unwrap();
    let (mut child, id) = spawn_run(dir.path(), &file);
    let deadline = Instant::now() + Duration::from_secs(120);
    while item_runs(&data).len() < 200 {
        assert!(Instant::now() < deadline, "the fan-out did not get going");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();

    let view = status_json(dir.path(), &id);
    assert_eq!(view["status"], "interrupted");
    let committed: Vec<usize> = view["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| TaskRef::parse(t["id"].as_str()?).item())
        .collect();
    assert!(
        committed.len() >= 150 && committed.len() < 1000,
        "killed midway: {} items were committed",
        committed.len()
    );

    let out = cli(dir.path()).args(["resume", &id]).output().unwrap();
    assert_ok(&out);
    let view = status_json(dir.path(), &id);
    assert_eq!(view["status"], "succeeded");
    let doubled: Vec<u64> =
        serde_json::from_value(view["record"]["outputs"]["doubled"].clone()).unwrap();
    assert_eq!(doubled, (0..1000u64).map(|i| i * 2).collect::<Vec<_>>());

    let runs = item_runs(&data);
    assert_eq!(runs.len(), 1000, "every item ran");
    for index in &committed {
        assert_eq!(
            runs[index], 1,
            "item {index} was committed before the kill and ran again"
        );
    }
    let again = runs.values().filter(|&&n| n > 1).count();
    assert!(
        again <= 24,
        "only items in flight at the kill run again, not {again}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn for_each_collects_in_order_and_tolerates_failures_up_to_a_ratio() {
    let host = Host::new();
    let flow = |ratio: f64| {
        format!(
            r#"name: fan
tasks:
  - id: fan
    uses: {GUEST}
    for_each: ${{{{ [1, 2, 3, 4, 5, 6, 7, 8, 9, 10] }}}}
    concurrency: 3
    min_success_ratio: {ratio}
    with:
      mode: ${{{{ if item % 5 == 0 {{ "fail" }} else {{ "echo" }} }}}}
      kind: fatal
      message: ${{{{ `item ${{item}} broke` }}}}
      value: "${{{{ #{{ item: item, index: index }} }}}}"
"#
        )
    };
    let report = host.run(&flow(0.8)).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    let output = task(&report, "fan").output.clone().unwrap();
    let items = output.as_array().unwrap();
    assert_eq!(items.len(), 10);
    assert_eq!(items[0], json!({ "item": 1, "index": 0 }));
    assert_eq!(items[4], Value::Null, "item 5 failed");
    assert_eq!(items[8], json!({ "item": 9, "index": 8 }));

    let report = host.run(&flow(0.9)).await;
    assert_eq!(report.status, RunStatus::Failed);
    let (_, message) = failure(&report, "fan");
    assert!(message.contains("2 of 10 items failed"), "{message}");
    assert!(message.contains("item 5 broke"), "{message}");
}

#[test]
fn ready_tasks_start_by_priority() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        r#"name: priorities
concurrency: 1
tasks:
  - {{ id: root, uses: {GUEST} }}
  - {{ id: low, uses: {GUEST}, needs: [root], priority: -5 }}
  - {{ id: normal, uses: {GUEST}, needs: [root] }}
  - {{ id: urgent, uses: {GUEST}, needs: [root], priority: 10 }}
  - {{ id: high, uses: {GUEST}, needs: [root], priority: 3 }}
"#
    );
    let (_, out) = run_cli(dir.path(), &yaml);
    assert_ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let started: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.trim().strip_prefix("started"))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(started, ["root", "urgent", "high", "normal", "low"]);
}

#[test]
fn registered_workflows_run_as_tasks_by_version() {
    let dir = tempfile::tempdir().unwrap();
    let write_child = |script: &str| {
        register_workflow(
            dir.path(),
            "shout.yaml",
            &format!(
                r#"name: shout
inputs:
  text: {{ type: string }}
tasks:
  - id: upper
    uses: transform
    with: {{ text: "${{{{ inputs.text }}}}", script: '{script}' }}
outputs:
  loud: ${{{{ tasks.upper.output }}}}
"#
            ),
        )
    };
    assert!(write_child("text.to_upper()").contains("registered workflow shout@1"));
    assert!(
        write_child("text.to_upper()").contains("shout@1 is registered with this text already")
    );
    assert!(write_child("text.to_upper() + \"!\"").contains("registered workflow shout@2"));

    let parent = r#"name: parent
tasks:
  - { id: newest, uses: "workflow:shout", with: { text: hello } }
  - { id: pinned, uses: "workflow:shout@1", with: { text: hello } }
  - id: broken
    uses: "workflow:shout"
    with: { wrong: input }
    continue_on_error: true
  - id: join
    uses: transform
    needs: [newest, pinned]
    with: { a: "${{ tasks.newest.output.loud }}", b: "${{ tasks.pinned.output.loud }}", script: 'a + " " + b' }
outputs:
  both: ${{ tasks.join.output }}
"#;
    let (id, out) = run_cli(dir.path(), parent);
    assert_ok(&out);
    let view = status_json(dir.path(), &id);
    assert_eq!(view["record"]["outputs"]["both"], "HELLO! HELLO");
    let broken = view["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == "broken")
        .unwrap();
    assert_eq!(broken["error"]["kind"], "invalid-input");
    let message = broken["error"]["message"].as_str().unwrap();
    assert!(message.contains("workflow `shout@2`"), "{message}");
    assert!(message.contains("has no input `wrong`"), "{message}");

    // Unknown names and versions are validation errors.
    let file = dir.path().join("bad.yaml");
    std::fs::write(
        &file,
        "name: bad\ntasks:\n  - { id: a, uses: \"workflow:nope\" }\n  - { id: b, uses: \"workflow:shout@9\" }\n",
    )
    .unwrap();
    let out = cli(dir.path())
        .args(["validate", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no workflow named `nope` is registered"),
        "{stderr}"
    );
    assert!(
        stderr.contains("workflow `shout` has no version 9"),
        "{stderr}"
    );
}

#[test]
fn a_workflow_that_runs_itself_is_refused_before_anything_runs() {
    let dir = tempfile::tempdir().unwrap();
    // Registered first without the self-reference, then as version 2 with it.
    register_workflow(
        dir.path(),
        "loop.yaml",
        "name: looping\ntasks:\n  - { id: a, uses: transform, with: { script: '1' } }\n",
    );
    register_workflow(
        dir.path(),
        "loop.yaml",
        "name: looping\ntasks:\n  - { id: a, uses: \"workflow:looping\" }\n",
    );
    let file = dir.path().join("loop.yaml");
    let out = cli(dir.path())
        .args(["run", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("nest more than 8 deep"), "{stderr}");
    assert!(
        !stderr.contains("execution "),
        "nothing was recorded: {stderr}"
    );
}

#[test]
fn a_parent_killed_during_a_sub_workflow_resumes_it_where_it_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let data = install_marking_guest(dir.path());
    register_workflow(
        dir.path(),
        "steps.yaml",
        r#"name: steps
tasks:
  - { id: first, uses: test-guest, with: { mode: mark, value: one } }
  - { id: second, uses: test-guest, needs: [first], with: { mode: mark, ms: 2000, value: two } }
  - id: third
    uses: test-guest
    needs: [second]
    with: { mode: mark, value: "${{ tasks.first.output }}-${{ tasks.second.output }}" }
outputs:
  joined: ${{ tasks.third.output }}
"#,
    );
    let parent = dir.path().join("parent.yaml");
    std::fs::write(
        &parent,
        r#"name: parent
tasks:
  - { id: before, uses: test-guest, with: { mode: mark, value: b } }
  - { id: sub, uses: "workflow:steps", needs: [before] }
outputs:
  result: ${{ tasks.sub.output.joined }}
"#,
    )
    .unwrap();
    let runs = |task: &str| {
        std::fs::read_to_string(data.join(task)).map_or(0, |text| text.lines().count())
    };

    // Killed while the child's second task runs: its first is committed in
    // the child's own file.
    let (mut process, id) = spawn_run(dir.path(), &parent);
    let deadline = Instant::now() + Duration::from_secs(120);
    while runs("second") == 0 {
        assert!(Instant::now() < deadline, "the child did not get going");
        std::thread::sleep(Duration::from_millis(5));
    }
    process.kill().unwrap();
    process.wait().unwrap();
    let child_id = format!("{id}-sub");
    let view = status_json(dir.path(), &child_id);
    assert_eq!(view["status"], "interrupted");
    assert_eq!(view["record"]["parent"]["execution"], id.as_str());
    assert_eq!(view["record"]["parent"]["task"], "sub");
    let done: Vec<&str> = view["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(done, ["first"]);

    // The child is resumed through its parent, not on its own.
    let out = cli(dir.path())
        .args(["resume", &child_id])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("`runtime resume {id}`")),
        "{stderr}"
    );

    let out = cli(dir.path()).args(["resume", "--all"]).output().unwrap();
    assert_ok(&out);
    let view = status_json(dir.path(), &id);
    assert_eq!(view["status"], "succeeded");
    assert_eq!(view["record"]["outputs"]["result"], "one-two");
    assert_eq!(status_json(dir.path(), &child_id)["status"], "succeeded");
    assert_eq!(runs("before"), 1);
    assert_eq!(
        runs("first"),
        1,
        "the child's finished task did not run again"
    );
    assert_eq!(runs("second"), 2, "the task the kill cut off ran again");
    assert_eq!(runs("third"), 1);
}

/// A `for_each` of 200 transform items, every 50th failing.
const FAN_OUT: &str = r#"name: progress
tasks:
  - id: list
    uses: transform
    with: { script: 'let all = []; for i in 0..200 { all.push(i) } all' }
  - id: each
    uses: transform
    needs: [list]
    for_each: ${{ tasks.list.output }}
    concurrency: 4
    min_success_ratio: 0.9
    with:
      n: ${{ item }}
      script: 'if n % 50 == 49 { throw "no" } else { n * 2 }'
"#;

#[test]
fn a_fan_out_shows_its_progress_and_its_wall_time_apart_from_its_items_time() {
    let dir = tempfile::tempdir().unwrap();
    let (_, out) = run_cli(dir.path(), FAN_OUT);
    assert_ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Not a terminal: a plain line at each tenth of the items.
    assert!(
        stderr.contains("  started  each  transform  200 items"),
        "{stderr}"
    );
    let tenths: Vec<&str> = stderr
        .lines()
        .filter(|l| l.trim_start().starts_with("items  each"))
        .collect();
    assert_eq!(tenths.len(), 10, "{stderr}");
    assert!(tenths[0].contains("20/200 items"), "{}", tenths[0]);
    assert!(
        tenths[9].contains("200/200 items  4 failed"),
        "{}",
        tenths[9]
    );
    assert!(
        tenths[4].contains("/s  ETA "),
        "rate and time left: {}",
        tenths[4]
    );
    assert!(!stderr.contains('\r'), "no redrawing when not a terminal");
    let finished = stderr
        .lines()
        .find(|l| l.trim_start().starts_with("ok  each"))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(
        finished.contains(" wall, ") && finished.contains(" in items"),
        "wall time and the items' time apart: {finished}"
    );
}

#[test]
fn on_a_terminal_a_fan_out_redraws_one_progress_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("flow.yaml");
    std::fs::write(&file, FAN_OUT).unwrap();
    // `script` gives the run a terminal (util-linux, on every Debian).
    let command = format!("{:?} run {}", cli(dir.path()).get_program(), file.display());
    let mut script = std::process::Command::new("script");
    script
        .args(["-qefc", &command, "/dev/null"])
        .current_dir(common::root());
    for (key, value) in cli(dir.path()).get_envs() {
        if let Some(value) = value {
            script.env(key, value);
        }
    }
    let out = script.output().unwrap();
    assert_ok(&out);
    let shown = String::from_utf8_lossy(&out.stdout);
    let redraws = shown.matches("\r\u{1b}[2K    items  each  ").count();
    assert!(redraws >= 1, "redrawn in place: {shown:?}");
    assert!(shown.contains("200/200 items  4 failed"), "{shown:?}");
    assert!(
        !shown
            .lines()
            .any(|l| l.starts_with("    items  each  20/200")),
        "no line per tenth on a terminal: {shown:?}"
    );
}
