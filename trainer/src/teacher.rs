//! The frozen teacher: eval mode, no gradients, outputs detached, run under no-grad.

use crate::config::DistillConfig;
use crate::executor::{Executor, Params};
use crate::rundir;
use crate::TrainError;
use lkd_models::checkpoint::read_checkpoint;
use lkd_models::{ModelConfig, Preprocess};
use tch::{Device, Tensor};

pub struct Teacher {
    pub exec: Executor,
    pub params: Params,
    pub model: ModelConfig,
    /// Where it came from (run dir or checkpoint path), for provenance.
    pub source: String,
}

impl Teacher {
    /// Loads a run dir of ours (its config states the architecture) or a checkpoint file with
    /// `teacher_model` stating it.
    pub fn load(cfg: &DistillConfig, device: Device) -> Result<Self, TrainError> {
        let path = &cfg.teacher;
        let (model, weights) = if path.is_dir() {
            let run = rundir::RunDir::open(path)?;
            let model = run.config()?.model;
            (model, run.best_or_last_weights()?)
        } else {
            let model = cfg.teacher_model.clone().ok_or_else(|| {
                TrainError::Config(format!(
                    "teacher {} is a checkpoint file: also give its architecture (--teacher-preset, or [distill.teacher_model] in the config)",
                    path.display()
                ))
            })?;
            (model, path.clone())
        };
        let graph = model.build()?;
        let sd = read_checkpoint(&weights)?;
        let params = Params::from_state_dict(&graph, &sd, device)?;
        for t in params.tensors.values() {
            let _ = t.shallow_clone().set_requires_grad(false);
        }
        Ok(Self { exec: Executor::new(graph), params, model, source: path.display().to_string() })
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
pub fn renormalize(x: &Tensor, from: &Preprocess, to: &Preprocess) -> Tensor {
    if from.mean == to.mean && from.std == to.std {
        return x.shallow_clone();
    }
    let v = |a: &[f32]| Tensor::from_slice(a).view([1, -1, 1, 1]).to_device(x.device());
    (x * v(&from.std) + v(&from.mean) - v(&to.mean)) / v(&to.std)
}
