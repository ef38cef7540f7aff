//! The data dir and the store file on disk: the file holds the upstream keys and the
//! session signing key, so the dir is created 0700 and the file 0600 whatever the umask,
//! and an existing dir or file that other local users can read gets a warning at start.

use std::fs::{DirBuilder, File, OpenOptions, Permissions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;

/// Creates `dir` (and missing parents, which keep the umask's mode) private to this user;
/// an existing one is left as it is, with a warning when it is open to others.
pub(super) fn private_dir(dir: &Path) -> std::io::Result<()> {
    if dir.is_dir() {
        warn_if_open(dir, "data dir", "chmod 700");
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    DirBuilder::new().mode(DIR_MODE).create(dir)?;
    // The umask may have taken bits the owner needs; set the mode exactly.
    std::fs::set_permissions(dir, Permissions::from_mode(DIR_MODE))
}

/// Opens (or creates, 0600) the store file for reading and writing.
pub(super) fn private_file(path: &Path) -> std::io::Result<File> {
    let existed = path.exists();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .open(path)?;
    if existed {
        warn_if_open(path, "store file", "chmod 600");
    } else {
        file.set_permissions(Permissions::from_mode(FILE_MODE))?;
    }
    Ok(file)
}

/// Whether group or others have any access to `path`.
fn open_to_others(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0)
}

fn warn_if_open(path: &Path, what: &str, fix: &str) {
    if open_to_others(path) {
        tracing::warn!(
            "{what} {} holds secrets and is open to other local users; run {fix} on it",
            path.display()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_new_dir_and_file_are_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a").join("data");
        private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        let file = dir.join("f");
        drop(private_file(&file).unwrap());
        assert_eq!(mode(&file), 0o600);
    }

    #[test]
    fn an_existing_open_file_is_kept_and_noticed() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        std::fs::set_permissions(&file, Permissions::from_mode(0o644)).unwrap();
        drop(private_file(&file).unwrap());
        assert_eq!(
            mode(&file),
            0o644,
            "an existing file's mode is the owner's call"
        );
        assert!(open_to_others(&file));
        assert_eq!(std::fs::read(&file).unwrap(), b"x", "not truncated");
    }
}
