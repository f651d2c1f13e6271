//! REST/JSON beside gRPC, on the same port: every RPC at an HTTP route
//! ([`routes::ROUTES`]), `Watch` as Server-Sent Events, and the OpenAPI
//! document of it all at [`OPENAPI_PATH`].
//!
//! A REST call is not served by code of its own: it is made into the gRPC
//! call it stands for and sent, in process, through the same gRPC
//! services ([`transcode`]). Authentication, the permission table, the
//! audit log, limits and errors are theirs, so the two ways in cannot
//! drift apart; an error keeps its gRPC code's name and details in a JSON
//! body under the matching HTTP status ([`errors`]).

pub mod errors;
pub mod openapi;
pub mod routes;
mod transcode;

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{FromRequestParts, RawPathParams, Request};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, post, put};
use http::{StatusCode, header};
use prost_reflect::{DescriptorPool, MethodDescriptor};
use serde_json::Value;
use tonic::Status;

use super::Host;
use crate::pb;
use routes::{ROUTES, Route, Verb};

/// Where the OpenAPI document is served (without credentials, like
/// reflection).
pub const OPENAPI_PATH: &str = "/v1/openapi.json";

/// The largest JSON body of a route; a plugin's (its component in
/// base64) may be larger.
fn body_limit(method: &MethodDescriptor) -> usize {
    if method.is_client_streaming() {
        super::plugins::MAX_COMPONENT_BYTES / 3 * 4 + (64 << 10)
    } else {
        super::MAX_REQUEST_BYTES
    }
}

/// What every route's handler shares: the gRPC services to call, the
/// descriptors of their messages, and the host whose credentials decide
/// whether a body is worth reading.
struct Gateway {
    grpc: axum::Router,
    pool: DescriptorPool,
    host: Arc<Host>,
}

/// The REST routes over `grpc` (the router of `host`'s gRPC services), and
/// the OpenAPI document.
pub fn router(grpc: axum::Router, host: Arc<Host>) -> Result<axum::Router, String> {
    let pool = DescriptorPool::decode(pb::FILE_DESCRIPTOR_SET)
        .map_err(|e| format!("the API's descriptors: {e}"))?;
    let document = openapi::document(&pool, ROUTES)?.to_string();
    let gateway = Arc::new(Gateway { grpc, pool, host });
    let mut router = axum::Router::new();
    for route in ROUTES {
        gateway
            .method(route.rpc)
            .map_err(|e| e.message().to_owned())?;
        let shared = Arc::clone(&gateway);
        let handler = move |request: Request| {
            let gateway = Arc::clone(&shared);
            async move { gateway.serve(route, request).await.unwrap_or_else(|e| e) }
        };
        let methods: MethodRouter = match route.verb {
            Verb::Get => get(handler),
            Verb::Post => post(handler),
            Verb::Put => put(handler),
            Verb::Delete => delete(handler),
        };
        router = router.route(route.path, methods);
    }
    Ok(router.route(
        OPENAPI_PATH,
        get(move || async move { ([(header::CONTENT_TYPE, "application/json")], document) }),
    ))
}

impl Gateway {
    /// The descriptor of `rpc` (`orchestrator.v1.Service/Method`).
    fn method(&self, rpc: &str) -> Result<MethodDescriptor, Status> {
        let (service, method) = rpc
            .split_once('/')
            .ok_or_else(|| Status::internal(format!("`{rpc}` is not Service/Method")))?;
        self.pool
            .get_service_by_name(service)
            .and_then(|s| s.methods().find(|m| m.name() == method))
            .ok_or_else(|| Status::internal(format!("no RPC `{rpc}` in the API")))
    }

    /// Answers `request` on `route` by calling its RPC.
    async fn serve(&self, route: &'static Route, request: Request) -> Result<Response, Response> {
        let refused = |status: Status| errors::response(&status);
        let method = self.method(route.rpc).map_err(refused)?;
        let (mut parts, body) = request.into_parts();
        let path: Vec<(String, String)> = RawPathParams::from_request_parts(&mut parts, &())
            .await
            .map_err(IntoResponse::into_response)?
            .iter()
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect();
        let mut query: Vec<(String, String)> =
            form_urlencoded::parse(parts.uri.query().unwrap_or_default().as_bytes())
                .into_owned()
                .collect();
        if method.is_server_streaming()
            && let Some(last) = parts.headers.get("last-event-id")
        {
            // A reconnecting EventSource asks for what follows the last
            // event it had.
            let last: u64 = last
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or_else(|| {
                    refused(Status::invalid_argument(
                        "`Last-Event-ID` is not an event number",
                    ))
                })?;
            query.retain(|(name, _)| name != "from");
            query.push(("from".to_owned(), last.saturating_add(1).to_string()));
        }
        if route.verb.has_body() && !is_json(&parts.headers) {
            // Browsers send other types across sites without asking first;
            // JSON they do not, so a page elsewhere cannot act as a user
            // whose browser holds a client certificate.
            return Err((
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                [(header::CONTENT_TYPE, "application/json")],
                errors::body_of(&Status::invalid_argument(
                    "send the body as JSON, with `content-type: application/json`",
                ))
                .to_string(),
            )
                .into_response());
        }
        let limit = body_limit(&method);
        // A caller the call would refuse gets that refusal (and its audit
        // entry) without the server reading, let alone parsing, its body
        // or its parameters.
        let admitted = self
            .host
            .admits(&parts.headers, &parts.extensions, route.rpc);
        let body = if route.verb.has_body() && admitted {
            axum::body::to_bytes(body, limit).await.map_err(|_| {
                (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    [(header::CONTENT_TYPE, "application/json")],
                    errors::body_of(&Status::invalid_argument(format!(
                        "the request body is larger than {limit} bytes"
                    )))
                    .to_string(),
                )
                    .into_response()
            })?
        } else {
            bytes::Bytes::new()
        };
        let message = if admitted {
            transcode::request(&method.input(), &path, &query, &body).map_err(refused)?
        } else {
            prost_reflect::DynamicMessage::new(method.input())
        };
        let answers = transcode::call(
            &self.grpc,
            route.rpc,
            &parts.headers,
            parts.extensions,
            &message,
        )
        .await
        .map_err(refused)?;
        let output = method.output();
        if method.is_server_streaming() {
            return Ok(events(answers, output));
        }
        let answer = answers.only().await.map_err(refused)?;
        let json = transcode::answer(&output, &answer).map_err(refused)?;
        Ok((
            [(header::CONTENT_TYPE, "application/json")],
            json.to_string(),
        )
            .into_response())
    }
}

/// Whether `headers` say the body is JSON.
fn is_json(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
}

/// A server stream's messages as Server-Sent Events: each message's
/// `number` is the event's id (what `Last-Event-ID` gives back), its
/// `kind` the event's name, the message's JSON its data. A call that
/// fails midway ends with an `error` event carrying the error's JSON.
fn events(answers: transcode::Answers, output: prost_reflect::MessageDescriptor) -> Response {
    let stream = futures_util::stream::unfold(Some(answers), move |answers| {
        let output = output.clone();
        async move {
            let mut answers = answers?;
            let event = match answers.next().await? {
                Ok(message) => match transcode::answer(&output, &message) {
                    Ok(json) => {
                        let mut event = Event::default().data(json.to_string());
                        if let Some(number) = json.get("number").and_then(text) {
                            event = event.id(number);
                        }
                        if let Some(kind) = json.get("kind").and_then(text) {
                            event = event.event(kind);
                        }
                        event
                    }
                    Err(status) => failed(&status),
                },
                Err(status) => failed(&status),
            };
            Some((Ok::<_, Infallible>(event), Some(answers)))
        }
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

fn failed(status: &Status) -> Event {
    Event::default()
        .event("error")
        .data(errors::body_of(status).to_string())
}

/// A JSON string or number as text.
fn text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}
