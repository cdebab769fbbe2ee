//! Where the OpenVINO C library comes from, and loading it once per process.
//!
//! Like the ONNX Runtime core, only two places are searched, so what runs is never a surprise:
//! `LKD_OPENVINO_LIB` (a `libopenvino_c.so*` file, or a directory holding one; `make -s env`
//! exports it from the PyPI wheel), else the executable's own directory (a bundle). The wheel
//! ships only versioned names (`libopenvino_c.so.2641`), so versioned names are accepted; the
//! library's `$ORIGIN` rpath then finds libopenvino, TBB and the CPU plugin beside it.

use std::path::PathBuf;
use std::sync::Mutex;

use crate::error::{OvError, Result};

/// The environment variable naming the library (file or directory).
pub const LIBRARY_ENV: &str = "LKD_OPENVINO_LIB";

const LIBRARY_STEM: &str = "libopenvino_c.so";

static LOADED: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Picks the library: `LKD_OPENVINO_LIB` if set (a file or a directory; it must exist), else
/// `libopenvino_c.so*` beside the running executable. Nothing else is searched.
pub fn openvino_library_path() -> Result<PathBuf> {
    lkd_dylib::locate(LIBRARY_ENV, LIBRARY_STEM).map_err(|reason| OvError::Library { reason })
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
