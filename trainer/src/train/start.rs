//! The start of a run: its directory opened once, the config it runs, the datasets, the device.

use super::*;
use crate::config::TrainConfig;
use crate::data::{self, Split};
use crate::precision::Precision;
use crate::rundir::RunDir;
use crate::{parse_device, TrainError};
use lkd_dist::{LaunchEnv, ProcessGroup};
use lkd_models::ModelConfig;
use std::path::Path;
use std::sync::Arc;
use tch::Device;

/// The model config a new run trains, and what it took from the dataset, one line each (for
/// the command to say so).
pub struct ResolvedModel {
    pub model: ModelConfig,
    pub adapted: Vec<String>,
}

/// Fills `model.num_classes` / `in_chans` / `input_size` from the dataset where the config
/// leaves them open (a preset's own defaults yield to the data), so a preset trains on any
/// dataset without hand-editing. A channel count the config sets that the data cannot give is
/// an error: an in-memory dataset gives exactly its own count; an image folder is read as RGB,
/// so it gives 3 channels, or 1 (luma) when the config asks for it.
pub fn resolve_model(
    model: &ModelConfig,
    train: &data::Dataset,
) -> Result<ResolvedModel, TrainError> {
    let mut m = model.clone();
    let mut adapted = Vec::new();
    let Ok(preset) = ModelConfig::preset(&model.preset).build() else {
        // An unknown preset: building the model reports it.
        return Ok(ResolvedModel { model: m, adapted });
    };
    let mut follow = |field: &str, from_preset: usize, from_data: usize| {
        adapted.push(format!(
            "model.{field} = {from_data} from dataset {} (preset {} has {from_preset})",
            train.name(),
            model.preset
        ));
    };
    let classes = train.num_classes();
    if m.num_classes.is_none() && preset.num_classes != classes {
        m.num_classes = Some(classes);
        follow("num_classes", preset.num_classes, classes);
    }
    let (size, channels) = match train.image_shape() {
        Some((w, h, c)) => ((w == h).then_some(h), c),
        None => (None, 3),
    };
    match m.in_chans {
        None if preset.in_chans != channels => {
            m.in_chans = Some(channels);
            follow("in_chans", preset.in_chans, channels);
        }
        Some(c) if train.image_shape().is_some() && c != channels => {
            return Err(TrainError::Config(format!(
                "model.in_chans = {c}, but dataset {} has {channels}-channel images: remove \
                 model.in_chans to follow the dataset",
                train.name()
            )));
        }
        Some(c) if train.image_shape().is_none() && c != 3 && c != 1 => {
            return Err(TrainError::Config(format!(
                "model.in_chans = {c}, but dataset {} is an image folder, read as RGB: remove \
                 model.in_chans to follow the dataset (3), or set 1 for grayscale",
                train.name()
            )));
        }
        _ => {}
    }
    if let Some(h) = size.filter(|&h| m.input_size.is_none() && preset.input_size[0] != h) {
        m.input_size = Some(h);
        follow("input_size", preset.input_size[0], h);
    }
    Ok(ResolvedModel { model: m, adapted })
}

/// An opened run: its directory, the config it runs (stored or resolved), the train and
/// validation sets, and whether it resumes.
pub(super) struct OpenedRun {
    pub(super) run: RunDir,
    pub(super) config: TrainConfig,
    pub(super) train_set: Arc<data::Dataset>,
    pub(super) val_set: Arc<data::Dataset>,
    pub(super) resume: bool,
    /// What a new run's model took from the dataset ([`ResolvedModel::adapted`]).
    pub(super) adapted: Vec<String>,
}

/// The run directory opened once, under the writer's lock, with the config to train and the
/// datasets it names. A new run stores its config resolved against the dataset (classes,
/// channels, size); a resumed run reads its own. A run that stopped before its first checkpoint
/// holds only its config (and maybe metric lines): it has nothing to resume, so it starts over
/// from step 0 with the stored config when resumed, or with the given one when started again.
pub(super) fn open_run(start: Start) -> Result<OpenedRun, TrainError> {
    let resuming = matches!(start, Start::Resume(_));
    let run = RunDir::acquire(start.run_dir(), resuming)?;
    let restart = run.is_unstarted();
    let config = match start {
        Start::Resume(_) => run.config()?,
        Start::New(n) => n.config,
    };
    if restart {
        run.clear_unstarted()?;
    }
    let resume = resuming && !restart;
    let (train_set, val_set) = open_datasets(&config)?;
    let (config, adapted) = if resume {
        (config, Vec::new())
    } else {
        let resolved = resolve_model(&config.model, &train_set)?;
        let config = TrainConfig {
            model: resolved.model,
            ..config
        };
        run.write_config(&config)?;
        (config, resolved.adapted)
    };
    Ok(OpenedRun {
        run,
        config,
        train_set,
        val_set,
        resume,
        adapted,
    })
}

/// The train and validation sets a (validated) config names.
pub(super) fn open_datasets(
    config: &TrainConfig,
) -> Result<(Arc<data::Dataset>, Arc<data::Dataset>), TrainError> {
    Ok((
        Arc::new(data::open(&config.data.dataset, Split::Train)?),
        Arc::new(data::open(&config.data.dataset, Split::Val)?),
    ))
}

/// [`open_run`] for a data-parallel rank other than 0, once rank 0 has opened (or created)
/// the run: reads its config and datasets and writes nothing.
pub(super) fn open_run_follower(run_dir: &Path, resume: bool) -> Result<OpenedRun, TrainError> {
    let run = RunDir::open(run_dir)?;
    let config = run.config()?;
    let (train_set, val_set) = open_datasets(&config)?;
    Ok(OpenedRun {
        run,
        config,
        train_set,
        val_set,
        resume,
        adapted: Vec::new(),
    })
}

/// This process's device and precision; sets libtorch's threads (workers sharing a node split
/// its cores, as torchrun does) and the loader's workers.
pub(super) fn configure_device(
    config: &mut TrainConfig,
    group: Option<&ProcessGroup>,
    launch: Option<&LaunchEnv>,
) -> Result<(Device, Precision), TrainError> {
    let mut device = parse_device(&config.run.device)?;
    if let (Some(g), Device::Cuda(_)) = (group, device) {
        device = g.device();
    }
    let precision = config.run.precision()?;
    precision.check_device(device)?;
    if config.run.threads > 0 {
        tch::set_num_threads(config.run.threads as i32);
    } else if let Some(l) = launch {
        if std::env::var_os("OMP_NUM_THREADS").is_none() {
            tch::set_num_threads(cores_per_worker(l) as i32);
        }
    }
    if let Some(l) = launch {
        if config.data.workers == 0 {
            config.data.workers = cores_per_worker(l);
        }
    }
    if device.is_cuda() {
        tch::Cuda::cudnn_set_benchmark(true);
    }
    Ok((device, precision))
}
