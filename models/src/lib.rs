//! lkd-models owns the description of every network: presets and configs, the [`graph::Graph`]
//! (ops, upstream-named parameters, feature taps), parameter and FLOP counts, preprocessing as
//! data, and checkpoint I/O (safetensors, official PyTorch `.pth`). It links no libtorch and
//! knows nothing about executing a graph: the trainer and the exporter consume it.

pub mod checkpoint;
pub mod families;
pub mod graph;
pub mod preprocess;
pub mod summary;
pub mod tensor;

pub use families::{preset_names, ModelConfig, PRESETS};
pub use graph::{Graph, Op, ParamSpec, ValueId};
pub use preprocess::Preprocess;
pub use tensor::{HostData, HostTensor};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("unknown preset `{found}`; known presets: {known}")]
    UnknownPreset { found: String, known: String },
    #[error("invalid model config: {0}")]
    Config(String),
    #[error("inconsistent graph: {0}")]
    Graph(String),
    #[error("checkpoint does not match model `{preset}`:\n{details}")]
    Mismatch { preset: String, details: String },
    #[error("{path}: {msg}")]
    Checkpoint { path: String, msg: String },
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
}
