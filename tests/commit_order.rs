//! The order of commits and what waits for them, on the real scheduler with
//! a journal whose commits take 20 ms: under `strict` a dependent starts at
//! once but its effects wait until its dependency's state is committed, and
//! completions that arrive together share a commit; under `batched` states
//! are committed while a chain (or one long task) runs, and a `for_each`'s
//! items are recorded only after their needs' states.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use orchestrator_engine::expr::Expressions;
use orchestrator_engine::scheduler::{
    Cancel, Event, Executor, Journal, Metering, RunOptions, RunStatus, Scheduler, TaskFailure,
    TaskReport, TaskRequest, TaskSuccess,
};
use orchestrator_engine::workflow::{self, PluginCatalog};
use serde_json::{Value, json};

struct AnyPlugin;

impl PluginCatalog for AnyPlugin {
    fn check(&self, _: &str) -> Result<(), String> {
        Ok(())
    }
}

/// When each task started and when its effects were let out.
type Moments = Mutex<Vec<(String, Instant)>>;

/// Records when each task started, and when its effects were let out: it
/// waits for them, as a task sending a request does. Takes 2 ms, or 300
/// ms for a task whose id starts with `long`.
#[derive(Default)]
struct Clock {
    started: Moments,
    released: Moments,
}

impl Executor for Clock {
    async fn execute(&self, request: TaskRequest) -> Result<TaskSuccess, TaskFailure> {
        let id = request.task_id.clone();
        self.started
            .lock()
            .unwrap()
            .push((id.clone(), Instant::now()));
        request.effects.wait().await.unwrap();
        let ms = if id.starts_with("long") { 300 } else { 2 };
        self.released.lock().unwrap().push((id, Instant::now()));
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Ok(TaskSuccess {
            output: Value::Null,
            usage: None,
            metering: Metering::default(),
        })
    }
}

/// A journal whose commits take 20 ms, recording what each held and when it ended.
/// Each commit's task ids and when it ended.
type Commits = Arc<Mutex<Vec<(Vec<String>, Instant)>>>;

#[derive(Default, Clone)]
struct SlowJournal {
    commits: Commits,
}

impl Journal for SlowJournal {
    fn attempt_started(&self, _: &str, _: u32, _: bool) {}

    fn attempt_failed(
        &self,
        _: &str,
        _: u32,
        _: &TaskFailure,
        _: Option<orchestrator_engine::scheduler::PendingRetry>,
    ) -> impl std::future::Future<Output = Result<(), String>> + Send + 'static {
        std::future::ready(Ok(()))
    }

    async fn commit(&self, reports: Vec<TaskReport>, _: bool) -> Result<(), String> {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let ids = reports.into_iter().map(|r| r.id).collect();
        self.commits.lock().unwrap().push((ids, Instant::now()));
        Ok(())
    }
}

impl orchestrator_engine::scheduler::Signals for SlowJournal {
    fn start_wait(
        &self,
        _: &str,
        _: &str,
        _: Option<Duration>,
    ) -> impl std::future::Future<Output = Result<Option<u64>, String>> + Send + 'static {
        std::future::ready(Err("no signals here".to_owned()))
    }

    fn wait(
        &self,
        _: &str,
        _: Option<u64>,
    ) -> impl std::future::Future<Output = orchestrator_engine::scheduler::WaitOutcome> + Send + 'static
    {
        std::future::ready(Err("no signals here".to_owned()))
    }
}

/// What a slow run saw: the commits (task ids, when each ended), when each
/// task started, when its effects were let out.
struct Slow {
    commits: Vec<(Vec<String>, Instant)>,
    started: Vec<(String, Instant)>,
    released: Vec<(String, Instant)>,
}

/// Runs `yaml` on the [`Clock`] executor with a [`SlowJournal`].
async fn run_slowly(yaml: &str) -> Slow {
    let plan = workflow::load(yaml, "flow.yaml", &Expressions::new(), &AnyPlugin).unwrap();
    let clock = Arc::new(Clock::default());
    let journal = SlowJournal::default();
    let scheduler = Scheduler::new(Arc::clone(&clock), Expressions::new());
    let options = RunOptions {
        concurrency: None,
        journal: Some(&journal),
        done: Vec::new(),
        retries: Vec::new(),
        overrides: Default::default(),
        started_at: None,
        cancel: Arc::new(Cancel::default()),
        tenant: Default::default(),
        observe: &|_: Event<'_>| {},
    };
    let report = scheduler.run_with(&plan, &json!({}), "x", options).await;
    assert_eq!(report.status, RunStatus::Succeeded);
    Slow {
        commits: journal.commits.lock().unwrap().clone(),
        started: clock.started.lock().unwrap().clone(),
        released: clock.released.lock().unwrap().clone(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_holds_effects_for_the_commit_and_groups_completions() {
    // `root` fans out to 12 leaves; `last` needs them all.
    let mut yaml = String::from("name: fan\ntasks:\n  - { id: root, uses: x }\n");
    for i in 0..12 {
        yaml.push_str(&format!("  - {{ id: leaf{i}, uses: x, needs: [root] }}\n"));
    }
    yaml.push_str("  - { id: last, uses: x, needs: [");
    yaml.push_str(
        &(0..12)
            .map(|i| format!("leaf{i}"))
            .collect::<Vec<_>>()
            .join(", "),
    );
    yaml.push_str("] }\n");
    let Slow {
        commits,
        started,
        released,
    } = run_slowly(&yaml).await;
    let committed_at = |id: &str| {
        commits
            .iter()
            .find(|(ids, _)| ids.iter().any(|i| i == id))
            .map(|(_, at)| *at)
            .unwrap_or_else(|| panic!("{id} was never committed"))
    };
    let at =
        |moments: &[(String, Instant)], id: &str| moments.iter().find(|(i, _)| i == id).unwrap().1;
    // The leaves start while `root`'s 20 ms commit is under way...
    assert!(at(&started, "leaf0") < committed_at("root"));
    // ...and nothing they do gets out before it returns.
    for i in 0..12 {
        let leaf = format!("leaf{i}");
        assert!(at(&released, &leaf) >= committed_at("root"), "{leaf}");
        assert!(
            at(&released, "last") >= committed_at(&leaf),
            "last after {leaf}"
        );
    }
    let total: usize = commits.iter().map(|(ids, _)| ids.len()).sum();
    assert_eq!(total, 14, "every state committed once");
    assert!(
        commits.len() < 8,
        "12 leaves finishing together share commits: {commits:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_chains_commit_while_they_run() {
    // 60 tasks of 2 ms in a chain, commits of 20 ms: batched, the states
    // must reach the journal during the run, not in one commit at its end.
    let mut yaml =
        String::from("name: chain\ndurability: batched\ntasks:\n  - { id: t0, uses: x }\n");
    for i in 1..60 {
        yaml.push_str(&format!(
            "  - {{ id: t{i}, uses: x, needs: [t{}] }}\n",
            i - 1
        ));
    }
    let Slow {
        commits, started, ..
    } = run_slowly(&yaml).await;
    let last_started = started.iter().map(|(_, at)| *at).max().unwrap();
    let during_run = commits.iter().filter(|(_, at)| *at < last_started).count();
    assert!(
        during_run >= 2,
        "commits ended during the run: {during_run} of {}",
        commits.len()
    );
    let total: usize = commits.iter().map(|(ids, _)| ids.len()).sum();
    assert_eq!(total, 60, "every state committed once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_states_are_committed_while_a_long_task_runs() {
    // `first` ends in 2 ms; `long_second`, run inline as the only task
    // left, takes 300 ms: `first` must not wait for it to be recorded.
    let yaml = "name: long\ndurability: batched\ntasks:\n  - { id: first, uses: x }\n  - { id: long_second, uses: x, needs: [first] }\n";
    let Slow {
        commits, started, ..
    } = run_slowly(yaml).await;
    let long_started = started
        .iter()
        .find(|(id, _)| id == "long_second")
        .unwrap()
        .1;
    let first_committed = commits
        .iter()
        .find(|(ids, _)| ids.iter().any(|id| id == "first"))
        .unwrap()
        .1;
    assert!(
        first_committed < long_started + Duration::from_millis(150),
        "`first` was committed {:?} after `long_second` started",
        first_committed - long_started
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_items_are_recorded_after_their_needs() {
    // Batched, `first`'s state is committed behind it; the items of `each`
    // finish in 2 ms, long before that 20 ms commit returns. Recorded
    // first, they would outlive a crash that lost the input they were
    // made from; they must be committed after it.
    let yaml = "name: items\ndurability: batched\ntasks:\n  - { id: first, uses: x }\n  - { id: each, uses: x, needs: [first], for_each: \"${{ [1, 2, 3] }}\" }\n";
    let Slow { commits, .. } = run_slowly(yaml).await;
    let ended = |id: &str| {
        commits
            .iter()
            .find(|(ids, _)| ids.iter().any(|i| i == id))
            .unwrap_or_else(|| panic!("{id} was never committed: {commits:?}"))
            .1
    };
    for k in 0..3 {
        let item = format!("each[{k}]");
        assert!(
            ended(&item) >= ended("first") + Duration::from_millis(15),
            "{item}'s commit did not wait for `first`'s"
        );
    }
}
