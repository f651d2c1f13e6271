//! The Admin service: API keys and the audit log. An admin key of tenant
//! `default` administers the host (every tenant); an admin key of another
//! tenant administers that tenant only ([`Host::is_host_admin`]).

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::auth::{Principal, Role};
use super::{Host, tenants};
use crate::pb;
use orchestrator_engine::store::audit::HOST;
use orchestrator_engine::tenant::TenantId;

/// Entries in a `ListAudit` page when the request says nothing, and at most.
const AUDIT_PAGE: (usize, usize) = (100, 1000);

/// Serves `orchestrator.v1.Admin`.
#[derive(Debug, Clone)]
pub struct AdminService {
    pub(super) host: Arc<Host>,
}

/// Refuses a caller that does not administer the host.
fn host_admin(who: &Principal) -> Result<(), Status> {
    if Host::is_host_admin(who) {
        Ok(())
    } else {
        Err(Status::permission_denied(
            "tenants and their limits are the host's: this needs an admin key of tenant `default`",
        ))
    }
}

/// The tenant a request names (`""`: the caller's), if the caller may act
/// for it: its own, or any for a host admin.
fn tenant_for(who: &Principal, named: &str) -> Result<TenantId, Status> {
    if named.is_empty() || named == who.tenant.as_str() {
        return Ok(who.tenant.clone());
    }
    if !Host::is_host_admin(who) {
        return Err(Status::permission_denied(format!(
            "an admin of tenant `{}` administers that tenant only; another tenant's needs an admin key of tenant `default`",
            who.tenant.as_str()
        )));
    }
    TenantId::new(named).map_err(Status::invalid_argument)
}

impl AdminService {
    /// [`tenant_for`], with a refusal audited: a read refused is recorded
    /// as every refused call is.
    async fn tenant_for(
        &self,
        who: &Principal,
        rpc: &str,
        named: &str,
    ) -> Result<TenantId, Status> {
        match tenant_for(who, named) {
            Ok(tenant) => Ok(tenant),
            Err(refused) => self.host.audited(who, rpc, named, Err(refused)).await,
        }
    }
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminService {
    async fn create_api_key(
        &self,
        request: Request<pb::CreateApiKeyRequest>,
    ) -> Result<Response<pb::CreateApiKeyResponse>, Status> {
        let rpc = "orchestrator.v1.Admin/CreateApiKey";
        let who = self.host.authorize(&request, rpc).await?;
        let request = request.into_inner();
        let made = (|| {
            let tenant = tenant_for(&who, &request.tenant)?;
            let role = Role::parse(&request.role).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "`{}` is not a role: use viewer, operator, developer or admin",
                    request.role
                ))
            })?;
            self.host.auth.keys.create(&tenant, role, &request.name)
        })();
        let target = match &made {
            Ok(made) => made.record.id.clone(),
            Err(_) => request.tenant.clone(),
        };
        let made = self.host.audited(&who, rpc, &target, made).await?;
        tracing::info!(key = %made.record.id, tenant = %made.record.tenant, role = %made.record.role, "API key created");
        Ok(Response::new(pb::CreateApiKeyResponse {
            key_id: made.record.id,
            key: made.key,
        }))
    }

    async fn list_api_keys(
        &self,
        request: Request<pb::ListApiKeysRequest>,
    ) -> Result<Response<pb::ListApiKeysResponse>, Status> {
        let rpc = "orchestrator.v1.Admin/ListApiKeys";
        let who = self.host.authorize(&request, rpc).await?;
        let named = request.into_inner().tenant;
        // A host admin asking for no tenant sees every tenant's keys.
        let only = if named.is_empty() && Host::is_host_admin(&who) {
            None
        } else {
            Some(self.tenant_for(&who, rpc, &named).await?)
        };
        let keys = self
            .host
            .auth
            .keys
            .list()
            .into_iter()
            .filter(|k| only.as_ref().is_none_or(|t| k.tenant == t.as_str()))
            .map(|k| pb::ApiKey {
                key_id: k.id,
                tenant: k.tenant,
                role: k.role,
                name: k.name,
                created_at_ms: k.created_at,
                revoked_at_ms: k.revoked_at.unwrap_or(0),
            })
            .collect();
        Ok(Response::new(pb::ListApiKeysResponse { keys }))
    }

    async fn revoke_api_key(
        &self,
        request: Request<pb::RevokeApiKeyRequest>,
    ) -> Result<Response<pb::RevokeApiKeyResponse>, Status> {
        let rpc = "orchestrator.v1.Admin/RevokeApiKey";
        let who = self.host.authorize(&request, rpc).await?;
        let id = request.into_inner().key_id;
        let missing = || Status::not_found(format!("no API key `{id}`"));
        // Another tenant's key is as unknown as one that does not exist.
        let visible =
            self.host.auth.keys.list().into_iter().any(|k| {
                k.id == id && (Host::is_host_admin(&who) || k.tenant == who.tenant.as_str())
            });
        let revoked = if visible {
            self.host
                .auth
                .keys
                .revoke(&id)
                .and_then(|found| if found { Ok(()) } else { Err(missing()) })
        } else {
            Err(missing())
        };
        self.host.audited(&who, rpc, &id, revoked).await?;
        tracing::info!(key = %id, "API key revoked");
        Ok(Response::new(pb::RevokeApiKeyResponse {}))
    }

    async fn list_audit(
        &self,
        request: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        let rpc = "orchestrator.v1.Admin/ListAudit";
        let who = self.host.authorize(&request, rpc).await?;
        let ask = request.into_inner();
        let tenant = if ask.host {
            if !Host::is_host_admin(&who) {
                let refused = Err(Status::permission_denied(
                    "the host's audit entries need an admin key of tenant `default`",
                ));
                return self.host.audited(&who, rpc, "(host)", refused).await;
            }
            HOST.to_owned()
        } else {
            self.tenant_for(&who, rpc, &ask.tenant)
                .await?
                .as_str()
                .to_owned()
        };
        let size = match ask.page_size as usize {
            0 => AUDIT_PAGE.0,
            n => n.min(AUDIT_PAGE.1),
        };
        let entries = self.host.audit.list(tenant, ask.after, size).await?;
        let next_after = entries.last().map_or(ask.after, |(n, _)| *n);
        Ok(Response::new(pb::ListAuditResponse {
            entries: entries
                .into_iter()
                .map(|(number, e)| pb::AuditEntry {
                    number,
                    at_ms: e.at,
                    tenant: e.tenant,
                    key_id: e.key_id,
                    role: e.role,
                    rpc: e.rpc,
                    target: e.target,
                    outcome: e.outcome,
                    detail: e.detail,
                })
                .collect(),
            next_after,
        }))
    }

    async fn create_tenant(
        &self,
        request: Request<pb::CreateTenantRequest>,
    ) -> Result<Response<pb::Tenant>, Status> {
        let rpc = "orchestrator.v1.Admin/CreateTenant";
        let who = self.host.authorize(&request, rpc).await?;
        let ask = request.into_inner();
        let created = async {
            host_admin(&who)?;
            let tenant = TenantId::new(&ask.tenant).map_err(Status::invalid_argument)?;
            let limits = tenants::limits_of(ask.limits)?;
            self.host.create_tenant(&tenant, limits).await
        }
        .await;
        let created = self.host.audited(&who, rpc, &ask.tenant, created).await?;
        Ok(Response::new(created))
    }

    async fn set_tenant_limits(
        &self,
        request: Request<pb::SetTenantLimitsRequest>,
    ) -> Result<Response<pb::Tenant>, Status> {
        let rpc = "orchestrator.v1.Admin/SetTenantLimits";
        let who = self.host.authorize(&request, rpc).await?;
        let ask = request.into_inner();
        let set = async {
            host_admin(&who)?;
            let tenant = TenantId::new(&ask.tenant).map_err(Status::invalid_argument)?;
            let limits = tenants::limits_of(ask.limits)?;
            self.host.set_tenant_limits(&tenant, limits).await
        }
        .await;
        let set = self.host.audited(&who, rpc, &ask.tenant, set).await?;
        Ok(Response::new(set))
    }

    async fn get_tenant(
        &self,
        request: Request<pb::GetTenantRequest>,
    ) -> Result<Response<pb::Tenant>, Status> {
        let rpc = "orchestrator.v1.Admin/GetTenant";
        let who = self.host.authorize(&request, rpc).await?;
        let named = request.into_inner().tenant;
        let tenant = self.tenant_for(&who, rpc, &named).await?;
        Ok(Response::new(self.host.tenant(&tenant).await?))
    }

    async fn list_tenants(
        &self,
        request: Request<pb::ListTenantsRequest>,
    ) -> Result<Response<pb::ListTenantsResponse>, Status> {
        let rpc = "orchestrator.v1.Admin/ListTenants";
        let who = self.host.authorize(&request, rpc).await?;
        if let Err(refused) = host_admin(&who) {
            return self.host.audited(&who, rpc, "", Err(refused)).await;
        }
        Ok(Response::new(pb::ListTenantsResponse {
            tenants: self.host.tenants().await?,
        }))
    }
}
