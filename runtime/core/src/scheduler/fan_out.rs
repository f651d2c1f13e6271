//! `for_each:` one task over a list: each item runs as its own unit (its own
//! attempts, retries and fallback), at most `concurrency` at once, and its
//! final state is committed as it finishes (as task `<id>[<index>]`), so a
//! resumed run redoes only the items that had not finished. The task's
//! output is the items' outputs in list order (`null` for a failed item);
//! it fails when fewer than `min_success_ratio` of the items succeeded.

use serde_json::Value;
use tokio::task::JoinSet;

use super::Commit;
use super::attempts::{Attempter, Outcome, TaskAttempts};
use super::executor::{
    Executor, FailureKind, Metering, TaskFailure, TaskRequest, TaskSuccess, Usage,
};
use super::journal::Journal;
use super::report::{TaskReport, TaskStatus};
use super::task_ref::TaskRef;
use crate::expr::{Bindings, Template};

/// The most items one `for_each` may have: a list longer than this is an
/// error rather than unbounded memory.
pub const MAX_ITEMS: usize = 100_000;

/// One fan-out, owned so it can be spawned.
pub(super) struct FanOut<E, J> {
    pub attempter: Attempter<E, J>,
    /// The request of the task, input not yet rendered.
    pub request: TaskRequest,
    /// The task's `with:`, and its fallback's (plugin, `with:`).
    pub input: Template,
    pub fallback: Option<(String, Template)>,
    /// What the task's expressions see; `item` and `index` are added per item.
    pub bindings: Bindings,
    pub items: Vec<Value>,
    pub concurrency: usize,
    pub min_success_ratio: f64,
    /// Items recorded by an earlier process.
    pub done: Vec<(usize, TaskReport)>,
}

impl<E: Executor, J: Journal + Clone + 'static> FanOut<E, J> {
    /// Runs every item not yet done and gathers the task's result.
    pub async fn run(self) -> Outcome {
        let FanOut {
            attempter,
            request,
            input,
            fallback,
            bindings,
            items,
            concurrency,
            min_success_ratio,
            done,
        } = self;
        let (expressions, journal) = (&attempter.expressions, &attempter.journal);
        let task = request.task_id.clone();
        let mut results: Vec<Option<TaskReport>> = vec![None; items.len()];
        for (index, report) in done {
            if let Some(slot) = results.get_mut(index) {
                *slot = Some(report);
            }
        }
        if let Some(journal) = journal {
            let finished = results.iter().filter(|r| r.is_some()).count();
            journal.items_started(&task, items.len(), finished);
        }
        let mut running = JoinSet::new();
        let mut next = 0;
        let mut unrecorded: Vec<TaskReport> = Vec::new();
        let mut commit: Option<Commit<'_>> = None;
        let mut journal_error = None;
        loop {
            while running.len() < concurrency.max(1) && next < items.len() {
                let index = next;
                next += 1;
                if results[index].is_some() {
                    continue;
                }
                let mut bindings = bindings.clone();
                bindings.add_value("item", &items[index]);
                bindings.add_value("index", &Value::from(index));
                let render = |template: &Template| {
                    expressions
                        .render(template, &bindings)
                        .map(|v| v.to_string())
                };
                let id = TaskRef::Item { task: &task, index }.to_string();
                let item_request = match render(&input) {
                    Ok(input) => TaskRequest {
                        task_id: id.clone(),
                        input,
                        ..request.clone()
                    },
                    Err(e) => {
                        results[index] = Some(TaskReport::from_outcome(
                            &id,
                            &request.uses,
                            Outcome::once(Err(TaskFailure {
                                kind: FailureKind::Expression,
                                message: format!("`with`: {e}"),
                                metering: Metering::default(),
                            })),
                        ));
                        continue;
                    }
                };
                let item_fallback = fallback.as_ref().and_then(|(uses, template)| {
                    render(template).ok().map(|input| TaskRequest {
                        uses: uses.clone(),
                        input,
                        fallback: true,
                        ..item_request.clone()
                    })
                });
                let attempts = TaskAttempts {
                    attempter: attempter.clone(),
                    request: item_request,
                    fallback: item_fallback,
                    timeout: None,
                    resume: None,
                };
                running.spawn(async move { (index, attempts.run().await) });
            }
            if let (Some(journal), None) = (journal, &commit)
                && !unrecorded.is_empty()
                && journal_error.is_none()
            {
                let reports = std::mem::take(&mut unrecorded);
                // Items are recorded for good: not before the task's inputs are.
                commit = Some(if request.effects.may_record() {
                    Box::pin(journal.commit(reports, false))
                } else {
                    let effects = request.effects.clone();
                    Box::pin(async move {
                        effects.recorded_needs().await?;
                        journal.commit(reports, false).await
                    })
                });
            }
            if running.is_empty() && commit.is_none() {
                break;
            }
            tokio::select! {
                joined = running.join_next(), if !running.is_empty() => {
                    let Some(joined) = joined else { continue };
                    let (index, outcome) = joined.unwrap_or_else(|e| {
                        (usize::MAX, Outcome::once(Err(TaskFailure {
                            kind: FailureKind::Plugin,
                            message: format!("an item's executor crashed: {e}"),
                            metering: Metering::default(),
                        })))
                    });
                    let Some(slot) = results.get_mut(index) else { continue };
                    let report = TaskReport::from_outcome(&TaskRef::Item { task: &task, index }.to_string(), &request.uses, outcome);
                    if journal.is_some() {
                        unrecorded.push(report.clone());
                    }
                    *slot = Some(report);
                }
                result = async { commit.as_mut().expect("guarded").await }, if commit.is_some() => {
                    commit = None;
                    if let Err(e) = result {
                        journal_error = Some(e);
                    }
                }
            }
        }
        if let Some(e) = journal_error {
            return Outcome::once(Err(TaskFailure {
                kind: FailureKind::Plugin,
                message: format!("recording the items failed: {e}"),
                metering: Metering::default(),
            }));
        }
        // Every item's state is committed by now: the loop ends only with
        // no commit in flight and none pending.
        gather(results, min_success_ratio)
    }
}

/// The task's result from its items'.
fn gather(results: Vec<Option<TaskReport>>, min_success_ratio: f64) -> Outcome {
    let total = results.len();
    let mut outputs = Vec::with_capacity(total);
    let mut metering = Metering::default();
    let (mut succeeded, mut attempts, mut first_error) = (0usize, 0u32, None);
    let results: Vec<TaskReport> = results.into_iter().flatten().collect();
    let usage = Usage::total(results.iter().filter_map(|r| r.usage.as_ref()));
    for report in results {
        metering.duration += report.metering.duration;
        metering.fuel = metering.fuel.saturating_add(report.metering.fuel);
        metering.peak_memory = metering.peak_memory.max(report.metering.peak_memory);
        // The task took as many attempts as its most-tried item.
        attempts = attempts.max(report.attempts);
        if report.status == TaskStatus::Succeeded {
            succeeded += 1;
        } else if first_error.is_none() {
            first_error = Some(format!(
                "{}: {}",
                report.id,
                report.error.as_ref().map_or("", |e| e.message.as_str())
            ));
        }
        outputs.push(report.output.unwrap_or(Value::Null));
    }
    let ratio = if total == 0 {
        1.0
    } else {
        succeeded as f64 / total as f64
    };
    let result = if ratio >= min_success_ratio {
        Ok(TaskSuccess {
            output: Value::Array(outputs),
            usage,
            metering,
        })
    } else {
        Err(TaskFailure {
            kind: FailureKind::Fatal,
            message: format!(
                "{} of {total} items failed, more than `min_success_ratio` ({min_success_ratio}) allows; first: {}",
                total - succeeded,
                first_error.unwrap_or_default()
            ),
            metering,
        })
    };
    Outcome {
        result,
        attempts,
        fallback: false,
        input: None,
    }
}
