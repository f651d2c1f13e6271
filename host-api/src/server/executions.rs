//! The Executions service: the engine's execution operations for the
//! caller's tenant.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::auth::Principal;
use super::{Host, status};
use crate::pb;
use orchestrator_engine::executions::{ExecutionView, ListFilter};
use orchestrator_engine::sdk::Letter;
use orchestrator_engine::store::executions::LogEvent;
use orchestrator_engine::{Engine, ExecutionHandle, StartOptions, Workflow};

/// How long `AwaitResult` waits when the request says nothing.
const DEFAULT_AWAIT: Duration = Duration::from_secs(60);

/// Events in a `GetEvents` page when the request says nothing, and at most.
const EVENTS_PAGE: (usize, usize) = (100, 1000);

/// Serves `orchestrator.v1.Executions`.
#[derive(Debug, Clone)]
pub struct ExecutionsService {
    pub(super) host: Arc<Host>,
}

impl ExecutionsService {
    /// The caller, and its handle on execution `id`, if the caller may
    /// call `rpc`: among its tenant's executions only.
    async fn execution<T>(
        &self,
        request: &Request<T>,
        rpc: &str,
        id: &str,
    ) -> Result<(Principal, Result<ExecutionHandle, Status>), Status> {
        let who = self.host.authorize(request, rpc).await?;
        let engine = self.host.engine(&who.tenant).await?;
        let handle = engine.execution(id).await.map_err(status::of);
        Ok((who, handle))
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

/// The workflow a start names: its text, or a registered one by `name` or
/// `name@version`.
async fn workflow_of(engine: &Engine, request: &pb::StartRequest) -> Result<Workflow, Status> {
    match (
        request.workflow_text.is_empty(),
        request.workflow.is_empty(),
    ) {
        (false, true) => {
            Workflow::from_text(&request.workflow_text, "<workflow_text>").map_err(status::of)
        }
        (true, false) => {
            let (name, version) = match request.workflow.split_once('@') {
                None => (request.workflow.as_str(), None),
                Some((name, version)) => {
                    let version = version.parse::<u64>().map_err(|_| {
                        Status::invalid_argument(format!(
                            "`workflow`: `{}` is not `name` or `name@version` (a number)",
                            request.workflow
                        ))
                    })?;
                    (name, Some(version))
                }
            };
            let found = engine.workflow(name, version).await.map_err(status::of)?;
            let label = format!("workflow:{}@{}", found.name, found.version);
            Workflow::from_text(&found.source, &label).map_err(status::of)
        }
        (true, true) => Err(Status::invalid_argument(
            "give `workflow_text` (a workflow file's text) or `workflow` (a registered workflow's `name` or `name@version`)",
        )),
        (false, false) => Err(Status::invalid_argument(
            "give `workflow_text` or `workflow`, not both",
        )),
    }
}

/// The execution id a start asks for: the one it names, else one made
/// from its `request_id` (the same for every retry of the request), else
/// none (the engine makes one up).
fn execution_id_of(request: &pb::StartRequest) -> Result<Option<String>, Status> {
    if !request.execution_id.is_empty() {
        return Ok(Some(request.execution_id.clone()));
    }
    if request.request_id.is_empty() {
        return Ok(None);
    }
    if request.request_id.len() > 200 {
        return Err(Status::invalid_argument(
            "`request_id` is longer than 200 characters",
        ));
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, request.request_id.as_bytes());
    let hex: String = digest.as_ref()[..20]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok(Some(format!("req-{hex}")))
}

/// A dead letter as the API shows it.
fn dead_letter(letter: &Letter) -> pb::DeadLetter {
    let dead = &letter.letter;
    pb::DeadLetter {
        id: letter.id.clone(),
        execution_id: letter.execution.clone(),
        task: dead.task.clone(),
        uses: dead.uses.clone(),
        kind: dead.kind.map(|k| k.as_str().to_owned()).unwrap_or_default(),
        error: dead.error.clone(),
        attempts: dead.attempts,
        input_json: dead
            .input
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        failed_at_ms: dead.at,
    }
}

/// The tasks of workflow `text` and what each needs, to draw its DAG.
pub fn graph(text: &str, label: &str) -> Vec<pb::TaskNode> {
    let expressions = orchestrator_engine::expr::Expressions::new();
    orchestrator_engine::workflows::outline(text, label, &expressions)
        .into_iter()
        .map(|task| pb::TaskNode {
            id: task.id,
            uses: task.uses,
            needs: task.needs,
        })
        .collect()
}

/// An execution as the API shows it; its events in `detail_json` when
/// `events`.
pub fn execution(view: &ExecutionView, events: bool) -> pb::Execution {
    let record = &view.record;
    let detail = serde_json::json!({
        "record": record,
        "tasks": view.tasks,
        "events": if events { serde_json::json!(view.events) } else { serde_json::json!([]) },
    });
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
        detail_json: detail.to_string(),
        graph: Vec::new(),
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
        let rpc = "orchestrator.v1.Executions/Start";
        let who = self.host.authorize(&request, rpc).await?;
        let request = request.into_inner();
        let engine = self.host.engine(&who.tenant).await?;
        let started = async {
            let workflow = workflow_of(&engine, &request).await?;
            let inputs = json(&request.inputs_json, "inputs_json", serde_json::json!({}))?;
            let options = StartOptions {
                execution_id: execution_id_of(&request)?,
            };
            engine
                .start_with(&workflow, inputs, options)
                .await
                .map_err(status::of)
        }
        .await;
        let target = match &started {
            Ok(started) => started.execution.id().to_owned(),
            Err(_) => request.execution_id.clone(),
        };
        let started = self.host.audited(&who, rpc, &target, started).await?;
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
        let handle = self.execution(&request, rpc, id).await?.1?;
        let view = handle.status().await.map_err(status::of)?;
        let mut shown = execution(&view, request.get_ref().events);
        shown.graph = graph(&view.record.source, &view.record.file);
        Ok(Response::new(shown))
    }

    async fn list(
        &self,
        request: Request<pb::ListRequest>,
    ) -> Result<Response<pb::ListResponse>, Status> {
        let who = self
            .host
            .authorize(&request, "orchestrator.v1.Executions/List")
            .await?;
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
            executions: listing.views.iter().map(|v| execution(v, false)).collect(),
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
        let handle = self.execution(&request, rpc, &ask.execution_id).await?.1?;
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
        let handle = self.execution(&request, rpc, &ask.execution_id).await?.1?;
        let patience = match ask.timeout_ms {
            0 => DEFAULT_AWAIT,
            ms => Duration::from_millis(ms),
        };
        let view = match tokio::time::timeout(patience, handle.wait()).await {
            Ok(done) => done.map_err(status::of)?,
            Err(_) => handle.status().await.map_err(status::of)?,
        };
        Ok(Response::new(execution(&view, false)))
    }

    async fn signal(
        &self,
        request: Request<pb::SignalRequest>,
    ) -> Result<Response<pb::SignalResponse>, Status> {
        let rpc = "orchestrator.v1.Executions/Signal";
        let ask = request.get_ref();
        let (who, handle) = self.execution(&request, rpc, &ask.execution_id).await?;
        let sent = async {
            let payload = json(&ask.payload_json, "payload_json", serde_json::Value::Null)?;
            let request_id = (!ask.request_id.is_empty()).then(|| ask.request_id.clone());
            handle?
                .signal_once(&ask.name, payload, request_id)
                .await
                .map_err(status::of)
        }
        .await;
        let target = format!("{}/{}", ask.execution_id, ask.name);
        self.host.audited(&who, rpc, &target, sent).await?;
        Ok(Response::new(pb::SignalResponse {}))
    }

    async fn cancel(
        &self,
        request: Request<pb::CancelRequest>,
    ) -> Result<Response<pb::CancelResponse>, Status> {
        let rpc = "orchestrator.v1.Executions/Cancel";
        let id = &request.get_ref().execution_id;
        let (who, handle) = self.execution(&request, rpc, id).await?;
        let cancelled = async { handle?.cancel().await.map_err(status::of) }.await;
        self.host.audited(&who, rpc, id, cancelled).await?;
        Ok(Response::new(pb::CancelResponse {}))
    }

    async fn get_events(
        &self,
        request: Request<pb::GetEventsRequest>,
    ) -> Result<Response<pb::GetEventsResponse>, Status> {
        let rpc = "orchestrator.v1.Executions/GetEvents";
        let ask = request.get_ref();
        let handle = self.execution(&request, rpc, &ask.execution_id).await?.1?;
        let size = match ask.page_size as usize {
            0 => EVENTS_PAGE.0,
            n => n.min(EVENTS_PAGE.1),
        };
        let page = handle
            .events_page(ask.from, size)
            .await
            .map_err(status::of)?;
        let next_from = page.last().map_or(ask.from, |(n, _)| n + 1);
        Ok(Response::new(pb::GetEventsResponse {
            events: page.iter().map(|(n, e)| event(*n, e)).collect(),
            next_from,
        }))
    }

    async fn resume(
        &self,
        request: Request<pb::ResumeRequest>,
    ) -> Result<Response<pb::ResumeResponse>, Status> {
        let rpc = "orchestrator.v1.Executions/Resume";
        let who = self.host.authorize(&request, rpc).await?;
        let id = &request.get_ref().execution_id;
        let engine = self.host.engine(&who.tenant).await?;
        let resumed = engine.resume(id).await.map(drop).map_err(status::of);
        self.host.audited(&who, rpc, id, resumed).await?;
        Ok(Response::new(pb::ResumeResponse {}))
    }

    async fn list_dead_letters(
        &self,
        request: Request<pb::ListDeadLettersRequest>,
    ) -> Result<Response<pb::ListDeadLettersResponse>, Status> {
        let who = self
            .host
            .authorize(&request, "orchestrator.v1.Executions/ListDeadLetters")
            .await?;
        let engine = self.host.engine(&who.tenant).await?;
        let letters = engine.dead_letters().await.map_err(status::of)?;
        Ok(Response::new(pb::ListDeadLettersResponse {
            dead_letters: letters.iter().map(dead_letter).collect(),
        }))
    }

    async fn get_dead_letter(
        &self,
        request: Request<pb::GetDeadLetterRequest>,
    ) -> Result<Response<pb::GetDeadLetterResponse>, Status> {
        let who = self
            .host
            .authorize(&request, "orchestrator.v1.Executions/GetDeadLetter")
            .await?;
        let id = request.into_inner().id;
        let engine = self.host.engine(&who.tenant).await?;
        let (letter, attempts) = engine.dead_letter(&id).await.map_err(status::of)?;
        let state = serde_json::to_value(letter.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let execution = id.split_once('/').map_or(&*id, |(e, _)| e).to_owned();
        let found = Letter {
            id: id.clone(),
            execution,
            letter,
        };
        Ok(Response::new(pb::GetDeadLetterResponse {
            dead_letter: Some(dead_letter(&found)),
            state,
            letter_json: serde_json::to_string(&found.letter).unwrap_or_default(),
            attempts_json: serde_json::to_string(&attempts).unwrap_or_default(),
        }))
    }

    async fn replay_dead_letter(
        &self,
        request: Request<pb::ReplayDeadLetterRequest>,
    ) -> Result<Response<pb::ReplayDeadLetterResponse>, Status> {
        let rpc = "orchestrator.v1.Executions/ReplayDeadLetter";
        let who = self.host.authorize(&request, rpc).await?;
        let ask = request.into_inner();
        let engine = self.host.engine(&who.tenant).await?;
        let replayed = async {
            let input = match ask.input_json.as_str() {
                "" => None,
                text => Some(json(text, "input_json", serde_json::Value::Null)?),
            };
            engine.replay(&ask.id, input).await.map_err(status::of)
        }
        .await;
        let (replay, _execution) = self.host.audited(&who, rpc, &ask.id, replayed).await?;
        Ok(Response::new(pb::ReplayDeadLetterResponse {
            execution_id: replay.execution,
            task: replay.task,
            cleared: replay.cleared,
        }))
    }

    async fn purge(
        &self,
        request: Request<pb::PurgeRequest>,
    ) -> Result<Response<pb::PurgeResponse>, Status> {
        let rpc = "orchestrator.v1.Executions/Purge";
        let who = self.host.authorize(&request, rpc).await?;
        let ask = request.into_inner();
        let target = if ask.all {
            "*".to_owned()
        } else {
            ask.ids.join(",")
        };
        let engine = self.host.engine(&who.tenant).await?;
        let purged = engine.purge(ask.ids, ask.all).await.map_err(status::of);
        let purged = self.host.audited(&who, rpc, &target, purged).await?;
        Ok(Response::new(pb::PurgeResponse {
            purged: u32::try_from(purged).unwrap_or(u32::MAX),
        }))
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
