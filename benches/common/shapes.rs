//! The workflow shapes the per-task benches run: `chain` (each task needs
//! the one before) and `fanout` (none needs another), of no-op tasks that
//! all use the plugin `guest`.

use orchestrator_engine::expr::Expressions;
use orchestrator_engine::workflow::{self, Plan, PluginCatalog};

/// Takes any plugin name: the benches hand tasks to executors of their own.
struct AnyPlugin;

impl PluginCatalog for AnyPlugin {
    fn check(&self, _: &str) -> Result<(), String> {
        Ok(())
    }
}

/// `tasks` tasks in `shape` (`chain` or `fanout`).
pub fn plan(shape: &str, tasks: usize) -> Plan {
    let mut yaml = format!("name: {shape}\ntasks:\n");
    for i in 0..tasks {
        yaml.push_str(&format!("  - id: t{i}\n    uses: guest\n"));
        if shape == "chain" && i > 0 {
            yaml.push_str(&format!("    needs: [t{}]\n", i - 1));
        }
    }
    workflow::load(&yaml, shape, &Expressions::new(), &AnyPlugin).expect("valid")
}
