//! An execution on a server, reached through the control API: the remote
//! twin of the SDK's `ExecutionHandle` (`wait`, `status`, `events`,
//! `signal`, `cancel`), so Rust code drives an embedded and a remote engine
//! the same way. Its event stream picks a dropped `Watch` up again from
//! the next event number: nothing is lost or repeated across a reconnect.

use std::time::Duration;

use serde_json::Value;
use tokio_stream::StreamExt;
use tonic::{Code, Status};

use crate::client::Client;
use crate::pb;

/// How long one `AwaitResult` call waits before `wait` asks again.
const AWAIT_SLICE: Duration = Duration::from_secs(50);

/// How often `events` tries to pick a dropped stream up again (the pauses
/// grow from 0.1 s to 6.4 s: about 13 s in all, time for a server to be
/// started again).
const RECONNECTS: u32 = 7;

/// One execution on a server.
#[derive(Debug, Clone)]
pub struct RemoteExecution {
    client: Client,
    id: String,
}

/// Whether an execution's status is one it ends with.
fn finished(status: &str) -> bool {
    matches!(status, "succeeded" | "failed" | "cancelled")
}

impl Client {
    /// Starts `workflow_text` (a workflow file's text) with `inputs` (a
    /// JSON object).
    pub async fn start(
        &self,
        workflow_text: &str,
        inputs: &Value,
    ) -> Result<RemoteExecution, Status> {
        self.start_with(pb::StartRequest {
            workflow_text: workflow_text.to_owned(),
            inputs_json: inputs.to_string(),
            ..pb::StartRequest::default()
        })
        .await
    }

    /// Starts an execution as `request` says (a registered workflow, an
    /// execution id, a request id for retries).
    pub async fn start_with(&self, request: pb::StartRequest) -> Result<RemoteExecution, Status> {
        let started = self.executions().start(request).await?.into_inner();
        Ok(self.execution(&started.execution_id))
    }

    /// A handle on execution `id` of the caller's tenant (whether it
    /// exists is known at the first call).
    pub fn execution(&self, id: &str) -> RemoteExecution {
        RemoteExecution {
            client: self.clone(),
            id: id.to_owned(),
        }
    }
}

impl RemoteExecution {
    /// Its id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// How it stands now.
    pub async fn status(&self) -> Result<pb::Execution, Status> {
        let request = pb::GetRequest {
            execution_id: self.id.clone(),
            events: false,
        };
        Ok(self.client.executions().get(request).await?.into_inner())
    }

    /// Waits until it finished, however long that takes (asking again
    /// after each long poll), and returns how it ended.
    pub async fn wait(&self) -> Result<pb::Execution, Status> {
        loop {
            let request = pb::AwaitRequest {
                execution_id: self.id.clone(),
                timeout_ms: u64::try_from(AWAIT_SLICE.as_millis()).unwrap_or(u64::MAX),
            };
            let now = self
                .client
                .executions()
                .await_result(request)
                .await?
                .into_inner();
            if finished(&now.status) {
                return Ok(now);
            }
        }
    }

    /// Sends signal `name` with `payload`.
    pub async fn signal(&self, name: &str, payload: &Value) -> Result<(), Status> {
        self.signal_once(name, payload, "").await
    }

    /// Sends signal `name` once per `request_id`: sent again with the same
    /// id (a retry after a lost answer), it is not recorded again.
    pub async fn signal_once(
        &self,
        name: &str,
        payload: &Value,
        request_id: &str,
    ) -> Result<(), Status> {
        let request = pb::SignalRequest {
            execution_id: self.id.clone(),
            name: name.to_owned(),
            payload_json: payload.to_string(),
            request_id: request_id.to_owned(),
        };
        self.client.executions().signal(request).await?;
        Ok(())
    }

    /// Stops it; it ends `cancelled`.
    pub async fn cancel(&self) -> Result<(), Status> {
        let request = pb::CancelRequest {
            execution_id: self.id.clone(),
        };
        self.client.executions().cancel(request).await?;
        Ok(())
    }

    /// Its events from number `from` until it finished, as they are
    /// committed; a stream the network dropped is asked for again from the
    /// next number, a few times, before the error is given.
    pub fn events(&self, from: u64) -> RemoteEvents {
        RemoteEvents {
            execution: self.clone(),
            next: from,
            stream: None,
            retries: 0,
            done: false,
        }
    }
}

/// The events of a [`RemoteExecution`], in order, each once.
#[derive(Debug)]
pub struct RemoteEvents {
    execution: RemoteExecution,
    /// The number of the next event wanted.
    next: u64,
    stream: Option<tonic::Streaming<pb::Event>>,
    retries: u32,
    done: bool,
}

impl RemoteEvents {
    /// The next event; `None` once the execution finished and every event
    /// was given.
    pub async fn next(&mut self) -> Option<Result<pb::Event, Status>> {
        loop {
            if self.done {
                return None;
            }
            let stream = match &mut self.stream {
                Some(stream) => stream,
                None => {
                    let request = pb::WatchRequest {
                        execution_id: self.execution.id.clone(),
                        from: self.next,
                    };
                    match self.execution.client.executions().watch(request).await {
                        Ok(watching) => self.stream.insert(watching.into_inner()),
                        Err(e) => match self.pause_before_retry(&e) {
                            Some(pause) => {
                                tokio::time::sleep(pause).await;
                                continue;
                            }
                            None => {
                                self.done = true;
                                return Some(Err(e));
                            }
                        },
                    }
                }
            };
            match stream.next().await {
                Some(Ok(event)) => {
                    // A stream picked up again starts where the last ended.
                    if event.number < self.next {
                        continue;
                    }
                    self.next = event.number + 1;
                    self.retries = 0;
                    return Some(Ok(event));
                }
                Some(Err(e)) => match self.pause_before_retry(&e) {
                    Some(pause) => {
                        self.stream = None;
                        tokio::time::sleep(pause).await;
                    }
                    None => {
                        self.done = true;
                        return Some(Err(e));
                    }
                },
                None => {
                    self.done = true;
                    return None;
                }
            }
        }
    }

    /// How long to pause before asking again after `error`, when it is
    /// the network's and retries are left; the pause grows.
    fn pause_before_retry(&mut self, error: &Status) -> Option<Duration> {
        if !matches!(
            error.code(),
            Code::Unavailable | Code::Unknown | Code::Internal
        ) || self.retries >= RECONNECTS
        {
            return None;
        }
        self.retries += 1;
        Some(Duration::from_millis(50 << self.retries.min(RECONNECTS)))
    }
}
