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
mod effects;
mod executor;
mod fan_out;
mod journal;
mod park;
mod plugin_key;
mod ready;
mod report;
mod run;
mod task_ref;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::task::JoinSet;
use tracing::Instrument;

pub use attempts::{Outcome, PendingRetry};
pub use effects::Effects;
pub use executor::{Executor, FailureKind, Metering, TaskFailure, TaskRequest, TaskSuccess, Usage};
pub use journal::{Cancel, Journal, NoJournal, Signals, WaitOutcome};
pub use park::{Parked, ParkedWait, Ran};
pub use plugin_key::{PluginKey, PolicyStage};
pub use report::{Consumption, Event, RunReport, RunStatus, TaskError, TaskReport, TaskStatus};

use attempts::{Attempter, TaskAttempts};
use fan_out::FanOut;
pub use fan_out::MAX_ITEMS;
use park::Parking;
use run::{Resume, Run, Stop};
pub use task_ref::TaskRef;

use crate::expr::Expressions;
use crate::tenant::TenantId;
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
pub(super) type Commit<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

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
    /// Whose run it is: its tasks take their turns for task slots as this
    /// tenant's.
    pub tenant: TenantId,
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

    /// Runs `plan` of `tenant` with resolved `inputs` to the end, recording
    /// nothing. `concurrency` overrides the workflow's own limit; `observe`
    /// sees progress as it happens.
    pub async fn run(
        &self,
        plan: &Plan,
        (tenant, inputs): (&TenantId, &Value),
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
            tenant: tenant.clone(),
            observe,
        };
        self.run_with(plan, inputs, execution_id, options).await
    }

    /// Runs `plan` to the end (or until cancelled), handing every final task
    /// state to the journal. A task's dependents start at once and commits
    /// follow; under [`Durability::Strict`] whatever the dependents do that
    /// can be seen outside (their [`Effects`]), and the task's `Finished`
    /// event, wait for the commit holding its state, and commits follow one
    /// another without pause; under [`Durability::Batched`] nothing waits
    /// and commits come at most every [`BATCH_INTERVAL`].
    pub async fn run_with<J: Journal + Signals + Clone + 'static>(
        &self,
        plan: &Plan,
        inputs: &Value,
        execution_id: &str,
        options: RunOptions<'_, J>,
    ) -> RunReport {
        match self
            .run_or_park(plan, inputs, execution_id, options, None)
            .await
        {
            Ran::Finished(report) => report,
            Ran::Parked(_) => unreachable!("a run without `park_after` never parks"),
        }
    }

    /// Runs `plan` as [`Scheduler::run_with`] does, except that with
    /// `park_after` and a journal, once nothing but started `wait:` tasks
    /// has run for that long (everything else finished and committed), it
    /// stops and says what the run waits for ([`Ran::Parked`]). Nothing
    /// is lost: resumed from the journal, the waits find their recorded
    /// deadlines and signals.
    pub async fn run_or_park<J: Journal + Signals + Clone + 'static>(
        &self,
        plan: &Plan,
        inputs: &Value,
        execution_id: &str,
        options: RunOptions<'_, J>,
        park_after: Option<Duration>,
    ) -> Ran {
        let started = Instant::now();
        let RunOptions {
            concurrency,
            journal,
            done,
            retries,
            overrides,
            started_at,
            cancel,
            tenant,
            observe,
        } = options;
        // The workflow's timeout, counted from the run's first start.
        let started_at = started_at.unwrap_or_else(attempts::now_ms);
        let timeout = plan.timeout.map(|t| {
            let elapsed = attempts::now_ms().saturating_sub(started_at);
            tokio::time::Instant::now() + t.saturating_sub(Duration::from_millis(elapsed))
        });
        let park_after = park_after.filter(|_| journal.is_some());
        let mut parking = Parking::default();
        let (waits_started, mut started_waits) = tokio::sync::mpsc::unbounded_channel();
        let mut timed_out = false;
        let limit = concurrency
            .or(plan.concurrency)
            .unwrap_or(DEFAULT_CONCURRENCY)
            .max(1);
        // Without a journal nothing waits for a commit.
        let strict = journal.is_some() && plan.durability == Durability::Strict;
        let resume = Resume {
            done,
            retries,
            overrides,
        };
        let mut run = Run::new(
            plan,
            &self.expressions,
            (execution_id, tenant, inputs),
            resume,
            journal.is_some(),
            strict,
        );
        let mut running = JoinSet::new();
        let mut running_ids = HashMap::new();
        // Strict: the states in the commit in flight, whose dependents wait for it.
        let mut in_commit: Vec<usize> = Vec::new();
        let mut commit: Option<Commit<'_>> = None;
        // Batched: when the commit in flight (or the last one) started.
        let mut batch_started = tokio::time::Instant::now();
        let mut cancelled = cancel.is_cancelled();
        loop {
            while !cancelled && run.journal_error.is_none() && running.len() < limit {
                let Some(i) = run.ready.pop() else {
                    break;
                };
                // Resolving a task's input runs host code over hostile
                // expressions and values: a panic there fails this task only.
                let prepared = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    run.prepare(i, &cancel)
                }))
                .unwrap_or_else(|panic| Err(Box::new(run.internal_failure(i, &*panic))));
                match prepared {
                    Ok(request) if plan.tasks[i].wait.is_some() => {
                        let task = &plan.tasks[i];
                        let wait = task.wait.as_ref().expect("checked");
                        observe(Event::Started {
                            id: &task.id,
                            uses: &task.uses,
                            attempt: request.attempt,
                        });
                        let waiting = wait_for_signal(
                            journal.cloned(),
                            (i, &task.id, &wait.signal, wait.timeout),
                            request.effects,
                            waits_started.clone(),
                        );
                        let (signal, default) = (wait.signal.clone(), wait.default.clone());
                        let span =
                            tracing::debug_span!("task", task = %task.id, plugin = %task.uses);
                        let handle = running.spawn(
                            async move {
                                Outcome::once(match waiting.await {
                                    Ok(outcome) => waited(outcome, &signal, default),
                                    Err(message) => Err(TaskFailure {
                                        kind: FailureKind::Internal,
                                        message,
                                        metering: Metering::default(),
                                    }),
                                })
                            }
                            .instrument(span),
                        );
                        running_ids.insert(handle.id(), i);
                    }
                    Ok(request) => {
                        let task = &plan.tasks[i];
                        let unit = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            self.unit(&mut run, i, request, journal)
                        }))
                        .unwrap_or_else(|panic| Err(Box::new(run.internal_failure(i, &*panic))));
                        let unit = match unit {
                            Ok(unit) => guarded(unit),
                            Err(report) => {
                                run.settle(i, *report, observe);
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
                            // Commits go on meanwhile: the task's effects
                            // may be waiting for one.
                            let mut unit = unit;
                            let outcome = loop {
                                if let Some(journal) = journal
                                    && let Some(batch) = start_commit(
                                        journal,
                                        &mut commit,
                                        &mut batch_started,
                                        &mut run,
                                        false,
                                    )
                                {
                                    in_commit = batch;
                                }
                                tokio::select! {
                                    outcome = &mut unit => break Some(outcome),
                                    result = async { commit.as_mut().expect("guarded").await }, if commit.is_some() => {
                                        commit = None;
                                        committed(&mut run, result, &mut in_commit, observe);
                                    }
                                    // Batched states left from before a long
                                    // task: committed when their turn comes,
                                    // not when it ends.
                                    () = tokio::time::sleep_until(batch_started + BATCH_INTERVAL),
                                        if commit.is_none() && !run.unrecorded.is_empty() && run.journal_error.is_none() => {}
                                    () = sleep_until(timeout) => break None,
                                }
                            };
                            let Some(outcome) = outcome else {
                                timed_out = true;
                                cancelled = true;
                                cancel.cancel();
                                continue;
                            };
                            if cancel.is_cancelled() {
                                // Interrupted by the cancel: not a result of the task.
                                cancelled = true;
                                continue;
                            }
                            let report = run.report(i, outcome);
                            run.settle(i, report, observe);
                            continue;
                        }
                        let handle = running.spawn(unit);
                        running_ids.insert(handle.id(), i);
                    }
                    Err(report) => {
                        run.settle(i, *report, observe);
                    }
                }
            }
            if let Some(journal) = journal {
                let idle = running.is_empty() && run.ready.is_empty();
                let batch = start_commit(journal, &mut commit, &mut batch_started, &mut run, idle);
                if let Some(batch) = batch {
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
            let park_at = park_after.and_then(|after| {
                let idle = !cancelled
                    && run.journal_error.is_none()
                    && run.ready.is_empty()
                    && commit.is_none()
                    && run.unrecorded.is_empty();
                parking.due(running.len(), idle, after)
            });
            tokio::select! {
                Some((i, deadline)) = started_waits.recv() => {
                    // Unless it ended meanwhile.
                    if running_ids.values().any(|&r| r == i) {
                        parking.started(i, deadline);
                    }
                }
                () = sleep_until(park_at), if park_at.is_some() => {
                    let timeout_at = plan
                        .timeout
                        .map(|t| started_at.saturating_add(u64::try_from(t.as_millis()).unwrap_or(u64::MAX)));
                    let ids = |i: usize| {
                        let task = &plan.tasks[i];
                        let signal = task.wait.as_ref().map(|w| w.signal.clone()).unwrap_or_default();
                        (task.id.clone(), signal)
                    };
                    return Ran::Parked(parking.parked(ids, timeout_at));
                }
                joined = running.join_next_with_id(), if !running.is_empty() => {
                    let Some(joined) = joined else { continue };
                    let (i, result) = match joined {
                        Ok((id, result)) => (running_ids.remove(&id), result),
                        Err(e) => (
                            running_ids.remove(&e.id()),
                            Outcome::once(Err(TaskFailure {
                                kind: FailureKind::Internal,
                                message: format!("the task's work ended abnormally: {e}"),
                                metering: Metering::default(),
                            })),
                        ),
                    };
                    let i = i.expect("every spawned task is recorded");
                    parking.ended(i);
                    if cancelled {
                        // Interrupted by the cancel: not a result of the task.
                        continue;
                    }
                    let report = run.report(i, result);
                    run.settle(i, report, observe);
                }
                result = async { commit.as_mut().expect("guarded").await }, if commit.is_some() => {
                    commit = None;
                    committed(&mut run, result, &mut in_commit, observe);
                }
                () = cancel.cancelled(), if !cancelled => {
                    cancelled = true;
                    // Plugins stop at the next epoch tick; waits stop here.
                    running.abort_all();
                }
                // Batched states waiting for the next commit's turn.
                () = tokio::time::sleep_until(batch_started + BATCH_INTERVAL),
                    if commit.is_none() && !run.unrecorded.is_empty() && run.journal_error.is_none() => {}
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
        Ran::Finished(run.into_report(plan, execution_id, started, stop))
    }
}

/// A `wait:` task's wait, once its effects are released (under strict
/// durability its deadline is recorded only after its inputs are): it
/// records its deadline, says so on `started` (the run may park from
/// then), and waits for its signal.
fn wait_for_signal<J: Signals + Send + 'static>(
    journal: Option<J>,
    (i, task, signal, timeout): (usize, &str, &str, Option<Duration>),
    effects: Effects,
    started: tokio::sync::mpsc::UnboundedSender<(usize, Option<u64>)>,
) -> impl Future<Output = Result<WaitOutcome, String>> + Send + 'static {
    let (task, signal) = (task.to_owned(), signal.to_owned());
    async move {
        effects.wait().await?;
        let Some(journal) = journal else {
            return Ok(NoJournal
                .start_wait(&task, &signal, timeout)
                .await
                .map(|_| None));
        };
        let deadline = match journal.start_wait(&task, &signal, timeout).await {
            Ok(deadline) => deadline,
            Err(message) => return Ok(Err(message)),
        };
        let _ = started.send((i, deadline));
        Ok(journal.wait(&signal, deadline).await)
    }
}

/// One task's work, as the scheduler awaits or spawns it.
type Unit = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// `unit`, with a panic anywhere inside it (the host's own code around the
/// attempts, the journal's, an executor's) turned into the task's failure,
/// kind `internal`, instead of the end of the run or of the process.
fn guarded(unit: Unit) -> Unit {
    use futures_util::FutureExt;
    Box::pin(
        std::panic::AssertUnwindSafe(unit)
            .catch_unwind()
            .map(|finished| {
                finished.unwrap_or_else(|panic| {
                    Outcome::once(Err(TaskFailure {
                        kind: FailureKind::Internal,
                        message: format!(
                            "the runtime failed while running the task: {}",
                            crate::expr::panic_message(&*panic)
                        ),
                        metering: Metering::default(),
                    }))
                })
            }),
    )
}

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
        // Its attempts (or items) are spans under it, and it under the
        // run's span, the current one.
        let span = tracing::debug_span!("task", task = %task.id, plugin = %task.uses);
        let attempter = Attempter {
            executor: Arc::clone(&self.executor),
            journal: journal.cloned(),
            expressions: self.expressions.clone(),
            inputs: Arc::clone(&run.inputs),
            policy: Arc::clone(&task.retry),
        };
        if let Some(for_each) = &task.for_each {
            let (items, bindings) = run.items(i)?;
            let fan_out = FanOut {
                attempter,
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
                return Ok(Box::pin(fan_out.instrument(span)));
            };
            // The task's timeout bounds all its items together.
            return Ok(Box::pin(
                async move {
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
                }
                .instrument(span),
            ));
        }
        let fallback = run.fallback_request(i, &request)?;
        Ok(Box::pin(
            TaskAttempts {
                attempter,
                resume: run.retries.remove(&i),
                request,
                fallback,
                timeout: task.timeout,
            }
            .run()
            .instrument(span),
        ))
    }
}

/// Hands the states not yet recorded to the journal as one commit, unless
/// a commit is in flight or the journal failed; under batched durability
/// only when the run is idle or [`BATCH_INTERVAL`] has passed since the last
/// one started. Under strict durability returns the tasks in the batch,
/// whose events wait for the commit.
fn start_commit<'a, J: Journal>(
    journal: &'a J,
    commit: &mut Option<Commit<'a>>,
    batch_started: &mut tokio::time::Instant,
    run: &mut Run<'_>,
    idle: bool,
) -> Option<Vec<usize>> {
    let due = run.strict || idle || batch_started.elapsed() >= BATCH_INTERVAL;
    if commit.is_some() || run.unrecorded.is_empty() || run.journal_error.is_some() || !due {
        return None;
    }
    *batch_started = tokio::time::Instant::now();
    run.committing_all();
    let (tasks, reports): (Vec<usize>, Vec<TaskReport>) =
        std::mem::take(&mut run.unrecorded).into_iter().unzip();
    *commit = Some(Box::pin(journal.commit(reports, idle)));
    run.strict.then_some(tasks)
}

/// The commit in flight returned: the states in it are durable, so the
/// effects waiting for them are released and, under strict durability,
/// their events are seen now. On a failed commit the states stay in memory,
/// no new task starts, held effects are never released, and the run reports
/// the error.
fn committed(
    run: &mut Run<'_>,
    result: Result<(), String>,
    in_commit: &mut Vec<usize>,
    observe: &(dyn Fn(Event<'_>) + Sync),
) {
    match result {
        Ok(()) => run.watermark.committed(run.committing),
        Err(e) => {
            run.watermark.failed();
            run.journal_error = Some(format!("recording the run failed: {e}"));
        }
    }
    for i in in_commit.drain(..) {
        run.announce(i, observe);
    }
}

/// Resolves at `at`, or never.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
