//! What the tests of `runtime serve` share: a running server, workflows,
//! the test guest in upload chunks, certificates, reflection.

use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};

pub(crate) use crate::common;
pub(crate) use orchestrator_host_api::client::Client;
pub(crate) use orchestrator_host_api::pb;
pub(crate) use tokio_stream::StreamExt;
pub(crate) use tonic::Code;

/// A running `runtime serve`, stopped with SIGTERM when dropped.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) url: String,
    pub(crate) admin_key: String,
    /// What it wrote to stderr after it started serving.
    pub(crate) log: Arc<Mutex<Vec<String>>>,
    pub(crate) _dir: Option<tempfile::TempDir>,
}

impl Server {
    pub(crate) fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut server = Self::start_in(dir.path(), None);
        server._dir = Some(dir);
        server
    }

    /// A server on the store in `dir`; `admin_key` is the key an earlier
    /// start printed (a later one prints none).
    pub(crate) fn start_in(dir: &std::path::Path, admin_key: Option<String>) -> Self {
        Self::start_with(dir, admin_key, &[])
    }

    /// The same, with more arguments for `runtime serve`.
    pub(crate) fn start_with(
        dir: &std::path::Path,
        admin_key: Option<String>,
        args: &[&str],
    ) -> Self {
        let listen = if args.contains(&"--listen") {
            &[][..]
        } else {
            &["--listen", "127.0.0.1:0"][..]
        };
        let mut child = common::cli(dir)
            .arg("serve")
            .args(listen)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let (mut admin_key, mut url) = (admin_key, None);
        while url.is_none() {
            let mut line = String::new();
            assert!(stderr.read_line(&mut line).unwrap() > 0, "the server ended");
            if let Some((_, key)) = line.trim().split_once("make others with it): ") {
                admin_key = Some(key.to_owned());
            }
            if let Some(address) = line.trim().strip_prefix("serving on ") {
                url = Some(address.to_owned());
            }
        }
        let log = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in stderr.lines() {
                let Ok(line) = line else { return };
                kept.lock().unwrap().push(line);
            }
        });
        Self {
            child,
            url: url.unwrap(),
            admin_key: admin_key.expect("a first start prints an admin key"),
            log,
            _dir: None,
        }
    }

    pub(crate) async fn client(&self, key: &str) -> Client {
        Client::connect(&self.url, key).await.unwrap()
    }

    /// A new key for `tenant` in `role`.
    pub(crate) async fn key(&self, tenant: &str, role: &str) -> String {
        let admin = self.client(&self.admin_key).await;
        admin
            .admin()
            .create_api_key(pb::CreateApiKeyRequest {
                tenant: tenant.into(),
                role: role.into(),
                name: format!("{tenant} {role}"),
            })
            .await
            .unwrap()
            .into_inner()
            .key
    }

    pub(crate) fn terminate(&mut self) -> std::process::ExitStatus {
        std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) const WAITING: &str = "name: approval\ntasks:\n  - { id: approve, wait: { signal: go, timeout: 1h } }\n  - { id: publish, uses: transform, needs: [approve], with: { by: '${{ tasks.approve.output.by }}', script: '\"approved by \" + by' } }\noutputs:\n  result: ${{ tasks.publish.output }}\n";

pub(crate) fn start(text: &str, id: &str) -> pb::StartRequest {
    pb::StartRequest {
        workflow_text: text.into(),
        execution_id: id.into(),
        ..pb::StartRequest::default()
    }
}

pub(crate) const BROKEN: &str = "name: broken\ntasks:\n  - { id: check, uses: transform, with: { script: 'throw \"broken\"' }, retry: { max_attempts: 1 } }\n  - { id: after, uses: transform, needs: [check], with: { script: '\"after\"' } }\noutputs:\n  got: ${{ tasks.check.output }}\n";
/// The test guest, installed as `name` with `grants`, in chunks.
pub(crate) fn guest_chunks(name: &str, grants: pb::Grants) -> Vec<pb::InstallChunk> {
    let bytes = std::fs::read(env!("TEST_GUEST_WASM")).unwrap();
    let mut chunks = vec![pb::InstallChunk {
        header: Some(pb::InstallHeader {
            name: name.into(),
            version: "1.0.0".into(),
            grants: Some(grants),
            source: String::new(),
        }),
        data: Vec::new(),
    }];
    chunks.extend(bytes.chunks(1 << 20).map(|data| pb::InstallChunk {
        header: None,
        data: data.to_vec(),
    }));
    chunks
}

/// A certificate authority and a server certificate it signed for
/// `localhost` and 127.0.0.1, written to `dir`: the CA's PEM.
pub(crate) fn certificates(dir: &std::path::Path) -> String {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca, rcgen::KeyPair::generate().unwrap()).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
    ca.pem()
}

/// The services the server lists through reflection.
pub(crate) async fn list_services(channel: tonic::transport::Channel) -> Vec<String> {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.next().await.unwrap().unwrap();
    match answer.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            list.service.into_iter().map(|s| s.name).collect()
        }
        other => panic!("not a list of services: {other:?}"),
    }
}

/// Makes the store in `dir` call `models` (the built-in `llm` granted
/// 127.0.0.1) and writes the configuration a server then starts with:
/// the `openai` secret for it, and prices for `echo` high enough that a
/// few tokens cost cents. Returns the configuration's path.
pub(crate) fn calling_models(
    dir: &std::path::Path,
    models: &common::model_server::ModelServer,
) -> String {
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "secrets:\n  openai:\n    value: {}\n    hosts: ['{}']\n    insecure_http: true\n    format: 'Bearer {{}}'\nprices:\n  echo: {{ input: 10000, output: 20000 }}\n",
            common::models::OPENAI_KEY,
            models.addr
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap().to_owned();
    let granted = common::cli(dir)
        .args([
            "--config",
            &config,
            "plugins",
            "grant",
            "llm",
            "--allow-http",
            "127.0.0.1",
        ])
        .output()
        .unwrap();
    common::assert_ok(&granted);
    config
}

/// Starts `request` with `client` and waits (up to 60 s) for its end.
pub(crate) async fn run_to_end(
    client: &Client,
    request: impl tonic::IntoRequest<pb::StartRequest>,
) -> pb::Execution {
    let id = client
        .executions()
        .start(request)
        .await
        .unwrap()
        .into_inner()
        .execution_id;
    client
        .executions()
        .await_result(pb::AwaitRequest {
            execution_id: id,
            timeout_ms: 60_000,
        })
        .await
        .unwrap()
        .into_inner()
}
