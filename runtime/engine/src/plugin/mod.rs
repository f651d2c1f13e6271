//! Plugins in the engine: resolving `uses:` against the store, installing
//! components, finding, granting and removing installed ones
//! (`manage.rs`), and the built-ins embedded in the binary.
//!
//! The model (how `uses:` names a plugin, manifests, grants) is
//! [`orchestrator_core::plugin`], re-exported here. Built-in plugins
//! (`plugins/*`) are installed into the store through the same path as any
//! other when a store first opens ([`install_builtins`]).

mod catalog;
mod install;
mod manage;

pub use catalog::{Catalog, Resolved};
pub use install::{InstallError, InstallReport, InstallRequest, install, install_builtins};
pub use manage::{Removed, find, grant, remove};
pub use orchestrator_core::plugin::*;

include!(concat!(env!("OUT_DIR"), "/builtin.rs"));

/// The built-in plugins: name and component bytes.
pub fn builtins() -> impl Iterator<Item = (&'static str, &'static [u8])> {
    BUILTINS.iter().map(|(name, bytes, _)| (*name, *bytes))
}
