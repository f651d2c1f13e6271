//! Plugins as data: how workflows name them, what they ask for and what they
//! are granted.
//!
//! A workflow's `uses:` is one of
//! - `name` (the highest installed version), `name@version`, or
//!   `sha256:<digest>`: an installed plugin;
//! - a path ending in `.wasm`, relative to the workflow file: compiled on the
//!   spot and given no capabilities (for developing a plugin);
//! - `workflow:NAME[@VERSION]`: a registered workflow run as a child.

pub mod grants;
mod manifest;
pub mod schema;

pub use grants::{Allowed, DirGrant, Grants, HostPattern};
pub use manifest::{Capabilities, FsAccess, Manifest};
pub use schema::{PluginSchemas, Schema};

/// How a workflow's `uses:` names a plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PluginRef<'a> {
    /// An installed name, optionally at a version.
    Name {
        /// The name.
        name: &'a str,
        /// The version, if pinned.
        version: Option<&'a str>,
    },
    /// An installed component by the sha256 of its bytes.
    Digest(&'a str),
    /// A component file, relative to the workflow file.
    Path(&'a str),
    /// A registered workflow (`workflow:NAME` or `workflow:NAME@VERSION`).
    Workflow {
        /// The name.
        name: &'a str,
        /// The version, if pinned (the text after `@`).
        version: Option<&'a str>,
    },
}

impl<'a> PluginRef<'a> {
    /// Reads a `uses:` value.
    pub fn parse(uses: &'a str) -> Self {
        if let Some(digest) = uses.strip_prefix("sha256:") {
            return Self::Digest(digest);
        }
        if let Some(workflow) = uses.strip_prefix("workflow:") {
            let (name, version) = match workflow.split_once('@') {
                Some((name, version)) => (name, Some(version)),
                None => (workflow, None),
            };
            return Self::Workflow { name, version };
        }
        if uses.ends_with(".wasm") {
            return Self::Path(uses);
        }
        match uses.split_once('@') {
            Some((name, version)) => Self::Name {
                name,
                version: Some(version),
            },
            None => Self::Name {
                name: uses,
                version: None,
            },
        }
    }
}

/// Whether a name or version may be stored: no `@`, spaces or slashes.
pub fn valid_label(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 128
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uses_values() {
        assert_eq!(
            PluginRef::parse("transform"),
            PluginRef::Name {
                name: "transform",
                version: None
            }
        );
        assert_eq!(
            PluginRef::parse("text-stats@0.1.0"),
            PluginRef::Name {
                name: "text-stats",
                version: Some("0.1.0")
            }
        );
        assert_eq!(PluginRef::parse("sha256:ab12"), PluginRef::Digest("ab12"));
        assert_eq!(
            PluginRef::parse("./p/x.wasm"),
            PluginRef::Path("./p/x.wasm")
        );
        assert!(valid_label("text-stats"));
        assert!(!valid_label("a b"));
        assert!(!valid_label("a@b"));
    }
}
