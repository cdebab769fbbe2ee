//! The frozen teacher: eval mode, no gradients, outputs detached, run under no-grad.
//!
//! [`TeacherSpec`] says what the teacher is (architecture, weights file, their digest) without
//! loading it, so a run that replays cached teacher outputs never builds the teacher at all.

use crate::config::DistillConfig;
use crate::executor::{Executor, Params};
use crate::TrainError;
use lkd_models::checkpoint::read_checkpoint_for;
use lkd_models::{Graph, ModelConfig, Preprocess};
use std::path::PathBuf;
use tch::{Device, TchError, Tensor};

/// A teacher described but not loaded.
pub struct TeacherSpec {
    pub model: ModelConfig,
    /// The graph (no weights): classes, taps and preprocessing.
    pub graph: Graph,
    pub weights: PathBuf,
    /// Where it came from (run dir or checkpoint path), for provenance.
    pub source: String,
}

impl TeacherSpec {
    /// A run dir of ours (its config states the architecture) or a checkpoint file with
    /// `teacher_model` stating it.
    pub fn resolve(cfg: &DistillConfig) -> Result<Self, TrainError> {
        let path = &cfg.teacher;
        let source = crate::source::ModelSource::at(path, "teacher ")?;
        let model = source.model(cfg.teacher_model.as_ref(), |p| {
            format!(
                "teacher {} is a checkpoint file: also give its architecture (--teacher-preset, or [distill.teacher_model] in the config)",
                p.display()
            )
        })?;
        let weights = source.weights().to_path_buf();
        let graph = model.build()?;
        Ok(Self {
            model,
            graph,
            weights,
            source: path.display().to_string(),
        })
    }

    /// SHA-256 of the weights file: the teacher's identity in the output cache.
    pub fn weights_digest(&self) -> Result<String, TrainError> {
        use sha2::Digest;
        let mut f = std::fs::File::open(&self.weights).map_err(|source| TrainError::Io {
            path: self.weights.display().to_string(),
            source,
        })?;
        let mut h = sha2::Sha256::new();
        std::io::copy(&mut f, &mut h).map_err(|source| TrainError::Io {
            path: self.weights.display().to_string(),
            source,
        })?;
        Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
    }

    pub fn load(&self, device: Device) -> Result<Teacher, TrainError> {
        let sd = read_checkpoint_for(&self.graph, &self.weights)?;
        let params = Params::from_state_dict(&self.graph, &sd, device)?;
        for t in params.tensors.values() {
            let _ = t.shallow_clone().f_set_requires_grad(false)?;
        }
        Ok(Teacher {
            exec: Executor::new(self.graph.clone()),
            params,
            model: self.model.clone(),
            source: self.source.clone(),
        })
    }
}

pub struct Teacher {
    pub exec: Executor,
    pub params: Params,
    pub model: ModelConfig,
    /// Where it came from (run dir or checkpoint path), for provenance.
    pub source: String,
}

impl Teacher {
    /// Resolves and loads in one go.
    pub fn load(cfg: &DistillConfig, device: Device) -> Result<Self, TrainError> {
        TeacherSpec::resolve(cfg)?.load(device)
    }

    pub fn preprocess(&self) -> &Preprocess {
        &self.exec.graph.preprocess
    }

    /// Logits and the requested taps, computed without autograd and detached.
    pub fn forward(&self, x: &Tensor, taps: &[&str]) -> Result<(Tensor, Vec<Tensor>), TrainError> {
        tch::no_grad(|| {
            let out = self.exec.forward(&self.params, x, false, taps)?;
            let maps = taps.iter().map(|t| out.taps[*t].detach()).collect();
            Ok((out.logits.detach(), maps))
        })
    }
}

/// Re-normalises a batch normalised with `from` into `to`'s normalisation (same pixels).
pub fn renormalize(x: &Tensor, from: &Preprocess, to: &Preprocess) -> Result<Tensor, TchError> {
    if from.mean == to.mean && from.std == to.std {
        return Ok(x.shallow_clone());
    }
    let v = |a: &[f32]| {
        Tensor::f_from_slice(a)?
            .f_view([1, -1, 1, 1])?
            .f_to_device(x.device())
    };
    x.f_mul(&v(&from.std)?)?
        .f_add(&v(&from.mean)?)?
        .f_sub(&v(&to.mean)?)?
        .f_div(&v(&to.std)?)
}
