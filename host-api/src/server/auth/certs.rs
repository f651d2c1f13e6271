//! Client certificates as callers: over mutual TLS, a client whose
//! certificate chains to the configured CA (checked by rustls during the
//! handshake) is the principal its certificate's name maps to: the
//! subject's common name, or a DNS, URI or e-mail subject alternative
//! name. A certificate no mapping names is refused, however well signed.
//! `x509-parser` reads the names.

use std::collections::HashMap;

use tonic::Status;
use tonic::transport::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{Principal, Role};
use orchestrator_engine::tenant::TenantId;

/// Which certificate names are which callers.
#[derive(Debug, Default)]
pub struct CertificatePrincipals {
    by_name: HashMap<String, (TenantId, Role)>,
}

impl CertificatePrincipals {
    /// Maps certificates named `name` to `tenant` in `role`; `false` if
    /// `name` was mapped already.
    pub fn insert(&mut self, name: &str, tenant: TenantId, role: Role) -> bool {
        self.by_name
            .insert(name.to_owned(), (tenant, role))
            .is_none()
    }

    /// The caller presenting `leaf`. Every mapped name it carries must
    /// stand for the same caller: a certificate whose common name is one
    /// caller and an alternative name another is refused, not taken as
    /// whichever comes first.
    pub fn authenticate(&self, leaf: &CertificateDer<'_>) -> Result<Principal, Status> {
        let names = names(leaf)?;
        let mapped: Vec<(&String, &(TenantId, Role))> = names
            .iter()
            .filter_map(|name| self.by_name.get(name).map(|who| (name, who)))
            .collect();
        let Some(&(name, (tenant, role))) = mapped.first() else {
            return Err(Status::unauthenticated(format!(
                "the client certificate (named {}) maps to no caller in `server.client_certificates.principals`",
                if names.is_empty() {
                    "nothing".to_owned()
                } else {
                    names.join(", ")
                }
            )));
        };
        if let Some((other, _)) = mapped
            .iter()
            .find(|(_, who)| *who != &(tenant.clone(), *role))
        {
            return Err(Status::unauthenticated(format!(
                "the client certificate is named both `{name}` and `{other}`, which map to different callers in `server.client_certificates.principals`; a certificate must stand for one"
            )));
        }
        Ok(Principal {
            key_id: format!("cert:{name}"),
            tenant: tenant.clone(),
            role: *role,
        })
    }
}

/// The names a certificate goes by: its subject's common names, then its
/// DNS, URI and e-mail alternative names.
fn names(leaf: &CertificateDer<'_>) -> Result<Vec<String>, Status> {
    let (_, certificate) = X509Certificate::from_der(leaf.as_ref())
        .map_err(|e| Status::unauthenticated(format!("the client certificate: {e}")))?;
    let mut names: Vec<String> = certificate
        .subject()
        .iter_common_name()
        .filter_map(|cn| cn.as_str().ok().map(str::to_owned))
        .collect();
    if let Ok(Some(alternatives)) = certificate.subject_alternative_name() {
        for name in &alternatives.value.general_names {
            match name {
                GeneralName::DNSName(n) | GeneralName::URI(n) | GeneralName::RFC822Name(n) => {
                    names.push((*n).to_owned());
                }
                _ => {}
            }
        }
    }
    Ok(names)
}
