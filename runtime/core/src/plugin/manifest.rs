//! What a plugin says about itself (`describe()`), as plain data.

use serde::{Deserialize, Serialize};

/// A plugin's self-description, read at install and stored with it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The name it gives itself (the default install name).
    pub name: String,
    /// Its version (the default install version).
    pub version: String,
    /// What it does.
    pub description: String,
    /// JSON Schema of its input, as JSON text.
    pub input_schema: String,
    /// JSON Schema of its output, as JSON text.
    pub output_schema: String,
    /// What it asks to be allowed to do.
    pub capabilities: Capabilities,
}

/// What a plugin asks for; it gets at most this.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Host names (exact, `*.example.com`, optionally `:port`) it wants to reach.
    pub http_hosts: Vec<String>,
    /// Directories (paths as the plugin sees them) it wants preopened.
    pub filesystem: Vec<FsAccess>,
    /// Environment variable names it wants to read.
    pub env: Vec<String>,
    /// Secret names the host should attach to its outgoing requests.
    pub secrets: Vec<String>,
}

/// One directory a plugin asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsAccess {
    /// The path as the plugin sees it, for example `/data`.
    pub path: String,
    /// Whether it must write there.
    pub writable: bool,
}
