//! A plugin whose `initialize` (the `wizer-initialize` export the host runs
//! once at install) never returns: `runtime install` must stop it under
//! its limits, refuse it and write nothing.

use orchestrator_sdk::{Context, Error, Info, Plugin, Value, export_plugin};

/// The plugin.
pub struct InitSpins;

impl Plugin for InitSpins {
    type Input = Value;
    type Output = Value;

    fn info() -> Info {
        Info::new("init-spins", "0.1.0", "Never finishes initialising.")
    }

    fn initialize() {
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }

    fn execute(_: &Context, input: Value) -> Result<Value, Error> {
        Ok(input)
    }
}

export_plugin!(InitSpins);
