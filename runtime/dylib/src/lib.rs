//! Where a shared library opened at run time comes from (ONNX Runtime, OpenVINO).
//!
//! Two places only, so what runs is never a surprise: the engine's environment variable (a
//! library file, or a directory holding one), else the running executable's own directory (a
//! bundle of binary and libraries runs from anywhere with no environment). In a directory the
//! unversioned name wins, then the highest numeric version (`libfoo.so.2641`, `libfoo.so.1.23.2`).

use std::path::{Path, PathBuf};

/// Why no library was found; each message names the variable and the place searched.
#[derive(Debug, thiserror::Error)]
pub enum NotFound {
    #[error("{var}=`{}` does not exist", path.display())]
    Missing { var: &'static str, path: PathBuf },

    #[error("{var}=`{}` is a directory without {stem}*", dir.display())]
    EmptyDir {
        var: &'static str,
        dir: PathBuf,
        stem: &'static str,
    },

    #[error("{var} is not set and the executable's path is unknown ({reason})")]
    NoExecutable { var: &'static str, reason: String },

    #[error("{var} is not set and `{}` holds no {stem}*", dir.display())]
    NotBeside {
        var: &'static str,
        dir: PathBuf,
        stem: &'static str,
    },
}

/// The library named by `var` (a file, or a directory searched for `stem*`), else the newest
/// `stem*` beside the running executable.
pub fn locate(var: &'static str, stem: &'static str) -> Result<PathBuf, NotFound> {
    if let Some(p) = std::env::var_os(var).filter(|p| !p.is_empty()) {
        let path = PathBuf::from(p);
        if path.is_file() {
            return Ok(path);
        }
        if path.is_dir() {
            return newest_in(&path, stem).ok_or(NotFound::EmptyDir {
                var,
                dir: path,
                stem,
            });
        }
        return Err(NotFound::Missing { var, path });
    }
    let exe = std::env::current_exe().map_err(|e| NotFound::NoExecutable {
        var,
        reason: e.to_string(),
    })?;
    let dir = exe.parent().unwrap_or(Path::new("/"));
    newest_in(dir, stem).ok_or_else(|| NotFound::NotBeside {
        var,
        dir: dir.to_path_buf(),
        stem,
    })
}

/// `stem` itself if present in `dir`, else the highest numeric version `stem.N[.M…]`; other
/// suffixes (`.bak`) and non-files are ignored.
pub fn newest_in(dir: &Path, stem: &str) -> Option<PathBuf> {
    let mut found: Vec<(Vec<u64>, PathBuf)> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let version = match name.strip_prefix(stem)? {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefers_unversioned_then_highest_numeric_version() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let stem = "libopenvino_c.so";
        assert_eq!(newest_in(d, stem), None);
        for name in [
            "libopenvino_c.so.2541",
            "libopenvino_c.so.2641",
            "libopenvino_c.so.bak",
            "libopenvino.so.2641",
        ] {
            std::fs::write(d.join(name), b"").unwrap();
        }
        std::fs::create_dir(d.join("libopenvino_c.so.9999")).unwrap();
        assert_eq!(newest_in(d, stem), Some(d.join("libopenvino_c.so.2641")));
        // Versions compare as numbers, not text.
        let ort = "libonnxruntime.so";
        std::fs::write(d.join("libonnxruntime.so.1.9.0"), b"").unwrap();
        std::fs::write(d.join("libonnxruntime.so.1.23.2"), b"").unwrap();
        assert_eq!(newest_in(d, ort), Some(d.join("libonnxruntime.so.1.23.2")));
        std::fs::write(d.join(stem), b"").unwrap();
        assert_eq!(newest_in(d, stem), Some(d.join(stem)));
    }

    #[test]
    fn the_variable_may_name_a_file_or_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let var = "LKD_DYLIB_TEST_LIBRARY";
        std::env::set_var(var, d);
        let e = locate(var, "libx.so").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "LKD_DYLIB_TEST_LIBRARY=`{}` is a directory without libx.so*",
                d.display()
            )
        );
        std::fs::write(d.join("libx.so.3"), b"").unwrap();
        assert_eq!(locate(var, "libx.so").unwrap(), d.join("libx.so.3"));
        std::env::set_var(var, d.join("libx.so.3"));
        assert_eq!(locate(var, "libx.so").unwrap(), d.join("libx.so.3"));
        std::env::set_var(var, d.join("gone.so"));
        assert_eq!(
            locate(var, "libx.so").unwrap_err().to_string(),
            format!(
                "LKD_DYLIB_TEST_LIBRARY=`{}` does not exist",
                d.join("gone.so").display()
            )
        );
        std::env::remove_var(var);
    }
}
