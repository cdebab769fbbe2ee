//! The process-wide ONNX Runtime environment and where its shared library comes from.
//!
//! The library is loaded at run time (ort's `load-dynamic`), from `ORT_DYLIB_PATH` when it is
//! set, else from `libonnxruntime.so*` beside the running executable — so a bundle of the
//! binary and the library runs from any directory with no environment at all.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ort::environment::Environment;

use crate::error::{OrtError, Result};

static ENV: Mutex<Option<Environment>> = Mutex::new(None);

/// Picks the ONNX Runtime library: `ORT_DYLIB_PATH` if set (and it must exist), else the
/// `libonnxruntime.so*` in the executable's directory (the unversioned name first, then the
/// highest version). Nothing else is searched, so what runs is never a surprise.
pub fn ort_library_path() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(p);
        if !path.is_file() {
            return Err(OrtError::Library {
                reason: format!("ORT_DYLIB_PATH=`{}` does not exist", path.display()),
            });
        }
        return Ok(path);
    }
    let exe = std::env::current_exe().map_err(|e| OrtError::Library {
        reason: format!("ORT_DYLIB_PATH is not set and the executable's path is unknown ({e})"),
    })?;
    let dir = exe.parent().unwrap_or(Path::new("/"));
    beside(dir).ok_or_else(|| OrtError::Library {
        reason: format!(
            "ORT_DYLIB_PATH is not set and `{}` holds no libonnxruntime.so*",
            dir.display()
        ),
    })
}

fn beside(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<(Vec<u64>, PathBuf)> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let version = name.strip_prefix("libonnxruntime.so")?;
            let version = match version {
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

/// The process-wide environment, loading the library once (ONNX Runtime allows one per process).
pub fn environment() -> Result<Environment> {
    let mut env = ENV.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(env) = env.as_ref() {
        return Ok(env.clone());
    }
    let path = ort_library_path()?;
    let built = ort::init_from(&path)
        .map_err(|e| OrtError::Library {
            reason: format!("cannot load `{}`: {e}", path.display()),
        })?
        .with_name("lkd")
        .build()
        .map_err(|source| OrtError::Init {
            path: path.clone(),
            source,
        })?;
    *env = Some(built.clone());
    Ok(built)
}

/// ONNX Runtime's build string (version, commit) and its compiled-in execution providers.
pub fn ort_build_info() -> Result<(String, Vec<String>)> {
    environment()?;
    let api = ort::api();
    let mut providers: *mut *mut std::ffi::c_char = std::ptr::null_mut();
    let mut count: std::ffi::c_int = 0;
    // SAFETY: the C API fills an array of `count` NUL-terminated strings that we copy and
    // hand back to ReleaseAvailableProviders.
    let names = unsafe {
        let status = (api.GetAvailableProviders)(&mut providers, &mut count);
        if !status.0.is_null() || providers.is_null() {
            Vec::new()
        } else {
            let names = (0..count as isize)
                .map(|i| {
                    std::ffi::CStr::from_ptr(*providers.offset(i))
                        .to_string_lossy()
                        .into_owned()
                })
                .collect();
            let _ = (api.ReleaseAvailableProviders)(providers, count);
            names
        }
    };
    Ok((ort::info().to_string(), names))
}

#[cfg(test)]
mod tests {
    use super::beside;

    #[test]
    fn library_beside_prefers_unversioned_then_highest_version() {
        let dir = std::env::temp_dir().join(format!("lkd-ort-beside-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        assert_eq!(beside(&dir), None);
        for name in [
            "libonnxruntime.so.1.9.0",
            "libonnxruntime.so.1.31.1",
            "libonnxruntime.so.bak",
            "other.so",
        ] {
            std::fs::write(dir.join(name), b"").unwrap();
        }
        assert_eq!(beside(&dir), Some(dir.join("libonnxruntime.so.1.31.1")));
        std::fs::write(dir.join("libonnxruntime.so"), b"").unwrap();
        assert_eq!(beside(&dir), Some(dir.join("libonnxruntime.so")));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
