//! Cost of one task attempt in the sandbox: fresh store, instantiate from the
//! cached `InstancePre`, call `execute`, drop.
//!
//! `cargo bench --bench sandbox`

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use runtime::sandbox::Sandbox;
use runtime::scheduler::TaskRequest;
use runtime::workflow::Limits;

fn request(input: &str) -> TaskRequest {
    TaskRequest {
        execution_id: Arc::from("bench"),
        task_id: "noop".into(),
        uses: "guest".into(),
        attempt: 1,
        input: input.into(),
        limits: Limits::default(),
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
    let transform_bytes = runtime::plugin::Catalog::new(".")
        .load("transform")
        .expect("transform is built in");
    let transform = sandbox
        .prepare("transform", &transform_bytes.bytes)
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
}

criterion_group!(benches, sandbox);
criterion_main!(benches);
