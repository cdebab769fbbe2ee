//! The process-wide ONNX Runtime environment and where its shared library comes from.
//!
//! The library is loaded at run time (ort's `load-dynamic`), from `ORT_DYLIB_PATH` when it is
//! set, else from `libonnxruntime.so*` beside the running executable — so a bundle of the
//! binary and the library runs from any directory with no environment at all.

use std::path::PathBuf;
use std::sync::Mutex;

use ort::environment::Environment;

use crate::error::{OrtError, Result};

static ENV: Mutex<Option<Environment>> = Mutex::new(None);

/// Picks the ONNX Runtime library: `ORT_DYLIB_PATH` if set (a file, or a directory holding one;
/// it must exist), else the `libonnxruntime.so*` in the executable's directory (the unversioned
/// name first, then the highest version). Nothing else is searched.
pub fn ort_library_path() -> Result<PathBuf> {
    lkd_dylib::locate("ORT_DYLIB_PATH", "libonnxruntime.so")
        .map_err(|reason| OrtError::Library { reason })
}

/// The process-wide environment, loading the library once (ONNX Runtime allows one per process).
pub fn environment() -> Result<Environment> {
    let mut env = ENV.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(env) = env.as_ref() {
        return Ok(env.clone());
    }
    let path = ort_library_path()?;
    let built = ort::init_from(&path)
        .map_err(|source| OrtError::LibraryLoad {
            path: path.clone(),
            source,
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
