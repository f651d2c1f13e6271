//! The `server:` section of the host's configuration file: who may call
//! besides API-key holders (JWTs, client certificates) and the bootstrap
//! admin key. The engine reads the rest of the same file.
//!
//! ```yaml
//! server:
//!   bootstrap_key_file: /run/secrets/orchestrator-admin-key
//!   jwt:
//!     issuer: https://id.example.com/
//!     audience: orchestrator
//!     keys: [{ file: idp.pem, algorithm: ES256, kid: 2026-11 }]
//!     jwks_file: /etc/orchestrator/jwks.json
//!     tenant_claim: tenant      # the default
//!     role_claim: role          # the default
//!     leeway_seconds: 30        # the default
//!   client_certificates:
//!     ca: clients-ca.pem
//!     principals:
//!       - { name: ci-runner, tenant: acme, role: operator }
//! ```
//!
//! Relative paths are relative to the configuration file.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;

use super::auth::Role;
use super::auth::certs::CertificatePrincipals;
use super::auth::jwt::{JwtRules, JwtVerifier, VerifyingKey};
use orchestrator_engine::tenant::TenantId;

/// The environment variable that may hold the bootstrap admin key.
pub const BOOTSTRAP_KEY_ENV: &str = "ORCHESTRATOR_BOOTSTRAP_KEY";

#[derive(Deserialize, Default)]
struct File {
    #[serde(default)]
    server: Section,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Section {
    #[serde(default)]
    bootstrap_key_file: Option<PathBuf>,
    #[serde(default)]
    jwt: Option<JwtSpec>,
    #[serde(default)]
    client_certificates: Option<CertificatesSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JwtSpec {
    issuer: String,
    audience: String,
    #[serde(default)]
    keys: Vec<KeySpec>,
    #[serde(default)]
    jwks_file: Option<PathBuf>,
    #[serde(default = "tenant_claim")]
    tenant_claim: String,
    #[serde(default = "role_claim")]
    role_claim: String,
    #[serde(default = "leeway")]
    leeway_seconds: u64,
}

fn tenant_claim() -> String {
    "tenant".to_owned()
}

fn role_claim() -> String {
    "role".to_owned()
}

fn leeway() -> u64 {
    30
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeySpec {
    file: PathBuf,
    algorithm: String,
    #[serde(default)]
    kid: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CertificatesSpec {
    ca: PathBuf,
    principals: Vec<PrincipalSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PrincipalSpec {
    name: String,
    tenant: String,
    role: String,
}

/// Client certificates the server asks for and whom they stand for.
#[derive(Debug)]
pub struct ClientCertificates {
    /// The CA clients' certificates must chain to, PEM.
    pub ca: Vec<u8>,
    /// Whom each certificate name stands for.
    pub principals: CertificatePrincipals,
}

/// The server's section, read and checked.
#[derive(Debug, Default)]
pub struct ServerConfig {
    /// JWTs taken, if any.
    pub jwt: Option<JwtVerifier>,
    /// Client certificates taken, if any.
    pub client_certificates: Option<ClientCertificates>,
    /// The admin key to keep on a first start instead of making one, and
    /// where it came from.
    pub bootstrap_key: Option<(String, String)>,
}

impl ServerConfig {
    /// Reads the `server:` section of the configuration at `path` (a
    /// missing file is no section unless `required`), and the bootstrap
    /// key from [`BOOTSTRAP_KEY_ENV`] when the file names none.
    pub fn load(path: &Path, required: bool) -> Result<Self, String> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => String::new(),
            Err(e) => {
                return Err(format!(
                    "cannot read the configuration {}: {e}",
                    path.display()
                ));
            }
        };
        let blank = text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim().starts_with('#'));
        let file: File = if blank {
            File::default()
        } else {
            serde_saphyr::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?
        };
        let base = path.parent().unwrap_or(Path::new("."));
        let mut config = file.server.resolve(base, &path.display().to_string())?;
        if config.bootstrap_key.is_none()
            && let Ok(key) = std::env::var(BOOTSTRAP_KEY_ENV)
        {
            config.bootstrap_key = Some((key.trim().to_owned(), BOOTSTRAP_KEY_ENV.to_owned()));
        }
        Ok(config)
    }
}

impl Section {
    fn resolve(self, base: &Path, file: &str) -> Result<ServerConfig, String> {
        let at = |p: &Path| base.join(p);
        let read = |field: &str, p: &Path| {
            std::fs::read(at(p)).map_err(|e| {
                format!(
                    "{file}: `server.{field}`: cannot read {}: {e}",
                    at(p).display()
                )
            })
        };
        let bootstrap_key = match &self.bootstrap_key_file {
            Some(p) => {
                let key = String::from_utf8(read("bootstrap_key_file", p)?)
                    .map_err(|_| format!("{file}: `server.bootstrap_key_file` is not text"))?;
                Some((key.trim().to_owned(), at(p).display().to_string()))
            }
            None => None,
        };
        let jwt = match self.jwt {
            Some(spec) => {
                let mut keys = Vec::new();
                for (i, key) in spec.keys.iter().enumerate() {
                    let field = format!("jwt.keys[{i}]");
                    let algorithm = jsonwebtoken::Algorithm::from_str(&key.algorithm).map_err(|_| {
                        format!("{file}: `server.{field}.algorithm`: `{}` is not an algorithm (RS256, PS256, ES256, ES384, EdDSA, ...)", key.algorithm)
                    })?;
                    let pem = read(&format!("{field}.file"), &key.file)?;
                    keys.push(
                        VerifyingKey::from_pem(&pem, algorithm, key.kid.clone())
                            .map_err(|e| format!("{file}: `server.{field}`: {e}"))?,
                    );
                }
                let rules = JwtRules {
                    issuer: spec.issuer,
                    audience: spec.audience,
                    tenant_claim: spec.tenant_claim,
                    role_claim: spec.role_claim,
                    leeway: Duration::from_secs(spec.leeway_seconds),
                };
                Some(
                    JwtVerifier::new(rules, keys, spec.jwks_file.map(|p| at(&p)))
                        .map_err(|e| format!("{file}: `server.jwt`: {e}"))?,
                )
            }
            None => None,
        };
        let client_certificates = match self.client_certificates {
            Some(spec) => {
                let ca = read("client_certificates.ca", &spec.ca)?;
                let mut principals = CertificatePrincipals::default();
                for (i, p) in spec.principals.iter().enumerate() {
                    let field = format!("{file}: `server.client_certificates.principals[{i}]`");
                    let tenant =
                        TenantId::new(&p.tenant).map_err(|e| format!("{field}.tenant: {e}"))?;
                    let role = Role::parse(&p.role).ok_or_else(|| {
                        format!(
                            "{field}.role: `{}` is not viewer, operator, developer or admin",
                            p.role
                        )
                    })?;
                    if !principals.insert(&p.name, tenant, role) {
                        return Err(format!("{field}.name: `{}` is mapped twice", p.name));
                    }
                }
                Some(ClientCertificates { ca, principals })
            }
            None => None,
        };
        Ok(ServerConfig {
            jwt,
            client_certificates,
            bootstrap_key,
        })
    }
}
