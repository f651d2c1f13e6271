//! The built-in `llm` plugin against OpenAI- and Anthropic-compatible
//! servers on 127.0.0.1 (`common::model_server`): answers and token usage,
//! streaming, provider errors mapped onto task errors (429 with
//! `retry-after`, 500 then a fallback model, 401, malformed JSON, a slow
//! answer past the deadline), JSON answers, and the API key attached by the
//! host without the plugin ever holding it.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

mod common;

use std::time::Duration;

use common::model_server::ModelServer;
use common::{Host, failure, task};
use runtime::plugin::Grants;
use runtime::scheduler::{FailureKind, RunStatus, TaskStatus};

const OPENAI_KEY: &str = "sk-test-0penai-key";
const ANTHROPIC_KEY: &str = "ant-test-key-456";

/// A host whose secrets belong to the model server, with the built-in
/// `llm` installed as `llm`, granted that server and both secrets.
async fn host(server: &ModelServer) -> Host {
    let config = format!(
        "secrets:\n  openai:\n    value: {OPENAI_KEY}\n    hosts: ['{addr}']\n    format: 'Bearer {{}}'\n  anthropic:\n    value: {ANTHROPIC_KEY}\n    hosts: ['{addr}']\n    header: x-api-key\n",
        addr = server.addr
    );
    let host = Host::with_config(&config);
    let (_, bytes) = runtime::plugin::builtins()
        .iter()
        .find(|(name, _)| *name == "llm")
        .unwrap();
    let grants = Grants {
        http_hosts: vec!["127.0.0.1".into()],
        secrets: vec!["openai".into(), "anthropic".into()],
        ..Grants::default()
    };
    host.install_bytes(bytes, "built-in llm", "llm", grants)
        .await;
    host
}

/// The binary against a store in `dir` whose configuration holds the
/// `openai` secret for the model server (and `extra`), with the built-in
/// `llm` granted that server.
fn cli_for(
    dir: &std::path::Path,
    server: &ModelServer,
    extra: &str,
) -> impl Fn() -> std::process::Command {
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "secrets:\n  openai:\n    value: {OPENAI_KEY}\n    hosts: ['{}']\n    format: 'Bearer {{}}'\n{extra}",
            server.addr
        ),
    )
    .unwrap();
    let dir = dir.to_owned();
    let cli = move || {
        let mut cmd = common::cli(&dir);
        cmd.env("ORCHESTRATOR_CONFIG", &config);
        cmd
    };
    let out = cli()
        .args(["plugins", "grant", "llm", "--allow-http", "127.0.0.1"])
        .output()
        .unwrap();
    common::assert_ok(&out);
    cli
}

/// Runs `flow` with `cli`, which must succeed; returns the execution id.
fn run_ok(cli: &impl Fn() -> std::process::Command, flow: &std::path::Path) -> String {
    let out = cli()
        .args(["run", flow.to_str().unwrap()])
        .output()
        .unwrap();
    common::assert_ok(&out);
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .next()
        .unwrap()
        .trim_start_matches("execution ")
        .to_owned()
}

/// The first message of every request the server got, in order.
fn first_messages(server: &ModelServer) -> Vec<String> {
    server
        .requests()
        .iter()
        .map(|r| {
            r.body["messages"][0]["content"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

/// A one-task workflow calling `llm` with `with` (a YAML flow mapping's
/// inside) plus the server's `base_url`, and extra task fields.
fn flow(server: &ModelServer, with: &str, extra: &str) -> String {
    format!(
        "name: llm\ntasks:\n  - id: ask\n    uses: llm\n    with: {{ base_url: \"{}\", {with} }}\n{extra}",
        server.base_url()
    )
}

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

#[test]
fn a_recorded_run_replays_with_no_network_and_the_same_results() {
    let dir = tempfile::tempdir().unwrap();
    let server = ModelServer::start();
    let cli = cli_for(dir.path(), &server, "");
    let flow = dir.path().join("flow.yaml");
    let write_flow = |prompt: &str| {
        std::fs::write(
            &flow,
            format!(
                r#"name: recorded
tasks:
  - {{ id: plain, uses: llm, with: {{ base_url: "{url}", model: echo, prompt: "{prompt}" }} }}
  - {{ id: streamed, uses: llm, with: {{ base_url: "{url}", model: echo, prompt: "again {prompt}", stream: true }} }}
outputs:
  both: ${{{{ tasks.plain.output.text + " / " + tasks.streamed.output.text }}}}
"#,
                url = server.base_url()
            ),
        )
        .unwrap();
    };
    let run = |mode: &str, cassette: &std::path::Path| {
        let out = cli()
            .args(["run", flow.to_str().unwrap(), "--output", "json", mode])
            .arg(cassette)
            .output()
            .unwrap();
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        (out, report)
    };
    write_flow("hello");
    let cassette = dir.path().join("cassette.json");
    let (out, recorded) = run("--record", &cassette);
    common::assert_ok(&out);
    let progress = String::from_utf8_lossy(&out.stderr);
    assert!(progress.contains("recorded 2 HTTP exchanges"), "{progress}");
    // The streamed answer is shown as it arrives, on its own line.
    assert!(
        progress.contains("   stream  streamed  echo: again hello\n"),
        "{progress}"
    );
    assert_eq!(
        recorded["outputs"]["both"],
        "echo: hello / echo: again hello"
    );
    let text = std::fs::read_to_string(&cassette).unwrap();
    assert!(!text.contains(OPENAI_KEY), "the cassette holds no secret");
    let calls = server.requests().len();

    let (out, replayed) = run("--replay", &cassette);
    common::assert_ok(&out);
    assert_eq!(server.requests().len(), calls, "the replay sent nothing");
    assert_eq!(replayed["outputs"], recorded["outputs"]);
    for i in 0..2 {
        assert_eq!(
            replayed["tasks"][i]["output"], recorded["tasks"][i]["output"],
            "task {i}"
        );
        assert_eq!(replayed["tasks"][i]["usage"], recorded["tasks"][i]["usage"]);
    }

    // A request the cassette does not hold fails, naming it.
    write_flow("something else");
    let (out, missed) = run("--replay", &cassette);
    assert_eq!(out.status.code(), Some(1));
    let message = missed["tasks"][0]["error"]["message"].as_str().unwrap();
    assert_eq!(missed["tasks"][0]["error"]["kind"], "denied");
    assert!(
        message.contains(&format!(
            "has no exchange for POST {}/chat/completions",
            server.base_url()
        )) && message.contains("something else"),
        "{message}"
    );
    assert_eq!(server.requests().len(), calls);
}

#[test]
fn status_shows_tokens_and_cost_per_task_and_in_total() {
    let dir = tempfile::tempdir().unwrap();
    let server = ModelServer::start();
    // Whole dollars per token, so the sums are easy to check.
    let cli = cli_for(
        dir.path(),
        &server,
        "prices:\n  echo: { input: 1000000, output: 2000000 }\n",
    );
    let flow = dir.path().join("flow.yaml");
    std::fs::write(
        &flow,
        format!(
            r#"name: priced
tasks:
  - {{ id: one, uses: llm, with: {{ base_url: "{url}", model: echo, prompt: a b }} }}
  - id: many
    uses: llm
    for_each: ${{{{ ["x", "y"] }}}}
    with: {{ base_url: "{url}", model: echo, prompt: "${{{{ item }}}}" }}
"#,
            url = server.base_url()
        ),
    )
    .unwrap();
    let id = run_ok(&cli, &flow);
    let out = cli().args(["status", &id, "--json"]).output().unwrap();
    let view: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let usage = |task: &str| common::task_json(&view, task)["usage"].clone();
    let one = usage("one");
    let (input, output) = (
        one["input_tokens"].as_u64().unwrap(),
        one["output_tokens"].as_u64().unwrap(),
    );
    assert_eq!(output, 3, "echo: a b");
    assert_eq!(one["cost_usd"], (input + 2 * output) as f64);
    let many = usage("many");
    let items: Vec<serde_json::Value> = ["many[0]", "many[1]"].iter().map(|t| usage(t)).collect();
    let item_tokens = |field: &str| {
        items
            .iter()
            .map(|u| u[field].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(
        many["input_tokens"].as_u64(),
        Some(item_tokens("input_tokens"))
    );
    assert_eq!(
        many["output_tokens"].as_u64(),
        Some(item_tokens("output_tokens"))
    );

    let out = cli().args(["status", &id]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.contains(" one ")).unwrap();
    assert!(
        line.contains(&format!(
            "tokens {input} in, 3 out, ${:.6}",
            (input + 6) as f64
        )),
        "{text}"
    );
    let all_in = input + item_tokens("input_tokens");
    let all_out = 3 + item_tokens("output_tokens");
    let total = format!(
        "usage      tokens {all_in} in, {all_out} out, ${:.6}",
        (all_in + 2 * all_out) as f64
    );
    assert!(text.contains(&total), "{total} missing from:\n{text}");

    // Per tenant: every execution's usage, and all of them together.
    let out = cli().args(["list"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let cost = (all_in + 2 * all_out) as f64;
    let row = format!("tokens {all_in} in, {all_out} out, ${cost:.6}");
    assert!(text.lines().next().unwrap().ends_with(&row), "{text}");
    assert!(
        text.contains(&format!("tenant default: {row} over 1 executions")),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_answers_are_reused_for_the_same_request_and_cost_nothing() {
    let server = ModelServer::start();
    let host = host(&server).await;
    let yaml = |ttl: &str| {
        format!(
            r#"name: cached
tasks:
  - {{ id: first, uses: llm, with: {{ base_url: "{url}", model: echo, prompt: same }}, cache: {{ ttl: 1h }} }}
  - id: again
    uses: llm
    needs: [first]
    with: {{ model: echo, prompt: same, base_url: "{url}" }}
    cache: {{ ttl: {ttl} }}
  - {{ id: other, uses: llm, needs: [again], with: {{ base_url: "{url}", model: echo, prompt: different }}, cache: {{ ttl: 1h }} }}
  - {{ id: uncached, uses: llm, needs: [other], with: {{ base_url: "{url}", model: echo, prompt: same }} }}
"#,
            url = server.base_url()
        )
    };
    let report = host.run(&yaml("1h")).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    // `again` asks what `first` asked (keys in another order): one request.
    let prompts = first_messages(&server);
    assert_eq!(prompts, ["same", "different", "same"]);
    let first = task(&report, "first");
    let again = task(&report, "again");
    assert_eq!(again.output, first.output);
    let hit = again.usage.as_ref().unwrap();
    assert!(hit.cached && hit.input_tokens == 0 && hit.cost_usd == Some(0.0));
    assert!(!first.usage.as_ref().unwrap().cached);

    // A second run answers every cached task from the cache; a ttl shorter
    // than the entry's age does not.
    let report = host.run(&yaml("1ms")).await;
    assert_eq!(report.status, RunStatus::Succeeded, "{:?}", report.error);
    assert!(task(&report, "first").usage.as_ref().unwrap().cached);
    assert!(task(&report, "other").usage.as_ref().unwrap().cached);
    assert!(!task(&report, "again").usage.as_ref().unwrap().cached);
    assert_eq!(
        server.requests().len(),
        3 + 2,
        "`again` and `uncached` asked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_refuses_calls_before_and_after_they_are_made() {
    let server = ModelServer::start();
    let host = host(&server).await;
    let long = "word ".repeat(80);
    let yaml = format!(
        r#"name: frugal
budget: {{ max_tokens: 40 }}
tasks:
  - {{ id: small, uses: llm, with: {{ base_url: "{url}", model: echo, prompt: hi }} }}
  - {{ id: large, uses: llm, needs: [small], with: {{ base_url: "{url}", model: echo, prompt: "{long}" }} }}
"#,
        url = server.base_url()
    );
    let report = host.run(&yaml).await;
    assert_eq!(task(&report, "small").status, TaskStatus::Succeeded);
    let (kind, message) = failure(&report, "large");
    assert_eq!(kind, FailureKind::Denied);
    assert!(message.contains("before the call"), "{message}");
    assert!(
        message.contains("of its 40 tokens") && message.contains("about 100"),
        "{message}"
    );
    assert_eq!(server.requests().len(), 1, "the large call was never sent");

    // Estimated at 1 token, the call goes out; its answer takes the run
    // past 3 tokens, so it is refused after.
    let yaml = format!(
        r#"name: frugal
budget: {{ max_tokens: 3 }}
tasks:
  - {{ id: chatty, uses: llm, with: {{ base_url: "{url}", model: echo, prompt: "a b c d" }} }}
"#,
        url = server.base_url()
    );
    let report = host.run(&yaml).await;
    let (kind, message) = failure(&report, "chatty");
    assert_eq!(kind, FailureKind::Denied);
    assert!(message.contains("after the call"), "{message}");
    assert_eq!(server.requests().len(), 2, "this call was sent");

    let error = host
        .try_run("name: bad\nbudget: { max_cost: -1 }\ntasks:\n  - { id: t, uses: llm, with: { model: m, prompt: p } }\n")
        .await
        .unwrap_err();
    assert!(
        error.contains("`max_cost` must be a number of dollars"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workflow_policies_redact_prompts_and_deny_answers_around_every_model_call() {
    let server = ModelServer::start();
    let host = host(&server).await;
    let (_, policy) = runtime::plugin::builtins()
        .iter()
        .find(|(name, _)| *name == "policy")
        .unwrap();
    host.install_bytes(policy, "built-in policy", "policy", Grants::default())
        .await;
    let yaml = format!(
        r#"name: policed
policies:
  before:
    - {{ with: {{ pii: [api_key], on_pii: deny }} }}
    - {{ uses: policy, with: {{ pii: true }} }}
  after:
    - {{ with: {{ deny: ["(?i)forbidden"] }} }}
tasks:
  - {{ id: masked, uses: llm, with: {{ base_url: "{url}", model: echo, prompt: "mail ada@example.org please" }} }}
  - {{ id: leak, uses: llm, with: {{ base_url: "{url}", model: echo, prompt: "my key is sk-abcdefghijklmnop1234" }} }}
  - {{ id: blocked, uses: llm, with: {{ base_url: "{url}", model: echo, prompt: "say forbidden" }} }}
  - {{ id: plain, uses: transform, with: {{ script: '"no model here"' }} }}
"#,
        url = server.base_url()
    );
    let (_, transform) = runtime::plugin::builtins()
        .iter()
        .find(|(name, _)| *name == "transform")
        .unwrap();
    host.install_bytes(
        transform,
        "built-in transform",
        "transform",
        Grants::default(),
    )
    .await;
    let report = host.run(&yaml).await;

    // The model only ever saw the masked prompt; the key never left.
    let prompts = first_messages(&server);
    assert_eq!(prompts.len(), 2, "{prompts:?}");
    assert!(
        prompts.contains(&"mail [EMAIL] please".to_owned()),
        "{prompts:?}"
    );
    assert!(!prompts.iter().any(|p| p.contains("sk-")), "{prompts:?}");

    let masked = task(&report, "masked").output.clone().unwrap();
    assert_eq!(masked["text"], "echo: mail [EMAIL] please");
    let stages: Vec<(&str, &str)> = masked["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["stage"].as_str().unwrap(), v["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(
        stages,
        [
            ("before", "allow"),
            ("before", "redact"),
            ("after", "allow")
        ]
    );

    let (kind, message) = failure(&report, "leak");
    assert_eq!(kind, FailureKind::Denied);
    assert!(
        message.contains("denied the prompt before the call"),
        "{message}"
    );
    let (kind, message) = failure(&report, "blocked");
    assert_eq!(kind, FailureKind::Denied);
    assert!(
        message.contains("denied the answer") && message.contains("forbidden"),
        "{message}"
    );
    let plain = task(&report, "plain").output.clone().unwrap();
    assert_eq!(
        plain, "no model here",
        "a task that calls no model is not policed"
    );

    let error = host
        .try_run("name: bad\npolicies:\n  before: [{ uses: nope }]\n  after: [{ with: { text: x } }]\ntasks:\n  - { id: t, uses: transform, with: { script: '1' } }\n")
        .await
        .unwrap_err();
    assert!(
        error.contains("policy 1 of `policies.before` uses unknown plugin `nope`"),
        "{error}"
    );
    assert!(
        error.contains("must be a mapping without `text`"),
        "{error}"
    );
}

#[test]
fn an_execution_records_the_policies_it_runs_with() {
    let dir = tempfile::tempdir().unwrap();
    let server = ModelServer::start();
    let cli = cli_for(dir.path(), &server, "");
    let flow = dir.path().join("flow.yaml");
    std::fs::write(
        &flow,
        "name: recorded_policies\npolicies:\n  after: [{ with: { pii: true } }]\ntasks:\n  - { id: t, uses: transform, with: { script: '1' } }\n",
    )
    .unwrap();
    let id = run_ok(&cli, &flow);
    let view: serde_json::Value = serde_json::from_slice(
        &cli()
            .args(["status", &id, "--json"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let shown: serde_json::Value = serde_json::from_slice(
        &cli()
            .args(["plugins", "show", "policy", "--json"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(
        view["record"]["plugins"]["#policy-after-0"], shown["digest"],
        "a resume checks the policy plugin is still the one it started with"
    );
}
