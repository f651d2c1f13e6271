//! The engine embedded in a Rust program: a workflow built in code, started,
//! its events printed as they are committed, its outputs printed when it
//! ends. It keeps its store where `runtime` would look for one given the
//! same file, so `runtime status ID` shows the execution too.
//!
//! ```sh
//! cargo run --example embedded -- /tmp/embedded/store.redb Ada
//! ```

use std::error::Error;
use std::path::PathBuf;

use orchestrator_engine::{Engine, Task, Workflow};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let store = args.next().map_or_else(
        || std::env::temp_dir().join("embedded/store.redb"),
        PathBuf::from,
    );
    let name = args.next().unwrap_or_else(|| "world".to_owned());

    let engine = Engine::builder().store(store).build().await?;
    let workflow = Workflow::builder("greet")
        .input("name", "string")
        .task(
            Task::new("greeting", "transform")
                .with("name", "${{ inputs.name }}")
                .with("script", r#""Hello, " + name + "!""#),
        )
        .task(
            Task::new("shout", "transform")
                .needs(["greeting"])
                .with("text", "${{ tasks.greeting.output }}")
                .with("script", "text.to_upper()"),
        )
        .output("greeting", "${{ tasks.shout.output }}")
        .build()?;

    let execution = engine.start(&workflow, json!({ "name": name })).await?;
    println!("execution {}", execution.id());
    let mut events = execution.events(0);
    while let Some(event) = events.next().await {
        let (number, event) = event?;
        println!("{number:>4}  {}", serde_json::to_string(&event)?);
    }
    let done = execution.wait().await?;
    println!("{}", serde_json::to_string(&done.record.outputs)?);
    Ok(())
}
