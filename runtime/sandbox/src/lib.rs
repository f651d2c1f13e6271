//! The wasmtime sandbox every plugin runs in.
//!
//! One [`Sandbox`] per process owns the `Engine` (component model, fuel, epoch
//! interruption, pooling allocator), the linker (WASI p2 and `wasi:http`, both
//! deny-by-default, plus the `host` interface) and a cache of linked
//! `InstancePre`s keyed by the sha256 of the component. A ticker thread
//! advances the epoch every [`EPOCH_TICK`], which drives deadlines and lets
//! long calls yield. Each task attempt gets a fresh `Store` (see `attempt`)
//! holding exactly the capabilities its [`Plugin`] was allowed. The
//! sandbox also holds the process's [`Capacity`]: an attempt waits for a
//! task slot before its store is made, and one that still finds the
//! instance pool full waits for another attempt to end rather than fail.

pub mod artifacts;
mod attempt;
mod bindings;
pub mod capabilities;
pub mod capacity;
pub mod cassette;
pub mod fair;
pub mod host_guard;
mod limiter;
mod outcome;
pub mod preinit;
pub mod quota;
mod schemas;
pub mod seal;
pub mod secrets;
pub mod world;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tracing::Instrument;
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::capacity::{Capacity, CapacityLimits};
use crate::secrets::Secrets;
use artifacts::ArtifactCache;
pub use bindings::{Emit, Emitter};
use bindings::{ExecutorPre, State};
use cassette::Cassette;
use host_guard::{HostGuard, RequestGate};
use orchestrator_core::plugin::{Allowed, Manifest, PluginSchemas};
use orchestrator_core::scheduler::{Executor, FailureKind, TaskFailure, TaskRequest, TaskSuccess};
use orchestrator_core::tenant::TenantId;
use orchestrator_core::workflow::{Limits, MAX_MEMORY};
use seal::SealKey;

/// How often the epoch advances: the resolution of deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Fiber stacks in the pool beyond one per plugin call the capacity lets
/// run at once: for `describe()` and pre-initialisation beside them.
const SPARE_STACKS: usize = 32;

/// Why a plugin could not be made ready to run.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The engine could not be configured on this machine.
    #[error("cannot start the WebAssembly engine: {0}")]
    Engine(String),
    /// The bytes are not a component, or do not compile.
    #[error("plugin `{plugin}` is not a valid WebAssembly component: {reason}")]
    Compile {
        /// The plugin, as named by the workflow or the file.
        plugin: String,
        /// What the compiler said.
        reason: String,
    },
    /// The component does not implement a hosted `executor` world, or imports
    /// something the host does not provide.
    #[error("plugin `{plugin}` is not an orchestrator plugin this runtime can host: {reason}")]
    Link {
        /// The plugin, as named by the workflow or the file.
        plugin: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// A compiled component, not yet linked.
#[derive(Clone)]
pub struct Compiled {
    name: Arc<str>,
    digest: String,
    component: Component,
}

impl Compiled {
    /// sha256 of the component bytes, lower-case hex.
    pub fn digest(&self) -> &str {
        &self.digest
    }
}

/// A linked plugin with the capabilities one task may use; cheap to clone.
#[derive(Clone)]
pub struct Plugin {
    name: Arc<str>,
    /// The sha256 of its component (empty for one being pre-initialised).
    digest: Arc<str>,
    pre: ExecutorPre,
    allowed: Arc<Allowed>,
    secrets: Arc<Secrets>,
    /// Set when a breaker guards the hosts this plugin calls.
    host_guard: Option<Arc<dyn HostGuard>>,
    /// Set when rate limits pace the hosts this plugin calls.
    gate: Option<Arc<dyn RequestGate>>,
    /// Set when its HTTP exchanges are recorded or replayed.
    cassette: Option<Arc<Cassette>>,
    /// Where what it emits goes.
    emitter: Option<Emitter>,
    /// Its input and output schemas, when the host checks them.
    schemas: Option<Arc<PluginSchemas>>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("allowed", &self.allowed)
            .finish()
    }
}

impl Plugin {
    /// A linked component with `allowed` and nothing else around it.
    fn linked(
        (name, digest): (Arc<str>, Arc<str>),
        pre: ExecutorPre,
        allowed: Allowed,
        secrets: Arc<Secrets>,
    ) -> Self {
        Self {
            name,
            digest,
            pre,
            allowed: Arc::new(allowed),
            secrets,
            host_guard: None,
            gate: None,
            cassette: None,
            emitter: None,
            schemas: None,
        }
    }

    /// The same plugin with other capabilities.
    pub fn with_capabilities(&self, allowed: Allowed, secrets: Arc<Secrets>) -> Self {
        Self {
            allowed: Arc::new(allowed),
            secrets,
            ..self.clone()
        }
    }

    /// The same plugin, its HTTP exchanges recorded to or replayed from
    /// `cassette`.
    pub fn with_cassette(self, cassette: Arc<Cassette>) -> Self {
        Self {
            cassette: Some(cassette),
            ..self
        }
    }

    /// The same plugin, each call's input checked against `schemas.input`
    /// before it starts and its output against `schemas.output`.
    pub fn with_schemas(self, schemas: Arc<PluginSchemas>) -> Self {
        Self {
            schemas: Some(schemas),
            ..self
        }
    }

    /// The same plugin, what it emits handed to `emitter`.
    pub fn with_emitter(self, emitter: Emitter) -> Self {
        Self {
            emitter: Some(emitter),
            ..self
        }
    }

    /// The same plugin, each HTTP request waiting for `gate`'s turn (the
    /// rate limits of its tenant) before it is sent.
    pub fn with_request_gate(self, gate: Arc<dyn RequestGate>) -> Self {
        Self {
            gate: Some(gate),
            ..self
        }
    }

    /// The same plugin, its HTTP requests guarded by `guard` (the host
    /// circuit breakers of its task).
    pub fn with_host_guard(self, guard: Arc<dyn HostGuard>) -> Self {
        Self {
            host_guard: Some(guard),
            ..self
        }
    }
}

/// The process's WebAssembly engine and its linked plugins.
pub struct Sandbox {
    engine: Engine,
    engine_hash: String,
    linker: Linker<State>,
    cache: Mutex<HashMap<String, ExecutorPre>>,
    /// Components compiled or loaded in this process, by digest: the same
    /// bytes are the same code whoever installed them, so a run does not
    /// read, check and map an artifact again.
    loaded: Mutex<HashMap<String, Component>>,
    capacity: Capacity,
    /// Where compiled components are kept across stores, if anywhere.
    artifacts: Option<ArtifactCache>,
    /// Seals every artifact this host writes; only sealed ones load.
    seal: SealKey,
    /// Signalled whenever an attempt's store is dropped (its pool slots
    /// are free again).
    freed: Notify,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sandbox")
    }
}

impl Sandbox {
    /// Configures the engine with the default capacity and starts the
    /// epoch ticker.
    pub fn new() -> Result<Arc<Self>, SandboxError> {
        Self::with_capacity(CapacityLimits::default())
    }

    /// Configures the engine, running at most `limits.tasks` plugin calls
    /// at once, and starts the epoch ticker.
    pub fn with_capacity(limits: CapacityLimits) -> Result<Arc<Self>, SandboxError> {
        Self::with_options(limits, None)
    }

    /// Like [`Sandbox::with_capacity`], keeping what it compiles in
    /// `artifacts` and looking there before compiling.
    pub fn with_options(
        limits: CapacityLimits,
        artifacts: Option<ArtifactCache>,
    ) -> Result<Arc<Self>, SandboxError> {
        limits.check().map_err(SandboxError::Engine)?;
        // A slot's memory is reset between instances. With the kernel's
        // PAGEMAP_SCAN (Linux 6.7+; `Auto` falls back without it) only the
        // pages the last instance wrote are found and restored with memset,
        // up to 256 KiB of them, and stay resident: a call no longer faults
        // its stack, data and heap pages back in one by one. That took a
        // no-op attempt from 27 to 14 µs and `transform` from ~35 to 19 µs;
        // a slot keeps at most 256 KiB resident after use. Batched
        // decommits for the rest. See docs/PERFORMANCE.md.
        let mut pool = PoolingAllocationConfig::default();
        // One stack per plugin call at once, and some for `describe()` and
        // pre-initialisation: the default 1000 stacks took a one-task
        // `runtime run` ~4 ms to map and guard and ~2 ms to unmap.
        let stacks = limits.tasks.saturating_add(SPARE_STACKS);
        pool.total_stacks(u32::try_from(stacks).unwrap_or(u32::MAX))
            .max_memory_size(usize::try_from(MAX_MEMORY).unwrap_or(usize::MAX))
            .decommit_batch_size(32)
            .linear_memory_keep_resident(256 << 10)
            .table_keep_resident(64 << 10)
            .pagemap_scan(wasmtime::Enabled::Auto);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .consume_fuel(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| SandboxError::Engine(format!("{e:#}")))?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .and_then(|()| wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker))
            .and_then(|()| bindings::add_to_linker(&mut linker))
            .map_err(|e| SandboxError::Engine(format!("{e:#}")))?;

        let mut hasher = DigestHasher(Sha256::new());
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_hash = hex(&hasher.0.finalize().into());

        start_ticker(&engine);
        Ok(Arc::new(Self {
            engine,
            engine_hash,
            linker,
            cache: Mutex::new(HashMap::new()),
            loaded: Mutex::new(HashMap::new()),
            capacity: Capacity::new(limits),
            artifacts,
            seal: SealKey::for_user(),
            freed: Notify::new(),
        }))
    }

    /// Identifies the engine's configuration: artifacts compiled by an engine
    /// with another hash must not be loaded by this one.
    pub fn engine_hash(&self) -> &str {
        &self.engine_hash
    }

    /// Checks that `bytes` are a component and compiles them, pre-initialised
    /// when it exports `wizer-initialize` (see [`preinit`]). Slow
    /// (milliseconds to seconds): done at install, or once per file.
    pub fn compile(&self, name: &str, bytes: &[u8]) -> Result<Compiled, SandboxError> {
        let compile_error = |reason: String| SandboxError::Compile {
            plugin: name.to_owned(),
            reason,
        };
        if let Some(reason) = world::not_a_component(bytes) {
            return Err(compile_error(reason));
        }
        let digest = hex(&Sha256::digest(bytes).into());
        if let Some(compiled) = self.loaded(name, &digest) {
            return Ok(compiled);
        }
        if let Some(compiled) = self.load_cached(name, &digest) {
            return Ok(compiled);
        }
        // A component replaced by its snapshot is not compiled as it is.
        let initialised = if preinit::wanted(bytes) {
            let snapshot = preinit::snapshot(&self.engine, &self.linker, name, bytes)?;
            self.freed.notify_waiters();
            snapshot
        } else {
            None
        };
        let component = match initialised {
            Some(component) => component,
            None => Component::new(&self.engine, bytes).map_err(|e| {
                compile_error(format!(
                    "it does not compile ({e:#}); the file may be truncated or damaged: rebuild it"
                ))
            })?,
        };
        if let Some(cache) = &self.artifacts
            && let Ok(artifact) = component.serialize()
        {
            let seal = self.seal.seal_alone(&self.engine_hash, &digest, &artifact);
            cache.put(&self.engine_hash, &digest, &artifact, &seal);
        }
        self.keep(&digest, &component);
        Ok(Compiled {
            name: Arc::from(name),
            digest,
            component,
        })
    }

    /// The precompiled form of a component, sealed, for the store.
    pub fn serialize(&self, compiled: &Compiled) -> Result<Vec<u8>, SandboxError> {
        let artifact = compiled
            .component
            .serialize()
            .map_err(|e| SandboxError::Engine(format!("{e:#}")))?;
        Ok(self
            .seal
            .seal(&self.engine_hash, &compiled.digest, &artifact))
    }

    /// Loads an artifact [`Sandbox::serialize`] wrote, without compiling.
    ///
    /// Only an artifact whose seal verifies (this user's key, this engine
    /// hash, this digest) is deserialized; any other is refused.
    pub fn load_artifact(
        &self,
        name: &str,
        digest: &str,
        sealed: &[u8],
    ) -> Result<Compiled, SandboxError> {
        let artifact = self
            .seal
            .open(&self.engine_hash, digest, sealed)
            .ok_or_else(|| SandboxError::Compile {
                plugin: name.to_owned(),
                reason: "its stored artifact was not sealed by this host's user for this engine; it is compiled again from the component".to_owned(),
            })?;
        #[allow(
            unsafe_code,
            reason = "deserializing runs native code compiled earlier; only artifacts sealed with this user's key for this engine hash get here"
        )]
        // SAFETY: `artifact` carries a seal made with this user's key over
        // this engine hash, this digest and these bytes, and only
        // `Sandbox::serialize` and `Sandbox::compile` seal, with the output
        // of `Component::serialize` of an engine with the same hash: it is
        // this host's own compiled code, not a plugin's or a tenant's input.
        let component = unsafe { Component::deserialize(&self.engine, artifact) }.map_err(|e| {
            SandboxError::Compile {
                plugin: name.to_owned(),
                reason: format!("its stored artifact does not load ({e:#}); reinstall it"),
            }
        })?;
        self.keep(digest, &component);
        // Kept in the file cache too, so the next process maps it.
        if let (Some(cache), Some(seal)) = (&self.artifacts, SealKey::seal_of(sealed)) {
            cache.put(&self.engine_hash, digest, artifact, &seal);
        }
        Ok(Compiled {
            name: Arc::from(name),
            digest: digest.to_owned(),
            component,
        })
    }

    /// The component with sha256 `digest` from this user's artifact cache,
    /// mapped from its file rather than read and copied, if it is there and
    /// its seal verifies.
    pub fn load_cached(&self, name: &str, digest: &str) -> Option<Compiled> {
        let cached = self.artifacts.as_ref()?.get(&self.engine_hash, digest)?;
        if !self
            .seal
            .verifies_file(&self.engine_hash, digest, &cached.file, &cached.seal)
        {
            tracing::debug!(
                "the cached artifact of {digest} was not sealed by this user for this engine"
            );
            return None;
        }
        #[allow(
            unsafe_code,
            reason = "deserializing runs native code compiled earlier; only an artifact sealed with this user's key for this engine hash gets here"
        )]
        // SAFETY: the file's seal was made with this user's key over this
        // engine hash, this digest and the file's bytes, and only this
        // sandbox seals, over `Component::serialize` of an engine with the
        // same hash. The file lives in a directory only this user may write
        // (`ArtifactCache::get` checks), so only this user could change it
        // between the check and the mapping, and that user runs us already.
        let component = unsafe { Component::deserialize_file(&self.engine, &cached.file) }
            .inspect_err(|e| {
                tracing::debug!("the cached artifact of {digest} does not load: {e:#}")
            })
            .ok()?;
        self.keep(digest, &component);
        Some(Compiled {
            name: Arc::from(name),
            digest: digest.to_owned(),
            component,
        })
    }

    /// The component with sha256 `digest`, if this process compiled or
    /// loaded it already (under any name), as `name`.
    pub fn loaded(&self, name: &str, digest: &str) -> Option<Compiled> {
        let component = self
            .loaded
            .lock()
            .expect("loaded lock")
            .get(digest)
            .cloned()?;
        Some(Compiled {
            name: Arc::from(name),
            digest: digest.to_owned(),
            component,
        })
    }

    fn keep(&self, digest: &str, component: &Component) {
        self.loaded
            .lock()
            .expect("loaded lock")
            .insert(digest.to_owned(), component.clone());
    }

    /// Links a compiled component (cached per digest) and gives it capabilities.
    pub fn link(
        &self,
        compiled: &Compiled,
        allowed: Allowed,
        secrets: Arc<Secrets>,
    ) -> Result<Plugin, SandboxError> {
        let cached = self
            .cache
            .lock()
            .expect("cache lock")
            .get(&compiled.digest)
            .cloned();
        let pre = match cached {
            Some(pre) => pre,
            None => {
                let link_error = |reason: String| SandboxError::Link {
                    plugin: compiled.name.to_string(),
                    reason,
                };
                world::check(&compiled.component, &self.engine).map_err(link_error)?;
                let pre = self
                    .linker
                    .instantiate_pre(&compiled.component)
                    .map_err(|e| link_error(format!("{e:#}")))?;
                let pre = ExecutorPre::new(pre).map_err(|e| link_error(format!("{e:#}")))?;
                self.cache
                    .lock()
                    .expect("cache lock")
                    .insert(compiled.digest.clone(), pre.clone());
                pre
            }
        };
        Ok(Plugin::linked(
            (
                Arc::clone(&compiled.name),
                Arc::from(compiled.digest.as_str()),
            ),
            pre,
            allowed,
            secrets,
        ))
    }

    /// Compiles and links a component that gets no capabilities at all (a
    /// `.wasm` named by path in a workflow, benches, tests).
    pub fn prepare(&self, name: &str, bytes: &[u8]) -> Result<Plugin, SandboxError> {
        let compiled = self.compile(name, bytes)?;
        self.link(&compiled, Allowed::default(), Arc::default())
    }

    /// How much this process runs at once.
    pub fn capacity(&self) -> &Capacity {
        &self.capacity
    }

    /// Calls `describe()` in a fresh store under `limits`, with no capabilities.
    pub async fn describe(&self, plugin: &Plugin, limits: Limits) -> Result<Manifest, TaskFailure> {
        // Installs take their turns as the default tenant's calls.
        let slot = self.capacity.task_slot(&TenantId::default()).await;
        let described = attempt::describe(&self.engine, plugin, limits).await;
        drop(slot);
        self.freed.notify_waiters();
        described
    }

    /// Runs one task attempt of `plugin` in a fresh store under the
    /// request's limits, once a task slot is free (the wait does not count
    /// against the attempt's deadline; a cancel ends it). A plugin that may
    /// write to a granted directory starts only once the request's effects
    /// are released: a write cannot be held back.
    pub async fn run(
        &self,
        plugin: &Plugin,
        request: TaskRequest,
    ) -> Result<TaskSuccess, TaskFailure> {
        schemas::check_input(plugin, &request.input)?;
        if plugin.allowed.dirs.iter().any(|d| d.writable) && !request.effects.is_released() {
            let held = tokio::select! {
                held = request.effects.wait() => held,
                () = request.cancel.cancelled() => Err("cancelled while waiting for the task's inputs to be recorded".to_owned()),
            };
            if let Err(message) = held {
                let kind = if request.cancel.is_cancelled() {
                    FailureKind::Cancelled
                } else {
                    FailureKind::Internal
                };
                return Err(TaskFailure {
                    kind,
                    message,
                    metering: Default::default(),
                });
            }
        }
        let slot = tokio::select! {
            slot = self.capacity.task_slot(&request.tenant) => slot,
            () = request.cancel.cancelled() => return Err(TaskFailure {
                kind: FailureKind::Cancelled,
                message: "cancelled while waiting for a task slot".to_owned(),
                metering: Default::default(),
            }),
        };
        let span = tracing::debug_span!(
            "plugin_call",
            plugin = %plugin.name,
            digest = %plugin.digest,
            contract = plugin.pre.contract(),
            attempt = request.attempt,
        );
        let result = attempt::run(self.pool(), plugin, request)
            .instrument(span)
            .await;
        drop(slot);
        self.freed.notify_waiters();
        result.and_then(|success| schemas::check_output(plugin, success))
    }

    fn pool(&self) -> attempt::Pool<'_> {
        attempt::Pool {
            engine: &self.engine,
            freed: &self.freed,
        }
    }
}

/// Feeds `Hash` output into sha256, for a hash that is stable across runs.
struct DigestHasher(Sha256);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        0
    }

    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

/// Lower-case hex of a digest.
pub fn hex(bytes: &[u8; 32]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Advances the epoch until the engine is dropped.
fn start_ticker(engine: &Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("epoch-ticker".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .expect("spawning the epoch ticker thread");
}

/// Runs tasks on plugins prepared for one workflow, keyed by task id.
#[derive(Debug)]
pub struct SandboxExecutor {
    sandbox: Arc<Sandbox>,
    plugins: HashMap<String, Plugin>,
}

impl SandboxExecutor {
    /// An executor for the given task id -> plugin map.
    pub fn new(sandbox: Arc<Sandbox>, plugins: HashMap<String, Plugin>) -> Self {
        Self { sandbox, plugins }
    }
}

impl Executor for SandboxExecutor {
    async fn execute(&self, request: TaskRequest) -> Result<TaskSuccess, TaskFailure> {
        match self.plugins.get(request.plugin_key().as_ref()) {
            Some(plugin) => self.sandbox.run(plugin, request).await,
            None => Err(TaskFailure {
                kind: FailureKind::Plugin,
                message: format!("no plugin was prepared for `{}`", request.plugin_key()),
                metering: Default::default(),
            }),
        }
    }
}
