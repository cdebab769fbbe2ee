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
        source: OvMessage,
    },

    #[error("cannot set OpenVINO CPU property {key}={value}")]
    Config {
        key: &'static str,
        value: String,
        #[source]
        source: OvMessage,
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
        source: OvMessage,
    },

    #[error("cannot read ONNX metadata from `{path}`: {reason}")]
    Metadata { path: PathBuf, reason: String },

    #[error("the model is unusable by this engine: {0}")]
    Model(String),

    #[error("OpenVINO cannot compile the model for CPU")]
    Compile {
        #[source]
        source: OvMessage,
    },

    #[error("input does not fit the model: {0}")]
    Input(String),

    #[error("OpenVINO failed to run the model ({what})")]
    Run {
        what: &'static str,
        #[source]
        source: OvMessage,
    },

    #[error("model output is unusable: expected {expected}, found {found}")]
    Output { expected: String, found: String },
}

impl OvError {
    pub(crate) fn run(what: &'static str) -> impl FnOnce(openvino::InferenceError) -> Self {
        move |source| OvError::Run {
            what,
            source: source.into(),
        }
    }
}

/// OpenVINO's own message on one line: its text spans several lines with blank ones and
/// source locations (`Exception from src/...cpp:84:`, `Check 'false' failed at ...`), which
/// would break the CLI's one-line `error: ...` format shared with ONNX Runtime.
#[derive(Debug)]
pub struct OvMessage(String);

impl OvMessage {
    fn new(kind: &dyn std::fmt::Display, message: Option<&str>) -> Self {
        let detail: Vec<&str> = message
            .unwrap_or_default()
            .lines()
            .map(str::trim)
            // OpenVINO's source locations and failed-check lines say nothing to a user.
            .filter(|l| {
                let location = l.starts_with("Exception from src/")
                    || (l.starts_with("Check '") && l.contains(" failed at "));
                !l.is_empty() && !location
            })
            .collect();
        Self(if detail.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}: {}", detail.join(" "))
        })
    }
}

impl std::fmt::Display for OvMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OvMessage {}

impl From<openvino::InferenceError> for OvMessage {
    fn from(e: openvino::InferenceError) -> Self {
        Self::new(&e.kind, e.message.as_deref())
    }
}

impl From<openvino::SetupError> for OvMessage {
    fn from(e: openvino::SetupError) -> Self {
        match e {
            openvino::SetupError::Inference(i) => i.into(),
            other => Self::new(&other, None),
        }
    }
}

pub type Result<T, E = OvError> = std::result::Result<T, E>;
