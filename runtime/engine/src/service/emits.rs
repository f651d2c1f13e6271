//! Where what plugins emit goes: into the event log of the execution that
//! runs them (as `emitted` events, so any follower of that execution sees
//! streamed text), and to the runner's observer if it has one (the CLI's
//! printer).
//!
//! Plugins are prepared before their execution exists, so their emitter
//! finds the log by execution id among the executions this runner is
//! driving now ([`EmitRoutes::register`]). While it is registered, what is
//! noted in the log (emits, attempt starts, cancel requests) is written
//! with the next commit, and at most [`FLUSH_INTERVAL`] after it was noted,
//! so followers see a long task start and stream; and the execution's lease
//! is renewed, so a long task does not let it run out.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use orchestrator_sandbox::{Emit, Emitter};
use orchestrator_store::executions::{EventKind, ExecutionLog};

/// How long an emit may wait before it is written to the log.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// The executions whose logs receive emits, and the runner's observer.
#[derive(Default)]
pub struct EmitRoutes {
    logs: Mutex<HashMap<String, Route>>,
    observer: Option<Emitter>,
}

struct Route {
    log: Arc<ExecutionLog>,
}

impl std::fmt::Debug for EmitRoutes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmitRoutes")
            .field("observer", &self.observer.is_some())
            .finish_non_exhaustive()
    }
}

impl EmitRoutes {
    /// Routes that also hand every emit to `observer`.
    pub fn observed_by(observer: Option<Emitter>) -> Self {
        Self {
            logs: Mutex::default(),
            observer,
        }
    }

    /// The emitter plugins are given.
    pub fn emitter(self: &Arc<Self>) -> Emitter {
        let routes = Arc::clone(self);
        Emitter::new(move |emit| routes.emit(emit))
    }

    fn emit(&self, emit: &Emit<'_>) {
        if let Some(route) = self.logs.lock().expect("routes lock").get(emit.execution) {
            route.log.note(EventKind::Emitted {
                task: emit.task.to_owned(),
                attempt: emit.attempt,
                kind: emit.kind.to_owned(),
                data: emit.data.to_owned(),
            });
        }
        if let Some(observer) = &self.observer {
            observer.receive(emit);
        }
    }

    /// Sends emits of execution `id` to `log` until the registration is
    /// closed (or dropped), writes what is noted in it at most
    /// [`FLUSH_INTERVAL`] after it came, and renews its lease
    /// ([`ExecutionLog::renew_interval`]). Call it inside a tokio runtime.
    pub fn register(self: &Arc<Self>, id: &str, log: Arc<ExecutionLog>) -> Registration {
        let stop = Arc::new(tokio::sync::Notify::new());
        let flusher = {
            let (noted, stop) = (log.on_note(), Arc::clone(&stop));
            let renew_every = log.renew_interval();
            // Weak: the flusher never keeps the execution open.
            let log = Arc::downgrade(&log);
            tokio::spawn(async move {
                let mut renewed = tokio::time::Instant::now();
                loop {
                    let noted_first = tokio::select! {
                        () = noted.notified() => true,
                        () = tokio::time::sleep_until(renewed + renew_every) => false,
                        () = stop.notified() => return,
                    };
                    if noted_first {
                        tokio::select! {
                            () = tokio::time::sleep(FLUSH_INTERVAL) => {}
                            () = stop.notified() => return,
                        }
                    }
                    let renew = renewed.elapsed() >= renew_every;
                    let Some(log) = log.upgrade() else {
                        return;
                    };
                    let written = tokio::task::spawn_blocking(move || {
                        if renew {
                            log.renew()
                        } else {
                            log.flush_notes()
                        }
                    });
                    match written.await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => tracing::warn!("writing noted events: {e}"),
                        Err(e) => tracing::warn!("writing noted events: {e}"),
                    }
                    if renew {
                        renewed = tokio::time::Instant::now();
                    }
                }
            })
        };
        self.logs
            .lock()
            .expect("routes lock")
            .insert(id.to_owned(), Route { log });
        Registration {
            routes: Arc::clone(self),
            id: id.to_owned(),
            stop,
            flusher: Some(flusher),
        }
    }
}

/// Keeps an execution's emits going to its log; closing or dropping it
/// stops that (what is noted is written by the execution's next commit).
#[derive(Debug)]
pub struct Registration {
    routes: Arc<EmitRoutes>,
    id: String,
    stop: Arc<tokio::sync::Notify>,
    flusher: Option<tokio::task::JoinHandle<()>>,
}

impl Registration {
    /// Stops routing and waits until the flusher is done (a write it had
    /// begun included), so nothing here holds the execution's file open
    /// any more.
    pub async fn close(mut self) {
        self.stop.notify_one();
        if let Some(flusher) = self.flusher.take() {
            let _ = flusher.await;
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(flusher) = &self.flusher {
            flusher.abort();
        }
        self.routes
            .logs
            .lock()
            .expect("routes lock")
            .remove(&self.id);
    }
}
