//! Files and folders only the server's user may read: the SQLite database, the data dir,
//! the generated JWT secret and uploads. Modes are set explicitly, whatever the umask.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::Path;

/// Mode of the folders Spotter creates.
#[cfg(unix)]
const DIR_MODE: u32 = 0o700;
/// Mode of the files Spotter creates.
#[cfg(unix)]
const FILE_MODE: u32 = 0o600;

/// Creates `dir` (and missing parents) readable by the server's user only. An existing
/// folder is tightened to that too when `tighten` (Spotter's own folders: the data dir and
/// what it holds), and left alone otherwise (a database's parent may be shared).
pub fn create_dir(dir: &Path, tighten: bool) -> io::Result<()> {
    let existed = dir.is_dir();
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        if !existed {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(dir)?;
        }
        if !existed || tighten {
            let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
            if mode != DIR_MODE {
                std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))?;
                if existed {
                    log::warn!(
                        "{} was readable by others (mode {mode:o}); now {DIR_MODE:o}",
                        dir.display()
                    );
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tighten;
        if !existed {
            std::fs::create_dir_all(dir)?;
        }
    }
    Ok(())
}

/// Options that create a file readable and writable by the server's user only.
pub fn options() -> OpenOptions {
    let mut opts = OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(FILE_MODE);
    }
    opts
}

/// Makes an open file readable by the server's user only (a file that already existed
/// keeps its mode when opened, and the umask may have taken bits off a new one).
pub fn restrict(file: &File) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if file.metadata()?.permissions().mode() & 0o777 != FILE_MODE {
            file.set_permissions(std::fs::Permissions::from_mode(FILE_MODE))?;
        }
    }
    #[cfg(not(unix))]
    let _ = file;
    Ok(())
}

/// Creates `path` empty and private unless it exists (SQLite then creates its `-wal` and
/// `-shm` files with the database file's mode). Answers whether it was created.
pub fn create_file_if_missing(path: &Path) -> io::Result<bool> {
    match options().write(true).create_new(true).open(path) {
        Ok(file) => {
            restrict(&file)?;
            Ok(true)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn modes_are_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        create_dir(&dir, false).unwrap();
        assert_eq!(mode(&dir), 0o700);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        create_dir(&dir, false).unwrap();
        assert_eq!(mode(&dir), 0o755, "left alone");
        create_dir(&dir, true).unwrap();
        assert_eq!(mode(&dir), 0o700, "tightened");
        let f = dir.join("f");
        assert!(create_file_if_missing(&f).unwrap());
        assert!(!create_file_if_missing(&f).unwrap());
        assert_eq!(mode(&f), 0o600);
    }
}
