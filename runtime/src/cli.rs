//! The `runtime` command line: argument parsing, progress lines, exit codes.
//!
//! Exit codes: 0 success; 1 the run failed; 2 the workflow, its inputs or the
//! command line are wrong (nothing ran).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use indexmap::IndexMap;
use serde_json::Value;

use crate::expr::Expressions;
use crate::graph::Format;
use crate::scheduler::{Event, RunReport, RunStatus, TaskReport, TaskStatus};
use crate::service::{self, Runner, ServiceError};
use crate::telemetry::{self, LogFormat};

/// Runs LLM pipelines as DAG workflows; every task runs in a WebAssembly sandbox.
#[derive(Debug, Parser)]
#[command(name = "runtime", version, about)]
pub struct Cli {
    /// How log records are written to stderr.
    #[arg(long, global = true, value_enum, default_value = "human")]
    pub log_format: LogFormat,
    /// Which log records are written (`RUST_LOG` syntax; `RUST_LOG` wins).
    #[arg(long, global = true, default_value = "info")]
    pub log_level: String,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs a workflow and prints its outputs.
    Run {
        /// The workflow file (YAML or JSON).
        file: PathBuf,
        /// An input value, `name=value`; repeat for more.
        #[arg(long = "input", value_name = "NAME=VALUE")]
        inputs: Vec<String>,
        /// A JSON file holding an object of input values.
        #[arg(long = "inputs", value_name = "FILE.json")]
        inputs_file: Option<PathBuf>,
        /// How the result is printed on stdout.
        #[arg(long, value_enum, default_value = "human")]
        output: OutputFormat,
        /// How many tasks may run at once (default: the workflow's, else 32).
        #[arg(long)]
        concurrency: Option<usize>,
    },
    /// Checks a workflow without running it.
    Validate {
        /// The workflow file (YAML or JSON).
        file: PathBuf,
    },
    /// Prints a workflow's task graph.
    Graph {
        /// The workflow file (YAML or JSON).
        file: PathBuf,
        /// The drawing format.
        #[arg(long, value_enum, default_value = "dot")]
        format: GraphFormat,
    },
}

/// How `run` prints its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Progress on stderr, outputs as JSON on stdout.
    Human,
    /// The whole run report as JSON on stdout.
    Json,
}

/// Graph drawing formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    /// Graphviz dot.
    Dot,
    /// Mermaid flowchart.
    Mermaid,
}

const EXIT_RUN_FAILED: u8 = 1;
const EXIT_INVALID: u8 = 2;

/// Parses the command line, runs the command, returns the exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format, &cli.log_level);
    let expressions = Expressions::new();
    let result = match cli.command {
        Command::Validate { file } => validate(&file, &expressions),
        Command::Graph { file, format } => graph(&file, format, &expressions),
        Command::Run {
            file,
            inputs,
            inputs_file,
            output,
            concurrency,
        } => run(
            &file,
            &inputs,
            inputs_file.as_deref(),
            output,
            concurrency,
            expressions,
        ),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_INVALID)
        }
    }
}

fn validate(file: &Path, expressions: &Expressions) -> Result<ExitCode, ServiceError> {
    let workflow = service::load(file, expressions)?;
    let plan = &workflow.plan;
    println!(
        "{}: workflow `{}` is valid ({} tasks, {} inputs, {} outputs)",
        file.display(),
        plan.name,
        plan.tasks.len(),
        plan.inputs.len(),
        plan.outputs.len()
    );
    Ok(ExitCode::SUCCESS)
}

fn graph(
    file: &Path,
    format: GraphFormat,
    expressions: &Expressions,
) -> Result<ExitCode, ServiceError> {
    let workflow = service::load(file, expressions)?;
    let format = match format {
        GraphFormat::Dot => Format::Dot,
        GraphFormat::Mermaid => Format::Mermaid,
    };
    print!("{}", workflow.plan.render(format));
    Ok(ExitCode::SUCCESS)
}

fn run(
    file: &Path,
    input_args: &[String],
    inputs_file: Option<&Path>,
    output: OutputFormat,
    concurrency: Option<usize>,
    expressions: Expressions,
) -> Result<ExitCode, ServiceError> {
    let workflow = service::load(file, &expressions)?;
    let inputs = collect_inputs(input_args, inputs_file)?;
    let runner = Runner::new(expressions)?;
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| ServiceError::Plugin(format!("cannot start the async runtime: {e}")))?;
    let width = workflow
        .plan
        .tasks
        .iter()
        .map(|t| t.id.len())
        .max()
        .unwrap_or(0);
    let observe = move |event: Event<'_>| print_event(event, width);
    let report = tokio.block_on(runner.run(&workflow, inputs, concurrency, &observe))?;
    match output {
        OutputFormat::Json => {
            let json = serde_json::to_string_pretty(&report).expect("reports serialize");
            println!("{json}");
        }
        OutputFormat::Human => print_summary(&report),
    }
    Ok(match report.status {
        RunStatus::Succeeded => ExitCode::SUCCESS,
        RunStatus::Failed => ExitCode::from(EXIT_RUN_FAILED),
    })
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

fn print_event(event: Event<'_>, width: usize) {
    let line = match event {
        Event::Started { id, uses, .. } => format!("  started  {id:width$}  {uses}"),
        Event::Finished(report) => finished_line(report, width),
    };
    // Progress is best effort: a closed stderr must not stop the run.
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn finished_line(report: &TaskReport, width: usize) -> String {
    let id = &report.id;
    let m = &report.metering;
    let cost = format!(
        "{}  fuel {}  memory {}",
        format_duration(m.duration),
        m.fuel,
        format_bytes(m.peak_memory)
    );
    let error = report.error.as_ref().map(|e| match e.kind {
        Some(kind) => format!("{}: {}", kind.as_str(), e.message),
        None => e.message.clone(),
    });
    match report.status {
        TaskStatus::Succeeded => format!("       ok  {id:width$}  {cost}"),
        TaskStatus::Failed if m.duration.is_zero() => {
            format!("   FAILED  {id:width$}  {}", error.unwrap_or_default())
        }
        TaskStatus::Failed => format!(
            "   FAILED  {id:width$}  {cost}\n           {}",
            error.unwrap_or_default()
        ),
        TaskStatus::Skipped => format!("  skipped  {id:width$}  (`when` was false)"),
        TaskStatus::NotRun => format!("  not run  {id:width$}  {}", error.unwrap_or_default()),
    }
}

fn print_summary(report: &RunReport) {
    let took = format_duration(Duration::from_micros(report.duration_us));
    match &report.error {
        None => eprintln!("workflow `{}` succeeded in {took}", report.workflow),
        Some(error) => eprintln!("workflow `{}` failed in {took}: {error}", report.workflow),
    }
    if report.status == RunStatus::Succeeded {
        let json = serde_json::to_string_pretty(&report.outputs).expect("outputs serialize");
        println!("{json}");
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
