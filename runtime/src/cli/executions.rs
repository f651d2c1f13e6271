//! `runtime list | status | cancel | resume | gc`: recorded executions.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::control::{self, ControlServer};
use super::run::{finished_line, print_event, print_summary};
use super::summary::{run_total, run_usage, usage_text, verdicts};
use super::{Context, EXIT_INVALID, EXIT_RUN_FAILED};
use crate::scheduler::{Event, RunStatus, TaskReport, TaskStatus, Usage, parse_item_id};
use crate::service::{self, Runner, ServiceError};
use crate::store::DEFAULT_TENANT;
use crate::store::executions::{
    EventKind, ExecutionError, ExecutionRecord, ExecutionStatus, Executions, LogEvent, now_ms,
};

pub(super) fn executions(ctx: &Context) -> Executions {
    Executions::beside(&ctx.store_path)
}

/// What is known of one execution, from its file or from its owner.
struct View {
    record: ExecutionRecord,
    tasks: Vec<TaskReport>,
    events: Vec<LogEvent>,
    /// A live process is running it.
    live: bool,
}

fn view(executions: &Executions, id: &str) -> Result<View, ServiceError> {
    let (snapshot, live) = match executions.read(id) {
        Ok(log) => (
            control::snapshot(&log).map_err(ServiceError::Plugin)?,
            false,
        ),
        Err(ExecutionError::Busy(_)) => (
            control::request(&executions.socket(id), "status")
                .map_err(|e| ServiceError::Plugin(format!("execution `{id}`: {e}")))?,
            true,
        ),
        Err(e) => return Err(e.into()),
    };
    let parse = |key: &str| -> Result<Value, ServiceError> { Ok(snapshot[key].clone()) };
    let bad = |e: serde_json::Error| ServiceError::Plugin(format!("execution `{id}`: {e}"));
    Ok(View {
        record: serde_json::from_value(parse("record")?).map_err(bad)?,
        tasks: serde_json::from_value(parse("tasks")?).map_err(bad)?,
        events: serde_json::from_value(parse("events")?).map_err(bad)?,
        live,
    })
}

/// `running`, `interrupted` (its process died) or the final status.
fn status_word(view: &View) -> &'static str {
    match (view.record.status, view.live) {
        (ExecutionStatus::Running, true) => "running",
        (ExecutionStatus::Running, false) => "interrupted",
        (status, _) => status.as_str(),
    }
}

pub(super) fn list(
    ctx: &Context,
    status: Option<&str>,
    json: bool,
) -> Result<ExitCode, ServiceError> {
    let executions = executions(ctx);
    let mut rows = Vec::new();
    for id in executions.ids() {
        match view(&executions, &id) {
            Ok(view) if status.is_none_or(|s| s == status_word(&view)) => rows.push(view),
            Ok(_) => {}
            Err(e) => tracing::warn!("skipping execution {id}: {e}"),
        }
    }
    if json {
        let list: Vec<Value> = rows
            .iter()
            .map(|v| {
                serde_json::json!({
                    "id": v.record.id,
                    "workflow": v.record.workflow,
                    "status": status_word(v),
                    "created_at": v.record.created_at,
                    "finished_at": v.record.finished_at,
                    "tasks_finished": v.tasks.len(),
                    "tasks": v.record.tasks.len(),
                    "usage": run_total(&v.tasks),
                })
            })
            .collect();
        out!("{}", serde_json::to_string_pretty(&list).expect("JSON"));
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        out!("no executions");
    }
    for v in &rows {
        let usage =
            run_total(&v.tasks).map_or_else(String::new, |u| format!("  {}", usage_text(&u)));
        out!(
            "{}  {:<11}  {:>5}/{:<5}  {}{usage}",
            v.record.id,
            status_word(v),
            v.tasks.len(),
            v.record.tasks.len(),
            v.record.workflow
        );
    }
    // What the tenant's listed executions used, all together.
    let totals: Vec<Usage> = rows.iter().filter_map(|v| run_total(&v.tasks)).collect();
    if let Some(total) = Usage::total(&totals) {
        out!(
            "tenant {DEFAULT_TENANT}: {} over {} executions",
            usage_text(&total),
            totals.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn status(
    ctx: &Context,
    id: &str,
    events: bool,
    json: bool,
) -> Result<ExitCode, ServiceError> {
    let view = view(&executions(ctx), id)?;
    if json {
        let value = serde_json::json!({
            "status": status_word(&view),
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
        status_word(&view)
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
    if status_word(&view) == "interrupted" {
        let resumer = r.parent.as_ref().map_or(&r.id, |p| &p.execution);
        out!("  resume it with `runtime resume {resumer}`");
    }
    let mut attempts: BTreeMap<&str, u32> = BTreeMap::new();
    let mut failures: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    // Where each task's dead letter stands, the last event winning.
    let mut letters: BTreeMap<&str, &str> = BTreeMap::new();
    for event in &view.events {
        match &event.kind {
            EventKind::DeadLettered { task } => {
                letters.insert(task.as_str(), "open");
            }
            EventKind::DeadLetterReplayed { task, .. } => {
                letters.insert(task.as_str(), "replayed");
                failures
                    .entry(task.as_str())
                    .or_default()
                    .push("replayed from the dead-letter queue (`runtime dlq replay`)".to_owned());
            }
            EventKind::DeadLetterPurged { task } => {
                letters.insert(task.as_str(), "purged");
            }
            EventKind::AttemptStarted { task, .. } => {
                *attempts.entry(task.as_str()).or_default() += 1;
            }
            EventKind::AttemptFailed {
                task,
                attempt,
                kind,
                error,
                retry_at,
            } => {
                let then = match retry_at {
                    Some(at) => format!(
                        "; retried after {}",
                        humantime::format_duration(Duration::from_millis(
                            at.saturating_sub(event.at)
                        ))
                    ),
                    None => String::new(),
                };
                failures.entry(task.as_str()).or_default().push(format!(
                    "attempt {attempt} failed: {}: {error}{then}",
                    kind.as_str()
                ));
            }
            _ => {}
        }
    }
    let width = r.tasks.iter().map(String::len).max().unwrap_or(0);
    out!(
        "  tasks ({} of {} finished):",
        view.tasks
            .iter()
            .filter(|t| parse_item_id(&t.id).is_none())
            .count(),
        r.tasks.len()
    );
    // `for_each` items are summed up per task, not listed one by one.
    let mut items: BTreeMap<&str, (usize, usize, u32)> = BTreeMap::new();
    for task in &view.tasks {
        if let Some((parent, _)) = parse_item_id(&task.id) {
            let entry = items.entry(parent).or_default();
            match task.status {
                TaskStatus::Succeeded => entry.0 += 1,
                _ => entry.1 += 1,
            }
            entry.2 += task.attempts;
            continue;
        }
        match attempts.get(task.id.as_str()) {
            Some(n) => out!("  {}  attempts {n}", finished_line(task, width)),
            // A `for_each` task's attempts are its items'.
            None => out!("  {}", finished_line(task, width)),
        }
        for failure in failures.get(task.id.as_str()).into_iter().flatten() {
            out!("           {failure}");
        }
        if letters.get(task.id.as_str()) == Some(&"open") && task.status == TaskStatus::Failed {
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
            let mut fields = serde_json::to_value(&event.kind).expect("JSON");
            let kind = fields["event"].as_str().unwrap_or("?").to_owned();
            if let Some(map) = fields.as_object_mut() {
                map.remove("event");
            }
            out!("  {seq:>6}  {}  {kind:<18}  {fields}", timestamp(event.at));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn timestamp(ms: u64) -> String {
    let time = std::time::UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_millis(time).to_string()
}

/// An execution that has not finished.
enum Unfinished {
    /// No process runs it; this one has it open.
    Here(crate::store::executions::ExecutionLog),
    /// Another process runs it.
    Live,
}

fn unfinished(
    executions: &Executions,
    id: &str,
    refusal: &str,
) -> Result<Unfinished, ServiceError> {
    match executions.open(id) {
        Ok(log) => {
            let record = log.record()?;
            if record.status != ExecutionStatus::Running {
                return Err(ServiceError::Plugin(format!(
                    "execution `{id}` already finished ({}); {refusal}",
                    record.status.as_str()
                )));
            }
            Ok(Unfinished::Here(log))
        }
        Err(ExecutionError::Busy(_)) => Ok(Unfinished::Live),
        Err(e) => Err(e.into()),
    }
}

pub(super) fn cancel(ctx: &Context, id: &str) -> Result<ExitCode, ServiceError> {
    let executions = executions(ctx);
    match unfinished(&executions, id, "nothing to cancel")? {
        Unfinished::Here(log) => {
            log.finish(
                ExecutionStatus::Cancelled,
                Some("cancelled while no process was running it".into()),
                serde_json::Map::new(),
            )?;
        }
        Unfinished::Live => {
            control::request(&executions.socket(id), "cancel")
                .map_err(|e| ServiceError::Plugin(format!("execution `{id}`: {e}")))?;
            // The owner records the cancel when its run stops; wait for it.
            for _ in 0..100 {
                if executions.read(id).is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
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
    let executions = executions(ctx);
    match unfinished(&executions, id, "the signal was not recorded")? {
        Unfinished::Here(log) => {
            log.signal(name, &payload)?;
            out!(
                "recorded signal `{name}` for execution {id}; no process is running it: `runtime resume {id}` continues it"
            );
        }
        Unfinished::Live => {
            let request = serde_json::json!({ "op": "signal", "name": name, "payload": payload });
            control::request_with(&executions.socket(id), request)
                .map_err(|e| ServiceError::Plugin(format!("execution `{id}`: {e}")))?;
            out!("delivered signal `{name}` to execution {id}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn gc(ctx: &Context, older_than: Duration) -> Result<ExitCode, ServiceError> {
    let executions = executions(ctx);
    let cutoff = now_ms().saturating_sub(u64::try_from(older_than.as_millis()).unwrap_or(u64::MAX));
    let mut removed = 0;
    for id in executions.ids() {
        let Ok(log) = executions.read(&id) else {
            continue;
        };
        let record = log.record()?;
        drop(log);
        if record.status != ExecutionStatus::Running
            && record.finished_at.is_some_and(|t| t < cutoff)
        {
            let path = executions.path(&id);
            std::fs::remove_file(&path).map_err(|source| ServiceError::Read {
                file: path.display().to_string(),
                source,
            })?;
            removed += 1;
        }
    }
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
        (None, true) => executions
            .ids()
            .into_iter()
            .filter(|id| {
                // Sub-workflow runs are resumed by their parents.
                executions
                    .read(id)
                    .and_then(|log| log.record())
                    .is_ok_and(|r| r.status == ExecutionStatus::Running && r.parent.is_none())
            })
            .collect(),
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
        let (runner, execution, workflow, executor) = {
            let store = ctx.open_store()?;
            let runner = ctx.runner(&store)?;
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
    executor: crate::subworkflow::TaskExecutor,
    execution: service::Execution,
    concurrency: Option<usize>,
) -> Result<crate::scheduler::RunReport, ServiceError> {
    let socket = Executions::beside(&ctx.store_path).socket(&execution.id);
    let _entered = ctx.tokio.enter();
    let _control = ControlServer::start(
        &socket,
        Arc::clone(&execution.log),
        Arc::clone(&execution.cancel),
    )
    .map_err(|e| ServiceError::Plugin(format!("cannot listen on {}: {e}", socket.display())))?;
    let width = workflow
        .plan
        .tasks
        .iter()
        .map(|t| t.id.len())
        .max()
        .unwrap_or(0);
    let observe = move |event: Event<'_>| print_event(event, width);
    ctx.tokio
        .block_on(runner.drive(workflow, executor, execution, concurrency, &observe))
}
