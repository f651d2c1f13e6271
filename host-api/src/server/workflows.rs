//! The Workflows service: the tenant's registered workflows, and checking
//! workflow text. Text sent here may not name `.wasm` files.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{Host, status};
use crate::pb;

/// Serves `orchestrator.v1.Workflows`.
#[derive(Debug, Clone)]
pub struct WorkflowsService {
    pub(super) host: Arc<Host>,
}

/// What messages call text sent without a label.
fn label(given: String) -> String {
    if given.is_empty() {
        "<workflow>".to_owned()
    } else {
        given
    }
}

#[tonic::async_trait]
impl pb::workflows_server::Workflows for WorkflowsService {
    async fn register(
        &self,
        request: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let rpc = "orchestrator.v1.Workflows/Register";
        let who = self.host.authorize(&request, rpc).await?;
        let request = request.into_inner();
        let engine = self.host.engine(&who.tenant).await?;
        let registered = engine
            .register(&request.text, &label(request.label))
            .await
            .map_err(status::of);
        let target = match &registered {
            Ok(r) => format!("{}@{}", r.name, r.version),
            Err(_) => String::new(),
        };
        let registered = self.host.audited(&who, rpc, &target, registered).await?;
        Ok(Response::new(pb::RegisterResponse {
            name: registered.name,
            version: registered.version,
            new: registered.new,
        }))
    }

    async fn list(
        &self,
        request: Request<pb::ListWorkflowsRequest>,
    ) -> Result<Response<pb::ListWorkflowsResponse>, Status> {
        let who = self
            .host
            .authorize(&request, "orchestrator.v1.Workflows/List")
            .await?;
        let engine = self.host.engine(&who.tenant).await?;
        let workflows = engine.workflows().await.map_err(status::of)?;
        Ok(Response::new(pb::ListWorkflowsResponse {
            workflows: workflows
                .into_iter()
                .map(|w| pb::RegisteredWorkflow {
                    name: w.name,
                    version: w.version,
                    added_at: w.added_at,
                    file: w.file,
                })
                .collect(),
        }))
    }

    async fn get(
        &self,
        request: Request<pb::GetWorkflowRequest>,
    ) -> Result<Response<pb::GetWorkflowResponse>, Status> {
        let who = self
            .host
            .authorize(&request, "orchestrator.v1.Workflows/Get")
            .await?;
        let request = request.into_inner();
        let engine = self.host.engine(&who.tenant).await?;
        let version = (request.version != 0).then_some(request.version);
        let found = engine
            .workflow(&request.name, version)
            .await
            .map_err(status::of)?;
        let graph = super::executions::graph(&found.source, &found.file);
        Ok(Response::new(pb::GetWorkflowResponse {
            workflow: Some(pb::RegisteredWorkflow {
                name: found.name,
                version: found.version,
                added_at: found.added_at,
                file: found.file,
            }),
            graph,
            text: found.source,
        }))
    }

    async fn validate(
        &self,
        request: Request<pb::ValidateRequest>,
    ) -> Result<Response<pb::ValidateResponse>, Status> {
        let who = self
            .host
            .authorize(&request, "orchestrator.v1.Workflows/Validate")
            .await?;
        let request = request.into_inner();
        let engine = self.host.engine(&who.tenant).await?;
        let (name, tasks) = engine
            .validate(&request.text, &label(request.label))
            .await
            .map_err(status::of)?;
        Ok(Response::new(pb::ValidateResponse {
            name,
            tasks: u32::try_from(tasks).unwrap_or(u32::MAX),
        }))
    }
}
