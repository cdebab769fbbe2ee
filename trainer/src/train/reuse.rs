//! Runs and teachers kept and reused, the teacher-output cache filled ahead, and a model loaded
//! for evaluation.

use super::*;
use crate::config::{KdMethod, TrainConfig};
use crate::data::{self, Split};
use crate::executor::{Executor, Params};
use crate::rundir::RunDir;
use crate::teacher::TeacherSpec;
use crate::teacher_cache::{CacheStats, StreamSpec, TeacherOutputs};
use crate::{parse_device, TrainError};
use lkd_models::ModelConfig;
use std::path::Path;
use std::sync::Arc;
use tch::Device;

/// Computes (or completes) the teacher-output cache of `config`'s distillation stream for its
/// first `epochs` epochs, batch for batch as `train` would consume them. Returns the cache
/// directory and what was done.
pub fn precompute_teacher_outputs(
    config: &TrainConfig,
    epochs: usize,
    progress: bool,
) -> Result<(std::path::PathBuf, CacheStats), TrainError> {
    config.validate()?;
    let d = config
        .distill
        .clone()
        .filter(|d| d.method != KdMethod::None)
        .ok_or_else(|| {
            TrainError::Config(
                "teacher-cache build needs a distillation method other than none".into(),
            )
        })?;
    let device = parse_device(&config.run.device)?;
    let train_set = Arc::new(data::open(&config.data.dataset, Split::Train)?);
    let mut config = config.clone();
    let resolved = resolve_model(&config.model, &train_set)?;
    if progress {
        for line in &resolved.adapted {
            eprintln!("{line}");
        }
    }
    config.model = resolved.model;
    let graph = config.model.build()?;
    let spec = TeacherSpec::resolve(&d)?;
    let taps = if d.method.uses_features() {
        vec![last_stage(&spec.graph)?]
    } else {
        vec![]
    };
    let pre = graph.preprocess.clone();
    let loader = training_loader(&config, &graph, train_set.clone())?;
    let o = &config.optim;
    let batches = (loader.batches_per_epoch() / o.update_freq.max(1)) * o.update_freq.max(1);
    let stream = StreamSpec {
        setting: &d.cache,
        topk: d.cache_topk,
        taps,
        dataset: &train_set,
        augment: &config.data.augment,
        mixup: config.data.mixup.as_ref(),
        student_preprocess: &pre,
        batch_size: o.batch_size,
        seed: config.run.seed,
        precision: config.run.precision()?,
        shard: data::Shard::whole(),
        balanced: config.data.balanced_sampling,
    };
    let mut outputs = TeacherOutputs::open(spec, stream, device)?;
    outputs.require_writer()?;
    let dir = outputs.dir().map(Path::to_path_buf).ok_or_else(|| {
        TrainError::Config(
            "the teacher cache is off: give --teacher-cache auto or a directory".into(),
        )
    })?;
    for epoch in 0..epochs {
        let bar = progress_bar(progress, batches as u64, epoch, epochs);
        for batch in loader.epoch(epoch, 0)?.take(batches) {
            let batch = batch?;
            let x = batch.images.f_to_device(device)?;
            let _ = outputs.get(epoch, batch.index, &batch.samples, &x, &pre)?;
            bar.inc(1);
        }
        outputs.flush()?;
        bar.finish_and_clear();
    }
    Ok((dir, outputs.stats))
}

/// What [`train_or_reuse`] found in the run directory.
pub enum RunOutcome {
    /// A finished run was there; nothing was trained.
    Reused,
    /// Trained to the end; `resumed` when an interrupted run was continued.
    Trained { resumed: bool, summary: Summary },
}

/// Trains `config` into `dir` unless a finished run of the same recipe is there. An interrupted
/// run (one with a state file) is resumed; a directory without a checkpoint, or holding a run
/// of another recipe (its stored config has another [`TrainConfig::result_digest`]), is replaced.
pub fn train_or_reuse(
    config: &TrainConfig,
    dir: &Path,
    progress: bool,
) -> Result<RunOutcome, TrainError> {
    let run = RunDir::open(dir).ok();
    let same_recipe = run
        .as_ref()
        .and_then(|r| r.config().ok())
        .is_some_and(|stored| config.same_recipe_as(&stored));
    if run.is_some() && !same_recipe && progress {
        println!(
            "  {} holds a run of another recipe: training again",
            dir.display()
        );
    }
    let state = run
        .filter(|_| same_recipe)
        .and_then(|r| r.load_state().ok())
        .map(|(_, s)| s);
    if state.as_ref().is_some_and(|s| s.finished) {
        return Ok(RunOutcome::Reused);
    }
    if state.is_none() && dir.exists() {
        let _writer = crate::rundir::DirLock::acquire(dir, "run directory")?;
        std::fs::remove_dir_all(dir).map_err(|source| TrainError::Io {
            path: dir.display().to_string(),
            source,
        })?;
    }
    let resumed = state.is_some();
    let start = if resumed {
        Start::resume(dir)
    } else {
        Start::new(config, dir)?
    };
    let summary = train(start, progress)?;
    Ok(RunOutcome::Trained { resumed, summary })
}

/// Trains `config` under `$LKD_CACHE/teachers/<result digest>` unless a finished run with the
/// same digest is there (then reused, untouched), so a teacher is trained once and every later
/// demo or study on the same recipe distils from it. `retrain` discards a kept one first.
pub fn train_or_reuse_shared(
    config: &TrainConfig,
    retrain: bool,
    progress: bool,
) -> Result<(std::path::PathBuf, RunOutcome), TrainError> {
    let teachers = crate::teacher_cache::lkd_cache_dir().join("teachers");
    let digest = config.result_digest();
    let mut dir = teachers.join(&digest);
    if !retrain && !dir.exists() {
        // A teacher kept by an older build sits under the digest that build computed; its stored
        // config, read by this build, tells whether it is the same recipe.
        if let Some(kept) = find_kept_run(&teachers, config) {
            dir = kept;
        }
    }
    if retrain && dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|source| TrainError::Io {
            path: dir.display().to_string(),
            source,
        })?;
    }
    let outcome = train_or_reuse(config, &dir, progress)?;
    Ok((dir, outcome))
}

/// The finished teacher kept for `config`'s recipe under `$LKD_CACHE/teachers`, if any (what
/// [`train_or_reuse_shared`] would reuse), without training anything.
pub fn kept_teacher(config: &TrainConfig) -> Option<std::path::PathBuf> {
    let teachers = crate::teacher_cache::lkd_cache_dir().join("teachers");
    let digest = config.result_digest();
    let dir = teachers.join(&digest);
    let finished = RunDir::open(&dir)
        .and_then(|r| r.load_state())
        .is_ok_and(|(_, s)| s.finished);
    if finished {
        Some(dir)
    } else {
        find_kept_run(&teachers, config)
    }
}

/// A finished run under `parent` whose stored config is the recipe `config` asks for.
pub(super) fn find_kept_run(parent: &Path, config: &TrainConfig) -> Option<std::path::PathBuf> {
    std::fs::read_dir(parent)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            RunDir::open(p).ok().is_some_and(|r| {
                r.config().is_ok_and(|c| config.same_recipe_as(&c))
                    && r.load_state().is_ok_and(|(_, s)| s.finished)
            })
        })
}

/// Loads a model for evaluation from a run dir (best weights) or a checkpoint + model config.
pub fn load_model(
    source: &Path,
    model: Option<&ModelConfig>,
    device: Device,
) -> Result<(Executor, Params), TrainError> {
    let found = crate::source::ModelSource::at(source, "")?;
    let cfg = found.model(model, |p| {
        format!("{} is a checkpoint file: give its --preset", p.display())
    })?;
    let weights = found.weights().to_path_buf();
    let graph = cfg.build()?;
    let sd = lkd_models::checkpoint::read_checkpoint_for(&graph, &weights)?;
    let params = Params::from_state_dict(&graph, &sd, device)?;
    Ok((Executor::new(graph), params))
}
