//! Who is calling, and may they: API keys and the permission table.
//!
//! A key is `oo_<id>_<secret>`: the id (16 hex digits) finds the record,
//! the secret (64 hex digits, 256 random bits) is checked against the
//! record's HMAC-SHA256 under its own salt, in constant time
//! (`ring::hmac::verify`). The store keeps the id and the hash, never the
//! secret. A plain salted hash suffices where passwords would need a slow
//! one: the secret is random, so there is nothing to guess by brute force.
//!
//! The tenant comes from the key, never from a request field.
//! [`PERMISSIONS`] says, for every RPC, which roles may call it; every
//! handler asks [`KeyRing::authorize`] with its own RPC name first.

use std::collections::HashMap;
use std::sync::RwLock;

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use tonic::Status;
use tonic::metadata::MetadataMap;

use orchestrator_engine::store::Store;
use orchestrator_engine::store::executions::now_ms;
use orchestrator_engine::store::keys::ApiKeyRecord;
use orchestrator_engine::tenant::TenantId;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Read executions.
    Viewer,
    /// Read, and start, signal and cancel executions.
    Operator,
    /// Read, and manage plugins and workflows.
    Developer,
    /// The host's operators: everything, and API keys of every tenant.
    Admin,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Operator, Role::Developer, Role::Admin];

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Viewer => "viewer",
            Self::Operator => "operator",
            Self::Developer => "developer",
            Self::Admin => "admin",
        }
    }

    /// The role named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

use Role::{Admin, Developer, Operator, Viewer};

/// Which roles may call each RPC, by its full name. An RPC missing here
/// is refused to everyone.
pub const PERMISSIONS: &[(&str, &[Role])] = &[
    ("orchestrator.v1.Executions/Start", &[Operator, Admin]),
    (
        "orchestrator.v1.Executions/Get",
        &[Viewer, Operator, Developer, Admin],
    ),
    (
        "orchestrator.v1.Executions/List",
        &[Viewer, Operator, Developer, Admin],
    ),
    (
        "orchestrator.v1.Executions/Watch",
        &[Viewer, Operator, Developer, Admin],
    ),
    (
        "orchestrator.v1.Executions/AwaitResult",
        &[Viewer, Operator, Developer, Admin],
    ),
    ("orchestrator.v1.Executions/Signal", &[Operator, Admin]),
    ("orchestrator.v1.Executions/Cancel", &[Operator, Admin]),
    (
        "orchestrator.v1.Executions/GetEvents",
        &[Viewer, Operator, Developer, Admin],
    ),
    ("orchestrator.v1.Executions/Resume", &[Operator, Admin]),
    (
        "orchestrator.v1.Executions/ListDeadLetters",
        &[Viewer, Operator, Developer, Admin],
    ),
    (
        "orchestrator.v1.Executions/ReplayDeadLetter",
        &[Operator, Admin],
    ),
    ("orchestrator.v1.Executions/Purge", &[Operator, Admin]),
    ("orchestrator.v1.Plugins/Install", &[Developer, Admin]),
    (
        "orchestrator.v1.Plugins/List",
        &[Viewer, Operator, Developer, Admin],
    ),
    (
        "orchestrator.v1.Plugins/Get",
        &[Viewer, Operator, Developer, Admin],
    ),
    ("orchestrator.v1.Plugins/Grant", &[Developer, Admin]),
    ("orchestrator.v1.Plugins/Remove", &[Developer, Admin]),
    ("orchestrator.v1.Workflows/Register", &[Developer, Admin]),
    (
        "orchestrator.v1.Workflows/List",
        &[Viewer, Operator, Developer, Admin],
    ),
    (
        "orchestrator.v1.Workflows/Get",
        &[Viewer, Operator, Developer, Admin],
    ),
    (
        "orchestrator.v1.Workflows/Validate",
        &[Viewer, Operator, Developer, Admin],
    ),
    ("orchestrator.v1.Admin/CreateApiKey", &[Admin]),
    ("orchestrator.v1.Admin/ListApiKeys", &[Admin]),
    ("orchestrator.v1.Admin/RevokeApiKey", &[Admin]),
    ("orchestrator.v1.Admin/ListAudit", &[Admin]),
    ("orchestrator.v1.Admin/CreateTenant", &[Admin]),
    ("orchestrator.v1.Admin/SetTenantLimits", &[Admin]),
    ("orchestrator.v1.Admin/GetTenant", &[Admin]),
    ("orchestrator.v1.Admin/ListTenants", &[Admin]),
];

/// Whether `role` may call `rpc`.
pub fn permitted(rpc: &str, role: Role) -> bool {
    PERMISSIONS
        .iter()
        .any(|(name, roles)| *name == rpc && roles.contains(&role))
}

/// The caller of one request.
#[derive(Debug, Clone)]
pub struct Principal {
    /// The key's id.
    pub key_id: String,
    /// The tenant it acts for.
    pub tenant: TenantId,
    /// Its role.
    pub role: Role,
}

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
    let random = SystemRandom::new();
    let mut bytes = [0u8; 8 + 16 + 32];
    random
        .fill(&mut bytes)
        .map_err(|_| Status::internal("the system's random source failed"))?;
    let (id, rest) = bytes.split_at(8);
    let (salt, secret) = rest.split_at(16);
    let (id, salt, secret) = (hex(id), hex(salt), hex(secret));
    let tag = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, salt.as_bytes()),
        secret.as_bytes(),
    );
    Ok(NewKey {
        key: format!("oo_{id}_{secret}"),
        record: ApiKeyRecord {
            id,
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
        let made = new_key(tenant, role, name)?;
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

    /// The caller of a request with `metadata`, if it may call `rpc`:
    /// UNAUTHENTICATED without a valid key, PERMISSION_DENIED when its
    /// role may not.
    pub fn authorize(&self, metadata: &MetadataMap, rpc: &str) -> Result<Principal, Status> {
        let principal = self.authenticate(metadata)?;
        if !permitted(rpc, principal.role) {
            return Err(Status::permission_denied(format!(
                "the {} role may not call {rpc}",
                principal.role.as_str()
            )));
        }
        Ok(principal)
    }

    /// The key a request with `metadata` names, if one by that id exists,
    /// whether or not its secret is right or it was revoked: for auditing a
    /// refusal under the key's tenant.
    pub fn claimed(&self, metadata: &MetadataMap) -> Option<ApiKeyRecord> {
        let header = metadata.get("authorization")?.to_str().ok()?;
        let key = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))?;
        let (id, _) = key.strip_prefix("oo_")?.split_once('_')?;
        self.read().get(id).cloned()
    }

    fn authenticate(&self, metadata: &MetadataMap) -> Result<Principal, Status> {
        let unauthenticated = || {
            Status::unauthenticated(
                "send an API key as `authorization: Bearer <key>`; the key is unknown, revoked or malformed",
            )
        };
        let header = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .ok_or_else(unauthenticated)?;
        let key = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(unauthenticated)?;
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
        let ask = |key: &str| {
            let mut metadata = MetadataMap::new();
            metadata.insert("authorization", format!("Bearer {key}").parse().unwrap());
            ring.authorize(&metadata, "orchestrator.v1.Executions/Start")
        };
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
