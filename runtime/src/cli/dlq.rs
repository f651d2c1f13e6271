//! `runtime dlq list | show | replay | purge`: tasks that failed for good,
//! across all recorded executions. A dead letter's id is
//! `<execution id>/<task id>`.

use std::process::ExitCode;

use clap::Subcommand;
use serde_json::{Value, json};

use super::Context;
use super::executions::{executions, resume};
use crate::scheduler::TaskStatus;
use crate::service::{self, ServiceError};
use crate::store::executions::{
    DeadLetter, DeadLetterState, EventKind, ExecutionError, Executions, LogEvent,
};

/// What to do with the dead-letter queue.
#[derive(Debug, Subcommand)]
pub enum DlqCommand {
    /// Lists the open dead letters of every execution.
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Shows one dead letter: its input, every failed attempt, its error.
    Show {
        /// `<execution id>/<task id>`, as `runtime dlq list` prints it.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Runs the task again (with its recorded input, or `--input`) and lets
    /// the rest of its execution continue.
    Replay {
        /// `<execution id>/<task id>`.
        id: String,
        /// The task's input instead of its resolved `with:`, JSON.
        #[arg(long)]
        input: Option<String>,
    },
    /// Removes dead letters from the queue (their executions keep the record).
    Purge {
        /// `<execution id>/<task id>`; repeat for more.
        ids: Vec<String>,
        /// Every open dead letter.
        #[arg(long)]
        all: bool,
    },
}

pub(super) fn dlq(ctx: &Context, command: DlqCommand) -> Result<ExitCode, ServiceError> {
    match command {
        DlqCommand::List { json } => list(ctx, json),
        DlqCommand::Show { id, json } => show(ctx, &id, json),
        DlqCommand::Replay { id, input } => replay(ctx, &id, input.as_deref()),
        DlqCommand::Purge { ids, all } => purge(ctx, &ids, all),
    }
}

/// Splits `<execution>/<task>`.
fn split(id: &str) -> Result<(&str, &str), ServiceError> {
    id.split_once('/').ok_or_else(|| {
        ServiceError::Inputs(format!(
            "`{id}` is not a dead-letter id; they look like `<execution id>/<task id>` (`runtime dlq list`)"
        ))
    })
}

/// Open dead letters of every execution that can be read now.
fn open_letters(executions: &Executions) -> Vec<(String, DeadLetter)> {
    let mut out = Vec::new();
    for id in executions.ids() {
        // A sub-workflow run's failure is its parent task's: the parent's
        // letter is the one to replay.
        let letters = match executions.read(&id).and_then(|log| {
            let child = log.record()?.parent.is_some();
            if child {
                Ok(Vec::new())
            } else {
                log.dead_letters()
            }
        }) {
            Ok(letters) => letters,
            Err(ExecutionError::Busy(_)) => continue,
            Err(e) => {
                tracing::warn!("skipping execution {id}: {e}");
                continue;
            }
        };
        out.extend(
            letters
                .into_iter()
                .filter(|l| l.state == DeadLetterState::Open)
                .map(|l| (id.clone(), l)),
        );
    }
    out
}

fn list(ctx: &Context, json: bool) -> Result<ExitCode, ServiceError> {
    let letters = open_letters(&executions(ctx));
    if json {
        let list: Vec<Value> = letters
            .iter()
            .map(|(execution, l)| json!({ "id": format!("{execution}/{}", l.task), "letter": l }))
            .collect();
        out!("{}", serde_json::to_string_pretty(&list).expect("JSON"));
        return Ok(ExitCode::SUCCESS);
    }
    if letters.is_empty() {
        out!("no dead letters");
    }
    for (execution, l) in &letters {
        let kind = l.kind.map_or("", |k| k.as_str());
        out!(
            "{execution}/{}  {kind}  {} attempts  {}",
            l.task,
            l.attempts,
            l.error
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The dead letter `id` and the failed attempts its execution recorded.
fn find(ctx: &Context, id: &str) -> Result<(DeadLetter, Vec<LogEvent>), ServiceError> {
    let (execution, task) = split(id)?;
    let log = executions(ctx).read(execution)?;
    let letter = log
        .dead_letters()?
        .into_iter()
        .rfind(|l| l.task == task)
        .ok_or_else(|| {
            ServiceError::Inputs(format!(
                "execution `{execution}` has no dead letter for task `{task}`; `runtime dlq list` shows them"
            ))
        })?;
    let attempts = log
        .events()?
        .into_iter()
        .filter(|e| matches!(&e.kind, EventKind::AttemptFailed { task: t, .. } if t == task))
        .collect();
    Ok((letter, attempts))
}

fn show(ctx: &Context, id: &str, json: bool) -> Result<ExitCode, ServiceError> {
    let (letter, attempts) = find(ctx, id)?;
    if json {
        let value = json!({ "id": id, "letter": letter, "attempts": attempts });
        out!("{}", serde_json::to_string_pretty(&value).expect("JSON"));
        return Ok(ExitCode::SUCCESS);
    }
    let state = serde_json::to_value(letter.state).expect("JSON");
    out!("dead letter {id}  ({})", state.as_str().unwrap_or("?"));
    out!("  uses      {}", letter.uses);
    out!(
        "  error     {}: {}",
        letter.kind.map_or("", |k| k.as_str()),
        letter.error
    );
    out!("  attempts  {}", letter.attempts);
    match &letter.input {
        Some(input) => out!("  input     {input}"),
        None => out!("  input     (not resolved: the task failed before it ran)"),
    }
    for event in &attempts {
        if let EventKind::AttemptFailed {
            attempt,
            kind,
            error,
            ..
        } = &event.kind
        {
            out!("  attempt {attempt} failed: {}: {error}", kind.as_str());
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn replay(ctx: &Context, id: &str, input: Option<&str>) -> Result<ExitCode, ServiceError> {
    let (execution, task) = split(id)?;
    let input: Option<Value> = input
        .map(|text| {
            serde_json::from_str(text)
                .map_err(|e| ServiceError::Inputs(format!("--input is not JSON: {e}")))
        })
        .transpose()?;
    {
        let executions = executions(ctx);
        let log = executions.open(execution)?;
        let record = log.record()?;
        // The tasks the failure kept from running run again too.
        let store = ctx.open_store()?;
        let workflow = service::load_text(
            record.source.clone(),
            &record.file,
            &ctx.expressions,
            &store,
        )?;
        drop(store);
        let plan = &workflow.plan;
        let start = plan
            .tasks
            .iter()
            .position(|t| t.id == task)
            .ok_or_else(|| {
                ServiceError::Inputs(format!("execution `{execution}` has no task `{task}`"))
            })?;
        let states = log.tasks()?;
        let not_run = |i: usize| {
            states
                .iter()
                .any(|r| r.id == plan.tasks[i].id && r.status == TaskStatus::NotRun)
        };
        let mut cleared = Vec::new();
        let mut stack = vec![start];
        while let Some(i) = stack.pop() {
            for dependent in plan.dag.dependents(i) {
                if not_run(dependent) && !cleared.contains(&plan.tasks[dependent].id) {
                    cleared.push(plan.tasks[dependent].id.clone());
                    stack.push(dependent);
                }
            }
        }
        log.replay(task, &cleared, input.as_ref())?;
        note!(
            "dead letter {id}: replaying `{task}`{}, then {} tasks that did not run",
            if input.is_some() {
                " with the given input"
            } else {
                ""
            },
            cleared.len()
        );
    }
    resume(ctx, Some(execution), false, None)
}

fn purge(ctx: &Context, ids: &[String], all: bool) -> Result<ExitCode, ServiceError> {
    let executions = executions(ctx);
    let targets: Vec<String> = if all {
        open_letters(&executions)
            .into_iter()
            .map(|(execution, l)| format!("{execution}/{}", l.task))
            .collect()
    } else if ids.is_empty() {
        return Err(ServiceError::Inputs(
            "name dead letters to purge (`<execution id>/<task id>`), or give --all".into(),
        ));
    } else {
        ids.to_vec()
    };
    for id in &targets {
        let (execution, task) = split(id)?;
        executions.open(execution)?.purge_dead_letter(task)?;
    }
    out!("purged {} dead letters", targets.len());
    Ok(ExitCode::SUCCESS)
}
