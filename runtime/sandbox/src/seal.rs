//! Artifacts sealed with a key only this user holds, so that native code is
//! loaded only from artifacts this host's user compiled.
//!
//! Loading an artifact (`Component::deserialize`) runs machine code that was
//! compiled earlier; a store file copied from elsewhere, or a cache directory
//! another user could write to, must not be able to hand us code. Every
//! artifact the sandbox writes starts with a MAC over the engine hash, the
//! component's digest and the artifact: BLAKE3 in its keyed mode, checked
//! over megabytes at every start-up and several times faster there than
//! HMAC-SHA256. One whose seal does not verify (another key, or a seal of an
//! earlier release) is never deserialized: the component is compiled again
//! from its bytes.
//!
//! The key is 32 random bytes in `artifact.key` under the user's config
//! directory (`~/.config/llm-orchestrator`, `0600` in a `0700` directory,
//! created on first use, refused if another user could have written it).
//! Without a usable key file the process seals with a key of its own, so
//! nothing from an earlier process is trusted.

use std::path::{Path, PathBuf};

use ring::rand::{SecureRandom as _, SystemRandom};

use orchestrator_private as private;

/// Environment variable naming the key file (tests and unusual setups).
pub const KEY_ENV: &str = "ORCHESTRATOR_ARTIFACT_KEY";

const KEY_BYTES: usize = 32;
const TAG_BYTES: usize = 32;

/// The key that seals this user's artifacts.
pub struct SealKey {
    key: [u8; KEY_BYTES],
}

impl std::fmt::Debug for SealKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealKey(<hidden>)")
    }
}

impl SealKey {
    /// This user's key (the file `ORCHESTRATOR_ARTIFACT_KEY` names, else
    /// the default one), created if missing; a key for this process alone
    /// when there is no usable file.
    pub fn for_user() -> Self {
        let path = std::env::var_os(KEY_ENV).map(PathBuf::from).or_else(|| {
            dirs::config_dir().map(|d| d.join("llm-orchestrator").join("artifact.key"))
        });
        let loaded = path.as_deref().map(Self::load_or_create);
        match loaded {
            Some(Ok(key)) => key,
            Some(Err(why)) => {
                tracing::warn!(
                    "artifacts are sealed with a key for this process only ({why}); installed plugins compile again"
                );
                Self::ephemeral()
            }
            None => Self::ephemeral(),
        }
    }

    /// A key for this process only.
    pub fn ephemeral() -> Self {
        Self::from_bytes(&random_key())
    }

    fn from_bytes(bytes: &[u8]) -> Self {
        let mut key = [0; KEY_BYTES];
        key.copy_from_slice(bytes);
        Self { key }
    }

    /// Reads the key at `path`, or creates it.
    pub fn load_or_create(path: &Path) -> Result<Self, String> {
        Self::load_or_create_once(path, true)
    }

    fn load_or_create_once(path: &Path, retry: bool) -> Result<Self, String> {
        if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(format!("{} is a symbolic link", path.display()));
        }
        if let Some(dir) = path.parent() {
            private::create_dir(dir)
                .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            if let Some(why) = private::untrusted(dir) {
                return Err(why);
            }
        }
        match std::fs::read(path) {
            Ok(bytes) => {
                if let Some(why) = private::untrusted(path) {
                    return Err(why);
                }
                use std::os::unix::fs::MetadataExt as _;
                let mode = std::fs::metadata(path).map_or(0, |m| m.mode());
                if mode & 0o077 != 0 {
                    return Err(format!(
                        "{} may be read by other users (mode {:o}); remove it and a new key is made",
                        path.display(),
                        mode & 0o777
                    ));
                }
                if bytes.len() != KEY_BYTES {
                    return Err(format!(
                        "{} is not a key of {KEY_BYTES} bytes",
                        path.display()
                    ));
                }
                Ok(Self::from_bytes(&bytes))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let bytes = random_key();
                // Written under a temporary name and moved into place, so a
                // concurrent first start reads either no key or a whole one.
                let temporary = path.with_extension(format!("{}.tmp", std::process::id()));
                private::write_file(&temporary, &bytes)
                    .map_err(|e| format!("cannot write {}: {e}", temporary.display()))?;
                match std::fs::hard_link(&temporary, path) {
                    Ok(()) => {
                        let _ = std::fs::remove_file(&temporary);
                        Ok(Self::from_bytes(&bytes))
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && retry => {
                        let _ = std::fs::remove_file(&temporary);
                        Self::load_or_create_once(path, false)
                    }
                    Err(e) => {
                        let _ = std::fs::remove_file(&temporary);
                        Err(format!("cannot write {}: {e}", path.display()))
                    }
                }
            }
            Err(e) => Err(format!("cannot read {}: {e}", path.display())),
        }
    }

    /// The seal of `artifact`, to keep apart from it.
    pub fn seal_alone(&self, engine: &str, digest: &str, artifact: &[u8]) -> [u8; TAG_BYTES] {
        *self.tag(engine, digest, artifact).as_bytes()
    }

    /// Whether the file at `path` holds an artifact this key sealed with
    /// `seal` for this engine and digest (read in pieces, not copied whole).
    pub fn verifies_file(
        &self,
        engine: &str,
        digest: &str,
        path: &Path,
        seal: &[u8; TAG_BYTES],
    ) -> bool {
        let Ok(file) = std::fs::File::open(path) else {
            return false;
        };
        let mut hasher = self.hasher(engine, digest);
        hasher.update_reader(file).is_ok() && hasher.finalize() == blake3::Hash::from_bytes(*seal)
    }

    /// The seal at the front of `sealed`, which [`SealKey::seal`] wrote.
    pub fn seal_of(sealed: &[u8]) -> Option<[u8; TAG_BYTES]> {
        sealed.get(..TAG_BYTES)?.try_into().ok()
    }

    /// `artifact` with its seal in front.
    pub fn seal(&self, engine: &str, digest: &str, artifact: &[u8]) -> Vec<u8> {
        let tag = self.tag(engine, digest, artifact);
        let mut sealed = Vec::with_capacity(TAG_BYTES + artifact.len());
        sealed.extend_from_slice(tag.as_bytes());
        sealed.extend_from_slice(artifact);
        sealed
    }

    /// The artifact inside `sealed`, if this key sealed it for this engine
    /// and digest.
    pub fn open<'a>(&self, engine: &str, digest: &str, sealed: &'a [u8]) -> Option<&'a [u8]> {
        let (tag, artifact) = sealed.split_at_checked(TAG_BYTES)?;
        let tag: [u8; TAG_BYTES] = tag.try_into().ok()?;
        // `blake3::Hash` compares in constant time: the time taken says
        // nothing about the tag.
        (self.tag(engine, digest, artifact) == blake3::Hash::from_bytes(tag)).then_some(artifact)
    }

    fn tag(&self, engine: &str, digest: &str, artifact: &[u8]) -> blake3::Hash {
        let mut hasher = self.hasher(engine, digest);
        hasher.update(artifact);
        hasher.finalize()
    }

    /// A keyed hasher that has taken in the engine hash and the digest.
    fn hasher(&self, engine: &str, digest: &str) -> blake3::Hasher {
        let mut hasher = blake3::Hasher::new_keyed(&self.key);
        for part in [engine.as_bytes(), digest.as_bytes()] {
            hasher.update(&(part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
        hasher
    }
}

fn random_key() -> [u8; KEY_BYTES] {
    let mut key = [0; KEY_BYTES];
    SystemRandom::new()
        .fill(&mut key)
        .expect("the operating system provides random bytes");
    key
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    #[test]
    fn only_what_this_key_sealed_opens() {
        let key = SealKey::ephemeral();
        let sealed = key.seal("engine", "digest", b"machine code");
        assert_eq!(
            key.open("engine", "digest", &sealed),
            Some(&b"machine code"[..])
        );
        assert_eq!(key.open("other", "digest", &sealed), None);
        assert_eq!(key.open("engine", "other", &sealed), None);
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(key.open("engine", "digest", &tampered), None);
        assert_eq!(SealKey::ephemeral().open("engine", "digest", &sealed), None);
        assert_eq!(key.open("engine", "digest", b"short"), None);

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("artifact");
        std::fs::write(&file, b"machine code").unwrap();
        let seal = SealKey::seal_of(&sealed).unwrap();
        assert_eq!(seal, key.seal_alone("engine", "digest", b"machine code"));
        assert!(key.verifies_file("engine", "digest", &file, &seal));
        assert!(!key.verifies_file("other", "digest", &file, &seal));
        std::fs::write(&file, b"machine codf").unwrap();
        assert!(!key.verifies_file("engine", "digest", &file, &seal));
    }

    #[test]
    fn the_key_file_is_private_and_kept() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/artifact.key");
        let first = SealKey::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let sealed = first.seal("e", "d", b"x");
        let again = SealKey::load_or_create(&path).unwrap();
        assert_eq!(again.open("e", "d", &sealed), Some(&b"x"[..]));

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let refused = SealKey::load_or_create(&path).unwrap_err();
        assert!(refused.contains("read by other users"), "{refused}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let refused = SealKey::load_or_create(&path).unwrap_err();
        assert!(refused.contains("written by other users"), "{refused}");

        // A dangling link where the key belongs is refused, not followed.
        let link = dir.path().join("keys/dangling.key");
        std::os::unix::fs::symlink(dir.path().join("nowhere"), &link).unwrap();
        let refused = SealKey::load_or_create(&link).unwrap_err();
        assert!(refused.contains("symbolic link"), "{refused}");
    }
}
