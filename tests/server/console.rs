//! The web console in a real browser: Debian's Chromium, headless, driven
//! over the DevTools protocol against a real server whose `llm` calls a
//! model server on 127.0.0.1. Logs in, opens the run of
//! `examples/summarize_and_grade.yaml` (the DAG with each task's state and
//! cost), watches a streamed answer arrive live, replays a dead letter and
//! visits every page, with no JavaScript error on the way. The
//! screenshots are kept in `target/tmp/console/`.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chromiumoxide::browser::{Browser, BrowserConfig};
use chromiumoxide::cdp::js_protocol::runtime::{
    ConsoleApiCalledType, EventConsoleApiCalled, EventExceptionThrown,
};
use chromiumoxide::page::{Page, ScreenshotParams};

use crate::common::model_server::ModelServer;
use crate::harness::*;

/// Where the screenshots go.
fn shots() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("console");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Evaluates `condition` (JavaScript) until it is true, for up to 30 s.
async fn wait_for(page: &Page, condition: &str, what: &str) {
    for _ in 0..300 {
        let holds = page
            .evaluate(format!("Boolean({condition})"))
            .await
            .ok()
            .and_then(|v| v.into_value::<bool>().ok());
        if holds == Some(true) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text: String = page
        .evaluate("document.body.innerText")
        .await
        .ok()
        .and_then(|v| v.into_value().ok())
        .unwrap_or_default();
    panic!("{what}: `{condition}` never held; the page shows:\n{text}");
}

async fn text(page: &Page, selector: &str) -> String {
    page.evaluate(format!(
        "document.querySelector({selector:?})?.textContent ?? ''"
    ))
    .await
    .unwrap()
    .into_value()
    .unwrap()
}

async fn shot(page: &Page, name: &str) {
    page.save_screenshot(
        ScreenshotParams::builder().full_page(true).build(),
        shots().join(name),
    )
    .await
    .unwrap();
}

/// Types `key` into the login form and sends it.
async fn log_in(page: &Page, key: &str) {
    page.evaluate("document.querySelector('#key').value = ''")
        .await
        .unwrap();
    let field = page.find_element("#key").await.unwrap();
    field.click().await.unwrap().type_str(key).await.unwrap();
    click(page, "#login button").await;
}

async fn click(page: &Page, selector: &str) {
    page.find_element(selector)
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

async fn go(page: &Page, url: &str) {
    page.evaluate(format!("location.href = {url:?}"))
        .await
        .unwrap();
}

const STREAMED: &str = "name: streamed\ninputs:\n  base_url: { type: string }\ntasks:\n  - id: answer\n    uses: llm\n    with: { model: slow, base_url: '${{ inputs.base_url }}', prompt: 'tell me a story <img src=x onerror=document.title=1>', stream: true }\noutputs:\n  text: ${{ tasks.answer.output.text }}\n";

#[tokio::test(flavor = "multi_thread")]
async fn the_console_shows_runs_live_and_replays_a_dead_letter_in_a_browser() {
    let chromium = common::tools::chromium();
    let models = ModelServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = calling_models(dir.path(), &models);
    let server = Server::start_with(dir.path(), None, &["--config", &config]);
    let admin = server.client(&server.admin_key).await;

    // The example, on the model server: `echo` answers the summaries, and
    // the judge, whose answer is not the JSON it must be, fails for good.
    let example =
        std::fs::read_to_string(common::root().join("examples/summarize_and_grade.yaml")).unwrap();
    let mut start_example = start(&example, "support-ticket");
    start_example.inputs_json =
        serde_json::json!({ "model": "echo", "base_url": models.base_url() }).to_string();
    let done = run_to_end(&admin, start_example).await;
    let id = done.id.clone();
    assert_eq!(done.status, "failed", "the judge fails: {}", done.error);

    let browser_dir = dir.path().join("chromium");
    let config = BrowserConfig::builder()
        .chrome_executable(chromium)
        .new_headless_mode()
        .no_sandbox()
        .user_data_dir(&browser_dir)
        .window_size(1400, 1000)
        .build()
        .unwrap();
    let (mut browser, mut handler) = Browser::launch(config).await.unwrap();
    let handling = tokio::spawn(async move {
        while futures_util::StreamExt::next(&mut handler).await.is_some() {}
    });
    let page = browser.new_page("about:blank").await.unwrap();
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let mut thrown = page.event_listener::<EventExceptionThrown>().await.unwrap();
    let mut logged = page
        .event_listener::<EventConsoleApiCalled>()
        .await
        .unwrap();
    let kept = Arc::clone(&errors);
    tokio::spawn(async move {
        while let Some(e) = futures_util::StreamExt::next(&mut thrown).await {
            kept.lock()
                .unwrap()
                .push(format!("{:?}", e.exception_details));
        }
    });
    let kept = Arc::clone(&errors);
    tokio::spawn(async move {
        while let Some(e) = futures_util::StreamExt::next(&mut logged).await {
            if e.r#type == ConsoleApiCalledType::Error {
                kept.lock().unwrap().push(format!("{:?}", e.args));
            }
        }
    });

    // Log in with a wrong key, then the right one.
    let console = format!("{}/console/", server.url);
    page.goto(&console).await.unwrap();
    wait_for(
        &page,
        "document.querySelector('#login:not([hidden])')",
        "the login form",
    )
    .await;
    shot(&page, "login.png").await;
    log_in(&page, "oo_nobody.secret").await;
    wait_for(
        &page,
        "document.querySelector('#login-error').textContent.length > 0",
        "a refused key says so",
    )
    .await;
    log_in(&page, &server.admin_key).await;

    // The executions list, with the run in it.
    wait_for(
        &page,
        &format!(
            "[...document.querySelectorAll('#executions a')].some(a => a.textContent === {id:?})"
        ),
        "the run is listed",
    )
    .await;
    shot(&page, "executions.png").await;

    // The run: its DAG with every task's state and the model calls' cost.
    go(&page, &format!("{console}#/executions/{id}")).await;
    let state = |task: &str| {
        format!("document.querySelector('#dag [data-task=\"{task}\"]')?.dataset.state")
    };
    wait_for(
        &page,
        &format!("{} === 'failed'", state("judge")),
        "the judge failed",
    )
    .await;
    for (task, expected) in [
        ("chunk", "succeeded"),
        ("summarize", "succeeded"),
        ("join", "succeeded"),
        ("redact", "succeeded"),
        ("metrics", "succeeded"),
        ("judge", "failed"),
        ("verdict", "not_run"),
    ] {
        let shown: String = page
            .evaluate(state(task))
            .await
            .unwrap()
            .into_value()
            .unwrap_or_default();
        assert_eq!(shown, expected, "task {task}");
    }
    let summarize = text(&page, "#dag [data-task=\"summarize\"]").await;
    assert!(
        summarize.contains("llm · succeeded · $"),
        "its cost: {summarize}"
    );
    let edges: usize = page
        .evaluate("document.querySelectorAll('#dag .edge').length")
        .await
        .unwrap()
        .into_value()
        .unwrap();
    assert_eq!(edges, 6, "one edge per need");
    let timeline = text(&page, "#timeline").await;
    assert!(
        timeline.contains("summarize[0] #1"),
        "the attempts' timeline: {timeline:?}"
    );
    click(&page, "#dag [data-task=\"summarize\"]").await;
    wait_for(
        &page,
        "document.querySelector('#task-id')?.textContent === 'summarize'",
        "the task panel",
    )
    .await;
    assert!(text(&page, "#task-cost").await.starts_with('$'));
    assert!(text(&page, "#task-output").await.contains("echo:"));
    shot(&page, "execution.png").await;

    // A streamed answer, shown as it arrives: the page is open before the
    // model has said anything.
    let mut streamed = start(STREAMED, "streamed-1");
    streamed.inputs_json = serde_json::json!({ "base_url": models.base_url() }).to_string();
    admin.executions().start(streamed).await.unwrap();
    go(&page, &format!("{console}#/executions/streamed-1")).await;
    wait_for(
        &page,
        "document.querySelector('#execution-status')?.textContent === 'running'",
        "the run is live",
    )
    .await;
    assert_eq!(text(&page, "#streamed").await, "", "nothing streamed yet");
    wait_for(
        &page,
        "document.querySelector('#streamed')?.textContent.includes('echo: tell me a story <img src=x')",
        "the streamed answer, as text",
    )
    .await;
    // What a model (or a tenant, or a plugin) says is shown, never run.
    let injected: usize = page
        .evaluate("document.querySelectorAll('#view img').length")
        .await
        .unwrap()
        .into_value()
        .unwrap();
    assert_eq!(injected, 0, "no element made of a model's answer");
    assert_eq!(text(&page, "title").await, "LLM-Orchestrator");
    wait_for(
        &page,
        "document.querySelector('#execution-status')?.textContent === 'succeeded'",
        "the run ends",
    )
    .await;
    shot(&page, "stream.png").await;

    // The judge's dead letter, replayed from the console.
    go(&page, &format!("{console}#/dead-letters")).await;
    let letter = format!("{id}/judge");
    wait_for(
        &page,
        &format!("document.querySelector('[data-replay=\"{letter}\"]')"),
        "the dead letter",
    )
    .await;
    shot(&page, "dead-letters.png").await;
    click(&page, &format!("[data-replay=\"{letter}\"]")).await;
    wait_for(
        &page,
        &format!("location.hash === '#/executions/{id}'"),
        "the replayed run opens",
    )
    .await;
    let events = admin
        .executions()
        .get_events(pb::GetEventsRequest {
            execution_id: id.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert!(
        events.iter().any(|e| e.kind == "dead_letter_replayed"),
        "the replay is recorded"
    );

    // A breaker a run tripped, on its page.
    let trip = "name: trip\nbreaker: { failures: 1, open_for: 1h }\ntasks:\n  - { id: a, uses: transform, with: { script: 'throw \"down\"' }, retry: { max_attempts: 1 } }\n";
    run_to_end(&admin, start(trip, "trip-1")).await;
    go(&page, &format!("{console}#/breakers")).await;
    wait_for(
        &page,
        "document.querySelector('#breakers')?.textContent.includes('open')",
        "the open breaker",
    )
    .await;
    assert!(
        text(&page, "#breakers").await.contains("transform@"),
        "what it guards"
    );
    shot(&page, "breakers.png").await;

    // The other pages.
    for (page_name, table) in [
        ("plugins", "#plugins"),
        ("workflows", "#workflows"),
        ("usage", "#usage"),
    ] {
        go(&page, &format!("{console}#/{page_name}")).await;
        wait_for(
            &page,
            &format!("document.querySelector('{table}')"),
            page_name,
        )
        .await;
        shot(&page, &format!("{page_name}.png")).await;
    }
    let usage = text(&page, "#usage tr:nth-child(2)").await;
    let tokens = text(&page, "#usage tr:nth-child(2) td:nth-child(3)").await;
    let tokens: u64 = tokens.split(' ').next().unwrap().parse().unwrap();
    assert!(
        usage.starts_with("default") && tokens >= 187 + 9,
        "the tokens both runs used: {usage}"
    );
    go(&page, &format!("{console}#/plugins")).await;
    wait_for(
        &page,
        "document.querySelector('#plugins')?.textContent.includes('llm')",
        "the llm plugin",
    )
    .await;

    // A tenant's admin sees its own tenant's usage, and only that.
    let acme = server.key("acme", "admin").await;
    click(&page, "#logout").await;
    wait_for(
        &page,
        "document.querySelector('#login:not([hidden])')",
        "logged out",
    )
    .await;
    log_in(&page, &acme).await;
    wait_for(
        &page,
        "document.querySelector('#login[hidden]')",
        "logged in",
    )
    .await;
    go(&page, &format!("{console}#/usage")).await;
    wait_for(
        &page,
        "document.querySelector('#usage tr:nth-child(2)')",
        "acme's usage",
    )
    .await;
    let rows = text(&page, "#usage").await;
    assert!(
        text(&page, "#usage tr:nth-child(2)")
            .await
            .starts_with("acme")
            && !rows.contains("default"),
        "only its own tenant: {rows}"
    );

    let errors = errors.lock().unwrap().clone();
    assert!(errors.is_empty(), "the console logged errors: {errors:?}");
    browser.close().await.unwrap();
    handling.abort();
}
