//! A plugin built against `wit/0.1.0` directly (no SDK, which follows the
//! newest contract), the way plugins were built before 0.2.0: it says what
//! its 0.1.0 context holds and reports usage without a provider. The host
//! must install and run it unchanged beside 0.2.0 plugins. Its schemas are
//! strict, and `lie: true` makes it break its output schema, for the
//! host's schema checks.

#![allow(
    unsafe_code,
    missing_docs,
    clippy::too_many_arguments,
    reason = "wit-bindgen's generated exports are unsafe, undocumented and mirror the WIT signatures"
)]

wit_bindgen::generate!({
    world: "executor",
    path: "../../../wit/0.1.0",
});

use orchestrator::plugin::{host, types};

struct Old;

impl Guest for Old {
    fn describe() -> types::PluginInfo {
        types::PluginInfo {
            name: "contract-0-1".into(),
            version: "1.0.0".into(),
            description: "Built for orchestrator:plugin@0.1.0.".into(),
            input_schema: r#"{"type": "object", "required": ["n"], "properties": {"n": {"type": "integer", "minimum": 0}, "lie": {"type": "boolean"}}, "additionalProperties": false}"#.into(),
            output_schema: r#"{"type": "object", "required": ["task", "input"]}"#.into(),
            capabilities: types::Capabilities {
                http_hosts: Vec::new(),
                filesystem: Vec::new(),
                env: Vec::new(),
                secrets: Vec::new(),
            },
        }
    }

    fn execute(
        ctx: types::TaskContext,
        input: String,
    ) -> Result<types::TaskOutput, types::TaskError> {
        host::log(host::LogLevel::Info, "running as 0.1.0", &[]);
        // Asked to break its own output schema.
        if input.contains(r#""lie":true"#) {
            return Ok(types::TaskOutput {
                output: r#"{"lied":true}"#.into(),
                usage: None,
            });
        }
        host::emit("text", "old ");
        let output = format!(
            r#"{{"task":"{}","attempt":{},"idempotency_key":"{}","input":{input}}}"#,
            ctx.task_id, ctx.attempt, ctx.idempotency_key
        );
        Ok(types::TaskOutput {
            output,
            usage: Some(types::Usage {
                input_tokens: 5,
                output_tokens: 2,
                model: Some("m-0".into()),
            }),
        })
    }
}

export!(Old);
