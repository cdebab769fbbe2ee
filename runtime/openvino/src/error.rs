//! Errors of the OpenVINO engine.

use std::path::PathBuf;

/// How to get the runtime, said once for every "library" error.
pub const INSTALL_HINT: &str =
    "Run `make` (it installs the `openvino==2026.4` wheel into ~/.cache/lkd/venv and writes \
     LKD_OPENVINO_LIB to ~/.cache/lkd/env.mk, then `eval \"$(make -s env)\"`), or \
     `pip install openvino==2026.4` and set LKD_OPENVINO_LIB to \
     <site-packages>/openvino/libs/libopenvino_c.so.2641, or copy openvino/libs/* next to the \
     executable";

/// What can go wrong before or while a model runs. Messages say what was expected, what was
/// found and what to do; OpenVINO's own message is kept as the `source`.
#[derive(Debug, thiserror::Error)]
pub enum OvError {
    #[error("OpenVINO runtime library not found: {reason}. {hint}", hint = INSTALL_HINT)]
    Library { reason: lkd_dylib::NotFound },

    #[error("cannot load the OpenVINO runtime from `{path}`: {reason}. {hint}", hint = INSTALL_HINT)]
    LibraryLoad { path: PathBuf, reason: String },

    #[error("failed to start the OpenVINO runtime")]
    Init {
        #[source]
        source: openvino::SetupError,
    },

    #[error("cannot set OpenVINO CPU property {key}={value}")]
    Config {
        key: &'static str,
        value: String,
        #[source]
        source: openvino::InferenceError,
    },

    #[error(
        "OpenVINO compiled the model at {found} precision, but {requested} was asked for \
         (this CPU may lack the instructions for it; `lscpu` shows avx512_bf16/amx_bf16 when it has them)"
    )]
    PrecisionUnavailable {
        requested: &'static str,
        found: String,
    },

    #[error("unknown precision `{found}`: expected {expected}")]
    BadPrecision { found: String, expected: String },

    #[error("invalid engine setting: {0}")]
    Setting(String),

    #[error("model file `{0}` does not exist")]
    ModelNotFound(PathBuf),

    #[error("OpenVINO cannot read the model `{path}`")]
    Load {
        path: PathBuf,
        #[source]
        source: openvino::InferenceError,
    },

    #[error("cannot read ONNX metadata from `{path}`: {reason}")]
    Metadata { path: PathBuf, reason: String },

    #[error("the model is unusable by this engine: {0}")]
    Model(String),

    #[error("OpenVINO cannot compile the model for CPU")]
    Compile {
        #[source]
        source: openvino::InferenceError,
    },

    #[error("input does not fit the model: {0}")]
    Input(String),

    #[error("OpenVINO failed to run the model ({what})")]
    Run {
        what: &'static str,
        #[source]
        source: openvino::InferenceError,
    },

    #[error("model output is unusable: expected {expected}, found {found}")]
    Output { expected: String, found: String },
}

impl OvError {
    pub(crate) fn run(what: &'static str) -> impl FnOnce(openvino::InferenceError) -> Self {
        move |source| OvError::Run { what, source }
    }
}

pub type Result<T, E = OvError> = std::result::Result<T, E>;
