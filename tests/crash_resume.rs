//! Durability under `kill -9`: a workflow of 200 tasks (fan-outs joined into
//! a chain of stages) is killed at seeded random moments and resumed. After
//! every trial: the execution completes; every task whose state was
//! committed before the kill kept its output and was not executed again
//! (each execution appends a line to a file the test counts); no task is lost.
//!
//! The seed is printed; set `CRASH_SEED` to replay a failing sequence, and
//! `CRASH_TRIALS` to run more or fewer trials (default 20).

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::crash::{Rng, seed_and_trials};
use common::{cli, spawn_run};
use orchestrator_engine::scheduler::TaskStatus;
use orchestrator_engine::store::executions::{ExecutionStatus, Executions};
use serde_json::{Value, json};

const GUEST: &str = env!("TEST_GUEST_WASM");
const STAGES: usize = 10;
const WIDTH: usize = 19;

/// Ten stages; each fans out to 19 tasks that a join task gathers; each
/// stage's fan-out needs the previous join. 200 tasks in all.
fn workflow(trial: usize) -> (String, Vec<String>) {
    let mut yaml = format!("name: crash{trial}\nconcurrency: 8\ntasks:\n");
    let mut ids = Vec::new();
    for stage in 0..STAGES {
        let mut fan = Vec::new();
        for k in 0..WIDTH {
            let id = format!("s{stage}_f{k}");
            let needs = if stage == 0 {
                String::new()
            } else {
                format!(", needs: [s{}_join]", stage - 1)
            };
            yaml.push_str(&format!(
                "  - {{ id: {id}, uses: test-guest, with: {{ mode: mark, ms: 2, value: {} }}{needs} }}\n",
                stage * 100 + k
            ));
            fan.push(id.clone());
            ids.push(id);
        }
        let join = format!("s{stage}_join");
        yaml.push_str(&format!(
            "  - {{ id: {join}, uses: test-guest, with: {{ mode: mark, value: {stage} }}, needs: [{}] }}\n",
            fan.join(", ")
        ));
        ids.push(join);
    }
    yaml.push_str(&format!(
        "outputs:\n  last: ${{{{ tasks.s{}_join.output }}}}\n",
        STAGES - 1
    ));
    (yaml, ids)
}

/// How many times each task ran, from the lines its executions appended.
fn executions_per_task(data: &Path) -> BTreeMap<String, usize> {
    std::fs::read_dir(data)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let text = std::fs::read_to_string(e.path()).unwrap();
            (e.file_name().into_string().unwrap(), text.lines().count())
        })
        .collect()
}

fn expected_output(id: &str) -> Value {
    let (stage, rest) = id[1..].split_once('_').unwrap();
    let stage: usize = stage.parse().unwrap();
    match rest.strip_prefix('f') {
        Some(k) => json!(stage * 100 + k.parse::<usize>().unwrap()),
        None => json!(stage),
    }
}

#[test]
fn killed_runs_resume_without_redoing_finished_work() {
    let (seed, trials) = seed_and_trials("crash harness");
    let mut rng = Rng(seed);

    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let data = dir.join("data");
    std::fs::create_dir(&data).unwrap();
    let grant = format!("/data={}", data.display());
    let installed = cli(dir)
        .args(["install", GUEST, "--allow-dir-write", &grant])
        .output()
        .unwrap();
    assert!(installed.status.success(), "{installed:?}");

    // An uninterrupted run tells how long a run takes here, from the moment
    // it names its execution (where the kills below start counting) to its
    // end: start-up is not part of it, so its cost cannot push the kills
    // past the end of the run.
    // The shortest of three: one run slowed by the disk (a slow fsync)
    // would put most kills after the end of the runs that follow.
    let (yaml, _) = workflow(999);
    let calibrate = dir.join("calibrate.yaml");
    std::fs::write(&calibrate, yaml).unwrap();
    let full = (0..3)
        .map(|_| {
            let (mut child, _) = spawn_run(dir, &calibrate);
            let started = Instant::now();
            assert!(
                child.wait().unwrap().success(),
                "the calibration run failed"
            );
            started.elapsed()
        })
        .min()
        .unwrap();
    eprintln!("an uninterrupted run takes {full:?} after naming its execution");

    let executions = Executions::beside(&dir.join("store.redb"));
    let mut interrupted = 0;
    for trial in 0..trials {
        for entry in std::fs::read_dir(&data).unwrap() {
            std::fs::remove_file(entry.unwrap().path()).unwrap();
        }
        let (yaml, ids) = workflow(trial);
        let file = dir.join(format!("crash{trial}.yaml"));
        std::fs::write(&file, yaml).unwrap();

        // Once it names the execution, the run is recorded.
        let (mut child, id) = spawn_run(dir, &file);
        // Somewhere in the first half of the run proper.
        let delay = rng.below(full.as_millis() as u64 / 2);
        std::thread::sleep(Duration::from_millis(delay));
        child.kill().unwrap();
        child.wait().unwrap();

        // What was committed before the kill, and how often each task ran.
        let log = executions.open(&id).unwrap();
        let record = log.record().unwrap();
        let committed: BTreeMap<String, Value> = log
            .tasks()
            .unwrap()
            .into_iter()
            .map(|t| {
                assert_eq!(t.status, TaskStatus::Succeeded, "{t:?}");
                (t.id.clone(), t.output.unwrap())
            })
            .collect();
        drop(log);
        let before = executions_per_task(&data);
        for task in committed.keys() {
            assert!(
                before.get(task).is_some_and(|&n| n >= 1),
                "trial {trial}: {task} committed but never ran"
            );
        }

        if record.status == ExecutionStatus::Running {
            interrupted += 1;
            let resumed = cli(dir).args(["resume", &id]).output().unwrap();
            assert!(
                resumed.status.success(),
                "trial {trial} (seed {seed}, kill after {delay} ms): resume failed\n{}",
                String::from_utf8_lossy(&resumed.stderr)
            );
        }

        let log = executions.open(&id).unwrap();
        let record = log.record().unwrap();
        assert_eq!(
            record.status,
            ExecutionStatus::Succeeded,
            "trial {trial}: {record:?}"
        );
        assert_eq!(record.outputs["last"], json!(STAGES - 1));
        let finals: BTreeMap<String, Value> = log
            .tasks()
            .unwrap()
            .into_iter()
            .map(|t| (t.id.clone(), t.output.unwrap()))
            .collect();
        assert_eq!(finals.len(), ids.len(), "trial {trial}: a task was lost");
        let after = executions_per_task(&data);
        for id in &ids {
            assert_eq!(finals[id], expected_output(id), "trial {trial}: {id}");
            assert!(
                after.get(id).is_some_and(|&n| n >= 1),
                "trial {trial}: {id} never ran"
            );
        }
        for (task, output) in &committed {
            assert_eq!(
                &finals[task], output,
                "trial {trial}: {task} changed its output"
            );
            assert_eq!(
                after.get(task),
                before.get(task),
                "trial {trial} (seed {seed}, kill after {delay} ms): {task} was committed before the kill and ran again"
            );
        }
    }
    eprintln!("{interrupted} of {trials} trials were killed mid-run and resumed");
    assert!(
        interrupted * 4 >= trials * 3,
        "most kills should land mid-run"
    );
}
