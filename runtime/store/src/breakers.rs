//! Circuit breaker states: read when a run starts, written when a breaker
//! changes state, so an open breaker stays open across runs, processes and
//! restarts. Keys are `plugin:<sha256>` or `host:<name>:<port>`, under the
//! tenant.

use std::collections::BTreeMap;

use crate::StoreError;
use orchestrator_core::fault::Breaker;

/// Where breaker states are kept.
pub trait BreakersBackend: std::fmt::Debug + Send + Sync {
    /// Every breaker of `tenant`, by key.
    fn breakers(&self, tenant: &str) -> Result<BTreeMap<String, Breaker>, StoreError>;

    /// Records breaker `key` of `tenant`, replacing its state.
    fn put_breaker(&self, tenant: &str, key: &str, breaker: &Breaker) -> Result<(), StoreError>;
}
