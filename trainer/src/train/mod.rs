//! Supervised training and distillation: one loop, with the teacher optional. A run reads
//! top to bottom through the stages, one file each:
//!
//! - [`start`]: the run directory opened (or created) once, under its writer's lock, the config
//!   it runs and the datasets; this process's device and precision.
//! - [`parallel`]: a data-parallel worker's group, batch split and shared values.
//! - [`student`]: the model being trained, with fine-tuning's frozen parameters.
//! - [`checkpoint`]: what a checkpoint holds, written and read back on resume.
//! - [`step`]: one optimizer step: the teacher's stream, the loss, the update.
//! - [`eval`]: evaluation, best weights, the end of an epoch.
//! - [`log`]: metric lines, plain progress lines and bars.
//! - [`loaders`]: the training and validation streams.
//! - [`reuse`]: runs and teachers kept and reused, teacher-output precomputation, loading a
//!   model for evaluation.

use crate::config::TrainConfig;
use crate::data::{self, Loader, Transform};
use crate::executor::Executor;
use crate::optim::{AdamW, Ema, Slot};
use crate::precision::{GradScaler, Precision};
use crate::rundir::{RunDir, TrainerState};
use crate::teacher_cache::CacheStats;
use crate::TrainError;
use lkd_dist::{LaunchEnv, ProcessGroup, DEFAULT_BUCKET_BYTES};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tch::{Device, Tensor};

mod checkpoint;
mod eval;
mod loaders;
mod log;
mod parallel;
mod reuse;
mod start;
mod step;
mod student;

use checkpoint::*;
pub use eval::{evaluate, EvalResult};
use loaders::*;
pub use loaders::{training_loader, training_loader_sharded};
use log::*;
use parallel::*;
pub use reuse::{
    kept_teacher, load_model, precompute_teacher_outputs, train_or_reuse, train_or_reuse_shared,
    RunOutcome,
};
use start::*;
pub use start::{resolve_model, ResolvedModel};
pub(crate) use step::autocast;
use step::*;
use student::*;
pub use student::{PROJECTOR_BIAS, PROJECTOR_WEIGHT};

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

/// Wall-clock accounting for the summary.
#[derive(Default)]
struct Clock {
    data_wait: f64,
    teacher: f64,
    step: f64,
    images: usize,
}

/// Whether an epoch's batches ran out or `run.max_steps` stopped the invocation.
#[derive(PartialEq)]
enum EpochEnd {
    Completed,
    StepLimit,
}

/// How a run starts: a new run of a validated config in a directory, or the run a directory
/// holds, resumed with its own stored config.
pub enum Start {
    New(Box<NewRun>),
    Resume(PathBuf),
}

/// A new run: its config, validated when the run is described ([`Start::new`]), and its directory.
pub struct NewRun {
    config: TrainConfig,
    run_dir: PathBuf,
}

impl Start {
    /// A new run of `config` in `run_dir`; every config field is checked here, once.
    pub fn new(config: &TrainConfig, run_dir: impl AsRef<Path>) -> Result<Self, TrainError> {
        config.validate()?;
        Ok(Start::New(Box::new(NewRun {
            config: config.clone(),
            run_dir: run_dir.as_ref().to_path_buf(),
        })))
    }

    /// The run in `run_dir`, resumed.
    pub fn resume(run_dir: impl AsRef<Path>) -> Self {
        Start::Resume(run_dir.as_ref().to_path_buf())
    }

    pub fn run_dir(&self) -> &Path {
        match self {
            Start::New(n) => &n.run_dir,
            Start::Resume(dir) => dir,
        }
    }
}

/// Trains (or distils) a run from its [`Start`].
///
/// Stages: [`open_run`] (run dir opened once, the config it runs, datasets), data loaders,
/// [`Mode::new`] (teacher stream), [`Trainee::load_or_init`], then per epoch the step loop
/// ([`step_loss`], optimizer, logging, checkpoints) and [`end_epoch`] (evaluation, best weights,
/// checkpoint).
pub fn train(start: Start, progress: bool) -> Result<Summary, TrainError> {
    run_training(start, progress, None)
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
    start: Start,
    progress: bool,
    launch: &LaunchEnv,
) -> Result<Summary, TrainError> {
    run_training(start, progress, Some(launch))
}

fn run_training(
    start: Start,
    progress: bool,
    launch: Option<&LaunchEnv>,
) -> Result<Summary, TrainError> {
    let group = join_group(&start, launch)?;
    let opened = open_shared(group.as_ref(), start)?;
    Training::prepare(opened, group, launch, progress)?.run()
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
