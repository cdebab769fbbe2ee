//! Files written whole or not at all.

use std::io::Write;
use std::path::{Path, PathBuf};

/// A file that could not be written; the io error is the source (the display names the file).
#[derive(Debug, thiserror::Error)]
#[error("cannot write `{}`", path.display())]
pub struct WriteError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Writes `bytes` to `path` through a temp file in the same directory, renamed over `path`
/// once its bytes are on disk; the directory is then synced so the rename itself survives a
/// crash. A crash at any moment leaves either the old file or the new one, never a half-written
/// one (the temp file is removed when anything fails).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    let io = |source| WriteError {
        path: path.to_path_buf(),
        source,
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| {
        io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a file path",
        ))
    })?;
    let prefix = format!(".{}.", name.to_string_lossy());
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix);
    // The final file gets the mode `File::create` would give (0666 less the umask), not the
    // temp file's private 0600.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let mut tmp = builder.tempfile_in(dir).map_err(io)?;
    tmp.write_all(bytes).map_err(io)?;
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    sync_dir(dir).map_err(io)
}

/// Flushes a directory's entries (a rename is durable only once its directory is synced).
#[cfg(unix)]
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Windows cannot open a directory as a file; its renames are journaled by NTFS.
#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> std::io::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::write_atomic;

    #[test]
    fn write_atomic_replaces_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.md");
        write_atomic(&path, b"old").unwrap();
        write_atomic(&path, b"new contents").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new contents");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["report.md"]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            // Readable by others like a file from `File::create` under a usual umask.
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            let created = dir.path().join("plain");
            std::fs::File::create(&created).unwrap();
            let want = std::fs::metadata(&created).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, want & 0o777);
        }
    }

    #[test]
    fn write_atomic_into_a_missing_directory_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no/such/dir/x.bin");
        let err = write_atomic(&path, b"x").unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("cannot write `{}`", path.display())
        );
        assert_eq!(err.source.kind(), std::io::ErrorKind::NotFound);
    }
}
