//! A plugin whose `describe()` panics: `runtime install` must refuse it with
//! a clear error and write nothing.

use orchestrator_sdk::{Context, Error, Info, Plugin, Value, export_plugin};

/// The plugin.
pub struct DescribePanics;

impl Plugin for DescribePanics {
    type Input = Value;
    type Output = Value;

    fn info() -> Info {
        panic!("describe-panics refuses to describe itself")
    }

    fn execute(_: &Context, input: Value) -> Result<Value, Error> {
        Ok(input)
    }
}

export_plugin!(DescribePanics);
