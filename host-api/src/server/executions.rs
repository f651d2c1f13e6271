//! The Executions service: the engine's execution operations for the
//! caller's tenant.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::{Host, status};
use crate::pb;
use orchestrator_engine::executions::{ExecutionView, ListFilter};
use orchestrator_engine::store::executions::LogEvent;
use orchestrator_engine::{ExecutionHandle, StartOptions, Workflow};

/// How long `AwaitResult` waits when the request says nothing.
const DEFAULT_AWAIT: Duration = Duration::from_secs(60);

/// Serves `orchestrator.v1.Executions`.
#[derive(Debug, Clone)]
pub struct ExecutionsService {
    pub(super) host: Arc<Host>,
}

impl ExecutionsService {
    /// The caller's handle on execution `id`, if the caller may call `rpc`:
    /// among its tenant's executions only.
    async fn execution<T>(
        &self,
        request: &Request<T>,
        rpc: &str,
        id: &str,
    ) -> Result<ExecutionHandle, Status> {
        let who = self.host.authorize(request, rpc)?;
        let engine = self.host.engine(&who.tenant).await?;
        engine.execution(id).await.map_err(status::of)
    }
}

/// JSON text as a value; `""` is `default`.
fn json(text: &str, field: &str, default: serde_json::Value) -> Result<serde_json::Value, Status> {
    if text.is_empty() {
        return Ok(default);
    }
    serde_json::from_str(text)
        .map_err(|e| Status::invalid_argument(format!("`{field}` is not JSON: {e}")))
}

/// An execution as the API shows it.
pub fn execution(view: &ExecutionView) -> pb::Execution {
    let record = &view.record;
    pb::Execution {
        id: record.id.clone(),
        workflow: record.workflow.clone(),
        status: record.status.as_str().to_owned(),
        outputs_json: serde_json::Value::Object(record.outputs.clone()).to_string(),
        error: record.error.clone().unwrap_or_default(),
        created_at_ms: record.created_at,
        live: view.live,
        tasks: view
            .tasks
            .iter()
            .map(|t| pb::TaskState {
                id: t.id.clone(),
                status: t.status.as_str().to_owned(),
                output_json: t
                    .output
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                error: t
                    .error
                    .as_ref()
                    .map(|e| e.message.clone())
                    .unwrap_or_default(),
            })
            .collect(),
    }
}

/// An event as the API shows it: its kind, and its other fields as JSON.
pub fn event(number: u64, event: &LogEvent) -> pb::Event {
    let mut fields = serde_json::to_value(&event.kind).unwrap_or_default();
    let kind = fields["event"].as_str().unwrap_or_default().to_owned();
    if let Some(map) = fields.as_object_mut() {
        map.remove("event");
    }
    pb::Event {
        number,
        at_ms: event.at,
        kind,
        fields_json: fields.to_string(),
    }
}

type Events = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;

#[tonic::async_trait]
impl pb::executions_server::Executions for ExecutionsService {
    async fn start(
        &self,
        request: Request<pb::StartRequest>,
    ) -> Result<Response<pb::StartResponse>, Status> {
        let who = self
            .host
            .authorize(&request, "orchestrator.v1.Executions/Start")?;
        let request = request.into_inner();
        let engine = self.host.engine(&who.tenant).await?;
        let workflow =
            Workflow::from_text(&request.workflow_text, "<workflow_text>").map_err(status::of)?;
        let inputs = json(&request.inputs_json, "inputs_json", serde_json::json!({}))?;
        let options = StartOptions {
            execution_id: (!request.execution_id.is_empty()).then_some(request.execution_id),
        };
        let started = engine
            .start_with(&workflow, inputs, options)
            .await
            .map_err(status::of)?;
        Ok(Response::new(pb::StartResponse {
            execution_id: started.execution.id().to_owned(),
            created: started.created,
        }))
    }

    async fn get(
        &self,
        request: Request<pb::GetRequest>,
    ) -> Result<Response<pb::Execution>, Status> {
        let rpc = "orchestrator.v1.Executions/Get";
        let id = &request.get_ref().execution_id;
        let handle = self.execution(&request, rpc, id).await?;
        let view = handle.status().await.map_err(status::of)?;
        Ok(Response::new(execution(&view)))
    }

    async fn list(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let who = self
            .host
            .authorize(&request, "orchestrator.v1.Executions/List")?;
        let request = request.into_inner();
        let engine = self.host.engine(&who.tenant).await?;
        let some = |s: String| (!s.is_empty()).then_some(s);
        let listing = engine
            .list(ListFilter {
                state: some(request.status),
                workflow: some(request.workflow),
                limit: request.page_size as usize,
                after: some(request.page_token),
            })
            .await
            .map_err(status::of)?;
        Ok(Response::new(pb::ListResponse {
            executions: listing.views.iter().map(execution).collect(),
            next_page_token: listing.next.unwrap_or_default(),
        }))
    }

    type WatchStream = Events;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let rpc = "orchestrator.v1.Executions/Watch";
        let ask = request.get_ref();
        let handle = self.execution(&request, rpc, &ask.execution_id).await?;
        let mut events = handle.events(ask.from);
        let stream = async_stream(move |send| async move {
            while let Some(next) = events.next().await {
                let item = next
                    .map(|(number, e)| event(number, &e))
                    .map_err(status::of);
                if send.send(item).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(stream))
    }

    async fn await_result(
        &self,
        request: Request<pb::AwaitRequest>,
    ) -> Result<Response<pb::Execution>, Status> {
        let rpc = "orchestrator.v1.Executions/AwaitResult";
        let ask = request.get_ref();
        let handle = self.execution(&request, rpc, &ask.execution_id).await?;
        let patience = match ask.timeout_ms {
            0 => DEFAULT_AWAIT,
            ms => Duration::from_millis(ms),
        };
        let view = match tokio::time::timeout(patience, handle.wait()).await {
            Ok(done) => done.map_err(status::of)?,
            Err(_) => handle.status().await.map_err(status::of)?,
        };
        Ok(Response::new(execution(&view)))
    }

    async fn signal(
        &self,
        request: Request<pb::SignalRequest>,
    ) -> Result<Response<pb::SignalResponse>, Status> {
        let rpc = "orchestrator.v1.Executions/Signal";
        let ask = request.get_ref();
        let handle = self.execution(&request, rpc, &ask.execution_id).await?;
        let payload = json(&ask.payload_json, "payload_json", serde_json::Value::Null)?;
        handle
            .signal(&ask.name, payload)
            .await
            .map_err(status::of)?;
        Ok(Response::new(pb::SignalResponse {}))
    }

    async fn cancel(
        &self,
        request: Request<pb::CancelRequest>,
    ) -> Result<Response<pb::CancelResponse>, Status> {
        let rpc = "orchestrator.v1.Executions/Cancel";
        let id = &request.get_ref().execution_id;
        let handle = self.execution(&request, rpc, id).await?;
        handle.cancel().await.map_err(status::of)?;
        Ok(Response::new(pb::CancelResponse {}))
    }
}

/// A stream fed by `produce` through a bounded channel: it stops when the
/// receiver (the client's call) goes away.
fn async_stream<F, Fut>(produce: F) -> Events
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<pb::Event, Status>>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (send, receive) = tokio::sync::mpsc::channel(64);
    tokio::spawn(produce(send));
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(receive))
}
