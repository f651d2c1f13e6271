//! What a plugin may reach beyond its own memory, one module per
//! capability, each given exactly what the plugin's grants (`Allowed`) say
//! and nothing by default: `filesystem.rs` the granted directories,
//! `environment.rs` the granted environment variables, `http/` outgoing
//! HTTP requests. Sockets are never granted, stdin is empty, stdout is
//! discarded and stderr is kept for error messages.

mod environment;
mod filesystem;
pub mod http;

use wasmtime_wasi::WasiCtx;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;

use crate::outcome::Failure;
use orchestrator_core::plugin::Allowed;

/// The WASI context of one attempt: the capabilities `allowed` grants,
/// stderr into `stderr`.
pub(crate) fn wasi(allowed: &Allowed, stderr: MemoryOutputPipe) -> Result<WasiCtx, Failure> {
    let mut wasi = WasiCtx::builder();
    wasi.stderr(stderr).allow_tcp(false).allow_udp(false);
    environment::grant(&mut wasi, &allowed.env);
    filesystem::grant(&mut wasi, &allowed.dirs)?;
    Ok(wasi.build())
}
