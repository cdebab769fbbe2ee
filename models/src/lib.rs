//! lkd-models owns the description of every network: presets and range-checked configs
//! ([`families`]), the [`graph::Graph`] (ops, upstream-named parameters, feature taps),
//! parameter and FLOP counts, preprocessing as data, and checkpoint I/O (safetensors, official
//! PyTorch `.pth`, and the timm/torchvision key maps of [`layout`]). It links no
//! libtorch and knows nothing about executing a graph: the trainer and the exporter consume it.
//!
//! The front door: a preset (or config) built into a [`Graph`], its counts, and weights written
//! and read back strictly under the graph's parameter names.
//!
//! ```
//! use lkd_models::checkpoint::{read_checkpoint_for, write_safetensors, StateDict};
//! use lkd_models::graph::DType;
//! use lkd_models::{HostTensor, ModelConfig};
//!
//! let graph = ModelConfig::preset("resnet_proxy").build()?;
//! assert!(graph.num_parameters() > 0 && graph.macs()? > 0);
//! assert_eq!(graph.preprocess.input_size, graph.input_size);
//!
//! let weights: StateDict = graph
//!     .params
//!     .iter()
//!     .map(|p| {
//!         let n = p.shape.iter().product();
//!         let t = match p.dtype {
//!             DType::F32 => HostTensor::f32(p.shape.clone(), vec![0.0; n]),
//!             DType::I64 => HostTensor::i64(p.shape.clone(), vec![0; n]),
//!         };
//!         (p.name.clone(), t)
//!     })
//!     .collect();
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("weights.safetensors");
//! write_safetensors(&path, &weights, None)?;
//! assert_eq!(read_checkpoint_for(&graph, &path)?.len(), weights.len());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod checkpoint;
pub mod families;
pub mod graph;
pub mod layout;
pub mod preprocess;
pub mod summary;
pub mod tensor;

pub use families::{
    find_preset, preset_names, FamilySpec, ModelConfig, ModelSpec, Preset, PRESETS,
};
pub use graph::{Graph, Op, ParamSpec, ValueId};
pub use preprocess::{Preprocess, PreprocessSpecError};
pub use tensor::{HostData, HostTensor};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("unknown preset `{found}`; known presets: {known}")]
    UnknownPreset { found: String, known: String },
    #[error("preset `{found}` was renamed `{new}`: the CPU-scale proxies are `*_proxy`, so that no preset name means two networks")]
    RenamedPreset { found: String, new: &'static str },
    /// A config value out of its range: names the field, the value and what is allowed.
    #[error("model `{preset}`: `{field}` = {value} is invalid: expected {expected}")]
    InvalidField {
        preset: String,
        field: &'static str,
        value: String,
        expected: String,
    },
    #[error("model `{preset}`: `{field}` does not apply to the {family} family (its fields: {accepted})")]
    FieldNotApplicable {
        preset: String,
        field: &'static str,
        family: &'static str,
        accepted: &'static str,
    },
    #[error("model `{preset}` would have {parameters} parameters; at most {max} are allowed")]
    TooLarge {
        preset: String,
        parameters: usize,
        max: usize,
    },
    #[error("inconsistent graph: {0}")]
    Graph(String),
    #[error("checkpoint does not match model `{preset}`:\n{details}")]
    Mismatch { preset: String, details: String },
    /// Unreadable checkpoint bytes; `source` is the parser's error where one lies underneath.
    #[error("{path}: {msg}")]
    Checkpoint {
        path: String,
        msg: String,
        #[source]
        source: Option<Box<dyn std::error::Error + Send + Sync>>,
    },
    /// The display names the file only: the CLI prints the io error after it (as the source).
    #[error("{path}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

impl From<lkd_util::WriteError> for ModelError {
    fn from(e: lkd_util::WriteError) -> Self {
        ModelError::Io {
            path: e.path.display().to_string(),
            source: e.source,
        }
    }
}
