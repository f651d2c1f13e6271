//! A per-user cache of compiled components, so that a new store (the
//! built-ins installed at its first start) or a `.wasm` named by path does
//! not compile again what this machine compiled before. Files are
//! `<dir>/<engine hash>/<sha256 of the component>`, written to a temporary
//! name and renamed, in a directory only this user may open; the default
//! `<dir>` is `llm-orchestrator/artifacts` under the user's cache
//! directory, `ORCHESTRATOR_CACHE` names another (or `off`).
//!
//! Loading an artifact runs native code compiled earlier, so only this
//! host's own files are read: a directory or file another user owns, or
//! that others may write to, is ignored; files are keyed by the engine hash
//! that wrote them and sealed (`seal.rs`), and an artifact that does not
//! verify or load is compiled again and replaced.

use std::path::PathBuf;

use orchestrator_private as private;

/// Environment variable naming the cache directory (`off` disables it).
pub const CACHE_ENV: &str = "ORCHESTRATOR_CACHE";

/// Where compiled components are kept.
#[derive(Debug, Clone)]
pub struct ArtifactCache {
    dir: PathBuf,
}

impl ArtifactCache {
    /// The cache `ORCHESTRATOR_CACHE` names, else the user's default one;
    /// `None` when it is `off` or there is no cache directory.
    pub fn from_env() -> Option<Self> {
        match std::env::var_os(CACHE_ENV) {
            Some(value) if value == "off" => None,
            Some(dir) => Some(Self::at(PathBuf::from(dir))),
            None => {
                dirs::cache_dir().map(|d| Self::at(d.join("llm-orchestrator").join("artifacts")))
            }
        }
    }

    /// A cache in `dir`.
    pub fn at(dir: PathBuf) -> Self {
        Self { dir }
    }

    fn path(&self, engine: &str, digest: &str) -> PathBuf {
        self.dir.join(engine).join(digest)
    }

    /// The artifact of `digest` for `engine`, if this user wrote one.
    pub fn get(&self, engine: &str, digest: &str) -> Option<Vec<u8>> {
        let file = self.path(engine, digest);
        let untrusted = [self.dir.as_path(), &self.dir.join(engine), &file]
            .into_iter()
            .find_map(private::untrusted);
        if let Some(why) = untrusted {
            if file.exists() {
                tracing::warn!("not loading the compiled component {digest}: {why}");
            }
            return None;
        }
        std::fs::read(file).ok()
    }

    /// Keeps an artifact; a failure only costs a compile next time.
    pub fn put(&self, engine: &str, digest: &str, artifact: &[u8]) {
        if let Err(e) = self.write(engine, digest, artifact) {
            tracing::debug!("not caching the compiled component {digest}: {e}");
        }
    }

    fn write(&self, engine: &str, digest: &str, artifact: &[u8]) -> std::io::Result<()> {
        let dir = self.dir.join(engine);
        private::create_dir(&dir)?;
        let temporary = dir.join(format!(".{digest}.{}.tmp", std::process::id()));
        private::write_file(&temporary, artifact)?;
        std::fs::rename(&temporary, self.path(engine, digest)).inspect_err(|_| {
            let _ = std::fs::remove_file(&temporary);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifacts_are_kept_by_engine_and_digest() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let cache = ArtifactCache::at(dir.path().join("cache"));
        assert_eq!(cache.get("e1", "d"), None);
        cache.put("e1", "d", b"compiled");
        assert_eq!(cache.get("e1", "d").as_deref(), Some(&b"compiled"[..]));
        assert_eq!(
            cache.get("e2", "d"),
            None,
            "another engine compiles its own"
        );
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(dir.path().join("cache"))
            .expect("made")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);

        // A cache others may write to is not read.
        std::fs::set_permissions(
            dir.path().join("cache/e1"),
            std::fs::Permissions::from_mode(0o777),
        )
        .expect("chmod");
        assert_eq!(cache.get("e1", "d"), None);
    }
}
