//! Cost of one task attempt in the sandbox: fresh store, instantiate from the
//! cached `InstancePre`, call `execute`, drop.
//!
//! `cargo bench --bench sandbox`

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use orchestrator_engine::sandbox::Sandbox;
use orchestrator_engine::scheduler::TaskRequest;
use orchestrator_engine::workflow::Limits;

fn request(input: &str) -> TaskRequest {
    TaskRequest {
        execution_id: Arc::from("bench"),
        tenant: Default::default(),
        task_id: "noop".into(),
        uses: "guest".into(),
        attempt: 1,
        input: input.into(),
        limits: Limits::default(),
        cancel: Default::default(),
        fallback: false,
        effects: Default::default(),
    }
}

fn sandbox(c: &mut Criterion) {
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio starts");
    let sandbox = Sandbox::new().expect("engine starts");
    let guest = std::fs::read(env!("TEST_GUEST_WASM")).expect("the build wrote the test guest");
    let noop = sandbox
        .prepare("test-guest", &guest)
        .expect("test guest compiles");
    let (_, transform_bytes) = orchestrator_engine::plugin::builtins()
        .find(|(name, _)| *name == "transform")
        .expect("transform is built in");
    let transform = sandbox
        .prepare("transform", transform_bytes)
        .expect("transform compiles");

    c.bench_function("instantiate+call no-op component", |b| {
        b.iter(|| {
            let result = tokio.block_on(sandbox.run(&noop, request("{}")));
            black_box(result.expect("echo succeeds"));
        });
    });

    let mut group = c.benchmark_group("transform");
    group.sample_size(20);
    group.bench_function("instantiate+call transform `1 + 1`", |b| {
        b.iter(|| {
            let result = tokio.block_on(sandbox.run(&transform, request(r#"{"script": "1 + 1"}"#)));
            black_box(result.expect("script runs"));
        });
    });
    group.finish();

    // What `runtime install` saves every later run: compiling a plugin
    // versus loading the artifact install stored.
    let mut group = c.benchmark_group("plugin load");
    group.sample_size(10);
    for (name, bytes) in [("test-guest", &guest[..]), ("transform", transform_bytes)] {
        let compiled = sandbox.compile(name, bytes).expect("compiles");
        let artifact = sandbox.serialize(&compiled).expect("serializes");
        let digest = compiled.digest().to_owned();
        group.bench_function(format!("compile {name}"), |b| {
            b.iter(|| black_box(sandbox.compile(name, bytes).expect("compiles")));
        });
        group.bench_function(format!("load {name} from its stored artifact"), |b| {
            b.iter(|| {
                black_box(
                    sandbox
                        .load_artifact(name, &digest, &artifact)
                        .expect("loads"),
                )
            });
        });
    }
    group.finish();
}

criterion_group!(benches, sandbox);
criterion_main!(benches);
