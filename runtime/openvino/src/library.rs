//! Where the OpenVINO C library comes from, and loading it once per process.
//!
//! Like the ONNX Runtime core, only two places are searched, so what runs is never a surprise:
//! `LKD_OPENVINO_LIB` (a `libopenvino_c.so*` file, or a directory holding one; `make -s env`
//! exports it from the PyPI wheel), else the executable's own directory (a bundle). The wheel
//! ships only versioned names (`libopenvino_c.so.2641`), so versioned names are accepted; the
//! library's `$ORIGIN` rpath then finds libopenvino, TBB and the CPU plugin beside it.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::error::{OvError, Result};

/// The environment variable naming the library (file or directory).
pub const LIBRARY_ENV: &str = "LKD_OPENVINO_LIB";

const LIBRARY_STEM: &str = "libopenvino_c.so";

static LOADED: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Picks the library: `LKD_OPENVINO_LIB` if set (it must exist), else `libopenvino_c.so*` beside
/// the running executable. Nothing else is searched.
pub fn openvino_library_path() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os(LIBRARY_ENV).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(p);
        if path.is_file() {
            return Ok(path);
        }
        if path.is_dir() {
            return newest_in(&path).ok_or_else(|| OvError::Library {
                reason: format!(
                    "{LIBRARY_ENV}=`{}` is a directory without {LIBRARY_STEM}*",
                    path.display()
                ),
            });
        }
        return Err(OvError::Library {
            reason: format!("{LIBRARY_ENV}=`{}` does not exist", path.display()),
        });
    }
    let exe = std::env::current_exe().map_err(|e| OvError::Library {
        reason: format!("{LIBRARY_ENV} is not set and the executable's path is unknown ({e})"),
    })?;
    let dir = exe.parent().unwrap_or(Path::new("/"));
    newest_in(dir).ok_or_else(|| OvError::Library {
        reason: format!(
            "{LIBRARY_ENV} is not set and `{}` holds no {LIBRARY_STEM}*",
            dir.display()
        ),
    })
}

/// `libopenvino_c.so` if present, else the highest numeric version `libopenvino_c.so.N[.M…]`.
fn newest_in(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<(Vec<u64>, PathBuf)> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let version = match name.strip_prefix(LIBRARY_STEM)? {
                "" => vec![u64::MAX],
                v => v
                    .strip_prefix('.')?
                    .split('.')
                    .map(|n| n.parse().ok())
                    .collect::<Option<Vec<u64>>>()?,
            };
            e.path().is_file().then(|| (version, e.path()))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p)
}

/// Loads the library once per process and returns its path. A failed load is not remembered,
/// so a later call with a corrected environment can succeed.
pub fn load_library() -> Result<PathBuf> {
    let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = loaded.as_ref() {
        return Ok(p.clone());
    }
    let path = openvino_library_path()?;
    openvino_sys::library::load_from(&path).map_err(|reason| OvError::LibraryLoad {
        path: path.clone(),
        reason,
    })?;
    *loaded = Some(path.clone());
    Ok(path)
}

/// The loaded runtime's build number (e.g. `2026.4.0-…`), loading it if needed.
pub fn openvino_version() -> Result<String> {
    load_library()?;
    Ok(openvino::version().build_number)
}

#[cfg(test)]
mod tests {
    use super::newest_in;

    #[test]
    fn library_in_dir_prefers_unversioned_then_highest_version() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        assert_eq!(newest_in(d), None);
        for name in [
            "libopenvino_c.so.2541",
            "libopenvino_c.so.2641",
            "libopenvino_c.so.bak",
            "libopenvino.so.2641",
        ] {
            std::fs::write(d.join(name), b"").unwrap();
        }
        assert_eq!(newest_in(d), Some(d.join("libopenvino_c.so.2641")));
        std::fs::write(d.join("libopenvino_c.so"), b"").unwrap();
        assert_eq!(newest_in(d), Some(d.join("libopenvino_c.so")));
    }
}
