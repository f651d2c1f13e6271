//! A REST call made into the gRPC call it stands for, in process: JSON in
//! (body, query string, path) to a protobuf request, through the very same
//! gRPC services (so the same authentication, permission table, audit and
//! errors), and the protobuf answers back to JSON.
//!
//! Messages are turned to and from JSON by `prost-reflect` from the
//! descriptors the server already serves for reflection: the canonical
//! proto3 JSON mapping (camelCase names, either name accepted on input,
//! 64-bit integers as strings), with no second set of types to keep in
//! step with the protos.

use axum::body::Body;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::HeaderMap;
use http_body_util::BodyExt;
use prost::Message;
use prost_reflect::{
    DeserializeOptions, DynamicMessage, Kind, MessageDescriptor, SerializeOptions,
};
use serde_json::{Map, Value};
use tonic::{Code, Status};
use tower::ServiceExt;

/// The request headers a REST call hands on to the gRPC call.
const CARRIED: &[&str] = &["authorization", "x-request-id", "traceparent", "tracestate"];

/// How answers are written: every field, defaults included, so a client
/// finds `"created": false` rather than nothing.
const ANSWERS: SerializeOptions = SerializeOptions::new().skip_default_fields(false);

/// The request message of `input` from the route's path fields, the query
/// string's pairs and the JSON body (an object, or nothing).
pub fn request(
    input: &MessageDescriptor,
    path: &[(String, String)],
    query: &[(String, String)],
    body: &[u8],
) -> Result<DynamicMessage, Status> {
    let mut fields = if body.iter().all(u8::is_ascii_whitespace) {
        Map::new()
    } else {
        match serde_json::from_slice(body) {
            Ok(Value::Object(fields)) => fields,
            Ok(_) => {
                return Err(Status::invalid_argument(
                    "the request body: send a JSON object of the request's fields",
                ));
            }
            Err(e) => {
                return Err(Status::invalid_argument(format!(
                    "the request body is not JSON: {e}"
                )));
            }
        }
    };
    for (name, text) in query {
        let field = input
            .get_field_by_name(name)
            .or_else(|| input.get_field_by_json_name(name))
            .ok_or_else(|| {
                Status::invalid_argument(format!(
                    "query parameter `{name}`: {} has no such field; it has {}",
                    input.name(),
                    field_names(input)
                ))
            })?;
        let value = match field.kind() {
            Kind::Bool => match text.as_str() {
                "" | "true" | "1" => Value::Bool(true),
                "false" | "0" => Value::Bool(false),
                _ => {
                    return Err(Status::invalid_argument(format!(
                        "query parameter `{name}`: `{text}` is not true or false"
                    )));
                }
            },
            Kind::Message(_) => {
                return Err(Status::invalid_argument(format!(
                    "query parameter `{name}`: a message field goes in a JSON body, not the query string"
                )));
            }
            _ => Value::String(text.clone()),
        };
        let key = field.name().to_owned();
        if field.is_list() {
            match fields
                .entry(key)
                .or_insert_with(|| Value::Array(Vec::new()))
            {
                Value::Array(items) => items.push(value),
                _ => {
                    return Err(Status::invalid_argument(format!(
                        "query parameter `{name}` is also in the body"
                    )));
                }
            }
        } else if fields.insert(key, value).is_some() {
            return Err(Status::invalid_argument(format!(
                "query parameter `{name}` is given twice"
            )));
        }
    }
    for (name, text) in path {
        let camel = input
            .get_field_by_name(name)
            .map(|f| f.json_name().to_owned());
        for given in [Some(name.as_str()), camel.as_deref()]
            .into_iter()
            .flatten()
        {
            if let Some(other) = fields.get(given)
                && other.as_str() != Some(text)
            {
                return Err(Status::invalid_argument(format!(
                    "`{given}` is {other} in the request but `{text}` in its path"
                )));
            }
        }
        if let Some(camel) = &camel
            && camel != name
        {
            fields.remove(camel);
        }
        fields.insert(name.clone(), Value::String(text.clone()));
    }
    DynamicMessage::deserialize_with_options(
        input.clone(),
        Value::Object(fields),
        &DeserializeOptions::new(),
    )
    .map_err(|e| {
        Status::invalid_argument(format!(
            "the request's fields ({}): {e}; it has {}",
            input.name(),
            field_names(input)
        ))
    })
}

fn field_names(message: &MessageDescriptor) -> String {
    let names: Vec<_> = message
        .fields()
        .map(|f| format!("`{}`", f.name()))
        .collect();
    if names.is_empty() {
        "no fields".to_owned()
    } else {
        names.join(", ")
    }
}

/// `message`, decoded as `output`, as JSON.
pub fn answer(output: &MessageDescriptor, message: &[u8]) -> Result<Value, Status> {
    let decoded = DynamicMessage::decode(output.clone(), message)
        .map_err(|e| Status::internal(format!("an answer did not decode: {e}")))?;
    decoded
        .serialize_with_options(serde_json::value::Serializer, &ANSWERS)
        .map_err(|e| Status::internal(format!("an answer did not become JSON: {e}")))
}

/// Calls `rpc` (`orchestrator.v1.Service/Method`) on `grpc` with one
/// request `message`, carrying the caller's credentials and the
/// connection's details (`extensions`: peer address, TLS certificates)
/// over. The answers come from [`Answers::next`].
pub async fn call(
    grpc: &axum::Router,
    rpc: &str,
    headers: &HeaderMap,
    extensions: http::Extensions,
    message: &DynamicMessage,
) -> Result<Answers, Status> {
    let encoded = message.encode_to_vec();
    let length = u32::try_from(encoded.len())
        .map_err(|_| Status::invalid_argument("the request is too large"))?;
    let mut framed = BytesMut::with_capacity(5 + encoded.len());
    framed.put_u8(0);
    framed.put_u32(length);
    framed.extend_from_slice(&encoded);
    let mut request = http::Request::post(format!("/{rpc}"))
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header(http::header::TE, "trailers")
        .body(Body::from(framed.freeze()))
        .map_err(|e| Status::internal(format!("the gRPC request: {e}")))?;
    for name in CARRIED {
        for value in headers.get_all(*name) {
            request.headers_mut().append(*name, value.clone());
        }
    }
    *request.extensions_mut() = extensions;
    let response = grpc
        .clone()
        .oneshot(request)
        .await
        .unwrap_or_else(|never| match never {});
    // A call refused before it answers ends in its headers alone.
    if let Some(status) = Status::from_header_map(response.headers())
        && status.code() != Code::Ok
    {
        return Err(status);
    }
    Ok(Answers {
        body: response.into_body(),
        buffer: BytesMut::new(),
        ended: false,
    })
}

/// The messages a gRPC call answers, then how it ended.
pub struct Answers {
    body: Body,
    buffer: BytesMut,
    ended: bool,
}

impl Answers {
    /// The next message; `None` once the call ended well; an error status
    /// when it ended otherwise.
    pub async fn next(&mut self) -> Option<Result<Bytes, Status>> {
        loop {
            if let Some(message) = self.take() {
                return Some(message);
            }
            if self.ended {
                return None;
            }
            match self.body.frame().await {
                None => {
                    self.ended = true;
                    if !self.buffer.is_empty() {
                        return Some(Err(Status::internal("an answer was cut short")));
                    }
                }
                Some(Err(e)) => {
                    self.ended = true;
                    return Some(Err(Status::internal(format!("the call failed: {e}"))));
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => self.buffer.extend_from_slice(&data),
                    Err(frame) => {
                        self.ended = true;
                        if let Some(status) = frame
                            .trailers_ref()
                            .and_then(Status::from_header_map)
                            .filter(|s| s.code() != Code::Ok)
                        {
                            return Some(Err(status));
                        }
                    }
                },
            }
        }
    }

    /// The one message of a unary call.
    pub async fn only(mut self) -> Result<Bytes, Status> {
        let message = self
            .next()
            .await
            .unwrap_or_else(|| Err(Status::internal("the call answered nothing")))?;
        match self.next().await {
            None => Ok(message),
            Some(Err(status)) => Err(status),
            Some(Ok(_)) => Err(Status::internal("a unary call answered twice")),
        }
    }

    /// A whole message from the buffer, if one is there.
    fn take(&mut self) -> Option<Result<Bytes, Status>> {
        if self.buffer.len() < 5 {
            return None;
        }
        if self.buffer[0] != 0 {
            return Some(Err(Status::internal("a compressed answer")));
        }
        let length = u32::from_be_bytes([
            self.buffer[1],
            self.buffer[2],
            self.buffer[3],
            self.buffer[4],
        ]) as usize;
        if self.buffer.len() < 5 + length {
            return None;
        }
        self.buffer.advance(5);
        Some(Ok(self.buffer.split_to(length).freeze()))
    }
}
