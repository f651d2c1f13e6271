//! Hosting plugins built for `orchestrator:plugin@0.1.0` (`wit/0.1.0`): its
//! generated bindings and their mapping to what the host works with. Frozen
//! like its WIT: plugins built for it keep running unchanged.

use super::{Level, Output, Returned, State};
use orchestrator_core::plugin::{Capabilities, FsAccess, Manifest};
use orchestrator_core::scheduler::{FailureKind, Usage};

wasmtime::component::bindgen!({
    world: "executor",
    path: "../../wit/0.1.0",
    exports: { default: async },
});

use orchestrator::plugin::{host, types};

hosted_version!();

/// The context as 0.1.0 has it.
pub(super) fn context(ctx: &super::TaskContext) -> types::TaskContext {
    types::TaskContext {
        execution_id: ctx.execution_id.clone(),
        task_id: ctx.task_id.clone(),
        attempt: ctx.attempt,
        idempotency_key: ctx.idempotency_key.clone(),
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
            provider: None,
            cost_usd: None,
            cached: false,
        }),
    })
}
