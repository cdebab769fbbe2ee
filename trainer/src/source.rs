//! Where a model comes from: one of our run dirs, whose config names the architecture and whose
//! best (else last) weights give the values, or a checkpoint file (ours, official, timm,
//! torchvision), whose architecture the caller states. Every command that takes "a run dir or a
//! checkpoint" resolves it here.

use crate::config::TrainConfig;
use crate::rundir::RunDir;
use crate::TrainError;
use lkd_models::ModelConfig;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug)]
pub enum ModelSource {
    Run {
        dir: PathBuf,
        config: Box<TrainConfig>,
        weights: PathBuf,
    },
    File {
        path: PathBuf,
    },
}

impl ModelSource {
    /// `path` as a run dir or a checkpoint file; `role` starts the error for a path that is
    /// neither (e.g. "teacher ").
    pub fn at(path: &Path, role: &str) -> Result<Self, TrainError> {
        if path.is_dir() {
            let run = RunDir::open(path)?;
            Ok(Self::Run {
                dir: path.to_path_buf(),
                config: Box::new(run.config()?),
                weights: run.best_or_last_weights()?,
            })
        } else if path.is_file() {
            Ok(Self::File {
                path: path.to_path_buf(),
            })
        } else {
            Err(TrainError::Other(format!(
                "{role}{} does not exist (give a run directory or a checkpoint file)",
                path.display()
            )))
        }
    }

    /// The weights file: the run's best (else last) weights, or the checkpoint itself.
    pub fn weights(&self) -> &Path {
        match self {
            Self::Run { weights, .. } => weights,
            Self::File { path } => path,
        }
    }

    /// The architecture: the run's own, else `stated` (a checkpoint file says nothing of it);
    /// `missing` is the error for a checkpoint without one.
    pub fn model(
        &self,
        stated: Option<&ModelConfig>,
        missing: impl FnOnce(&Path) -> String,
    ) -> Result<ModelConfig, TrainError> {
        match self {
            Self::Run { config, .. } => Ok(config.model.clone()),
            Self::File { path } => stated
                .cloned()
                .ok_or_else(|| TrainError::Config(missing(path))),
        }
    }
}
