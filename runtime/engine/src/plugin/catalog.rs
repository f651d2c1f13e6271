//! Resolving `uses:` against the installed plugins (a snapshot of the store)
//! and the workflow's directory.

use std::path::{Path, PathBuf};

use orchestrator_core::plugin::{PluginRef, Schema};
use orchestrator_core::workflow::PluginCatalog;
use orchestrator_store::plugins::PluginRecord;
use orchestrator_store::workflows::StoredWorkflow;

/// What a `uses:` value resolved to.
#[derive(Debug, Clone)]
pub enum Resolved {
    /// An installed plugin.
    Installed(Box<PluginRecord>),
    /// A component file.
    File(PathBuf),
    /// A registered workflow, run as a task.
    Workflow(Box<StoredWorkflow>),
}

/// The plugins a workflow can use.
#[derive(Debug, Clone)]
pub struct Catalog {
    base_dir: PathBuf,
    installed: Vec<PluginRecord>,
    workflows: Vec<StoredWorkflow>,
    /// Whether `uses:` may name a component file.
    files: bool,
}

impl Catalog {
    /// A catalog of `installed` plugins, resolving relative paths against
    /// `base_dir` (the workflow's directory).
    pub fn new(base_dir: impl Into<PathBuf>, installed: Vec<PluginRecord>) -> Self {
        Self {
            base_dir: base_dir.into(),
            installed,
            workflows: Vec::new(),
            files: true,
        }
    }

    /// The same catalog, refusing `.wasm` paths without looking at the
    /// disk: for workflows sent by callers who may not name files here.
    pub fn without_files(self) -> Self {
        Self {
            files: false,
            ..self
        }
    }

    /// The same catalog, also resolving `workflow:NAME` against `workflows`.
    pub fn with_workflows(self, workflows: Vec<StoredWorkflow>) -> Self {
        Self { workflows, ..self }
    }

    /// The directory relative paths start from.
    pub fn base_dir(&self) -> &Path {
        &self.base_dir
    }

    /// Finds the plugin `uses` names, or says what exists instead.
    pub fn resolve(&self, uses: &str) -> Result<Resolved, String> {
        match PluginRef::parse(uses) {
            PluginRef::Workflow { name, version } => self.workflow(name, version),
            PluginRef::Path(path) if !self.files => Err(format!(
                "`{path}` names a component file, which a workflow sent to a server cannot run; install it and name it instead"
            )),
            PluginRef::Path(path) => {
                let path = self.base_dir.join(path);
                if path.is_file() {
                    Ok(Resolved::File(path))
                } else {
                    Err(format!(
                        "no file at {}; build the component first, or fix the path (it is relative to the workflow file)",
                        path.display()
                    ))
                }
            }
            PluginRef::Digest(digest) => self
                .installed
                .iter()
                .find(|r| r.digest == digest.to_ascii_lowercase())
                .map(|r| Resolved::Installed(Box::new(r.clone())))
                .ok_or_else(|| {
                    format!("no installed plugin has digest {digest}; `runtime plugins list` shows what is installed")
                }),
            PluginRef::Name { name, version } => {
                let versions: Vec<&PluginRecord> =
                    self.installed.iter().filter(|r| r.name == name).collect();
                if versions.is_empty() {
                    return Err(format!(
                        "no plugin named `{name}` is installed ({}); install it with `runtime install FILE.wasm`",
                        self.installed_names()
                    ));
                }
                let found = match version {
                    Some(version) => versions.iter().find(|r| r.version == version),
                    None => versions.iter().max_by(|a, b| compare_versions(&a.version, &b.version)),
                };
                found.map(|r| Resolved::Installed(Box::new((*r).clone()))).ok_or_else(|| {
                    let have: Vec<&str> = versions.iter().map(|r| r.version.as_str()).collect();
                    format!(
                        "`{name}` is installed in version {}, not {}",
                        have.join(", "),
                        version.unwrap_or_default()
                    )
                })
            }
        }
    }

    fn workflow(&self, name: &str, version: Option<&str>) -> Result<Resolved, String> {
        let versions: Vec<&StoredWorkflow> =
            self.workflows.iter().filter(|w| w.name == name).collect();
        if versions.is_empty() {
            return Err(format!(
                "no workflow named `{name}` is registered; register it with `runtime workflows add FILE`"
            ));
        }
        let found = match version {
            Some(v) => {
                let v: u64 = v.parse().map_err(|_| {
                    format!("`{v}` is not a workflow version; versions are 1, 2, ... (`runtime workflows list`)")
                })?;
                versions.into_iter().find(|w| w.version == v)
            }
            None => versions.into_iter().max_by_key(|w| w.version),
        };
        found
            .map(|w| Resolved::Workflow(Box::new(w.clone())))
            .ok_or_else(|| {
                format!(
                    "workflow `{name}` has no version {}; `runtime workflows list` shows them",
                    version.unwrap_or_default()
                )
            })
    }

    fn installed_names(&self) -> String {
        if self.installed.is_empty() {
            return "none is".to_owned();
        }
        let mut names: Vec<String> = self
            .installed
            .iter()
            .map(|r| format!("{}@{}", r.name, r.version))
            .collect();
        names.dedup();
        format!("installed: {}", names.join(", "))
    }
}

/// Orders versions as semver where both parse, else as text.
pub(super) fn compare_versions(a: &str, b: &str) -> std::cmp::Ordering {
    match (semver::Version::parse(a), semver::Version::parse(b)) {
        (Ok(a), Ok(b)) => a.cmp(&b),
        (Ok(_), Err(_)) => std::cmp::Ordering::Greater,
        (Err(_), Ok(_)) => std::cmp::Ordering::Less,
        (Err(_), Err(_)) => a.cmp(b),
    }
}

impl PluginCatalog for Catalog {
    fn check(&self, uses: &str) -> Result<(), String> {
        self.resolve(uses).map(|_| ())
    }

    fn input_schema(&self, uses: &str) -> Option<Schema> {
        match self.resolve(uses).ok()? {
            Resolved::Installed(record) => Schema::compile(&record.manifest.input_schema)
                .ok()
                .flatten(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;
    use crate::plugin::{Grants, Manifest};

    fn record(name: &str, version: &str, digest: &str) -> PluginRecord {
        PluginRecord {
            name: name.into(),
            version: version.into(),
            digest: digest.into(),
            size: 1,
            manifest: Manifest::default(),
            grants: Grants::default(),
            installed_at: 0,
            builtin: false,
        }
    }

    #[test]
    fn names_versions_and_digests_resolve() {
        let catalog = Catalog::new(
            ".",
            vec![
                record("stats", "0.9.0", "aa"),
                record("stats", "0.10.0", "bb"),
                record("other", "1.0.0", "cc"),
            ],
        );
        let digest = |uses: &str| match catalog.resolve(uses).unwrap() {
            Resolved::Installed(r) => r.digest.clone(),
            _ => panic!("an installed plugin"),
        };
        assert_eq!(digest("stats"), "bb", "the highest version, by semver");
        assert_eq!(digest("stats@0.9.0"), "aa");
        assert_eq!(digest("sha256:cc"), "cc");
        let error = catalog.resolve("stats@2.0.0").unwrap_err();
        assert!(
            error.contains("version 0.9.0, 0.10.0, not 2.0.0"),
            "{error}"
        );
        let error = catalog.resolve("nope").unwrap_err();
        assert!(error.contains("no plugin named `nope`"), "{error}");
        assert!(error.contains("other@1.0.0"), "{error}");
    }
}
