//! The `runtime` command line: argument parsing, shared context, exit codes.
//!
//! Exit codes: 0 success; 1 the run failed; 2 the workflow, its inputs, a
//! plugin or the command line are wrong (nothing ran, nothing was written).
//! `run.rs` holds the workflow verbs, `executions.rs` the verbs on recorded
//! executions (`control.rs` reaches one another process is running),
//! `plugins.rs` the plugin store verbs.

/// `println!` that ignores a closed stdout (`runtime plugins list | head`).
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

/// `eprintln!` that ignores a closed stderr: a run must not die because
/// whoever watched its progress went away.
macro_rules! note {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod audit;
mod dlq;
mod executions;
mod plugins;
mod progress;
mod remote;
mod run;
mod serve;
mod summary;
mod workflows;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand, ValueEnum};

use crate::telemetry::{self, LogFormat};
use orchestrator_engine::config::{CONFIG_ENV, Config};
use orchestrator_engine::expr::Expressions;
use orchestrator_engine::sandbox::Sandbox;
use orchestrator_engine::sandbox::artifacts::ArtifactCache;
use orchestrator_engine::service::{self, Runner, ServiceError};
use orchestrator_engine::store::{STORE_ENV, Store};
use orchestrator_engine::tenant::TenantId;

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
    /// Exports spans over OTLP/gRPC to this collector (`http://host:4317`);
    /// the configuration's `telemetry.otlp_endpoint` when not given; off
    /// unless one of them is.
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = "OTEL_EXPORTER_OTLP_ENDPOINT"
    )]
    pub otlp_endpoint: Option<String>,
    /// The store file (installed plugins). Default: `store.redb` in the
    /// user's data directory.
    #[arg(long, global = true, env = STORE_ENV, value_name = "FILE")]
    pub store: Option<PathBuf>,
    /// Ask the server at this address (`runtime serve`) instead of using
    /// the store here: `list`, `status`, `cancel`, `signal`, `dlq list`,
    /// `dlq purge` and `audit`.
    #[arg(long, global = true, env = "ORCHESTRATOR_SERVER", value_name = "URL")]
    pub server: Option<String>,
    /// The API key to ask the server with.
    #[arg(
        long,
        global = true,
        env = "ORCHESTRATOR_API_KEY",
        value_name = "KEY",
        hide_env_values = true
    )]
    pub api_key: Option<String>,
    /// The host configuration file (secrets, capacity, prices). Default: `config.yaml` in the
    /// user's config directory, if it exists.
    #[arg(long, global = true, env = CONFIG_ENV, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The tenant whose plugins, workflows and executions a command works
    /// with; no other tenant's are seen.
    #[arg(long, global = true, env = "ORCHESTRATOR_TENANT", default_value = TenantId::DEFAULT)]
    pub tenant: TenantId,
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
        /// Recording or replaying the plugins' HTTP exchanges.
        #[command(flatten)]
        cassette: run::CassetteArgs,
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
    /// Lists recorded executions.
    List {
        /// Only those with this status: running, interrupted, succeeded, failed, cancelled.
        #[arg(long)]
        status: Option<String>,
        /// Only runs of this workflow (its name).
        #[arg(long)]
        workflow: Option<String>,
        /// At most this many, newest first (1 to 1000).
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u16).range(1..=1000))]
        limit: u16,
        /// The next page: the cursor the previous page printed.
        #[arg(long)]
        after: Option<String>,
        /// Print JSON: `{"executions": [...], "next": cursor or null}`.
        #[arg(long)]
        json: bool,
    },
    /// Shows one execution: status, every task's state, attempts and cost.
    Status {
        /// The execution id (`runtime run` prints it).
        id: String,
        /// Also print the event log (with `--follow`: print each event
        /// rather than the progress).
        #[arg(long)]
        events: bool,
        /// Show it live until it finishes, from another process too, as
        /// `run` shows a run: tasks started and finished, streamed text,
        /// how far each `for_each` has got.
        #[arg(long)]
        follow: bool,
        /// With `--follow`: start at this event number (0 is the first).
        #[arg(long, requires = "follow", default_value_t = 0)]
        from: u64,
        /// Print JSON (with `--follow`, one event per line).
        #[arg(long)]
        json: bool,
    },
    /// Stops a running execution (its tasks are interrupted) or marks an
    /// interrupted one cancelled.
    Cancel {
        /// The execution id.
        id: String,
    },
    /// Sends a signal to an execution: a `wait:` task for it completes with the payload.
    Signal {
        /// The execution id.
        id: String,
        /// The signal's name.
        name: String,
        /// Its payload, JSON (default null).
        #[arg(long)]
        payload: Option<String>,
    },
    /// Continues executions whose process stopped; finished tasks are not run again.
    Resume {
        /// The execution id.
        id: Option<String>,
        /// Every interrupted execution.
        #[arg(long)]
        all: bool,
        /// How many tasks may run at once.
        #[arg(long)]
        concurrency: Option<usize>,
    },
    /// Deletes finished executions older than a duration.
    Gc {
        /// For example `7d` or `12h`.
        #[arg(long, value_parser = parse_age)]
        older_than: std::time::Duration,
    },
    /// Registers and lists workflows that others run as tasks (`uses: workflow:NAME`).
    Workflows {
        /// What to do with them.
        #[command(subcommand)]
        command: workflows::WorkflowsCommand,
    },
    /// Serves the control API (gRPC, with health and reflection) for many
    /// tenants: `runtime serve --listen 127.0.0.1:7233`. On its first start
    /// it prints an admin API key.
    Serve(serve::ServeArgs),
    /// Lists the control API's audit log: calls that changed something and
    /// refused calls, of the tenant (`--tenant`), oldest first.
    Audit(audit::AuditArgs),
    /// Lists the circuit breakers of plugins and where each stands.
    Breakers {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Lists, shows, replays and purges tasks that failed for good.
    Dlq {
        /// What to do with them.
        #[command(subcommand)]
        command: dlq::DlqCommand,
    },
    /// Validates a plugin component, precompiles it and stores it with its grants.
    Install(plugins::InstallArgs),
    /// Lists, shows and removes installed plugins.
    Plugins {
        /// What to do with them.
        #[command(subcommand)]
        command: plugins::PluginsCommand,
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

/// What every command may need: the async runtime, the sandbox, where the
/// store and configuration live.
struct Context {
    tokio: tokio::runtime::Runtime,
    sandbox: Arc<Sandbox>,
    expressions: Expressions,
    store_path: PathBuf,
    /// The configuration file, or why it cannot be used (reported by the
    /// commands that need it).
    config: Result<Config, String>,
    /// Where the configuration is read from, and whether it was named
    /// (so must exist).
    config_path: (PathBuf, bool),
    /// Whose data the command works with.
    tenant: TenantId,
    /// Where a run's progress and streamed text are printed.
    progress: Arc<progress::Progress>,
    /// The server to ask instead of the store (`--server`), with the key.
    server: Option<(String, Option<String>)>,
}

impl Context {
    /// Opens the store, installing built-in plugins on first start.
    fn open_store(&self) -> Result<Store, ServiceError> {
        self.tokio.block_on(service::open_store(
            &self.store_path,
            &self.sandbox,
            &self.tenant,
        ))
    }

    /// A runner with this host's secrets and the circuit breakers recorded
    /// in `store`.
    fn runner(&self, store: &Store) -> Result<Runner, ServiceError> {
        self.config()?.runner(
            Arc::clone(&self.sandbox),
            self.expressions.clone(),
            store,
            &self.tenant,
        )
    }

    /// The configuration file, or why it cannot be used.
    fn config(&self) -> Result<&Config, ServiceError> {
        self.config
            .as_ref()
            .map_err(|problem| ServiceError::Plugin(problem.clone()))
    }
}

/// Parses the command line, runs the command, returns the exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Read before the rest of the configuration (whose problems the
    // commands that need it report): tracing starts first.
    let otlp = cli.otlp_endpoint.clone().or_else(|| {
        let loaded = match &cli.config {
            Some(path) => Config::load(path, true),
            None => Config::load(&Config::default_path(), false),
        };
        loaded.ok().and_then(|config| config.otlp_endpoint)
    });
    let _telemetry = match telemetry::init(cli.log_format, &cli.log_level, otlp.as_deref()) {
        Ok(telemetry) => telemetry,
        Err(problem) => {
            eprintln!("error: {problem}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let result = context(&cli).and_then(|ctx| {
        remote::supported(&ctx, &cli.command)?;
        Ok(ctx)
    });
    let result = result.and_then(|ctx| match cli.command {
        Command::Validate { file } => run::validate(&ctx, &file),
        Command::Graph { file, format } => run::graph(&ctx, &file, format),
        Command::Run {
            file,
            inputs,
            inputs_file,
            output,
            concurrency,
            cassette,
        } => run::run(
            &ctx,
            &file,
            &inputs,
            inputs_file.as_deref(),
            output,
            concurrency,
            &cassette,
        ),
        Command::List {
            status,
            workflow,
            limit,
            after,
            json,
        } => executions::list(
            &ctx,
            &orchestrator_engine::executions::ListFilter {
                state: status,
                workflow,
                limit: usize::from(limit),
                after,
            },
            json,
        ),
        Command::Status {
            id,
            follow: true,
            from,
            events,
            json,
        } => executions::follow(&ctx, &id, from, events, json),
        Command::Status {
            id, events, json, ..
        } => executions::status(&ctx, &id, events, json),
        Command::Cancel { id } => executions::cancel(&ctx, &id),
        Command::Signal { id, name, payload } => {
            executions::signal(&ctx, &id, &name, payload.as_deref())
        }
        Command::Resume {
            id,
            all,
            concurrency,
        } => executions::resume(&ctx, id.as_deref(), all, concurrency),
        Command::Gc { older_than } => executions::gc(&ctx, older_than),
        Command::Dlq { command } => dlq::dlq(&ctx, command),
        Command::Breakers { json } => plugins::breakers(&ctx, json),
        Command::Serve(args) => serve::serve(ctx, args),
        Command::Audit(args) => audit::audit(&ctx, args),
        Command::Workflows { command } => workflows::workflows(&ctx, command),
        Command::Install(args) => plugins::install(&ctx, args),
        Command::Plugins { command } => plugins::plugins(&ctx, command),
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            note!("error: {e}");
            ExitCode::from(EXIT_INVALID)
        }
    }
}

fn parse_age(text: &str) -> Result<std::time::Duration, String> {
    orchestrator_engine::workflow::parse_duration(text)
}

fn context(cli: &Cli) -> Result<Context, ServiceError> {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| ServiceError::Plugin(format!("cannot start the async runtime: {e}")))?;
    let config = match &cli.config {
        Some(path) => Config::load(path, true),
        None => Config::load(&Config::default_path(), false),
    };
    // A broken file leaves the defaults here; commands that run plugins
    // report it (through `secrets`), the others do not need it.
    let capacity = config.as_ref().map(|c| c.capacity).unwrap_or_default();
    Ok(Context {
        tokio,
        sandbox: Sandbox::with_options(capacity, ArtifactCache::from_env())?,
        expressions: Expressions::new(),
        store_path: cli.store.clone().unwrap_or_else(Store::default_path),
        config,
        config_path: match &cli.config {
            Some(path) => (path.clone(), true),
            None => (Config::default_path(), false),
        },
        tenant: cli.tenant.clone(),
        // Redrawn in place only for people: a terminal, and no JSON asked for.
        progress: Arc::new(progress::Progress::new(
            std::io::IsTerminal::is_terminal(&std::io::stderr())
                && !matches!(
                    cli.command,
                    Command::Run {
                        output: OutputFormat::Json,
                        ..
                    }
                ),
        )),
        server: cli.server.clone().map(|url| (url, cli.api_key.clone())),
    })
}
