//! The state directory and crash-safe writes.
//!
//! A file is replaced by writing a temporary file beside it (mode 0600 from creation, so there is
//! never a moment when it is readable by others), fsyncing it, renaming it over the old one and
//! fsyncing the directory. After a crash the file is either the old version or the new one,
//! never a mix, and once `write_atomic` returns the new version survives power loss.
//!
//! Files are given to the owner of the state directory: `mups user add` is often run as root
//! while the daemon runs as its own user, and a root-owned 0600 file would lock the daemon out.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// File names inside the state directory.
pub const USERS_FILE: &str = "users.json";
/// The audit log.
pub const AUDIT_FILE: &str = "audit.jsonl";

/// An I/O failure, with the path it concerns.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct PersistError {
    /// The file or directory.
    pub path: PathBuf,
    /// Cause.
    pub source: io::Error,
}

pub(crate) fn at(path: &Path) -> impl FnOnce(io::Error) -> PersistError + '_ {
    move |source| PersistError { path: path.to_owned(), source }
}

/// Creates the state directory (mode 0700) if it does not exist. An existing directory keeps
/// its mode: the package owns it, and silently chmod-ing someone's directory would hide a mistake.
pub fn ensure_dir(dir: &Path) -> Result<(), PersistError> {
    if !dir.exists() {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(at(dir))?;
    }
    Ok(())
}

/// Gives `path` to the owner of directory `dir`. A no-op when they already match; otherwise it
/// needs root, and without it the file stays ours (the daemon's error on reading it then names it).
pub fn match_dir_owner(path: &Path, dir: &Path) -> Result<(), PersistError> {
    let d = fs::metadata(dir).map_err(at(dir))?;
    let f = fs::metadata(path).map_err(at(path))?;
    if (f.uid(), f.gid()) != (d.uid(), d.gid()) {
        std::os::unix::fs::chown(path, Some(d.uid()), Some(d.gid())).map_err(at(path))?;
    }
    Ok(())
}

/// Replaces `path` with `bytes` atomically and durably; the result has mode 0600.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), PersistError> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(at(&tmp))?;
        // `mode` is filtered by the umask and ignored for an existing file: set it explicitly.
        f.set_permissions(fs::Permissions::from_mode(0o600)).map_err(at(&tmp))?;
        match_dir_owner(&tmp, dir)?;
        f.write_all(bytes).map_err(at(&tmp))?;
        f.sync_all().map_err(at(&tmp))?;
        fs::rename(&tmp, path).map_err(at(path))?;
        File::open(dir).and_then(|d| d.sync_all()).map_err(at(dir))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::testutil::TempDir;

    #[test]
    fn atomic_write_replaces_content_with_mode_0600() {
        let dir = TempDir::new();
        let state = dir.path().join("state");
        ensure_dir(&state).unwrap();
        assert_eq!(fs::metadata(&state).unwrap().permissions().mode() & 0o777, 0o700);
        let file = state.join("f.json");
        write_atomic(&file, b"one").unwrap();
        write_atomic(&file, b"two").unwrap();
        assert_eq!(fs::read(&file).unwrap(), b"two");
        assert_eq!(fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        // No temporary file is left behind.
        assert_eq!(fs::read_dir(&state).unwrap().count(), 1);
    }
}
