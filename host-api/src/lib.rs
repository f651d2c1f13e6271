//! The control API of `runtime serve`: the `orchestrator.v1` contract
//! (`proto/`, compiled by `build.rs`), the gRPC server over the engine
//! (`server/`), a client (`client.rs`) and, over it, a handle on a remote
//! execution shaped like the SDK's (`remote.rs`). The generated types stay
//! in [`pb`]; the server turns them into engine calls and back.

pub mod client;
pub mod remote;
pub mod server;

/// The generated messages, services and clients, and the descriptor set
/// reflection serves.
#[allow(missing_docs, clippy::all, clippy::pedantic, clippy::unwrap_used)]
pub mod pb {
    tonic::include_proto!("orchestrator.v1");

    /// The encoded descriptors of every `orchestrator.v1` file.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/orchestrator_v1.bin"));
}
