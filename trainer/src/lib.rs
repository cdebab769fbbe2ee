//! lkd-trainer executes model graphs with libtorch (tch): parameters and checkpoints, the data
//! pipeline, distillation losses, the training loop and the ERF analysis. It is the only
//! library crate that links libtorch (with lkd-dist, its data-parallel collectives); it never
//! names a specific architecture.

pub mod config;
pub mod data;
pub mod erf;
pub mod executor;
pub mod losses;
pub mod optim;
pub mod precision;
pub mod rundir;
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
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("config: {0}")]
    Config(String),
    #[error(transparent)]
    Data(#[from] data::DataError),
    /// Data-parallel launch or collective failure (a worker died, a timeout, a bad launch).
    #[error(transparent)]
    Dist(#[from] lkd_dist::DistError),
    #[error("non-finite loss: {0}")]
    NonFinite(String),
    #[error("{0}")]
    Other(String),
}

/// Parses `cpu`, `cuda` or `cuda:N`; an unavailable device is an error, never a fallback.
pub fn parse_device(s: &str) -> Result<tch::Device, TrainError> {
    let dev = match s {
        "cpu" => return Ok(tch::Device::Cpu),
        "cuda" => 0,
        _ => s
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| {
                TrainError::Device(format!("unknown device `{s}`; use cpu, cuda or cuda:N"))
            })?,
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
