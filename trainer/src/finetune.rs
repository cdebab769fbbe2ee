//! Fine-tuning from pretrained weights: the student's first weights from `finetune.init`
//! (adapted and reported, see [`lkd_models::checkpoint::adopt_for_finetune`]), which parameters
//! train (`finetune.freeze`, `finetune.linear_probe`) and at which learning-rate scale
//! (`optim.layer_decay`, `optim.head_lr_scale`). What was loaded is recorded in the run dir
//! (`init.json`) and travels into the exported model's metadata.

use crate::config::TrainConfig;
use crate::executor::{host_to_tensor, tensor_to_host, Params};
use crate::TrainError;
use lkd_models::checkpoint::{head_params, layer_depths, read_for_finetune, Adaptation};
use lkd_models::{Graph, HostTensor};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// The run dir's record of where the first weights came from.
pub const INIT_RECORD: &str = "init.json";

/// What `--init` loaded, as `init.json` records it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InitRecord {
    /// The file the weights came from (a run dir's best or last weights).
    pub source: String,
    pub sha256: String,
    /// Each adaptation, in words (classifier re-initialised, stem channels, position grid).
    pub adaptations: Vec<String>,
    /// Parameters not taken from the file (the re-initialised classifier).
    pub reinitialised: Vec<String>,
}

impl InitRecord {
    /// One line for the exported model's metadata.
    pub fn summary(&self) -> String {
        let file = Path::new(&self.source)
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.source.clone());
        let mut s = format!("{file} sha256:{}", self.sha256);
        for a in &self.adaptations {
            s.push_str("; ");
            s.push_str(a);
        }
        s
    }
}

/// libtorch's antialiased bicubic resize of a `[1, prefix + h*w, D]` position embedding, as
/// timm's `resample_abs_pos_embed` does it (prefix tokens kept as they are).
pub fn resample_pos_embed(
    t: &HostTensor,
    from: [usize; 2],
    to: [usize; 2],
    prefix: usize,
) -> Result<HostTensor, String> {
    let run = || -> Result<HostTensor, tch::TchError> {
        let x = host_to_tensor(t, Device::Cpu)?.f_to_kind(Kind::Float)?;
        let d = t.shape[2] as i64;
        let head = x.f_narrow(1, 0, prefix as i64)?;
        let grid = x
            .f_narrow(1, prefix as i64, (from[0] * from[1]) as i64)?
            .f_reshape([1, from[0] as i64, from[1] as i64, d])?
            .f_permute([0, 3, 1, 2])?;
        let resized = grid
            .f_internal_upsample_bicubic2d_aa([to[0] as i64, to[1] as i64], false, None, None)?
            .f_permute([0, 2, 3, 1])?
            .f_reshape([1, (to[0] * to[1]) as i64, d])?;
        tensor_to_host(&Tensor::f_cat(&[head, resized], 1)?)
    };
    run().map_err(|e| format!("resampling the position embedding: {e}"))
}

/// Fresh parameters (seeded) with every tensor `source` gives overwritten: the classifier
/// re-initialised (scaled by `head_init_scale`) when the class count differs. Returns the
/// record of what was done.
pub fn init_from(
    graph: &Graph,
    source: &Path,
    head_init_scale: f64,
    device: Device,
    seed: u64,
) -> Result<(Params, InitRecord), TrainError> {
    let file = crate::source::ModelSource::at(source, "finetune.init: ")?
        .weights()
        .to_path_buf();
    let bytes = std::fs::read(&file).map_err(|e| TrainError::Io {
        path: file.display().to_string(),
        source: e,
    })?;
    let sha256: String = sha2::Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    drop(bytes);
    let loaded = read_for_finetune(graph, &file, &resample_pos_embed)?;
    let params = Params::init(graph, device, seed)?;
    let reinitialised: Vec<String> = loaded.reinitialised(graph).map(str::to_string).collect();
    tch::no_grad(|| -> Result<(), TrainError> {
        for (name, host) in &loaded.state {
            let t = host_to_tensor(host, device)?.f_to_kind(params.get(name).kind())?;
            params.get(name).shallow_clone().f_copy_(&t)?;
        }
        if head_init_scale != 1.0 {
            for name in &reinitialised {
                let _ = params
                    .get(name)
                    .shallow_clone()
                    .f_mul_scalar_(head_init_scale)?;
            }
        }
        Ok(())
    })?;
    let record = InitRecord {
        source: file.display().to_string(),
        sha256,
        adaptations: loaded
            .adaptations
            .iter()
            .map(Adaptation::to_string)
            .collect(),
        reinitialised,
    };
    Ok((params, record))
}

/// The parameters `config` keeps fixed: every one under a `finetune.freeze` prefix (a prefix
/// ends at a name boundary: "stages.1" is not "stages.10"), all but the classifier under
/// `finetune.linear_probe`. A prefix that names no parameter is an error listing the roots.
pub fn frozen_params(graph: &Graph, config: &TrainConfig) -> Result<BTreeSet<String>, TrainError> {
    let f = &config.finetune;
    let under = |name: &str, prefix: &str| {
        name == prefix
            || name
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.starts_with('.'))
    };
    let mut frozen = BTreeSet::new();
    for prefix in &f.freeze {
        let hits: Vec<&str> = graph
            .params
            .iter()
            .map(|p| p.name.as_str())
            .filter(|n| under(n, prefix))
            .collect();
        if hits.is_empty() {
            let mut roots: Vec<String> = graph
                .params
                .iter()
                .map(|p| {
                    let parts: Vec<&str> = p.name.split('.').collect();
                    let n = if parts.get(1).is_some_and(|s| s.parse::<usize>().is_ok()) {
                        2
                    } else {
                        1
                    };
                    parts[..n.min(parts.len())].join(".")
                })
                .collect();
            roots.dedup();
            return Err(TrainError::Config(format!(
                "finetune.freeze: no parameter of {} is under {prefix:?}; its parameter paths start with {}",
                graph.preset,
                roots.join(", ")
            )));
        }
        frozen.extend(hits.into_iter().map(String::from));
    }
    if f.linear_probe {
        let head: BTreeSet<String> = head_params(graph).into_iter().collect();
        if head.is_empty() {
            return Err(TrainError::Config(format!(
                "finetune.linear_probe: {} has no linear classifier to train",
                graph.preset
            )));
        }
        frozen.extend(
            graph
                .params
                .iter()
                .filter(|p| p.is_trainable() && !head.contains(&p.name))
                .map(|p| p.name.clone()),
        );
    }
    Ok(frozen)
}

/// Learning-rate scale per trainable parameter: `layer_decay^(L - depth)` (see
/// [`lkd_models::checkpoint::layer_depths`]), times `head_lr_scale` for the classifier. Only
/// scales other than 1 are listed.
pub fn lr_scales(graph: &Graph, config: &TrainConfig) -> BTreeMap<String, f64> {
    let o = &config.optim;
    let mut scales = BTreeMap::new();
    if let Some(decay) = o.layer_decay.filter(|d| *d != 1.0) {
        let (depths, top) = layer_depths(graph);
        for (name, depth) in depths {
            scales.insert(name, decay.powi((top - depth) as i32));
        }
    }
    if o.head_lr_scale != 1.0 {
        for name in head_params(graph) {
            *scales.entry(name).or_insert(1.0) *= o.head_lr_scale;
        }
    }
    scales.retain(|_, s| *s != 1.0);
    scales
}
