//! The contract of a store backend: everything the engine keeps besides
//! executions, one trait per concern ([`PluginsBackend`],
//! [`WorkflowsBackend`], [`BreakersBackend`], [`KeysBackend`],
//! [`AuditBackend`], [`TenantsBackend`], [`ResponsesBackend`]) and
//! [`StoreBackend`] tying them to one place. The decisions that must come
//! out the same everywhere (what an install does, which version a
//! workflow gets, whether a cached answer is fresh) are functions beside
//! the traits, so a backend only keeps data.

use std::path::Path;
use std::sync::Arc;

pub use crate::audit::AuditBackend;
pub use crate::breakers::BreakersBackend;
pub use crate::keys::KeysBackend;
pub use crate::plugins::PluginsBackend;
pub use crate::responses::ResponsesBackend;
pub use crate::tenants::TenantsBackend;
pub use crate::workflows::WorkflowsBackend;

/// One backend: plugins, workflows and breakers, every key under its
/// tenant, the host's API keys and audit log, and the response cache that
/// goes with them.
pub trait StoreBackend:
    PluginsBackend
    + WorkflowsBackend
    + BreakersBackend
    + KeysBackend
    + AuditBackend
    + TenantsBackend
    + std::fmt::Debug
    + Send
    + Sync
{
    /// Where it is, for messages: a file, a URL, `(memory)`.
    fn location(&self) -> String;

    /// The store file, for a backend that is one (execution files are kept
    /// beside it by default); `None` otherwise.
    fn file(&self) -> Option<&Path>;

    /// Where a running process writes breaker states as they change. It may
    /// outlive this handle: the store file is held by one process at a
    /// time, so the file backend gives a writer that opens the file for
    /// each write rather than keeping it.
    fn breaker_log(&self) -> Arc<dyn BreakersBackend>;

    /// The response cache kept with this store.
    fn responses(&self) -> Arc<dyn ResponsesBackend>;
}
