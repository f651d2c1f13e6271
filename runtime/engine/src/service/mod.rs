//! The operations the CLI offers, as a library: open the store, load a
//! workflow file into a plan, prepare its plugins, run it. Later front ends
//! (the gRPC service) call the same functions. Executions with a file of
//! their own are in `recorded`; `subworkflow` is what a run hands its tasks
//! to. Dependencies inside point one way: `Runner` (here) -> `policies`,
//! `subworkflow` -> `recorded` -> `load` -> `error`.

mod child_id;
mod emits;
mod error;
mod load;
mod policies;
mod recorded;
pub mod subworkflow;

pub use emits::{EmitRoutes, FLUSH_INTERVAL, Registration};
pub use error::ServiceError;
pub use load::{LoadedWorkflow, load, load_sent_text, load_text};

pub use recorded::{
    Execution, Park, execution_span, load_recorded, new_execution_id, refuse_parked,
    reopen_execution, run_or_park, run_recorded, running_record, start_execution,
    start_execution_as,
};

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use indexmap::IndexMap;
use serde_json::Value;

use crate::breakers::{BreakerExecutor, BreakerKey, Breakers, Guard, HostBreakers};
use crate::config::Secrets;
use crate::governance::{CacheRule, Governed, Prices};
use crate::metrics::Metrics;
use crate::plugin::{self, Allowed, Resolved};
use crate::quotas::{Quotas, TenantSpend};
use crate::rate_limits::RateLimits;
use orchestrator_core::expr::Expressions;
use orchestrator_core::plugin::PluginSchemas;
use orchestrator_core::scheduler::{Event, Ran, RunReport, Scheduler};
use orchestrator_core::tenant::TenantId;
use orchestrator_core::workflow::Policies;
use orchestrator_sandbox::cassette::Cassette;
use orchestrator_sandbox::{Compiled, Emitter, Sandbox, SandboxExecutor};
use orchestrator_store::Store;
use orchestrator_store::executions::memory::MemoryExecutions;
use orchestrator_store::executions::{Executions, ExecutionsAt};
use orchestrator_store::plugins::{Artifact, PluginRecord};
use orchestrator_store::responses::ResponsesBackend;
use subworkflow::{Child, ChildRecord, MAX_DEPTH, TaskExecutor};

/// Opens the store and installs the built-in plugins `tenant` lacks (its
/// first use).
pub async fn open_store(
    path: &Path,
    sandbox: &Sandbox,
    tenant: &TenantId,
) -> Result<Store, ServiceError> {
    let store = Store::open(path)?;
    install_builtins(&store, sandbox, tenant).await?;
    Ok(store)
}

/// Installs the built-in plugins `tenant` lacks in `store`.
pub async fn install_builtins(
    store: &Store,
    sandbox: &Sandbox,
    tenant: &TenantId,
) -> Result<(), ServiceError> {
    for report in plugin::install_builtins(store, sandbox, tenant.as_str()).await? {
        tracing::debug!(
            plugin = %report.record.name,
            version = %report.record.version,
            digest = %report.record.digest,
            "installed built-in plugin"
        );
    }
    Ok(())
}

/// Bytes of `tenant`'s installed components, each stored once (built-ins
/// not counted); 0 if the store cannot say.
pub fn plugin_bytes(store: &Store, tenant: &TenantId) -> u64 {
    let mut sizes = HashMap::new();
    for record in store.plugins(tenant.as_str()).unwrap_or_default() {
        if !record.builtin {
            sizes.insert(record.digest, record.size);
        }
    }
    sizes.values().sum()
}

/// Sees a run's progress as it happens.
pub type Observer<'a> = &'a (dyn Fn(Event<'_>) + Sync);

/// Runs workflows in one sandbox.
#[derive(Debug, Clone)]
pub struct Runner {
    sandbox: Arc<Sandbox>,
    expressions: Expressions,
    secrets: Arc<Secrets>,
    breakers: Arc<Breakers>,
    cassette: Option<Arc<Cassette>>,
    /// Where what plugins emit goes: their execution's log, the observer.
    emits: Arc<EmitRoutes>,
    /// Paces plugins' requests per tenant and host.
    rate_limits: Option<Arc<RateLimits>>,
    prices: Arc<Prices>,
    /// Where tasks with `cache:` keep their answers; `None`: no cache.
    responses: Option<Arc<dyn ResponsesBackend>>,
    /// The host's policies, run around every model call of every run.
    host_policies: Policies,
    /// What each tenant may spend (`quotas:`).
    quotas: Option<Arc<Quotas>>,
    /// Where executions are kept (default: beside the store file).
    executions_at: Option<ExecutionsAt>,
    /// What its runs are counted in.
    metrics: Option<Arc<Metrics>>,
    /// Installed plugins' schemas, compiled once, by component digest.
    schemas: Arc<std::sync::Mutex<HashMap<String, Arc<PluginSchemas>>>>,
}

impl Runner {
    /// A runner with a new sandbox and no secrets.
    pub fn new(expressions: Expressions) -> Result<Self, ServiceError> {
        Ok(Self::on(Sandbox::new()?, expressions))
    }

    /// A runner on an existing sandbox, with no secrets.
    pub fn on(sandbox: Arc<Sandbox>, expressions: Expressions) -> Self {
        Self {
            sandbox,
            expressions,
            secrets: Arc::default(),
            breakers: Arc::new(Breakers::in_memory()),
            cassette: None,
            emits: Arc::default(),
            rate_limits: None,
            prices: Arc::default(),
            responses: None,
            host_policies: Policies::default(),
            quotas: None,
            executions_at: None,
            metrics: None,
            schemas: Arc::default(),
        }
    }

    /// The same runner, keeping executions (sub-workflow runs included)
    /// `at` this place rather than beside the store file.
    pub fn with_executions_at(self, at: ExecutionsAt) -> Self {
        Self {
            executions_at: Some(at),
            ..self
        }
    }

    /// `tenant`'s executions, where this runner keeps them: beside the
    /// store file unless [`Runner::with_executions_at`] says otherwise (a
    /// store in memory has no file: without it, they last for the call).
    fn executions(&self, store: &Store, tenant: &TenantId) -> Executions {
        match &self.executions_at {
            Some(at) => at.tenant(tenant),
            None => match store.file() {
                Some(file) => Executions::for_tenant(file, tenant),
                None => ExecutionsAt::Memory(MemoryExecutions::new()).tenant(tenant),
            },
        }
    }

    /// The same runner, counting its recorded runs, their tasks and
    /// commits in `metrics`.
    pub fn with_metrics(self, metrics: Option<Arc<Metrics>>) -> Self {
        Self { metrics, ..self }
    }

    /// The same runner, holding each tenant's runs to `quotas`.
    pub fn with_quotas(self, quotas: Arc<Quotas>) -> Self {
        Self {
            quotas: Some(quotas),
            ..self
        }
    }

    /// The same runner, keeping the answers of tasks with `cache:` in
    /// `cache`.
    pub fn with_response_cache(self, cache: Arc<dyn ResponsesBackend>) -> Self {
        Self {
            responses: Some(cache),
            ..self
        }
    }

    /// The same runner, running the host's `policies` around every model
    /// call, before each workflow's own.
    pub fn with_host_policies(self, policies: Policies) -> Self {
        Self {
            host_policies: policies,
            ..self
        }
    }

    /// The same runner, each plugin's HTTP requests paced by
    /// `rate_limits` for the tenant of its run.
    pub fn with_rate_limits(self, rate_limits: Arc<RateLimits>) -> Self {
        Self {
            rate_limits: Some(rate_limits).filter(|r| !r.is_empty()),
            ..self
        }
    }

    /// The same runner, pricing model usage by `prices`.
    pub fn with_prices(self, prices: Prices) -> Self {
        Self {
            prices: Arc::new(prices),
            ..self
        }
    }

    /// The same runner, handing what plugins emit (streamed text, progress)
    /// to `emitter` too, besides their execution's log.
    pub fn with_emitter(self, emitter: Emitter) -> Self {
        Self {
            emits: Arc::new(EmitRoutes::observed_by(Some(emitter))),
            ..self
        }
    }

    /// The same runner, recording its plugins' HTTP exchanges to
    /// `cassette`, or answering them from it.
    pub fn with_cassette(self, cassette: Arc<Cassette>) -> Self {
        Self {
            cassette: Some(cassette),
            ..self
        }
    }

    /// The same runner, keeping circuit breaker states in `breakers`.
    pub fn with_breakers(self, breakers: Arc<Breakers>) -> Self {
        Self { breakers, ..self }
    }

    /// The circuit breakers of this runner's plugins.
    pub fn breakers(&self) -> &Arc<Breakers> {
        &self.breakers
    }

    /// The executor a run uses: the sandbox, behind the circuit breakers
    /// the workflow asks for.
    fn guarded(
        &self,
        workflow: &LoadedWorkflow,
        executor: SandboxExecutor,
    ) -> Result<BreakerExecutor<SandboxExecutor>, ServiceError> {
        let digests = workflow.plugin_digests()?;
        let mut guards = HashMap::new();
        for (key, task, uses) in workflow.plugin_slots() {
            let (Some(policy), Some(digest)) = (task.breaker, digests.get(&key)) else {
                continue;
            };
            if !policy.scope.plugin() {
                continue;
            }
            guards.insert(
                key,
                Guard {
                    key: BreakerKey::Plugin {
                        digest: digest.clone(),
                    }
                    .to_string(),
                    label: uses.to_owned(),
                    policy,
                },
            );
        }
        Ok(BreakerExecutor::new(
            executor,
            Arc::clone(&self.breakers),
            guards,
        ))
    }

    /// The same runner, attaching `secrets` to plugins granted them.
    pub fn with_secrets(self, secrets: Secrets) -> Self {
        Self {
            secrets: Arc::new(secrets),
            ..self
        }
    }

    /// The sandbox tasks run in.
    pub fn sandbox(&self) -> &Arc<Sandbox> {
        &self.sandbox
    }

    /// Loads every plugin the workflow uses (installed ones from their
    /// precompiled artifacts, once per digest), gives each task the
    /// capabilities its plugin was granted, narrowed by the workflow, puts
    /// the circuit breakers the workflow asks for in front, and prepares
    /// the registered workflows its tasks run the same way.
    pub fn prepare(
        &self,
        workflow: &LoadedWorkflow,
        store: &Store,
    ) -> Result<TaskExecutor, ServiceError> {
        let quota = match &self.quotas {
            Some(quotas) => {
                let executions = self.executions(store, &workflow.tenant);
                quotas
                    .check_storage(&workflow.tenant, &executions, || {
                        plugin_bytes(store, &workflow.tenant)
                    })
                    .map_err(ServiceError::Quota)?;
                quotas
                    .admit(&workflow.tenant, &executions)
                    .map_err(ServiceError::Quota)?
                    .map(Arc::new)
            }
            None => None,
        };
        self.prepare_nested(workflow, store, 0, &self.host_policies, quota.as_ref())
    }

    fn prepare_nested(
        &self,
        workflow: &LoadedWorkflow,
        store: &Store,
        depth: usize,
        inherited: &Policies,
        quota: Option<&Arc<TenantSpend>>,
    ) -> Result<TaskExecutor, ServiceError> {
        // A child runs under every policy its parent runs under, its own after.
        let for_children = Policies {
            before: [&inherited.before[..], &workflow.plan.policies.before[..]].concat(),
            after: [&inherited.after[..], &workflow.plan.policies.after[..]].concat(),
        };
        // Read once: which components are model calls, when any policy
        // could guard them.
        let models = if for_children.before.is_empty() && for_children.after.is_empty() {
            HashSet::new()
        } else {
            policies::model_digests(store, &workflow.tenant)?
        };
        let mut compiled: HashMap<String, (Compiled, Allowed)> = HashMap::new();
        let mut schemas: HashMap<String, Arc<PluginSchemas>> = HashMap::new();
        let mut plugins = HashMap::new();
        let mut children = HashMap::new();
        for (key, task, uses) in workflow.plugin_slots() {
            let in_task = |e: String| ServiceError::Plugin(format!("task `{}`: {e}", task.id));
            if !compiled.contains_key(uses) {
                let loaded = match workflow.catalog.resolve(uses).map_err(in_task)? {
                    Resolved::Workflow(registered) => {
                        if depth >= MAX_DEPTH {
                            return Err(in_task(format!(
                                "workflows nest more than {MAX_DEPTH} deep (does `{}` run itself?)",
                                registered.name
                            )));
                        }
                        let label = format!("{}@{}", registered.name, registered.version);
                        let child = load_text(
                            registered.source.clone(),
                            &registered.file,
                            &self.expressions,
                            store,
                            &workflow.tenant,
                        )?;
                        let executor =
                            self.prepare_nested(&child, store, depth + 1, &for_children, quota)?;
                        let record = ChildRecord {
                            executions: self.executions(store, &child.tenant),
                            tenant: child.tenant.clone(),
                            emits: Arc::clone(&self.emits),
                            plugins: child.plugin_digests()?,
                            file: child.file,
                            source: child.source,
                        };
                        let child = Child::new(
                            label,
                            child.plan,
                            executor,
                            self.expressions.clone(),
                            record,
                        );
                        children.insert(key, Arc::new(child));
                        continue;
                    }
                    resolved => {
                        if let Resolved::Installed(record) = &resolved {
                            schemas.insert(uses.to_owned(), self.plugin_schemas(record));
                        }
                        self.load_plugin(store, &workflow.tenant, resolved, uses)
                            .map_err(|e| match e {
                                ServiceError::Plugin(m) => in_task(m),
                                e => e,
                            })?
                    }
                };
                compiled.insert(uses.to_owned(), loaded);
            }
            let (component, allowed) = &compiled[uses];
            let allowed = allowed.narrow(&task.grants).map_err(in_task)?;
            let mut plugin = self
                .sandbox
                .link(component, allowed, Arc::clone(&self.secrets))?;
            if let Some(cassette) = &self.cassette {
                plugin = plugin.with_cassette(Arc::clone(cassette));
            }
            if let Some(schemas) = schemas.get(uses) {
                plugin = plugin.with_schemas(Arc::clone(schemas));
            }
            // Streamed text of a call that `after` policies check would
            // reach the screen before they could deny or redact it.
            let policed_answer =
                !for_children.after.is_empty() && policies::is_model(&models, workflow, uses);
            if !policed_answer {
                plugin = plugin.with_emitter(self.emits.emitter());
            }
            if let Some(limits) = &self.rate_limits {
                plugin = plugin.with_request_gate(limits.gate(workflow.tenant.clone()));
            }
            if let Some(policy) = task.breaker.filter(|p| p.scope.hosts()) {
                let hosts = HostBreakers::new(Arc::clone(&self.breakers), policy);
                plugin = plugin.with_host_guard(Arc::new(hosts));
            }
            plugins.insert(key, plugin);
        }
        let policies = self.policy_hooks(
            workflow,
            store,
            inherited,
            &models,
            &mut compiled,
            &mut plugins,
        )?;
        let sandboxed = SandboxExecutor::new(Arc::clone(&self.sandbox), plugins);
        let rules = Self::cache_rules(workflow)?;
        let cache = if rules.is_empty() {
            None
        } else {
            self.responses.clone()
        };
        let governed = Governed::new(
            self.guarded(workflow, sandboxed)?,
            Arc::clone(&self.prices),
            cache.map(|cache| (cache, workflow.tenant.clone())),
            rules,
        )
        .with_budget(workflow.plan.budget)
        .with_quota(quota.cloned())
        .with_rate_limits(
            self.rate_limits
                .as_ref()
                .map(|limits| (Arc::clone(limits), workflow.tenant.clone())),
        )
        .with_policies(policies);
        Ok(TaskExecutor::new(governed, children))
    }

    /// The schemas of an installed plugin, checked around each of its
    /// calls, compiled once per component. One that does not compile
    /// (installed before schemas were checked at install) is left out, with
    /// a warning: the plugin runs as before.
    fn plugin_schemas(&self, record: &PluginRecord) -> Arc<PluginSchemas> {
        let mut cache = self.schemas.lock().unwrap_or_else(|e| e.into_inner());
        let schemas = cache.entry(record.digest.clone()).or_insert_with(|| {
            Arc::new(PluginSchemas::of(&record.manifest).unwrap_or_else(|e| {
                tracing::warn!(
                    plugin = %format!("{}@{}", record.manifest.name, record.manifest.version),
                    "not checking its input and output: {e}; reinstall a version with valid schemas"
                );
                PluginSchemas::default()
            }))
        });
        Arc::clone(schemas)
    }

    /// A plugin named by an installed record or a path, compiled (or
    /// loaded) and the capabilities its install allows.
    fn load_plugin(
        &self,
        store: &Store,
        tenant: &TenantId,
        resolved: Resolved,
        uses: &str,
    ) -> Result<(Compiled, Allowed), ServiceError> {
        match resolved {
            Resolved::Installed(record) => {
                let allowed = Allowed::intersect(&record.manifest.capabilities, &record.grants);
                Ok((self.load_installed(store, tenant, &record)?, allowed))
            }
            Resolved::File(path) => {
                let bytes = std::fs::read(&path).map_err(|e| {
                    ServiceError::Plugin(format!("cannot read plugin {}: {e}", path.display()))
                })?;
                let name = path
                    .file_stem()
                    .map_or_else(|| uses.to_owned(), |s| s.to_string_lossy().into_owned());
                Ok((self.sandbox.compile(&name, &bytes)?, Allowed::default()))
            }
            Resolved::Workflow(w) => Err(ServiceError::Plugin(format!(
                "`{uses}` is the workflow {}, not a plugin",
                w.name
            ))),
        }
    }

    /// The plugin keys whose answers are cached, and how.
    fn cache_rules(workflow: &LoadedWorkflow) -> Result<HashMap<String, CacheRule>, ServiceError> {
        if workflow.plan.tasks.iter().all(|t| t.cache.is_none()) {
            return Ok(HashMap::new());
        }
        let digests = workflow.plugin_digests()?;
        Ok(workflow
            .plugin_slots()
            .into_iter()
            .filter_map(|(key, task, _)| {
                let rule = CacheRule {
                    digest: digests.get(&key)?.clone(),
                    ttl: task.cache?,
                };
                Some((key, rule))
            })
            .collect())
    }

    /// An installed plugin from its artifact; compiled (and the artifact
    /// stored) only if this engine has none yet, for example after an upgrade.
    fn load_installed(
        &self,
        store: &Store,
        tenant: &TenantId,
        record: &PluginRecord,
    ) -> Result<Compiled, ServiceError> {
        let tenant = tenant.as_str();
        let engine = self.sandbox.engine_hash();
        let label = format!("{}@{}", record.name, record.version);
        if let Some(compiled) = self.sandbox.loaded(&label, &record.digest) {
            return Ok(compiled);
        }
        // Mapped from this user's artifact cache: no copy out of the store.
        if let Some(compiled) = self.sandbox.load_cached(&label, &record.digest) {
            return Ok(compiled);
        }
        if let Some(artifact) = store.plugin_artifact(tenant, &record.digest, engine)? {
            match self
                .sandbox
                .load_artifact(&label, &record.digest, &artifact)
            {
                Ok(compiled) => return Ok(compiled),
                // Not sealed by this user (a store from elsewhere, an older
                // format): compiled again below, and the artifact replaced.
                Err(e) => tracing::warn!(plugin = %label, "{e}"),
            }
        }
        let bytes = store.plugin_blob(tenant, &record.digest)?.ok_or_else(|| {
            ServiceError::Plugin(format!(
                "{label}: its component is missing from the store; reinstall it"
            ))
        })?;
        tracing::info!(plugin = %label, "compiling for this engine (once)");
        let compiled = self.sandbox.compile(&label, &bytes)?;
        let artifact = self.sandbox.serialize(&compiled)?;
        store.put_plugin_artifact(
            tenant,
            &record.digest,
            Artifact {
                engine,
                bytes: &artifact,
            },
        )?;
        Ok(compiled)
    }

    /// Checks inputs and runs a prepared workflow to the end, once the
    /// process has a run slot for it ([`ServiceError::Busy`] when too many
    /// are running and waiting already).
    pub async fn execute(
        &self,
        workflow: &LoadedWorkflow,
        executor: TaskExecutor,
        inputs: IndexMap<String, Value>,
        concurrency: Option<usize>,
        observe: &(dyn Fn(Event<'_>) + Sync),
    ) -> Result<RunReport, ServiceError> {
        let inputs = workflow
            .plan
            .resolve_inputs(inputs)
            .map_err(ServiceError::Inputs)?;
        let _slot = self.sandbox.capacity().admit_run(&workflow.tenant).await?;
        let scheduler = Scheduler::new(Arc::new(executor), self.expressions.clone());
        Ok(scheduler
            .run(
                &workflow.plan,
                (&workflow.tenant, &inputs),
                &new_execution_id(),
                concurrency,
                observe,
            )
            .await)
    }

    /// Runs a recorded execution until it finishes or is cancelled, every
    /// final task state committed to its log, then records how it ended.
    /// It starts once the process has a run slot for it; refused as
    /// [`ServiceError::Busy`], it stays as recorded, to be resumed later.
    pub async fn drive(
        &self,
        workflow: &LoadedWorkflow,
        executor: TaskExecutor,
        execution: Execution,
        concurrency: Option<usize>,
        observe: &(dyn Fn(Event<'_>) + Sync),
    ) -> Result<RunReport, ServiceError> {
        let how = (concurrency, observe, Park::never());
        match self
            .drive_or_park(workflow, executor, execution, how)
            .await?
        {
            Ran::Finished(report) => Ok(report),
            Ran::Parked(_) => unreachable!("a run that may not park never parks"),
        }
    }

    /// Runs a recorded execution as [`Runner::drive`] does, with its
    /// concurrency, observer and parking, and parks it as `park` says
    /// ([`Ran::Parked`]): then it holds no run slot, no file and no task,
    /// and nothing of it is lost.
    pub async fn drive_or_park(
        &self,
        workflow: &LoadedWorkflow,
        executor: TaskExecutor,
        execution: Execution,
        (concurrency, observe, park): (Option<usize>, Observer<'_>, Park),
    ) -> Result<Ran, ServiceError> {
        // Registered first: the lease is renewed while the run waits for
        // its slot, so no other owner takes the execution meanwhile.
        let emits = self
            .emits
            .register(&execution.id, Arc::clone(&execution.log));
        let _slot = match self.sandbox.capacity().admit_run(&execution.tenant).await {
            Ok(slot) => slot,
            Err(busy) => {
                emits.close().await;
                return Err(busy.into());
            }
        };
        executor.count_spent(&execution.done);
        let scheduler = Scheduler::new(Arc::new(executor), self.expressions.clone());
        let plan = &workflow.plan;
        let tenant = execution.tenant.clone();
        let counted = |event: Event<'_>| {
            if let (Some(metrics), Event::Finished(report)) = (&self.metrics, event) {
                metrics.task_finished(&tenant, report);
            }
            observe(event);
        };
        let metrics = self.metrics.clone();
        let ran = run_or_park(
            &scheduler,
            plan,
            execution,
            concurrency,
            &counted,
            park,
            metrics,
        )
        .await;
        if let (Some(metrics), Ok(Ran::Finished(report))) = (&self.metrics, &ran) {
            metrics.execution_finished(&tenant, report.status);
        }
        emits.close().await;
        self.breakers.flush().await;
        ran
    }

    /// Prepares and runs a workflow, recording nothing.
    pub async fn run(
        &self,
        workflow: &LoadedWorkflow,
        store: &Store,
        inputs: IndexMap<String, Value>,
        concurrency: Option<usize>,
        observe: &(dyn Fn(Event<'_>) + Sync),
    ) -> Result<RunReport, ServiceError> {
        let executor = self.prepare(workflow, store)?;
        self.execute(workflow, executor, inputs, concurrency, observe)
            .await
    }
}
