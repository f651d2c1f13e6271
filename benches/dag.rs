//! Cost of turning a 10,000- and a 100,000-task workflow into a plan:
//! parse, validate (ids, needs, expressions, cycles) and build the DAG. The
//! two sizes show whether it grows linearly.
//!
//! `cargo bench --bench dag`

use std::fmt::Write as _;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use orchestrator_engine::expr::Expressions;
use orchestrator_engine::graph::Dag;
use orchestrator_engine::workflow::{self, PluginCatalog};

/// Workflow sizes measured.
const SIZES: [usize; 2] = [10_000, 100_000];

struct AnyPlugin;

impl PluginCatalog for AnyPlugin {
    fn check(&self, _: &str) -> Result<(), String> {
        Ok(())
    }
}

/// Task `i` needs `i - 1` and `i / 2`; every tenth reads its predecessor's output.
fn workflow_yaml(tasks: usize) -> String {
    let mut yaml = String::from("name: big\ntasks:\n");
    for i in 0..tasks {
        let _ = write!(yaml, "  - id: t{i}\n    uses: noop\n");
        if i > 0 {
            let _ = writeln!(yaml, "    needs: [t{}, t{}]", i - 1, i / 2);
        }
        if i > 0 && i % 10 == 0 {
            let _ = writeln!(
                yaml,
                "    with: {{ x: \"${{{{ tasks.t{}.output }}}}\" }}",
                i - 1
            );
        }
    }
    yaml
}

fn dag(c: &mut Criterion) {
    let expressions = Expressions::new();
    for tasks in SIZES {
        let yaml = workflow_yaml(tasks);
        let mut group = c.benchmark_group(format!("{}k tasks", tasks / 1000));
        group.sample_size(10);
        group.bench_function("parse + validate + build DAG", |b| {
            b.iter(|| {
                let plan = workflow::load(&yaml, "big.yaml", &expressions, &AnyPlugin);
                black_box(plan.expect("valid"));
            });
        });
        let needs: Vec<Vec<usize>> = (0..tasks)
            .map(|i| if i == 0 { vec![] } else { vec![i - 1, i / 2] })
            .collect();
        group.bench_function("build DAG + cycle check", |b| {
            b.iter(|| black_box(Dag::build(tasks, &needs).expect("acyclic")));
        });
        group.finish();
    }
}

criterion_group!(benches, dag);
criterion_main!(benches);
