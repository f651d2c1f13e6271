//! The same services over REST/JSON, Server-Sent Events and gRPC-web, on
//! the gRPC port: HTTP/1.1 requests from a plain HTTP client.

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use prost::Message;
use serde_json::{Value, json};

use crate::harness::*;
use orchestrator_host_api::server::auth::PERMISSIONS;
use orchestrator_host_api::server::rest::routes::ROUTES;

/// An HTTP/1.1 answer: status, headers, body.
pub(crate) struct Answer {
    pub(crate) status: u16,
    headers: http::HeaderMap,
    pub(crate) body: hyper::body::Incoming,
}

impl Answer {
    pub(crate) async fn bytes(self) -> Bytes {
        self.body.collect().await.unwrap().to_bytes()
    }

    async fn json(self) -> (u16, Value) {
        let status = self.status;
        let bytes = self.bytes().await;
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&bytes)));
        (status, value)
    }
}

/// Sends one request on a connection of its own.
pub(crate) async fn send(
    server: &Server,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Answer {
    let address = server.url.trim_start_matches("http://");
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let mut request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", address);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = sender
        .send_request(request.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap();
    let (parts, body) = response.into_parts();
    Answer {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}

/// A JSON call with `key` (none when empty).
async fn call(server: &Server, key: &str, method: &str, path: &str, body: Value) -> (u16, Value) {
    let bearer = format!("Bearer {key}");
    let mut headers = vec![("content-type", "application/json")];
    if !key.is_empty() {
        headers.push(("authorization", bearer.as_str()));
    }
    let body = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    send(server, method, path, &headers, body)
        .await
        .json()
        .await
}

/// The Server-Sent Events of `path` until the stream ends: (id, name, data).
async fn events(
    server: &Server,
    key: &str,
    path: &str,
    last: Option<u64>,
) -> Vec<(u64, String, Value)> {
    let bearer = format!("Bearer {key}");
    let last = last.map(|n| n.to_string());
    let mut headers = vec![
        ("authorization", bearer.as_str()),
        ("accept", "text/event-stream"),
    ];
    if let Some(last) = &last {
        headers.push(("last-event-id", last.as_str()));
    }
    let answer = send(server, "GET", path, &headers, Vec::new()).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.headers["content-type"], "text/event-stream");
    let text = tokio::time::timeout(std::time::Duration::from_secs(60), answer.bytes())
        .await
        .expect("the stream ends with the execution");
    let text = String::from_utf8(text.to_vec()).unwrap();
    let mut found = Vec::new();
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        let (mut id, mut name, mut data) = (None, String::new(), String::new());
        for line in block.lines() {
            if let Some(v) = line
                .strip_prefix("id: ")
                .or_else(|| line.strip_prefix("id:"))
            {
                id = Some(v.parse().unwrap());
            } else if let Some(v) = line
                .strip_prefix("event: ")
                .or_else(|| line.strip_prefix("event:"))
            {
                name = v.to_owned();
            } else if let Some(v) = line
                .strip_prefix("data: ")
                .or_else(|| line.strip_prefix("data:"))
            {
                data.push_str(v);
            }
        }
        if data.is_empty() {
            continue; // a keep-alive comment
        }
        let data: Value = serde_json::from_str(&data).unwrap();
        assert_ne!(name, "error", "the stream failed: {data}");
        found.push((id.expect("every event has an id"), name, data));
    }
    found
}

/// Every field of `answer` is a property of the schema `name` of the
/// OpenAPI `document`, and 64-bit integers come as strings as it says.
fn conforms(document: &Value, name: &str, answer: &Value) {
    let schema = &document["components"]["schemas"][name];
    let properties = schema["properties"]
        .as_object()
        .unwrap_or_else(|| panic!("no schema {name}"));
    for (field, value) in answer.as_object().unwrap() {
        let property = properties
            .get(field)
            .unwrap_or_else(|| panic!("{name}.{field} is not in the document"));
        let kind = property["type"].as_str().unwrap_or("object");
        let fits = match kind {
            "string" => value.is_string(),
            "boolean" => value.is_boolean(),
            "integer" | "number" => value.is_number(),
            "array" => value.is_array(),
            _ => value.is_object() || value.is_null(),
        };
        assert!(fits, "{name}.{field} = {value} is not a {kind}");
    }
}

const HELLO: &str = "name: hello\ntasks:\n  - { id: greet, uses: transform, with: { script: '\"hello\"' } }\noutputs:\n  said: ${{ tasks.greet.output }}\n";

#[tokio::test(flavor = "multi_thread")]
async fn rest_json_reaches_the_same_services_with_the_same_keys() {
    let server = Server::start();
    let operator = server.key("acme", "operator").await;
    let viewer = server.key("acme", "viewer").await;
    let stranger = server.key("globex", "operator").await;

    // The document is served without credentials, and names every RPC.
    let (status, document) = call(&server, "", "GET", "/v1/openapi.json", Value::Null).await;
    assert_eq!(status, 200);
    assert_eq!(document["openapi"], "3.1.0");
    for (rpc, _) in PERMISSIONS {
        let route = ROUTES
            .iter()
            .find(|r| r.rpc == *rpc)
            .unwrap_or_else(|| panic!("{rpc} has no REST route"));
        let operation = &document["paths"][route.path][route.verb.as_str()];
        assert!(
            operation["operationId"].is_string(),
            "{} {} is not in the document",
            route.verb.as_str(),
            route.path
        );
    }

    // No key, a viewer's key, another tenant's key: refused as over gRPC.
    let start = json!({"workflowText": WAITING, "executionId": "rest-1"});
    let (status, refused) = call(&server, "", "POST", "/v1/executions", start.clone()).await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (401, Some("UNAUTHENTICATED"))
    );
    let (status, refused) = call(&server, &viewer, "POST", "/v1/executions", start.clone()).await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (403, Some("PERMISSION_DENIED"))
    );

    let (status, started) = call(&server, &operator, "POST", "/v1/executions", start.clone()).await;
    assert_eq!(status, 200, "{started}");
    assert_eq!(started, json!({"executionId": "rest-1", "created": true}));
    conforms(&document, "StartResponse", &started);
    let (status, again) = call(&server, &operator, "POST", "/v1/executions", start).await;
    assert_eq!((status, again["created"].as_bool()), (200, Some(false)));

    let (status, hidden) = call(
        &server,
        &stranger,
        "GET",
        "/v1/executions/rest-1",
        Value::Null,
    )
    .await;
    assert_eq!(
        (status, hidden["code"].as_str()),
        (404, Some("NOT_FOUND")),
        "{hidden}"
    );

    // The path names the execution; a body that says otherwise is refused.
    let (status, refused) = call(
        &server,
        &operator,
        "POST",
        "/v1/executions/rest-1/signal",
        json!({"executionId": "rest-2", "name": "go"}),
    )
    .await;
    assert_eq!(status, 400, "{refused}");
    assert!(
        refused["message"].as_str().unwrap().contains("rest-2"),
        "{refused}"
    );

    let (status, signalled) = call(
        &server,
        &operator,
        "POST",
        "/v1/executions/rest-1/signal",
        json!({"name": "go", "payloadJson": "{\"by\": \"rest\"}", "requestId": "sig-1"}),
    )
    .await;
    assert_eq!(status, 200, "{signalled}");
    let (status, ended) = call(
        &server,
        &viewer,
        "GET",
        "/v1/executions/rest-1/result?timeoutMs=30000",
        Value::Null,
    )
    .await;
    assert_eq!(status, 200, "{ended}");
    assert_eq!(ended["status"], "succeeded", "{ended}");
    let outputs: Value = serde_json::from_str(ended["outputsJson"].as_str().unwrap()).unwrap();
    assert_eq!(outputs["result"], "approved by rest");
    conforms(&document, "Execution", &ended);
    assert!(
        ended["createdAtMs"].is_string(),
        "64-bit integers are strings"
    );

    // Watching: every event once, in order; Last-Event-ID goes on from
    // the next one.
    let all = events(&server, &viewer, "/v1/executions/rest-1/watch", None).await;
    let numbers: Vec<u64> = all.iter().map(|(id, _, _)| *id).collect();
    assert_eq!(numbers, (0..all.len() as u64).collect::<Vec<_>>());
    assert_eq!(all.last().unwrap().1, "execution_finished");
    for (id, name, data) in &all {
        assert_eq!(data["number"], id.to_string());
        assert_eq!(data["kind"], name.as_str());
        conforms(&document, "Event", data);
    }
    let middle = all.len() as u64 / 2;
    let rest = events(
        &server,
        &viewer,
        "/v1/executions/rest-1/watch",
        Some(middle),
    )
    .await;
    assert_eq!(rest, all[middle as usize + 1..].to_vec());

    // The audit log has the REST start, like any other.
    let (status, audit) = call(
        &server,
        &server.admin_key,
        "GET",
        "/v1/audit?tenant=acme",
        Value::Null,
    )
    .await;
    assert_eq!(status, 200, "{audit}");
    let entries = audit["entries"].as_array().unwrap();
    assert!(
        entries
            .iter()
            .any(|e| e["rpc"] == "orchestrator.v1.Executions/Start"
                && e["target"] == "rest-1"
                && e["outcome"] == "OK"),
        "{audit}"
    );
    assert!(
        entries
            .iter()
            .any(|e| e["rpc"] == "orchestrator.v1.Executions/Start"
                && e["outcome"] == "PERMISSION_DENIED"),
        "the viewer's refused start is audited: {audit}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rest_errors_say_what_is_wrong_and_what_to_do() {
    let server = Server::start();
    let developer = server.key("acme", "developer").await;
    let operator = server.key("acme", "operator").await;

    // Workflow diagnostics with line and column, as over gRPC.
    let (status, refused) = call(
        &server,
        &developer,
        "POST",
        "/v1/workflows:validate",
        json!({"text": "name: x\ntasks:\n  - { id: a, uses: transform, needs: [nope] }\n", "label": "flow.yaml"}),
    )
    .await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (400, Some("INVALID_ARGUMENT")),
        "{refused}"
    );
    let message = refused["message"].as_str().unwrap();
    assert!(message.contains("flow.yaml:3:"), "{message}");
    assert!(message.contains("nope"), "{message}");

    // A field the request has not, in the body or the query string.
    let (status, refused) = call(
        &server,
        &operator,
        "POST",
        "/v1/executions",
        json!({"workflowTxt": HELLO}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        refused["message"].as_str().unwrap().contains("workflowTxt"),
        "{refused}"
    );
    let (status, refused) = call(
        &server,
        &operator,
        "GET",
        "/v1/executions?color=red",
        Value::Null,
    )
    .await;
    assert_eq!(status, 400);
    let message = refused["message"].as_str().unwrap();
    assert!(
        message.contains("color") && message.contains("page_size"),
        "{message}"
    );
    let (status, refused) = call(
        &server,
        &operator,
        "GET",
        "/v1/executions/x?events=maybe",
        Value::Null,
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        refused["message"].as_str().unwrap().contains("maybe"),
        "{refused}"
    );

    // A body over the limit.
    let huge = json!({"workflowText": "x".repeat(5 << 20)});
    let (status, refused) = call(&server, &operator, "POST", "/v1/executions", huge).await;
    assert_eq!(status, 413, "{refused}");
    assert!(
        refused["message"].as_str().unwrap().contains("larger than"),
        "{refused}"
    );

    // Without a credential the same body is not read: the refusal is the
    // credential's. A viewer's refused call is not read either.
    let huge = json!({"workflowText": "x".repeat(5 << 20)});
    let (status, refused) = call(&server, "", "POST", "/v1/executions", huge.clone()).await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (401, Some("UNAUTHENTICATED"))
    );
    let viewer = server.key("acme", "viewer").await;
    let (status, refused) = call(&server, &viewer, "POST", "/v1/executions", huge).await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (403, Some("PERMISSION_DENIED"))
    );

    // A body that is not declared JSON is refused: browsers send those to
    // other sites without asking first.
    let bearer = format!("Bearer {operator}");
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let mut headers = vec![("authorization", bearer.as_str())];
        headers.extend(content_type.map(|t| ("content-type", t)));
        let (status, refused) = send(
            &server,
            "POST",
            "/v1/executions",
            &headers,
            json!({"workflowText": HELLO}).to_string().into_bytes(),
        )
        .await
        .json()
        .await;
        assert_eq!(status, 415, "{content_type:?}: {refused}");
        assert!(
            refused["message"]
                .as_str()
                .unwrap()
                .contains("application/json"),
            "{refused}"
        );
    }

    // A route that does not exist.
    let (status, missing) = call(&server, &operator, "GET", "/v2/things", Value::Null).await;
    assert_eq!((status, missing["code"].as_str()), (404, Some("NOT_FOUND")));
    assert!(
        missing["message"]
            .as_str()
            .unwrap()
            .contains("/v1/openapi.json")
    );

    // A quota: which limit, in the details gRPC carries.
    let (status, made) = call(
        &server,
        &server.admin_key,
        "POST",
        "/v1/tenants",
        json!({"tenant": "small", "limits": {"plugins": 0}}),
    )
    .await;
    assert_eq!(status, 200, "{made}");
    let small = server.key("small", "developer").await;
    let component = std::fs::read(env!("TEST_GUEST_WASM")).unwrap();
    let install = json!({
        "header": {"name": "guest", "version": "1.0.0", "grants": {}},
        "data": base64::engine::general_purpose::STANDARD.encode(&component),
    });
    let (status, refused) = call(&server, &small, "POST", "/v1/plugins", install.clone()).await;
    assert_eq!(
        (status, refused["code"].as_str()),
        (429, Some("RESOURCE_EXHAUSTED")),
        "{refused}"
    );
    assert_eq!(
        refused["details"][0]["@type"],
        "type.googleapis.com/google.rpc.QuotaFailure"
    );
    assert_eq!(
        refused["details"][0]["violations"][0]["subject"],
        "quotas.plugins"
    );

    // The same upload where there is room installs the plugin whole.
    let (status, plugin) = call(&server, &developer, "POST", "/v1/plugins", install).await;
    assert_eq!(status, 200, "{plugin}");
    use sha2::Digest as _;
    let digest: String = sha2::Sha256::digest(&component)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(plugin["digest"], digest.as_str());
    let (status, listed) = call(
        &server,
        &operator,
        "GET",
        "/v1/plugins/guest@1.0.0",
        Value::Null,
    )
    .await;
    assert_eq!(
        (status, listed["digest"].as_str()),
        (200, Some(digest.as_str())),
        "{listed}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn grpc_web_calls_answer_on_the_same_port() {
    let server = Server::start();
    let operator = server.key("acme", "operator").await;
    let client = server.client(&operator).await;
    client
        .executions()
        .start(start(HELLO, "web-1"))
        .await
        .unwrap();

    let grpc_web = |key: String| {
        let server = &server;
        async move {
            let message = pb::AwaitRequest {
                execution_id: "web-1".into(),
                timeout_ms: 30_000,
            }
            .encode_to_vec();
            let mut framed = vec![0u8];
            framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
            framed.extend_from_slice(&message);
            let bearer = format!("Bearer {key}");
            let answer = send(
                server,
                "POST",
                "/orchestrator.v1.Executions/AwaitResult",
                &[
                    ("content-type", "application/grpc-web+proto"),
                    ("x-grpc-web", "1"),
                    ("authorization", &bearer),
                ],
                framed,
            )
            .await;
            assert_eq!(answer.status, 200);
            assert_eq!(answer.headers["content-type"], "application/grpc-web+proto");
            let headers = answer.headers.clone();
            (headers, answer.bytes().await)
        }
    };

    let (_, body) = grpc_web(operator.clone()).await;
    // A message frame, then the trailers frame (flag 0x80).
    assert_eq!(body[0], 0);
    let length = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
    let execution = pb::Execution::decode(&body[5..5 + length]).unwrap();
    assert_eq!(execution.id, "web-1");
    assert_eq!(execution.status, "succeeded");
    let trailers = &body[5 + length..];
    assert_eq!(trailers[0], 0x80);
    let trailers = String::from_utf8_lossy(&trailers[5..]).to_lowercase();
    assert!(trailers.contains("grpc-status:0"), "{trailers}");

    // A bad key is refused the gRPC way.
    let (headers, body) = grpc_web("oo_0000000000000000_00".into()).await;
    let refused = headers
        .get("grpc-status")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_else(|| String::from_utf8_lossy(&body).to_lowercase());
    assert!(refused.contains("16"), "UNAUTHENTICATED: {refused}");
}
