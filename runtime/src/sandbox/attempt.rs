//! One task attempt: a fresh `Store` with its limits, one call to `execute`.
//!
//! The store gets a WASI context with nothing granted (no files, no
//! environment, no network, stdin empty, stdout discarded, stderr captured for
//! error messages), a memory limiter, a fuel budget and an epoch deadline. The
//! epoch callback yields to tokio at every tick, so a busy plugin cannot starve
//! its neighbours, and interrupts it past the deadline; a tokio timeout covers
//! time spent blocked in host calls (a guest's `sleep`).

use std::time::Instant;

use wasmtime::component::ResourceTable;
use wasmtime::{Engine, Store, UpdateDeadline};
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

use super::Plugin;
use super::bindings::{State, TaskContext};
use super::limiter::MemoryLimiter;
use super::outcome::{self, Failure};
use crate::scheduler::{Metering, TaskFailure, TaskRequest, TaskSuccess};

/// How much of a plugin's stderr is kept for error messages.
const STDERR_CAPACITY: usize = 16 * 1024;

pub(super) async fn run(
    engine: &Engine,
    plugin: &Plugin,
    request: TaskRequest,
) -> Result<TaskSuccess, TaskFailure> {
    let started = Instant::now();
    let limits = request.limits;
    let stderr = MemoryOutputPipe::new(STDERR_CAPACITY);
    let wasi = WasiCtx::builder().stderr(stderr.clone()).build();
    let mut store = Store::new(
        engine,
        State {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter::new(limits.memory),
            stderr,
            task_id: request.task_id.clone(),
            plugin: plugin.name.clone(),
        },
    );
    store.limiter(|state| &mut state.limiter);
    // A fresh store has no fuel; setting it cannot fail with fuel enabled.
    store
        .set_fuel(limits.fuel)
        .expect("fuel is enabled on the engine");
    let deadline = started + limits.deadline;
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        Ok(if Instant::now() >= deadline {
            UpdateDeadline::Interrupt
        } else {
            UpdateDeadline::Yield(1)
        })
    });

    let ctx = TaskContext {
        idempotency_key: format!("{}/{}", request.execution_id, request.task_id),
        execution_id: request.execution_id.to_string(),
        task_id: request.task_id,
        attempt: request.attempt,
    };
    let call = async {
        let instance = plugin.pre.instantiate_async(&mut store).await?;
        instance
            .call_execute(&mut store, &ctx, &request.input)
            .await
    };
    let result = tokio::time::timeout(limits.deadline, call).await;

    let metering = Metering {
        duration: started.elapsed(),
        fuel: limits.fuel - store.get_fuel().unwrap_or(0),
        peak_memory: store.data().limiter.peak(),
    };
    let failure = |failure: Failure| Err(failure.into_task_failure(metering));
    match result {
        Err(_elapsed) => failure(Failure::deadline(&limits)),
        Ok(Err(error)) => failure(outcome::classify(&error, &limits, &store.data().stderr)),
        Ok(Ok(Err(task_error))) => failure(outcome::from_plugin_error(task_error)),
        Ok(Ok(Ok(output))) => outcome::success(output, metering),
    }
}
