//! The model being trained: executor, parameters, the feature projector, fine-tuning's frozen
//! parameters and learning-rate scales.

use crate::config::TrainConfig;
use crate::executor::{Executor, Params};
use crate::optim::Slot;
use crate::TrainError;
use lkd_models::Graph;
use std::collections::{BTreeMap, BTreeSet};
use tch::Tensor;

/// The feature-distillation projector's tensors in the state file and the optimizer.
pub const PROJECTOR_WEIGHT: &str = "distill.projector.weight";

pub const PROJECTOR_BIAS: &str = "distill.projector.bias";

pub(super) struct Student {
    pub(super) exec: Executor,
    pub(super) params: Params,
    /// 1×1 conv projector (student → teacher channels) for feature distillation.
    pub(super) projector: Option<(Tensor, Tensor)>,
    /// Parameters fine-tuning keeps fixed, and learning-rate scales other than 1.
    pub(super) frozen: BTreeSet<String>,
    pub(super) lr_scales: BTreeMap<String, f64>,
}

impl Student {
    /// The student with fine-tuning's frozen parameters (no gradient; their BatchNorm layers
    /// in eval mode) and learning-rate scales.
    pub(super) fn new(
        mut exec: Executor,
        mut params: Params,
        projector: Option<(Tensor, Tensor)>,
        config: &TrainConfig,
    ) -> Result<Self, TrainError> {
        let frozen = crate::finetune::frozen_params(&exec.graph, config)?;
        params.freeze(&frozen)?;
        exec.freeze_norms(&frozen);
        let lr_scales = crate::finetune::lr_scales(&exec.graph, config);
        Ok(Self {
            exec,
            params,
            projector,
            frozen,
            lr_scales,
        })
    }

    /// Parameters, buffers and projector: what DDP gives every worker from rank 0.
    pub(super) fn all_tensors(&self) -> Vec<Tensor> {
        let mut all: Vec<Tensor> = self
            .params
            .tensors
            .values()
            .map(Tensor::shallow_clone)
            .collect();
        if let Some((w, b)) = &self.projector {
            all.push(w.shallow_clone());
            all.push(b.shallow_clone());
        }
        all
    }

    pub(super) fn slots(&self) -> Vec<Slot> {
        let mut s = crate::optim::slots(
            &self.exec.graph,
            &self.params,
            "",
            &self.frozen,
            &self.lr_scales,
        );
        if let Some((w, b)) = &self.projector {
            s.push(Slot {
                name: PROJECTOR_WEIGHT.into(),
                tensor: w.shallow_clone(),
                decay: true,
                lr_scale: 1.0,
            });
            s.push(Slot {
                name: PROJECTOR_BIAS.into(),
                tensor: b.shallow_clone(),
                decay: false,
                lr_scale: 1.0,
            });
        }
        s
    }
}

pub(super) fn last_stage(graph: &Graph) -> Result<String, TrainError> {
    graph
        .stage_taps()
        .last()
        .map(|(k, _)| k.clone())
        .ok_or_else(|| {
            TrainError::Config(format!(
                "{} has no stage taps for feature distillation",
                graph.preset
            ))
        })
}
