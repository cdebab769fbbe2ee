//! Supervised training and distillation: one loop, with the teacher optional.

use crate::config::{DistillConfig, KdMethod, TrainConfig};
use crate::data::{self, Loader, LoaderConfig, Split, Transform};
use crate::executor::{host_to_tensor, Executor, Params};
use crate::losses::{cross_entropy, feature_distance, kd_kl, nkd, Target};
use crate::optim::{clip_grad_norm, cosine_lr, zero_grad, AdamW, Ema, Slot};
use crate::precision::{GradScaler, Precision, ScalerState, StepOutcome};
use crate::rundir::{EpochEval, RunDir, TrainerState, BEST, LAST};
use crate::teacher::TeacherSpec;
use crate::teacher_cache::{CacheStats, StreamSpec, TeacherOutputs};
use crate::{parse_device, TrainError};
use lkd_dist::{LaunchEnv, ProcessGroup, ReduceOp, DEFAULT_BUCKET_BYTES};
use lkd_models::checkpoint::StateDict;
use lkd_models::{Graph, ModelConfig};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;
use tch::{Device, Kind, TchError, Tensor};

/// What a finished (or stopped) invocation reports.
#[derive(Clone, Debug)]
pub struct Summary {
    pub steps: usize,
    pub epochs_done: usize,
    pub best_top1: f64,
    pub last_top1: Option<f64>,
    pub last_ema_top1: Option<f64>,
    pub images_per_s: f64,
    pub seconds: f64,
    pub skipped_files: usize,
    /// Share of step time spent waiting for data and in the teacher's forward pass.
    pub data_wait_share: f64,
    pub teacher_share: f64,
    pub finished: bool,
    /// Teacher-output cache use (distillation runs; this worker's stream).
    pub teacher_cache: Option<CacheStats>,
    /// Data-parallel workers (1 for a single process) and this process's rank. With several
    /// workers `images_per_s` counts the whole group's images; evaluation figures are rank
    /// 0's (the other ranks do not evaluate).
    pub world_size: usize,
    pub rank: usize,
    /// Optimizer steps skipped by the fp16 loss scaler (inf/NaN gradients) in this call.
    pub skipped_steps: usize,
}

/// State-file entries of the fp16 loss scaler.
const AMP_SCALE: &str = "amp.scale";
const AMP_TRACKER: &str = "amp.growth_tracker";

/// Accuracy of one model on a split.
#[derive(Clone, Copy, Debug)]
pub struct EvalResult {
    pub top1: f64,
    pub top5: f64,
    pub loss: f64,
    pub images: usize,
}

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

/// The feature-distillation projector's tensors in the state file and the optimizer.
pub const PROJECTOR_WEIGHT: &str = "distill.projector.weight";
pub const PROJECTOR_BIAS: &str = "distill.projector.bias";

struct Student {
    exec: Executor,
    params: Params,
    /// 1×1 conv projector (student → teacher channels) for feature distillation.
    projector: Option<(Tensor, Tensor)>,
    /// Parameters fine-tuning keeps fixed, and learning-rate scales other than 1.
    frozen: BTreeSet<String>,
    lr_scales: BTreeMap<String, f64>,
}

impl Student {
    /// The student with fine-tuning's frozen parameters (no gradient; their BatchNorm layers
    /// in eval mode) and learning-rate scales.
    fn new(
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
    fn all_tensors(&self) -> Vec<Tensor> {
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

    fn slots(&self) -> Vec<Slot> {
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

fn last_stage(graph: &Graph) -> Result<String, TrainError> {
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

/// Evaluates `params` on `loader`'s split: top-1/top-5 and mean CE.
pub fn evaluate(
    exec: &Executor,
    params: &Params,
    loader: &Loader,
    device: Device,
) -> Result<EvalResult, TrainError> {
    let (mut correct1, mut correct5, mut loss_sum, mut n) = (0i64, 0i64, 0f64, 0usize);
    tch::no_grad(|| -> Result<(), TrainError> {
        for batch in loader.epoch(0, 0)? {
            let batch = batch?;
            let x = batch.images.f_to_device(device)?;
            let y = batch.labels.f_to_device(device)?;
            let logits = exec.forward(params, &x, false, &[])?.logits;
            let b = y.size()[0] as usize;
            loss_sum +=
                cross_entropy(&logits, &Target::Hard(&y), 0.0)?.f_double_value(&[])? * b as f64;
            let k = logits.size()[1].min(5);
            let (_, top) = logits.f_topk(k, 1, true, true)?;
            let hit = top.f_eq_tensor(&y.f_unsqueeze(1)?)?;
            correct1 += hit
                .f_narrow(1, 0, 1)?
                .f_sum(Kind::Int64)?
                .f_int64_value(&[])?;
            correct5 += hit.f_sum(Kind::Int64)?.f_int64_value(&[])?;
            n += b;
        }
        Ok(())
    })?;
    let d = n.max(1) as f64;
    Ok(EvalResult {
        top1: 100.0 * correct1 as f64 / d,
        top5: 100.0 * correct5 as f64 / d,
        loss: loss_sum / d,
        images: n,
    })
}

fn state_tensors(
    student: &Student,
    opt: &AdamW,
    ema: Option<&Ema>,
) -> Result<StateDict, TrainError> {
    use crate::executor::tensor_to_host;
    let mut sd: StateDict = student
        .params
        .to_state_dict()?
        .into_iter()
        .map(|(k, v)| (format!("model.{k}"), v))
        .collect();
    if let Some((w, b)) = &student.projector {
        sd.insert(PROJECTOR_WEIGHT.into(), tensor_to_host(w)?);
        sd.insert(PROJECTOR_BIAS.into(), tensor_to_host(b)?);
    }
    for (k, t) in &opt.exp_avg {
        sd.insert(format!("optim.m.{k}"), tensor_to_host(t)?);
    }
    for (k, t) in &opt.exp_avg_sq {
        sd.insert(format!("optim.v.{k}"), tensor_to_host(t)?);
    }
    if let Some(e) = ema {
        for (k, v) in e.params.to_state_dict()? {
            sd.insert(format!("ema.{k}"), v);
        }
    }
    Ok(sd)
}

fn take_prefixed(sd: &StateDict, prefix: &str) -> StateDict {
    sd.iter()
        .filter_map(|(k, v)| k.strip_prefix(prefix).map(|n| (n.to_string(), v.clone())))
        .collect()
}

/// How a step's loss is formed: plain supervision, or distillation from a teacher's output
/// stream (live or replayed from the cache) with optional feature taps (student, teacher).
// One value per run, never moved in a loop: the size difference costs nothing.
#[allow(clippy::large_enum_variant)]
enum Mode {
    Supervised,
    Distill {
        cfg: DistillConfig,
        teacher: Box<TeacherOutputs>,
        fd_taps: Option<(String, String)>,
    },
}

/// Everything a checkpoint holds besides the config: student (+ projector), optimizer, EMA,
/// trainer state.
struct Trainee {
    student: Student,
    opt: AdamW,
    ema: Option<Ema>,
    state: TrainerState,
    /// The fp16 loss scaler's state when the checkpoint holds one.
    scaler_state: Option<ScalerState>,
}

/// Wall-clock accounting for the summary.
#[derive(Default)]
struct Clock {
    data_wait: f64,
    teacher: f64,
    step: f64,
    images: usize,
}

/// Trains (or distils) according to `config` into `run_dir`, or resumes it when `resume`.
///
/// Stages: [`open_run`] (run dir and resolved config), data loaders, [`Mode::new`] (teacher
/// stream), [`Trainee::load_or_init`], then per epoch the step loop ([`step_loss`], optimizer,
/// logging, checkpoints) and [`end_epoch`] (evaluation, best weights, checkpoint).
pub fn train(
    config: &TrainConfig,
    run_dir: &Path,
    resume: bool,
    progress: bool,
) -> Result<Summary, TrainError> {
    run_training(config, run_dir, resume, progress, None)
}

/// One worker of a data-parallel run described by `launch` (torchrun's variables), with
/// PyTorch DDP's semantics: the workers join a c10d group (Gloo on CPU, NCCL on CUDA with
/// `cuda:LOCAL_RANK`), start from rank 0's parameters and buffers, train on their rows of each
/// global batch (`optim.batch_size` per worker, so the global batch is `world_size` times it)
/// and average gradients before the optimizer step. BatchNorm normalises with each worker's
/// own batch statistics; running statistics are rank 0's, broadcast before every forward pass
/// (DDP's `broadcast_buffers`). Only rank 0 writes the run dir and evaluates. Every rank
/// records and replays its own teacher-output stream (the key holds rank and world size).
///
/// Resuming with another world size keeps the checkpoint's global batch: the per-worker batch
/// becomes `global / world_size` (an error when that is not a whole number), so the sample
/// stream, step count and learning-rate schedule continue unchanged.
pub fn train_parallel(
    config: &TrainConfig,
    run_dir: &Path,
    resume: bool,
    progress: bool,
    launch: &LaunchEnv,
) -> Result<Summary, TrainError> {
    run_training(config, run_dir, resume, progress, Some(launch))
}

/// Cores per worker when several workers share a node (torchrun's `LOCAL_WORLD_SIZE`).
fn cores_per_worker(launch: &LaunchEnv) -> usize {
    let local_world = std::env::var("LOCAL_WORLD_SIZE")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or(launch.world_size);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / local_world).max(1)
}

/// Rank 0's small integer, given to every rank.
fn share_from_main(group: &ProcessGroup, value: i64) -> Result<i64, TrainError> {
    let t = Tensor::f_from_slice(&[value])?.f_to_device(group.device())?;
    group.broadcast(&t, 0)?;
    Ok(t.f_to_device(Device::Cpu)?.f_int64_value(&[0])?)
}

/// Averages the loss sums waiting for the next metric line over the workers, so rank 0 logs
/// the global batch's mean loss (as one worker with the global batch would). Averaging is
/// linear, so doing it again later (another line, a checkpoint) stays correct.
fn average_pending(
    group: Option<&ProcessGroup>,
    state: &mut TrainerState,
) -> Result<(), TrainError> {
    let Some(g) = group.filter(|g| g.world_size() > 1) else {
        return Ok(());
    };
    if state.pending_loss.is_empty() {
        return Ok(());
    }
    let values: Vec<f64> = state.pending_loss.values().copied().collect();
    let t = Tensor::f_from_slice(&values)?.f_to_device(g.device())?;
    g.allreduce(&t, ReduceOp::Average)?;
    let averaged = Vec::<f64>::try_from(t.f_to_device(Device::Cpu)?)?;
    for (v, a) in state.pending_loss.values_mut().zip(averaged) {
        *v = a;
    }
    Ok(())
}

fn run_training(
    config: &TrainConfig,
    run_dir: &Path,
    resume: bool,
    progress: bool,
    launch: Option<&LaunchEnv>,
) -> Result<Summary, TrainError> {
    let group = join_group(config, run_dir, resume, launch)?;
    let opened = open_shared(group.as_ref(), config, run_dir, resume)?;
    Training::prepare(opened, group, launch, progress)?.run()
}

/// A data-parallel run joins its group before touching the run dir; a resumed run's device and
/// timeout are its stored config's (read only here).
fn join_group(
    config: &TrainConfig,
    run_dir: &Path,
    resume: bool,
    launch: Option<&LaunchEnv>,
) -> Result<Option<ProcessGroup>, TrainError> {
    let Some(launch) = launch else {
        return Ok(None);
    };
    let setup = if resume {
        RunDir::open(run_dir)
            .and_then(|r| r.config())
            .unwrap_or_else(|_| config.clone())
    } else {
        config.clone()
    };
    setup.validate()?;
    let device = worker_device(&setup.run.device, launch)?;
    let timeout = std::time::Duration::from_secs(setup.run.dist_timeout_s);
    Ok(Some(ProcessGroup::init(launch, device, timeout)?))
}

/// Rank 0 opens (or creates) the run; the other ranks then read what it holds.
fn open_shared(
    group: Option<&ProcessGroup>,
    config: &TrainConfig,
    run_dir: &Path,
    resume: bool,
) -> Result<OpenedRun, TrainError> {
    match group {
        None => open_run(config, run_dir, resume),
        Some(g) if g.is_main() => {
            let opened = open_run(config, run_dir, resume);
            let code = opened.as_ref().map_or(0, |o| 1 + i64::from(o.resume));
            share_from_main(g, code)?;
            opened
        }
        Some(g) => match share_from_main(g, 0)? {
            0 => Err(TrainError::Other(format!(
                "rank {}: rank 0 could not open the run {} (its error says why)",
                g.rank(),
                run_dir.display()
            ))),
            code => open_run_follower(run_dir, code == 2),
        },
    }
}

/// This process's device and precision; sets libtorch's threads (workers sharing a node split
/// its cores, as torchrun does) and the loader's workers.
fn configure_device(
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

/// The run's global batch: a resumed run keeps its checkpoint's whatever the world size, and
/// the per-worker batch in `opened.config` becomes `global / world`.
fn settle_global_batch(
    opened: &mut OpenedRun,
    world: usize,
    main: bool,
) -> Result<usize, TrainError> {
    let config = &mut opened.config;
    let global_batch = if opened.resume {
        match opened.run.load_trainer_state()?.global_batch {
            0 => config.optim.batch_size,
            g => g,
        }
    } else {
        config.optim.batch_size * world
    };
    if global_batch % world != 0 {
        return Err(TrainError::Config(format!(
            "run {} trains with a global batch of {global_batch}, which {world} workers cannot split evenly: \
             resume it with a world size that divides {global_batch}",
            opened.run.path.display()
        )));
    }
    if global_batch / world != config.optim.batch_size {
        if main {
            eprintln!(
                "resuming {} with {world} worker(s): batch {} per worker keeps the run's global batch of \
                 {global_batch} (the config's {} was per worker for another world size)",
                opened.run.path.display(),
                global_batch / world,
                config.optim.batch_size
            );
        }
        config.optim.batch_size = global_batch / world;
    }
    Ok(global_batch)
}

/// Optimizer steps per epoch, in all, and in the learning-rate warm-up.
struct Schedule {
    steps_per_epoch: usize,
    total_steps: usize,
    warmup_steps: usize,
}

impl Schedule {
    fn new(
        config: &TrainConfig,
        train_loader: &Loader,
        samples: usize,
        world: usize,
    ) -> Result<Self, TrainError> {
        let o = &config.optim;
        let steps_per_epoch = train_loader.batches_per_epoch() / o.update_freq;
        if steps_per_epoch == 0 {
            return Err(TrainError::Config(format!(
                "{} training samples give no full batch of {} x update_freq {}{}",
                samples,
                o.batch_size,
                o.update_freq,
                if world > 1 {
                    format!(" x {world} workers")
                } else {
                    String::new()
                }
            )));
        }
        let total_steps = steps_per_epoch.checked_mul(o.epochs).ok_or_else(|| {
            TrainError::Config(format!(
                "{} epochs of {steps_per_epoch} steps are too many to count",
                o.epochs
            ))
        })?;
        Ok(Self {
            steps_per_epoch,
            total_steps,
            warmup_steps: (o.warmup_epochs * steps_per_epoch as f64).round() as usize,
        })
    }
}

/// Whether an epoch's batches ran out or `run.max_steps` stopped the invocation.
#[derive(PartialEq)]
enum EpochEnd {
    Completed,
    StepLimit,
}

/// One invocation's training: the run, the process's place in its group, the data, the
/// student with its optimizer state, and the counters the summary reports.
struct Training {
    run: RunDir,
    config: TrainConfig,
    group: Option<ProcessGroup>,
    rank: usize,
    world: usize,
    /// Rank 0: writes the run dir and evaluates.
    main: bool,
    device: Device,
    precision: Precision,
    progress: bool,
    /// Off a terminal (a log file, CI, `nohup`): a plain line every `run.log_every` steps
    /// instead of the bars, which would print nothing there.
    plain_lines: bool,
    /// When and at which step (of this invocation) the last plain line was printed.
    last_line: (Instant, usize),
    train_loader: Loader,
    val_loader: Loader,
    schedule: Schedule,
    mode: Mode,
    student: Student,
    opt: AdamW,
    ema: Option<Ema>,
    state: TrainerState,
    scaler: GradScaler,
    /// What the optimizer updates (and the workers average the gradients of), built once.
    slots: Vec<Slot>,
    /// What the workers share from rank 0 before each forward pass.
    buffers: Vec<Tensor>,
    clock: Clock,
    steps_this_call: usize,
    skipped_steps: usize,
    last_eval: (Option<f64>, Option<f64>),
    started: Instant,
}

impl Training {
    /// Device, batch, loaders, schedule, teacher stream and the student (fresh or resumed);
    /// workers then all hold rank 0's weights.
    fn prepare(
        mut opened: OpenedRun,
        group: Option<ProcessGroup>,
        launch: Option<&LaunchEnv>,
        progress: bool,
    ) -> Result<Self, TrainError> {
        let main = group.as_ref().is_none_or(|g| g.is_main());
        let world = group.as_ref().map_or(1, |g| g.world_size());
        let rank = group.as_ref().map_or(0, |g| g.rank());
        let (device, precision) = configure_device(&mut opened.config, group.as_ref(), launch)?;
        let global_batch = settle_global_batch(&mut opened, world, main)?;
        let OpenedRun {
            run,
            config,
            train_set,
            val_set,
            resume,
            adapted,
        } = opened;
        if progress && main {
            for line in &adapted {
                eprintln!("{line}");
            }
        }

        if main && progress {
            eprintln!("{}", data::summary(&train_set, &val_set));
            if let Some(w) = data::imbalance_warning(&train_set, config.data.balanced_sampling) {
                eprintln!("{w}");
            }
        }
        let graph = config.model.build()?;
        if graph.num_classes != train_set.num_classes() {
            return Err(TrainError::Config(format!(
                "model.num_classes = {}, but dataset {} has {} classes: remove \
                 model.num_classes to follow the dataset",
                graph.num_classes,
                train_set.name(),
                train_set.num_classes()
            )));
        }
        let shard = data::Shard::new(rank, world)?;
        let train_loader = training_loader_sharded(&config, &graph, train_set.clone(), shard)?;
        let val_loader = Loader::new(
            val_set,
            Transform::eval(&graph.preprocess),
            None,
            loader_config(&config, config.optim.batch_size.max(64), false, false),
        )?;
        let schedule = Schedule::new(&config, &train_loader, train_set.len(), world)?;

        let (mode, projector_shape) =
            Mode::new(&config, &graph, &train_set, device, precision, shard)?;
        tch::manual_seed(config.run.seed as i64);
        let Trainee {
            student,
            opt,
            ema,
            mut state,
            scaler_state,
        } = Trainee::load_or_init(
            &run,
            &config,
            Executor::new(graph),
            projector_shape,
            resume,
            device,
            main,
        )?;
        state.global_batch = global_batch;
        let mut scaler = GradScaler::new(precision, config.run.grad_scaler.clone(), device)?;
        if let Some(s) = scaler_state.filter(|_| scaler.is_enabled()) {
            scaler.load_state(s)?;
        }
        let slots = student.slots();
        let buffers = student
            .exec
            .graph
            .params
            .iter()
            .filter(|p| !p.is_trainable())
            .map(|p| student.params.get(&p.name).shallow_clone())
            .collect();
        if let Some(g) = &group {
            g.broadcast_tensors(&student.all_tensors(), DEFAULT_BUCKET_BYTES)?;
        }
        if state.finished {
            return Err(TrainError::Config(format!(
                "run {} already finished all {} epochs",
                run.path.display(),
                config.optim.epochs
            )));
        }
        Ok(Self {
            run,
            config,
            group,
            rank,
            world,
            main,
            device,
            precision,
            progress,
            plain_lines: progress && main && !std::io::stderr().is_terminal(),
            last_line: (Instant::now(), 0),
            train_loader,
            val_loader,
            schedule,
            mode,
            student,
            opt,
            ema,
            state,
            scaler,
            slots,
            buffers,
            clock: Clock::default(),
            steps_this_call: 0,
            skipped_steps: 0,
            last_eval: (None, None),
            started: Instant::now(),
        })
    }

    /// Epochs until the last, or until `run.max_steps`; then the summary.
    fn run(mut self) -> Result<Summary, TrainError> {
        let mut stopped = false;
        while self.state.epoch < self.config.optim.epochs {
            if self.train_epoch()? == EpochEnd::StepLimit {
                stopped = true;
                break;
            }
            self.finish_epoch()?;
        }
        if let Some(g) = &self.group {
            g.barrier()?;
        }
        Ok(self.summary(stopped))
    }

    /// The step loop of the epoch in progress, from its next batch.
    fn train_epoch(&mut self) -> Result<EpochEnd, TrainError> {
        let epoch = self.state.epoch;
        let (update_freq, epochs) = (self.config.optim.update_freq, self.config.optim.epochs);
        let steps_per_epoch = self.schedule.steps_per_epoch;
        let bar = progress_bar(
            self.progress && self.main && !self.plain_lines,
            steps_per_epoch as u64,
            epoch,
            epochs,
        );
        bar.set_position(self.state.next_batch as u64 / update_freq as u64);
        // Throughput since the last line counts training only, not the evaluation before.
        self.last_line = (Instant::now(), self.steps_this_call);
        let mut batches = self.train_loader.epoch(epoch, self.state.next_batch)?;
        let mut micro = 0usize;
        let mut step_start = Instant::now();
        loop {
            let wait_start = Instant::now();
            let Some(batch) = batches.next() else { break };
            self.clock.data_wait += wait_start.elapsed().as_secs_f64();
            let batch = batch?;
            if self.state.next_batch / update_freq >= steps_per_epoch {
                break;
            }
            if let Err(e) = self.accumulate(&batch, micro) {
                bar.abandon();
                return Err(e);
            }
            micro += 1;
            if micro < update_freq {
                continue;
            }
            micro = 0;
            let (lr, grad_norm) = self.optimizer_step()?;
            let dt = step_start.elapsed().as_secs_f64();
            self.clock.step += dt;
            let ips =
                (self.config.optim.batch_size * update_freq * self.world) as f64 / dt.max(1e-9);
            step_start = Instant::now();
            let mean_loss = self.state.pending_loss["loss"] / self.state.pending_count as f64;
            bar.set_message(format!("loss {mean_loss:.4} lr {lr:.2e} {ips:.0} img/s"));
            bar.inc(1);
            if self
                .state
                .step
                .is_multiple_of(self.config.run.log_every.max(1))
            {
                let loss = self.log_step(epoch, lr, grad_norm, ips)?;
                if self.plain_lines {
                    let in_epoch = self.state.next_batch / update_freq;
                    self.print_line(epoch, in_epoch, loss, lr);
                }
            }
            let at_limit = self
                .config
                .run
                .max_steps
                .is_some_and(|m| self.steps_this_call >= m);
            let every = self.config.run.checkpoint_every;
            if (every > 0 && self.state.step.is_multiple_of(every)) || at_limit {
                self.save_checkpoint()?;
            }
            if at_limit {
                self.mode.flush()?;
                bar.abandon();
                return Ok(EpochEnd::StepLimit);
            }
        }
        drop(batches);
        self.mode.flush()?;
        bar.finish_and_clear();
        Ok(EpochEnd::Completed)
    }

    /// Forward and backward of one micro-batch; its loss terms join the pending averages.
    fn accumulate(&mut self, batch: &data::Batch, micro: usize) -> Result<(), TrainError> {
        let seed = self.config.run.seed;
        let update_freq = self.config.optim.update_freq;
        // Per-step seeding makes drop path reproducible across resume; each rank draws its
        // own masks.
        self.student.exec.set_step_seed(
            seed.wrapping_mul(1_000_003)
                .wrapping_add((self.state.step * update_freq + micro) as u64)
                ^ (self.rank as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15),
        );
        if let (Some(g), false) = (&self.group, self.buffers.is_empty()) {
            g.broadcast_tensors(&self.buffers, DEFAULT_BUCKET_BYTES)?;
        }
        let terms = step_loss(
            &mut self.mode,
            &self.student,
            batch,
            self.state.epoch,
            self.config.optim.label_smoothing,
            self.device,
            self.precision,
            &mut self.clock,
        )?;
        let mut loss: Option<Tensor> = None;
        for (_, t) in &terms {
            loss = Some(match loss {
                None => t.shallow_clone(),
                Some(sum) => sum.f_add(t)?,
            });
        }
        let loss = loss.ok_or_else(|| TrainError::Other("no loss terms".into()))?;
        let loss_value = loss.f_double_value(&[])?;
        let term_values: Vec<(&str, f64)> = terms
            .iter()
            .map(|(n, t)| Ok((*n, t.f_double_value(&[])?)))
            .collect::<Result<_, TrainError>>()?;
        if !loss_value.is_finite() {
            let detail = term_values
                .iter()
                .map(|(n, v)| format!("{n}={v}"))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(TrainError::NonFinite(format!(
                "loss is {loss_value} at epoch {}, step {}{} ({detail}); training stopped, the last good checkpoint in {} is kept",
                self.state.epoch,
                self.state.step,
                if self.world > 1 { format!(" on rank {}", self.rank) } else { String::new() },
                self.run.path.display()
            )));
        }
        self.scaler
            .scale(&loss.f_div_scalar(update_freq as f64)?)?
            .f_backward()?;
        self.clock.images += batch.len();
        let state = &mut self.state;
        *state.pending_loss.entry("loss".into()).or_default() += loss_value;
        for (n, v) in &term_values {
            *state.pending_loss.entry(format!("loss_{n}")).or_default() += v;
        }
        state.pending_count += 1;
        state.next_batch += 1;
        Ok(())
    }

    /// DDP's order: average gradients, then unscale, clip and step (skipped on inf/NaN under
    /// fp16 scaling), then the EMA. Returns the step's learning rate and gradient norm.
    fn optimizer_step(&mut self) -> Result<(f64, Option<f64>), TrainError> {
        let slot_tensors: Vec<&Tensor> = self.slots.iter().map(|s| &s.tensor).collect();
        if let Some(g) = &self.group {
            g.allreduce_gradients(&slot_tensors, DEFAULT_BUCKET_BYTES)?;
        }
        let o = &self.config.optim;
        let s = &self.schedule;
        let lr = cosine_lr(
            self.state.step,
            s.total_steps,
            s.warmup_steps,
            o.lr,
            o.min_lr,
        );
        let slots = &self.slots;
        self.scaler.unscale(&slot_tensors)?;
        let grad_norm = o.clip_grad.map(|c| clip_grad_norm(slots, c)).transpose()?;
        let opt = &mut self.opt;
        let outcome = self
            .scaler
            .step(&slot_tensors, || Ok(opt.step(slots, lr)?))?;
        zero_grad(slots)?;
        if outcome == StepOutcome::Applied {
            if let Some(e) = self.ema.as_mut() {
                e.update(&self.student.exec.graph, &self.student.params)?;
            }
        } else {
            self.skipped_steps += 1;
        }
        self.state.step += 1;
        self.steps_this_call += 1;
        sync(self.device);
        Ok((lr, grad_norm))
    }

    /// A metric line with the losses averaged since the last one (over all workers); returns
    /// that average of the total loss.
    fn log_step(
        &mut self,
        epoch: usize,
        lr: f64,
        grad_norm: Option<f64>,
        ips: f64,
    ) -> Result<f64, TrainError> {
        average_pending(self.group.as_ref(), &mut self.state)?;
        let state = &mut self.state;
        let loss = state.pending_loss.get("loss").copied().unwrap_or(f64::NAN)
            / state.pending_count.max(1) as f64;
        let mut line = json!({"step": state.step, "epoch": epoch, "lr": lr, "img_per_s": ips});
        for (n, v) in &state.pending_loss {
            line[n] = json!(v / state.pending_count as f64);
        }
        if let Some(g) = grad_norm {
            line["grad_norm"] = json!(g);
        }
        if self.scaler.is_enabled() {
            line["loss_scale"] = json!(self.scaler.scale_value()?);
            line["skipped_steps"] = json!(self.skipped_steps);
        }
        if self.world > 1 {
            line["world_size"] = json!(self.world);
        }
        if self.main {
            self.run.log(&line)?;
        }
        state.pending_loss.clear();
        state.pending_count = 0;
        Ok(loss)
    }

    /// The plain progress line: step, epoch progress, loss, lr, throughput since the last line
    /// and the time left at this invocation's pace, e.g.
    /// `step 40/936  epoch 1/2 40/468 (9%)  loss 1.8421  lr 3.99e-3  412 img/s  eta 0:02:11`.
    fn print_line(&mut self, epoch: usize, in_epoch: usize, loss: f64, lr: f64) {
        let (since, steps_then) = self.last_line;
        let steps = self.steps_this_call - steps_then;
        let images =
            steps * self.config.optim.batch_size * self.config.optim.update_freq * self.world;
        let ips = images as f64 / since.elapsed().as_secs_f64().max(1e-9);
        let per_step = self.started.elapsed().as_secs_f64() / self.steps_this_call.max(1) as f64;
        let left = self.schedule.total_steps.saturating_sub(self.state.step);
        let eta = (per_step * left as f64).round() as u64;
        let per_epoch = self.schedule.steps_per_epoch;
        eprintln!(
            "step {}/{}  epoch {}/{} {in_epoch}/{per_epoch} ({:.0}%)  loss {loss:.4}  lr {lr:.2e}  {ips:.0} img/s  eta {}:{:02}:{:02}",
            self.state.step,
            self.schedule.total_steps,
            epoch + 1,
            self.config.optim.epochs,
            100.0 * in_epoch as f64 / per_epoch as f64,
            eta / 3600,
            eta / 60 % 60,
            eta % 60
        );
        self.last_line = (Instant::now(), self.steps_this_call);
    }

    /// Writes `last` weights and the state file (rank 0; the others only average losses).
    fn save_checkpoint(&mut self) -> Result<(), TrainError> {
        average_pending(self.group.as_ref(), &mut self.state)?;
        if !self.main {
            return Ok(());
        }
        let state = &mut self.state;
        state.metrics_len = self.run.metrics_len();
        state.adam_step = self.opt.step;
        self.run
            .save_weights(LAST, &self.student.params.to_state_dict()?)?;
        let mut tensors = state_tensors(&self.student, &self.opt, self.ema.as_ref())?;
        if self.scaler.is_enabled() {
            let s = self.scaler.state()?;
            tensors.insert(
                AMP_SCALE.into(),
                lkd_models::HostTensor::f32(vec![1], vec![s.scale as f32]),
            );
            tensors.insert(
                AMP_TRACKER.into(),
                lkd_models::HostTensor::i64(vec![1], vec![s.growth_tracker]),
            );
        }
        self.run.save_state(&tensors, state)
    }

    /// Evaluation and best weights (rank 0), the epoch's checkpoint, then every rank waits
    /// for rank 0.
    fn finish_epoch(&mut self) -> Result<(), TrainError> {
        self.last_eval = end_epoch(
            &self.run,
            &self.student,
            self.ema.as_ref(),
            &self.val_loader,
            &self.train_loader,
            &mut self.state,
            self.device,
            self.progress,
            self.config.optim.epochs,
            self.config.run.keep_epoch_weights,
            self.main,
        )?;
        self.save_checkpoint()?;
        if let Some(g) = &self.group {
            g.barrier()?;
        }
        Ok(())
    }

    fn summary(self, stopped: bool) -> Summary {
        let clock = &self.clock;
        let state = &self.state;
        Summary {
            steps: state.step,
            epochs_done: state.epoch,
            best_top1: state.best_top1,
            last_top1: self.last_eval.0,
            last_ema_top1: self.last_eval.1,
            images_per_s: (clock.images * self.world) as f64 / clock.step.max(1e-9),
            seconds: self.started.elapsed().as_secs_f64(),
            skipped_files: self.train_loader.stats().skipped + self.val_loader.stats().skipped,
            data_wait_share: clock.data_wait / clock.step.max(1e-9),
            teacher_share: clock.teacher / clock.step.max(1e-9),
            finished: !stopped && state.finished,
            teacher_cache: match self.mode {
                Mode::Distill { teacher, .. } => Some(teacher.stats),
                Mode::Supervised => None,
            },
            world_size: self.world,
            rank: self.rank,
            skipped_steps: self.skipped_steps,
        }
    }
}

/// The device of a data-parallel worker: CPU, or `cuda:LOCAL_RANK` whatever CUDA index the
/// config names (one GPU per worker, as torchrun launches).
fn worker_device(configured: &str, launch: &LaunchEnv) -> Result<Device, TrainError> {
    match parse_device(configured)? {
        Device::Cuda(_) => parse_device(&format!("cuda:{}", launch.local_rank)),
        other => Ok(other),
    }
}

/// An opened run: its directory, the config it runs (stored or resolved), the train and
/// validation sets, and whether it resumes.
struct OpenedRun {
    run: RunDir,
    config: TrainConfig,
    train_set: Arc<data::Dataset>,
    val_set: Arc<data::Dataset>,
    resume: bool,
    /// What a new run's model took from the dataset ([`ResolvedModel::adapted`]).
    adapted: Vec<String>,
}

/// The run directory and the config to train with, and the datasets it names. A new run
/// stores its config resolved against the dataset (classes, channels, size); a resumed run
/// reads its own. A run that stopped before its first checkpoint holds only its config (and
/// maybe metric lines): it has nothing to resume, so it starts over from step 0 with the stored
/// config when resumed, or with the given one when started again.
fn open_run(config: &TrainConfig, run_dir: &Path, resume: bool) -> Result<OpenedRun, TrainError> {
    let lock = RunDir::lock(run_dir, resume)?;
    let never_checkpointed =
        RunDir::open(run_dir).is_ok_and(|r| !r.file(crate::rundir::STATE).exists());
    let (config, resume) = if never_checkpointed {
        let cfg = if resume {
            RunDir::open(run_dir)?.config()?
        } else {
            config.clone()
        };
        RunDir::clear_unstarted(run_dir)?;
        (cfg, false)
    } else if resume {
        (RunDir::open(run_dir)?.config()?, true)
    } else {
        (config.clone(), false)
    };
    let (train_set, val_set) = checked_datasets(&config)?;
    let mut adapted = Vec::new();
    let (run, config) = if resume {
        (RunDir::open(run_dir)?, config)
    } else {
        let mut cfg = config;
        let resolved = resolve_model(&cfg.model, &train_set)?;
        cfg.model = resolved.model;
        adapted = resolved.adapted;
        (RunDir::create(run_dir, &cfg)?, cfg)
    };
    Ok(OpenedRun {
        run: run.holding(lock),
        config,
        train_set,
        val_set,
        resume,
        adapted,
    })
}

/// The train and validation sets `config` names, once it is known to be valid.
fn checked_datasets(
    config: &TrainConfig,
) -> Result<(Arc<data::Dataset>, Arc<data::Dataset>), TrainError> {
    config.validate()?;
    Ok((
        Arc::new(data::open(&config.data.dataset, Split::Train)?),
        Arc::new(data::open(&config.data.dataset, Split::Val)?),
    ))
}

/// [`open_run`] for a data-parallel rank other than 0, once rank 0 has opened (or created)
/// the run: reads its config and datasets and writes nothing.
fn open_run_follower(run_dir: &Path, resume: bool) -> Result<OpenedRun, TrainError> {
    let run = RunDir::open(run_dir)?;
    let config = run.config()?;
    let (train_set, val_set) = checked_datasets(&config)?;
    Ok(OpenedRun {
        run,
        config,
        train_set,
        val_set,
        resume,
        adapted: Vec::new(),
    })
}

impl Mode {
    /// Supervised, or the teacher described (not loaded: the output cache may hold all it
    /// needs) and its output stream opened. Also returns the feature projector's (student,
    /// teacher) channels when features are distilled.
    fn new(
        config: &TrainConfig,
        graph: &Graph,
        train_set: &data::Dataset,
        device: Device,
        precision: Precision,
        shard: data::Shard,
    ) -> Result<(Self, Option<(usize, usize)>), TrainError> {
        let Some(d) = config
            .distill
            .clone()
            .filter(|d| d.method != KdMethod::None)
        else {
            return Ok((Mode::Supervised, None));
        };
        let spec = TeacherSpec::resolve(&d)?;
        if d.method.uses_logits() && spec.graph.num_classes != graph.num_classes {
            return Err(TrainError::Config(format!(
                "teacher predicts {} classes, student {}",
                spec.graph.num_classes, graph.num_classes
            )));
        }
        let fd_taps = if d.method.uses_features() {
            Some((last_stage(graph)?, last_stage(&spec.graph)?))
        } else {
            None
        };
        let projector = match &fd_taps {
            Some((s, t)) => {
                let [h, w] = graph.input_size;
                let cs = graph.infer_shapes(1, h, w)?[graph.taps[s]][1];
                let [th, tw] = spec.graph.input_size;
                let ct = spec.graph.infer_shapes(1, th, tw)?[spec.graph.taps[t]][1];
                Some((cs, ct))
            }
            None => None,
        };
        let stream = StreamSpec {
            setting: &d.cache,
            topk: d.cache_topk,
            taps: fd_taps.iter().map(|(_, t)| t.clone()).collect(),
            dataset: train_set,
            augment: &config.data.augment,
            mixup: config.data.mixup.as_ref(),
            student_preprocess: &graph.preprocess,
            batch_size: config.optim.batch_size,
            seed: config.run.seed,
            precision,
            shard,
            balanced: config.data.balanced_sampling,
        };
        let teacher = Box::new(TeacherOutputs::open(spec, stream, device)?);
        Ok((
            Mode::Distill {
                cfg: d,
                teacher,
                fd_taps,
            },
            projector,
        ))
    }

    /// Writes a teacher-output shard being recorded (epoch end or a stop).
    fn flush(&mut self) -> Result<(), TrainError> {
        match self {
            Mode::Distill { teacher, .. } => teacher.flush(),
            Mode::Supervised => Ok(()),
        }
    }
}

impl Trainee {
    /// Fresh weights (seeded), or everything back from the run's state file. Only the run's
    /// `writer` (rank 0) drops metric lines past the checkpoint.
    fn load_or_init(
        run: &RunDir,
        config: &TrainConfig,
        exec: Executor,
        projector_shape: Option<(usize, usize)>,
        resume: bool,
        device: Device,
        writer: bool,
    ) -> Result<Self, TrainError> {
        let mut opt = AdamW::new(config.optim.weight_decay);
        if !resume {
            let params = match &config.finetune.init {
                Some(source) => {
                    let (params, record) = crate::finetune::init_from(
                        &exec.graph,
                        source,
                        config.finetune.head_init_scale,
                        device,
                        config.run.seed,
                    )?;
                    if writer {
                        eprintln!("init: {} (sha256 {})", record.source, &record.sha256[..16]);
                        for a in &record.adaptations {
                            eprintln!("  {a}");
                        }
                        lkd_util::write_atomic(
                            &run.file(crate::finetune::INIT_RECORD),
                            serde_json::to_string_pretty(&record)
                                .expect("plain record")
                                .as_bytes(),
                        )?;
                    }
                    params
                }
                None => Params::init(&exec.graph, device, config.run.seed)?,
            };
            let projector = projector_shape.map(|(cs, ct)| -> Result<_, TchError> {
                // PyTorch's Conv2d default init, from our own seeded RNG.
                let bound = 1.0 / (cs as f32).sqrt();
                let mut rng = StdRng::seed_from_u64(config.run.seed ^ 0x70726f6a);
                let mut draw = |n: usize| {
                    (0..n)
                        .map(|_| rng.gen_range(-bound..bound))
                        .collect::<Vec<f32>>()
                };
                let w = Tensor::f_from_slice(&draw(ct * cs))?
                    .f_reshape([ct as i64, cs as i64, 1, 1])?
                    .f_to_device(device)?
                    .f_set_requires_grad(true)?;
                let b = Tensor::f_from_slice(&draw(ct))?
                    .f_to_device(device)?
                    .f_set_requires_grad(true)?;
                Ok((w, b))
            });
            let projector = projector.transpose()?;
            let ema = config
                .ema
                .as_ref()
                .map(|e| Ema::new(&params, e.decay))
                .transpose()?;
            return Ok(Self {
                student: Student::new(exec, params, projector, config)?,
                opt,
                ema,
                state: TrainerState::default(),
                scaler_state: None,
            });
        }
        let (sd, state) = run.load_state()?;
        if writer {
            run.truncate_metrics(state.metrics_len)?;
        }
        let params = Params::from_state_dict(&exec.graph, &take_prefixed(&sd, "model."), device)?;
        let tensor = |name: &str| -> Result<Tensor, TrainError> {
            let t = sd.get(name).ok_or_else(|| {
                TrainError::Other(format!(
                    "{}: state file has no `{name}`",
                    run.file(crate::rundir::STATE).display()
                ))
            })?;
            Ok(host_to_tensor(t, device)?.f_set_requires_grad(true)?)
        };
        let projector = match projector_shape {
            Some(_) => Some((tensor(PROJECTOR_WEIGHT)?, tensor(PROJECTOR_BIAS)?)),
            None => None,
        };
        for (k, v) in take_prefixed(&sd, "optim.m.") {
            opt.exp_avg.insert(k, host_to_tensor(&v, device)?);
        }
        for (k, v) in take_prefixed(&sd, "optim.v.") {
            opt.exp_avg_sq.insert(k, host_to_tensor(&v, device)?);
        }
        opt.step = state.adam_step;
        let ema = match &config.ema {
            Some(e) => Some(Ema {
                decay: e.decay,
                params: Params::from_state_dict(&exec.graph, &take_prefixed(&sd, "ema."), device)?,
            }),
            None => None,
        };
        let scaler_state = match (sd.get(AMP_SCALE), sd.get(AMP_TRACKER)) {
            (Some(scale), Some(tracker)) => match (&scale.data, &tracker.data) {
                (lkd_models::HostData::F32(s), lkd_models::HostData::I64(t))
                    if s.len() == 1 && t.len() == 1 =>
                {
                    Some(ScalerState {
                        scale: f64::from(s[0]),
                        growth_tracker: t[0],
                    })
                }
                _ => {
                    return Err(TrainError::Other(format!(
                        "{}: malformed loss-scaler state ({AMP_SCALE}, {AMP_TRACKER})",
                        run.file(crate::rundir::STATE).display()
                    )))
                }
            },
            _ => None,
        };
        Ok(Self {
            student: Student::new(exec, params, projector, config)?,
            opt,
            ema,
            state,
            scaler_state,
        })
    }
}

/// The named loss terms of one micro-batch: student forward, then the teacher's outputs from
/// its stream and the method's terms.
#[allow(clippy::too_many_arguments)]
fn step_loss(
    mode: &mut Mode,
    student: &Student,
    batch: &data::Batch,
    epoch: usize,
    label_smoothing: f64,
    device: Device,
    precision: Precision,
    clock: &mut Clock,
) -> Result<Vec<(&'static str, Tensor)>, TrainError> {
    let x = batch.images.f_to_device(device)?;
    let labels = batch.labels.f_to_device(device)?;
    let soft = batch
        .targets
        .as_ref()
        .map(|t| t.f_to_device(device))
        .transpose()?;
    let target = match &soft {
        Some(s) => Target::Soft(s),
        None => Target::Hard(&labels),
    };
    // Soft (Mixup) targets already carry the smoothing.
    let smoothing = if soft.is_some() { 0.0 } else { label_smoothing };
    let (cfg, teacher, fd_taps) = match mode {
        Mode::Supervised => {
            let logits = autocast(device, precision, || {
                student.exec.forward(&student.params, &x, true, &[])
            })??
            .logits
            .f_to_kind(Kind::Float)?;
            return Ok(vec![("ce", cross_entropy(&logits, &target, smoothing)?)]);
        }
        Mode::Distill {
            cfg,
            teacher,
            fd_taps,
        } => (cfg, teacher, fd_taps),
    };
    let stage_tap: Vec<&str> = fd_taps.iter().map(|(s, _)| s.as_str()).collect();
    let out = autocast(device, precision, || {
        student.exec.forward(&student.params, &x, true, &stage_tap)
    })??;
    let logits = out.logits.f_to_kind(Kind::Float)?;
    let tt = Instant::now();
    let (t_logits, t_maps) = teacher.get(
        epoch,
        batch.index,
        &batch.samples,
        &x,
        &student.exec.graph.preprocess,
    )?;
    sync(device);
    clock.teacher += tt.elapsed().as_secs_f64();
    let alpha = cfg.alpha();
    let mut terms: Vec<(&'static str, Tensor)> = vec![];
    match cfg.method {
        KdMethod::Kd | KdMethod::KdFd => {
            terms.push((
                "kd",
                kd_kl(&logits, &t_logits, cfg.temperature)?.f_mul_scalar(alpha)?,
            ));
            // Upstream's KD uses plain CE next to the teacher term.
            terms.push((
                "ce",
                cross_entropy(&logits, &target, 0.0)?.f_mul_scalar(1.0 - alpha)?,
            ));
        }
        KdMethod::Nkd | KdMethod::NkdFd => terms.push((
            "nkd",
            nkd(
                &logits,
                &t_logits,
                &target.labels()?,
                cfg.temperature,
                alpha,
            )?,
        )),
        KdMethod::Fd => terms.push(("ce", cross_entropy(&logits, &target, smoothing)?)),
        KdMethod::None => {
            return Err(TrainError::Config(
                "distillation method none has no teacher terms".into(),
            ))
        }
    }
    if let (Some((s_tap, _)), Some((w, b)), Some(t_map)) =
        (fd_taps, &student.projector, t_maps.first())
    {
        let s_map = out.taps[s_tap.as_str()].f_to_kind(Kind::Float)?.f_conv2d(
            w,
            Some(b),
            [1, 1],
            [0, 0],
            [1, 1],
            1,
        )?;
        terms.push((
            "fd",
            feature_distance(&s_map, &t_map.f_to_kind(Kind::Float)?, cfg.fd_loss)?
                .f_mul_scalar(cfg.fd_weight)?,
        ));
    }
    Ok(terms)
}

/// Epoch end: evaluates the student and its EMA, logs, keeps the better as best weights, and
/// advances the state. Returns (student, EMA) top-1. Only the run's writer (rank 0) evaluates;
/// the other ranks only advance their state.
#[allow(clippy::too_many_arguments)]
fn end_epoch(
    run: &RunDir,
    student: &Student,
    ema: Option<&Ema>,
    val_loader: &Loader,
    train_loader: &Loader,
    state: &mut TrainerState,
    device: Device,
    progress: bool,
    epochs: usize,
    keep_epoch_weights: bool,
    writer: bool,
) -> Result<(Option<f64>, Option<f64>), TrainError> {
    let epoch = state.epoch;
    if !writer {
        state.epoch += 1;
        state.next_batch = 0;
        state.finished = state.epoch >= epochs;
        return Ok((None, None));
    }
    let res = evaluate(&student.exec, &student.params, val_loader, device)?;
    run.record_skipped(&[
        ("train", train_loader.skipped()),
        ("val", val_loader.skipped()),
    ])?;
    let ema_res = ema
        .map(|e| evaluate(&student.exec, &e.params, val_loader, device))
        .transpose()?;
    run.log_eval(&EpochEval {
        epoch,
        step: state.step,
        top1: res.top1,
        top5: res.top5,
        val_loss: res.loss,
        skipped_files: train_loader.stats().skipped + val_loader.stats().skipped,
        ema_top1: ema_res.as_ref().map(|e| e.top1),
        ema_top5: ema_res.as_ref().map(|e| e.top5),
    })?;
    let (best_here, best_params) = match (&ema_res, ema) {
        (Some(e), Some(em)) if e.top1 > res.top1 => (e.top1, &em.params),
        _ => (res.top1, &student.params),
    };
    if keep_epoch_weights {
        run.save_weights(
            &crate::rundir::epoch_weights_file(epoch + 1),
            &best_params.to_state_dict()?,
        )?;
    }
    if state.best_epoch.is_none() || best_here > state.best_top1 {
        state.best_top1 = best_here;
        state.best_epoch = Some(epoch);
        run.save_weights(BEST, &best_params.to_state_dict()?)?;
    }
    if progress {
        eprintln!(
            "epoch {}/{}: top-1 {:.2}%{} (best {:.2}%)",
            epoch + 1,
            epochs,
            res.top1,
            ema_res
                .map(|e| format!(", EMA {:.2}%", e.top1))
                .unwrap_or_default(),
            state.best_top1
        );
    }
    state.epoch += 1;
    state.next_batch = 0;
    state.finished = state.epoch >= epochs;
    Ok((Some(res.top1), ema_res.map(|e| e.top1)))
}

fn loader_config(
    config: &TrainConfig,
    batch_size: usize,
    shuffle: bool,
    drop_last: bool,
) -> LoaderConfig {
    LoaderConfig {
        batch_size,
        workers: config.data.workers,
        prefetch: config.data.prefetch,
        seed: config.run.seed,
        shuffle,
        drop_last,
        balanced: shuffle && config.data.balanced_sampling,
    }
}

/// The training stream of `config` for a model `graph`: what a run trains on, batch for batch,
/// and what the teacher-output cache is keyed by.
pub fn training_loader(
    config: &TrainConfig,
    graph: &Graph,
    train_set: Arc<data::Dataset>,
) -> Result<Loader, TrainError> {
    training_loader_sharded(config, graph, train_set, data::Shard::whole())
}

/// [`training_loader`] for one data-parallel worker: its rows of each global batch.
pub fn training_loader_sharded(
    config: &TrainConfig,
    graph: &Graph,
    train_set: Arc<data::Dataset>,
    shard: data::Shard,
) -> Result<Loader, TrainError> {
    Ok(Loader::sharded(
        train_set,
        Transform::train(&config.data.augment, &graph.preprocess),
        config
            .data
            .mixup
            .clone()
            .map(|m| m.with_classes(graph.num_classes, config.optim.label_smoothing)),
        loader_config(config, config.optim.batch_size, true, true),
        shard,
    )?)
}

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
    let summary = train(config, dir, resumed, progress)?;
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
fn find_kept_run(parent: &Path, config: &TrainConfig) -> Option<std::path::PathBuf> {
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

/// Waits for queued CUDA kernels so wall-clock phases are attributed correctly.
fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// Runs `f` under autocast in `precision`'s dtype on `device` (plain fp32: no autocast). The
/// dtype is set through lkd-dist on this thread each time: tch cannot set it, and CUDA's
/// default would be fp16 whatever was asked.
pub(crate) fn autocast<T>(
    device: Device,
    precision: Precision,
    f: impl FnOnce() -> T,
) -> Result<T, TrainError> {
    let dtype = match precision {
        Precision::Fp32 => return Ok(f()),
        Precision::Bf16 => lkd_dist::AutocastDtype::BFloat16,
        Precision::Fp16 => lkd_dist::AutocastDtype::Float16,
    };
    lkd_dist::set_autocast_dtype(device, dtype)?;
    Ok(lkd_dist::with_autocast(device, f)?)
}

fn progress_bar(enabled: bool, len: u64, epoch: usize, epochs: usize) -> indicatif::ProgressBar {
    if !enabled {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "epoch {prefix} [{bar:30}] {pos}/{len} {msg} ({eta})",
        )
        .unwrap()
        .progress_chars("=> "),
    );
    bar.set_prefix(format!("{}/{}", epoch + 1, epochs));
    bar
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
