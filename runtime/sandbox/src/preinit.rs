//! Pre-initialisation: a component that exports `wizer-initialize` has it
//! run once, when the host compiles it, and is replaced by a snapshot of
//! the instance that call left behind.
//!
//! Plugins do start-up work (building a script engine, compiling fixed
//! patterns, parsing meta-schemas) that every fresh instance would redo;
//! after the snapshot every attempt starts with it done. The wasmtime
//! project's Wizer (`wasmtime-wizer`) instruments the component so its
//! memories and globals can be read, and rewrites it with them as data; the
//! call itself runs here, in a store like any attempt's: no capabilities,
//! [`INITIALIZE_LIMITS`], on a thread of its own so compiling stays a plain
//! function whoever calls it.

use std::sync::Arc;

use wasmparser::{Parser, Payload};
use wasmtime::component::{Component, Instance, Linker, WasmList};
use wasmtime::{Engine, Store};
use wasmtime_wizer::{ComponentContext, ComponentInstanceState, Wizer};

use super::attempt;
use super::bindings::{ExecutorPre, State};
use super::capabilities::http::Denials;
use super::outcome;
use super::{Plugin, SandboxError};
use orchestrator_core::plugin::Allowed;
use orchestrator_core::scheduler::{Effects, FailureKind};
use orchestrator_core::workflow::Limits;

/// The export a plugin offers to be pre-initialised by (Wizer's name).
pub const INITIALIZE_EXPORT: &str = "wizer-initialize";

/// What the initialisation call may use: more than one attempt usually
/// gets (it runs once per install, not per call), still bounded, so a
/// plugin whose initialisation spins or grows is refused, not run forever.
pub const INITIALIZE_LIMITS: Limits = Limits {
    fuel: 2_000_000_000,
    memory: 512 << 20,
    deadline: std::time::Duration::from_secs(10),
    output: 0,
};

/// Whether the component in `bytes` asks to be pre-initialised: read off
/// its top-level exports, before anything is compiled (bytes that do not
/// parse do not ask; compiling them says what is wrong).
pub(super) fn wanted(bytes: &[u8]) -> bool {
    let mut depth = 0_usize;
    for payload in Parser::new(0).parse_all(bytes) {
        match payload {
            Err(_) => return false,
            Ok(Payload::ModuleSection { .. } | Payload::ComponentSection { .. }) => depth += 1,
            Ok(Payload::End(_)) => depth = depth.saturating_sub(1),
            Ok(Payload::ComponentExportSection(exports)) if depth == 0 => {
                if exports
                    .into_iter()
                    .any(|e| e.is_ok_and(|e| e.name.name == INITIALIZE_EXPORT))
                {
                    return true;
                }
            }
            Ok(_) => {}
        }
    }
    false
}

/// The pre-initialised form of `bytes`: `Ok(None)` when Wizer cannot
/// instrument this component (it then runs as it is, initialising itself
/// in every call); an error when its initialisation fails or breaks a limit.
pub(super) fn snapshot(
    engine: &Engine,
    linker: &Linker<State>,
    name: &str,
    bytes: &[u8],
) -> Result<Option<Component>, SandboxError> {
    let failed = |reason: String| SandboxError::Link {
        plugin: name.to_owned(),
        reason: format!("its `{INITIALIZE_EXPORT}` {reason}"),
    };
    let mut wizer = Wizer::new();
    // Kept: dropping it strips the core module's export of the same name,
    // which the component's lifted function still refers to (wasmtime-wizer
    // 48 writes an invalid component then). The host never calls it again.
    wizer.init_func(INITIALIZE_EXPORT).keep_init_func(true);
    let (cx, instrumented) = match wizer.instrument_component(bytes) {
        Ok(instrumented) => instrumented,
        Err(e) => {
            tracing::warn!(
                plugin = name,
                "not pre-initialised, Wizer cannot take it: {e:#}"
            );
            return Ok(None);
        }
    };
    let instrumented = Component::new(engine, &instrumented)
        .map_err(|e| failed(format!("cannot be prepared ({e:#})")))?;
    let pre = linker
        .instantiate_pre(&instrumented)
        .and_then(ExecutorPre::new)
        .map_err(|e| failed(format!("cannot be prepared ({e:#})")))?;
    let plugin = Plugin::linked(
        (Arc::from(name), Arc::from("")),
        pre,
        Allowed::default(),
        Arc::default(),
    );
    // Its own thread and runtime: callers may be inside a runtime or not,
    // and a panic in the instrumenter must not reach them.
    let snapshot = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()
                    .map_err(|e| format!("cannot run: {e}"))?
                    .block_on(initialize(engine, &plugin, &wizer, &cx))
            })
            .join()
            .unwrap_or_else(|_| Err("could not be snapshotted (the snapshotter panicked)".into()))
    })
    .map_err(failed)?;
    Component::new(engine, &snapshot)
        .map(Some)
        .map_err(|e| failed(format!("left a snapshot that does not compile ({e:#})")))
}

/// Instantiates the instrumented plugin, calls its initialisation under
/// [`INITIALIZE_LIMITS`] and snapshots the instance.
async fn initialize(
    engine: &Engine,
    plugin: &Plugin,
    wizer: &Wizer,
    cx: &ComponentContext<'_>,
) -> Result<Vec<u8>, String> {
    let limits = INITIALIZE_LIMITS;
    let denials = Denials::default();
    let mut store = attempt::new_store(
        engine,
        plugin,
        (&Arc::from(""), INITIALIZE_EXPORT, 0),
        &limits,
        (&Effects::released(), &denials),
        None,
    )
    .map_err(|f| f.message)?;
    let call = async {
        let instance = plugin
            .pre
            .instance_pre()
            .instantiate_async(&mut store)
            .await?;
        let init = instance.get_typed_func::<(), ()>(&mut store, INITIALIZE_EXPORT)?;
        init.call_async(&mut store, ()).await?;
        wasmtime::Result::Ok(instance)
    };
    let out_of_limits = |kind: FailureKind| {
        format!(
            "(run once at install to pre-initialise it) did not finish within its limits ({}: fuel {}, memory {} MiB, {} s); initialisation must be quick and bounded",
            kind.as_str(),
            limits.fuel,
            limits.memory >> 20,
            limits.deadline.as_secs()
        )
    };
    let instance = match tokio::time::timeout(limits.deadline, call).await {
        Ok(Ok(instance)) => instance,
        Err(_elapsed) => return Err(out_of_limits(FailureKind::Deadline)),
        Ok(Err(error)) => {
            let failure = outcome::classify(&error, &limits, &store.data().stderr);
            return Err(match failure.kind {
                kind @ (FailureKind::OutOfFuel
                | FailureKind::Deadline
                | FailureKind::MemoryLimit) => out_of_limits(kind),
                kind => format!(
                    "(run once at install to pre-initialise it) failed ({}): {}",
                    kind.as_str(),
                    failure.message
                ),
            });
        }
    };
    // Reading the state back runs the instrumenter's accessors, with
    // fuel of their own.
    store
        .set_fuel(limits.fuel)
        .map_err(|e| format!("cannot be snapshotted ({e:#})"))?;
    let mut state = Snapshotting {
        store: &mut store,
        instance,
        error: None,
    };
    let snapshot = wizer
        .snapshot_component(cx, &mut state)
        .await
        .map_err(|e| format!("could not be snapshotted ({e:#})"))?;
    match state.error {
        Some(error) => Err(format!("could not be snapshotted ({error:#})")),
        None => Ok(snapshot),
    }
}

/// Reads the instrumented instance's state for Wizer through the accessor
/// functions it added. The trait returns plain values, so the first error
/// is kept here and the snapshot discarded after.
struct Snapshotting<'a> {
    store: &'a mut Store<State>,
    instance: Instance,
    error: Option<wasmtime::Error>,
}

impl Snapshotting<'_> {
    async fn call<R>(&mut self, instance: &str, func: &str) -> Option<R>
    where
        R: wasmtime::component::Lift + Send + Sync + 'static,
    {
        if self.error.is_some() {
            return None;
        }
        let result = async {
            let (_, parent) = self
                .instance
                .get_export(&mut *self.store, None, instance)
                .ok_or_else(|| wasmtime::format_err!("no export `{instance}`"))?;
            let (_, index) = self
                .instance
                .get_export(&mut *self.store, Some(&parent), func)
                .ok_or_else(|| wasmtime::format_err!("no export `{instance}#{func}`"))?;
            let func = self
                .instance
                .get_typed_func::<(), (R,)>(&mut *self.store, index)?;
            Ok(func.call_async(&mut *self.store, ()).await?.0)
        }
        .await;
        result.map_err(|e| self.error = Some(e)).ok()
    }
}

impl ComponentInstanceState for Snapshotting<'_> {
    async fn call_func_ret_list_u8(
        &mut self,
        instance: &str,
        func: &str,
        contents: impl FnOnce(&[u8]) + Send,
    ) {
        match self.call::<WasmList<u8>>(instance, func).await {
            Some(list) => contents(list.as_le_slice(&*self.store)),
            None => contents(&[]),
        }
    }

    async fn call_func_ret_s32(&mut self, instance: &str, func: &str) -> i32 {
        self.call(instance, func).await.unwrap_or_default()
    }

    async fn call_func_ret_s64(&mut self, instance: &str, func: &str) -> i64 {
        self.call(instance, func).await.unwrap_or_default()
    }

    async fn call_func_ret_f32(&mut self, instance: &str, func: &str) -> u32 {
        self.call::<f32>(instance, func)
            .await
            .unwrap_or_default()
            .to_bits()
    }

    async fn call_func_ret_f64(&mut self, instance: &str, func: &str) -> u64 {
        self.call::<f64>(instance, func)
            .await
            .unwrap_or_default()
            .to_bits()
    }
}
