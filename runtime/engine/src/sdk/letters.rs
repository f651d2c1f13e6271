//! Dead letters through an [`Engine`]: this tenant's tasks that failed for
//! good, and replaying or purging them ([`crate::dead_letters`] does the
//! work on the execution files).

use serde_json::Value;

use super::engine::{Engine, blocking};
use super::handle::ExecutionHandle;
use crate::dead_letters::{self, Replay};
use crate::service::ServiceError;
use orchestrator_store::executions::{DeadLetter, LogEvent};

/// One open dead letter.
#[derive(Debug, Clone)]
pub struct Letter {
    /// Its id: `<execution id>/<task id>`.
    pub id: String,
    /// The execution it belongs to.
    pub execution: String,
    /// What failed, and how.
    pub letter: DeadLetter,
}

impl Engine {
    /// This tenant's open dead letters (of executions no process is
    /// writing to just now).
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), orchestrator_engine::service::ServiceError> {
    /// let engine = orchestrator_engine::Engine::builder().build().await?;
    /// for letter in engine.dead_letters().await? {
    ///     println!("{}: {}", letter.id, letter.letter.error);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn dead_letters(&self) -> Result<Vec<Letter>, ServiceError> {
        let executions = self.executions().clone();
        let open = blocking(move || Ok(dead_letters::open_letters(&executions))).await?;
        Ok(open
            .into_iter()
            .map(|(execution, letter)| Letter {
                id: format!("{execution}/{}", letter.task),
                execution,
                letter,
            })
            .collect())
    }

    /// Dead letter `id` (`<execution id>/<task id>`) and the failed
    /// attempts its execution recorded.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), orchestrator_engine::service::ServiceError> {
    /// let engine = orchestrator_engine::Engine::builder().build().await?;
    /// let (letter, attempts) = engine.dead_letter("18ed02e9c1cb11ba-2a4f/fetch").await?;
    /// println!("{} after {} attempts", letter.error, attempts.len());
    /// # Ok(()) }
    /// ```
    pub async fn dead_letter(&self, id: &str) -> Result<(DeadLetter, Vec<LogEvent>), ServiceError> {
        let (executions, id) = (self.executions().clone(), id.to_owned());
        blocking(move || dead_letters::find(&executions, &id)).await
    }

    /// Runs dead letter `id`'s task again (with `input` instead of its
    /// resolved `with:`, when given), and the tasks its failure kept from
    /// running: its execution is reopened and resumed here.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), orchestrator_engine::service::ServiceError> {
    /// let engine = orchestrator_engine::Engine::builder().build().await?;
    /// let (replay, execution) = engine.replay("18ed02e9c1cb11ba-2a4f/fetch", None).await?;
    /// println!("{} runs again", replay.task);
    /// execution.wait().await?;
    /// # Ok(()) }
    /// ```
    pub async fn replay(
        &self,
        id: &str,
        input: Option<Value>,
    ) -> Result<(Replay, ExecutionHandle), ServiceError> {
        let (engine, id) = (self.clone(), id.to_owned());
        let replay = blocking(move || {
            engine.keeping.with_store(|store| {
                dead_letters::prepare_replay(
                    engine.executions(),
                    store,
                    &engine.expressions,
                    &id,
                    input.as_ref(),
                )
            })
        })
        .await?;
        let execution = self.resume(&replay.execution).await?;
        Ok((replay, execution))
    }

    /// Removes dead letters `ids` from the queue, or every open one when
    /// `all`; their executions keep the record. Returns how many.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), orchestrator_engine::service::ServiceError> {
    /// let engine = orchestrator_engine::Engine::builder().build().await?;
    /// let purged = engine.purge(Vec::new(), true).await?;
    /// println!("purged {purged}");
    /// # Ok(()) }
    /// ```
    pub async fn purge(&self, ids: Vec<String>, all: bool) -> Result<usize, ServiceError> {
        let executions = self.executions().clone();
        blocking(move || dead_letters::purge(&executions, &ids, all)).await
    }
}
