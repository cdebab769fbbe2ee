//! Checkpoint I/O: safetensors (ours) and official PyTorch `torch.save` archives, loaded into a
//! name → [`HostTensor`] map and checked strictly against a graph's parameters.

mod adopt;
mod finetune;
mod pth;
mod safetensors_io;

pub use adopt::adopt_state_dict;
pub use finetune::{
    adapt_input_conv, adopt_for_finetune, head_params, layer_depths, read_for_finetune, Adaptation,
    FinetuneState, PosEmbedResampler,
};
pub use pth::{read_pth, read_pth_bytes};
pub use safetensors_io::{
    read_safetensors, read_safetensors_bytes, write_safetensors, write_safetensors_bytes,
};

use crate::graph::{DType, Graph};
use crate::tensor::HostTensor;
use crate::ModelError;
use std::collections::BTreeMap;
use std::path::Path;

pub type StateDict = BTreeMap<String, HostTensor>;

/// Why checkpoint bytes are unreadable, before a file path is attached ([`FormatError::at`]).
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("not a valid safetensors file")]
    Safetensors(#[source] safetensors::SafeTensorError),
    #[error("unreadable zip archive; the file may be truncated or corrupt")]
    Zip(#[source] zip::result::ZipError),
    /// A layout or content problem the parser found itself (no underlying error).
    #[error("{0}")]
    Invalid(String),
}

impl From<String> for FormatError {
    fn from(msg: String) -> Self {
        FormatError::Invalid(msg)
    }
}

impl FormatError {
    /// The error for the file at `path`, keeping the parser's error as its source.
    pub fn at(self, path: &Path) -> ModelError {
        let msg = self.to_string();
        let source: Option<Box<dyn std::error::Error + Send + Sync>> = match self {
            FormatError::Safetensors(e) => Some(Box::new(e)),
            FormatError::Zip(e) => Some(Box::new(e)),
            FormatError::Invalid(_) => None,
        };
        ModelError::Checkpoint {
            path: path.display().to_string(),
            msg,
            source,
        }
    }
}

/// Reads any supported checkpoint, recognised by content: safetensors, or a `torch.save` zip
/// archive holding a state dict or a dict with `model` / `model_ema` / `state_dict`.
pub fn read_checkpoint(path: &Path) -> Result<StateDict, ModelError> {
    let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
        path: path.display().to_string(),
        source,
    })?;
    // Zip archives and legacy (pre-1.6, raw pickle) torch files both go to the PyTorch reader,
    // which explains how to re-save the latter.
    if bytes.starts_with(b"PK\x03\x04") || bytes.first() == Some(&0x80) {
        read_pth(path)
    } else if bytes.len() >= 8 {
        read_safetensors_bytes(&bytes).map_err(|e| e.at(path))
    } else {
        Err(FormatError::Invalid(format!(
            "{} bytes is neither a safetensors file nor a PyTorch zip archive",
            bytes.len()
        ))
        .at(path))
    }
}

/// Reads a checkpoint for `graph`: in our layout or in a foreign layout of the graph's family
/// (timm or torchvision ConvNeXt, ...), checked strictly and returned under the graph's names.
/// Use this wherever a user hands us weights; [`read_checkpoint`] alone keeps the file's names.
pub fn read_checkpoint_for(graph: &Graph, path: &Path) -> Result<StateDict, ModelError> {
    let sd = read_checkpoint(path)?;
    adopt_state_dict(graph, sd).map_err(|e| match e {
        ModelError::Mismatch { preset, details } => ModelError::Mismatch {
            preset,
            details: format!("  {}\n{details}", path.display()),
        },
        other => other,
    })
}

/// Strict check in both directions: every graph parameter present with its shape (and
/// dtype class), nothing extra. All problems are reported together.
pub fn check_state_dict(graph: &Graph, sd: &StateDict) -> Result<(), ModelError> {
    let mut missing = vec![];
    let mut wrong = vec![];
    for p in &graph.params {
        match sd.get(&p.name) {
            None => missing.push(p.name.clone()),
            Some(t) => {
                let dtype_ok = match p.dtype {
                    DType::F32 => t.as_f32().is_some(),
                    DType::I64 => true,
                };
                if t.shape != p.shape || !dtype_ok {
                    wrong.push(format!(
                        "{}: expected {:?} {:?}, found {:?} {}",
                        p.name,
                        p.dtype,
                        p.shape,
                        t.shape,
                        t.dtype_name()
                    ));
                }
            }
        }
    }
    let unexpected: Vec<_> = sd
        .keys()
        .filter(|k| graph.param(k).is_none())
        .cloned()
        .collect();
    if missing.is_empty() && wrong.is_empty() && unexpected.is_empty() {
        return Ok(());
    }
    Err(ModelError::Mismatch {
        preset: graph.preset.clone(),
        details: mismatch_details(&missing, &unexpected, &wrong),
    })
}

/// The body of a [`ModelError::Mismatch`]: each non-empty list with its count (12 shown).
pub(crate) fn mismatch_details(
    missing: &[String],
    unexpected: &[String],
    wrong: &[String],
) -> String {
    let mut details = String::new();
    let mut section = |title: &str, items: &[String]| {
        if !items.is_empty() {
            let shown: Vec<_> = items.iter().take(12).map(|s| format!("    {s}")).collect();
            let more = if items.len() > 12 {
                format!("\n    ... and {} more", items.len() - 12)
            } else {
                String::new()
            };
            details.push_str(&format!(
                "  {} {title}:\n{}{more}\n",
                items.len(),
                shown.join("\n")
            ));
        }
    };
    section("missing keys", missing);
    section("unexpected keys", unexpected);
    section("wrong shapes", wrong);
    details.push_str("  (is this checkpoint for another preset or config override?)");
    details
}
