//! What a server shows of its runs: spans exported over OTLP to a receiver
//! this test runs on 127.0.0.1 (the span tree of a run, in the trace of
//! the call that started it), and `/metrics` scraped and parsed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;

use crate::harness::*;
use crate::rest::send;

/// Keeps every span it is sent.
#[derive(Default, Clone)]
struct Receiver {
    spans: Arc<Mutex<Vec<Span>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            for scope in resource.scope_spans {
                spans.extend(scope.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// Starts a receiver on 127.0.0.1; its address and what it receives.
async fn receiver() -> (String, Receiver) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let receiver = Receiver::default();
    let service = TraceServiceServer::new(receiver.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (format!("http://{address}"), receiver)
}

fn attribute(span: &Span, key: &str) -> Option<String> {
    let value = span
        .attributes
        .iter()
        .find(|a| a.key == key)?
        .value
        .as_ref()?;
    match value.value.as_ref()? {
        AnyValue::StringValue(s) => Some(s.clone()),
        AnyValue::IntValue(i) => Some(i.to_string()),
        AnyValue::BoolValue(b) => Some(b.to_string()),
        other => Some(format!("{other:?}")),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Two transforms, and a model asked the same twice, a policy checking
/// each prompt: the second answer comes from the response cache.
const TWO_STEPS: &str = "name: two-steps\ninputs:\n  base_url: { type: string }\npolicies:\n  before: [{ with: { pii: true } }]\ntasks:\n  - { id: first, uses: transform, with: { script: '21' } }\n  - { id: second, uses: transform, needs: [first], with: { n: '${{ tasks.first.output }}', script: 'n * 2' } }\n  - { id: ask, uses: llm, needs: [second], with: { model: echo, base_url: '${{ inputs.base_url }}', prompt: what is 42 }, cache: { ttl: 1h } }\n  - { id: again, uses: llm, needs: [ask], with: { model: echo, base_url: '${{ inputs.base_url }}', prompt: what is 42 }, cache: { ttl: 1h } }\noutputs:\n  answer: ${{ tasks.second.output }}\n";

#[tokio::test(flavor = "multi_thread")]
async fn a_run_is_a_span_tree_in_its_callers_trace_and_is_counted_in_metrics() {
    let (endpoint, receiver) = receiver().await;
    let models = common::model_server::ModelServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = calling_models(dir.path(), &models);
    // The collector from the configuration file.
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!("telemetry:\n  otlp_endpoint: {endpoint}\n"));
    std::fs::write(&config, text).unwrap();
    let mut server = Server::start_with(dir.path(), None, &["--config", &config]);
    let admin = server.client(&server.admin_key).await;

    // The caller's trace: a W3C traceparent on the call that starts it.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller_span = "00f067aa0ba902b7";
    let mut traced = start(TWO_STEPS, "traced-1");
    traced.inputs_json = serde_json::json!({ "base_url": models.base_url() }).to_string();
    let mut request = tonic::Request::new(traced);
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{trace_id}-{caller_span}-01").parse().unwrap(),
    );
    let done = run_to_end(&admin, request).await;
    let id = done.id.clone();
    assert_eq!(done.status, "succeeded");
    assert_eq!(done.outputs_json, r#"{"answer":42}"#);

    // The metrics count it, to the host's admin only.
    let (status, _) = scrape(&server, "").await;
    assert_eq!(status, 401, "no credential");
    let viewer = server.key("default", "viewer").await;
    let (status, _) = scrape(&server, &viewer).await;
    assert_eq!(status, 403, "not an admin");
    let (status, text) = scrape(&server, &server.admin_key).await;
    assert_eq!(status, 200, "{text}");
    let samples = parse(&text);
    let value = |name: &str, labels: &[(&str, &str)]| -> f64 {
        samples
            .iter()
            .find(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| *v)
            .unwrap_or_else(|| panic!("no {name} {labels:?} in:\n{text}"))
    };
    assert_eq!(
        value(
            "orchestrator_executions_started_total",
            &[("tenant", "default")]
        ),
        1.0
    );
    assert_eq!(
        value(
            "orchestrator_executions_finished_total",
            &[("tenant", "default"), ("outcome", "succeeded")]
        ),
        1.0
    );
    let transform = [("tenant", "default"), ("plugin", "transform")];
    assert_eq!(
        value(
            "orchestrator_tasks_total",
            &[
                ("tenant", "default"),
                ("plugin", "transform"),
                ("status", "succeeded")
            ]
        ),
        2.0
    );
    assert_eq!(value("orchestrator_task_attempts_total", &transform), 2.0);
    assert_eq!(
        value("orchestrator_task_duration_seconds_count", &transform),
        2.0
    );
    assert!(value("orchestrator_task_duration_seconds_sum", &transform) > 0.0);
    assert!(value("orchestrator_task_fuel_sum", &transform) > 0.0);
    assert!(value("orchestrator_task_peak_memory_bytes_sum", &transform) > 0.0);
    assert!(value("orchestrator_store_commit_duration_seconds_count", &[]) >= 1.0);
    assert_eq!(
        value("orchestrator_executions_parked", &[("tenant", "default")]),
        0.0
    );
    assert_eq!(value("orchestrator_tasks_running", &[]), 0.0);
    let tenant = [("tenant", "default")];
    assert_eq!(value("orchestrator_tenant_tasks_running", &tenant), 0.0);
    assert_eq!(value("orchestrator_tenant_tasks_queued", &tenant), 0.0);
    assert_eq!(value("orchestrator_dead_letters", &tenant), 0.0);
    // Every plugin call took a slot: two transforms, the model, the
    // policy before each model call.
    assert_eq!(
        value("orchestrator_task_slot_wait_seconds_count", &tenant),
        5.0
    );
    // The model call: its tokens and cost by model, and the cache hit.
    let echo = [
        ("tenant", "default"),
        ("model", "echo"),
        ("provider", "openai"),
    ];
    let input = value(
        "orchestrator_model_tokens_total",
        &[
            ("tenant", "default"),
            ("model", "echo"),
            ("provider", "openai"),
            ("direction", "input"),
        ],
    );
    assert!(input >= 3.0, "the prompt's words: {input}");
    assert!(value("orchestrator_model_cost_usd_total", &echo) > 0.0);
    let llm = [("tenant", "default"), ("plugin", "llm")];
    assert_eq!(value("orchestrator_response_cache_hits_total", &llm), 1.0);
    assert!(!text.contains(&id), "no execution id is a label:\n{text}");
    documented(&text);

    // A run whose task fails twice: each failed attempt counted by kind.
    let failing = "name: failing\ntasks:\n  - { id: a, uses: transform, with: { script: 'throw \"down\"' }, retry: { max_attempts: 2, initial_interval: 10ms } }\n";
    let ended = run_to_end(&admin, start(failing, "failing-1")).await;
    assert_eq!(ended.status, "failed");
    let (_, text) = scrape(&server, &server.admin_key).await;
    let failures: f64 = parse(&text)
        .iter()
        .filter(|(n, l, _)| {
            n == "orchestrator_task_attempts_failed_total"
                && l.get("plugin").map(String::as_str) == Some("transform")
                && l.get("kind").is_some_and(|k| !k.is_empty())
        })
        .map(|(_, _, v)| v)
        .sum();
    assert_eq!(failures, 2.0, "{text}");
    let dead: f64 = parse(&text)
        .iter()
        .filter(|(n, l, _)| {
            n == "orchestrator_dead_letters"
                && l.get("tenant").map(String::as_str) == Some("default")
        })
        .map(|(_, _, v)| v)
        .sum();
    assert_eq!(dead, 1.0, "its task is a dead letter: {text}");

    // Stopped, the server sends the spans it has not sent yet.
    assert!(server.terminate().success());
    let spans = receiver.spans.lock().unwrap().clone();
    // The spans of the traced run (the failing one is a trace of its own).
    let named = |name: &str| -> Vec<&Span> {
        spans
            .iter()
            .filter(|s| s.name == name && hex(&s.trace_id) == trace_id)
            .collect()
    };
    let by_id: HashMap<Vec<u8>, &Span> = spans.iter().map(|s| (s.span_id.clone(), s)).collect();
    let parent = |span: &Span| by_id.get(&span.parent_span_id).copied();

    let rpc = named("rpc")
        .into_iter()
        .find(|s| attribute(s, "rpc").is_some_and(|r| r.ends_with("/Start")))
        .unwrap_or_else(|| panic!("no span of the Start call among {:?}", names(&spans)));
    assert_eq!(
        hex(&rpc.trace_id),
        trace_id,
        "the call continues the caller's trace"
    );
    assert_eq!(hex(&rpc.parent_span_id), caller_span);
    assert_eq!(attribute(rpc, "tenant").as_deref(), Some("default"));

    let execution = named("execution");
    assert_eq!(execution.len(), 1, "{:?}", names(&spans));
    let execution = execution[0];
    assert_eq!(
        hex(&execution.trace_id),
        trace_id,
        "the run is in the caller's trace"
    );
    assert_eq!(
        execution.parent_span_id, rpc.span_id,
        "the run is under the call that started it"
    );
    assert_eq!(
        attribute(execution, "execution").as_deref(),
        Some(id.as_str())
    );
    assert_eq!(
        attribute(execution, "workflow").as_deref(),
        Some("two-steps")
    );

    let tasks = named("task");
    let mut task_ids: Vec<String> = tasks.iter().filter_map(|t| attribute(t, "task")).collect();
    task_ids.sort();
    assert_eq!(task_ids, ["again", "ask", "first", "second"]);
    for task in &tasks {
        assert_eq!(
            task.parent_span_id, execution.span_id,
            "a task is under its run"
        );
        let plugin = attribute(task, "plugin").unwrap_or_default();
        assert!(["transform", "llm"].contains(&plugin.as_str()), "{plugin}");
    }
    let attempts = named("attempt");
    assert_eq!(attempts.len(), 4, "{:?}", names(&spans));
    for attempt in &attempts {
        let task = parent(attempt).expect("an attempt has a parent");
        assert_eq!(task.name, "task");
        assert_eq!(attribute(attempt, "attempt").as_deref(), Some("1"));
    }
    // The tasks' plugins under their attempts (the cached answer called
    // none), the policy's under its checks.
    let calls = named("plugin_call");
    let under = |name: &str| -> Vec<&Span> {
        calls
            .iter()
            .copied()
            .filter(|c| parent(c).is_some_and(|p| p.name == name))
            .collect()
    };
    assert_eq!(under("attempt").len(), 3, "{:?}", names(&spans));
    let checks = named("policy_check");
    assert_eq!(checks.len(), 4, "before and after each model call");
    assert!(
        checks
            .iter()
            .all(|c| parent(c).is_some_and(|p| p.name == "attempt"))
    );
    let checked = under("policy_check");
    assert_eq!(checked.len(), 2, "the prompt of each model call");
    assert!(checked.iter().all(|c| {
        attribute(c, "plugin")
            .unwrap_or_default()
            .starts_with("policy@")
    }));
    for call in &calls {
        let plugin = attribute(call, "plugin").unwrap_or_default();
        assert!(
            ["transform@", "llm@", "policy@"]
                .iter()
                .any(|p| plugin.starts_with(p)),
            "name@version: {plugin}"
        );
        assert_eq!(
            attribute(call, "contract").as_deref(),
            Some("0.2.0"),
            "built-ins are built for the newest contract"
        );
        let digest = attribute(call, "digest").unwrap_or_default();
        assert_eq!(digest.len(), 64, "the component's sha256: {digest}");
    }
    let requests = named("http_request");
    assert_eq!(
        requests.len(),
        1,
        "the model was asked once: {:?}",
        names(&spans)
    );
    let request = requests[0];
    assert_eq!(
        parent(request).map(|p| p.name.as_str()),
        Some("plugin_call")
    );
    assert_eq!(attribute(request, "method").as_deref(), Some("POST"));
    assert_eq!(attribute(request, "host").as_deref(), Some("127.0.0.1"));
    assert_eq!(attribute(request, "status").as_deref(), Some("200"));
    let commits = named("commit");
    assert!(!commits.is_empty(), "{:?}", names(&spans));
    assert!(commits.iter().all(|c| c.trace_id == execution.trace_id));
}

/// Every metric served is in `docs/observability.md`, and every metric
/// the Grafana dashboard asks for is served.
fn documented(text: &str) {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let docs = std::fs::read_to_string(format!("{root}/docs/observability.md")).unwrap();
    let families: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split(' ').next())
        .collect();
    assert!(families.len() >= 16, "{families:?}");
    for family in &families {
        assert!(
            docs.contains(&format!("`{family}`")) || docs.contains(&format!("`{family}_total`")),
            "{family} is not in docs/observability.md"
        );
    }
    let dashboard =
        std::fs::read_to_string(format!("{root}/docs/grafana/orchestrator.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let mut asked = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if !word.starts_with("orchestrator_") {
                    continue;
                }
                let family = ["_bucket", "_sum", "_count", "_total"]
                    .iter()
                    .fold(word, |w, suffix| w.strip_suffix(suffix).unwrap_or(w));
                assert!(
                    families.contains(&family),
                    "the dashboard asks for {word}, which is not served"
                );
                asked += 1;
            }
        }
    }
    assert!(asked >= 16, "the dashboard names the metrics");
}

fn names(spans: &[Span]) -> Vec<&str> {
    spans.iter().map(|s| s.name.as_str()).collect()
}

/// `GET /metrics` with `key` (none when empty): status and body.
async fn scrape(server: &Server, key: &str) -> (u16, String) {
    let bearer = format!("Bearer {key}");
    let headers: &[(&str, &str)] = if key.is_empty() {
        &[]
    } else {
        &[("authorization", &bearer)]
    };
    let answer = send(server, "GET", "/metrics", headers, Vec::new()).await;
    let status = answer.status;
    (
        status,
        String::from_utf8(answer.bytes().await.to_vec()).unwrap(),
    )
}

/// The samples of a Prometheus text: name, labels, value.
fn parse(text: &str) -> Vec<(String, HashMap<String, String>, f64)> {
    let mut samples = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').expect("`series value`");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("a number: {line}"));
        let (name, labels) = match series.split_once('{') {
            Some((name, labels)) => (name, labels.trim_end_matches('}')),
            None => (series, ""),
        };
        let labels = labels
            .split(',')
            .filter(|l| !l.is_empty())
            .map(|pair| {
                let (k, v) = pair.split_once('=').expect("label=\"value\"");
                (k.to_owned(), v.trim_matches('"').to_owned())
            })
            .collect();
        samples.push((name.to_owned(), labels, value));
    }
    samples
}
