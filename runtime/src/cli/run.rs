//! `runtime run | validate | graph`: workflows, progress lines and summaries.
//! `run` records the execution (see `executions.rs` for the other verbs on it).

use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;
use serde_json::Value;

use super::summary::{run_usage, usage_text, verdicts};
use super::{Context, EXIT_RUN_FAILED, GraphFormat, OutputFormat};
use orchestrator_engine::expr::Expressions;
use orchestrator_engine::graph::Format;
use orchestrator_engine::sandbox::cassette::Cassette;
use orchestrator_engine::scheduler::{RunReport, RunStatus, TaskError, TaskReport, TaskStatus};
use orchestrator_engine::service::{self, ServiceError};
use orchestrator_engine::store::executions::TaskEnd;
use orchestrator_engine::workflow::{self, Plan, PluginCatalog};

pub(super) fn validate(ctx: &Context, file: &Path) -> Result<ExitCode, ServiceError> {
    let store = ctx.open_store()?;
    let workflow = service::load(file, &ctx.expressions, &store, &ctx.tenant)?;
    let plan = &workflow.plan;
    out!(
        "{}: workflow `{}` is valid ({} tasks, {} inputs, {} outputs)",
        file.display(),
        plan.name,
        plan.tasks.len(),
        plan.inputs.len(),
        plan.outputs.len()
    );
    Ok(ExitCode::SUCCESS)
}

pub(super) fn graph(
    ctx: &Context,
    file: &Path,
    format: GraphFormat,
) -> Result<ExitCode, ServiceError> {
    let store = ctx.open_store()?;
    let workflow = service::load(file, &ctx.expressions, &store, &ctx.tenant)?;
    let format = match format {
        GraphFormat::Dot => Format::Dot,
        GraphFormat::Mermaid => Format::Mermaid,
    };
    let drawing = workflow.plan.render(format);
    out!("{}", drawing.trim_end());
    Ok(ExitCode::SUCCESS)
}

/// `--record FILE` / `--replay FILE`: plugins' HTTP exchanges kept in, or
/// answered from, a cassette.
#[derive(Debug, clap::Args)]
pub struct CassetteArgs {
    /// Record every HTTP exchange of the run's plugins (model calls, ...)
    /// to this file.
    #[arg(long, value_name = "FILE", conflicts_with = "replay")]
    record: Option<std::path::PathBuf>,
    /// Answer the run's HTTP requests from this recorded file, with no
    /// network; a request it does not hold fails its task.
    #[arg(long, value_name = "FILE")]
    replay: Option<std::path::PathBuf>,
}

impl CassetteArgs {
    fn open(&self) -> Result<Option<Arc<Cassette>>, ServiceError> {
        Ok(match (&self.record, &self.replay) {
            (Some(path), _) => Some(Arc::new(Cassette::record(path))),
            (None, Some(path)) => Some(Arc::new(
                Cassette::replay(path).map_err(ServiceError::Inputs)?,
            )),
            (None, None) => None,
        })
    }
}

pub(super) fn run(
    ctx: &Context,
    file: &Path,
    input_args: &[String],
    inputs_file: Option<&Path>,
    output: OutputFormat,
    concurrency: Option<usize>,
    cassette: &CassetteArgs,
) -> Result<ExitCode, ServiceError> {
    if ctx.server.is_some() {
        if concurrency.is_some() || cassette.record.is_some() || cassette.replay.is_some() {
            return Err(ServiceError::Inputs(
                "--concurrency, --record and --replay are for a run on this host; a server runs with its own settings (leave out --server to use them)".into(),
            ));
        }
        let text = std::fs::read_to_string(file).map_err(|source| ServiceError::Read {
            file: file.display().to_string(),
            source,
        })?;
        let inputs = collect_inputs(input_args, inputs_file)?;
        let report = super::remote::run(ctx, &file.display().to_string(), text, &inputs)?;
        return Ok(finish(&report, output));
    }
    let cassette = cassette.open()?;
    // The store is open only while the workflow is loaded and its plugins
    // prepared, so other runtime processes can use it during the run.
    let (runner, workflow, executor) = {
        let store = ctx.open_store()?;
        let mut runner = ctx.runner(&store)?;
        if let Some(cassette) = &cassette {
            runner = runner.with_cassette(Arc::clone(cassette));
        }
        let workflow = service::load(file, &ctx.expressions, &store, &ctx.tenant)?;
        let executor = runner.prepare(&workflow, &store)?;
        (runner, workflow, executor)
    };
    let inputs = collect_inputs(input_args, inputs_file)?;
    let executions = super::executions::executions(ctx);
    let execution = service::start_execution(&workflow, &executions, inputs)?;
    note!("execution {}", execution.id);
    let report =
        super::executions::drive(ctx, &runner, &workflow, executor, execution, concurrency)?;
    if let Some(cassette) = cassette.filter(|c| !c.replaying()) {
        let count = cassette.save().map_err(ServiceError::Plugin)?;
        note!(
            "recorded {count} HTTP exchanges to {}",
            cassette.path().display()
        );
    }
    Ok(finish(&report, output))
}

/// Prints how a run ended, as `output` asks: its exit code.
fn finish(report: &RunReport, output: OutputFormat) -> ExitCode {
    match output {
        OutputFormat::Json => {
            let json = serde_json::to_string_pretty(report).expect("reports serialize");
            out!("{json}");
        }
        OutputFormat::Human => print_summary(report),
    }
    match report.status {
        RunStatus::Succeeded => ExitCode::SUCCESS,
        RunStatus::Failed | RunStatus::Cancelled => ExitCode::from(EXIT_RUN_FAILED),
    }
}

/// `--inputs FILE.json` first, then each `--input name=value` over it.
fn collect_inputs(
    args: &[String],
    file: Option<&Path>,
) -> Result<IndexMap<String, Value>, ServiceError> {
    let mut inputs = IndexMap::new();
    if let Some(file) = file {
        let text = std::fs::read_to_string(file).map_err(|source| ServiceError::Read {
            file: file.display().to_string(),
            source,
        })?;
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| ServiceError::Inputs(format!("{}: not JSON: {e}", file.display())))?;
        let Value::Object(map) = value else {
            return Err(ServiceError::Inputs(format!(
                "{}: must hold a JSON object of input values",
                file.display()
            )));
        };
        inputs.extend(map);
    }
    for arg in args {
        let (name, value) = arg
            .split_once('=')
            .ok_or_else(|| ServiceError::Inputs(format!("`--input {arg}` is not `name=value`")))?;
        inputs.insert(name.to_owned(), Value::String(value.to_owned()));
    }
    Ok(inputs)
}

/// The tasks of a workflow as progress lines name them: each id's plugin,
/// and the width of the longest id.
#[derive(Debug, Default)]
pub(super) struct TaskNames {
    pub(super) uses: HashMap<String, String>,
    pub(super) width: usize,
}

impl TaskNames {
    pub(super) fn of(plan: &Plan) -> Self {
        Self {
            uses: plan
                .tasks
                .iter()
                .map(|t| (t.id.clone(), t.uses.clone()))
                .collect(),
            width: plan.tasks.iter().map(|t| t.id.len()).max().unwrap_or(0),
        }
    }

    /// The tasks of workflow `text` (read from `file`), planned here only
    /// to name them: whoever runs it (a server) checks its plugins. None
    /// when it does not plan (the runner reports why).
    pub(super) fn of_text(text: &str, file: &str, expressions: &Expressions) -> Self {
        struct Anything;
        impl PluginCatalog for Anything {
            fn check(&self, _: &str) -> Result<(), String> {
                Ok(())
            }
        }
        workflow::parse(text, file)
            .ok()
            .and_then(|definition| {
                workflow::validate(definition, file, expressions, &Anything).ok()
            })
            .map(|plan| Self::of(&plan))
            .unwrap_or_default()
    }
}

/// The report a `task_finished` event describes, output aside.
pub(super) fn report_of(
    task: &str,
    uses: &str,
    status: TaskStatus,
    error: &Option<String>,
    end: Option<&TaskEnd>,
) -> TaskReport {
    let end = end.cloned().unwrap_or_default();
    TaskReport {
        id: task.to_owned(),
        uses: uses.to_owned(),
        status,
        output: None,
        error: error.as_ref().map(|message| TaskError {
            kind: end.kind,
            message: message.clone(),
        }),
        usage: end.usage,
        metering: end.metering,
        attempts: end.attempts,
        fallback: end.fallback,
        degraded: end.degraded,
        tolerated: end.tolerated,
        input: None,
    }
}

pub(super) fn finished_line(report: &TaskReport, width: usize) -> String {
    finished_line_in(report, width, None)
}

/// The line of a finished task; a `for_each` task's `wall` time (from
/// its start to its end) is shown beside its items' time added up.
pub(super) fn finished_line_in(
    report: &TaskReport,
    width: usize,
    wall: Option<Duration>,
) -> String {
    let id = &report.id;
    let m = &report.metering;
    let took = match wall {
        Some(wall) => format!(
            "{} wall, {} in items",
            format_duration(wall),
            format_duration(m.duration)
        ),
        None => format_duration(m.duration),
    };
    let cost = format!(
        "{}  fuel {}  memory {}{}",
        took,
        m.fuel,
        format_bytes(m.peak_memory),
        report
            .usage
            .as_ref()
            .map_or_else(String::new, |u| format!("  {}", usage_text(u)))
    );
    let error = report.error.as_ref().map(|e| match e.kind {
        Some(kind) => format!("{}: {}", kind.as_str(), e.message),
        None => e.message.clone(),
    });
    // How the result came about, when it took more than one plain attempt.
    let mut how = Vec::new();
    if report.attempts > 1 {
        how.push(format!("{} attempts", report.attempts));
    }
    if report.fallback {
        how.push("fallback".to_owned());
    }
    let how = if how.is_empty() {
        String::new()
    } else {
        format!("  ({})", how.join(", "))
    };
    match report.status {
        TaskStatus::Succeeded if report.degraded => format!(
            " DEGRADED  {id:width$}  {cost}{how}\n           output is the task's `default:`; {}",
            error.unwrap_or_default()
        ),
        TaskStatus::Succeeded => format!("       ok  {id:width$}  {cost}{how}"),
        TaskStatus::Failed if report.tolerated => format!(
            " FAILED (continued)  {id:width$}  {cost}{how}\n           {}",
            error.unwrap_or_default()
        ),
        TaskStatus::Failed if m.duration.is_zero() => {
            format!("   FAILED  {id:width$}  {}", error.unwrap_or_default())
        }
        TaskStatus::Failed => format!(
            "   FAILED  {id:width$}  {cost}{how}\n           {}",
            error.unwrap_or_default()
        ),
        TaskStatus::Skipped => format!("  skipped  {id:width$}  (`when` was false)"),
        TaskStatus::NotRun => format!("  not run  {id:width$}  {}", error.unwrap_or_default()),
    }
}

pub(super) fn print_summary(report: &RunReport) {
    let took = format_duration(Duration::from_micros(report.duration_us));
    let (workflow, id) = (&report.workflow, &report.execution_id);
    match (&report.status, &report.error) {
        (RunStatus::Cancelled, _) => {
            note!("workflow `{workflow}` ({id}) cancelled after {took}")
        }
        (_, None) => note!("workflow `{workflow}` ({id}) succeeded in {took}"),
        (_, Some(error)) => note!("workflow `{workflow}` ({id}) failed in {took}: {error}"),
    }
    if let Some(usage) = run_usage(&report.tasks) {
        note!("  {usage}");
    }
    for line in verdicts(&report.tasks) {
        note!("  {line}");
    }
    if report.status == RunStatus::Succeeded {
        let json = serde_json::to_string_pretty(&report.outputs).expect("outputs serialize");
        out!("{json}");
    }
}

fn format_duration(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        format!("{}µs", d.as_micros())
    } else if d < Duration::from_secs(1) {
        format!("{:.1}ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{:.2}s", d.as_secs_f64())
    }
}

fn format_bytes(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}
