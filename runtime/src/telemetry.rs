//! Logs and traces: `tracing` records to stderr, for people (default) or
//! as JSON lines; and, given an OTLP endpoint, the spans of the
//! `orchestrator_*` crates (calls, executions, tasks, attempts, plugin
//! calls, HTTP requests, commits, policy checks) exported over OTLP/gRPC,
//! with W3C trace context taken from callers.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How log records are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// What stays set up while the process lives; dropped, it sends the spans
/// not exported yet.
pub struct Telemetry {
    exporting: Option<(SdkTracerProvider, tokio::runtime::Runtime)>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some((provider, runtime)) = self.exporting.take() {
            if let Err(e) = provider.shutdown() {
                eprintln!("warning: the last spans were not exported: {e}");
            }
            runtime.shutdown_background();
        }
    }
}

/// Installs the global subscriber: logs filtered by `level` (`RUST_LOG`
/// wins), and spans exported to `otlp` when given.
pub fn init(format: LogFormat, level: &str, otlp: Option<&str>) -> Result<Telemetry, String> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs = match format {
        LogFormat::Human => logs.without_time().with_filter(filter).boxed(),
        LogFormat::Json => logs.json().with_filter(filter).boxed(),
    };
    let exporting = otlp.map(exporter).transpose()?;
    let traces = exporting.as_ref().map(|(provider, _)| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("orchestrator"))
            .with_filter(filter_fn(exported))
    });
    if exporting.is_some() {
        opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    }
    // A second init (tests calling in twice) keeps the first subscriber.
    let _ = tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .try_init();
    Ok(Telemetry { exporting })
}

/// What is exported: the runtime's own spans, those below an execution
/// (tasks, attempts, plugin calls, requests, commits) included, which are
/// at `debug` so that with nothing exported no log filter at `info`
/// creates them; and its events at `info` and above, attached to their
/// spans.
fn exported(meta: &tracing::Metadata<'_>) -> bool {
    let level = if meta.is_span() {
        tracing::Level::DEBUG
    } else {
        tracing::Level::INFO
    };
    meta.target().starts_with("orchestrator") && *meta.level() <= level
}

/// The tracer provider exporting to `endpoint` in batches, and the
/// runtime its gRPC channel lives on (apart from the engine's).
fn exporter(endpoint: &str) -> Result<(SdkTracerProvider, tokio::runtime::Runtime), String> {
    let problem = |e: &dyn std::fmt::Display| format!("`--otlp-endpoint {endpoint}`: {e}");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("otlp-export")
        .enable_all()
        .build()
        .map_err(|e| problem(&e))?;
    let exporter = {
        let _inside = runtime.enter();
        opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint)
            .build()
            .map_err(|e| problem(&e))?
    };
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("orchestrator")
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    Ok((provider, runtime))
}
