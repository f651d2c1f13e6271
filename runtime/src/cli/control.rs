//! Reaching an execution that another process is running.
//!
//! The process that owns an execution holds its file open, so others cannot
//! read it; instead the owner listens on a Unix socket beside the file
//! (`executions/<id>.sock`). A request is one JSON line (`{"op": "status"}`,
//! `{"op": "cancel"}` or `{"op": "signal", "name": ..., "payload": ...}`),
//! the answer one JSON line.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

use crate::scheduler::Cancel;
use crate::store::executions::{EventKind, ExecutionLog};

/// What the owner answers to `status`: record, tasks and events.
pub(super) fn snapshot(log: &ExecutionLog) -> Result<Value, String> {
    let record = log.record().map_err(|e| e.to_string())?;
    let tasks = log.tasks().map_err(|e| e.to_string())?;
    let events = log.events().map_err(|e| e.to_string())?;
    Ok(json!({ "record": record, "tasks": tasks, "events": events }))
}

/// Serves requests for a running execution until dropped (the socket file
/// is removed then).
pub(super) struct ControlServer {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl ControlServer {
    pub(super) fn start(
        path: &Path,
        log: Arc<ExecutionLog>,
        cancel: Arc<Cancel>,
    ) -> std::io::Result<Self> {
        let _ = std::fs::remove_file(path);
        let listener = tokio::net::UnixListener::bind(path)?;
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (log, cancel) = (Arc::clone(&log), Arc::clone(&cancel));
                tokio::spawn(async move {
                    let (read, mut write) = stream.into_split();
                    let mut line = String::new();
                    let mut reader = tokio::io::BufReader::new(read);
                    if reader.read_line(&mut line).await.is_err() {
                        return;
                    }
                    let request: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                    let answer = match request["op"].as_str() {
                        Some("cancel") => {
                            log.note(EventKind::CancelRequested);
                            cancel.cancel();
                            json!({ "ok": true })
                        }
                        Some("signal") => {
                            let name = request["name"].as_str().unwrap_or_default().to_owned();
                            let payload = request["payload"].clone();
                            tokio::task::spawn_blocking(move || log.signal(&name, &payload))
                                .await
                                .map_err(|e| e.to_string())
                                .and_then(|r| r.map_err(|e| e.to_string()))
                                .map_or_else(|e| json!({ "error": e }), |()| json!({ "ok": true }))
                        }
                        Some("status") => tokio::task::spawn_blocking(move || snapshot(&log))
                            .await
                            .map_err(|e| e.to_string())
                            .and_then(|r| r)
                            .unwrap_or_else(|e| json!({ "error": e })),
                        _ => json!({ "error": "unknown request" }),
                    };
                    let _ = write.write_all(format!("{answer}\n").as_bytes()).await;
                });
            }
        });
        Ok(Self {
            path: path.to_owned(),
            task,
        })
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Sends one request (`{"op": ...}` plus `fields`) to the owner of an execution.
pub(super) fn request(path: &Path, op: &str) -> Result<Value, String> {
    request_with(path, json!({ "op": op }))
}

/// Sends one request object to the owner of an execution.
pub(super) fn request_with(path: &Path, request: Value) -> Result<Value, String> {
    let mut stream = std::os::unix::net::UnixStream::connect(path).map_err(|e| {
        format!(
            "the process running it does not answer on {} ({e})",
            path.display()
        )
    })?;
    stream
        .write_all(format!("{request}\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    let answer: Value = serde_json::from_str(&line).map_err(|e| e.to_string())?;
    match answer["error"].as_str() {
        Some(error) => Err(error.to_owned()),
        None => Ok(answer),
    }
}
