//! Executions this process parked: runs whose only unfinished tasks wait
//! for a signal or a deadline ([`crate::service::Park`]), which hold no
//! file, task or run slot meanwhile, only what wakes them.
//!
//! Other processes find them through one socket per engine and
//! executions directory, `.parked-<pid>-<nonce>.sock`; a parked execution's
//! control socket path, `<id>.sock`, is a symbolic link to it. A process
//! that records a signal or a cancel in the file of a parked execution
//! asks its owner to wake it (`{"op": "wake", "id": ...}`); one that wants
//! to know whether a live process keeps it asks `{"op": "parked", "id":
//! ...}`. Both answer one JSON line, `{"parked": true|false}`. A socket
//! left by a process that died refuses connections, so its executions
//! read as interrupted, and any process may resume them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt as _, AsyncWriteExt};
use tokio::sync::Notify;

use crate::control;
use crate::store::executions::Executions;

/// Tells the parked runs of one process's engines apart.
static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// The executions one engine parked, and the socket where other processes
/// reach them.
#[derive(Debug)]
pub struct ParkedRuns {
    /// `.parked-<pid>-<nonce>.sock` in the executions directory; `None` when the
    /// backend has no sockets (memory), whose runs never park.
    socket: Option<PathBuf>,
    inner: Arc<Mutex<Lot>>,
}

#[derive(Debug, Default)]
struct Lot {
    /// What wakes each parked execution, by id.
    waiting: HashMap<String, Arc<Notify>>,
    /// How many of them have let their file go.
    closed: usize,
    /// Answers the socket, once anything parked.
    server: Option<tokio::task::JoinHandle<()>>,
}

impl ParkedRuns {
    /// The parked runs of `executions`, none yet.
    pub fn new(executions: &Executions) -> Self {
        // Its own name: another engine on the same directory (in this
        // process, or in a container with the same pid) has another.
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
            ^ NEXT
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                .wrapping_mul(0x9e37_79b9);
        let socket = executions.socket("parked").map(|any| {
            any.with_file_name(format!(".parked-{}-{nonce:08x}.sock", std::process::id()))
        });
        Self {
            socket,
            inner: Arc::default(),
        }
    }

    /// Whether runs of these executions can park: other processes can
    /// reach them parked.
    pub fn can_park(&self) -> bool {
        self.socket.is_some()
    }

    /// How many are parked now, their files closed.
    pub fn len(&self) -> usize {
        self.inner.lock().expect("parked lock").closed
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Parks execution `id` until the returned guard is dropped: a `wake`
    /// from another process notifies `wake`. Call it inside a tokio
    /// runtime.
    pub fn park(
        &self,
        executions: &Executions,
        id: &str,
        wake: Arc<Notify>,
    ) -> std::io::Result<Here> {
        let (Some(socket), Some(link)) = (&self.socket, executions.socket(id)) else {
            return Err(std::io::Error::other("these executions have no sockets"));
        };
        let mut lot = self.inner.lock().expect("parked lock");
        if lot
            .server
            .as_ref()
            .is_none_or(tokio::task::JoinHandle::is_finished)
        {
            lot.server = Some(serve(socket, Arc::clone(&self.inner))?);
        }
        drop(lot);
        let target = socket.file_name().expect("a file name").to_owned();
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&target, &link)?;
        self.inner
            .lock()
            .expect("parked lock")
            .waiting
            .insert(id.to_owned(), wake);
        Ok(Here {
            id: id.to_owned(),
            link,
            target: PathBuf::from(target),
            inner: Arc::clone(&self.inner),
            closed: false,
        })
    }
}

impl Drop for ParkedRuns {
    fn drop(&mut self) {
        let server = self.inner.lock().expect("parked lock").server.take();
        if let (Some(server), Some(socket)) = (server, &self.socket) {
            server.abort();
            let _ = std::fs::remove_file(socket);
        }
    }
}

/// One parked execution: dropping it takes it out (its link goes, unless
/// something else took the path meanwhile).
#[derive(Debug)]
pub struct Here {
    id: String,
    link: PathBuf,
    target: PathBuf,
    inner: Arc<Mutex<Lot>>,
    /// Whether its file is closed.
    closed: bool,
}

impl Here {
    /// Its file is closed now: it counts as parked.
    pub fn closed(&mut self) {
        if !self.closed {
            self.closed = true;
            self.inner.lock().expect("parked lock").closed += 1;
        }
    }
}

impl Drop for Here {
    fn drop(&mut self) {
        let mut lot = self.inner.lock().expect("parked lock");
        lot.waiting.remove(&self.id);
        if self.closed {
            lot.closed -= 1;
        }
        drop(lot);
        if std::fs::read_link(&self.link).is_ok_and(|to| to == self.target) {
            let _ = std::fs::remove_file(&self.link);
        }
    }
}

/// Listens at `socket` for `wake` and `parked` requests.
fn serve(socket: &Path, lot: Arc<Mutex<Lot>>) -> std::io::Result<tokio::task::JoinHandle<()>> {
    use std::os::unix::fs::PermissionsExt as _;
    let _ = std::fs::remove_file(socket);
    let listener = tokio::net::UnixListener::bind(socket)?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    Ok(tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            while connections.try_join_next().is_some() {}
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            // Each answer is a lookup: a few at once are plenty.
            if connections.len() >= 16 {
                let _ = connections.join_next().await;
            }
            connections.spawn(answer(stream, Arc::clone(&lot)));
        }
    }))
}

/// Answers one connection: one request line, bounded in size and time,
/// from a process of this user.
async fn answer(stream: tokio::net::UnixStream, lot: Arc<Mutex<Lot>>) {
    let peer = stream.peer_cred().map(|c| c.uid());
    let (read, mut write) = stream.into_split();
    let answer = match peer {
        Ok(uid) if uid == orchestrator_private::current_uid() => {
            let mut line = Vec::new();
            let mut reader = tokio::io::BufReader::new(read.take(control::MAX_REQUEST_BYTES));
            let read = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                reader.read_until(b'\n', &mut line),
            )
            .await;
            match read {
                Ok(Ok(_)) => respond(&line, &lot),
                _ => json!({ "error": "no request line within 5 s" }),
            }
        }
        Ok(uid) => {
            json!({ "error": format!("user {uid} may not reach another user's executions") })
        }
        Err(e) => json!({ "error": format!("cannot tell who is asking: {e}") }),
    };
    let _ = write.write_all(format!("{answer}\n").as_bytes()).await;
}

/// The answer to one request line.
fn respond(line: &[u8], lot: &Mutex<Lot>) -> Value {
    let Ok(request) = serde_json::from_slice::<Value>(line) else {
        return json!({ "error": "the request is not JSON" });
    };
    let (Some(op), Some(id)) = (request["op"].as_str(), request["id"].as_str()) else {
        // A client that found the file busy a moment ago asks as it would
        // ask a running execution's owner: it reads the file again.
        return json!({ "error": "the execution was just parked; read its file again" });
    };
    let wake = lot.lock().expect("parked lock").waiting.get(id).cloned();
    match op {
        "wake" => {
            if let Some(wake) = &wake {
                wake.notify_one();
            }
        }
        "parked" => {}
        _ => return json!({ "error": "unknown request" }),
    }
    json!({ "parked": wake.is_some() })
}

/// Whether a live process keeps execution `id` parked. Blocks.
pub fn is_parked(executions: &Executions, id: &str) -> bool {
    ask(executions, id, "parked")
}

/// Asks the process that parked execution `id`, if one does, to take it
/// up again: something was recorded in its file. Blocks.
pub fn wake(executions: &Executions, id: &str) -> bool {
    ask(executions, id, "wake")
}

fn ask(executions: &Executions, id: &str, op: &str) -> bool {
    let Some(link) = executions.socket(id) else {
        return false;
    };
    // Only a link is a parked execution's; a socket is a running one's.
    if !std::fs::symlink_metadata(&link).is_ok_and(|m| m.file_type().is_symlink()) {
        return false;
    }
    control::request_with(&link, json!({ "op": op, "id": id }))
        .is_ok_and(|answer| answer["parked"] == true)
}
