//! Errors of the ONNX Runtime core.

use std::path::PathBuf;

/// What can go wrong before or while a session runs. Messages say what was expected, what was
/// found and what to do; ONNX Runtime's own message is kept as the `source`.
#[derive(Debug, thiserror::Error)]
pub enum OrtError {
    #[error(
        "ONNX Runtime library not found: {reason}. Run `make` (it bootstraps the Python env and writes \
         ORT_DYLIB_PATH to ~/.cache/lkd/env.mk), set ORT_DYLIB_PATH to libonnxruntime.so, or put \
         libonnxruntime.so.* next to the executable"
    )]
    Library { reason: lkd_dylib::NotFound },

    #[error(
        "cannot load the ONNX Runtime library `{}`. Point ORT_DYLIB_PATH at a working \
         libonnxruntime.so (`make` writes it to ~/.cache/lkd/env.mk)",
        path.display()
    )]
    LibraryLoad {
        path: PathBuf,
        #[source]
        source: ort::LoadDynamicError,
    },

    #[error("failed to start ONNX Runtime from `{path}`")]
    Init {
        path: PathBuf,
        #[source]
        source: ort::Error,
    },

    #[error("cannot configure the ONNX Runtime session ({what})")]
    Config {
        what: &'static str,
        #[source]
        source: ort::Error,
    },

    #[error("execution provider `{device}` could not be registered: {reason}. {hint}")]
    Provider {
        device: String,
        reason: String,
        hint: &'static str,
    },

    #[error("unknown optimization level `{found}`: expected {expected}")]
    BadOptLevel { found: String, expected: String },

    #[error("ONNX Runtime cannot load the model")]
    Load {
        #[source]
        source: ort::Error,
    },

    #[error("ONNX Runtime failed to run the model")]
    Run {
        #[source]
        source: ort::Error,
    },

    #[error("model output is unusable: expected {expected}, found {found}")]
    Output { expected: String, found: String },

    #[error("invalid A/B setting: {0}")]
    Ab(String),
}

impl OrtError {
    pub(crate) fn config<R>(what: &'static str) -> impl FnOnce(ort::Error<R>) -> Self
    where
        ort::Error<()>: From<ort::Error<R>>,
    {
        move |e| OrtError::Config {
            what,
            source: e.into(),
        }
    }
}

pub type Result<T, E = OrtError> = std::result::Result<T, E>;
