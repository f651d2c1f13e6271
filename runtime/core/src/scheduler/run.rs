//! The state of one run: which tasks wait for which, which are ready, their
//! final states, and how a ready task's input is resolved (`when:`,
//! `with:` templates, `for_each` lists, fallbacks, replay overrides) on the
//! host, just before it starts.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;

use super::effects::Watermark;
use super::ready::ReadyQueue;
use super::{
    Cancel, Effects, Event, FailureKind, MAX_ITEMS, Metering, Outcome, PendingRetry, RunReport,
    RunStatus, TaskError, TaskRef, TaskReport, TaskRequest, TaskStatus,
};
use crate::expr::{Bindings, ConvertedValue, Expressions, Template};
use crate::tenant::TenantId;
use crate::workflow::Plan;

/// Why a run stopped before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stop {
    No,
    Cancelled,
    TimedOut,
}

/// What an earlier process of the same execution left behind.
pub(super) struct Resume {
    /// Final states: these tasks do not run again.
    pub done: Vec<TaskReport>,
    /// Retries it scheduled and did not start.
    pub retries: Vec<PendingRetry>,
    /// Inputs given instead of `with:`, by task id.
    pub overrides: HashMap<String, String>,
}

/// The state of one run.
pub(super) struct Run<'a> {
    pub plan: &'a Plan,
    expressions: &'a Expressions,
    execution_id: Arc<str>,
    tenant: TenantId,
    base: Bindings,
    /// How many needs of each task have not finished.
    waiting_on: Vec<usize>,
    reports: Vec<Option<TaskReport>>,
    /// Outputs converted once for the expressions that read them.
    converted: Vec<Option<ConvertedValue>>,
    pub ready: ReadyQueue,
    first_error: Option<String>,
    pub journal_error: Option<String>,
    /// The workflow's inputs, as `retry_if` sees them.
    pub inputs: Arc<Value>,
    /// Retries scheduled by an earlier process, by task.
    pub retries: HashMap<usize, PendingRetry>,
    /// `for_each` items recorded by an earlier process, by task.
    pub done_items: HashMap<usize, Vec<(usize, TaskReport)>>,
    /// Inputs given instead of `with:`, by task id.
    overrides: HashMap<String, String>,
    /// A journal records the run.
    journaled: bool,
    /// Dependents' effects wait for their needs' states to be committed.
    pub strict: bool,
    /// Final states not yet handed to the journal.
    pub unrecorded: Vec<(usize, TaskReport)>,
    /// How many states were handed to the journal so far: each is
    /// numbered in that order.
    queued: u64,
    /// The number of each task's state (0: recorded by an earlier process,
    /// or not recorded at all).
    seq: Vec<u64>,
    /// The number of the last state in the commit in flight.
    pub committing: u64,
    /// How far the states are durable, as tasks' effects wait on it.
    pub watermark: Watermark,
}

impl<'a> Run<'a> {
    /// A run with what an earlier process recorded already in place.
    /// `journaled`: a journal records it; `strict`: dependents wait for commits.
    pub fn new(
        plan: &'a Plan,
        expressions: &'a Expressions,
        (execution_id, tenant, inputs): (&str, TenantId, &Value),
        resume: Resume,
        journaled: bool,
        strict: bool,
    ) -> Self {
        let Resume {
            done,
            retries,
            overrides,
        } = resume;
        let mut run = Run {
            plan,
            expressions,
            execution_id: Arc::from(execution_id),
            tenant,
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
            overrides,
            journaled,
            strict,
            unrecorded: Vec::new(),
            queued: 0,
            seq: vec![0; plan.tasks.len()],
            committing: 0,
            watermark: Watermark::new(),
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
            } else if let TaskRef::Item { task, index: item } = TaskRef::parse(&report.id)
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

    /// A final state arrived: dependents are released now and, with a
    /// journal, the state is committed soon after. Under strict durability
    /// the dependents' effects and the state's event wait for that commit.
    pub fn settle(&mut self, i: usize, report: TaskReport, observe: &(dyn Fn(Event<'_>) + Sync)) {
        if self.journaled {
            self.queued += 1;
            self.seq[i] = self.queued;
            self.unrecorded.push((i, report.clone()));
        }
        let silent = |_: Event<'_>| {};
        let observe: &(dyn Fn(Event<'_>) + Sync) = if self.strict { &silent } else { observe };
        self.finish(i, report, observe);
    }

    /// Every state handed to the journal so far is in the commit starting now.
    pub fn committing_all(&mut self) {
        self.committing = self.queued;
    }

    /// Builds the request for a ready task, or the report of a task that
    /// will not run (a dependency failed, `when:` is false, an expression failed).
    pub fn prepare(
        &mut self,
        i: usize,
        cancel: &Arc<Cancel>,
    ) -> Result<TaskRequest, Box<TaskReport>> {
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
        // Only a dead-letter replay has overrides: no lookup otherwise.
        let input = match (!self.overrides.is_empty())
            .then(|| self.overrides.get(&task.id))
            .flatten()
        {
            Some(replaced) => replaced.clone(),
            None => input,
        };
        Ok(TaskRequest {
            execution_id: Arc::clone(&self.execution_id),
            tenant: self.tenant.clone(),
            task_id: task.id.clone(),
            uses: task.uses.clone(),
            attempt: 1,
            input,
            limits: task.limits,
            cancel: Arc::clone(cancel),
            fallback: false,
            effects: self.effects(i),
        })
    }

    /// When task `i`'s effects may happen (under strict durability, once
    /// its needs' states are committed; their ancestors' were committed
    /// before them) and its records may be written (after those states,
    /// under either durability).
    fn effects(&self, i: usize) -> Effects {
        if !self.journaled {
            return Effects::released();
        }
        let needs = self.plan.tasks[i].needs.iter().map(|&d| self.seq[d]).max();
        self.watermark.effects(needs.unwrap_or(0), self.strict)
    }

    /// The request of task `i`'s fallback, if it has one: the fallback's
    /// plugin and its own `with:` (rendered now, with what the task sees).
    pub fn fallback_request(
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
    pub fn items(&mut self, i: usize) -> Result<(Vec<Value>, Bindings), Box<TaskReport>> {
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

    /// The report of task `i` after the host panicked preparing it.
    pub fn internal_failure(&self, i: usize, panic: &(dyn std::any::Any + Send)) -> TaskReport {
        let message = format!(
            "the runtime failed while preparing the task: {}",
            crate::expr::panic_message(panic)
        );
        *self.blank(i, TaskStatus::Failed, Some(FailureKind::Internal), message)
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
    pub fn report(&self, i: usize, outcome: Outcome) -> TaskReport {
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

    /// Tells `observe` that task `i` finished, once its state is committed
    /// (under strict durability).
    pub fn announce(&self, i: usize, observe: &(dyn Fn(Event<'_>) + Sync)) {
        if let Some(report) = &self.reports[i] {
            observe(Event::Finished(report));
        }
    }

    /// Records a final state and releases dependents whose needs are all done.
    pub fn finish(&mut self, i: usize, report: TaskReport, observe: &(dyn Fn(Event<'_>) + Sync)) {
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

    pub fn into_report(
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
