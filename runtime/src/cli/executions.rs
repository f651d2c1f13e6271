//! `runtime list | status | cancel | resume | gc`: recorded executions.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

use serde_json::Value;

use super::run::{TaskNames, finished_line, print_summary};
use super::summary::{run_total, run_usage, usage_text, verdicts};
use super::{Context, EXIT_INVALID, EXIT_RUN_FAILED};
use orchestrator_engine::control::ControlServer;
use orchestrator_engine::executions::{self as ops, Delivery, HistoryNote, LetterState, State};
use orchestrator_engine::scheduler::{RunStatus, TaskRef, TaskStatus, Usage};
use orchestrator_engine::service::{self, Runner, ServiceError};
use orchestrator_engine::store::executions::{ExecutionStatus, Executions, LogEvent, now_ms};

pub(super) fn executions(ctx: &Context) -> Executions {
    Executions::for_tenant(&ctx.store_path, &ctx.tenant)
}

pub(super) fn list(
    ctx: &Context,
    filter: &ops::ListFilter,
    json: bool,
) -> Result<ExitCode, ServiceError> {
    let listing = match &ctx.server {
        Some(_) => super::remote::list(ctx, filter)?,
        None => ops::list(&executions(ctx), filter)?,
    };
    let rows = &listing.views;
    if json {
        let list: Vec<Value> = rows
            .iter()
            .map(|v| {
                serde_json::json!({
                    "id": v.record.id,
                    "workflow": v.record.workflow,
                    "status": v.state().as_str(),
                    "created_at": v.record.created_at,
                    "finished_at": v.record.finished_at,
                    "tasks_finished": v.tasks.len(),
                    "tasks": v.record.tasks.len(),
                    "usage": run_total(&v.tasks),
                })
            })
            .collect();
        let page = serde_json::json!({ "executions": list, "next": listing.next });
        out!("{}", serde_json::to_string_pretty(&page).expect("JSON"));
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        out!("no executions");
    }
    for v in rows {
        let usage =
            run_total(&v.tasks).map_or_else(String::new, |u| format!("  {}", usage_text(&u)));
        out!(
            "{}  {:<11}  {:>5}/{:<5}  {}{usage}",
            v.record.id,
            v.state().as_str(),
            v.tasks.len(),
            v.record.tasks.len(),
            v.record.workflow
        );
    }
    // What the tenant's listed executions used, all together.
    let totals: Vec<Usage> = rows.iter().filter_map(|v| run_total(&v.tasks)).collect();
    if let Some(total) = Usage::total(&totals) {
        // A server's executions are the key's tenant's, whatever --tenant says.
        let tenant = rows
            .first()
            .map_or(ctx.tenant.as_str(), |v| v.record.tenant.as_str());
        out!(
            "tenant {}: {} over {} executions",
            tenant,
            usage_text(&total),
            totals.len()
        );
    }
    if let Some(next) = &listing.next {
        out!("more: runtime list --after {next}");
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn status(
    ctx: &Context,
    id: &str,
    events: bool,
    json: bool,
) -> Result<ExitCode, ServiceError> {
    let view = match &ctx.server {
        // The task lines are drawn from the events too (attempts, retries).
        Some(_) => super::remote::view(ctx, id, true)?,
        None => ops::view(&executions(ctx), id)?,
    };
    if json {
        let value = serde_json::json!({
            "status": view.state().as_str(),
            "record": view.record,
            "tasks": view.tasks,
            "events": view.events,
        });
        out!("{}", serde_json::to_string_pretty(&value).expect("JSON"));
        return Ok(ExitCode::SUCCESS);
    }
    let r = &view.record;
    out!(
        "execution {}  workflow `{}`  {}",
        r.id,
        r.workflow,
        view.state().as_str()
    );
    let took = r
        .finished_at
        .unwrap_or_else(now_ms)
        .saturating_sub(r.created_at);
    out!("  file       {}", r.file);
    let durability = serde_json::to_value(r.durability).unwrap_or_default();
    out!("  durability {}", durability.as_str().unwrap_or("?"));
    out!("  elapsed    {:.3}s", took as f64 / 1000.0);
    if let Some(error) = &r.error {
        out!("  error      {error}");
    }
    if let Some(parent) = &r.parent {
        out!(
            "  parent     task `{}` of execution {}",
            parent.task,
            parent.execution
        );
    }
    if view.state() == State::Interrupted {
        let resumer = r.parent.as_ref().map_or(&r.id, |p| &p.execution);
        out!("  resume it with `runtime resume {resumer}`");
    }
    let histories = view.histories();
    let width = r.tasks.iter().map(String::len).max().unwrap_or(0);
    out!(
        "  tasks ({} of {} finished):",
        view.tasks
            .iter()
            .filter(|t| !TaskRef::is_item(&t.id))
            .count(),
        r.tasks.len()
    );
    // `for_each` items are summed up per task, not listed one by one.
    let mut items: BTreeMap<&str, (usize, usize, u32)> = BTreeMap::new();
    for task in &view.tasks {
        if let TaskRef::Item { task: parent, .. } = TaskRef::parse(&task.id) {
            let entry = items.entry(parent).or_default();
            match task.status {
                TaskStatus::Succeeded => entry.0 += 1,
                _ => entry.1 += 1,
            }
            entry.2 += task.attempts;
            continue;
        }
        let history = histories.get(task.id.as_str());
        match history.filter(|h| h.attempts > 0) {
            Some(h) => out!("  {}  attempts {}", finished_line(task, width), h.attempts),
            // A `for_each` task's attempts are its items'.
            None => out!("  {}", finished_line(task, width)),
        }
        for note in history.iter().flat_map(|h| &h.notes) {
            out!("           {}", note_text(note));
        }
        if history.and_then(|h| h.letter) == Some(LetterState::Open)
            && task.status == TaskStatus::Failed
        {
            out!(
                "           in the dead-letter queue: `runtime dlq show {}/{}`, `runtime dlq replay {}/{}`",
                r.id,
                task.id,
                r.id,
                task.id
            );
        }
    }
    for (task, (ok, failed, attempts)) in &items {
        out!(
            "  {:>9}  {task:width$}  items finished: {ok} succeeded, {failed} failed ({attempts} attempts)",
            "for_each"
        );
    }
    for id in &r.tasks {
        if !view.tasks.iter().any(|t| &t.id == id) && !items.contains_key(id.as_str()) {
            out!("  {:>9}  {id:width$}", "pending");
        }
    }
    if let Some(usage) = run_usage(&view.tasks) {
        out!("  usage      {usage}");
    }
    for line in verdicts(&view.tasks) {
        out!("  {line}");
    }
    if !r.outputs.is_empty() {
        out!("  outputs    {}", Value::Object(r.outputs.clone()));
    }
    if events {
        out!("  events:");
        for (seq, event) in view.events.iter().enumerate() {
            out!("  {}", event_line(seq as u64, event));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One event as `status --events` and `--follow` print it.
fn event_line(seq: u64, event: &LogEvent) -> String {
    let mut fields = serde_json::to_value(&event.kind).expect("JSON");
    let kind = fields["event"].as_str().unwrap_or("?").to_owned();
    if let Some(map) = fields.as_object_mut() {
        map.remove("event");
    }
    format!("{seq:>6}  {}  {kind:<18}  {fields}", timestamp(event.at))
}

/// Follows execution `id` from event `from` until it ends: as `run`
/// shows a run (tasks started and finished, streamed text, how far each
/// `for_each` has got), or its raw events with `events`, or one JSON
/// event per line with `json`.
pub(super) fn follow(
    ctx: &Context,
    id: &str,
    from: u64,
    events: bool,
    json: bool,
) -> Result<ExitCode, ServiceError> {
    let tasks = if events || json {
        None
    } else {
        let view = match &ctx.server {
            Some(_) => super::remote::view(ctx, id, false)?,
            None => ops::view(&executions(ctx), id)?,
        };
        let record = &view.record;
        Some(TaskNames::of_text(
            &record.source,
            &record.file,
            &ctx.expressions,
        ))
    };
    let print = |seq: u64, event: &LogEvent| {
        if let Some(tasks) = &tasks {
            ctx.progress.event(event, tasks);
        } else if json {
            let mut line = serde_json::to_value(event).expect("JSON");
            if let Some(map) = line.as_object_mut() {
                map.insert("seq".into(), seq.into());
            }
            out!("{line}");
        } else {
            out!("{}", event_line(seq, event));
        }
    };
    let state = match &ctx.server {
        Some(_) => super::remote::follow(ctx, id, from, print)?,
        None => ops::follow(&executions(ctx), id, from, &|| true, |seq, event| {
            print(seq, event);
            true
        })?,
    };
    if !json {
        match state {
            State::Interrupted => {
                note!("execution {id} is interrupted: no process runs it (`runtime resume {id}`)");
            }
            state => note!("execution {id} {}", state.as_str()),
        }
    }
    Ok(match state {
        State::Finished(ExecutionStatus::Failed | ExecutionStatus::Cancelled) => {
            ExitCode::from(EXIT_RUN_FAILED)
        }
        _ => ExitCode::SUCCESS,
    })
}

fn note_text(note: &HistoryNote) -> String {
    match note {
        HistoryNote::AttemptFailed {
            attempt,
            kind,
            error,
            retry_after,
        } => {
            let then = retry_after.map_or_else(String::new, |wait| {
                format!("; retried after {}", humantime::format_duration(wait))
            });
            format!("attempt {attempt} failed: {}: {error}{then}", kind.as_str())
        }
        HistoryNote::Replayed => {
            "replayed from the dead-letter queue (`runtime dlq replay`)".to_owned()
        }
    }
}

fn timestamp(ms: u64) -> String {
    let time = std::time::UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_millis(time).to_string()
}

pub(super) fn cancel(ctx: &Context, id: &str) -> Result<ExitCode, ServiceError> {
    match &ctx.server {
        Some(_) => super::remote::cancel(ctx, id)?,
        None => drop(ops::cancel(&executions(ctx), id)?),
    }
    out!("cancelled execution {id}");
    Ok(ExitCode::SUCCESS)
}

pub(super) fn signal(
    ctx: &Context,
    id: &str,
    name: &str,
    payload: Option<&str>,
) -> Result<ExitCode, ServiceError> {
    let payload: Value = match payload {
        Some(text) => serde_json::from_str(text)
            .map_err(|e| ServiceError::Inputs(format!("--payload is not JSON: {e}")))?,
        None => Value::Null,
    };
    let delivery = match &ctx.server {
        Some(_) => {
            super::remote::signal(ctx, id, name, &payload)?;
            Delivery::Live
        }
        None => ops::signal(&executions(ctx), id, name, &payload, None)?,
    };
    match delivery {
        Delivery::Recorded => out!(
            "recorded signal `{name}` for execution {id}; no process is running it: `runtime resume {id}` continues it"
        ),
        Delivery::Live => out!("delivered signal `{name}` to execution {id}"),
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn gc(ctx: &Context, older_than: Duration) -> Result<ExitCode, ServiceError> {
    let removed = ops::gc(&executions(ctx), older_than)?;
    out!("removed {removed} finished executions");
    Ok(ExitCode::SUCCESS)
}

pub(super) fn resume(
    ctx: &Context,
    id: Option<&str>,
    all: bool,
    concurrency: Option<usize>,
) -> Result<ExitCode, ServiceError> {
    let executions = executions(ctx);
    let ids: Vec<String> = match (id, all) {
        (Some(id), false) => vec![id.to_owned()],
        (None, true) if ctx.server.is_some() => super::remote::interrupted(ctx)?,
        (None, true) => ops::interrupted(&executions),
        _ => {
            note!("error: give an execution id or --all");
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    };
    if ids.is_empty() {
        out!("no interrupted executions");
    }
    let mut code = ExitCode::SUCCESS;
    for id in ids {
        if ctx.server.is_some() {
            if concurrency.is_some() {
                return Err(ServiceError::Inputs(
                    "--concurrency is for a run on this host; a server runs with its own settings"
                        .into(),
                ));
            }
            let report = super::remote::resume(ctx, &id)?;
            print_summary(&report);
            if report.status != RunStatus::Succeeded {
                code = ExitCode::from(EXIT_RUN_FAILED);
            }
            continue;
        }
        let (runner, execution, workflow, executor) = {
            let store = ctx.open_store()?;
            let runner = ctx.runner(&store)?;
            service::refuse_parked(&executions, &id)?;
            let (execution, workflow) =
                service::reopen_execution(&executions, &id, &ctx.expressions, &store)?;
            let executor = runner.prepare(&workflow, &store)?;
            (runner, execution, workflow, executor)
        };
        note!(
            "execution {id}: resuming, {} of {} tasks already finished",
            execution.done.len(),
            workflow.plan.tasks.len()
        );
        let report = drive(ctx, &runner, &workflow, executor, execution, concurrency)?;
        print_summary(&report);
        if report.status != RunStatus::Succeeded {
            code = ExitCode::from(EXIT_RUN_FAILED);
        }
    }
    Ok(code)
}

/// Runs a recorded execution in this process, answering `status` and
/// `cancel` from others while it runs.
pub(super) fn drive(
    ctx: &Context,
    runner: &Runner,
    workflow: &service::LoadedWorkflow,
    executor: orchestrator_engine::service::subworkflow::TaskExecutor,
    execution: service::Execution,
    concurrency: Option<usize>,
) -> Result<orchestrator_engine::scheduler::RunReport, ServiceError> {
    let _entered = ctx.tokio.enter();
    let _control = ControlServer::serve(&executions(ctx), &execution)?;
    // Progress comes from the execution's events, from where they stand
    // now (a resumed run does not print its past again).
    let log = Arc::clone(&execution.log);
    let from = log.events()?.len() as u64;
    let mut printer = {
        let mut events = ops::follow_log(&log, from);
        let (progress, tasks) = (Arc::clone(&ctx.progress), TaskNames::of(&workflow.plan));
        ctx.tokio.spawn(async move {
            while let Some(Ok((_, event))) = events.recv().await {
                progress.event(&event, &tasks);
            }
        })
    };
    let span = service::execution_span(&execution, &workflow.plan.name);
    let driving = runner.drive(workflow, executor, execution, concurrency, &|_| {});
    let report = ctx.tokio.block_on(driving.instrument(span));
    ctx.tokio.block_on(async {
        // A run that finished has its last event committed: the printer
        // ends once it has printed it. One that never started has none.
        if report.is_ok() {
            let _ = tokio::time::timeout(PRINTER_PATIENCE, &mut printer).await;
        }
        printer.abort();
    });
    drop(log);
    report
}

/// How long the progress printer may take to print a finished run's last
/// events.
const PRINTER_PATIENCE: Duration = Duration::from_secs(5);
