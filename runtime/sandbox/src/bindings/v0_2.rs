//! Hosting plugins built for `orchestrator:plugin@0.2.0` (`wit/0.2.0`): its
//! generated bindings and their mapping to what the host works with.

use super::{Level, Output, Returned, State};
use orchestrator_core::plugin::{Capabilities, FsAccess, Manifest};
use orchestrator_core::scheduler::{FailureKind, Usage};

wasmtime::component::bindgen!({
    world: "executor",
    path: "../../wit/0.2.0",
    exports: { default: async },
});

use orchestrator::plugin::{host, types};

hosted_version! {
    fn cancelled(&mut self) -> bool {
        self.run_cancelled()
    }
}

/// The context as 0.2.0 has it.
pub(super) fn context(ctx: &super::TaskContext) -> types::TaskContext {
    types::TaskContext {
        execution_id: ctx.execution_id.clone(),
        task_id: ctx.task_id.clone(),
        attempt: ctx.attempt,
        idempotency_key: ctx.idempotency_key.clone(),
        uses: ctx.uses.clone(),
        deadline_ms: ctx.deadline_ms,
        fallback: ctx.fallback,
    }
}

/// What `execute` returned.
pub(super) fn returned(result: Result<types::TaskOutput, types::TaskError>) -> Returned {
    let output = result.map_err(failure)?;
    Ok(Output {
        output: output.output,
        usage: output.usage.map(|u| Usage {
            input_tokens: u.input_tokens,
            output_tokens: u.output_tokens,
            model: u.model,
            provider: u.provider,
            cost_usd: None,
            cached: false,
        }),
    })
}
