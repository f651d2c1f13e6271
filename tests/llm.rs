//! The built-in `llm` plugin against OpenAI- and Anthropic-compatible
//! servers on 127.0.0.1 (`common::model_server`): answers and token usage,
//! streaming, provider errors mapped onto task errors (429 with
//! `retry-after`, 500 then a fallback model, 401, malformed JSON, a slow
//! answer past the deadline), JSON answers, and the API key attached by the
//! host without the plugin ever holding it. What the host does around model
//! calls (cost, cache, budgets, policies, cassettes) is in `governance.rs`.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

mod common;

use std::time::Duration;

use common::model_server::ModelServer;
use common::models::{ANTHROPIC_KEY, OPENAI_KEY, flow, host};
use common::{failure, task};
use orchestrator_engine::scheduler::{FailureKind, RunStatus, TaskStatus};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_apis_answer_with_usage_and_the_key_stays_on_the_host() {
    let server = ModelServer::start();
    let host = host(&server).await;
    let yaml = format!(
        r#"name: both
tasks:
  - id: gpt
    uses: llm
    with: {{ base_url: "{url}", model: echo, system: be brief, prompt: hello there, temperature: 0 }}
  - id: claude
    uses: llm
    with: {{ provider: anthropic, base_url: "{url}", model: echo, prompt: hi claude, max_tokens: 50 }}
"#,
        url = server.base_url()
    );
    let report = host.run(&yaml).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);

    let gpt = task(&report, "gpt");
    let output = gpt.output.as_ref().unwrap();
    assert_eq!(output["text"], "echo: hello there");
    assert_eq!(output["provider"], "openai");
    let usage = gpt.usage.as_ref().unwrap();
    assert!(
        usage.input_tokens > 0 && usage.output_tokens == 3,
        "{usage:?}"
    );
    assert_eq!(usage.model.as_deref(), Some("echo"));
    let claude = task(&report, "claude");
    assert_eq!(claude.output.as_ref().unwrap()["text"], "echo: hi claude");
    assert_eq!(claude.usage.as_ref().unwrap().output_tokens, 3);

    let requests = server.requests();
    let openai = requests
        .iter()
        .find(|r| r.path == "/v1/chat/completions")
        .unwrap();
    assert_eq!(openai.body["messages"][0]["content"], "be brief");
    assert_eq!(openai.body["temperature"], 0.0);
    let anthropic = requests.iter().find(|r| r.path == "/v1/messages").unwrap();
    assert_eq!(anthropic.body["max_tokens"], 50);
    assert_eq!(anthropic.header("anthropic-version"), Some("2023-06-01"));

    // The server got the keys, attached by the host ...
    let bearer = format!("Bearer {OPENAI_KEY}");
    assert_eq!(openai.header("authorization"), Some(bearer.as_str()));
    assert_eq!(anthropic.header("x-api-key"), Some(ANTHROPIC_KEY));
    // ... and nothing the plugin produced holds them.
    let everything = serde_json::to_string(&report).unwrap();
    assert!(!everything.contains(OPENAI_KEY) && !everything.contains(ANTHROPIC_KEY));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_answer_is_assembled_from_server_sent_events() {
    let server = ModelServer::start();
    let host = host(&server).await;
    for provider in ["openai", "anthropic"] {
        let report = host
            .run(&flow(
                &server,
                &format!("provider: {provider}, model: echo, prompt: one two three, stream: true"),
                "",
            ))
            .await;
        assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
        let ask = task(&report, "ask");
        assert_eq!(ask.output.as_ref().unwrap()["text"], "echo: one two three");
        assert_eq!(ask.usage.as_ref().unwrap().output_tokens, 4, "{provider}");
    }
    assert!(server.requests().iter().all(|r| r.body["stream"] == true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_is_retried_no_sooner_than_its_retry_after() {
    let server = ModelServer::start();
    let host = host(&server).await;
    let report = host
        .run(&flow(
            &server,
            "model: rate-limited, prompt: hi",
            "    retry: { max_attempts: 3, initial_interval: 10ms }\n",
        ))
        .await;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    assert_eq!(task(&report, "ask").attempts, 2);
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    let waited = requests[1].at - requests[0].at;
    assert!(
        waited >= Duration::from_secs(1),
        "retried after {waited:?}, before the server's retry-after of 1 s"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_model_falls_back_to_the_next() {
    let server = ModelServer::start();
    let host = host(&server).await;
    let report = host
        .run(&flow(
            &server,
            "model: down, prompt: hi, fallback_models: [{ model: echo }]",
            "",
        ))
        .await;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    let output = task(&report, "ask").output.clone().unwrap();
    assert_eq!(output["model"], "echo");
    assert_eq!(output["failed_models"][0]["model"], "openai/down");
    let why = output["failed_models"][0]["error"].as_str().unwrap();
    assert!(why.contains("answered 500: the model is down"), "{why}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provider_errors_become_task_errors() {
    let server = ModelServer::start();
    let host = host(&server).await;
    let yaml = format!(
        r#"name: errors
tasks:
  - {{ id: refused, uses: llm, with: {{ base_url: "{url}", model: unauthorized, prompt: hi }} }}
  - {{ id: garbled, uses: llm, with: {{ base_url: "{url}", model: malformed, prompt: hi }} }}
  - id: sluggish
    uses: llm
    with: {{ base_url: "{url}", model: slow, prompt: hi }}
    limits: {{ deadline: 1s }}
  - {{ id: unasked, uses: llm, with: {{ base_url: "{url}", model: echo }} }}
  - {{ id: exhausted, uses: llm, with: {{ base_url: "{url}", model: down, prompt: hi, fallback_models: [{{ model: unauthorized }}] }} }}
"#,
        url = server.base_url()
    );
    let report = host.run(&yaml).await;
    assert_eq!(report.status, RunStatus::Failed);
    let expect = |id: &str, kind: FailureKind, needles: &[&str]| {
        let (got, message) = failure(&report, id);
        assert_eq!(got, kind, "{id}: {message}");
        for needle in needles {
            assert!(message.contains(needle), "{id}: {message}");
        }
    };
    expect(
        "refused",
        FailureKind::Fatal,
        &["answered 401: invalid api key", "credentials"],
    );
    expect(
        "garbled",
        FailureKind::Retryable,
        &["is not JSON", "{not json"],
    );
    expect("sluggish", FailureKind::Deadline, &["deadline of 1s"]);
    expect(
        "unasked",
        FailureKind::InvalidInput,
        &["give a `prompt` or `messages`"],
    );
    expect(
        "exhausted",
        FailureKind::Fatal,
        &["every model failed", "openai/down", "openai/unauthorized"],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_answers_are_parsed_for_dependents() {
    let server = ModelServer::start();
    let host = host(&server).await;
    let yaml = format!(
        r#"name: graded
tasks:
  - id: grade
    uses: llm
    with:
      base_url: "{url}"
      model: json
      prompt: grade this
      response_format: {{ json_schema: {{ type: object, required: [score] }} }}
outputs:
  score: ${{{{ tasks.grade.output.json.score }}}}
"#,
        url = server.base_url()
    );
    let report = host.run(&yaml).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    assert_eq!(report.outputs["score"], 4);
    assert_eq!(task(&report, "grade").status, TaskStatus::Succeeded);
    let request = &server.requests()[0];
    assert_eq!(request.body["response_format"]["type"], "json_schema");
}
