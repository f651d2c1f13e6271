//! JWTs from the operator's identity provider: the signature checked
//! against configured public keys (PEM files) or a JWKS file, the issuer,
//! audience and expiry checked, and the tenant and role read from
//! configured claims.
//!
//! Only asymmetric algorithms (RSA, RSA-PSS, ECDSA, EdDSA) are taken: a
//! shared secret on the server could mint tokens. A key is tried only for
//! tokens of its own algorithm family (and `kid` when both name one), so a
//! token cannot choose how it is checked. The JWKS file is read again when
//! it changes (looked at most once a second), so keys rotate without a
//! restart. `jsonwebtoken` (with its pure-Rust crypto) does the checking.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use serde_json::{Map, Value};
use tonic::Status;

use super::{Principal, Role};
use orchestrator_engine::tenant::TenantId;

/// How often at most the JWKS file is looked at for changes.
const JWKS_RECHECK: Duration = Duration::from_secs(1);

/// A key tokens may be signed with.
#[derive(Clone)]
pub struct VerifyingKey {
    /// Its `kid`, if it has one.
    pub kid: Option<String>,
    /// The algorithm it signs with.
    pub algorithm: Algorithm,
    key: DecodingKey,
}

impl VerifyingKey {
    /// A public key in PEM (`-----BEGIN PUBLIC KEY-----` or an RSA one)
    /// for `algorithm`.
    pub fn from_pem(pem: &[u8], algorithm: Algorithm, kid: Option<String>) -> Result<Self, String> {
        use jsonwebtoken::AlgorithmFamily;
        let key = match algorithm.family() {
            AlgorithmFamily::Rsa => DecodingKey::from_rsa_pem(pem),
            AlgorithmFamily::Ec => DecodingKey::from_ec_pem(pem),
            AlgorithmFamily::Ed => DecodingKey::from_ed_pem(pem),
            AlgorithmFamily::Hmac => {
                return Err(format!(
                    "{algorithm:?} uses a shared secret; give a public key for RS256, PS256, ES256, ES384 or EdDSA"
                ));
            }
        }
        .map_err(|e| format!("not a {algorithm:?} public key: {e}"))?;
        Ok(Self {
            kid,
            algorithm,
            key,
        })
    }
}

/// What a JWT must be to be taken, and where its tenant and role are.
#[derive(Debug, Clone)]
pub struct JwtRules {
    /// The `iss` required.
    pub issuer: String,
    /// The `aud` required.
    pub audience: String,
    /// The claim naming the tenant.
    pub tenant_claim: String,
    /// The claim naming the role (a string, or a list whose first role
    /// name counts).
    pub role_claim: String,
    /// Clock skew allowed on `exp` and `nbf`.
    pub leeway: Duration,
}

/// A JWKS file and the keys last read from it.
struct Jwks {
    path: PathBuf,
    modified: Option<SystemTime>,
    checked: Instant,
    keys: Vec<VerifyingKey>,
}

/// Checks JWTs.
pub struct JwtVerifier {
    rules: JwtRules,
    keys: Vec<VerifyingKey>,
    jwks: Option<Mutex<Jwks>>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("rules", &self.rules)
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

/// The keys of a JWKS document; keys that are not for signatures or of a
/// shared-secret kind are left out.
fn read_jwks(path: &std::path::Path) -> Result<Vec<VerifyingKey>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: cannot read it: {e}", path.display()))?;
    let set: JwkSet = serde_json::from_str(&text)
        .map_err(|e| format!("{}: not a JWKS document: {e}", path.display()))?;
    let mut keys = Vec::new();
    for jwk in &set.keys {
        let Some(algorithm) = jwk
            .common
            .key_algorithm
            .and_then(|a| Algorithm::try_from(a).ok())
        else {
            continue;
        };
        if algorithm.family() == jsonwebtoken::AlgorithmFamily::Hmac {
            continue;
        }
        let key = DecodingKey::from_jwk(jwk).map_err(|e| {
            format!(
                "{}: key {}: {e}",
                path.display(),
                jwk.common.key_id.as_deref().unwrap_or("without a kid")
            )
        })?;
        keys.push(VerifyingKey {
            kid: jwk.common.key_id.clone(),
            algorithm,
            key,
        });
    }
    Ok(keys)
}

impl JwtVerifier {
    /// A verifier of `rules`, with `keys` and the keys of `jwks_file`.
    pub fn new(
        rules: JwtRules,
        keys: Vec<VerifyingKey>,
        jwks_file: Option<PathBuf>,
    ) -> Result<Self, String> {
        let jwks = match jwks_file {
            Some(path) => {
                let keys = read_jwks(&path)?;
                let modified = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
                Some(Mutex::new(Jwks {
                    path,
                    modified,
                    checked: Instant::now(),
                    keys,
                }))
            }
            None => None,
        };
        if keys.is_empty() && jwks.is_none() {
            return Err("`server.jwt` needs `keys` or `jwks_file`".to_owned());
        }
        Ok(Self { rules, keys, jwks })
    }

    /// The keys to try now: the configured ones and the JWKS file's,
    /// read again if it changed.
    fn keys(&self) -> Vec<VerifyingKey> {
        let mut keys = self.keys.clone();
        if let Some(jwks) = &self.jwks {
            let mut jwks = jwks.lock().unwrap_or_else(|e| e.into_inner());
            if jwks.checked.elapsed() >= JWKS_RECHECK {
                jwks.checked = Instant::now();
                let modified = std::fs::metadata(&jwks.path)
                    .and_then(|m| m.modified())
                    .ok();
                if modified != jwks.modified {
                    match read_jwks(&jwks.path) {
                        Ok(read) => {
                            jwks.keys = read;
                            jwks.modified = modified;
                            tracing::info!(path = %jwks.path.display(), keys = jwks.keys.len(), "JWKS read again");
                        }
                        Err(e) => tracing::warn!("{e}; keeping the keys read before"),
                    }
                }
            }
            keys.extend(jwks.keys.iter().cloned());
        }
        keys
    }

    /// The caller a JWT names, if it is signed by a configured key and
    /// meets the rules.
    pub fn authenticate(&self, token: &str) -> Result<Principal, Status> {
        let refused = |why: String| Status::unauthenticated(format!("the JWT: {why}"));
        let header = decode_header(token)
            .map_err(|e| refused(format!("it is neither an API key nor a JWT ({e})")))?;
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.rules.issuer]);
        validation.set_audience(&[&self.rules.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = self.rules.leeway.as_secs();
        // A token not valid yet (`nbf` in the future) is refused too.
        validation.validate_nbf = true;
        let mut tried = false;
        for key in self.keys().iter().filter(|k| {
            k.algorithm == header.alg
                && match (&header.kid, &k.kid) {
                    (Some(wanted), Some(kid)) => wanted == kid,
                    _ => true,
                }
        }) {
            tried = true;
            match decode::<Map<String, Value>>(token, &key.key, &validation) {
                Ok(data) => return self.principal(&data.claims),
                Err(e) if *e.kind() == jsonwebtoken::errors::ErrorKind::InvalidSignature => {}
                Err(e) => return Err(refused(e.to_string())),
            }
        }
        Err(refused(if tried {
            "its signature matches none of the configured keys".to_owned()
        } else {
            format!(
                "no configured key is for {:?}{}",
                header.alg,
                header
                    .kid
                    .map(|k| format!(" with kid `{k}`"))
                    .unwrap_or_default()
            )
        }))
    }

    fn principal(&self, claims: &Map<String, Value>) -> Result<Principal, Status> {
        let rules = &self.rules;
        let refused = |why: String| Status::unauthenticated(format!("the JWT: {why}"));
        let tenant = claims
            .get(&rules.tenant_claim)
            .and_then(Value::as_str)
            .ok_or_else(|| {
                refused(format!(
                    "it has no `{}` claim naming the tenant",
                    rules.tenant_claim
                ))
            })?;
        let tenant =
            TenantId::new(tenant).map_err(|e| refused(format!("`{}`: {e}", rules.tenant_claim)))?;
        let role = match claims.get(&rules.role_claim) {
            Some(Value::String(name)) => Role::parse(name),
            Some(Value::Array(names)) => {
                names.iter().filter_map(Value::as_str).find_map(Role::parse)
            }
            _ => None,
        }
        .ok_or_else(|| {
            refused(format!(
                "its `{}` claim names no role (viewer, operator, developer or admin)",
                rules.role_claim
            ))
        })?;
        let subject: String = claims
            .get("sub")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .chars()
            .take(128)
            .collect();
        Ok(Principal {
            key_id: format!("jwt:{subject}"),
            tenant,
            role,
        })
    }
}
