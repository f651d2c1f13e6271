//! Driving a run the engine started to its end: parking it whenever only
//! its waits are left for [`PARK_AFTER`], and taking it up again from its
//! file when a signal, a cancel or its earliest deadline comes.

use std::sync::Arc;

use super::engine::{Engine, PARK_AFTER, Work, blocking};
use super::handle::Running;
use crate::control::ControlServer;
use crate::service::{self, ServiceError};
use orchestrator_core::scheduler::Ran;
use orchestrator_store::executions::{ExecutionError, ExecutionStatus};

/// How many times a woken run tries to open its file again (50 ms apart)
/// while others hold it to read it.
const TAKE_UP_TRIES: u32 = 100;

/// How long a woken run that found no run slot stays parked before it
/// tries again, ms.
const BUSY_RETRY_MS: u64 = 1000;
impl Engine {
    /// Drives `work` to its end, parking it whenever only waits are left
    /// for [`PARK_AFTER`] (when other processes could reach it parked) and
    /// taking it up again when a signal, a cancel or its earliest deadline
    /// comes. `Err` says why it could not be recorded to its end.
    pub(super) async fn run_to_end(
        &self,
        running: &Arc<Running>,
        mut work: Work,
        mut control: Option<ControlServer>,
    ) -> Result<(), String> {
        let mut park_after = (control.is_some() && self.parked.can_park()).then_some(PARK_AFTER);
        let mut woken = false;
        loop {
            let (runner, loaded, executor, mut execution) = work;
            let id = execution.id.clone();
            let file = Arc::downgrade(&execution.log);
            execution.cancel = Arc::clone(running.cancel());
            let park = service::Park {
                after: park_after,
                woken,
            };
            // Boxed: a parked run keeps none of this future's room.
            let ran =
                Box::pin(runner.drive_or_park(&loaded, executor, execution, (None, &|_| {}, park)))
                    .await;
            drop(control.take());
            let parked = match ran {
                Ok(Ran::Finished(_)) => return Ok(()),
                Ok(Ran::Parked(parked)) => parked,
                // Woken while the process runs all the runs it may: it
                // stays parked and tries again in a moment.
                Err(ServiceError::Busy(_)) if woken => orchestrator_core::scheduler::Parked {
                    waits: Vec::new(),
                    wake_at: Some(orchestrator_store::executions::now_ms() + BUSY_RETRY_MS),
                },
                Err(e) => return Err(e.to_string()),
            };
            drop((runner, loaded));
            // Parked before the file is let go: whoever finds it busy
            // meanwhile asks the parked socket and tries again, and what
            // is recorded from now on wakes the run.
            let mut here = match self
                .parked
                .park(&self.executions, &id, Arc::clone(running.wake()))
            {
                Ok(here) => Some(here),
                Err(e) => {
                    tracing::warn!(execution = %id, "the run cannot park, so it goes on: {e}");
                    park_after = None;
                    None
                }
            };
            // A signal or a cancel recorded through the file before it was
            // parked (its control socket answered until just now) wakes it.
            if here.is_some()
                && let Some(log) = running.live()
            {
                let waits = parked.waits.clone();
                let recorded = blocking(move || {
                    let ended = log.record()?.status != ExecutionStatus::Running;
                    let mut signalled = false;
                    for wait in &waits {
                        signalled |= log.signal_payload(&wait.signal)?.is_some();
                    }
                    Ok(ended || signalled)
                })
                .await;
                if !matches!(recorded, Ok(false)) {
                    running.wake().notify_one();
                }
            }
            running.park();
            // The run's tasks let go of the file as they are dropped, a
            // moment after their abort: parked means closed.
            for _ in 0..1000 {
                if file.strong_count() == 0 {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
            if let Some(here) = &mut here {
                here.closed();
                let wake_at = parked.wake_at.map(|at| {
                    let left = at.saturating_sub(orchestrator_store::executions::now_ms());
                    tokio::time::Instant::now() + std::time::Duration::from_millis(left)
                });
                tokio::select! {
                    () = running.wake().notified() => {}
                    () = running.cancel().cancelled() => {}
                    () = async {
                        match wake_at {
                            Some(at) => tokio::time::sleep_until(at).await,
                            None => std::future::pending().await,
                        }
                    } => {}
                }
            }
            // Taken up while still parked, so no other process takes it
            // meanwhile.
            work = match self.take_up_again(&id).await {
                Ok(Some(work)) => work,
                // Finished meanwhile (cancelled through its file) or taken
                // up by another process: its handles read the file.
                Ok(None) => return Ok(()),
                Err(e) => return Err(e.to_string()),
            };
            // The cancel its handles hold.
            work.3.cancel = Arc::clone(running.cancel());
            control = ControlServer::serve(&self.executions, &work.3).map_err(|e| e.to_string())?;
            drop(here);
            running.unpark(Arc::clone(&work.3.log));
            woken = true;
        }
    }

    /// Takes up again execution `id`, which this engine parked: `None`
    /// when there is nothing to take up (it finished meanwhile, or another
    /// process runs it). A process reading its file at that moment only
    /// delays it.
    async fn take_up_again(&self, id: &str) -> Result<Option<Work>, ServiceError> {
        let mut tries = 0;
        loop {
            let error = match self.take_up(id, true).await {
                Ok(work) => return Ok(Some(work)),
                Err(e) => e,
            };
            let (executions, id) = (self.executions.clone(), id.to_owned());
            let elsewhere = blocking(move || match executions.read(&id) {
                Ok(log) => Ok(log.record()?.status != ExecutionStatus::Running),
                // Held by a process that runs it: it answers on a socket.
                Err(ExecutionError::Busy(_)) => Ok(executions.socket(&id).is_some_and(|s| {
                    std::fs::symlink_metadata(s).is_ok_and(|m| !m.file_type().is_symlink())
                })),
                Err(e) => Err(ServiceError::from(e)),
            })
            .await?;
            if elsewhere {
                return Ok(None);
            }
            tries += 1;
            if tries == TAKE_UP_TRIES {
                return Err(error);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}
