//! One call into a plugin: a fresh `Store` with its limits and capabilities.
//!
//! The store's WASI context and outgoing HTTP hold exactly what the plugin
//! was allowed, built by `capabilities` (one module per capability). A memory limiter, a fuel budget and an epoch
//! deadline bound the call; the epoch callback yields to tokio at every tick,
//! so a busy plugin cannot starve its neighbours, and interrupts it past the
//! deadline or once its run is cancelled; a tokio timeout covers time spent
//! blocked in host calls.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Notify;
use wasmtime::component::ResourceTable;
use wasmtime::{Engine, PoolConcurrencyLimitError, Store, UpdateDeadline};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi_http::WasiHttpCtx;

use super::Plugin;
use super::bindings::{State, TaskContext};
use super::capabilities::{self, http::Denials, http::Egress};
use super::host_guard::AttemptId;
use super::limiter::MemoryLimiter;
use super::outcome::{self, Failure};
use super::quota::{LogBudget, MAX_RESOURCES};
use orchestrator_core::plugin::Manifest;
use orchestrator_core::scheduler::{
    Cancel, Effects, FailureKind, Metering, TaskFailure, TaskRequest, TaskSuccess,
};
use orchestrator_core::workflow::Limits;

/// How much of a plugin's stderr is kept for error messages.
const STDERR_CAPACITY: usize = 16 * 1024;

/// The engine attempts run on, and how they learn that an instance slot
/// of its pool was freed.
pub(super) struct Pool<'a> {
    pub(super) engine: &'a Engine,
    pub(super) freed: &'a Notify,
}

/// Runs `execute` once.
pub(super) async fn run(
    pool: Pool<'_>,
    plugin: &Plugin,
    request: TaskRequest,
) -> Result<TaskSuccess, TaskFailure> {
    let started = Instant::now();
    let limits = request.limits;
    let denials = Denials::default();
    let cancel = Some(Arc::clone(&request.cancel));
    let ctx = TaskContext {
        idempotency_key: format!("{}/{}", request.execution_id, request.task_id),
        execution_id: request.execution_id.to_string(),
        task_id: request.task_id,
        attempt: request.attempt,
        uses: request.uses,
        deadline_ms: u64::try_from(limits.deadline.as_millis()).unwrap_or(u64::MAX),
        fallback: request.fallback,
    };
    let fresh_store = || {
        new_store(
            pool.engine,
            plugin,
            (&request.execution_id, &ctx.task_id, ctx.attempt),
            &limits,
            (&request.effects, &denials),
            cancel.clone(),
        )
    };
    let mut store = match fresh_store() {
        Ok(store) => store,
        Err(failure) => return Err(failure.into_task_failure(Metering::default())),
    };
    let call = async {
        // The pool is full (more calls at once than it has instances, for
        // example of a component with many core instances): drop the
        // partly made instance and wait for another attempt to end.
        let instance = loop {
            let freed = pool.freed.notified();
            match plugin.pre.instantiate_async(&mut store).await {
                Err(e) if e.downcast_ref::<PoolConcurrencyLimitError>().is_some() => {
                    tracing::debug!(task = %ctx.task_id, "instance pool full, waiting: {e}");
                    store = fresh_store().map_err(|f| wasmtime::format_err!("{}", f.message))?;
                    freed.await;
                }
                instantiated => break instantiated?,
            }
        };
        instance
            .call_execute(&mut store, &ctx, &request.input)
            .await
    };
    // A cancel interrupts running wasm at the next epoch tick; this covers
    // an attempt blocked in a host call (a sleep, a slow response).
    let call = async {
        tokio::select! {
            result = call => result,
            () = request.cancel.cancelled() => Err(wasmtime::format_err!("cancelled")),
        }
    };
    let result = tokio::time::timeout(limits.deadline, call).await;
    // Emits held for the commit of the task's inputs go out once it
    // returns, or never.
    if store.data().holds_emits() && request.effects.wait().await.is_ok() {
        store.data_mut().release_emits();
    }

    let metering = metering(&store, &limits, started);
    if request.cancel.is_cancelled() && !matches!(result, Ok(Ok(Ok(_)))) {
        return Err(Failure {
            kind: FailureKind::Cancelled,
            message: "interrupted: the run was cancelled".to_owned(),
        }
        .into_task_failure(metering));
    }
    let failure = match result {
        Err(_elapsed) => Failure::deadline(&limits),
        Ok(Err(error)) => outcome::classify(&error, &limits, &store.data().stderr),
        Ok(Ok(Err(task_error))) => outcome::from_plugin_error(task_error),
        Ok(Ok(Ok(output))) => return outcome::success(output, &limits, metering),
    };
    Err(failure
        .refused_by_host(&denials.lock().expect("denials lock"))
        .into_task_failure(metering))
}

/// Calls `describe` once, with no capabilities.
pub(super) async fn describe(
    engine: &Engine,
    plugin: &Plugin,
    limits: Limits,
) -> Result<Manifest, TaskFailure> {
    let started = Instant::now();
    let denials = Denials::default();
    let mut store = new_store(
        engine,
        plugin,
        (&Arc::from(""), "describe", 0),
        &limits,
        (&Effects::released(), &denials),
        None,
    )
    .map_err(|f| f.into_task_failure(Metering::default()))?;
    let call = async {
        let instance = plugin.pre.instantiate_async(&mut store).await?;
        instance.call_describe(&mut store).await
    };
    let result = tokio::time::timeout(limits.deadline, call).await;
    let metering = metering(&store, &limits, started);
    match result {
        Ok(Ok(manifest)) => Ok(manifest),
        Err(_elapsed) => Err(Failure::deadline(&limits).into_task_failure(metering)),
        Ok(Err(error)) => {
            Err(outcome::classify(&error, &limits, &store.data().stderr)
                .into_task_failure(metering))
        }
    }
}

fn metering(store: &Store<State>, limits: &Limits, started: Instant) -> Metering {
    Metering {
        duration: started.elapsed(),
        fuel: limits.fuel.saturating_sub(store.get_fuel().unwrap_or(0)),
        peak_memory: store.data().limiter.peak(),
    }
}

/// A store holding exactly what `plugin` may use, under `limits`, whose
/// effects go out when `effects` allows.
pub(super) fn new_store(
    engine: &Engine,
    plugin: &Plugin,
    (execution_id, task_id, attempt): (&Arc<str>, &str, u32),
    limits: &Limits,
    (effects, denials): (&Effects, &Denials),
    cancel: Option<Arc<Cancel>>,
) -> Result<Store<State>, Failure> {
    let stderr = MemoryOutputPipe::new(STDERR_CAPACITY);
    let attempt_id = AttemptId {
        execution: Arc::clone(execution_id),
        task: task_id.to_owned(),
        attempt,
    };
    let mut store = Store::new(
        engine,
        State {
            wasi: capabilities::wasi(&plugin.allowed, stderr.clone())?,
            http: WasiHttpCtx::new(),
            egress: Egress::new(plugin, attempt_id, effects, denials),
            table: {
                let mut table = ResourceTable::new();
                table.set_max_capacity(MAX_RESOURCES);
                table
            },
            limiter: MemoryLimiter::new(limits.memory),
            stderr,
            task_id: task_id.to_owned(),
            execution_id: Arc::clone(execution_id),
            attempt,
            plugin: Arc::clone(&plugin.name),
            emitter: plugin.emitter.clone(),
            emitted: 0,
            effects: effects.clone(),
            held: Vec::new(),
            log: LogBudget::default(),
            cancel: cancel.clone(),
        },
    );
    store.limiter(|state| &mut state.limiter);
    // A fresh store has no fuel; setting it cannot fail with fuel enabled.
    store
        .set_fuel(limits.fuel)
        .expect("fuel is enabled on the engine");
    let deadline = Instant::now() + limits.deadline;
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        let cancelled = cancel.as_ref().is_some_and(|c| c.is_cancelled());
        Ok(if cancelled || Instant::now() >= deadline {
            UpdateDeadline::Interrupt
        } else {
            UpdateDeadline::Yield(1)
        })
    });
    Ok(store)
}
