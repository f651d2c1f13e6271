//! Who is calling, and may they: the credentials a call can bring, and
//! the permission table.
//!
//! A call authenticates with one of: an API key (`authorization: Bearer
//! oo_...`, [`keys`]), a JWT from the operator's identity provider
//! (`authorization: Bearer eyJ...`, [`jwt`], when configured), or a client
//! certificate over mutual TLS mapped to a principal ([`certs`], when
//! configured). Whichever it is, the tenant and role come from the
//! credential, never from a request field. [`PERMISSIONS`] says, for every
//! RPC, which roles may call it; every handler asks
//! [`Authenticator::authorize`] with its own RPC name first.

pub mod certs;
pub mod jwt;
pub mod keys;

pub use keys::{KeyRing, NewKey, new_key};

use tonic::Status;
use tonic::metadata::MetadataMap;
use tonic::transport::CertificateDer;

use orchestrator_engine::store::keys::ApiKeyRecord;
use orchestrator_engine::tenant::TenantId;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Read executions.
    Viewer,
    /// Read, and start, signal and cancel executions.
    Operator,
    /// Read, and manage plugins and workflows.
    Developer,
    /// The host's operators: everything, and API keys of every tenant.
    Admin,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Operator, Role::Developer, Role::Admin];

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Developer => "developer",
            Self::Admin => "admin",
        }
    }

    /// The role named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

use Role::{Admin, Developer, Operator, Viewer};

/// Which roles may call each RPC, by its full name. An RPC missing here
/// is refused to everyone.
pub const PERMISSIONS: &[(&str, &[Role])] = &[
    ("orchestrator.v1.Executions/Start", &[Operator, Admin]),
    (
        "orchestrator.v1.Executions/Get",
        &[Viewer, Operator, Developer, Admin],
    ),
    (
        "orchestrator.v1.Executions/List",
        &[Viewer, Operator, Developer, Admin],
    ),
    (
        "orchestrator.v1.Executions/Watch",
        &[Viewer, Operator, Developer, Admin],
    ),
    (
        "orchestrator.v1.Executions/AwaitResult",
        &[Viewer, Operator, Developer, Admin],
    ),
    ("orchestrator.v1.Executions/Signal", &[Operator, Admin]),
    ("orchestrator.v1.Executions/Cancel", &[Operator, Admin]),
    (
        "orchestrator.v1.Executions/GetEvents",
        &[Viewer, Operator, Developer, Admin],
    ),
    ("orchestrator.v1.Executions/Resume", &[Operator, Admin]),
    (
        "orchestrator.v1.Executions/ListDeadLetters",
        &[Viewer, Operator, Developer, Admin],
    ),
    (
        "orchestrator.v1.Executions/GetDeadLetter",
        &[Viewer, Operator, Developer, Admin],
    ),
    (
        "orchestrator.v1.Executions/ReplayDeadLetter",
        &[Operator, Admin],
    ),
    ("orchestrator.v1.Executions/Purge", &[Operator, Admin]),
    ("orchestrator.v1.Plugins/Install", &[Developer, Admin]),
    (
        "orchestrator.v1.Plugins/List",
        &[Viewer, Operator, Developer, Admin],
    ),
    (
        "orchestrator.v1.Plugins/Get",
        &[Viewer, Operator, Developer, Admin],
    ),
    ("orchestrator.v1.Plugins/Grant", &[Developer, Admin]),
    ("orchestrator.v1.Plugins/Remove", &[Developer, Admin]),
    ("orchestrator.v1.Workflows/Register", &[Developer, Admin]),
    (
        "orchestrator.v1.Workflows/List",
        &[Viewer, Operator, Developer, Admin],
    ),
    (
        "orchestrator.v1.Workflows/Get",
        &[Viewer, Operator, Developer, Admin],
    ),
    (
        "orchestrator.v1.Workflows/Validate",
        &[Viewer, Operator, Developer, Admin],
    ),
    (
        "orchestrator.v1.Plugins/ListBreakers",
        &[Viewer, Operator, Developer, Admin],
    ),
    ("orchestrator.v1.Admin/CreateApiKey", &[Admin]),
    ("orchestrator.v1.Admin/ListApiKeys", &[Admin]),
    ("orchestrator.v1.Admin/RevokeApiKey", &[Admin]),
    ("orchestrator.v1.Admin/ListAudit", &[Admin]),
    ("orchestrator.v1.Admin/CreateTenant", &[Admin]),
    ("orchestrator.v1.Admin/SetTenantLimits", &[Admin]),
    ("orchestrator.v1.Admin/GetTenant", &[Admin]),
    ("orchestrator.v1.Admin/ListTenants", &[Admin]),
];

/// Whether `role` may call `rpc`.
pub fn permitted(rpc: &str, role: Role) -> bool {
    PERMISSIONS
        .iter()
        .any(|(name, roles)| *name == rpc && roles.contains(&role))
}

/// The caller of one request.
#[derive(Debug, Clone)]
pub struct Principal {
    /// Who, for the audit log: an API key's id, `jwt:<subject>` or
    /// `cert:<name>`.
    pub key_id: String,
    /// The tenant it acts for.
    pub tenant: TenantId,
    /// Its role.
    pub role: Role,
}

/// Every way a caller can prove who it is, on this server.
#[derive(Debug)]
pub struct Authenticator {
    /// The API keys.
    pub keys: KeyRing,
    jwt: Option<jwt::JwtVerifier>,
    certificates: Option<certs::CertificatePrincipals>,
}

impl Authenticator {
    /// API keys from `keys`, and JWTs and client certificates when given.
    pub fn new(
        keys: KeyRing,
        jwt: Option<jwt::JwtVerifier>,
        certificates: Option<certs::CertificatePrincipals>,
    ) -> Self {
        Self {
            keys,
            jwt,
            certificates,
        }
    }

    /// The caller of a request with `metadata` over a connection whose
    /// client presented `peer` (a verified chain, leaf first), if it may
    /// call `rpc`: UNAUTHENTICATED without a valid credential,
    /// PERMISSION_DENIED when its role may not.
    pub fn authorize(
        &self,
        metadata: &MetadataMap,
        peer: Option<&[CertificateDer<'static>]>,
        rpc: &str,
    ) -> Result<Principal, Status> {
        let principal = self.authenticate(metadata, peer)?;
        if !permitted(rpc, principal.role) {
            return Err(Status::permission_denied(format!(
                "the {} role may not call {rpc}",
                principal.role.as_str()
            )));
        }
        Ok(principal)
    }

    /// The caller of a request with `metadata` over a connection whose
    /// client presented `peer`, whatever it may call: UNAUTHENTICATED
    /// without a valid credential.
    pub fn authenticate(
        &self,
        metadata: &MetadataMap,
        peer: Option<&[CertificateDer<'static>]>,
    ) -> Result<Principal, Status> {
        if let Some(token) = bearer(metadata)? {
            if token.starts_with("oo_") {
                return self.keys.authenticate(token);
            }
            return match &self.jwt {
                Some(jwt) => jwt.authenticate(token),
                None => Err(Status::unauthenticated(
                    "the bearer token is not an API key (`oo_...`), and this server takes no JWTs (`server.jwt` in its configuration)",
                )),
            };
        }
        match (peer.and_then(<[_]>::first), &self.certificates) {
            (Some(leaf), Some(certificates)) => certificates.authenticate(leaf),
            _ => Err(Status::unauthenticated(
                "send an API key (or a JWT) as `authorization: Bearer <credential>`",
            )),
        }
    }

    /// The API key a request names, if one by that id exists, whether or
    /// not its secret is right or it was revoked: for auditing a refusal
    /// under the key's tenant.
    pub fn claimed(&self, metadata: &MetadataMap) -> Option<ApiKeyRecord> {
        self.keys.claimed(bearer(metadata).ok()??)
    }
}

/// The credential of an `authorization: Bearer ...` header, if there is
/// one; another kind of authorization is refused.
fn bearer(metadata: &MetadataMap) -> Result<Option<&str>, Status> {
    let Some(header) = metadata.get("authorization") else {
        return Ok(None);
    };
    header
        .to_str()
        .ok()
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(|token| Some(token.trim()))
        .ok_or_else(|| {
            Status::unauthenticated("the authorization header is not `Bearer <credential>`")
        })
}
