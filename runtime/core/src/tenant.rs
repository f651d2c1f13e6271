//! Tenants: who a plugin, a registered workflow, an execution, a breaker or
//! a cached answer belongs to. Every engine operation is made for one
//! tenant and sees only that tenant's data.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// A tenant's id: 1 to 64 lowercase ASCII letters, digits, `-` and `_`,
/// starting with a letter or digit (it becomes part of keys and paths).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TenantId(Arc<str>);

impl TenantId {
    /// The tenant of a single-user runtime: `default`.
    pub const DEFAULT: &'static str = "default";

    /// `id`, if it may name a tenant; otherwise what is wrong with it.
    pub fn new(id: &str) -> Result<Self, String> {
        let valid = (1..=64).contains(&id.len())
            && id.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        if valid {
            Ok(Self(Arc::from(id)))
        } else {
            Err(format!(
                "`{id}` cannot name a tenant: use 1 to 64 lowercase letters, digits, `-` and `_`, starting with a letter or digit"
            ))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is the `default` tenant.
    pub fn is_default(&self) -> bool {
        &*self.0 == Self::DEFAULT
    }
}

impl Default for TenantId {
    fn default() -> Self {
        Self(Arc::from(Self::DEFAULT))
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for TenantId {
    type Err = String;

    fn from_str(id: &str) -> Result<Self, String> {
        Self::new(id)
    }
}

impl AsRef<str> for TenantId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids_are_safe_in_keys_and_paths() {
        for good in ["default", "acme", "team-7", "a_b", "0"] {
            assert_eq!(TenantId::new(good).unwrap().as_str(), good);
        }
        for bad in [
            "",
            "Acme",
            "../x",
            "a/b",
            "-x",
            "a b",
            "a\0",
            &"x".repeat(65),
        ] {
            assert!(TenantId::new(bad).is_err(), "{bad:?}");
        }
        assert!(TenantId::default().is_default());
    }
}
