//! Strict durability holds effects, not starts: under `kill -9` at seeded
//! moments, no request ever leaves on inputs that were later lost, and no
//! task that finished for good runs again.
//!
//! Every task of a strict workflow (stages of three tasks and a two-item
//! `for_each` joined by a task, each stage needing the previous join) sends
//! one GET to a counting server on 127.0.0.1 carrying what its needs
//! returned (`saw=`); the server answers each request with a number never
//! given before (in `location`), which becomes the task's output, and a
//! 256 KiB body, so each state takes a while to commit. The server kills the run
//! at a seeded request, after a seeded delay, and the run is resumed. Then,
//! for every request the server ever saw, in both processes:
//! - what it carried is what the task's needs finally returned: a request
//!   sent on a need's output that a crash took back would carry a number
//!   that is not the final one;
//! - the task's final output is the last number the server gave it: a task
//!   that ran again after its state was committed would have a later one.
//!
//! `CRASH_SEED` replays a sequence; `CRASH_TRIALS` sets the number of
//! trials (default 20).

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

mod common;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::crash::{Rng, seed_and_trials};
use common::http::read_request;
use common::{cli, spawn_run};
use orchestrator_engine::store::executions::{ExecutionStatus, Executions};
use serde_json::Value;

const GUEST: &str = env!("TEST_GUEST_WASM");
const STAGES: usize = 5;
const FAN: [&str; 3] = ["a", "b", "c"];
const ITEMS: usize = 2;
/// The size of every answer's body: states this large take a while to
/// commit, so a task's dependents are well under way before it is durable.
const PADDING: usize = 1 << 18;
/// Requests in one uninterrupted run: per stage, the fan, the items and the join.
const REQUESTS: usize = STAGES * (FAN.len() + ITEMS + 1);

/// One request the server answered.
#[derive(Debug, Clone)]
struct Seen {
    /// The task (`s1_a`) or item (`s1_each/0`) that sent it.
    key: String,
    /// What it carried: its needs' outputs, comma-separated.
    saw: String,
    /// The number the server answered with.
    answer: u64,
}

/// The counting server's state for the trial under way.
#[derive(Default)]
struct Trial {
    seen: Vec<Seen>,
    /// Kill the run when this many requests have arrived.
    kill_at: Option<usize>,
    kill: Option<Sender<()>>,
    next_answer: u64,
}

/// Serves GETs on 127.0.0.1 until the test ends, recording each one.
fn counting_server(trial: Arc<Mutex<Trial>>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let trial = Arc::clone(&trial);
            std::thread::spawn(move || answer(&stream, &trial));
        }
    });
    port
}

fn answer(stream: &TcpStream, trial: &Mutex<Trial>) {
    // A connection the killed run opened and sent nothing on is no request.
    let Ok(request) = read_request(stream) else {
        return;
    };
    if request.method != "GET" {
        return;
    }
    let (key, query) = request.path.split_once('?').unwrap_or((&request.path, ""));
    let saw = query.strip_prefix("saw=").unwrap_or(query).to_owned();
    let answer = {
        let mut trial = trial.lock().unwrap();
        trial.next_answer += 1;
        let answer = trial.next_answer;
        trial.seen.push(Seen {
            key: key.trim_start_matches('/').to_owned(),
            saw,
            answer,
        });
        if trial.kill_at == Some(trial.seen.len())
            && let Some(kill) = trial.kill.take()
        {
            let _ = kill.send(());
        }
        answer
    };
    let mut stream = stream;
    let _ = write!(
        stream,
        "HTTP/1.1 200 OK\r\nlocation: {answer}\r\ncontent-length: {PADDING}\r\nconnection: close\r\n\r\n"
    );
    let _ = stream.write_all(&[b'.'; PADDING]);
}

/// The workflow: each stage's fan and items carry the previous join's
/// answer; each join carries its stage's answers.
fn workflow(trial: usize, port: u16) -> String {
    let url = |key: &str| format!("http://127.0.0.1:{port}/{key}?saw=");
    let mut yaml = format!("name: effects{trial}\ndurability: strict\nconcurrency: 8\ntasks:\n");
    for stage in 0..STAGES {
        let (needs, saw) = if stage == 0 {
            (String::new(), String::new())
        } else {
            let join = format!("s{}_join", stage - 1);
            (
                format!(", needs: [{join}]"),
                format!("${{{{ tasks.{join}.output.location }}}}"),
            )
        };
        for name in FAN {
            let id = format!("s{stage}_{name}");
            yaml.push_str(&format!(
                "  - {{ id: {id}, uses: guest{needs}, with: {{ mode: http, url: \"{}{saw}\" }} }}\n",
                url(&id)
            ));
        }
        let each = format!("s{stage}_each");
        yaml.push_str(&format!(
            "  - {{ id: {each}, uses: guest{needs}, for_each: \"${{{{ [0, 1] }}}}\", with: {{ mode: http, url: \"{}{saw}\" }} }}\n",
            url(&format!("{each}/${{{{ index }}}}"))
        ));
        let mut parts: Vec<String> = FAN
            .iter()
            .map(|name| format!("${{{{ tasks.s{stage}_{name}.output.location }}}}"))
            .collect();
        parts.extend((0..ITEMS).map(|k| format!("${{{{ tasks.{each}.output[{k}].location }}}}")));
        let mut all: Vec<String> = FAN.iter().map(|n| format!("s{stage}_{n}")).collect();
        all.push(each);
        let join = format!("s{stage}_join");
        yaml.push_str(&format!(
            "  - {{ id: {join}, uses: guest, needs: [{}], with: {{ mode: http, url: \"{}{}\" }} }}\n",
            all.join(", "),
            url(&join),
            parts.join(",")
        ));
    }
    yaml
}

/// The final answer of every task and item, from the execution's record.
fn final_answers(executions: &Executions, id: &str) -> BTreeMap<String, String> {
    let log = executions.open(id).unwrap();
    let mut answers = BTreeMap::new();
    for task in log.tasks().unwrap() {
        let output = task.output.unwrap_or(Value::Null);
        match output {
            Value::Array(items) => {
                for (k, item) in items.iter().enumerate() {
                    answers.insert(format!("{}/{k}", task.id), answer_of(item));
                }
            }
            output if !task.id.contains('[') => {
                answers.insert(task.id.clone(), answer_of(&output));
            }
            _ => {}
        }
    }
    answers
}

fn answer_of(output: &Value) -> String {
    output["location"].as_str().unwrap_or_default().to_owned()
}

/// What a task's or item's requests should have carried: its needs' final answers.
fn expected_saw(key: &str, answers: &BTreeMap<String, String>) -> String {
    let task = key.split('/').next().unwrap();
    let (stage, name) = task[1..].split_once('_').unwrap();
    let stage: usize = stage.parse().unwrap();
    if name == "join" {
        let mut parts: Vec<String> = FAN
            .iter()
            .map(|n| answers[&format!("s{stage}_{n}")].clone())
            .collect();
        parts.extend((0..ITEMS).map(|k| answers[&format!("s{stage}_each/{k}")].clone()));
        return parts.join(",");
    }
    match stage {
        0 => String::new(),
        _ => answers[&format!("s{}_join", stage - 1)].clone(),
    }
}

#[test]
fn no_request_leaves_on_inputs_a_crash_took_back() {
    let (seed, trials) = seed_and_trials("effect harness");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let trial_state = Arc::new(Mutex::new(Trial::default()));
    let port = counting_server(Arc::clone(&trial_state));
    let installed = cli(dir)
        .args([
            "install",
            GUEST,
            "--name",
            "guest",
            "--allow-http",
            "127.0.0.1",
        ])
        .output()
        .unwrap();
    assert!(installed.status.success(), "{installed:?}");
    let executions = Executions::beside(&dir.join("store.redb"));

    let mut interrupted = 0;
    for trial in 0..trials {
        let kill_at = 1 + rng.below(REQUESTS as u64 - 1) as usize;
        let delay = Duration::from_micros(rng.below(3_000));
        let (kill, killed): (Sender<()>, Receiver<()>) = channel();
        {
            let mut state = trial_state.lock().unwrap();
            state.seen.clear();
            state.kill_at = Some(kill_at);
            state.kill = Some(kill);
        }
        let file = dir.join(format!("effects{trial}.yaml"));
        std::fs::write(&file, workflow(trial, port)).unwrap();
        let (mut child, id) = spawn_run(dir, &file);
        let replay =
            format!("trial {trial} (CRASH_SEED={seed}, kill at request {kill_at} + {delay:?})");
        if killed.recv_timeout(Duration::from_secs(60)).is_ok() {
            std::thread::sleep(delay);
        }
        child.kill().unwrap();
        child.wait().unwrap();
        trial_state.lock().unwrap().kill_at = None;

        if executions.open(&id).unwrap().record().unwrap().status == ExecutionStatus::Running {
            interrupted += 1;
            let resumed = cli(dir).args(["resume", &id]).output().unwrap();
            assert!(
                resumed.status.success(),
                "{replay}: resume failed\n{}",
                String::from_utf8_lossy(&resumed.stderr)
            );
        }
        let record = executions.open(&id).unwrap().record().unwrap();
        assert_eq!(
            record.status,
            ExecutionStatus::Succeeded,
            "{replay}: {record:?}"
        );

        let answers = final_answers(&executions, &id);
        assert_eq!(answers.len(), REQUESTS, "{replay}: {answers:?}");
        let seen = trial_state.lock().unwrap().seen.clone();
        for request in &seen {
            assert_eq!(
                request.saw,
                expected_saw(&request.key, &answers),
                "{replay}: `{}` sent a request on inputs that were later lost",
                request.key
            );
        }
        for (key, answer) in &answers {
            let last = seen
                .iter()
                .filter(|r| &r.key == key)
                .map(|r| r.answer)
                .max();
            assert_eq!(
                last.map(|n| n.to_string()).as_ref(),
                Some(answer),
                "{replay}: `{key}` ran again after its state was committed"
            );
        }
    }
    eprintln!("{interrupted} of {trials} trials were killed mid-run and resumed");
    assert!(
        interrupted * 2 >= trials,
        "most kills should land mid-run: {interrupted} of {trials}"
    );
}
