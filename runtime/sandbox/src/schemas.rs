//! A plugin's JSON Schemas around its calls: the task's input is checked
//! before the call starts (an `invalid-input` failure naming the field and
//! the rule; the plugin never runs), the output after it returns (a
//! `plugin` failure: the plugin broke its own promise). A plugin without
//! schemas accepts and answers anything.

use serde_json::Value;

use super::Plugin;
use orchestrator_core::scheduler::{FailureKind, TaskFailure, TaskSuccess};

/// Checks `input` (JSON text) against the plugin's input schema.
pub(super) fn check_input(plugin: &Plugin, input: &str) -> Result<(), TaskFailure> {
    let Some(schema) = plugin.schemas.as_ref().and_then(|s| s.input.as_ref()) else {
        return Ok(());
    };
    let value: Value = serde_json::from_str(input).unwrap_or(Value::Null);
    match schema.violations(&value) {
        None => Ok(()),
        Some(problems) => Err(TaskFailure {
            kind: FailureKind::InvalidInput,
            message: format!(
                "`with:` does not fit the input schema of {}: {problems}",
                plugin.name
            ),
            metering: Default::default(),
        }),
    }
}

/// Checks what a call answered against the plugin's output schema.
pub(super) fn check_output(
    plugin: &Plugin,
    success: TaskSuccess,
) -> Result<TaskSuccess, TaskFailure> {
    let Some(schema) = plugin.schemas.as_ref().and_then(|s| s.output.as_ref()) else {
        return Ok(success);
    };
    match schema.violations(&success.output) {
        None => Ok(success),
        Some(problems) => Err(TaskFailure {
            kind: FailureKind::Plugin,
            message: format!(
                "{} answered an output that does not fit its own output schema: {problems}",
                plugin.name
            ),
            metering: success.metering,
        }),
    }
}
