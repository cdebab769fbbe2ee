//! lkd-trainer executes model graphs with libtorch (tch): parameters and checkpoints, the data
//! pipeline, distillation losses, the training loop and the ERF analysis. It is the only
//! library crate that links libtorch (with lkd-dist, its data-parallel collectives); it never
//! names a specific architecture.

pub mod config;
pub mod data;
pub mod erf;
pub mod executor;
pub mod finetune;
pub mod losses;
pub mod optim;
pub mod precision;
pub mod rundir;
pub mod source;
pub mod stats;
pub mod teacher;
pub mod teacher_cache;
pub mod train;

pub use executor::{Executor, Forward, Params};
pub use lkd_dist;
pub use tch;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Model(#[from] lkd_models::ModelError),
    #[error("bad input: {0}")]
    Input(String),
    #[error("device: {0}")]
    Device(String),
    #[error(transparent)]
    Torch(#[from] tch::TchError),
    /// The display names the file only: the CLI prints the io error after it (as the source).
    #[error("{path}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("config: {0}")]
    Config(String),
    /// A config file that does not parse or validate: the display names the file, the
    /// source says why.
    #[error("{path}")]
    ConfigFile {
        path: String,
        #[source]
        source: Box<TrainError>,
    },
    #[error(transparent)]
    Data(#[from] data::DataError),
    /// Data-parallel launch or collective failure (a worker died, a timeout, a bad launch).
    #[error(transparent)]
    Dist(#[from] lkd_dist::DistError),
    /// A run directory or cache entry another process holds; the message names it and the holder.
    #[error("{0}")]
    Busy(String),
    #[error("non-finite loss: {0}")]
    NonFinite(String),
    #[error("{0}")]
    Other(String),
}

impl From<lkd_util::WriteError> for TrainError {
    fn from(e: lkd_util::WriteError) -> Self {
        TrainError::Io {
            path: e.path.display().to_string(),
            source: e.source,
        }
    }
}

/// `error: cause: root cause` on one line, as the CLI prints a chain; for warnings and
/// records that are not printed by the CLI (displays never repeat their source).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(&format!(": {c}"));
        cause = c.source();
    }
    text
}

/// The CUDA index `s` names (`None` for the CPU), in the one device grammar
/// ([`lkd_util::Device`]); availability is not checked.
pub fn device_index(s: &str) -> Result<Option<usize>, TrainError> {
    s.parse::<lkd_util::Device>()
        .map(lkd_util::Device::cuda_index)
        .map_err(|e| TrainError::Device(e.to_string()))
}

/// Parses a device string (see [`device_index`]); an unavailable device is an error, never a
/// fallback.
pub fn parse_device(s: &str) -> Result<tch::Device, TrainError> {
    let Some(dev) = device_index(s)? else {
        return Ok(tch::Device::Cpu);
    };
    let count = tch::Cuda::device_count() as usize;
    if !tch::Cuda::is_available() || dev >= count {
        return Err(TrainError::Device(format!(
            "`{s}` requested but libtorch sees {count} CUDA device(s){}",
            if count == 0 {
                " (CPU-only libtorch, no driver, or libtorch_cuda not linked)"
            } else {
                ""
            }
        )));
    }
    Ok(tch::Device::Cuda(dev))
}
