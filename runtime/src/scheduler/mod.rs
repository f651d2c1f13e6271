//! Runs a [`Plan`]: a ready queue over the DAG, at most `concurrency` tasks at
//! once, each handed to an [`Executor`].
//!
//! A task becomes ready when everything it needs has finished; ready tasks
//! start highest `priority` first. Its `when:` and
//! `${{ }}` templates are evaluated here, on the host, just before it starts. A
//! failed task marks its dependents `not_run` and fails the run; independent
//! branches still run to the end. A skipped task does not stop its dependents:
//! they see `tasks.<id>.status == "skipped"` and a null output.
//!
//! This module never imports wasmtime: executors are behind one trait.

mod attempts;
mod executor;
mod fan_out;
mod journal;
mod ready;
mod report;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::task::JoinSet;

pub use attempts::{Outcome, PendingRetry};
pub use executor::{
    Executor, FailureKind, Metering, TaskFailure, TaskRequest, TaskSuccess, Usage, fallback_key,
};
pub use journal::{Cancel, Journal, NoJournal, Signals, WaitOutcome};
pub use report::{Event, RunReport, RunStatus, TaskError, TaskReport, TaskStatus};

use attempts::TaskAttempts;
use fan_out::FanOut;
pub use fan_out::{MAX_ITEMS, item_id, parse_item_id};
use ready::ReadyQueue;

use crate::expr::{Bindings, ConvertedValue, Expressions, Template};
use crate::workflow::{Durability, Plan};

/// How many tasks run at once unless the workflow or the caller says otherwise.
pub const DEFAULT_CONCURRENCY: usize = 32;

/// Under batched durability, the shortest time between the starts of two
/// commits while the run goes on: states pile up and share a commit, so
/// commits cost the run little CPU and disk, and a crash loses at most
/// about this much work (plus a commit's time). The last states of a run
/// are committed at once.
pub const BATCH_INTERVAL: Duration = Duration::from_millis(5);

/// A wait's outcome as a task result.
fn waited(
    outcome: WaitOutcome,
    signal: &str,
    default: Option<Value>,
) -> Result<TaskSuccess, TaskFailure> {
    let success = |output| TaskSuccess {
        output,
        usage: None,
        metering: Metering::default(),
    };
    match (outcome, default) {
        (Ok(Some(payload)), _) => Ok(success(payload)),
        (Ok(None), Some(default)) => Ok(success(default)),
        (Ok(None), None) => Err(TaskFailure {
            kind: FailureKind::Deadline,
            message: format!(
                "no signal `{signal}` arrived before the wait's timeout; give the wait a `default:` to go on without it"
            ),
            metering: Metering::default(),
        }),
        (Err(message), _) => Err(TaskFailure {
            kind: FailureKind::Plugin,
            message,
            metering: Metering::default(),
        }),
    }
}

/// A commit in flight.
type Commit<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// Runs plans on one executor.
#[derive(Debug)]
pub struct Scheduler<E> {
    executor: Arc<E>,
    expressions: Expressions,
}

/// How one run goes, beyond its plan and inputs.
pub struct RunOptions<'a, J> {
    /// Overrides the workflow's concurrency limit.
    pub concurrency: Option<usize>,
    /// Where final task states are made durable; `None` records nothing.
    pub journal: Option<&'a J>,
    /// Final states recorded by an earlier process: these tasks are not run
    /// again, and their outputs are what later tasks see.
    pub done: Vec<TaskReport>,
    /// Retries an earlier process scheduled and did not start: those tasks
    /// continue from that attempt, after the recorded wait.
    pub retries: Vec<PendingRetry>,
    /// Inputs that replace tasks' resolved `with:` (JSON text, by task id):
    /// what a dead-letter replay was given.
    pub overrides: HashMap<String, String>,
    /// When the run first started, ms since the epoch (the workflow's
    /// `timeout` counts from there); now when `None`.
    pub started_at: Option<u64>,
    /// Stops the run when cancelled.
    pub cancel: Arc<Cancel>,
    /// Sees progress as it happens.
    pub observe: &'a (dyn Fn(Event<'_>) + Sync),
}

impl<E: Executor> Scheduler<E> {
    /// A scheduler handing tasks to `executor`.
    pub fn new(executor: Arc<E>, expressions: Expressions) -> Self {
        Self {
            executor,
            expressions,
        }
    }

    /// Runs `plan` with resolved `inputs` to the end, recording nothing.
    /// `concurrency` overrides the workflow's own limit; `observe` sees
    /// progress as it happens.
    pub async fn run(
        &self,
        plan: &Plan,
        inputs: &Value,
        execution_id: &str,
        concurrency: Option<usize>,
        observe: &(dyn Fn(Event<'_>) + Sync),
    ) -> RunReport {
        let options = RunOptions {
            concurrency,
            journal: None::<&NoJournal>,
            done: Vec::new(),
            retries: Vec::new(),
            overrides: HashMap::new(),
            started_at: None,
            cancel: Arc::default(),
            observe,
        };
        self.run_with(plan, inputs, execution_id, options).await
    }

    /// Runs `plan` to the end (or until cancelled), handing every final task
    /// state to the journal. Under [`Durability::Strict`] a task's dependents
    /// start only after its state is committed; under
    /// [`Durability::Batched`] they start at once and commits follow.
    pub async fn run_with<J: Journal + Signals + Clone + 'static>(
        &self,
        plan: &Plan,
        inputs: &Value,
        execution_id: &str,
        options: RunOptions<'_, J>,
    ) -> RunReport {
        let started = Instant::now();
        let RunOptions {
            concurrency,
            journal,
            done,
            retries,
            overrides,
            started_at,
            cancel,
            observe,
        } = options;
        // The workflow's timeout, counted from the run's first start.
        let timeout = plan.timeout.map(|t| {
            let started_at = started_at.unwrap_or_else(attempts::now_ms);
            let elapsed = attempts::now_ms().saturating_sub(started_at);
            tokio::time::Instant::now() + t.saturating_sub(Duration::from_millis(elapsed))
        });
        let mut timed_out = false;
        let limit = concurrency
            .or(plan.concurrency)
            .unwrap_or(DEFAULT_CONCURRENCY)
            .max(1);
        // Without a journal nothing waits for a commit.
        let strict = journal.is_some() && plan.durability == Durability::Strict;
        let mut run = Run::new(plan, &self.expressions, execution_id, inputs, done, retries);
        run.overrides = overrides;
        let mut running = JoinSet::new();
        let mut running_ids = HashMap::new();
        // Final states not yet handed to the journal, and (strict) those in
        // the commit in flight, whose dependents wait for it.
        let mut unrecorded: Vec<(usize, TaskReport)> = Vec::new();
        let mut in_commit: Vec<(usize, TaskReport)> = Vec::new();
        let mut commit: Option<Commit<'_>> = None;
        // Batched: when the commit in flight (or the last one) started.
        let mut batch_started = tokio::time::Instant::now();
        let mut cancelled = cancel.is_cancelled();
        loop {
            while !cancelled && run.journal_error.is_none() && running.len() < limit {
                let Some(i) = run.ready.pop() else {
                    break;
                };
                match run.prepare(i, &cancel) {
                    Ok(request) if plan.tasks[i].wait.is_some() => {
                        let task = &plan.tasks[i];
                        let wait = task.wait.as_ref().expect("checked");
                        observe(Event::Started {
                            id: &task.id,
                            uses: &task.uses,
                            attempt: request.attempt,
                        });
                        let waiting = match journal {
                            Some(journal) => {
                                Box::pin(journal.wait(&task.id, &wait.signal, wait.timeout))
                                    as Pin<Box<dyn Future<Output = WaitOutcome> + Send>>
                            }
                            None => Box::pin(NoJournal.wait(&task.id, &wait.signal, wait.timeout)),
                        };
                        let (signal, default) = (wait.signal.clone(), wait.default.clone());
                        let handle = running.spawn(async move {
                            Outcome::once(waited(waiting.await, &signal, default))
                        });
                        running_ids.insert(handle.id(), i);
                    }
                    Ok(request) => {
                        let task = &plan.tasks[i];
                        let unit = match self.unit(&mut run, i, request, journal) {
                            Ok(unit) => unit,
                            Err(report) => {
                                run.settle(
                                    i,
                                    *report,
                                    strict,
                                    journal.is_some(),
                                    &mut unrecorded,
                                    observe,
                                );
                                continue;
                            }
                        };
                        observe(Event::Started {
                            id: &task.id,
                            uses: &task.uses,
                            attempt: 1,
                        });
                        if running.is_empty() && run.ready.is_empty() {
                            // The only task that can run: await it here. A
                            // spawn would cost two cross-thread wake-ups per
                            // task, which dominates a chain of short tasks.
                            if !strict && let Some(journal) = journal {
                                // Batched: commits go on while tasks run inline.
                                keep_committing(
                                    journal,
                                    &mut commit,
                                    &mut batch_started,
                                    &mut unrecorded,
                                    &mut run,
                                );
                            }
                            let outcome = tokio::select! {
                                outcome = unit => outcome,
                                () = sleep_until(timeout) => {
                                    timed_out = true;
                                    cancelled = true;
                                    cancel.cancel();
                                    continue;
                                }
                            };
                            if cancel.is_cancelled() {
                                // Interrupted by the cancel: not a result of the task.
                                cancelled = true;
                                continue;
                            }
                            let report = run.report(i, outcome);
                            run.settle(
                                i,
                                report,
                                strict,
                                journal.is_some(),
                                &mut unrecorded,
                                observe,
                            );
                            continue;
                        }
                        let handle = running.spawn(unit);
                        running_ids.insert(handle.id(), i);
                    }
                    Err(report) => {
                        run.settle(
                            i,
                            *report,
                            strict,
                            journal.is_some(),
                            &mut unrecorded,
                            observe,
                        );
                    }
                }
            }
            let idle = running.is_empty() && run.ready.is_empty();
            let batch_due = strict || idle || batch_started.elapsed() >= BATCH_INTERVAL;
            if let (Some(journal), None) = (journal, &commit)
                && !unrecorded.is_empty()
                && run.journal_error.is_none()
                && batch_due
            {
                let batch = std::mem::take(&mut unrecorded);
                let reports = batch.iter().map(|(_, r)| r.clone()).collect();
                batch_started = tokio::time::Instant::now();
                commit = Some(Box::pin(journal.commit(reports, idle)));
                if strict {
                    in_commit = batch;
                }
            }
            if running.is_empty() && commit.is_none() {
                let stuck = run.journal_error.is_some() || cancelled;
                if stuck || run.ready.is_empty() {
                    break;
                }
                continue;
            }
            tokio::select! {
                joined = running.join_next_with_id(), if !running.is_empty() => {
                    let Some(joined) = joined else { continue };
                    let (i, result) = match joined {
                        Ok((id, result)) => (running_ids.remove(&id), result),
                        Err(e) => (
                            running_ids.remove(&e.id()),
                            Outcome::once(Err(TaskFailure {
                                kind: FailureKind::Plugin,
                                message: format!("the executor crashed: {e}"),
                                metering: Metering::default(),
                            })),
                        ),
                    };
                    let i = i.expect("every spawned task is recorded");
                    if cancelled {
                        // Interrupted by the cancel: not a result of the task.
                        continue;
                    }
                    let report = run.report(i, result);
                    run.settle(i, report, strict, journal.is_some(), &mut unrecorded, observe);
                }
                result = async { commit.as_mut().expect("guarded").await }, if commit.is_some() => {
                    commit = None;
                    if let Err(e) = result {
                        run.journal_error = Some(format!("recording the run failed: {e}"));
                    }
                    // The states are in memory either way; on a failed commit
                    // no new task starts, and the run reports the error.
                    for (i, report) in std::mem::take(&mut in_commit) {
                        run.finish(i, report, observe);
                    }
                }
                () = cancel.cancelled(), if !cancelled => {
                    cancelled = true;
                    // Plugins stop at the next epoch tick; waits stop here.
                    running.abort_all();
                }
                // Batched states waiting for the next commit's turn.
                () = tokio::time::sleep_until(batch_started + BATCH_INTERVAL),
                    if commit.is_none() && !unrecorded.is_empty() && run.journal_error.is_none() => {}
                () = sleep_until(timeout), if !cancelled => {
                    timed_out = true;
                    cancelled = true;
                    cancel.cancel();
                    running.abort_all();
                }
            }
        }
        let stop = match (timed_out, cancelled) {
            (true, _) => Stop::TimedOut,
            (false, true) => Stop::Cancelled,
            (false, false) => Stop::No,
        };
        run.into_report(plan, execution_id, started, stop)
    }
}

/// One task's work, as the scheduler awaits or spawns it.
type Unit = Pin<Box<dyn Future<Output = Outcome> + Send>>;

impl<E: Executor> Scheduler<E> {
    /// The future that runs task `i` from `request`: its attempts, or its
    /// `for_each` items; or the report of a task that cannot start.
    fn unit<J: Journal + Clone + 'static>(
        &self,
        run: &mut Run<'_>,
        i: usize,
        request: TaskRequest,
        journal: Option<&J>,
    ) -> Result<Unit, Box<TaskReport>> {
        let task = &run.plan.tasks[i];
        if let Some(for_each) = &task.for_each {
            let (items, bindings) = run.items(i)?;
            let fan_out = FanOut {
                executor: Arc::clone(&self.executor),
                journal: journal.cloned(),
                expressions: self.expressions.clone(),
                inputs: Arc::clone(&run.inputs),
                policy: Arc::clone(&task.retry),
                request,
                input: task.input.clone(),
                fallback: task
                    .fallback
                    .as_ref()
                    .map(|f| (f.uses.clone(), f.input.clone())),
                bindings,
                items,
                concurrency: for_each.concurrency,
                min_success_ratio: for_each.min_success_ratio,
                done: run.done_items.remove(&i).unwrap_or_default(),
            }
            .run();
            let Some(timeout) = task.timeout else {
                return Ok(Box::pin(fan_out));
            };
            // The task's timeout bounds all its items together.
            return Ok(Box::pin(async move {
                tokio::time::timeout(timeout, fan_out)
                    .await
                    .unwrap_or_else(|_| {
                        Outcome::once(Err(TaskFailure {
                            kind: FailureKind::TaskTimeout,
                            message: format!(
                                "the task's `timeout` ({}) passed before all its items finished",
                                humantime::format_duration(timeout)
                            ),
                            metering: Metering::default(),
                        }))
                    })
            }));
        }
        let fallback = run.fallback_request(i, &request)?;
        Ok(Box::pin(
            TaskAttempts {
                executor: Arc::clone(&self.executor),
                journal: journal.cloned(),
                expressions: self.expressions.clone(),
                inputs: Arc::clone(&run.inputs),
                policy: Arc::clone(&task.retry),
                resume: run.retries.remove(&i),
                request,
                fallback,
                timeout: task.timeout,
            }
            .run(),
        ))
    }
}

/// Under batched durability, while the scheduler runs tasks inline: notes
/// whether the commit in flight has finished (without waiting) and, once
/// [`BATCH_INTERVAL`] has passed, starts the next one, so states reach the
/// disk every few milliseconds rather than at the end of a chain.
fn keep_committing<'a, J: Journal>(
    journal: &'a J,
    commit: &mut Option<Commit<'a>>,
    batch_started: &mut tokio::time::Instant,
    unrecorded: &mut Vec<(usize, TaskReport)>,
    run: &mut Run<'_>,
) {
    if let Some(in_flight) = commit.as_mut() {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        if let std::task::Poll::Ready(result) = in_flight.as_mut().poll(&mut cx) {
            *commit = None;
            if let Err(e) = result {
                run.journal_error = Some(format!("recording the run failed: {e}"));
            }
        }
    }
    if commit.is_none()
        && !unrecorded.is_empty()
        && run.journal_error.is_none()
        && batch_started.elapsed() >= BATCH_INTERVAL
    {
        *batch_started = tokio::time::Instant::now();
        let reports = std::mem::take(unrecorded)
            .into_iter()
            .map(|(_, r)| r)
            .collect();
        *commit = Some(Box::pin(journal.commit(reports, false)));
    }
}

/// Why a run stopped before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    No,
    Cancelled,
    TimedOut,
}

/// Resolves at `at`, or never.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The state of one run.
struct Run<'a> {
    plan: &'a Plan,
    expressions: &'a Expressions,
    execution_id: Arc<str>,
    base: Bindings,
    /// How many needs of each task have not finished.
    waiting_on: Vec<usize>,
    reports: Vec<Option<TaskReport>>,
    /// Outputs converted once for the expressions that read them.
    converted: Vec<Option<ConvertedValue>>,
    ready: ReadyQueue,
    first_error: Option<String>,
    journal_error: Option<String>,
    /// The workflow's inputs, as `retry_if` sees them.
    inputs: Arc<Value>,
    /// Retries scheduled by an earlier process, by task.
    retries: HashMap<usize, PendingRetry>,
    /// `for_each` items recorded by an earlier process, by task.
    done_items: HashMap<usize, Vec<(usize, TaskReport)>>,
    /// Inputs given instead of `with:`, by task id.
    overrides: HashMap<String, String>,
}

impl<'a> Run<'a> {
    /// A run with the final states in `done` already in place.
    fn new(
        plan: &'a Plan,
        expressions: &'a Expressions,
        execution_id: &str,
        inputs: &Value,
        done: Vec<TaskReport>,
        retries: Vec<PendingRetry>,
    ) -> Self {
        let mut run = Run {
            plan,
            expressions,
            execution_id: Arc::from(execution_id),
            base: Bindings::new(inputs),
            waiting_on: plan.tasks.iter().map(|t| t.needs.len()).collect(),
            reports: vec![None; plan.tasks.len()],
            converted: vec![None; plan.tasks.len()],
            ready: ReadyQueue::default(),
            first_error: None,
            journal_error: None,
            inputs: Arc::new(inputs.clone()),
            retries: HashMap::new(),
            done_items: HashMap::new(),
            overrides: HashMap::new(),
        };
        let index: HashMap<&str, usize> = plan
            .tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.id.as_str(), i))
            .collect();
        for report in done {
            if let Some(&i) = index.get(report.id.as_str()) {
                run.finish(i, report, &|_| {});
            } else if let Some((task, item)) = parse_item_id(&report.id)
                && let Some(&i) = index.get(task)
            {
                run.done_items.entry(i).or_default().push((item, report));
            }
        }
        for retry in retries {
            if let Some(&i) = index.get(retry.task.as_str())
                && run.reports[i].is_none()
            {
                run.retries.insert(i, retry);
            }
        }
        // Replaying `done` queued dependents as it went; queue afresh, each
        // unfinished task whose needs are all met once.
        run.ready = ReadyQueue::default();
        for &i in plan.dag.topological_order() {
            if run.reports[i].is_none() && run.waiting_on[i] == 0 {
                run.ready.push(i, plan.tasks[i].priority);
            }
        }
        run
    }

    /// A final state arrived: under strict durability it waits for its
    /// commit; otherwise dependents are released now (and, with a journal,
    /// the state is committed soon after).
    fn settle(
        &mut self,
        i: usize,
        report: TaskReport,
        strict: bool,
        journaled: bool,
        unrecorded: &mut Vec<(usize, TaskReport)>,
        observe: &(dyn Fn(Event<'_>) + Sync),
    ) {
        if strict {
            unrecorded.push((i, report));
            return;
        }
        if journaled {
            unrecorded.push((i, report.clone()));
        }
        self.finish(i, report, observe);
    }

    /// Builds the request for a ready task, or the report of a task that
    /// will not run (a dependency failed, `when:` is false, an expression failed).
    fn prepare(&mut self, i: usize, cancel: &Arc<Cancel>) -> Result<TaskRequest, Box<TaskReport>> {
        let task = &self.plan.tasks[i];
        let blocked = task.needs.iter().find(|&&d| {
            self.reports[d].as_ref().is_some_and(|r| {
                matches!(r.status, TaskStatus::Failed | TaskStatus::NotRun) && !r.tolerated
            })
        });
        if let Some(&dep) = blocked {
            let dep = &self.plan.tasks[dep].id;
            return Err(self.blank(
                i,
                TaskStatus::NotRun,
                None,
                format!("not run because `{dep}` did not succeed"),
            ));
        }
        let input = match (&task.when, &task.input, &task.for_each) {
            // No expressions to evaluate (most tasks of a large fan-out):
            // no scope to build.
            (None, Template::Literal(input), None) => input.to_string(),
            _ => self.resolve_input(i)?,
        };
        let input = match self.overrides.get(&task.id) {
            Some(replaced) => replaced.clone(),
            None => input,
        };
        Ok(TaskRequest {
            execution_id: Arc::clone(&self.execution_id),
            task_id: task.id.clone(),
            uses: task.uses.clone(),
            attempt: 1,
            input,
            limits: task.limits,
            cancel: Arc::clone(cancel),
            fallback: false,
        })
    }

    /// The request of task `i`'s fallback, if it has one: the fallback's
    /// plugin and its own `with:` (rendered now, with what the task sees).
    fn fallback_request(
        &mut self,
        i: usize,
        request: &TaskRequest,
    ) -> Result<Option<TaskRequest>, Box<TaskReport>> {
        let Some(fallback) = &self.plan.tasks[i].fallback else {
            return Ok(None);
        };
        let input = match &fallback.input {
            Template::Literal(input) => input.to_string(),
            template => {
                let bindings = self.bindings(i);
                self.expressions
                    .render(template, &bindings)
                    .map_err(|e| {
                        self.blank(
                            i,
                            TaskStatus::Failed,
                            Some(FailureKind::Expression),
                            format!("`fallback.with`: {e}"),
                        )
                    })?
                    .to_string()
            }
        };
        Ok(Some(TaskRequest {
            uses: fallback.uses.clone(),
            input,
            fallback: true,
            ..request.clone()
        }))
    }

    /// Evaluates a task's `when:` and renders its `with:` templates.
    fn resolve_input(&mut self, i: usize) -> Result<String, Box<TaskReport>> {
        let task = &self.plan.tasks[i];
        let bindings = self.bindings(i);
        if let Some(when) = &task.when {
            match self.expressions.eval_condition(when, &bindings) {
                Ok(true) => {}
                Ok(false) => return Err(self.blank(i, TaskStatus::Skipped, None, String::new())),
                Err(e) => {
                    return Err(self.blank(
                        i,
                        TaskStatus::Failed,
                        Some(FailureKind::Expression),
                        format!("`when`: {e}"),
                    ));
                }
            }
        }
        if task.for_each.is_some() {
            // Rendered per item, with `item` and `index`.
            return Ok(String::new());
        }
        self.expressions
            .render(&task.input, &bindings)
            .map(|input| input.to_string())
            .map_err(|e| {
                self.blank(
                    i,
                    TaskStatus::Failed,
                    Some(FailureKind::Expression),
                    format!("`with`: {e}"),
                )
            })
    }

    /// The list a `for_each` task runs over, and what its items' expressions see.
    fn items(&mut self, i: usize) -> Result<(Vec<Value>, Bindings), Box<TaskReport>> {
        let task = &self.plan.tasks[i];
        let for_each = task.for_each.as_ref().expect("a for_each task");
        let bindings = self.bindings(i);
        let fail = |run: &Self, message: String| {
            run.blank(
                i,
                TaskStatus::Failed,
                Some(FailureKind::Expression),
                message,
            )
        };
        match self.expressions.eval(&for_each.items, &bindings) {
            Ok(Value::Array(items)) if items.len() > MAX_ITEMS => Err(fail(
                self,
                format!(
                    "`for_each` gave {} items; a task may run over at most {MAX_ITEMS}: split the list",
                    items.len()
                ),
            )),
            Ok(Value::Array(items)) => Ok((items, bindings)),
            Ok(other) => Err(fail(
                self,
                format!("`for_each` must give a list, not {other}"),
            )),
            Err(e) => Err(fail(self, format!("`for_each`: {e}"))),
        }
    }

    fn bindings(&mut self, i: usize) -> Bindings {
        let mut bindings = self.base.clone();
        for &r in &self.plan.tasks[i].reads {
            let Some(report) = &self.reports[r] else {
                continue;
            };
            let converted = self.converted[r].get_or_insert_with(|| {
                self.expressions
                    .convert(report.output.as_ref().unwrap_or(&Value::Null))
            });
            bindings.add_task(
                &self.plan.tasks[r].id,
                report.status.as_str(),
                converted.clone(),
            );
        }
        bindings
    }

    fn blank(
        &self,
        i: usize,
        status: TaskStatus,
        kind: Option<FailureKind>,
        message: String,
    ) -> Box<TaskReport> {
        let task = &self.plan.tasks[i];
        Box::new(TaskReport {
            id: task.id.clone(),
            uses: task.uses.clone(),
            status,
            output: None,
            error: (!message.is_empty()).then_some(TaskError { kind, message }),
            usage: None,
            metering: Metering::default(),
            attempts: 0,
            fallback: false,
            degraded: false,
            tolerated: false,
            input: None,
        })
    }

    /// The final state of task `i` after its attempts: a failure becomes
    /// the task's `default:` (degraded) if it has one, and is tolerated
    /// under `continue_on_error`.
    fn report(&self, i: usize, outcome: Outcome) -> TaskReport {
        let task = &self.plan.tasks[i];
        let mut report = TaskReport::from_outcome(&task.id, &task.uses, outcome);
        let cancelled = report
            .error
            .as_ref()
            .is_some_and(|e| e.kind == Some(FailureKind::Cancelled));
        if report.status == TaskStatus::Failed && !cancelled {
            if let Some(default) = &task.default {
                report.status = TaskStatus::Succeeded;
                report.output = Some(default.clone());
                report.degraded = true;
            } else {
                report.tolerated = task.continue_on_error;
            }
        }
        report
    }

    /// Records a final state and releases dependents whose needs are all done.
    fn finish(&mut self, i: usize, report: TaskReport, observe: &(dyn Fn(Event<'_>) + Sync)) {
        if report.status == TaskStatus::Failed && !report.tolerated && self.first_error.is_none() {
            let message = report.error.as_ref().map_or("", |e| e.message.as_str());
            self.first_error = Some(format!("task `{}` failed: {message}", report.id));
        }
        observe(Event::Finished(&report));
        self.reports[i] = Some(report);
        for dependent in self.plan.dag.dependents(i) {
            self.waiting_on[dependent] = self.waiting_on[dependent].saturating_sub(1);
            if self.waiting_on[dependent] == 0 {
                self.ready
                    .push(dependent, self.plan.tasks[dependent].priority);
            }
        }
    }

    fn into_report(
        self,
        plan: &Plan,
        execution_id: &str,
        started: Instant,
        stop: Stop,
    ) -> RunReport {
        let tasks: Vec<TaskReport> = self.reports.into_iter().flatten().collect();
        let mut error = self.journal_error.or(self.first_error);
        if stop == Stop::TimedOut {
            let timeout = plan.timeout.unwrap_or_default();
            error = Some(format!(
                "workflow `{}` timed out: its `timeout` ({}) passed with {} of {} tasks finished",
                plan.name,
                humantime::format_duration(timeout),
                tasks.len(),
                plan.tasks.len()
            ));
        }
        if stop == Stop::Cancelled && error.is_none() {
            error = Some("cancelled".to_owned());
        }
        let unfinished = plan.tasks.len() - tasks.len();
        if error.is_none() && unfinished > 0 {
            error = Some(format!("{unfinished} tasks did not finish"));
        }
        let mut outputs = serde_json::Map::new();
        if error.is_none() {
            let mut bindings = self.base;
            for report in &tasks {
                let output = self
                    .expressions
                    .convert(report.output.as_ref().unwrap_or(&Value::Null));
                bindings.add_task(&report.id, report.status.as_str(), output);
            }
            for (name, template) in &plan.outputs {
                match self.expressions.render(template, &bindings) {
                    Ok(value) => {
                        outputs.insert(name.clone(), value);
                    }
                    Err(e) => {
                        error = Some(format!("output `{name}`: {e}"));
                        outputs.clear();
                        break;
                    }
                }
            }
        }
        RunReport {
            workflow: plan.name.clone(),
            execution_id: execution_id.to_owned(),
            status: if stop == Stop::Cancelled {
                RunStatus::Cancelled
            } else if error.is_none() {
                RunStatus::Succeeded
            } else {
                RunStatus::Failed
            },
            error,
            outputs,
            tasks,
            duration_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        }
    }
}
