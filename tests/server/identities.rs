//! Callers besides API-key holders: JWTs of the operator's identity
//! provider (keys in PEM files and a JWKS file, issuer, audience, expiry,
//! tenant and role claims) and client certificates over mutual TLS; and
//! the operator's own bootstrap key.

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::harness::*;

const ISSUER: &str = "https://id.example.test/";
const AUDIENCE: &str = "orchestrator";

/// A signing key of the identity provider and its public key's JWK.
struct Signer {
    private: EncodingKey,
    public_pem: String,
    jwk: serde_json::Value,
}

fn signer(kid: &str) -> Signer {
    let key = rcgen::KeyPair::generate().unwrap();
    let raw = key.public_key_raw();
    assert_eq!(raw[0], 4, "an uncompressed P-256 point");
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    Signer {
        private: EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap(),
        public_pem: key.public_key_pem(),
        jwk: json!({
            "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
            "x": b64(&raw[1..33]), "y": b64(&raw[33..65]),
        }),
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(signer: &Signer, kid: &str, claims: serde_json::Value) -> String {
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, &claims, &signer.private).unwrap()
}

fn claims(tenant: &str, role: &str, subject: &str) -> serde_json::Value {
    json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": subject, "exp": now() + 600,
        "tenant": tenant, "role": role,
    })
}

async fn refusal(server: &Server, credential: &str) -> tonic::Status {
    server
        .client(credential)
        .await
        .executions()
        .list(pb::ListRequest::default())
        .await
        .unwrap_err()
}

#[tokio::test(flavor = "multi_thread")]
async fn jwts_of_the_identity_provider_name_the_tenant_and_role() {
    let dir = tempfile::tempdir().unwrap();
    let (pem_key, jwks_key) = (signer("pem-1"), signer("jwks-1"));
    std::fs::write(dir.path().join("idp.pem"), &pem_key.public_pem).unwrap();
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, json!({"keys": [jwks_key.jwk]}).to_string()).unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "server:\n  jwt:\n    issuer: {ISSUER}\n    audience: {AUDIENCE}\n    keys: [{{ file: idp.pem, algorithm: ES256, kid: pem-1 }}]\n    jwks_file: jwks.json\n"
        ),
    )
    .unwrap();
    let server = Server::start_with(dir.path(), None, &["--config", config.to_str().unwrap()]);

    // A token signed with the PEM key: tenant acme, operator.
    let alice = token(&pem_key, "pem-1", claims("acme", "operator", "alice"));
    let acme = server.client(&alice).await;
    acme.executions()
        .start(start(WAITING, "jwt-1"))
        .await
        .unwrap();
    // One signed with the JWKS key: tenant globex, a viewer.
    let bob = token(&jwks_key, "jwks-1", claims("globex", "viewer", "bob"));
    let globex = server.client(&bob).await;
    let listed = globex
        .executions()
        .list(pb::ListRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.executions.is_empty(), "globex sees none of acme's");
    let hidden = globex
        .executions()
        .get(pb::GetRequest {
            execution_id: "jwt-1".into(),
            events: false,
        })
        .await
        .unwrap_err();
    assert_eq!(hidden.code(), Code::NotFound);
    let denied = globex
        .executions()
        .start(start(WAITING, "jwt-2"))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);

    // What is refused, and why.
    let mut expired = claims("acme", "operator", "alice");
    expired["exp"] = json!(now() - 3600);
    let mut wrong_audience = claims("acme", "operator", "alice");
    wrong_audience["aud"] = json!("someone-else");
    let mut wrong_issuer = claims("acme", "operator", "alice");
    wrong_issuer["iss"] = json!("https://evil.example.test/");
    let mut no_tenant = claims("acme", "operator", "alice");
    no_tenant.as_object_mut().unwrap().remove("tenant");
    let mut no_role = claims("acme", "operator", "alice");
    no_role["role"] = json!("root");
    let forger = signer("pem-1");
    let shared_secret = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims("acme", "admin", "mallory"),
        &EncodingKey::from_secret(b"guessable").unwrap(),
    )
    .unwrap();
    for (credential, why) in [
        (token(&pem_key, "pem-1", expired), "xpired"),
        (token(&pem_key, "pem-1", wrong_audience), "udience"),
        (token(&pem_key, "pem-1", wrong_issuer), "ssuer"),
        (token(&pem_key, "pem-1", no_tenant), "`tenant` claim"),
        (token(&pem_key, "pem-1", no_role), "`role` claim"),
        (
            token(&forger, "pem-1", claims("acme", "admin", "mallory")),
            "signature",
        ),
        (shared_secret, "HS256"),
        ("not-a-token".to_owned(), "neither an API key nor a JWT"),
    ] {
        let refused = refusal(&server, &credential).await;
        assert_eq!(refused.code(), Code::Unauthenticated, "{why}: {refused:?}");
        assert!(
            refused.message().contains(why),
            "{why}: {}",
            refused.message()
        );
    }

    // A new key in the JWKS file is taken without a restart.
    let rotated = signer("jwks-2");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    std::fs::write(&jwks, json!({"keys": [rotated.jwk]}).to_string()).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let carol = token(&rotated, "jwks-2", claims("globex", "viewer", "carol"));
    server
        .client(&carol)
        .await
        .executions()
        .list(pb::ListRequest::default())
        .await
        .unwrap();
    let gone = refusal(&server, &bob).await;
    assert_eq!(
        gone.code(),
        Code::Unauthenticated,
        "a key taken out of the JWKS is no longer trusted"
    );

    // The audit log names the token's subject.
    let audit = server
        .client(&server.admin_key)
        .await
        .admin()
        .list_audit(pb::ListAuditRequest {
            tenant: "acme".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        audit.entries.iter().any(|e| e.key_id == "jwt:alice"
            && e.rpc.ends_with("Executions/Start")
            && e.target == "jwt-1"),
        "{:?}",
        audit.entries
    );
}

/// A certificate authority of its own.
fn new_ca() -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    rcgen::CertifiedIssuer::self_signed(ca, rcgen::KeyPair::generate().unwrap()).unwrap()
}

/// A client certificate named `name` signed by `ca`: (PEM, key PEM).
fn signed_by(ca: &rcgen::CertifiedIssuer<'_, rcgen::KeyPair>, name: &str) -> (String, String) {
    signed_with_alternatives(ca, name, &[])
}

/// A client certificate named `name`, with DNS alternative names `dns`.
fn signed_with_alternatives(
    ca: &rcgen::CertifiedIssuer<'_, rcgen::KeyPair>,
    name: &str,
    dns: &[&str],
) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let dns: Vec<String> = dns.iter().map(|&d| d.to_owned()).collect();
    let mut params = rcgen::CertificateParams::new(dns).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let cert = params.signed_by(&key, ca).unwrap();
    (cert.pem(), key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread")]
async fn client_certificates_stand_for_the_callers_they_are_mapped_to() {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = certificates(dir.path());
    let clients_ca = new_ca();
    std::fs::write(dir.path().join("clients-ca.pem"), clients_ca.pem()).unwrap();
    let runner = signed_by(&clients_ca, "ci-runner");
    let stranger = signed_by(&clients_ca, "stranger");
    let two_faced = signed_with_alternatives(&clients_ca, "ci-runner", &["ops-admin"]);
    let also_runner = signed_with_alternatives(&clients_ca, "stranger", &["ci-runner"]);
    let impostor = signed_by(&new_ca(), "ci-runner");
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        "server:\n  client_certificates:\n    ca: clients-ca.pem\n    principals:\n      - { name: ci-runner, tenant: acme, role: operator }\n      - { name: ops-admin, tenant: globex, role: admin }\n",
    )
    .unwrap();
    let (cert, key) = (dir.path().join("server.pem"), dir.path().join("server.key"));
    let server = Server::start_with(
        dir.path(),
        None,
        &[
            "--config",
            config.to_str().unwrap(),
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let url = server.url.clone();
    let channel = |identity: Option<(String, String)>| {
        let url = url.clone();
        let server_ca = server_ca.clone();
        async move {
            let mut tls = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(server_ca));
            if let Some((cert, key)) = identity {
                tls = tls.identity(tonic::transport::Identity::from_pem(cert, key));
            }
            tonic::transport::Endpoint::from_shared(url)
                .unwrap()
                .tls_config(tls)
                .unwrap()
                .connect()
                .await
        }
    };

    // The mapped certificate is acme's operator, with no key at all.
    let mut executions =
        pb::executions_client::ExecutionsClient::new(channel(Some(runner)).await.unwrap());
    executions.start(start(WAITING, "cert-1")).await.unwrap();
    let got = executions
        .get(pb::GetRequest {
            execution_id: "cert-1".into(),
            events: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.id, "cert-1");

    // A certificate of the same CA that no mapping names is refused.
    let mut unmapped =
        pb::executions_client::ExecutionsClient::new(channel(Some(stranger)).await.unwrap());
    let refused = unmapped.list(pb::ListRequest::default()).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert!(refused.message().contains("stranger"), "{refused:?}");

    // A certificate naming two callers is neither; an alternative name
    // that maps stands for its caller.
    let mut ambiguous =
        pb::executions_client::ExecutionsClient::new(channel(Some(two_faced)).await.unwrap());
    let refused = ambiguous
        .list(pb::ListRequest::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert!(
        refused.message().contains("map to different callers"),
        "{refused:?}"
    );
    let mut by_alternative =
        pb::executions_client::ExecutionsClient::new(channel(Some(also_runner)).await.unwrap());
    let listed = by_alternative
        .list(pb::ListRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(
        listed.executions.iter().any(|e| e.id == "cert-1"),
        "{listed:?}"
    );

    // The same name from another CA never gets past the handshake.
    let impostor = match channel(Some(impostor)).await {
        Err(_) => None,
        Ok(channel) => Some(
            pb::executions_client::ExecutionsClient::new(channel)
                .list(pb::ListRequest::default())
                .await,
        ),
    };
    assert!(
        !matches!(impostor, Some(Ok(_))),
        "a certificate of another CA is refused: {impostor:?}"
    );

    // Without a certificate, a key still works over the same TLS.
    let ca = Some(server_ca.as_bytes());
    let admin = Client::connect_with(&url, &server.admin_key, ca)
        .await
        .unwrap();
    let key = admin
        .admin()
        .create_api_key(pb::CreateApiKeyRequest {
            tenant: "globex".into(),
            role: "viewer".into(),
            name: "globex viewer".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .key;
    let with_key = Client::connect_with(&url, &key, ca).await.unwrap();
    let listed = with_key
        .executions()
        .list(pb::ListRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.executions.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_operators_bootstrap_key_is_kept_instead_of_a_made_one() {
    let dir = tempfile::tempdir().unwrap();
    let key = format!("oo_{}_{}", "0123456789abcdef", "ab".repeat(32));
    std::fs::write(dir.path().join("admin.key"), format!("{key}\n")).unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(&config, "server:\n  bootstrap_key_file: admin.key\n").unwrap();
    let server = Server::start_with(
        dir.path(),
        Some(key.clone()),
        &["--config", config.to_str().unwrap()],
    );
    assert_eq!(server.admin_key, key, "no key was made and printed");
    let made = server.key("acme", "viewer").await;
    assert!(made.starts_with("oo_"));
    let keys = server
        .client(&key)
        .await
        .admin()
        .list_api_keys(pb::ListApiKeysRequest::default())
        .await
        .unwrap()
        .into_inner()
        .keys;
    assert!(
        keys.iter()
            .any(|k| k.key_id == "0123456789abcdef" && k.role == "admin")
    );
}
