use std::path::PathBuf;

/// Everything the runtime can report. Messages say what was expected, what was found and what
/// to do, so the CLI can print them as they are.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// Environment, device, provider registration: the ONNX Runtime core's errors as they are.
    #[error(transparent)]
    Ort(#[from] lkd_ort::OrtError),

    /// Loading, compiling or configuring the OpenVINO engine: its errors as they are (a runtime
    /// that cannot be found says how to install it).
    #[error(transparent)]
    OpenVino(#[from] lkd_openvino::OvError),

    /// An engine asked for with a setting it does not have (CUDA or spinning on OpenVINO).
    #[error("invalid engine setting: {0}")]
    EngineSetting(String),

    #[error("cannot read `{path}`")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error(
        "`{path}` is not a loadable ONNX model ({reason}). Expected a complete .onnx file as written \
         by `lkd export` or torch.onnx.export; re-export it or check that the copy is not truncated"
    )]
    BadModel { path: PathBuf, reason: String },

    /// A model stamped with an IR version or opset newer than this ONNX Runtime reads.
    #[error(
        "`{path}` has {found}, newer than this ONNX Runtime reads ({supported}; it said: \
         \"{ort_said}\"). Re-export the model with {fix}, or point ORT_DYLIB_PATH at a newer \
         ONNX Runtime"
    )]
    ModelTooNew {
        path: PathBuf,
        found: String,
        supported: String,
        ort_said: String,
        fix: String,
    },

    #[error(
        "`{path}` uses the operator `{op}`, which this ONNX Runtime does not have (it said: \
         \"{ort_said}\"). Re-export the model with standard ONNX operators, or point \
         ORT_DYLIB_PATH at an ONNX Runtime that has it"
    )]
    UnknownOperator {
        path: PathBuf,
        op: String,
        ort_said: String,
    },

    #[error("model input is incompatible: expected {expected}, found {found}. {hint}")]
    Input {
        expected: String,
        found: String,
        hint: String,
    },

    #[error("model output is unusable: expected {expected}, found {found}")]
    Output { expected: String, found: String },

    #[error(
        "model `{model}` produced a non-finite logit ({value} for image {image}, class {class}), so \
         no prediction is reported. Its weights or this input are broken (e.g. a model trained \
         into NaN); check the model with `lkd eval` before exporting it"
    )]
    NonFinite {
        model: String,
        image: usize,
        class: usize,
        value: f32,
    },

    #[error(
        "model `{model}` names {labels} classes in its `lkd.labels` metadata but outputs {classes}, \
         so predictions would carry the wrong names. Re-export it with `lkd export` (labels come \
         from the run's dataset) or fix `lkd.labels` to list exactly {classes} names"
    )]
    LabelCount {
        model: String,
        labels: usize,
        classes: usize,
    },

    #[error(
        "{model} has no usable preprocessing metadata. Pass the preprocessing explicitly: --mean \
         and --std (one value per channel), plus --input-size and --channels when the model's \
         input shape is dynamic"
    )]
    NoPreprocess {
        model: String,
        #[source]
        reason: NoPreprocessReason,
    },

    #[error("invalid preprocessing")]
    BadPreprocess(#[source] lkd_models::PreprocessSpecError),

    /// A rejected or undecodable image; `source.is_too_large()` tells a size refusal (413) from
    /// bad content (400).
    #[error("cannot decode image{}", .name.as_ref().map(|n| format!(" `{n}`")).unwrap_or_default())]
    Image {
        name: Option<String>,
        #[source]
        source: lkd_preprocess::PreprocessError,
    },

    #[error("inference failed: {0}")]
    Run(String),

    #[error("invalid benchmark setting: {0}")]
    Bench(String),

    #[error("server error: {0}")]
    Server(String),

    /// A command-line value that does not parse.
    #[error("expected {expected}, found `{found}`")]
    Flag {
        expected: &'static str,
        found: String,
    },
}

/// Why a model's preprocessing cannot be taken from it.
#[derive(Debug, thiserror::Error)]
pub enum NoPreprocessReason {
    #[error(transparent)]
    Metadata(#[from] lkd_models::PreprocessSpecError),
    #[error("the channel dimension is dynamic and --channels was not given")]
    DynamicChannels,
    #[error("the spatial dimensions are dynamic and --input-size was not given")]
    DynamicSize,
}

impl RuntimeError {
    /// ONNX Runtime's refusal to load `path`: a version it does not read is said as such (found,
    /// supported, what to do), anything else is a malformed model.
    pub fn from_ort_load(path: &std::path::Path, ort_message: &str) -> Self {
        let number_after = |marker: &str| -> Option<(u32, usize)> {
            let at = ort_message.find(marker)? + marker.len();
            let digits: String = ort_message[at..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            Some((digits.parse().ok()?, at + digits.len()))
        };
        let ir = "Unsupported model IR version: ";
        if let (Some((found, _)), Some((max, end))) = (
            number_after(ir),
            number_after(", max supported IR version: "),
        ) {
            let start = ort_message.find(ir).unwrap_or(0);
            return Self::ModelTooNew {
                path: path.into(),
                found: format!("ONNX IR version {found}"),
                supported: format!("IR version {max} at most"),
                ort_said: ort_message[start..end].to_string(),
                fix: format!(
                    "IR version {max} or lower (`lkd export` writes 8; for torch.onnx.export, an \
                     onnx package whose IR version is at most {max})"
                ),
            };
        }
        let support = "Current official support for domain ";
        if let (Some((found, _)), Some(start)) = (number_after("Opset "), ort_message.find(support))
        {
            let rest = &ort_message[start + support.len()..];
            let domain: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
            if let Some((max, end)) = number_after(&format!("{support}{domain} is till opset ")) {
                return Self::ModelTooNew {
                    path: path.into(),
                    found: format!("opset {found} of {domain}"),
                    supported: format!("opset {max} at most"),
                    ort_said: ort_message[start..end].to_string(),
                    fix: format!(
                        "opset {max} or lower (torch.onnx.export(..., opset_version={max}))"
                    ),
                };
            }
        }
        let unknown = "No Op registered for ";
        if let (Some(start), Some((_, end))) = (
            ort_message.find(unknown),
            number_after(" with domain_version of "),
        ) {
            let op = ort_message[start + unknown.len()..]
                .split(" with domain_version")
                .next()
                .unwrap_or_default();
            return Self::UnknownOperator {
                path: path.into(),
                op: op.to_string(),
                ort_said: ort_message[start..end].to_string(),
            };
        }
        Self::BadModel {
            path: path.into(),
            reason: ort_message.to_string(),
        }
    }

    /// An input refused for its size before decoding (HTTP 413), not for its content.
    pub fn is_too_large(&self) -> bool {
        matches!(self, Self::Image { source, .. } if source.is_too_large())
    }
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// An error and its causes on one line, `outer: cause: root cause`, as `{:#}` prints an
/// `anyhow::Error`. Displays never repeat their source (the CLI prints the chain), so a message
/// sent anywhere else (an HTTP body) is built with this.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}
