//! The response cache: answers of tasks that asked for `cache:`, by
//! tenant and key. Keys are content addresses computed by the caller
//! (plugin digest and the normalized request); an entry older than the
//! asking task's `ttl` is a miss ([`fresh`]) and is replaced by the fresh
//! answer.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::StoreError;

/// One cached answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedAnswer {
    /// The task's output.
    pub output: Value,
    /// The model that gave it, if the plugin said.
    pub model: Option<String>,
    /// When it was stored, ms since the epoch.
    pub stored_at: u64,
}

/// Where cached answers are kept.
pub trait ResponsesBackend: std::fmt::Debug + Send + Sync {
    /// The answer `tenant` stored under `key`, if it was stored less than
    /// `ttl_ms` before `now` (ms since the epoch).
    fn get(
        &self,
        tenant: &str,
        key: &str,
        now: u64,
        ttl_ms: u64,
    ) -> Result<Option<CachedAnswer>, StoreError>;

    /// Stores `answer` under `tenant` and `key`, replacing what was there.
    fn put(&self, tenant: &str, key: &str, answer: &CachedAnswer) -> Result<(), StoreError>;
}

/// `answer` if it is younger than `ttl_ms` at `now`: the same on every
/// backend.
pub fn fresh(answer: CachedAnswer, now: u64, ttl_ms: u64) -> Option<CachedAnswer> {
    (answer.stored_at.saturating_add(ttl_ms) > now).then_some(answer)
}
