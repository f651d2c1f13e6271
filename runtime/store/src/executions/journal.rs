//! The scheduler's journal over an execution file: final states become
//! commits (off the async threads unless nothing else could run), failed
//! attempts that are retried are recorded before their wait, and waits find
//! their signals.

use std::sync::Arc;

use super::{EventKind, ExecutionLog, LogEvent, now_ms};
use orchestrator_core::scheduler::{
    Journal, PendingRetry, Signals, TaskFailure, TaskReport, WaitOutcome,
};

/// The journal of one execution: the scheduler hands it final states, and
/// each batch becomes one durable commit, off the async threads.
#[derive(Debug, Clone)]
pub struct ExecutionJournal {
    log: Arc<ExecutionLog>,
}

impl ExecutionJournal {
    /// A journal writing to `log`.
    pub fn new(log: Arc<ExecutionLog>) -> Self {
        Self { log }
    }
}

impl Journal for ExecutionJournal {
    fn attempt_started(&self, task: &str, attempt: u32, fallback: bool) {
        self.log.note(EventKind::AttemptStarted {
            task: task.to_owned(),
            attempt,
            fallback,
        });
    }

    fn items_started(&self, task: &str, items: usize, finished: usize) {
        self.log.note(EventKind::ItemsStarted {
            task: task.to_owned(),
            items,
            finished,
        });
    }

    fn attempt_failed(
        &self,
        task: &str,
        attempt: u32,
        failure: &TaskFailure,
        retry: Option<PendingRetry>,
    ) -> impl std::future::Future<Output = Result<(), String>> + Send + 'static {
        let kind = EventKind::AttemptFailed {
            task: task.to_owned(),
            attempt,
            kind: failure.kind,
            error: failure.message.clone(),
            retry_at: retry.as_ref().map(|r| r.due_at),
        };
        let log = Arc::clone(&self.log);
        async move {
            let Some(retry) = retry else {
                log.note(kind);
                return Ok(());
            };
            let failed = LogEvent {
                at: retry.failed_at,
                kind,
            };
            tokio::task::spawn_blocking(move || log.schedule_retry(failed, &retry))
                .await
                .map_err(|e| format!("the commit did not finish: {e}"))?
                .map_err(|e| e.to_string())
        }
    }

    fn commit(
        &self,
        reports: Vec<TaskReport>,
        idle: bool,
    ) -> impl std::future::Future<Output = Result<(), String>> + Send {
        use tokio::runtime::{Handle, RuntimeFlavor};
        let log = Arc::clone(&self.log);
        // When nothing else of the run could proceed meanwhile (a strict
        // chain), the fsync runs right here, when the future is polled: a
        // hand-off to a blocking thread and back costs a chain ~90 µs per
        // step. Otherwise it starts on a blocking thread at once, before
        // the future is polled, so a batched run keeps committing while
        // the scheduler runs tasks inline.
        let inline = idle && Handle::current().runtime_flavor() == RuntimeFlavor::MultiThread;
        let mut pending = Some(reports);
        let started = (!inline).then(|| {
            let reports = pending.take().expect("not taken");
            let log = Arc::clone(&log);
            tokio::task::spawn_blocking(move || log.commit_tasks(&reports))
        });
        async move {
            match (started, pending) {
                (Some(handle), _) => handle
                    .await
                    .map_err(|e| format!("the commit did not finish: {e}"))?
                    .map_err(|e| e.to_string()),
                (None, Some(reports)) => tokio::task::block_in_place(|| log.commit_tasks(&reports))
                    .map_err(|e| e.to_string()),
                (None, None) => unreachable!("the reports go to one of the two paths"),
            }
        }
    }
}

impl Signals for ExecutionJournal {
    fn start_wait(
        &self,
        task: &str,
        signal: &str,
        timeout: Option<std::time::Duration>,
    ) -> impl std::future::Future<Output = Result<Option<u64>, String>> + Send + 'static {
        let log = Arc::clone(&self.log);
        let (task, signal) = (task.to_owned(), signal.to_owned());
        async move {
            tokio::task::spawn_blocking(move || log.start_wait(&task, &signal, timeout))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())
        }
    }

    fn wait(
        &self,
        signal: &str,
        deadline: Option<u64>,
    ) -> impl std::future::Future<Output = WaitOutcome> + Send + 'static {
        let log = Arc::clone(&self.log);
        let signal = signal.to_owned();
        async move {
            loop {
                // Registered before the check, so a signal in between wakes us.
                let signalled = log.signalled.notified();
                if let Some(payload) = log.signal_payload(&signal).map_err(|e| e.to_string())? {
                    return Ok(Some(payload));
                }
                match deadline {
                    Some(deadline) => {
                        let left = deadline.saturating_sub(now_ms());
                        if left == 0 {
                            return Ok(None);
                        }
                        tokio::select! {
                            () = signalled => {}
                            () = tokio::time::sleep(std::time::Duration::from_millis(left)) => {}
                        }
                    }
                    None => signalled.await,
                }
            }
        }
    }
}
