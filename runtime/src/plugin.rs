//! Which plugins exist: the built-ins compiled into this binary, and
//! components named by path.
//!
//! `uses: transform` names a built-in; `uses: ./plugins/x.wasm` (any value
//! ending in `.wasm`) names a component file, relative to the workflow file.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use crate::workflow::PluginCatalog;

include!(concat!(env!("OUT_DIR"), "/builtin.rs"));

/// Names of the built-in plugins.
pub fn builtin_names() -> impl Iterator<Item = &'static str> {
    BUILTINS.iter().map(|(name, _)| *name)
}

/// Resolves `uses:` values for workflows in one directory.
#[derive(Debug, Clone)]
pub struct Catalog {
    base_dir: PathBuf,
}

/// A plugin's bytes and the name it goes by in messages.
#[derive(Debug)]
pub struct PluginBytes {
    /// `transform`, or the file's name without `.wasm`.
    pub name: String,
    /// The component.
    pub bytes: Cow<'static, [u8]>,
}

impl Catalog {
    /// A catalog resolving relative paths against `base_dir` (the workflow's directory).
    pub fn new(base_dir: impl Into<PathBuf>) -> Self {
        Self {
            base_dir: base_dir.into(),
        }
    }

    fn path_of(&self, uses: &str) -> Option<PathBuf> {
        uses.ends_with(".wasm").then(|| self.base_dir.join(uses))
    }

    /// Reads the plugin `uses` names.
    pub fn load(&self, uses: &str) -> Result<PluginBytes, String> {
        if let Some((name, bytes)) = BUILTINS.iter().find(|(name, _)| *name == uses) {
            return Ok(PluginBytes {
                name: (*name).to_owned(),
                bytes: Cow::Borrowed(bytes),
            });
        }
        let Some(path) = self.path_of(uses) else {
            return Err(self.advice());
        };
        let bytes = std::fs::read(&path)
            .map_err(|e| format!("cannot read plugin {}: {e}", path.display()))?;
        let name = path
            .file_stem()
            .map_or_else(|| uses.to_owned(), |s| s.to_string_lossy().into_owned());
        Ok(PluginBytes {
            name,
            bytes: Cow::Owned(bytes),
        })
    }

    fn advice(&self) -> String {
        let names: Vec<&str> = builtin_names().collect();
        format!(
            "built-in plugins: {}; or give the path of a .wasm component, relative to the workflow file",
            names.join(", ")
        )
    }

    /// The directory relative paths start from.
    pub fn base_dir(&self) -> &Path {
        &self.base_dir
    }
}

impl PluginCatalog for Catalog {
    fn check(&self, uses: &str) -> Result<(), String> {
        if builtin_names().any(|name| name == uses) {
            return Ok(());
        }
        match self.path_of(uses) {
            Some(path) if path.is_file() => Ok(()),
            Some(path) => Err(format!(
                "no file at {}; build the component first, or fix the path (it is relative to the workflow file)",
                path.display()
            )),
            None => Err(self.advice()),
        }
    }
}
