//! `runtime dlq list | show | replay | purge`: tasks that failed for good,
//! across all recorded executions. A dead letter's id is
//! `<execution id>/<task id>`.

use std::process::ExitCode;

use clap::Subcommand;
use serde_json::{Value, json};

use super::Context;
use super::executions::{executions, resume};
use orchestrator_engine::dead_letters;
use orchestrator_engine::scheduler::RunStatus;
use orchestrator_engine::service::ServiceError;
use orchestrator_engine::store::executions::EventKind;

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

fn list(ctx: &Context, json: bool) -> Result<ExitCode, ServiceError> {
    let letters = match &ctx.server {
        Some(_) => super::remote::dead_letters(ctx)?,
        None => dead_letters::open_letters(&executions(ctx)),
    };
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

fn show(ctx: &Context, id: &str, json: bool) -> Result<ExitCode, ServiceError> {
    let (letter, attempts) = match &ctx.server {
        Some(_) => super::remote::dead_letter(ctx, id)?,
        None => dead_letters::find(&executions(ctx), id)?,
    };
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
    let input: Option<Value> = input
        .map(|text| {
            serde_json::from_str(text)
                .map_err(|e| ServiceError::Inputs(format!("--input is not JSON: {e}")))
        })
        .transpose()?;
    if ctx.server.is_some() {
        let report = super::remote::replay(ctx, id, input.as_ref())?;
        super::run::print_summary(&report);
        return Ok(if report.status == RunStatus::Succeeded {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(super::EXIT_RUN_FAILED)
        });
    }
    let replay = {
        let store = ctx.open_store()?;
        dead_letters::prepare_replay(
            &executions(ctx),
            &store,
            &ctx.expressions,
            id,
            input.as_ref(),
        )?
    };
    replaying(id, &replay.task, input.is_some(), replay.cleared.len());
    resume(ctx, Some(&replay.execution), false, None)
}

/// Says that dead letter `id` replays `task` (with a given input or not),
/// then the `cleared` tasks its failure kept from running.
pub(super) fn replaying(id: &str, task: &str, given_input: bool, cleared: usize) {
    let with = if given_input {
        " with the given input"
    } else {
        ""
    };
    note!("dead letter {id}: replaying `{task}`{with}, then {cleared} tasks that did not run");
}

fn purge(ctx: &Context, ids: &[String], all: bool) -> Result<ExitCode, ServiceError> {
    let purged = match &ctx.server {
        Some(_) => super::remote::purge(ctx, ids, all)?,
        None => dead_letters::purge(&executions(ctx), ids, all)?,
    };
    out!("purged {purged} dead letters");
    Ok(ExitCode::SUCCESS)
}
