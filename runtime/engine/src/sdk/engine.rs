//! [`Engine`]: the runtime embedded in a Rust program. It keeps what the
//! `runtime` binary keeps (the store with its plugins, one file per
//! execution beside it), or keeps it all in memory
//! ([`EngineBuilder::in_memory`]), and starts executions that run on the
//! caller's tokio runtime, each reachable through an [`ExecutionHandle`]
//! and, when kept in files, from other processes (`runtime status ID`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};

use indexmap::IndexMap;
use serde_json::Value;
use tracing::Instrument;

use super::handle::{Ending, ExecutionHandle, Running};
use super::workflow::Workflow;
use crate::config::Config;
use crate::control::ControlServer;
use crate::executions::{self, ListFilter, Listing};
use crate::metrics::Metrics;
use crate::parking::ParkedRuns;
use crate::service::{self, Runner, ServiceError};
use orchestrator_core::expr::Expressions;
use orchestrator_core::tenant::TenantId;
use orchestrator_sandbox::Sandbox;
use orchestrator_sandbox::artifacts::ArtifactCache;
use orchestrator_store::Store;
use orchestrator_store::executions::memory::MemoryExecutions;
use orchestrator_store::executions::{ExecutionRecord, Executions, ExecutionsAt, valid_id};

/// Builds an [`Engine`].
#[derive(Debug, Default)]
pub struct EngineBuilder {
    store: Option<PathBuf>,
    in_memory: bool,
    /// Keep the store file open for the engine's life.
    hold: bool,
    config: Option<Config>,
    tenant: TenantId,
    /// Refuse workflows that name `.wasm` files.
    no_files: bool,
    /// What its runs are counted in.
    metrics: Option<Arc<Metrics>>,
}

/// Where an engine keeps plugins and executions.
#[derive(Debug, Clone)]
pub(super) enum Keeping {
    /// The store file, opened for each use, and execution files beside it.
    Files(PathBuf),
    /// The store file, open for the engine's life, and execution files
    /// beside it.
    Held(Store),
    /// Memory: nothing survives the process.
    Memory {
        store: Store,
        executions: MemoryExecutions,
    },
}

impl Keeping {
    fn executions_at(&self) -> ExecutionsAt {
        match self {
            Self::Files(path) => ExecutionsAt::Beside(path.clone()),
            Self::Held(store) => {
                ExecutionsAt::Beside(store.file().expect("a held store is a file").to_owned())
            }
            Self::Memory { executions, .. } => ExecutionsAt::Memory(executions.clone()),
        }
    }

    /// Runs `work` on the store: the file, opened for it (other processes
    /// use it between), or the one in memory. Blocks.
    pub(super) fn with_store<T>(
        &self,
        work: impl FnOnce(&Store) -> Result<T, ServiceError>,
    ) -> Result<T, ServiceError> {
        match self {
            Self::Files(path) => work(&Store::open(path)?),
            Self::Held(store) | Self::Memory { store, .. } => work(store),
        }
    }

    /// Installs the built-in plugins `tenant` lacks.
    async fn install_builtins(
        &self,
        sandbox: &Sandbox,
        tenant: &TenantId,
    ) -> Result<(), ServiceError> {
        match self {
            Self::Files(path) => drop(service::open_store(path, sandbox, tenant).await?),
            Self::Held(store) | Self::Memory { store, .. } => {
                service::install_builtins(store, sandbox, tenant).await?
            }
        }
        Ok(())
    }
}

impl EngineBuilder {
    /// Keeps plugins in the store file `path` and executions beside it
    /// (default: where `runtime` keeps them, `ORCHESTRATOR_STORE` or the
    /// user's data directory).
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), orchestrator_engine::service::ServiceError> {
    /// let engine = orchestrator_engine::Engine::builder()
    ///     .store("/srv/orchestrator/store.redb")
    ///     .build()
    ///     .await?;
    /// assert!(engine.store_path().is_some());
    /// # Ok(()) }
    /// ```
    pub fn store(self, path: impl Into<PathBuf>) -> Self {
        Self {
            store: Some(path.into()),
            ..self
        }
    }

    /// Keeps the store file open for the engine's life instead of opening
    /// it for each use: concurrent calls share it (a server's requests do
    /// not take turns at the file), and no other process can open it
    /// while the engine lives.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), orchestrator_engine::service::ServiceError> {
    /// let engine = orchestrator_engine::Engine::builder()
    ///     .store("/srv/orchestrator/store.redb")
    ///     .hold_store()
    ///     .build()
    ///     .await?;
    /// # let _ = engine;
    /// # Ok(()) }
    /// ```
    pub fn hold_store(self) -> Self {
        Self { hold: true, ..self }
    }

    /// Keeps plugins, executions, breakers and cached answers in memory
    /// instead of a store file (compiled plugins still use the artifact
    /// cache). Nothing it keeps survives the process, and no other
    /// process can see its executions.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), orchestrator_engine::service::ServiceError> {
    /// let engine = orchestrator_engine::Engine::builder().in_memory().build().await?;
    /// assert!(engine.store_path().is_none());
    /// # Ok(()) }
    /// ```
    pub fn in_memory(self) -> Self {
        Self {
            in_memory: true,
            ..self
        }
    }

    /// Uses this host configuration: secrets, capacity, prices, policies
    /// (default: none, and the default capacity).
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), orchestrator_engine::service::ServiceError> {
    /// use orchestrator_engine::config::Config;
    /// let config = Config::parse("capacity: { tasks: 8 }\n", "config.yaml")
    ///     .map_err(orchestrator_engine::service::ServiceError::Plugin)?;
    /// let engine = orchestrator_engine::Engine::builder().config(config).in_memory().build().await?;
    /// # let _ = engine;
    /// # Ok(()) }
    /// ```
    pub fn config(self, config: Config) -> Self {
        Self {
            config: Some(config),
            ..self
        }
    }

    /// Works for `tenant` (default: `default`): its plugins, workflows and
    /// executions, and no other tenant's.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), orchestrator_engine::service::ServiceError> {
    /// use orchestrator_engine::tenant::TenantId;
    /// let acme = TenantId::new("acme").map_err(orchestrator_engine::service::ServiceError::Inputs)?;
    /// let engine = orchestrator_engine::Engine::builder().tenant(acme).in_memory().build().await?;
    /// assert_eq!(engine.tenant().as_str(), "acme");
    /// # Ok(()) }
    /// ```
    pub fn tenant(self, tenant: TenantId) -> Self {
        Self { tenant, ..self }
    }

    /// Refuses workflows whose `uses:` names a `.wasm` file, without
    /// looking at the disk: for a server, whose callers may not run (or
    /// probe for) files on its host. They install plugins instead.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), orchestrator_engine::service::ServiceError> {
    /// let engine = orchestrator_engine::Engine::builder().without_files().build().await?;
    /// # let _ = engine;
    /// # Ok(()) }
    /// ```
    pub fn without_files(self) -> Self {
        Self {
            no_files: true,
            ..self
        }
    }

    /// Counts its executions, tasks and commits in `metrics` (a server's
    /// `/metrics`); engines made from it ([`Engine::for_tenant`]) count in
    /// the same.
    pub fn metrics(self, metrics: Arc<Metrics>) -> Self {
        Self {
            metrics: Some(metrics),
            ..self
        }
    }

    /// Starts the sandbox and opens the store once, installing the
    /// built-in plugins the tenant lacks.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), orchestrator_engine::service::ServiceError> {
    /// let engine = orchestrator_engine::Engine::builder().in_memory().build().await?;
    /// # let _ = engine;
    /// # Ok(()) }
    /// ```
    pub async fn build(self) -> Result<Engine, ServiceError> {
        let config = self.config.unwrap_or_default();
        let keeping = if self.in_memory {
            Keeping::Memory {
                store: Store::in_memory(),
                executions: MemoryExecutions::new(),
            }
        } else {
            let path = self.store.unwrap_or_else(Store::default_path);
            if self.hold {
                let held = tokio::task::spawn_blocking(move || Store::hold(&path))
                    .await
                    .map_err(|e| ServiceError::Plugin(format!("a storage thread failed: {e}")))??;
                Keeping::Held(held)
            } else {
                Keeping::Files(path)
            }
        };
        let sandbox = Sandbox::with_options(config.capacity, ArtifactCache::from_env())?;
        if let Some(metrics) = &self.metrics {
            sandbox.capacity().report_waits(Arc::clone(metrics) as _);
        }
        keeping.install_builtins(&sandbox, &self.tenant).await?;
        let executions = keeping.executions_at().tenant(&self.tenant);
        Ok(Engine {
            parked: Arc::new(ParkedRuns::new(&executions)),
            executions,
            tenant: self.tenant,
            sandbox,
            expressions: Expressions::new(),
            keeping,
            config: Arc::new(config),
            started: Arc::default(),
            starting: Arc::default(),
            files: !self.no_files,
            metrics: self.metrics,
        })
    }
}

/// The runtime, embedded.
///
/// ```no_run
/// use orchestrator_engine::{Engine, Task, Workflow};
///
/// # async fn example() -> Result<(), orchestrator_engine::service::ServiceError> {
/// let engine = Engine::builder().store("/tmp/demo/store.redb").build().await?;
/// let workflow = Workflow::builder("hello")
///     .task(Task::new("greet", "transform").with("script", r#""hello""#))
///     .output("greeting", "${{ tasks.greet.output }}")
///     .build()?;
/// let execution = engine.start(&workflow, serde_json::json!({})).await?;
/// let done = execution.wait().await?;
/// assert_eq!(done.record.outputs["greeting"], "hello");
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Engine {
    pub(super) sandbox: Arc<Sandbox>,
    pub(super) expressions: Expressions,
    pub(super) keeping: Keeping,
    pub(super) executions: Executions,
    pub(super) config: Arc<Config>,
    /// Whose plugins, workflows and executions it works with.
    pub(super) tenant: TenantId,
    /// Runs this engine started whose handles are still held: their files
    /// are open here, so they are read through the handle, not the file.
    started: Arc<Mutex<HashMap<String, Weak<Running>>>>,
    /// Held by a start with a caller-chosen id from its look for an
    /// execution of that id until the one it creates is known: two such
    /// starts never race to create the same execution.
    starting: Arc<tokio::sync::Mutex<()>>,
    /// Whether workflows may name `.wasm` files.
    files: bool,
    /// Its runs that are parked, waiting for a signal or a deadline.
    pub(super) parked: Arc<ParkedRuns>,
    /// What its runs are counted in.
    pub(super) metrics: Option<Arc<Metrics>>,
}

/// How long a run's only unfinished tasks must have been waiting (for a
/// signal or a deadline, with everything else committed) before it parks:
/// lets go of its file, its task and its run slot until a signal, a
/// cancel or the deadline wakes it. Waits answered sooner never pay for
/// taking the run up again.
pub const PARK_AFTER: std::time::Duration = std::time::Duration::from_millis(250);

/// A run ready to go: its runner, workflow, executor and execution.
pub(super) type Work = (
    Runner,
    service::LoadedWorkflow,
    service::subworkflow::TaskExecutor,
    service::Execution,
);

/// How to start an execution.
#[derive(Debug, Clone, Default)]
///
/// ```no_run
/// # async fn example() -> Result<(), orchestrator_engine::service::ServiceError> {
/// use orchestrator_engine::{Engine, StartOptions};
/// # let engine = Engine::builder().in_memory().build().await?;
/// # let workflow = orchestrator_engine::Workflow::builder("hi")
/// #     .task(orchestrator_engine::Task::new("a", "transform").with("script", "1"))
/// #     .build()?;
/// let options = StartOptions { execution_id: Some("order-1234".into()) };
/// let started = engine.start_with(&workflow, serde_json::json!({}), options).await?;
/// assert_eq!(started.execution.id(), "order-1234");
/// # Ok(()) }
/// ```
pub struct StartOptions {
    /// The execution's id, chosen by the caller (1 to 200 letters, digits,
    /// `-` and `_`): starting again with the same id, workflow and inputs
    /// returns the execution that exists (`created: false`); with other
    /// ones it is refused. Without it the engine makes one up.
    pub execution_id: Option<String>,
}

/// What [`Engine::start_with`] did.
#[derive(Debug)]
///
/// ```no_run
/// # async fn example() -> Result<(), orchestrator_engine::service::ServiceError> {
/// use orchestrator_engine::{Engine, StartOptions};
/// # let engine = Engine::builder().in_memory().build().await?;
/// # let workflow = orchestrator_engine::Workflow::builder("hi")
/// #     .task(orchestrator_engine::Task::new("a", "transform").with("script", "1"))
/// #     .build()?;
/// let once = || StartOptions { execution_id: Some("order-1234".into()) };
/// let first = engine.start_with(&workflow, serde_json::json!({}), once()).await?;
/// let again = engine.start_with(&workflow, serde_json::json!({}), once()).await?;
/// assert!(first.created && !again.created);
/// # Ok(()) }
/// ```
pub struct Started {
    /// The execution.
    pub execution: ExecutionHandle,
    /// Whether this call created it (false: it existed with the same
    /// workflow and inputs).
    pub created: bool,
}

impl Engine {
    /// Starts building an engine.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), orchestrator_engine::service::ServiceError> {
    /// let engine = orchestrator_engine::Engine::builder().in_memory().build().await?;
    /// # let _ = engine;
    /// # Ok(()) }
    /// ```
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }

    /// The store file; `None` for an engine in memory.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), orchestrator_engine::service::ServiceError> {
    /// let engine = orchestrator_engine::Engine::builder().store("/tmp/demo/store.redb").build().await?;
    /// assert_eq!(engine.store_path(), Some(std::path::Path::new("/tmp/demo/store.redb")));
    /// # Ok(()) }
    /// ```
    pub fn store_path(&self) -> Option<&Path> {
        match &self.keeping {
            Keeping::Files(path) => Some(path),
            Keeping::Held(store) => store.file(),
            Keeping::Memory { .. } => None,
        }
    }

    /// The store: the one it holds ([`EngineBuilder::hold_store`]) or keeps
    /// in memory, or else the file opened now, which other processes wait
    /// for while the returned handle lives. Blocks.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), orchestrator_engine::service::ServiceError> {
    /// let engine = orchestrator_engine::Engine::builder().in_memory().build().await?;
    /// assert!(engine.store()?.plugins("default")?.iter().any(|p| p.name == "transform"));
    /// # Ok(()) }
    /// ```
    pub fn store(&self) -> Result<Store, ServiceError> {
        self.keeping.with_store(|store| Ok(store.clone()))
    }

    /// The tenant it works for.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), orchestrator_engine::service::ServiceError> {
    /// let engine = orchestrator_engine::Engine::builder().in_memory().build().await?;
    /// assert_eq!(engine.tenant().as_str(), "default");
    /// # Ok(()) }
    /// ```
    pub fn tenant(&self) -> &TenantId {
        &self.tenant
    }

    /// The same engine (sandbox, store, configuration) working for
    /// `tenant`, whose built-in plugins are installed if it lacks them.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), orchestrator_engine::service::ServiceError> {
    /// use orchestrator_engine::tenant::TenantId;
    /// let engine = orchestrator_engine::Engine::builder().in_memory().build().await?;
    /// let globex = TenantId::new("globex").map_err(orchestrator_engine::service::ServiceError::Inputs)?;
    /// let theirs = engine.for_tenant(globex).await?;
    /// assert_eq!(theirs.tenant().as_str(), "globex");
    /// # Ok(()) }
    /// ```
    pub async fn for_tenant(&self, tenant: TenantId) -> Result<Engine, ServiceError> {
        self.keeping
            .install_builtins(&self.sandbox, &tenant)
            .await?;
        let executions = self.keeping.executions_at().tenant(&tenant);
        Ok(Engine {
            parked: Arc::new(ParkedRuns::new(&executions)),
            executions,
            tenant,
            started: Arc::default(),
            ..self.clone()
        })
    }

    /// Starts `workflow` with `inputs` (a JSON object) as a new execution
    /// and returns at once; it runs on this tokio runtime.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), orchestrator_engine::service::ServiceError> {
    /// # let engine = orchestrator_engine::Engine::builder().in_memory().build().await?;
    /// # let workflow = orchestrator_engine::Workflow::builder("hi")
    /// #     .task(orchestrator_engine::Task::new("a", "transform").with("script", "1"))
    /// #     .build()?;
    /// let execution = engine.start(&workflow, serde_json::json!({})).await?;
    /// println!("started {}", execution.id());
    /// # Ok(()) }
    /// ```
    pub async fn start(
        &self,
        workflow: &Workflow,
        inputs: Value,
    ) -> Result<ExecutionHandle, ServiceError> {
        Ok(self
            .start_with(workflow, inputs, StartOptions::default())
            .await?
            .execution)
    }

    /// Starts `workflow` with `inputs` as `options` say.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), orchestrator_engine::service::ServiceError> {
    /// use orchestrator_engine::StartOptions;
    /// # let engine = orchestrator_engine::Engine::builder().in_memory().build().await?;
    /// # let workflow = orchestrator_engine::Workflow::builder("hi")
    /// #     .task(orchestrator_engine::Task::new("a", "transform").with("script", "1"))
    /// #     .build()?;
    /// let options = StartOptions { execution_id: Some("nightly-2026-12-01".into()) };
    /// let started = engine.start_with(&workflow, serde_json::json!({}), options).await?;
    /// println!("{} (new: {})", started.execution.id(), started.created);
    /// # Ok(()) }
    /// ```
    pub async fn start_with(
        &self,
        workflow: &Workflow,
        inputs: Value,
        options: StartOptions,
    ) -> Result<Started, ServiceError> {
        let inputs: IndexMap<String, Value> = match inputs {
            Value::Object(map) => map.into_iter().collect(),
            Value::Null => IndexMap::new(),
            other => {
                return Err(ServiceError::Inputs(format!(
                    "inputs are a JSON object of named values, not {other}"
                )));
            }
        };
        let (runner, loaded, executor) = {
            let engine = self.clone();
            let source = workflow.source().to_owned();
            let label = workflow.label().to_owned();
            blocking(move || {
                engine.keeping.with_store(|store| {
                    let runner = engine.runner(store)?;
                    let load = if engine.files {
                        service::load_text
                    } else {
                        service::load_sent_text
                    };
                    let loaded = load(source, &label, &engine.expressions, store, &engine.tenant)?;
                    let executor = runner.prepare(&loaded, store)?;
                    Ok((runner, loaded, executor))
                })
            })
            .await?
        };
        let _starting = match &options.execution_id {
            Some(_) => Some(self.starting.lock().await),
            None => None,
        };
        if let Some(id) = &options.execution_id {
            if !valid_id(id) {
                return Err(ServiceError::Inputs(format!(
                    "`{id}` cannot be an execution id: use 1 to 200 letters, digits, `-` and `_`"
                )));
            }
            if self.executions.exists(id) {
                let resolved = loaded
                    .plan
                    .resolve_inputs(inputs)
                    .map_err(ServiceError::Inputs)?;
                return self.existing(id, &loaded.source, &resolved).await;
            }
        }
        let (loaded, execution) = {
            let (executions, id) = (self.executions.clone(), options.execution_id.clone());
            blocking(move || {
                let execution = service::start_execution_as(&loaded, &executions, inputs, id)?;
                Ok((loaded, execution))
            })
            .await?
        };
        let launched = self.launch(runner, loaded, executor, execution)?;
        if let Some(metrics) = &self.metrics {
            metrics.execution_started(&self.tenant);
        }
        Ok(Started {
            execution: launched,
            created: true,
        })
    }

    /// Takes up execution `id`, which no process runs any more (its
    /// process stopped or was killed), and runs it to its end on this
    /// tokio runtime: finished tasks are not run again.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), orchestrator_engine::service::ServiceError> {
    /// let engine = orchestrator_engine::Engine::builder().build().await?;
    /// let execution = engine.resume("18ed02e9c1cb11ba-2a4f").await?;
    /// println!("{:?}", execution.wait().await?.record.status);
    /// # Ok(()) }
    /// ```
    pub async fn resume(&self, id: &str) -> Result<ExecutionHandle, ServiceError> {
        let (runner, loaded, executor, execution) = self.take_up(id, false).await?;
        self.launch(runner, loaded, executor, execution)
    }

    /// Opens execution `id`, which no process runs, to run it here: its
    /// file, workflow and plugins. One another process keeps parked is
    /// refused, unless it is this engine's own (`own`).
    pub(super) async fn take_up(&self, id: &str, own: bool) -> Result<Work, ServiceError> {
        let engine = self.clone();
        let id = id.to_owned();
        blocking(move || {
            if !own {
                service::refuse_parked(&engine.executions, &id)?;
            }
            engine.keeping.with_store(|store| {
                let runner = engine.runner(store)?;
                let (execution, loaded) =
                    service::reopen_execution(&engine.executions, &id, &engine.expressions, store)?;
                let executor = runner.prepare(&loaded, store)?;
                Ok((runner, loaded, executor, execution))
            })
        })
        .await
    }

    /// Takes up every execution of this tenant that no process runs and
    /// that has not finished (sub-workflow runs are taken up by their
    /// parents), as [`Engine::resume`]: what a server does when it starts.
    /// One that cannot be taken up is skipped with a warning.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), orchestrator_engine::service::ServiceError> {
    /// let engine = orchestrator_engine::Engine::builder().build().await?;
    /// for execution in engine.resume_interrupted().await? {
    ///     println!("resumed {}", execution.id());
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn resume_interrupted(&self) -> Result<Vec<ExecutionHandle>, ServiceError> {
        let executions = self.executions.clone();
        let ids = blocking(move || Ok(executions::interrupted(&executions))).await?;
        let mut resumed = Vec::new();
        for id in ids {
            match self.resume(&id).await {
                Ok(handle) => resumed.push(handle),
                Err(e) => tracing::warn!(execution = %id, "not resumed: {e}"),
            }
        }
        Ok(resumed)
    }

    /// Runs `execution` on this tokio runtime, answering other processes
    /// through its control socket, and hands back its handle.
    fn launch(
        &self,
        runner: Runner,
        loaded: service::LoadedWorkflow,
        executor: service::subworkflow::TaskExecutor,
        execution: service::Execution,
    ) -> Result<ExecutionHandle, ServiceError> {
        let control = ControlServer::serve(&self.executions, &execution)?;
        let handle = ExecutionHandle::running(self.executions.clone(), &execution);
        let run = handle.run().expect("a handle on the run just started");
        {
            let mut started = self.started.lock().expect("started lock");
            started.retain(|_, run| run.strong_count() > 0);
            started.insert(execution.id.clone(), Arc::downgrade(&run));
        }
        let engine = self.clone();
        let span = service::execution_span(&execution, &loaded.plan.name);
        let running = async move {
            // Ends the run even if driving it panics.
            let ending = Ending(run);
            let work = (runner, loaded, executor, execution);
            let outcome = engine.run_to_end(&ending.0, work, control).await;
            let run = Arc::clone(&ending.0);
            // Reads the log's end before letting it go: off the async threads.
            if let Err(e) = tokio::task::spawn_blocking(move || run.end(outcome)).await {
                tracing::warn!("ending a run failed: {e}");
            }
        };
        tokio::spawn(running.instrument(span));
        Ok(handle)
    }

    /// The execution `id` that exists: the same one if it was started with
    /// this workflow text and these inputs, else refused.
    async fn existing(
        &self,
        id: &str,
        source: &str,
        inputs: &Value,
    ) -> Result<Started, ServiceError> {
        let (execution, record) = self.find(id).await?;
        if record.source != source || &record.inputs != inputs {
            return Err(ServiceError::Conflict(format!(
                "execution `{id}` exists already, started with another workflow or other inputs; choose another id"
            )));
        }
        Ok(Started {
            execution,
            created: false,
        })
    }

    /// A handle on execution `id`, whichever process runs it, with its
    /// record as it stands.
    async fn find(&self, id: &str) -> Result<(ExecutionHandle, ExecutionRecord), ServiceError> {
        let here = self
            .started
            .lock()
            .expect("started lock")
            .get(id)
            .and_then(Weak::upgrade);
        if let Some(running) = here {
            let record = {
                let running = Arc::clone(&running);
                blocking(move || ExecutionHandle::record(&running)).await?
            };
            // While it runs here its file is open here: read it through
            // the run, or the end the run kept. Else the file tells.
            if let Some(record) = record {
                return Ok((
                    ExecutionHandle::of(self.executions.clone(), id, running),
                    record,
                ));
            }
        }
        let view = {
            let (executions, id) = (self.executions.clone(), id.to_owned());
            blocking(move || executions::view(&executions, &id)).await?
        };
        Ok((
            ExecutionHandle::existing(self.executions.clone(), &view.record.id),
            view.record,
        ))
    }

    /// A handle on execution `id`, whichever process runs it.
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), orchestrator_engine::service::ServiceError> {
    /// let engine = orchestrator_engine::Engine::builder().build().await?;
    /// // An execution another process (or `runtime run`) started.
    /// let execution = engine.execution("18ed02e9c1cb11ba-2a4f").await?;
    /// println!("{:?}", execution.status().await?.record.status);
    /// # Ok(()) }
    /// ```
    pub async fn execution(&self, id: &str) -> Result<ExecutionHandle, ServiceError> {
        Ok(self.find(id).await?.0)
    }

    /// A page of this tenant's executions, newest first, as `filter` says
    /// (sub-workflow runs left out).
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), orchestrator_engine::service::ServiceError> {
    /// use orchestrator_engine::executions::ListFilter;
    /// let engine = orchestrator_engine::Engine::builder().build().await?;
    /// let page = engine
    ///     .list(ListFilter { state: Some("failed".into()), ..ListFilter::default() })
    ///     .await?;
    /// for view in &page.views {
    ///     println!("{} {}", view.record.id, view.record.workflow);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn list(&self, filter: ListFilter) -> Result<Listing, ServiceError> {
        let executions = self.executions.clone();
        blocking(move || executions::list(&executions, &filter)).await
    }

    /// Stops starting plugin calls, in every execution of this process
    /// (every tenant's), and waits up to `grace` for the calls running to
    /// finish and their results to be committed: what a server does before
    /// it exits. The executions stay unfinished and resumable; a later
    /// [`Engine::resume_interrupted`] takes them up without running again
    /// what was committed. Returns how many calls were still running when
    /// the grace ran out (their tasks run again after the resume).
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), orchestrator_engine::service::ServiceError> {
    /// let engine = orchestrator_engine::Engine::builder().build().await?;
    /// let cut = engine.drain(std::time::Duration::from_secs(30)).await;
    /// println!("{cut} calls cut short");
    /// # Ok(()) }
    /// ```
    pub async fn drain(&self, grace: std::time::Duration) -> usize {
        let capacity = self.sandbox.capacity();
        capacity.drain();
        let deadline = tokio::time::Instant::now() + grace;
        while capacity.tasks_running() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        let cut = capacity.tasks_running();
        // The results of the calls that finished are committed in groups a
        // few milliseconds apart: give the last group time to reach the disk.
        tokio::time::sleep(COMMIT_SETTLE).await;
        cut
    }

    /// How many of this tenant's runs this engine keeps parked now: they
    /// wait for a signal or a deadline and hold no file, task or run slot
    /// ([`PARK_AFTER`]).
    ///
    /// ```no_run
    /// # async fn example() -> Result<(), orchestrator_engine::service::ServiceError> {
    /// let engine = orchestrator_engine::Engine::builder().build().await?;
    /// println!("{} runs parked", engine.parked_runs());
    /// # Ok(()) }
    /// ```
    pub fn parked_runs(&self) -> usize {
        self.parked.len()
    }

    /// The tenant's executions.
    pub(super) fn executions(&self) -> &Executions {
        &self.executions
    }

    /// A runner with this engine's configuration and the breakers recorded
    /// in `store`.
    fn runner(&self, store: &Store) -> Result<Runner, ServiceError> {
        Ok(self
            .config
            .runner(
                Arc::clone(&self.sandbox),
                self.expressions.clone(),
                store,
                &self.tenant,
            )?
            .with_executions_at(self.keeping.executions_at())
            .with_metrics(self.metrics.clone()))
    }
}

/// How long [`Engine::drain`] leaves the last results to be committed:
/// many times the scheduler's grouping interval and a disk flush.
const COMMIT_SETTLE: std::time::Duration = std::time::Duration::from_millis(250);

/// Runs store and file work off the async threads.
pub(super) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ServiceError> + Send + 'static,
) -> Result<T, ServiceError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ServiceError::Plugin(format!("a storage thread failed: {e}")))?
}
