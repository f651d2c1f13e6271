//! The OpenAPI 3.1 document of the REST routes, made from the same route
//! table the gateway serves and the same descriptors it transcodes with:
//! each message's schema is its proto3 JSON form (camelCase names, 64-bit
//! integers as strings), each description the proto's own comment.

use std::collections::HashMap;

use prost_reflect::{DescriptorPool, FieldDescriptor, Kind, MessageDescriptor};
use serde_json::{Map, Value, json};

use super::routes::{Route, path_fields};

/// The package whose messages are described.
const PACKAGE: &str = "orchestrator.v1";

/// The document for `routes` over the messages in `pool`.
pub fn document(pool: &DescriptorPool, routes: &[Route]) -> Result<Value, String> {
    let comments = Comments::of(pool);
    let mut paths = Map::new();
    // An RPC behind two routes gets an operation id per route.
    let mut operations = std::collections::HashSet::new();
    for route in routes {
        let (service, method) = route
            .rpc
            .split_once('/')
            .ok_or_else(|| format!("`{}` is not Service/Method", route.rpc))?;
        let method = pool
            .get_service_by_name(service)
            .and_then(|s| s.methods().find(|m| m.name() == method))
            .ok_or_else(|| format!("no RPC `{}` in the API", route.rpc))?;
        let input = method.input();
        let in_path: Vec<&str> = path_fields(route.path).collect();
        let mut parameters = Vec::new();
        for name in &in_path {
            let field = input
                .get_field_by_name(name)
                .ok_or_else(|| format!("{}: {} has no field `{name}`", route.path, input.name()))?;
            parameters.push(json!({
                "name": name,
                "in": "path",
                "required": true,
                "description": comments.of_field(&field),
                "schema": field_schema(&field),
            }));
        }
        if !route.verb.has_body() {
            for field in input.fields().filter(|f| !in_path.contains(&f.name())) {
                parameters.push(json!({
                    "name": field.name(),
                    "in": "query",
                    "description": comments.of_field(&field),
                    "schema": field_schema(&field),
                }));
            }
        }
        let answer = if method.is_server_streaming() {
            parameters.push(json!({
                "name": "Last-Event-ID",
                "in": "header",
                "description": "The number of the last event received: the stream goes on from the next.",
                "schema": {"type": "string"},
            }));
            json!({
                "description": format!(
                    "Server-Sent Events: each event's `data` is a {} as JSON, its `id` the event's number, its name the event's kind; an `error` event carries an Error and ends the stream.",
                    method.output().name()
                ),
                "content": {"text/event-stream": {"schema": {"type": "string"}}},
            })
        } else {
            json!({
                "description": comments.of_message(&method.output()),
                "content": {"application/json": {"schema": reference(&method.output())}},
            })
        };
        let mut operation_id = route
            .rpc
            .trim_start_matches("orchestrator.v1.")
            .replace('/', "_");
        if !operations.insert(operation_id.clone()) {
            operation_id = format!(
                "{operation_id}_at_{}",
                route
                    .path
                    .trim_start_matches("/v1/")
                    .replace(['/', '{', '}'], "_")
            );
        }
        let mut operation = json!({
            "operationId": operation_id,
            "summary": route.summary,
            "description": format!("Calls the gRPC method `{}`. {}", route.rpc, comments.of_method(&method)),
            "tags": [service.trim_start_matches("orchestrator.v1.")],
            "parameters": parameters,
            "responses": {
                "200": answer,
                "default": {
                    "description": "The call failed: the gRPC code's name, the message and the details (which field, which limit, when to retry).",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                },
            },
        });
        if route.verb.has_body() {
            operation["requestBody"] = json!({
                "required": method.is_client_streaming(),
                "content": {"application/json": {"schema": reference(&input)}},
            });
        }
        let entry = paths
            .entry(route.path.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        entry[route.verb.as_str()] = operation;
    }
    let mut schemas = Map::new();
    for message in pool.all_messages().filter(|m| m.package_name() == PACKAGE) {
        let properties: Map<String, Value> = message
            .fields()
            .map(|field| {
                let mut schema = field_schema(&field);
                let said = comments.of_field(&field);
                if !said.is_empty() {
                    schema["description"] = Value::String(said);
                }
                (field.json_name().to_owned(), schema)
            })
            .collect();
        schemas.insert(
            message.name().to_owned(),
            json!({
                "type": "object",
                "description": comments.of_message(&message),
                "properties": properties,
            }),
        );
    }
    schemas.insert("Error".to_owned(), error_schema());
    Ok(json!({
        "openapi": "3.1.0",
        "info": {
            "title": "LLM-Orchestrator control API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The orchestrator.v1 services over HTTP/JSON. The same calls are served over gRPC and gRPC-web on the same port.",
        },
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "An API key: `Authorization: Bearer oo_...`."},
            },
            "schemas": schemas,
        },
    }))
}

fn reference(message: &MessageDescriptor) -> Value {
    json!({"$ref": format!("#/components/schemas/{}", message.name())})
}

/// A field's schema in proto3 JSON.
fn field_schema(field: &FieldDescriptor) -> Value {
    if field.is_map()
        && let Kind::Message(entry) = field.kind()
    {
        let value = entry.map_entry_value_field();
        return json!({"type": "object", "additionalProperties": kind_schema(&value.kind())});
    }
    let one = kind_schema(&field.kind());
    if field.is_list() {
        json!({"type": "array", "items": one})
    } else {
        one
    }
}

fn kind_schema(kind: &Kind) -> Value {
    match kind {
        Kind::Double | Kind::Float => json!({"type": "number"}),
        Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => {
            json!({"type": "integer", "format": "int32"})
        }
        Kind::Uint32 | Kind::Fixed32 => {
            json!({"type": "integer", "format": "int64", "minimum": 0, "maximum": u32::MAX})
        }
        Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
            json!({"type": "string", "format": "int64", "pattern": "^-?[0-9]+$"})
        }
        Kind::Uint64 | Kind::Fixed64 => {
            json!({"type": "string", "format": "uint64", "pattern": "^[0-9]+$"})
        }
        Kind::Bool => json!({"type": "boolean"}),
        Kind::String => json!({"type": "string"}),
        Kind::Bytes => json!({"type": "string", "contentEncoding": "base64"}),
        Kind::Message(message) => reference(message),
        Kind::Enum(values) => {
            json!({"type": "string", "enum": values.values().map(|v| v.name().to_owned()).collect::<Vec<_>>()})
        }
    }
}

fn error_schema() -> Value {
    json!({
        "type": "object",
        "description": "Why a call failed.",
        "required": ["code", "message", "details"],
        "properties": {
            "code": {
                "type": "string",
                "description": "The gRPC status code's name.",
                "enum": [
                    "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
                    "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
                    "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS",
                    "UNAUTHENTICATED",
                ],
            },
            "message": {"type": "string", "description": "What went wrong and what to do."},
            "details": {
                "type": "array",
                "description": "google.rpc details, each tagged with `@type`: BadRequest, QuotaFailure (which limit), RetryInfo (when to try again).",
                "items": {"type": "object"},
            },
        },
    })
}

/// The comments of the protos, by file and descriptor path.
struct Comments(HashMap<(String, Vec<i32>), String>);

impl Comments {
    fn of(pool: &DescriptorPool) -> Self {
        let mut found = HashMap::new();
        for file in pool.files().filter(|f| f.package_name() == PACKAGE) {
            let proto = file.file_descriptor_proto();
            for location in proto
                .source_code_info
                .iter()
                .flat_map(|info| &info.location)
            {
                let said = location
                    .leading_comments
                    .as_deref()
                    .or(location.trailing_comments.as_deref())
                    .unwrap_or_default();
                let said = said
                    .lines()
                    .map(str::trim)
                    .collect::<Vec<_>>()
                    .join(" ")
                    .trim()
                    .to_owned();
                if !said.is_empty() {
                    found.insert((file.name().to_owned(), location.path.clone()), said);
                }
            }
        }
        Self(found)
    }

    fn get(&self, file: &str, path: &[i32]) -> String {
        self.0
            .get(&(file.to_owned(), path.to_vec()))
            .cloned()
            .unwrap_or_default()
    }

    fn of_message(&self, message: &MessageDescriptor) -> String {
        self.get(message.parent_file().name(), message.path())
    }

    fn of_field(&self, field: &FieldDescriptor) -> String {
        self.get(field.parent_file().name(), field.path())
    }

    fn of_method(&self, method: &prost_reflect::MethodDescriptor) -> String {
        self.get(method.parent_file().name(), method.path())
    }
}
