//! Which HTTP route calls which RPC: the whole REST/JSON mapping, in one
//! table. The gateway ([`super::router`]) and the OpenAPI document
//! ([`super::openapi`]) are both made from it, so they cannot disagree.
//!
//! A route's `{name}` segments fill the request field of that name; the
//! other fields come from the JSON body (POST, PUT) or from the query
//! string (GET, DELETE). A server-streaming RPC (`Watch`) answers as
//! Server-Sent Events.

/// An HTTP method a route answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// Reads; fields from the query string.
    Get,
    /// Creates or acts; fields from the JSON body.
    Post,
    /// Replaces; fields from the JSON body.
    Put,
    /// Removes; fields from the query string.
    Delete,
}

impl Verb {
    /// Whether the request's fields come in a JSON body.
    pub fn has_body(self) -> bool {
        matches!(self, Self::Post | Self::Put)
    }

    /// Its name in lower case, as OpenAPI writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::Post => "post",
            Self::Put => "put",
            Self::Delete => "delete",
        }
    }
}

/// One route.
#[derive(Debug)]
pub struct Route {
    /// Its method.
    pub verb: Verb,
    /// Its path, with `{field}` segments.
    pub path: &'static str,
    /// The RPC it calls: `orchestrator.v1.Service/Method`.
    pub rpc: &'static str,
    /// One line on what it does.
    pub summary: &'static str,
}

const fn route(verb: Verb, path: &'static str, rpc: &'static str, summary: &'static str) -> Route {
    Route {
        verb,
        path,
        rpc,
        summary,
    }
}

use Verb::{Delete, Get, Post, Put};

/// Every route. Every RPC of `orchestrator.v1` has one (a test holds to it).
pub const ROUTES: &[Route] = &[
    route(
        Post,
        "/v1/executions",
        "orchestrator.v1.Executions/Start",
        "Start an execution of a registered workflow or of workflow text.",
    ),
    route(
        Get,
        "/v1/executions",
        "orchestrator.v1.Executions/List",
        "List executions, newest first, a page at a time.",
    ),
    route(
        Get,
        "/v1/executions/{execution_id}",
        "orchestrator.v1.Executions/Get",
        "An execution: its state, tasks and outputs.",
    ),
    route(
        Get,
        "/v1/executions/{execution_id}/events",
        "orchestrator.v1.Executions/GetEvents",
        "A page of an execution's events, from a number on.",
    ),
    route(
        Get,
        "/v1/executions/{execution_id}/watch",
        "orchestrator.v1.Executions/Watch",
        "An execution's events as Server-Sent Events, live until it ends; `Last-Event-ID` resumes.",
    ),
    route(
        Get,
        "/v1/executions/{execution_id}/result",
        "orchestrator.v1.Executions/AwaitResult",
        "Wait (up to `timeout_ms`) for an execution to end.",
    ),
    route(
        Post,
        "/v1/executions/{execution_id}/signal",
        "orchestrator.v1.Executions/Signal",
        "Send a signal to an execution.",
    ),
    route(
        Post,
        "/v1/executions/{execution_id}/cancel",
        "orchestrator.v1.Executions/Cancel",
        "Cancel an execution.",
    ),
    route(
        Post,
        "/v1/executions/{execution_id}/resume",
        "orchestrator.v1.Executions/Resume",
        "Resume an interrupted execution.",
    ),
    route(
        Get,
        "/v1/dead-letters",
        "orchestrator.v1.Executions/ListDeadLetters",
        "Tasks that failed for good.",
    ),
    route(
        Get,
        "/v1/dead-letters/{id}",
        "orchestrator.v1.Executions/GetDeadLetter",
        "One dead letter, open, replayed or purged, with its failed attempts.",
    ),
    route(
        Post,
        "/v1/dead-letters/{id}/replay",
        "orchestrator.v1.Executions/ReplayDeadLetter",
        "Run a dead letter's task again in its execution.",
    ),
    route(
        Post,
        "/v1/dead-letters:purge",
        "orchestrator.v1.Executions/Purge",
        "Remove dead letters.",
    ),
    route(
        Post,
        "/v1/plugins",
        "orchestrator.v1.Plugins/Install",
        "Install a plugin: the header and the whole component (base64) in one body.",
    ),
    route(
        Get,
        "/v1/plugins",
        "orchestrator.v1.Plugins/List",
        "Installed plugins.",
    ),
    route(
        Get,
        "/v1/plugins/{plugin}",
        "orchestrator.v1.Plugins/Get",
        "One installed plugin (`name` or `name@version`).",
    ),
    route(
        Put,
        "/v1/plugins/{plugin}/grants",
        "orchestrator.v1.Plugins/Grant",
        "Set what a plugin is granted.",
    ),
    route(
        Delete,
        "/v1/plugins/{plugin}",
        "orchestrator.v1.Plugins/Remove",
        "Remove a plugin.",
    ),
    route(
        Get,
        "/v1/breakers",
        "orchestrator.v1.Plugins/ListBreakers",
        "The tenant's circuit breakers: what each guards and where it stands.",
    ),
    route(
        Post,
        "/v1/workflows",
        "orchestrator.v1.Workflows/Register",
        "Register a workflow (a new version when its text changed).",
    ),
    route(
        Get,
        "/v1/workflows",
        "orchestrator.v1.Workflows/List",
        "Registered workflows.",
    ),
    route(
        Get,
        "/v1/workflows/{name}",
        "orchestrator.v1.Workflows/Get",
        "A registered workflow (its latest version unless `version` is given).",
    ),
    route(
        Post,
        "/v1/workflows:validate",
        "orchestrator.v1.Workflows/Validate",
        "Check workflow text without registering it.",
    ),
    route(
        Post,
        "/v1/api-keys",
        "orchestrator.v1.Admin/CreateApiKey",
        "Make an API key (its secret is shown this once).",
    ),
    route(
        Get,
        "/v1/api-keys",
        "orchestrator.v1.Admin/ListApiKeys",
        "API keys, without secrets.",
    ),
    route(
        Delete,
        "/v1/api-keys/{key_id}",
        "orchestrator.v1.Admin/RevokeApiKey",
        "Revoke an API key.",
    ),
    route(
        Get,
        "/v1/audit",
        "orchestrator.v1.Admin/ListAudit",
        "The audit log, a page at a time.",
    ),
    route(
        Post,
        "/v1/tenants",
        "orchestrator.v1.Admin/CreateTenant",
        "Create a tenant.",
    ),
    route(
        Get,
        "/v1/tenants",
        "orchestrator.v1.Admin/ListTenants",
        "Tenants.",
    ),
    route(
        Get,
        "/v1/tenant",
        "orchestrator.v1.Admin/GetTenant",
        "The caller's tenant: its limits and usage.",
    ),
    route(
        Get,
        "/v1/tenants/{tenant}",
        "orchestrator.v1.Admin/GetTenant",
        "A tenant: its limits and usage.",
    ),
    route(
        Put,
        "/v1/tenants/{tenant}/limits",
        "orchestrator.v1.Admin/SetTenantLimits",
        "Set a tenant's limits.",
    ),
];

/// The names of a path's `{field}` segments, in order.
pub fn path_fields(path: &str) -> impl Iterator<Item = &str> {
    path.split('/')
        .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
}
