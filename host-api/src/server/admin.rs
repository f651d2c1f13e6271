//! The Admin service: API keys of every tenant, for the host's operators.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::Host;
use super::auth::Role;
use crate::pb;
use orchestrator_engine::tenant::TenantId;

/// Serves `orchestrator.v1.Admin`.
#[derive(Debug, Clone)]
pub struct AdminService {
    pub(super) host: Arc<Host>,
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminService {
    async fn create_api_key(
        &self,
        request: Request<pb::CreateApiKeyRequest>,
    ) -> Result<Response<pb::CreateApiKeyResponse>, Status> {
        self.host
            .authorize(&request, "orchestrator.v1.Admin/CreateApiKey")?;
        let request = request.into_inner();
        let tenant = TenantId::new(&request.tenant).map_err(Status::invalid_argument)?;
        let role = Role::parse(&request.role).ok_or_else(|| {
            Status::invalid_argument(format!(
                "`{}` is not a role: use viewer, operator, developer or admin",
                request.role
            ))
        })?;
        let made = self.host.keys.create(&tenant, role, &request.name)?;
        tracing::info!(key = %made.record.id, tenant = %tenant.as_str(), role = role.as_str(), "API key created");
        Ok(Response::new(pb::CreateApiKeyResponse {
            key_id: made.record.id,
            key: made.key,
        }))
    }

    async fn list_api_keys(
        &self,
        request: Request<pb::ListApiKeysRequest>,
    ) -> Result<Response<pb::ListApiKeysResponse>, Status> {
        self.host
            .authorize(&request, "orchestrator.v1.Admin/ListApiKeys")?;
        let tenant = request.into_inner().tenant;
        let keys = self
            .host
            .keys
            .list()
            .into_iter()
            .filter(|k| tenant.is_empty() || k.tenant == tenant)
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
        self.host
            .authorize(&request, "orchestrator.v1.Admin/RevokeApiKey")?;
        let id = request.into_inner().key_id;
        if !self.host.keys.revoke(&id)? {
            return Err(Status::not_found(format!("no API key `{id}`")));
        }
        tracing::info!(key = %id, "API key revoked");
        Ok(Response::new(pb::RevokeApiKeyResponse {}))
    }
}
