//! Files only the user running the runtime may read: the store, execution
//! files, the response cache, cassettes, compiled artifacts and the key
//! that seals them.
//!
//! Directories are made `0700` and files `0600` whatever the umask says
//! (the mode is set after creation, not left to the umask), and a directory
//! or file the runtime trusts (the artifact cache: native code is loaded
//! from it) must belong to this user and be writable by nobody else.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{
    DirBuilderExt as _, MetadataExt as _, OpenOptionsExt as _, PermissionsExt as _,
};
use std::path::Path;

/// Creates `dir` (and missing parents) readable by this user only. A
/// directory that exists already keeps its mode.
pub fn create_dir(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    match fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
    {
        Ok(()) => fs::set_permissions(dir, fs::Permissions::from_mode(0o700)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Makes sure `path` exists as a file readable by this user only: a new
/// file is created `0600`; an existing one of this user's is set to `0600`;
/// another user's file, or a symbolic link, is refused.
/// Done before a database opens the file, so it is never readable by
/// others, not even for a moment.
pub fn prepare_file(path: &Path) -> io::Result<()> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(file) => file.set_permissions(fs::Permissions::from_mode(0o600)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let meta = fs::symlink_metadata(path)?;
            if meta.uid() != current_uid() || meta.file_type().is_symlink() {
                // Another user's file (or a link to one) holds what this
                // user's runs trust: grants, states, answers.
                return Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    untrusted(path).unwrap_or_else(|| "not this user's file".to_owned()),
                ));
            }
            if meta.mode() & 0o077 != 0 {
                fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Writes `bytes` to `path` as a file readable by this user only,
/// replacing what was there.
pub fn write_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use io::Write as _;
    let mut file: File = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.set_permissions(fs::Permissions::from_mode(0o600))?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Why `path` (a file or directory whose contents the runtime trusts) may
/// not be trusted: another user owns it, or others may write to it.
pub fn untrusted(path: &Path) -> Option<String> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) => return Some(format!("{} cannot be read: {e}", path.display())),
    };
    if meta.file_type().is_symlink() {
        return Some(format!("{} is a symbolic link", path.display()));
    }
    if meta.uid() != current_uid() {
        return Some(format!(
            "{} belongs to user {}, not to this user ({})",
            path.display(),
            meta.uid(),
            current_uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Some(format!(
            "{} may be written by other users (mode {:o})",
            path.display(),
            meta.mode() & 0o777
        ));
    }
    None
}

/// The user this process runs as.
pub fn current_uid() -> u32 {
    rustix::process::geteuid().as_raw()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().mode() & 0o777
    }

    #[test]
    fn files_and_directories_are_private_whatever_the_umask() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b");
        create_dir(&nested).unwrap();
        assert_eq!(mode(&nested), 0o700);
        let file = nested.join("f");
        prepare_file(&file).unwrap();
        assert_eq!(mode(&file), 0o600);
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        prepare_file(&file).unwrap();
        assert_eq!(mode(&file), 0o600, "an open file is closed to others");
        let written = nested.join("w");
        write_file(&written, b"x").unwrap();
        assert_eq!(mode(&written), 0o600);
    }

    #[test]
    fn another_users_file_or_a_link_is_not_taken_up() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), &link).unwrap();
        assert!(prepare_file(&link).is_err());
        let refused = prepare_file(&another_users_file(dir.path())).unwrap_err();
        assert!(refused.to_string().contains("belongs to user"), "{refused}");
    }

    #[test]
    fn what_others_may_write_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let own = dir.path().join("own");
        create_dir(&own).unwrap();
        assert_eq!(untrusted(&own), None);
        fs::set_permissions(&own, fs::Permissions::from_mode(0o777)).unwrap();
        assert!(untrusted(&own).unwrap().contains("written by other users"));
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&own, &link).unwrap();
        assert!(untrusted(&link).unwrap().contains("symbolic link"));
        let foreign = another_users_file(dir.path());
        assert!(untrusted(&foreign).unwrap().contains("belongs to user"));
    }

    /// A file of another user's: as root, one in `dir` handed to `nobody`;
    /// as anyone else, root's `/etc/passwd`.
    fn another_users_file(dir: &Path) -> std::path::PathBuf {
        if current_uid() != 0 {
            return Path::new("/etc/passwd").to_owned();
        }
        let foreign = dir.join("foreign");
        prepare_file(&foreign).unwrap();
        std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).unwrap();
        foreign
    }
}
