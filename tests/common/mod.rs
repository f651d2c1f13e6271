//! Shared set-up for the library-level tests: a host with its own store in a
//! temporary directory, and a small HTTP/1.1 server on 127.0.0.1.

#![allow(
    dead_code,
    reason = "each test crate uses the part of this module it needs"
)]

pub mod crash;
pub mod http;
pub mod model_server;
pub mod models;
pub mod tools;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use indexmap::IndexMap;
use orchestrator_engine::config::Config;
use orchestrator_engine::expr::Expressions;
use orchestrator_engine::plugin::{self, Grants, InstallReport, InstallRequest};
use orchestrator_engine::sandbox::Sandbox;
use orchestrator_engine::scheduler::{FailureKind, RunReport, TaskReport, TaskStatus};
use orchestrator_engine::service::{self, Runner};
use orchestrator_engine::store::{DEFAULT_TENANT, Store};

/// A runtime with its own store in a temporary directory.
pub struct Host {
    pub dir: tempfile::TempDir,
    pub store: Store,
    pub runner: Runner,
}

impl Host {
    /// A host whose store holds no plugins.
    pub fn new() -> Self {
        Self::with_config("")
    }

    /// A host with a configuration file (secrets, capacity).
    pub fn with_config(config: &str) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let store = Store::open(&dir.path().join("store.redb")).expect("a fresh store opens");
        let config = Config::parse(config, "config.yaml").expect("the test configuration parses");
        let sandbox = Sandbox::with_capacity(config.capacity).expect("the sandbox starts");
        let runner = Runner::on(sandbox, Expressions::new())
            .with_secrets(config.secrets)
            .with_prices(config.prices)
            .with_host_policies(config.policies)
            .with_response_cache(store.responses());
        Self { dir, store, runner }
    }

    /// A host whose store holds the built-in plugins, installed as at first start.
    pub async fn with_builtins() -> Self {
        let host = Self::new();
        plugin::install_builtins(&host.store, host.runner.sandbox(), DEFAULT_TENANT)
            .await
            .expect("the built-ins install");
        host
    }

    /// Installs the component at `path` as `name` with `grants`.
    pub async fn install(&self, path: &str, name: &str, grants: Grants) -> InstallReport {
        let bytes = std::fs::read(path).expect("the component was built");
        self.install_bytes(&bytes, path, name, grants).await
    }

    /// Installs a component given as bytes (a built-in's, say) as `name`.
    pub async fn install_bytes(
        &self,
        bytes: &[u8],
        source: &str,
        name: &str,
        grants: Grants,
    ) -> InstallReport {
        plugin::install(
            &self.store,
            self.runner.sandbox(),
            DEFAULT_TENANT,
            InstallRequest {
                bytes,
                source: source.to_owned(),
                name: Some(name.to_owned()),
                version: None,
                grants,
                builtin: false,
                quota: Default::default(),
            },
        )
        .await
        .expect("the plugin installs")
    }

    /// A path inside the host's temporary directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Loads and runs a workflow given as YAML text.
    pub async fn run(&self, yaml: &str) -> RunReport {
        self.try_run(yaml)
            .await
            .expect("the workflow loads and prepares")
    }

    /// Loads and runs a workflow, returning load or prepare errors as text.
    /// Each run has its own file, so runs may overlap.
    pub async fn try_run(&self, yaml: &str) -> Result<RunReport, String> {
        static RUNS: AtomicUsize = AtomicUsize::new(0);
        let file = self.path(&format!(
            "flow-{}.yaml",
            RUNS.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::write(&file, yaml).expect("writing the workflow");
        let workflow = service::load(&file, &Expressions::new(), &self.store, &Default::default())
            .map_err(|e| e.to_string())?;
        self.runner
            .run(&workflow, &self.store, IndexMap::new(), None, &|_| {})
            .await
            .map_err(|e| e.to_string())
    }
}

/// The report of task `id`.
pub fn task<'a>(report: &'a RunReport, id: &str) -> &'a TaskReport {
    report
        .tasks
        .iter()
        .find(|t| t.id == id)
        .unwrap_or_else(|| panic!("no task `{id}` in the report"))
}

/// The kind and message of failed task `id`.
pub fn failure(report: &RunReport, id: &str) -> (FailureKind, String) {
    let t = task(report, id);
    assert_eq!(t.status, TaskStatus::Failed, "{t:?}");
    let error = t.error.clone().expect("a failed task has an error");
    (
        error.kind.expect("a task failure has a kind"),
        error.message,
    )
}

/// One request the test server received.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// When it arrived.
    pub at: std::time::Instant,
}

impl Received {
    /// The value of header `name` (lower case), if sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What the test server answers: status, extra headers, body.
pub type Reply = (u16, Vec<(String, String)>, Vec<u8>);

/// An HTTP/1.1 server on 127.0.0.1 that records requests and answers with
/// `respond(path)`, each connection on its own thread (so a slow answer
/// does not hold up the others). Stops when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
}

impl TestServer {
    pub fn start(respond: impl Fn(&str) -> Reply + Send + Sync + 'static) -> Self {
        Self::start_on("127.0.0.1:0", respond)
    }

    /// Like [`TestServer::start`], listening on `bind` (`[::1]:0`, say).
    pub fn start_on(bind: &str, respond: impl Fn(&str) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind(bind).expect("binding a loopback address");
        let addr = listener.local_addr().expect("a bound address");
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log, stopping) = (Arc::clone(&received), Arc::clone(&stop));
        let respond = Arc::new(respond);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    let (respond, log) = (Arc::clone(&respond), Arc::clone(&log));
                    std::thread::spawn(move || serve(stream, &*respond, &log));
                }
            }
        });
        Self {
            addr,
            received,
            stop,
        }
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Requests received so far.
    pub fn requests(&self) -> Vec<Received> {
        self.received.lock().expect("lock").clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr);
    }
}

fn serve(
    stream: TcpStream,
    respond: &impl Fn(&str) -> Reply,
    log: &Mutex<Vec<Received>>,
) -> std::io::Result<()> {
    let http::Request {
        method,
        path,
        headers,
        ..
    } = http::read_request(&stream)?;
    log.lock().expect("lock").push(Received {
        method,
        path: path.clone(),
        headers,
        at: std::time::Instant::now(),
    });
    let (status, extra, body) = respond(&path);
    let mut out = stream;
    let mut head = format!(
        "HTTP/1.1 {status} X\r\ncontent-length: {}\r\nconnection: close\r\n",
        body.len()
    );
    for (name, value) in extra {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes())?;
    out.write_all(&body)?;
    out.flush()
}

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `runtime` binary, run from the workspace root against the store in
/// `dir` and with no host configuration.
pub fn cli(dir: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_runtime"));
    cmd.current_dir(root())
        .env("ORCHESTRATOR_STORE", dir.join("store.redb"))
        .env("ORCHESTRATOR_CONFIG", "tests/fixtures/no-config.yaml")
        .env_remove("RUST_LOG");
    cmd
}

/// Starts `runtime run FILE` against the store in `dir` and returns the
/// child with the execution id it printed first.
pub fn spawn_run(dir: &Path, file: &Path) -> (std::process::Child, String) {
    spawn_cli(dir, &["run", file.to_str().expect("a UTF-8 path")])
}

/// Starts the binary with `args` (a `run`, with any global flags) against
/// the store in `dir` and returns the child with the execution id it
/// printed first.
pub fn spawn_cli(dir: &Path, args: &[&str]) -> (std::process::Child, String) {
    let mut child = cli(dir)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the runtime binary starts");
    let mut stderr = BufReader::new(child.stderr.take().expect("piped"));
    let mut line = String::new();
    stderr.read_line(&mut line).expect("a first line");
    let id = line
        .trim()
        .strip_prefix("execution ")
        .unwrap_or_else(|| panic!("expected the execution id, got: {line}"))
        .to_owned();
    // Keep reading its progress, as a terminal would.
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    (child, id)
}

/// Waits (at most 30 s) until execution `id` in `dir` has logged an event
/// of kind `event` (`wait_started`, say).
pub fn wait_for_event(dir: &Path, id: &str, event: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let out = cli(dir)
            .args(["status", id, "--json"])
            .output()
            .expect("the runtime binary starts");
        let view: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        if view["events"]
            .as_array()
            .is_some_and(|e| e.iter().any(|e| e["event"] == event))
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "execution {id} never logged `{event}`: {view}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Fails the test with the command's stderr unless it succeeded.
pub fn assert_ok(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The recorded execution `id`, as `runtime status --json` shows it.
pub fn status_json(dir: &Path, id: &str) -> serde_json::Value {
    let out = cli(dir)
        .args(["status", id, "--json"])
        .output()
        .expect("the runtime binary starts");
    assert_ok(&out);
    serde_json::from_slice(&out.stdout).expect("status prints JSON")
}

/// One task of a JSON view (`runtime status --json`, `run --output json`).
pub fn task_json<'a>(view: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    view["tasks"]
        .as_array()
        .expect("the view has tasks")
        .iter()
        .find(|t| t["id"] == id)
        .unwrap_or_else(|| panic!("no task `{id}` in the view"))
}

/// Events of one kind, for one task.
pub fn events<'a>(
    view: &'a serde_json::Value,
    kind: &str,
    task: &str,
) -> Vec<&'a serde_json::Value> {
    view["events"]
        .as_array()
        .expect("the view has events")
        .iter()
        .filter(|e| e["event"] == kind && e["task"] == task)
        .collect()
}

/// Runs `yaml` through the binary; returns the execution id and stdout.
pub fn run_cli(dir: &Path, yaml: &str) -> (String, std::process::Output) {
    let file = dir.join("flow.yaml");
    std::fs::write(&file, yaml).expect("writing the workflow");
    let out = cli(dir)
        .args(["run", file.to_str().expect("a UTF-8 path")])
        .output()
        .expect("the runtime binary starts");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let id = stderr
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("execution "))
        .unwrap_or_else(|| panic!("no execution id in: {stderr}"))
        .to_owned();
    (id, out)
}

/// A test guest installed with `/data` granted, so `mark` can count runs.
pub fn install_marking_guest(dir: &Path) -> PathBuf {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).expect("a data directory");
    let grant = format!("/data={}", data.display());
    let out = cli(dir)
        .args([
            "install",
            env!("TEST_GUEST_WASM"),
            "--allow-dir-write",
            &grant,
        ])
        .output()
        .expect("the runtime binary starts");
    assert!(out.status.success(), "{out:?}");
    data
}
