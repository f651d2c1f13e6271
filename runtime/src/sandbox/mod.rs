//! The wasmtime sandbox every plugin runs in.
//!
//! One [`Sandbox`] per process owns the `Engine` (component model, fuel, epoch
//! interruption, pooling allocator), the linker (WASI p2 with no grants, plus
//! the `host` interface) and a cache of linked `InstancePre`s keyed by the
//! sha256 of the component. A ticker thread advances the epoch every
//! [`EPOCH_TICK`], which drives deadlines and lets long calls yield.
//! Each task attempt gets a fresh `Store` (see `attempt`).

mod attempt;
mod bindings;
mod limiter;
mod outcome;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::scheduler::{Executor, TaskFailure, TaskRequest, TaskSuccess};
use bindings::{Executor as ExecutorWorld, ExecutorPre, State};

/// How often the epoch advances: the resolution of deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The largest memory any one plugin may be granted.
pub const MAX_MEMORY: u64 = 4 << 30;

/// Why a plugin could not be made ready to run.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The engine could not be configured on this machine.
    #[error("cannot start the WebAssembly engine: {0}")]
    Engine(String),
    /// The bytes are not a component, or do not compile.
    #[error("plugin `{plugin}` is not a valid WebAssembly component: {reason}")]
    Compile {
        /// The plugin, as named by the workflow.
        plugin: String,
        /// What the compiler said.
        reason: String,
    },
    /// The component does not implement the `executor` world, or imports
    /// something the host does not grant.
    #[error(
        "plugin `{plugin}` does not fit the orchestrator:plugin/executor@0.1.0 world: {reason}"
    )]
    Link {
        /// The plugin, as named by the workflow.
        plugin: String,
        /// What the linker said.
        reason: String,
    },
}

/// A compiled, linked plugin, cheap to clone and instantiate.
#[derive(Clone)]
pub struct Plugin {
    name: Arc<str>,
    pre: ExecutorPre<State>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin").field("name", &self.name).finish()
    }
}

/// The process's WebAssembly engine and its compiled plugins.
pub struct Sandbox {
    engine: Engine,
    linker: Linker<State>,
    cache: Mutex<HashMap<[u8; 32], ExecutorPre<State>>>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sandbox")
    }
}

impl Sandbox {
    /// Configures the engine and starts the epoch ticker.
    pub fn new() -> Result<Arc<Self>, SandboxError> {
        // Resetting a slot with memset (first 64 KiB) and batched decommits
        // instead of one madvise per slot took a no-op attempt from ~25 to
        // ~18 µs on 2 cores; 1 MiB kept resident was slower again (27 µs).
        // See docs/PERFORMANCE.md.
        let mut pool = PoolingAllocationConfig::default();
        pool.max_memory_size(usize::try_from(MAX_MEMORY).unwrap_or(usize::MAX))
            .decommit_batch_size(32)
            .linear_memory_keep_resident(64 << 10)
            .table_keep_resident(64 << 10);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .consume_fuel(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(|e| SandboxError::Engine(format!("{e:#}")))?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .and_then(|()| {
                ExecutorWorld::add_to_linker::<State, HasSelf<State>>(&mut linker, |s| s)
            })
            .map_err(|e| SandboxError::Engine(format!("{e:#}")))?;

        start_ticker(&engine);
        Ok(Arc::new(Self {
            engine,
            linker,
            cache: Mutex::new(HashMap::new()),
        }))
    }

    /// Compiles and links a component, or returns the cached result for the
    /// same bytes. Compiling is slow (milliseconds to seconds): do it once per
    /// plugin, before tasks run.
    pub fn prepare(&self, name: &str, bytes: &[u8]) -> Result<Plugin, SandboxError> {
        let digest: [u8; 32] = Sha256::digest(bytes).into();
        let cached = self.cache.lock().expect("cache lock").get(&digest).cloned();
        let pre = match cached {
            Some(pre) => pre,
            None => {
                let component =
                    Component::new(&self.engine, bytes).map_err(|e| SandboxError::Compile {
                        plugin: name.to_owned(),
                        reason: format!("{e:#}"),
                    })?;
                let link_error = |e: wasmtime::Error| SandboxError::Link {
                    plugin: name.to_owned(),
                    reason: format!("{e:#}"),
                };
                let pre = self
                    .linker
                    .instantiate_pre(&component)
                    .map_err(link_error)?;
                let pre = ExecutorPre::new(pre).map_err(link_error)?;
                self.cache
                    .lock()
                    .expect("cache lock")
                    .insert(digest, pre.clone());
                pre
            }
        };
        Ok(Plugin {
            name: Arc::from(name),
            pre,
        })
    }

    /// Runs one task attempt of `plugin` in a fresh store under the request's limits.
    pub async fn run(
        &self,
        plugin: &Plugin,
        request: TaskRequest,
    ) -> Result<TaskSuccess, TaskFailure> {
        attempt::run(&self.engine, plugin, request).await
    }
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

/// Runs tasks on plugins prepared for one workflow, keyed by `uses:`.
#[derive(Debug)]
pub struct SandboxExecutor {
    sandbox: Arc<Sandbox>,
    plugins: HashMap<String, Plugin>,
}

impl SandboxExecutor {
    /// An executor for the given `uses:` -> plugin map.
    pub fn new(sandbox: Arc<Sandbox>, plugins: HashMap<String, Plugin>) -> Self {
        Self { sandbox, plugins }
    }
}

impl Executor for SandboxExecutor {
    async fn execute(&self, request: TaskRequest) -> Result<TaskSuccess, TaskFailure> {
        match self.plugins.get(&request.uses) {
            Some(plugin) => self.sandbox.run(plugin, request).await,
            None => Err(TaskFailure {
                kind: crate::scheduler::FailureKind::Plugin,
                message: format!("plugin `{}` was not prepared", request.uses),
                metering: Default::default(),
            }),
        }
    }
}
