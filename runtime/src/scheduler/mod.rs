//! Runs a [`Plan`]: a ready queue over the DAG, at most `concurrency` tasks at
//! once, each handed to an [`Executor`].
//!
//! A task becomes ready when everything it needs has finished. Its `when:` and
//! `${{ }}` templates are evaluated here, on the host, just before it starts. A
//! failed task marks its dependents `not_run` and fails the run; independent
//! branches still run to the end. A skipped task does not stop its dependents:
//! they see `tasks.<id>.status == "skipped"` and a null output.
//!
//! This module never imports wasmtime: executors are behind one trait.

mod executor;
mod report;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;
use tokio::task::JoinSet;

pub use executor::{Executor, FailureKind, Metering, TaskFailure, TaskRequest, TaskSuccess, Usage};
pub use report::{Event, RunReport, RunStatus, TaskError, TaskReport, TaskStatus};

use crate::expr::{Bindings, ConvertedValue, Expressions, Template};
use crate::workflow::Plan;

/// How many tasks run at once unless the workflow or the caller says otherwise.
pub const DEFAULT_CONCURRENCY: usize = 32;

/// Runs plans on one executor.
#[derive(Debug)]
pub struct Scheduler<E> {
    executor: Arc<E>,
    expressions: Expressions,
}

impl<E: Executor> Scheduler<E> {
    /// A scheduler handing tasks to `executor`.
    pub fn new(executor: Arc<E>, expressions: Expressions) -> Self {
        Self {
            executor,
            expressions,
        }
    }

    /// Runs `plan` with resolved `inputs` to the end. `concurrency` overrides
    /// the workflow's own limit; `observe` sees progress as it happens.
    pub async fn run(
        &self,
        plan: &Plan,
        inputs: &Value,
        execution_id: &str,
        concurrency: Option<usize>,
        observe: &(dyn Fn(Event<'_>) + Sync),
    ) -> RunReport {
        let started = Instant::now();
        let limit = concurrency
            .or(plan.concurrency)
            .unwrap_or(DEFAULT_CONCURRENCY)
            .max(1);
        let mut run = Run {
            plan,
            expressions: &self.expressions,
            execution_id: Arc::from(execution_id),
            base: Bindings::new(inputs),
            waiting_on: plan.tasks.iter().map(|t| t.needs.len()).collect(),
            reports: vec![None; plan.tasks.len()],
            converted: vec![None; plan.tasks.len()],
            ready: plan
                .dag
                .topological_order()
                .iter()
                .copied()
                .filter(|&i| plan.tasks[i].needs.is_empty())
                .collect(),
            first_error: None,
        };
        let mut running = JoinSet::new();
        let mut running_ids = HashMap::new();
        loop {
            while running.len() < limit {
                let Some(i) = run.ready.pop_front() else {
                    break;
                };
                match run.prepare(i) {
                    Ok(request) => {
                        let task = &plan.tasks[i];
                        observe(Event::Started {
                            id: &task.id,
                            uses: &task.uses,
                            attempt: request.attempt,
                        });
                        if running.is_empty() && run.ready.is_empty() {
                            // The only task that can run: await it here. A
                            // spawn would cost two cross-thread wake-ups per
                            // task, which dominates a chain of short tasks.
                            let result = self.executor.execute(request).await;
                            let report = run.report(i, result);
                            run.finish(i, report, observe);
                            continue;
                        }
                        let executor = Arc::clone(&self.executor);
                        let handle = running.spawn(async move { executor.execute(request).await });
                        running_ids.insert(handle.id(), i);
                    }
                    Err(report) => run.finish(i, *report, observe),
                }
            }
            let Some(joined) = running.join_next_with_id().await else {
                break;
            };
            let (i, result) = match joined {
                Ok((id, result)) => (running_ids.remove(&id), result),
                Err(e) => (
                    running_ids.remove(&e.id()),
                    Err(TaskFailure {
                        kind: FailureKind::Plugin,
                        message: format!("the executor crashed: {e}"),
                        metering: Metering::default(),
                    }),
                ),
            };
            let i = i.expect("every spawned task is recorded");
            let report = run.report(i, result);
            run.finish(i, report, observe);
        }
        run.into_report(plan, execution_id, started)
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
    ready: VecDeque<usize>,
    first_error: Option<String>,
}

impl Run<'_> {
    /// Builds the request for a ready task, or the report of a task that
    /// will not run (a dependency failed, `when:` is false, an expression failed).
    fn prepare(&mut self, i: usize) -> Result<TaskRequest, Box<TaskReport>> {
        let task = &self.plan.tasks[i];
        let blocked = task.needs.iter().find(|&&d| {
            self.reports[d]
                .as_ref()
                .is_some_and(|r| matches!(r.status, TaskStatus::Failed | TaskStatus::NotRun))
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
        let input = match (&task.when, &task.input) {
            // No expressions to evaluate (most tasks of a large fan-out):
            // no scope to build.
            (None, Template::Literal(input)) => input.to_string(),
            _ => self.resolve_input(i)?,
        };
        Ok(TaskRequest {
            execution_id: Arc::clone(&self.execution_id),
            task_id: task.id.clone(),
            uses: task.uses.clone(),
            attempt: 1,
            input,
            limits: task.limits,
        })
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
        })
    }

    fn report(&self, i: usize, result: Result<TaskSuccess, TaskFailure>) -> TaskReport {
        let task = &self.plan.tasks[i];
        let (status, output, usage, error, metering) = match result {
            Ok(s) => (
                TaskStatus::Succeeded,
                Some(s.output),
                s.usage,
                None,
                s.metering,
            ),
            Err(f) => (
                TaskStatus::Failed,
                None,
                None,
                Some(TaskError::from(f.clone())),
                f.metering,
            ),
        };
        TaskReport {
            id: task.id.clone(),
            uses: task.uses.clone(),
            status,
            output,
            error,
            usage,
            metering,
        }
    }

    /// Records a final state and releases dependents whose needs are all done.
    fn finish(&mut self, i: usize, report: TaskReport, observe: &(dyn Fn(Event<'_>) + Sync)) {
        if report.status == TaskStatus::Failed && self.first_error.is_none() {
            let message = report.error.as_ref().map_or("", |e| e.message.as_str());
            self.first_error = Some(format!("task `{}` failed: {message}", report.id));
        }
        observe(Event::Finished(&report));
        self.reports[i] = Some(report);
        for dependent in self.plan.dag.dependents(i) {
            self.waiting_on[dependent] -= 1;
            if self.waiting_on[dependent] == 0 {
                self.ready.push_back(dependent);
            }
        }
    }

    fn into_report(self, plan: &Plan, execution_id: &str, started: Instant) -> RunReport {
        let tasks: Vec<TaskReport> = self.reports.into_iter().flatten().collect();
        let mut error = self.first_error;
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
            status: if error.is_none() {
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
