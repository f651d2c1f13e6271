//! The verbs that ask a server (`--server URL --api-key KEY`) instead of the
//! store here: the same data the local verbs read, from the control API
//! (`Execution.detail_json`, the event stream), handed to the same
//! printers. `run` (progress and streamed text from the event stream),
//! `resume`, `list`, `status` (`--events`, `--follow`), `cancel`, `signal`,
//! `dlq list | show | replay | purge` and `audit` work so, and `install`,
//! `plugins ...` and `workflows ...` through [`registry`]; any other verb
//! with `--server` is refused, not run here by mistake.

pub(super) mod registry;

use serde_json::Value;
use tonic::{Code, Status};

use indexmap::IndexMap;

use super::run::TaskNames;
use super::{Command, Context};
use orchestrator_engine::executions::{ExecutionView, ListFilter, Listing, State};
use orchestrator_engine::scheduler::{RunReport, RunStatus, TaskRef};
use orchestrator_engine::service::ServiceError;
use orchestrator_engine::store::executions::{DeadLetter, DeadLetterState, LogEvent};
use orchestrator_engine::store::executions::{ExecutionStatus, now_ms};
use orchestrator_host_api::client::Client;
use orchestrator_host_api::pb;

/// Refuses `command` with `--server` when it cannot ask a server.
pub(super) fn supported(ctx: &Context, command: &Command) -> Result<(), ServiceError> {
    if ctx.server.is_none() {
        return Ok(());
    }
    match command {
        Command::Run { .. }
        | Command::Resume { .. }
        | Command::List { .. }
        | Command::Status { .. }
        | Command::Cancel { .. }
        | Command::Signal { .. }
        | Command::Dlq { .. }
        | Command::Audit(_)
        | Command::Install(_)
        | Command::Plugins { .. }
        | Command::Workflows { .. } => Ok(()),
        other => {
            let debug = format!("{other:?}");
            let name: String = debug
                .chars()
                .take_while(char::is_ascii_alphabetic)
                .collect();
            Err(ServiceError::Inputs(format!(
                "`runtime {}` works on this host's store only; leave out --server and ORCHESTRATOR_SERVER to run it on this host",
                name.to_lowercase()
            )))
        }
    }
}

/// A client of the server `--server` names, with `--api-key`.
pub(super) fn client(ctx: &Context) -> Result<Client, ServiceError> {
    let Some((url, key)) = &ctx.server else {
        return Err(ServiceError::Inputs("no --server given".into()));
    };
    let key = key.as_deref().ok_or_else(|| {
        ServiceError::Inputs(format!(
            "--server {url} needs an API key: --api-key or ORCHESTRATOR_API_KEY"
        ))
    })?;
    ctx.tokio
        .block_on(Client::connect(url, key))
        .map_err(ServiceError::Plugin)
}

/// A server's refusal as the error the same local verb would give.
pub(super) fn refused(status: &Status) -> ServiceError {
    let message = status.message().to_owned();
    match status.code() {
        Code::NotFound => ServiceError::NotFound(message),
        Code::InvalidArgument => ServiceError::Inputs(message),
        Code::AlreadyExists => ServiceError::Conflict(message),
        code => ServiceError::Plugin(format!("the server answered {code:?}: {message}")),
    }
}

/// An execution as the server sent it, as the local verbs see one.
fn view_of(execution: pb::Execution) -> Result<ExecutionView, ServiceError> {
    let bad = |e: serde_json::Error| {
        ServiceError::Plugin(format!(
            "execution `{}`: the server's detail does not read: {e}",
            execution.id
        ))
    };
    let detail: Value = serde_json::from_str(&execution.detail_json).map_err(bad)?;
    Ok(ExecutionView {
        record: serde_json::from_value(detail["record"].clone()).map_err(bad)?,
        tasks: serde_json::from_value(detail["tasks"].clone()).map_err(bad)?,
        events: serde_json::from_value(detail["events"].clone()).map_err(bad)?,
        live: execution.live,
    })
}

/// An event as the server sent it, as the local verbs see one.
fn event_of(event: &pb::Event) -> Result<LogEvent, ServiceError> {
    let bad = |e: String| ServiceError::Plugin(format!("event {}: {e}", event.number));
    let mut fields: Value =
        serde_json::from_str(&event.fields_json).map_err(|e| bad(e.to_string()))?;
    let map = fields
        .as_object_mut()
        .ok_or_else(|| bad("its fields are not an object".into()))?;
    map.insert("event".into(), event.kind.clone().into());
    map.insert("at".into(), event.at_ms.into());
    serde_json::from_value(fields).map_err(|e| bad(e.to_string()))
}

/// Execution `id`, with its events when `events`.
pub(super) fn view(ctx: &Context, id: &str, events: bool) -> Result<ExecutionView, ServiceError> {
    let client = client(ctx)?;
    let request = pb::GetRequest {
        execution_id: id.to_owned(),
        events,
    };
    let execution = ctx
        .tokio
        .block_on(client.executions().get(request))
        .map_err(|s| refused(&s))?
        .into_inner();
    view_of(execution)
}

/// A page of the caller's executions.
pub(super) fn list(ctx: &Context, filter: &ListFilter) -> Result<Listing, ServiceError> {
    let client = client(ctx)?;
    let request = pb::ListRequest {
        page_size: u32::try_from(filter.limit).unwrap_or(u32::MAX),
        page_token: filter.after.clone().unwrap_or_default(),
        status: filter.state.clone().unwrap_or_default(),
        workflow: filter.workflow.clone().unwrap_or_default(),
    };
    let page = ctx
        .tokio
        .block_on(client.executions().list(request))
        .map_err(|s| refused(&s))?
        .into_inner();
    Ok(Listing {
        views: page
            .executions
            .into_iter()
            .map(view_of)
            .collect::<Result<_, _>>()?,
        next: (!page.next_page_token.is_empty()).then_some(page.next_page_token),
    })
}

/// Hands execution `id`'s events from `from` to `each` as the server
/// commits them, until it finished; how it stands then.
pub(super) fn follow(
    ctx: &Context,
    id: &str,
    from: u64,
    mut each: impl FnMut(u64, &LogEvent),
) -> Result<State, ServiceError> {
    let client = client(ctx)?;
    let execution = client.execution(id);
    ctx.tokio.block_on(async {
        let mut events = execution.events(from);
        while let Some(event) = events.next().await {
            let event = event.map_err(|s| refused(&s))?;
            each(event.number, &event_of(&event)?);
        }
        let now = execution.status().await.map_err(|s| refused(&s))?;
        Ok(view_of(now)?.state())
    })
}

/// Cancels execution `id`.
pub(super) fn cancel(ctx: &Context, id: &str) -> Result<(), ServiceError> {
    let client = client(ctx)?;
    ctx.tokio
        .block_on(client.execution(id).cancel())
        .map_err(|s| refused(&s))
}

/// Sends signal `name` with `payload` to execution `id`.
pub(super) fn signal(
    ctx: &Context,
    id: &str,
    name: &str,
    payload: &Value,
) -> Result<(), ServiceError> {
    let client = client(ctx)?;
    ctx.tokio
        .block_on(client.execution(id).signal(name, payload))
        .map_err(|s| refused(&s))
}

/// The caller's open dead letters, with their executions' ids.
pub(super) fn dead_letters(ctx: &Context) -> Result<Vec<(String, DeadLetter)>, ServiceError> {
    let client = client(ctx)?;
    let letters = ctx
        .tokio
        .block_on(
            client
                .executions()
                .list_dead_letters(pb::ListDeadLettersRequest {}),
        )
        .map_err(|s| refused(&s))?
        .into_inner()
        .dead_letters;
    letters
        .into_iter()
        .map(|l| {
            let bad = |e: serde_json::Error| {
                ServiceError::Plugin(format!(
                    "dead letter {}: the server's answer does not read: {e}",
                    l.id
                ))
            };
            let kind = match l.kind.as_str() {
                "" => None,
                kind => Some(serde_json::from_value(Value::String(kind.to_owned())).map_err(bad)?),
            };
            let input = match l.input_json.as_str() {
                "" => None,
                text => Some(serde_json::from_str(text).map_err(bad)?),
            };
            let letter = DeadLetter {
                task: l.task,
                uses: l.uses,
                input,
                kind,
                error: l.error,
                attempts: l.attempts,
                at: l.failed_at_ms,
                state: DeadLetterState::Open,
            };
            Ok((l.execution_id, letter))
        })
        .collect()
}

/// Removes dead letters `ids`, or every open one with `all`; how many.
pub(super) fn purge(ctx: &Context, ids: &[String], all: bool) -> Result<usize, ServiceError> {
    let client = client(ctx)?;
    let request = pb::PurgeRequest {
        ids: ids.to_vec(),
        all,
    };
    let purged = ctx
        .tokio
        .block_on(client.executions().purge(request))
        .map_err(|s| refused(&s))?
        .into_inner()
        .purged;
    Ok(purged as usize)
}

/// Starts workflow `text` (read from `file`) with `inputs` on the server
/// and follows it to its end, printing what a run here prints while it
/// goes on: its report.
pub(super) fn run(
    ctx: &Context,
    file: &str,
    text: String,
    inputs: &IndexMap<String, Value>,
) -> Result<RunReport, ServiceError> {
    let client = client(ctx)?;
    let tasks = TaskNames::of_text(&text, file, &ctx.expressions);
    let request = pb::StartRequest {
        workflow_text: text,
        inputs_json: serde_json::to_string(inputs).expect("JSON"),
        ..pb::StartRequest::default()
    };
    let started = ctx
        .tokio
        .block_on(client.executions().start(request))
        .map_err(|s| refused(&s))?
        .into_inner();
    note!("execution {}", started.execution_id);
    drive(ctx, &client, &started.execution_id, 0, &tasks)
}

/// Prints the progress of execution `id` from event `from` until it ends:
/// its report.
fn drive(
    ctx: &Context,
    client: &Client,
    id: &str,
    from: u64,
    tasks: &TaskNames,
) -> Result<RunReport, ServiceError> {
    let execution = client.execution(id);
    let view = ctx.tokio.block_on(async {
        let mut events = execution.events(from);
        while let Some(event) = events.next().await {
            let event = event.map_err(|s| refused(&s))?;
            ctx.progress.event(&event_of(&event)?, tasks);
        }
        view_of(execution.status().await.map_err(|s| refused(&s))?)
    })?;
    Ok(report_of(view))
}

/// How an execution the server ran ended, as a run here reports it.
fn report_of(view: ExecutionView) -> RunReport {
    let record = view.record;
    let (status, error) = match record.status {
        ExecutionStatus::Succeeded => (RunStatus::Succeeded, record.error),
        ExecutionStatus::Cancelled => (RunStatus::Cancelled, record.error),
        ExecutionStatus::Failed => (RunStatus::Failed, record.error),
        // The server stopped before it ended: it goes on when the server
        // starts again.
        _ => (
            RunStatus::Failed,
            Some(format!(
                "the server stopped running execution {}; it resumes when the server starts again (`runtime status {} --follow`)",
                record.id, record.id
            )),
        ),
    };
    let ended = record.finished_at.unwrap_or_else(now_ms);
    RunReport {
        workflow: record.workflow,
        execution_id: record.id,
        status,
        error,
        outputs: record.outputs,
        tasks: view.tasks,
        duration_us: ended.saturating_sub(record.created_at) * 1000,
    }
}

/// The events an execution has so far, and how many of its tasks ended.
fn progress_of(ctx: &Context, id: &str) -> Result<(u64, usize, usize, TaskNames), ServiceError> {
    let view = view(ctx, id, true)?;
    let done = view
        .tasks
        .iter()
        .filter(|t| !TaskRef::is_item(&t.id))
        .count();
    let record = &view.record;
    let tasks = TaskNames::of_text(&record.source, &record.file, &ctx.expressions);
    Ok((view.events.len() as u64, done, record.tasks.len(), tasks))
}

/// Resumes execution `id` on the server and follows it to its end.
pub(super) fn resume(ctx: &Context, id: &str) -> Result<RunReport, ServiceError> {
    let client = client(ctx)?;
    let (from, done, total, tasks) = progress_of(ctx, id)?;
    let request = pb::ResumeRequest {
        execution_id: id.to_owned(),
    };
    ctx.tokio
        .block_on(client.executions().resume(request))
        .map_err(|s| refused(&s))?;
    note!("execution {id}: resuming, {done} of {total} tasks already finished");
    drive(ctx, &client, id, from, &tasks)
}

/// The caller's interrupted executions.
pub(super) fn interrupted(ctx: &Context) -> Result<Vec<String>, ServiceError> {
    let mut filter = ListFilter {
        state: Some(State::Interrupted.as_str().to_owned()),
        workflow: None,
        limit: 1000,
        after: None,
    };
    let mut ids = Vec::new();
    loop {
        let page = list(ctx, &filter)?;
        ids.extend(page.views.into_iter().map(|v| v.record.id));
        match page.next {
            Some(next) => filter.after = Some(next),
            None => return Ok(ids),
        }
    }
}

/// Dead letter `id` (`<execution>/<task>`), open, replayed or purged, and
/// its task's failed attempts.
pub(super) fn dead_letter(
    ctx: &Context,
    id: &str,
) -> Result<(DeadLetter, Vec<LogEvent>), ServiceError> {
    let client = client(ctx)?;
    let request = pb::GetDeadLetterRequest { id: id.to_owned() };
    let found = ctx
        .tokio
        .block_on(client.executions().get_dead_letter(request))
        .map_err(|s| refused(&s))?
        .into_inner();
    let bad = |e: serde_json::Error| {
        ServiceError::Plugin(format!(
            "dead letter {id}: the server's answer does not read: {e}"
        ))
    };
    let letter = serde_json::from_str(&found.letter_json).map_err(bad)?;
    let attempts = serde_json::from_str(&found.attempts_json).map_err(bad)?;
    Ok((letter, attempts))
}

/// Replays dead letter `id` on the server (with `input`, when given) and
/// follows its execution to its end.
pub(super) fn replay(
    ctx: &Context,
    id: &str,
    input: Option<&Value>,
) -> Result<RunReport, ServiceError> {
    let client = client(ctx)?;
    let execution = id.split_once('/').map_or(id, |(e, _)| e);
    let (from, _, total, tasks) = progress_of(ctx, execution)?;
    let request = pb::ReplayDeadLetterRequest {
        id: id.to_owned(),
        input_json: input.map(Value::to_string).unwrap_or_default(),
    };
    let replay = ctx
        .tokio
        .block_on(client.executions().replay_dead_letter(request))
        .map_err(|s| refused(&s))?
        .into_inner();
    super::dlq::replaying(id, &replay.task, input.is_some(), replay.cleared.len());
    let done = total.saturating_sub(replay.cleared.len() + 1);
    note!("execution {execution}: resuming, {done} of {total} tasks already finished");
    drive(ctx, &client, execution, from, &tasks)
}
