//! API keys: made, kept (as salted hashes) and checked.
//!
//! A key is `oo_<id>_<secret>`: the id (16 hex digits) finds the record,
//! the secret (64 hex digits, 256 random bits) is checked against the
//! record's HMAC-SHA256 under its own salt, in constant time
//! (`ring::hmac::verify`). The store keeps the id and the hash, never the
//! secret. A plain salted hash suffices where passwords would need a slow
//! one: the secret is random, so there is nothing to guess by brute force.

use std::collections::HashMap;
use std::sync::RwLock;

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use tonic::Status;

use super::{Principal, Role};
use orchestrator_engine::store::Store;
use orchestrator_engine::store::executions::now_ms;
use orchestrator_engine::store::keys::ApiKeyRecord;
use orchestrator_engine::tenant::TenantId;

/// A key just made: its record (to keep) and the whole key (to show once).
#[derive(Debug)]
pub struct NewKey {
    /// What the store keeps.
    pub record: ApiKeyRecord,
    /// `oo_<id>_<secret>`.
    pub key: String,
}

/// Makes a key for `tenant` in `role`.
pub fn new_key(tenant: &TenantId, role: Role, name: &str) -> Result<NewKey, Status> {
    let [id, secret] = [8, 32].map(random_hex);
    sealed(tenant, role, name, &format!("oo_{}_{}", id?, secret?))
}

fn random_hex(bytes: usize) -> Result<String, Status> {
    let mut filled = vec![0u8; bytes];
    SystemRandom::new()
        .fill(&mut filled)
        .map_err(|_| Status::internal("the system's random source failed"))?;
    Ok(hex(&filled))
}

/// The record that keeps `key` (`oo_` + 16 hex digits + `_` + 64 hex
/// digits) for `tenant` in `role`: its id, a fresh salt and the secret's
/// HMAC under it.
fn sealed(tenant: &TenantId, role: Role, name: &str, key: &str) -> Result<NewKey, Status> {
    let malformed = || {
        Status::invalid_argument(
            "an API key is `oo_`, 16 hex digits, `_` and 64 hex digits (for example `python3 -c 'import secrets; print(\"oo_\" + secrets.token_hex(8) + \"_\" + secrets.token_hex(32))'`)",
        )
    };
    let (id, secret) = key
        .strip_prefix("oo_")
        .and_then(|k| k.split_once('_'))
        .ok_or_else(malformed)?;
    let hex_digits = |text: &str, length: usize| {
        text.len() == length
            && text
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if !hex_digits(id, 16) || !hex_digits(secret, 64) {
        return Err(malformed());
    }
    let salt = random_hex(16)?;
    let tag = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, salt.as_bytes()),
        secret.as_bytes(),
    );
    Ok(NewKey {
        key: key.to_owned(),
        record: ApiKeyRecord {
            id: id.to_owned(),
            tenant: tenant.as_str().to_owned(),
            role: role.as_str().to_owned(),
            name: name.to_owned(),
            salt,
            hash: hex(tag.as_ref()),
            created_at: now_ms(),
            revoked_at: None,
        },
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The host's keys, held in memory (loaded from the store at start, and
/// written through to it when they change).
pub struct KeyRing {
    store: Store,
    keys: RwLock<HashMap<String, ApiKeyRecord>>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing").finish_non_exhaustive()
    }
}

impl KeyRing {
    /// The keys kept in `store` (which the host holds open).
    pub fn load(store: Store) -> Result<Self, Status> {
        let keys = store
            .keys()
            .map_err(|e| Status::internal(e.to_string()))?
            .into_iter()
            .map(|k| (k.id.clone(), k))
            .collect();
        Ok(Self {
            store,
            keys: RwLock::new(keys),
        })
    }

    /// Whether any key that is not revoked exists.
    pub fn is_empty(&self) -> bool {
        self.read().values().all(|k| k.revoked_at.is_some())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, ApiKeyRecord>> {
        self.keys.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes and keeps a key.
    pub fn create(&self, tenant: &TenantId, role: Role, name: &str) -> Result<NewKey, Status> {
        self.keep(new_key(tenant, role, name)?)
    }

    /// Keeps `key`, made elsewhere (the operator's bootstrap key), for
    /// `tenant` in `role`.
    pub fn import(
        &self,
        tenant: &TenantId,
        role: Role,
        name: &str,
        key: &str,
    ) -> Result<NewKey, Status> {
        self.keep(sealed(tenant, role, name, key)?)
    }

    fn keep(&self, made: NewKey) -> Result<NewKey, Status> {
        let kept = self
            .store
            .put_key(&made.record)
            .map_err(|e| Status::internal(e.to_string()))?;
        if !kept {
            return Err(Status::internal("a new key's id was taken; try again"));
        }
        self.keys
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(made.record.id.clone(), made.record.clone());
        Ok(made)
    }

    /// Every key, without secrets.
    pub fn list(&self) -> Vec<ApiKeyRecord> {
        let mut keys: Vec<_> = self.read().values().cloned().collect();
        keys.sort_by(|a, b| a.id.cmp(&b.id));
        keys
    }

    /// Revokes key `id`; `false` if there is none.
    pub fn revoke(&self, id: &str) -> Result<bool, Status> {
        let at = now_ms();
        let found = self
            .store
            .revoke_key(id, at)
            .map_err(|e| Status::internal(e.to_string()))?;
        if let Some(key) = self
            .keys
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .get_mut(id)
        {
            key.revoked_at.get_or_insert(at);
        }
        Ok(found)
    }

    /// The key named by `key` (`oo_<id>_<secret>`) if one by that id
    /// exists, whether or not its secret is right or it was revoked: for
    /// auditing a refusal under the key's tenant.
    pub fn claimed(&self, key: &str) -> Option<ApiKeyRecord> {
        let (id, _) = key.strip_prefix("oo_")?.split_once('_')?;
        self.read().get(id).cloned()
    }

    /// The caller holding `key`, if it is a live key of this ring.
    pub fn authenticate(&self, key: &str) -> Result<Principal, Status> {
        let unauthenticated =
            || Status::unauthenticated("the API key is unknown, revoked or malformed");
        let (id, secret) = key
            .strip_prefix("oo_")
            .and_then(|k| k.split_once('_'))
            .ok_or_else(unauthenticated)?;
        let record = self.read().get(id).cloned().ok_or_else(unauthenticated)?;
        if record.revoked_at.is_some() {
            return Err(unauthenticated());
        }
        let tag = unhex(&record.hash).ok_or_else(unauthenticated)?;
        let salt = hmac::Key::new(hmac::HMAC_SHA256, record.salt.as_bytes());
        hmac::verify(&salt, secret.as_bytes(), &tag).map_err(|_| unauthenticated())?;
        Ok(Principal {
            key_id: record.id,
            tenant: TenantId::new(&record.tenant).map_err(|_| unauthenticated())?,
            role: Role::parse(&record.role).ok_or_else(unauthenticated)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_verifies_and_a_changed_one_does_not() {
        let store = Store::in_memory();
        let ring = KeyRing::load(store.clone()).unwrap();
        let tenant = TenantId::new("acme").unwrap();
        let made = ring.create(&tenant, Role::Operator, "ci").unwrap();
        assert!(
            !made.record.hash.contains(&made.key[20..]),
            "no secret is kept"
        );
        let ask = |key: &str| ring.authenticate(key);
        let who = ask(&made.key).unwrap();
        assert_eq!((who.tenant.as_str(), who.role), ("acme", Role::Operator));
        let mut changed = made.key.clone();
        let last = changed.pop().unwrap();
        changed.push(if last == '0' { '1' } else { '0' });
        assert_eq!(
            ask(&changed).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        ring.revoke(&made.record.id).unwrap();
        assert_eq!(
            ask(&made.key).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
    }
}
