//! What the host does around model calls, against the test model server:
//! cassettes (record, then replay with no network), cost per task, run and
//! tenant, the response cache, budgets, and workflow policies.

#![allow(
    clippy::unwrap_used,
    reason = "a test that cannot set up should fail loudly"
)]

mod common;

use common::model_server::ModelServer;
use common::models::{OPENAI_KEY, builtin, cli_for, first_messages, host, host_with, run_ok};
use common::{failure, task};
use orchestrator_engine::plugin::Grants;
use orchestrator_engine::scheduler::{FailureKind, RunStatus, TaskStatus};

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
async fn a_call_cut_off_gives_its_budget_back() {
    let server = ModelServer::start();
    let host = host(&server).await;
    // `slow` is estimated at 50 of the run's 60 tokens and cut off by its
    // timeout; `after`, estimated at 25, fits only if those 50 came back.
    let yaml = format!(
        r#"name: frugal
budget: {{ max_tokens: 60 }}
tasks:
  - {{ id: slow, uses: llm, timeout: 1s, continue_on_error: true, with: {{ base_url: "{url}", model: slow, prompt: "{slow}" }} }}
  - {{ id: after, uses: llm, needs: [slow], with: {{ base_url: "{url}", model: echo, prompt: "{after}" }} }}
"#,
        url = server.base_url(),
        slow = "word ".repeat(40),
        after = "word ".repeat(20),
    );
    let report = host.run(&yaml).await;
    let (kind, _) = failure(&report, "slow");
    assert_eq!(kind, FailureKind::TaskTimeout);
    let after = task(&report, "after");
    assert_eq!(after.status, TaskStatus::Succeeded, "{:?}", after.error);
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

    // A server reporting u64::MAX tokens in and out fills the budget; the
    // count saturates instead of wrapping to something small.
    let yaml = format!(
        r#"name: frugal
budget: {{ max_tokens: 1000000 }}
tasks:
  - {{ id: greedy, uses: llm, with: {{ base_url: "{url}", model: greedy, prompt: hi }} }}
"#,
        url = server.base_url()
    );
    let report = host.run(&yaml).await;
    let (kind, message) = failure(&report, "greedy");
    assert_eq!(kind, FailureKind::Denied, "{message}");
    assert!(
        message.contains("brings the run to 18446744073709551615 of its 1000000"),
        "{message}"
    );

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
    host.install_bytes(
        builtin("policy"),
        "built-in policy",
        "policy",
        Grants::default(),
    )
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
    host.install_bytes(
        builtin("transform"),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_follow_what_a_plugin_is_and_no_workflow_sheds_the_hosts() {
    let server = ModelServer::start();
    // The host's own policies: every model call, whatever the workflow says.
    let host = host_with(
        &server,
        "policies:\n  before:\n    - { with: { deny: ['(?i)secret plan'] } }\n  after:\n    - { with: { deny: ['\"score\":4'] } }\n",
    )
    .await;
    for name in ["policy", "transform"] {
        host.install_bytes(builtin(name), name, name, Grants::default())
            .await;
    }
    let llm = builtin("llm");
    // The same component under another name, not marked: still a model.
    let grants = Grants {
        http_hosts: vec!["127.0.0.1".into()],
        secrets: vec!["openai".into()],
        ..Grants::default()
    };
    let renamed = host
        .install_bytes(llm, "llm again", "other-llm", grants)
        .await;
    let digest = renamed.record.digest;
    // A registered workflow whose model call a parent's policies must reach.
    let child = format!(
        "name: child\ntasks:\n  - {{ id: ask, uses: llm, with: {{ base_url: \"{url}\", model: echo, prompt: \"parental advisory\" }} }}\noutputs:\n  text: ${{{{ tasks.ask.output.text }}}}\n",
        url = server.base_url()
    );
    host.store
        .add_workflow(
            orchestrator_engine::store::DEFAULT_TENANT,
            "child",
            "child.yaml",
            &child,
        )
        .unwrap();
    let yaml = format!(
        r#"name: sidesteps
policies:
  before:
    - {{ with: {{ deny: ["(?i)parental"] }} }}
tasks:
  - {{ id: by_digest, uses: "sha256:{digest}", with: {{ base_url: "{url}", model: echo, prompt: "the secret plan" }} }}
  - {{ id: renamed, uses: other-llm, with: {{ base_url: "{url}", model: echo, prompt: "the secret plan" }} }}
  - {{ id: system, uses: llm, with: {{ base_url: "{url}", model: echo, system: "keep the secret plan", prompt: hi }} }}
  - {{ id: parts, uses: llm, with: {{ base_url: "{url}", model: echo, messages: [{{ role: user, content: [{{ type: text, text: "the secret plan" }}] }}] }} }}
  - {{ id: json, uses: llm, with: {{ base_url: "{url}", model: json, prompt: grade, response_format: json }} }}
  - {{ id: nested, uses: "workflow:child" }}
  - {{ id: fine, uses: llm, with: {{ base_url: "{url}", model: echo, prompt: hello }} }}
"#,
        url = server.base_url()
    );
    let report = host.run(&yaml).await;
    for id in ["by_digest", "renamed", "system", "parts"] {
        let (kind, message) = failure(&report, id);
        assert_eq!(kind, FailureKind::Denied, "{id}: {message}");
        assert!(
            message.contains("denied the prompt before the call"),
            "{id}: {message}"
        );
    }
    let (kind, message) = failure(&report, "json");
    assert_eq!(kind, FailureKind::Denied, "{message}");
    assert!(message.contains("answer's `json`"), "{message}");
    // The child run failed because the parent's policy denied its prompt.
    let (_, message) = failure(&report, "nested");
    assert!(
        message.contains("denied the prompt before the call") && message.contains("parental"),
        "{message}"
    );
    assert_eq!(task(&report, "fine").status, TaskStatus::Succeeded);

    // No prompt that a policy denied reached the model.
    let prompts: Vec<String> = server
        .requests()
        .iter()
        .map(|r| r.body.to_string())
        .collect();
    assert!(
        !prompts
            .iter()
            .any(|p| p.contains("secret plan") || p.contains("parental")),
        "{prompts:?}"
    );
    assert_eq!(
        prompts.len(),
        2,
        "only `json` and `fine` were sent: {prompts:?}"
    );
}

#[test]
fn a_streamed_answer_is_not_shown_before_the_after_policies_pass_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = ModelServer::start();
    let cli = cli_for(dir.path(), &server, "");
    let flow = dir.path().join("flow.yaml");
    let run = |policies: &str| {
        std::fs::write(
            &flow,
            format!(
                "name: streamed\n{policies}tasks:\n  - {{ id: ask, uses: llm, with: {{ base_url: \"{}\", model: echo, prompt: one two three, stream: true }} }}\n",
                server.base_url()
            ),
        )
        .unwrap();
        cli()
            .args(["run", flow.to_str().unwrap()])
            .output()
            .unwrap()
    };
    // Without policies on the answer, it streams to the terminal...
    let out = run("");
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("stream  ask  echo: one two three"),
        "{stderr}"
    );
    // ... with them, nothing of it shows before they have passed it.
    let out = run("policies:\n  after:\n    - { with: { deny: ['(?i)three'] } }\n");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("stream  ask"), "{stderr}");
    assert!(!stderr.contains("echo: one two"), "{stderr}");
    assert!(stderr.contains("denied the answer"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_quota_spans_its_runs_and_engines_and_spares_other_tenants() {
    use orchestrator_engine::store::executions::ExecutionStatus;
    use orchestrator_engine::{Engine, Task, Workflow, tenant::TenantId};

    let dir = tempfile::tempdir().unwrap();
    let server = ModelServer::start();
    let cli = cli_for(dir.path(), &server, "quotas: { tokens: 1 }\n");
    for tenant in ["acme", "globex"] {
        common::assert_ok(
            &cli()
                .args(["--tenant", tenant])
                .args(["plugins", "grant", "llm", "--allow-http", "127.0.0.1"])
                .output()
                .unwrap(),
        );
    }
    let config_text = std::fs::read_to_string(dir.path().join("config.yaml")).unwrap();
    let engine_for = |tenant: &str| {
        let config =
            orchestrator_engine::config::Config::parse(&config_text, "config.yaml").unwrap();
        Engine::builder()
            .store(dir.path().join("store.redb"))
            .config(config)
            .tenant(TenantId::new(tenant).unwrap())
            .build()
    };
    let call = |id: &str| {
        Task::new(id, "llm")
            .with("base_url", server.base_url())
            .with("model", "echo")
            .with("prompt", "hi")
    };
    let two_calls = Workflow::builder("two-calls")
        .task(call("first"))
        .task(call("second").needs(["first"]))
        .build()
        .unwrap();

    // The first call (about 1 token) fits; it spends more, so the second
    // is refused before it is sent.
    let acme = engine_for("acme").await.unwrap();
    let done = acme
        .start(&two_calls, serde_json::json!({}))
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(done.record.status, ExecutionStatus::Failed);
    let second = done.tasks.iter().find(|t| t.id == "second").unwrap();
    let error = second.error.as_ref().unwrap();
    assert_eq!(error.kind, Some(FailureKind::Denied));
    assert!(
        error
            .message
            .contains("refused by tenant `acme`'s quota before the call")
            && error
                .message
                .contains("of its 1 tokens this period (1day, until"),
        "{}",
        error.message
    );
    assert_eq!(server.requests().len(), 1, "the second call was never sent");

    // Another engine on the same store reads what acme spent and refuses
    // its next run before it starts.
    let again = engine_for("acme").await.unwrap();
    let refused = again
        .start(&two_calls, serde_json::json!({}))
        .await
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("tenant `acme` has spent") && refused.contains("no run starts"),
        "{refused}"
    );
    assert_eq!(server.requests().len(), 1);

    // Another tenant's quota is its own.
    let globex = engine_for("globex").await.unwrap();
    let single = Workflow::builder("one-call")
        .task(call("only"))
        .build()
        .unwrap();
    let done = globex
        .start(&single, serde_json::json!({}))
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(done.record.status, ExecutionStatus::Succeeded);
    assert_eq!(server.requests().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_past_a_tenants_token_rate_hold_its_next_call_to_that_host_only() {
    use orchestrator_engine::store::executions::{EventKind, ExecutionStatus};
    use orchestrator_engine::{Engine, Task, Workflow, tenant::TenantId};

    let dir = tempfile::tempdir().unwrap();
    let server = ModelServer::start();
    // 20 tokens a second per tenant for the test server's host.
    let cli = cli_for(
        dir.path(),
        &server,
        "rate_limits: { \"127.0.0.1\": { tokens: 20, per: 1s } }\n",
    );
    common::assert_ok(
        &cli()
            .args(["--tenant", "globex", "plugins", "grant", "llm"])
            .args(["--allow-http", "127.0.0.1"])
            .output()
            .unwrap(),
    );
    let config_text = std::fs::read_to_string(dir.path().join("config.yaml")).unwrap();
    let config = orchestrator_engine::config::Config::parse(&config_text, "config.yaml").unwrap();
    let acme = Engine::builder()
        .store(dir.path().join("store.redb"))
        .config(config)
        .build()
        .await
        .unwrap();
    let globex = acme
        .for_tenant(TenantId::new("globex").unwrap())
        .await
        .unwrap();
    let call = |id: &str, who: &str| {
        Task::new(id, "llm")
            .with("base_url", server.base_url())
            .with("model", "echo")
            .with("prompt", format!("{who} {}", "word ".repeat(40)))
    };
    let two_calls = Workflow::builder("two-calls")
        .task(call("first", "acme"))
        .task(call("second", "acme").needs(["first"]))
        .build()
        .unwrap();
    let run = acme.start(&two_calls, serde_json::json!({})).await.unwrap();
    let mut events = run.events(0);
    loop {
        let (_, event) = events.next().await.unwrap().unwrap();
        if matches!(&event.kind, EventKind::TaskFinished { task, .. } if task == "first") {
            break;
        }
    }
    // acme owes tokens now; globex does not.
    let single = Workflow::builder("one-call")
        .task(call("only", "globex"))
        .build()
        .unwrap();
    let other = globex.start(&single, serde_json::json!({})).await.unwrap();
    let done = run.wait().await.unwrap();
    assert_eq!(done.record.status, ExecutionStatus::Succeeded);
    assert_eq!(
        other.wait().await.unwrap().record.status,
        ExecutionStatus::Succeeded
    );

    let first_tokens = {
        let first = done.tasks.iter().find(|t| t.id == "first").unwrap();
        let usage = first.usage.as_ref().unwrap();
        usage.input_tokens + usage.output_tokens
    };
    assert!(
        first_tokens > 40,
        "the first call used {first_tokens} tokens"
    );
    let owed_ms = (first_tokens - 20) * 1000 / 20;
    let arrival = |who: &str| -> Vec<std::time::Instant> {
        server
            .requests()
            .into_iter()
            .filter(|r| r.body.to_string().contains(&format!("{who} word")))
            .map(|r| r.at)
            .collect()
    };
    let (acme_at, globex_at) = (arrival("acme"), arrival("globex"));
    assert_eq!((acme_at.len(), globex_at.len()), (2, 1));
    let held = acme_at[1].duration_since(acme_at[0]).as_millis() as u64;
    assert!(
        held >= owed_ms * 8 / 10,
        "acme's second call went {held} ms after its first, owing {owed_ms} ms of tokens"
    );
    let globex_after = globex_at[0].duration_since(acme_at[0]).as_millis() as u64;
    assert!(
        globex_after < held,
        "globex's call ({globex_after} ms) waited behind acme's tokens ({held} ms)"
    );
}
