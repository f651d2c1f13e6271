//! Directories: a plugin sees the granted ones at their own paths,
//! preopened through cap-std (so nothing outside them is reachable),
//! read-only unless writing was both asked for and granted.

use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use crate::outcome::Failure;
use orchestrator_core::plugin::DirGrant;
use orchestrator_core::scheduler::FailureKind;

/// Preopens `dirs` in `wasi`; a directory that cannot be opened fails the
/// attempt with a message naming the grant.
pub(super) fn grant(wasi: &mut WasiCtxBuilder, dirs: &[DirGrant]) -> Result<(), Failure> {
    for dir in dirs {
        let perms = if dir.writable {
            FsPerms::ReadWrite
        } else {
            FsPerms::ReadOnly
        };
        wasi.preopened_dir(&dir.host_dir, &dir.path, perms)
            .map_err(|e| Failure {
                kind: FailureKind::Plugin,
                message: format!(
                    "the directory granted at `{}` ({}) cannot be opened: {e:#}; fix the grant with `runtime install`",
                    dir.path,
                    dir.host_dir.display()
                ),
            })?;
    }
    Ok(())
}
