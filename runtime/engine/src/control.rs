//! Reaching an execution that another process is running.
//!
//! The process that owns an execution holds its file open, so others cannot
//! read it; instead the owner listens on a Unix socket beside the file
//! (`executions/<id>.sock`). A request is one JSON line (`{"op": "status"}`,
//! `{"op": "cancel"}` or `{"op": "signal", "name": ..., "payload": ...,
//! "request_id": ...}`),
//! the answer one JSON line; to `{"op": "follow", "from": N}` the owner
//! answers with the events numbered `N` onwards, one JSON line each
//! (`{"seq": N, "at": ..., "event": ...}`), as they are committed, until
//! the execution finishes.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt as _, AsyncWriteExt};

use crate::service::{Execution, ServiceError};
use crate::store::executions::{EventKind, ExecutionLog, Executions, LogEvent};
use orchestrator_core::scheduler::Cancel;

/// What the owner answers to `status`: record, tasks and events.
pub fn snapshot(log: &ExecutionLog) -> Result<Value, String> {
    let record = log.record().map_err(|e| e.to_string())?;
    let tasks = log.tasks().map_err(|e| e.to_string())?;
    let events = log.events().map_err(|e| e.to_string())?;
    Ok(json!({ "record": record, "tasks": tasks, "events": events }))
}

/// The longest request line the owner reads.
pub const MAX_REQUEST_BYTES: u64 = 64 << 10;

/// How long the owner waits for a request line.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Connections served at once; more wait to be accepted.
const MAX_CONNECTIONS: usize = 16;

/// Followers served at once. A follow gives its connection slot back once
/// it is known to be one, so followers never keep a cancel or a signal
/// waiting.
const MAX_FOLLOWERS: usize = 64;

/// How long a client waits for an answer.
const ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A request to the owner of an execution.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// Its record, task states and events.
    Status,
    /// Stop it.
    Cancel,
    /// Deliver signal `name` with `payload`.
    Signal {
        /// The signal's name.
        name: String,
        /// Its payload.
        payload: Value,
        /// The sender's id for this request: sent again, it is not
        /// recorded again.
        request_id: Option<String>,
    },
    /// Its events numbered `from` onwards, then each as it is committed.
    Follow {
        /// The first event wanted.
        from: u64,
    },
}

impl Request {
    /// Reads one request line, as another process sent it: anything that is
    /// not a whole, known request is an error saying what is wrong.
    pub fn decode(line: &[u8]) -> Result<Self, String> {
        if line.len() as u64 > MAX_REQUEST_BYTES {
            return Err(format!(
                "the request is larger than {} KiB",
                MAX_REQUEST_BYTES >> 10
            ));
        }
        let request: Value =
            serde_json::from_slice(line).map_err(|e| format!("the request is not JSON: {e}"))?;
        match request["op"].as_str() {
            Some("status") => Ok(Self::Status),
            Some("cancel") => Ok(Self::Cancel),
            Some("follow") => match &request["from"] {
                Value::Null => Ok(Self::Follow { from: 0 }),
                from => from
                    .as_u64()
                    .map(|from| Self::Follow { from })
                    .ok_or_else(|| "`from` is an event number (0 or more)".to_owned()),
            },
            Some("signal") => match request["name"].as_str() {
                Some(name) if !name.is_empty() => Ok(Self::Signal {
                    name: name.to_owned(),
                    payload: request["payload"].clone(),
                    request_id: request["request_id"].as_str().map(str::to_owned),
                }),
                _ => Err("a signal request needs a `name`".to_owned()),
            },
            _ => Err("unknown request".to_owned()),
        }
    }
}

/// Serves requests for a running execution until dropped (the socket file
/// is removed then). Only processes of this user are answered (checked
/// with `SO_PEERCRED`), one bounded request line per connection.
pub struct ControlServer {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl ControlServer {
    /// Answers other processes about `execution`, a run of this process,
    /// at its control socket, when its backend has one (the files do;
    /// memory keeps executions in this process, so there is no one to
    /// answer). Call it inside a tokio runtime.
    pub fn serve(
        executions: &Executions,
        execution: &Execution,
    ) -> Result<Option<Self>, ServiceError> {
        let Some(socket) = executions.socket(&execution.id) else {
            return Ok(None);
        };
        Self::start(
            &socket,
            Arc::clone(&execution.log),
            Arc::clone(&execution.cancel),
        )
        .map(Some)
        .map_err(|e| ServiceError::Plugin(format!("cannot listen on {}: {e}", socket.display())))
    }

    /// Listens at `path` for requests about the execution in `log`,
    /// cancelling it through `cancel` when asked.
    pub fn start(
        path: &Path,
        log: Arc<ExecutionLog>,
        cancel: Arc<Cancel>,
    ) -> std::io::Result<Self> {
        use std::os::unix::fs::PermissionsExt as _;
        let _ = std::fs::remove_file(path);
        let listener = tokio::net::UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        let followers = Arc::new(tokio::sync::Semaphore::new(MAX_FOLLOWERS));
        // Not a strong reference: the server never keeps the file open
        // once its run lets it go (a parked run closes it at once).
        let log = Arc::downgrade(&log);
        // The connections are this task's: aborting it (on drop) ends them.
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                while connections.try_join_next().is_some() {}
                let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
                    return;
                };
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let Some(log) = log.upgrade() else {
                    return;
                };
                let cancel = Arc::clone(&cancel);
                let followers = Arc::clone(&followers);
                connections.spawn(serve(stream, log, cancel, slot, followers));
            }
        });
        Ok(Self {
            path: path.to_owned(),
            task,
        })
    }
}

/// Answers one connection, holding one of the connection `slot`s until it
/// is known to be a follow (which holds one of the `followers` instead).
async fn serve(
    stream: tokio::net::UnixStream,
    log: Arc<ExecutionLog>,
    cancel: Arc<Cancel>,
    slot: tokio::sync::OwnedSemaphorePermit,
    followers: Arc<tokio::sync::Semaphore>,
) {
    let peer = stream.peer_cred().map(|c| c.uid());
    let (mut read, mut write) = stream.into_split();
    let answer = match peer {
        Ok(uid) if may_control(uid) => match read_request(&mut read).await {
            Ok(Request::Follow { from }) => {
                drop(slot);
                match followers.try_acquire_owned() {
                    Ok(_follower) => {
                        // Only the events: a follower keeps no file open.
                        let events = crate::executions::follow_log(&log, from);
                        drop(log);
                        return follow(&mut read, &mut write, events).await;
                    }
                    Err(_) => json!({
                        "error": format!("{MAX_FOLLOWERS} followers are following this execution already; try again later")
                    }),
                }
            }
            Ok(request) => answer(request, log, cancel).await,
            Err(e) => json!({ "error": e }),
        },
        Ok(uid) => {
            json!({ "error": format!("user {uid} may not control another user's execution") })
        }
        Err(e) => json!({ "error": format!("cannot tell who is asking: {e}") }),
    };
    let _ = write.write_all(format!("{answer}\n").as_bytes()).await;
}

/// Writes `events` (those numbered from where the follower asked, then
/// each as it is committed) until the execution finished or the follower
/// left (its end of the socket closed).
async fn follow(
    read: &mut tokio::net::unix::OwnedReadHalf,
    write: &mut tokio::net::unix::OwnedWriteHalf,
    mut events: tokio::sync::mpsc::Receiver<Result<(u64, LogEvent), String>>,
) {
    let mut byte = [0u8; 1];
    loop {
        let event = tokio::select! {
            event = events.recv() => event,
            // A follower sends nothing more: any read ending is its leaving.
            _ = read.read(&mut byte) => return,
        };
        let Some(event) = event else {
            return;
        };
        let line = match event {
            Ok((seq, event)) => {
                let mut line = serde_json::to_value(&event).unwrap_or_default();
                if let Some(fields) = line.as_object_mut() {
                    fields.insert("seq".into(), seq.into());
                }
                line
            }
            Err(e) => json!({ "error": e }),
        };
        if write
            .write_all(format!("{line}\n").as_bytes())
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Follows the execution whose owner listens at `path` from event `from`:
/// `each(seq, event)` for every event line, until the execution finished
/// (`Ok(true)`), or the owner went away first, `each` returned false or
/// `wanted()` did (asked every second while nothing comes) (`Ok(false)`).
pub fn follow_remote(
    path: &Path,
    from: u64,
    wanted: &dyn Fn() -> bool,
    mut each: impl FnMut(u64, LogEvent) -> bool,
) -> Result<bool, String> {
    let stream = send(path, &json!({ "op": "follow", "from": from }))?;
    // Woken now and then to see whether the follower still wants events.
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(1)))
        .map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    let mut bytes = Vec::new();
    loop {
        match reader.read_until(b'\n', &mut bytes) {
            Ok(0) => return Ok(false),
            Ok(_) if bytes.ends_with(b"\n") => {}
            Ok(_) => return Ok(false),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                // Nothing new: the partial line stays in `bytes`.
                if wanted() {
                    continue;
                }
                return Ok(false);
            }
            Err(_) => return Ok(false),
        }
        let line = String::from_utf8_lossy(&bytes).into_owned();
        bytes.clear();
        let value: Value = serde_json::from_str(&line).map_err(|e| e.to_string())?;
        if let Some(error) = value["error"].as_str() {
            return Err(error.to_owned());
        }
        let seq = value["seq"]
            .as_u64()
            .ok_or_else(|| format!("an event without a number: {line}"))?;
        let event: LogEvent = serde_json::from_value(value).map_err(|e| e.to_string())?;
        let finished = matches!(event.kind, EventKind::ExecutionFinished { .. });
        if !each(seq, event) {
            return Ok(false);
        }
        if finished {
            return Ok(true);
        }
    }
}

/// Whether a process of user `uid` may control this process's execution:
/// only one of the same user.
fn may_control(uid: u32) -> bool {
    uid == orchestrator_private::current_uid()
}

/// Reads one request line, bounded in size and time.
async fn read_request(read: &mut tokio::net::unix::OwnedReadHalf) -> Result<Request, String> {
    let mut line = Vec::new();
    let mut reader = tokio::io::BufReader::new(read.take(MAX_REQUEST_BYTES + 1));
    tokio::time::timeout(REQUEST_TIMEOUT, reader.read_until(b'\n', &mut line))
        .await
        .map_err(|_| "no request within 5 s".to_owned())?
        .map_err(|e| e.to_string())?;
    Request::decode(&line)
}

async fn answer(request: Request, log: Arc<ExecutionLog>, cancel: Arc<Cancel>) -> Value {
    match request {
        Request::Follow { .. } => json!({ "error": "follow is answered as a stream" }),
        Request::Cancel => {
            log.note(EventKind::CancelRequested);
            cancel.cancel();
            json!({ "ok": true })
        }
        Request::Signal {
            name,
            payload,
            request_id,
        } => tokio::task::spawn_blocking(move || {
            log.signal_once(&name, &payload, request_id.as_deref())
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r.map_err(|e| e.to_string()))
        .map_or_else(|e| json!({ "error": e }), |_| json!({ "ok": true })),
        Request::Status => tokio::task::spawn_blocking(move || snapshot(&log))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r)
            .unwrap_or_else(|e| json!({ "error": e })),
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Connects to the owner listening at `path` and sends it `request`.
fn send(path: &Path, request: &Value) -> Result<std::os::unix::net::UnixStream, String> {
    let mut stream = std::os::unix::net::UnixStream::connect(path).map_err(|e| {
        format!(
            "the process running it does not answer on {} ({e})",
            path.display()
        )
    })?;
    stream
        .write_all(format!("{request}\n").as_bytes())
        .map_err(|e| e.to_string())?;
    Ok(stream)
}

/// Sends one request (`{"op": ...}` plus `fields`) to the owner of an execution.
pub fn request(path: &Path, op: &str) -> Result<Value, String> {
    request_with(path, json!({ "op": op }))
}

/// Sends one request object to the owner of an execution.
pub fn request_with(path: &Path, request: Value) -> Result<Value, String> {
    let stream = send(path, &request)?;
    stream
        .set_read_timeout(Some(ANSWER_TIMEOUT))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_user_may_control_an_execution() {
        let me = orchestrator_private::current_uid();
        assert!(may_control(me));
        assert!(!may_control(me.wrapping_add(1)));
    }

    #[test]
    fn requests_decode_or_say_what_is_wrong() {
        assert_eq!(Request::decode(br#"{"op":"status"}"#), Ok(Request::Status));
        assert_eq!(
            Request::decode(b"{\"op\":\"signal\",\"name\":\"go\",\"payload\":1}\n"),
            Ok(Request::Signal {
                name: "go".into(),
                payload: json!(1),
                request_id: None,
            })
        );
        assert_eq!(
            Request::decode(b"{\"op\":\"signal\",\"name\":\"go\",\"request_id\":\"r1\"}\n"),
            Ok(Request::Signal {
                name: "go".into(),
                payload: Value::Null,
                request_id: Some("r1".into()),
            })
        );
        assert!(Request::decode(br#"{"op":"signal"}"#).is_err());
        assert_eq!(
            Request::decode(br#"{"op":"follow","from":7}"#),
            Ok(Request::Follow { from: 7 })
        );
        assert!(Request::decode(br#"{"op":"follow","from":-1}"#).is_err());
        assert!(Request::decode(b"\xff\xfe").is_err());
        assert!(Request::decode(br#"{"op":"reboot"}"#).is_err());
        let huge = vec![b' '; (MAX_REQUEST_BYTES + 1) as usize];
        assert!(
            Request::decode(&huge)
                .unwrap_err()
                .contains("larger than 64 KiB")
        );
    }
}
