//! A per-user cache of compiled components, so that a new store (the
//! built-ins installed at its first start) or a `.wasm` named by path does
//! not compile again what this machine compiled before, and an installed
//! plugin is mapped from a file rather than copied out of the store at
//! every start-up. Files are `<dir>/<engine hash>/<sha256 of the
//! component>` (the artifact as wasmtime wrote it, so it can be mapped)
//! and `<...>.seal` beside it (its seal), each written to a temporary name
//! and renamed, in a directory only this user may open; the default `<dir>`
//! is `llm-orchestrator/artifacts` under the user's cache directory,
//! `ORCHESTRATOR_CACHE` names another (or `off`).
//!
//! Loading an artifact runs native code compiled earlier, so only this
//! host's own files are read: a directory or file another user owns, or
//! that others may write to, is ignored; files are keyed by the engine hash
//! that wrote them and sealed (`seal.rs`), and an artifact that does not
//! verify or load is compiled again and replaced.

use std::path::{Path, PathBuf};

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

    fn seal_path(&self, engine: &str, digest: &str) -> PathBuf {
        self.dir.join(engine).join(format!("{digest}.seal"))
    }

    /// The artifact file of `digest` for `engine` and its seal, if this user
    /// wrote them (the seal is not checked here).
    pub fn get(&self, engine: &str, digest: &str) -> Option<Cached> {
        let file = self.path(engine, digest);
        let seal_file = self.seal_path(engine, digest);
        let untrusted = [
            self.dir.as_path(),
            &self.dir.join(engine),
            &file,
            &seal_file,
        ]
        .into_iter()
        .find_map(private::untrusted);
        if let Some(why) = untrusted {
            if file.exists() {
                tracing::warn!("not loading the compiled component {digest}: {why}");
            }
            return None;
        }
        let seal = std::fs::read(&seal_file).ok()?.try_into().ok()?;
        Some(Cached { file, seal })
    }

    /// Keeps an artifact and its seal; a failure only costs a copy out of
    /// the store or a compile next time.
    pub fn put(&self, engine: &str, digest: &str, artifact: &[u8], seal: &[u8; 32]) {
        if let Err(e) = self.write(engine, digest, artifact, seal) {
            tracing::debug!("not caching the compiled component {digest}: {e}");
        }
    }

    fn write(
        &self,
        engine: &str,
        digest: &str,
        artifact: &[u8],
        seal: &[u8; 32],
    ) -> std::io::Result<()> {
        let dir = self.dir.join(engine);
        private::create_dir(&dir)?;
        // Without its seal an artifact is never loaded: the old seal goes
        // first, the new one last.
        let seal_file = self.seal_path(engine, digest);
        match std::fs::remove_file(&seal_file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        replace(&dir, &self.path(engine, digest), artifact)?;
        replace(&dir, &seal_file, seal)
    }
}

/// An artifact file this user wrote, and the seal kept beside it.
#[derive(Debug)]
pub struct Cached {
    /// The artifact, as wasmtime wrote it.
    pub file: PathBuf,
    /// Its seal, unchecked.
    pub seal: [u8; 32],
}

/// Writes `bytes` to `path` through a temporary file in `dir`.
fn replace(dir: &Path, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("artifact");
    let temporary = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    private::write_file(&temporary, bytes)?;
    std::fs::rename(&temporary, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&temporary);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifacts_are_kept_by_engine_and_digest() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let cache = ArtifactCache::at(dir.path().join("cache"));
        assert!(cache.get("e1", "d").is_none());
        cache.put("e1", "d", b"compiled", &[7; 32]);
        let cached = cache.get("e1", "d").expect("kept");
        assert_eq!(std::fs::read(&cached.file).expect("readable"), b"compiled");
        assert_eq!(cached.seal, [7; 32]);
        assert!(
            cache.get("e2", "d").is_none(),
            "another engine compiles its own"
        );
        // An artifact without its seal is not offered.
        std::fs::remove_file(dir.path().join("cache/e1/d.seal")).expect("removed");
        assert!(cache.get("e1", "d").is_none());
        cache.put("e1", "d", b"compiled", &[7; 32]);
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
        assert!(cache.get("e1", "d").is_none());
    }
}
