//! Compiles `proto/orchestrator/v1/*.proto` with protox (pure Rust, so a
//! fresh machine needs no `protoc`) into the messages, the tonic server and
//! client, and the file descriptor set reflection serves.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "proto/orchestrator/v1/executions.proto",
    "proto/orchestrator/v1/admin.proto",
    "proto/orchestrator/v1/plugins.proto",
    "proto/orchestrator/v1/workflows.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(PROTOS, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("orchestrator_v1.bin"),
        protox::prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
