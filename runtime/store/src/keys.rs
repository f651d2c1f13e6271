//! API keys of the control API: who may call a server, for which tenant, in
//! which role. A key is kept as its id and a salted hash of its secret,
//! never the secret itself, so the store cannot give a key back.

use serde::{Deserialize, Serialize};

use crate::StoreError;

/// One API key, without its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKeyRecord {
    /// Its id, the public part of the key.
    pub id: String,
    /// The tenant it acts for.
    pub tenant: String,
    /// Its role: `viewer`, `operator`, `developer` or `admin`.
    pub role: String,
    /// What it is for, for people.
    pub name: String,
    /// The salt of its hash, hex.
    pub salt: String,
    /// HMAC-SHA256 of the secret under the salt, hex.
    pub hash: String,
    /// When it was made, ms since the epoch.
    pub created_at: u64,
    /// When it was revoked, ms since the epoch.
    pub revoked_at: Option<u64>,
}

/// Where API keys are kept. Keys are not a tenant's data: one table for
/// the host, read by id.
pub trait KeysBackend: Send + Sync {
    /// Keeps `key`; an id taken already is refused (`false`, nothing written).
    fn put_key(&self, key: &ApiKeyRecord) -> Result<bool, StoreError>;

    /// The key with id `id`.
    fn key(&self, id: &str) -> Result<Option<ApiKeyRecord>, StoreError>;

    /// Every key, by id.
    fn keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError>;

    /// Marks key `id` revoked at `at`; `false` if there is no such key.
    fn revoke_key(&self, id: &str, at: u64) -> Result<bool, StoreError>;
}
