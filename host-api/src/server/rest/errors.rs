//! A gRPC status as an HTTP answer: the status code gRPC-to-HTTP gateways
//! use for it, and a JSON body with the gRPC code's name, the message and
//! the details a client acts on (which field, which limit, when to retry),
//! plus `Retry-After` when waiting helps.

use axum::response::{IntoResponse, Response};
use http::{HeaderValue, StatusCode, header};
use serde_json::{Value, json};
use tonic::{Code, Status};
use tonic_types::StatusExt;

/// The HTTP status for `code`, and the code's name.
pub fn http_of(code: Code) -> (StatusCode, &'static str) {
    match code {
        Code::Ok => (StatusCode::OK, "OK"),
        Code::Cancelled => (
            StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
            "CANCELLED",
        ),
        Code::Unknown => (StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN"),
        Code::InvalidArgument => (StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"),
        Code::DeadlineExceeded => (StatusCode::GATEWAY_TIMEOUT, "DEADLINE_EXCEEDED"),
        Code::NotFound => (StatusCode::NOT_FOUND, "NOT_FOUND"),
        Code::AlreadyExists => (StatusCode::CONFLICT, "ALREADY_EXISTS"),
        Code::PermissionDenied => (StatusCode::FORBIDDEN, "PERMISSION_DENIED"),
        Code::ResourceExhausted => (StatusCode::TOO_MANY_REQUESTS, "RESOURCE_EXHAUSTED"),
        Code::FailedPrecondition => (StatusCode::BAD_REQUEST, "FAILED_PRECONDITION"),
        Code::Aborted => (StatusCode::CONFLICT, "ABORTED"),
        Code::OutOfRange => (StatusCode::BAD_REQUEST, "OUT_OF_RANGE"),
        Code::Unimplemented => (StatusCode::NOT_IMPLEMENTED, "UNIMPLEMENTED"),
        Code::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
        Code::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE"),
        Code::DataLoss => (StatusCode::INTERNAL_SERVER_ERROR, "DATA_LOSS"),
        Code::Unauthenticated => (StatusCode::UNAUTHORIZED, "UNAUTHENTICATED"),
    }
}

/// The JSON of `status`: `{"code", "message", "details"}`, each detail
/// tagged with its `google.rpc` type as gRPC's JSON mapping does.
pub fn body_of(status: &Status) -> Value {
    let found = status.get_error_details();
    let mut details = Vec::new();
    if let Some(bad) = found.bad_request() {
        details.push(json!({
            "@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": bad.field_violations.iter().map(|v| json!({
                "field": v.field,
                "description": v.description,
            })).collect::<Vec<_>>(),
        }));
    }
    if let Some(quota) = found.quota_failure() {
        details.push(json!({
            "@type": "type.googleapis.com/google.rpc.QuotaFailure",
            "violations": quota.violations.iter().map(|v| json!({
                "subject": v.subject,
                "description": v.description,
            })).collect::<Vec<_>>(),
        }));
    }
    if let Some(wait) = found.retry_info().and_then(|r| r.retry_delay) {
        details.push(json!({
            "@type": "type.googleapis.com/google.rpc.RetryInfo",
            "retryDelay": format!("{}s", wait.as_secs_f64()),
        }));
    }
    json!({
        "code": http_of(status.code()).1,
        "message": status.message(),
        "details": details,
    })
}

/// The HTTP answer for `status`.
pub fn response(status: &Status) -> Response {
    let (code, _) = http_of(status.code());
    let mut response = (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        body_of(status).to_string(),
    )
        .into_response();
    let wait = status
        .get_error_details()
        .retry_info()
        .and_then(|r| r.retry_delay);
    if let Some(wait) = wait {
        let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    }
    if status.code() == Code::Unauthenticated {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}
