//! A host and a command line set up to call models on the test model
//! server: its secrets belong to the server, and the built-in `llm` is
//! granted it.

use super::Host;
use super::model_server::ModelServer;
use orchestrator_engine::plugin::Grants;

pub const OPENAI_KEY: &str = "sk-test-0penai-key";
pub const ANTHROPIC_KEY: &str = "ant-test-key-456";

/// A host whose secrets belong to the model server, with the built-in
/// `llm` installed as `llm`, granted that server and both secrets.
pub async fn host(server: &ModelServer) -> Host {
    host_with(server, "").await
}

/// Like [`host`], with `extra` added to the host's configuration.
pub async fn host_with(server: &ModelServer, extra: &str) -> Host {
    let config = format!(
        "secrets:\n  openai:\n    value: {OPENAI_KEY}\n    hosts: ['{addr}']\n    insecure_http: true\n    format: 'Bearer {{}}'\n  anthropic:\n    value: {ANTHROPIC_KEY}\n    hosts: ['{addr}']\n    insecure_http: true\n    header: x-api-key\n",
        addr = server.addr
    ) + extra;
    let host = Host::with_config(&config);
    let bytes = builtin("llm");
    let grants = Grants {
        http_hosts: vec!["127.0.0.1".into()],
        secrets: vec!["openai".into(), "anthropic".into()],
        model: true,
        ..Grants::default()
    };
    host.install_bytes(bytes, "built-in llm", "llm", grants)
        .await;
    host
}

/// The bytes of the built-in plugin `name`.
pub fn builtin(name: &str) -> &'static [u8] {
    orchestrator_engine::plugin::builtins()
        .find(|(n, _)| *n == name)
        .map(|(_, bytes)| bytes)
        .unwrap_or_else(|| panic!("no built-in `{name}`"))
}

/// The binary against a store in `dir` whose configuration holds the
/// `openai` secret for the model server (and `extra`), with the built-in
/// `llm` granted that server.
pub fn cli_for(
    dir: &std::path::Path,
    server: &ModelServer,
    extra: &str,
) -> impl Fn() -> std::process::Command {
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "secrets:\n  openai:\n    value: {OPENAI_KEY}\n    hosts: ['{}']\n    insecure_http: true\n    format: 'Bearer {{}}'\n{extra}",
            server.addr
        ),
    )
    .unwrap();
    let dir = dir.to_owned();
    let cli = move || {
        let mut cmd = super::cli(&dir);
        cmd.env("ORCHESTRATOR_CONFIG", &config);
        cmd
    };
    let out = cli()
        .args(["plugins", "grant", "llm", "--allow-http", "127.0.0.1"])
        .output()
        .unwrap();
    super::assert_ok(&out);
    cli
}

/// Runs `flow` with `cli`, which must succeed; returns the execution id.
pub fn run_ok(cli: &impl Fn() -> std::process::Command, flow: &std::path::Path) -> String {
    let out = cli()
        .args(["run", flow.to_str().unwrap()])
        .output()
        .unwrap();
    super::assert_ok(&out);
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .next()
        .unwrap()
        .trim_start_matches("execution ")
        .to_owned()
}

/// The first message of every request the server got, in order.
pub fn first_messages(server: &ModelServer) -> Vec<String> {
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
pub fn flow(server: &ModelServer, with: &str, extra: &str) -> String {
    format!(
        "name: llm\ntasks:\n  - id: ask\n    uses: llm\n    with: {{ base_url: \"{}\", {with} }}\n{extra}",
        server.base_url()
    )
}
