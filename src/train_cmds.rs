//! `lkd train`, `lkd distill`, `lkd eval`, `lkd erf`.

use anyhow::{bail, Context, Result};
use clap::Args;
use lkd_models::ModelConfig;
use lkd_study::plots::write_heatmaps;
use lkd_trainer::config::{DistillConfig, KdMethod, TrainConfig};
use lkd_trainer::data::{self, Loader, LoaderConfig, Split, Transform};
use lkd_trainer::lkd_dist::LaunchEnv;
use lkd_trainer::train::{evaluate, load_model, train, train_parallel, Start, Summary};
use lkd_trainer::{parse_device, rundir::RunDir};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::Duration;

/// Flags shared by `train` and `distill`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// TOML config (see configs/); flags below override it.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Output run directory.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Continue an interrupted run from its last checkpoint (its own config is used).
    #[arg(long, conflicts_with_all = ["config", "out"])]
    resume: Option<PathBuf>,
    /// Model preset (overrides [model].preset).
    #[arg(long)]
    preset: Option<String>,
    #[arg(long)]
    epochs: Option<usize>,
    #[arg(long)]
    batch_size: Option<usize>,
    #[arg(long)]
    lr: Option<f64>,
    /// cpu, cuda or cuda:N; an unavailable device is an error.
    #[arg(long)]
    device: Option<String>,
    #[arg(long)]
    seed: Option<u64>,
    /// Train on a fixed subset of this many training images.
    #[arg(long)]
    limit: Option<usize>,
    /// Start from pretrained weights (finetune.init): a run dir or checkpoint of ours, official
    /// SLaK / ConvNeXt, timm or torchvision .pth / .safetensors. For distill, the student's.
    #[arg(long, value_name = "SOURCE", conflicts_with = "resume")]
    init: Option<PathBuf>,
    /// Any config field: --set optim.warmup_epochs=0.5 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    /// Stop at the first corrupt image instead of skipping and counting it.
    #[arg(long)]
    strict: bool,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
    /// Data parallel on this machine: run N workers of this command (torchrun's environment
    /// on loopback with a free MASTER_PORT; the cores are split between them). Without it, a
    /// torchrun-style environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT)
    /// makes this process one worker. optim.batch_size is per worker.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    nproc_per_node: Option<u16>,
}

#[derive(Args, Debug)]
pub struct DistillArgs {
    #[command(flatten)]
    run: RunArgs,
    #[command(flatten)]
    distill: DistillFlags,
}

/// The teacher and how to learn from it.
#[derive(Args, Debug)]
pub struct DistillFlags {
    /// Teacher: a run dir of ours, or a checkpoint (.safetensors or official .pth).
    #[arg(long)]
    teacher: Option<PathBuf>,
    /// Architecture of a checkpoint-file teacher, e.g. slak_tiny.
    #[arg(long)]
    teacher_preset: Option<String>,
    /// none, kd, nkd, fd, kd+fd or nkd+fd.
    #[arg(long)]
    method: Option<String>,
    #[arg(long)]
    alpha: Option<f64>,
    #[arg(long)]
    temperature: Option<f64>,
    #[arg(long)]
    fd_weight: Option<f64>,
    /// Teacher-output cache: auto ($LKD_CACHE/teacher-outputs), off, or a directory.
    #[arg(long, value_name = "auto|off|DIR")]
    teacher_cache: Option<lkd_trainer::teacher_cache::CacheSetting>,
    /// Teacher classes the cache keeps per sample (top-k logits + log-sum-exp); 0 keeps all.
    #[arg(long)]
    teacher_cache_topk: Option<usize>,
}

impl DistillFlags {
    /// Sets `cfg.distill` from the config's [distill] table and these flags.
    fn apply(&self, cfg: &mut TrainConfig) -> Result<()> {
        let mut d = cfg
            .distill
            .clone()
            .unwrap_or_else(|| DistillConfig::new(KdMethod::Nkd, PathBuf::new()));
        if let Some(t) = &self.teacher {
            d.teacher = t.clone();
        }
        if d.teacher.as_os_str().is_empty() {
            bail!("give --teacher RUN_DIR|CHECKPOINT (or [distill].teacher in the config)");
        }
        if let Some(p) = &self.teacher_preset {
            let mut m = ModelConfig::preset(p);
            m.num_classes = cfg.model.num_classes;
            d.teacher_model = Some(m);
        }
        if let Some(m) = &self.method {
            d.method = KdMethod::parse(m)?;
        }
        if self.alpha.is_some() {
            d.alpha = self.alpha;
        }
        if let Some(t) = self.temperature {
            d.temperature = t;
        }
        if let Some(w) = self.fd_weight {
            d.fd_weight = w;
        }
        if let Some(c) = &self.teacher_cache {
            d.cache = c.clone();
        }
        if let Some(k) = self.teacher_cache_topk {
            d.cache_topk = k;
        }
        cfg.distill = Some(d);
        // Flags are checked like config values (ranges, method and alpha together).
        cfg.validate()?;
        Ok(())
    }
}

fn default_config() -> Result<TrainConfig> {
    Ok(TrainConfig::from_toml_str(include_str!(
        "../configs/fmnist-convnext-proxy.toml"
    ))?)
}

fn build_config(a: &RunArgs) -> Result<TrainConfig> {
    let mut cfg = match &a.config {
        Some(p) => TrainConfig::load(p)?,
        None => default_config()?,
    };
    if let Some(p) = &a.preset {
        cfg.model = ModelConfig::preset(p);
    }
    if let Some(v) = a.epochs {
        cfg.optim.epochs = v;
    }
    if let Some(v) = a.batch_size {
        cfg.optim.batch_size = v;
    }
    if let Some(v) = a.lr {
        cfg.optim.lr = v;
    }
    if let Some(v) = &a.device {
        cfg.run.device = v.clone();
    }
    if let Some(v) = a.seed {
        cfg.run.seed = v;
    }
    if let Some(v) = &a.init {
        cfg.finetune.init = Some(v.clone());
    }
    if let Some(v) = a.limit {
        cfg.data.dataset.limit = Some(v);
    }
    if a.strict {
        cfg.data.dataset.strict = true;
    }
    Ok(cfg.with_overrides(&a.sets)?)
}

/// The run the command line names: `--resume RUN`, or a new run of the config `new_config`
/// builds in `--out RUN` (validated here, once).
fn start_of(a: &RunArgs, new_config: impl FnOnce() -> Result<TrainConfig>) -> Result<Start> {
    match (&a.resume, &a.out) {
        (Some(run), _) => Ok(Start::resume(run)),
        (None, Some(out)) => Ok(Start::new(&new_config()?, out)?),
        (None, None) => bail!("give --out RUN_DIR for a new run or --resume RUN_DIR"),
    }
}

fn execute(start: Start, a: &RunArgs) -> Result<()> {
    let dir = start.run_dir().to_path_buf();
    let launch = LaunchEnv::from_env()?;
    if let Some(n) = a.nproc_per_node {
        if launch.is_some() {
            bail!(
                "--nproc-per-node starts its own workers, but this process already is one (WORLD_SIZE is set): \
                 use either the launcher's environment or --nproc-per-node"
            );
        }
        return launch_local_workers(usize::from(n));
    }
    let s = match &launch {
        None => train(start, !a.quiet),
        Some(l) => train_parallel(start, !a.quiet && l.rank == 0, l),
    }
    .map_err(|e| {
        // An error that already names the run directory is not prefixed with it again.
        let names_dir = e.to_string().contains(&dir.display().to_string());
        match &launch {
            Some(l) => anyhow::Error::from(e).context(format!(
                "run {} (rank {} of {})",
                dir.display(),
                l.rank,
                l.world_size
            )),
            None if names_dir => anyhow::Error::from(e),
            None => anyhow::Error::from(e).context(format!("run {}", dir.display())),
        }
    })?;
    if s.rank == 0 {
        print_summary(&dir, &s);
    }
    Ok(())
}

/// This command line without `--nproc-per-node N` (what each worker runs).
fn worker_args(args: impl Iterator<Item = OsString>) -> Vec<OsString> {
    let mut out = Vec::new();
    let mut skip_value = false;
    for arg in args {
        if std::mem::take(&mut skip_value) {
            continue;
        }
        if arg == "--nproc-per-node" {
            skip_value = true;
        } else if !arg.to_string_lossy().starts_with("--nproc-per-node=") {
            out.push(arg);
        }
    }
    out
}

/// Runs `n` local workers of this command line, as `torchrun --nproc-per-node n` does: rank r
/// gets RANK=r, LOCAL_RANK=r, WORLD_SIZE=n and a free loopback MASTER_PORT. When a worker fails,
/// the others are stopped and the error names the rank and its exit status.
fn launch_local_workers(n: usize) -> Result<()> {
    let exe = std::env::current_exe().context("locating this executable to start workers")?;
    let args = worker_args(std::env::args_os().skip(1));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .context("finding a free port for the workers' rendezvous")?
        .port();
    let mut workers: Vec<Option<Child>> = Vec::with_capacity(n);
    for rank in 0..n {
        let launch = LaunchEnv {
            rank,
            world_size: n,
            local_rank: rank,
            master_addr: "127.0.0.1".into(),
            master_port: port,
        };
        let spawned = Command::new(&exe).args(&args).envs(launch.vars()).spawn();
        match spawned {
            Ok(child) => workers.push(Some(child)),
            Err(e) => {
                stop_workers(&mut workers);
                return Err(e).with_context(|| format!("starting worker rank {rank}"));
            }
        }
    }
    loop {
        let mut running = 0;
        for rank in 0..n {
            let Some(child) = workers[rank].as_mut() else {
                continue;
            };
            match child.try_wait().context("waiting for a worker")? {
                None => running += 1,
                Some(status) if status.success() => workers[rank] = None,
                Some(status) => {
                    workers[rank] = None;
                    let stopped = stop_workers(&mut workers);
                    bail!(
                        "worker rank {rank} of {n} failed ({status}){}",
                        if stopped > 0 {
                            format!("; stopped the other {stopped} running worker(s)")
                        } else {
                            String::new()
                        }
                    );
                }
            }
        }
        if running == 0 {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Kills and reaps every worker still running; returns how many there were.
fn stop_workers(workers: &mut [Option<Child>]) -> usize {
    let mut stopped = 0;
    for slot in workers.iter_mut() {
        if let Some(mut child) = slot.take() {
            if child.try_wait().ok().flatten().is_none() {
                let _ = child.kill();
                stopped += 1;
            }
            let _ = child.wait();
        }
    }
    stopped
}

fn print_summary(dir: &Path, s: &Summary) {
    println!(
        "{} {}: {} steps, {} epochs, best top-1 {:.2}%{}, {:.0} img/s, {:.0}s (data wait {:.0}%, teacher {:.0}%){}",
        if s.finished { "finished" } else { "stopped" },
        dir.display(),
        s.steps,
        s.epochs_done,
        s.best_top1,
        s.last_ema_top1.map(|e| format!(" (EMA last {e:.2}%)")).unwrap_or_default(),
        s.images_per_s,
        s.seconds,
        100.0 * s.data_wait_share,
        100.0 * s.teacher_share,
        if s.skipped_files > 0 { format!(", {} unreadable files skipped (listed in {})", s.skipped_files, dir.join(lkd_trainer::rundir::SKIPPED).display()) } else { String::new() }
    );
    if s.world_size > 1 {
        println!(
            "data parallel: {} workers (img/s counts all of them; evaluation on rank 0)",
            s.world_size
        );
    }
    if s.skipped_steps > 0 {
        println!(
            "fp16 loss scaling skipped {} step(s) with inf/NaN gradients",
            s.skipped_steps
        );
    }
    if let Some(c) = &s.teacher_cache {
        println!(
            "teacher outputs: {} batches replayed from the cache, {} computed live{}{}",
            c.replayed_batches,
            c.live_batches,
            if c.teacher_loaded {
                ""
            } else {
                " (teacher never loaded)"
            },
            if c.corrupt_shards > 0 {
                format!(", {} corrupt cache shards recomputed", c.corrupt_shards)
            } else {
                String::new()
            }
        );
    }
}

pub fn run_train(a: RunArgs) -> Result<()> {
    let start = start_of(&a, || build_config(&a))?;
    execute(start, &a)
}

pub fn run_distill(a: DistillArgs) -> Result<()> {
    let start = start_of(&a.run, || {
        let mut cfg = build_config(&a.run)?;
        a.distill.apply(&mut cfg)?;
        Ok(cfg)
    })?;
    execute(start, &a.run)
}

/// `lkd teacher-cache build`: the teacher's outputs for the first N epochs of a distillation
/// config's stream, computed once (e.g. on a GPU machine) for students to replay.
#[derive(Args, Debug)]
pub struct TeacherCacheBuildArgs {
    /// The student's distillation config (its data, batch size, seed and model preprocessing
    /// define the stream).
    #[arg(long)]
    config: PathBuf,
    /// Epochs to precompute.
    #[arg(long)]
    epochs: usize,
    #[arg(long)]
    device: Option<String>,
    #[arg(long)]
    seed: Option<u64>,
    /// Any config field: --set optim.batch_size=256 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    #[command(flatten)]
    distill: DistillFlags,
}

#[derive(clap::Subcommand, Debug)]
pub enum TeacherCacheCommand {
    /// Precompute a teacher's outputs for a distillation stream.
    Build(TeacherCacheBuildArgs),
}

pub fn run_teacher_cache(cmd: TeacherCacheCommand) -> Result<()> {
    let TeacherCacheCommand::Build(a) = cmd;
    let mut cfg = TrainConfig::load(&a.config)?;
    if let Some(d) = &a.device {
        cfg.run.device = d.clone();
    }
    if let Some(s) = a.seed {
        cfg.run.seed = s;
    }
    let mut cfg = cfg.with_overrides(&a.sets)?;
    a.distill.apply(&mut cfg)?;
    let (dir, stats) = lkd_trainer::train::precompute_teacher_outputs(&cfg, a.epochs, true)?;
    println!(
        "teacher outputs for {} epoch(s) in {}: {} batches computed, {} already cached, {} shards written{}",
        a.epochs,
        dir.display(),
        stats.live_batches,
        stats.replayed_batches,
        stats.recorded_shards,
        if stats.corrupt_shards > 0 { format!(", {} corrupt shards recomputed", stats.corrupt_shards) } else { String::new() }
    );
    Ok(())
}

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// A run dir, or a checkpoint file with --preset.
    source: PathBuf,
    #[arg(long)]
    preset: Option<String>,
    /// Dataset config TOML table file or a run config to take [data] from; default: the run's.
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long, default_value = "cpu")]
    device: String,
    #[arg(long, default_value_t = 256)]
    batch_size: usize,
    #[arg(long)]
    limit: Option<usize>,
    #[arg(long)]
    json: bool,
    /// Score a model with more classes than the dataset anyway, dataset label i as model class
    /// i (for a dataset whose classes are the model's first ones, in order).
    #[arg(long)]
    allow_class_mismatch: bool,
}

/// Refuses to score a model on a dataset with another class count: the figures would be
/// meaningless (labels no output stands for), unless `allow` and the dataset's labels all name
/// one of the model's outputs.
fn check_classes(model: usize, data: usize, dataset: &str, allow: bool) -> Result<()> {
    if model == data || (allow && model > data) {
        return Ok(());
    }
    let what_to_do = if model > data {
        format!(
            "evaluate a model trained on this dataset (lkd train / lkd distill), or pass \
             --allow-class-mismatch if its labels 0..{} are the model's first {data} classes",
            data.saturating_sub(1)
        )
    } else {
        "evaluate a model trained on this dataset (lkd train / lkd distill)".to_string()
    };
    bail!("the model predicts {model} classes, dataset {dataset} has {data}: {what_to_do}")
}

/// The dataset to evaluate/measure on: from --config, the run dir, or Fashion-MNIST.
fn dataset_for(source: &Path, config: Option<&Path>) -> Result<data::DatasetSpec> {
    if let Some(c) = config {
        return Ok(TrainConfig::load(c)?.data.dataset);
    }
    if source.is_dir() {
        return Ok(RunDir::open(source)?.config()?.data.dataset);
    }
    Ok(data::DatasetSpec::fashion_mnist_from_env()?)
}

pub fn run_eval(a: EvalArgs) -> Result<()> {
    let device = parse_device(&a.device)?;
    let model = a.preset.as_deref().map(ModelConfig::preset);
    let (exec, params) = load_model(&a.source, model.as_ref(), device)?;
    let mut spec = dataset_for(&a.source, a.config.as_deref())?;
    spec.val_limit = a.limit.or(spec.val_limit);
    let set = Arc::new(data::open(&spec, Split::Val)?);
    check_classes(
        exec.graph.num_classes,
        set.num_classes(),
        set.name(),
        a.allow_class_mismatch,
    )?;
    if exec.graph.num_classes != set.num_classes() {
        eprintln!(
            "scoring dataset label i as model class i ({} of the model's {} classes)",
            set.num_classes(),
            exec.graph.num_classes
        );
    }
    let loader = Loader::new(
        set.clone(),
        Transform::eval(&exec.graph.preprocess),
        None,
        LoaderConfig {
            batch_size: a.batch_size,
            workers: 0,
            prefetch: 4,
            seed: 0,
            shuffle: false,
            drop_last: false,
            balanced: false,
        },
    )?;
    let r = evaluate(&exec, &params, &loader, device)?;
    if a.json {
        println!(
            "{}",
            serde_json::json!({"top1": r.top1, "top5": r.top5, "loss": r.loss, "images": r.images, "dataset": set.name()})
        );
    } else {
        println!(
            "{} on {} ({} images): top-1 {:.2}%  top-5 {:.2}%  loss {:.4}",
            exec.graph.preset,
            set.name(),
            r.images,
            r.top1,
            r.top5,
            r.loss
        );
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct ErfArgs {
    /// A run dir, or a checkpoint file with --preset.
    source: PathBuf,
    #[arg(long)]
    preset: Option<String>,
    #[arg(long, default_value_t = 50)]
    images: usize,
    /// Feature map to measure (default: the last stage).
    #[arg(long)]
    tap: Option<String>,
    /// Input side for the measurement. Default: 4x the training size, as the papers measure
    /// ImageNet models (trained at 224) on 1024 inputs; models with position embeddings keep
    /// their own size.
    #[arg(long)]
    input_size: Option<usize>,
    /// Output directory for erf.json and erf.png (default: the run dir, or `.`).
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long, default_value = "cpu")]
    device: String,
}

pub fn run_erf(a: ErfArgs) -> Result<()> {
    let device = parse_device(&a.device)?;
    let model = a.preset.as_deref().map(ModelConfig::preset);
    let (exec, params) = load_model(&a.source, model.as_ref(), device)?;
    let r = lkd_trainer::erf::measure_on_dataset(
        &exec,
        &params,
        &dataset_for(&a.source, a.config.as_deref())?,
        a.images,
        a.tap.as_deref(),
        a.input_size,
        device,
    )?;
    let out = a.out.clone().unwrap_or_else(|| {
        if a.source.is_dir() {
            a.source.clone()
        } else {
            PathBuf::from(".")
        }
    });
    std::fs::create_dir_all(&out)?;
    lkd_util::write_atomic(
        &out.join("erf.json"),
        serde_json::to_string_pretty(&r)?.as_bytes(),
    )?;
    write_heatmaps(&out.join("erf.png"), &[(&exec.graph.preset, &r)])?;
    let ratios: Vec<String> = r
        .area_ratios
        .iter()
        .map(|(t, v)| format!("t={t}: {v:.4}"))
        .collect();
    println!(
        "ERF of {} at {} ({}x{} input) over {} images: {}; wrote {}",
        exec.graph.preset,
        r.tap,
        r.height,
        r.width,
        r.images,
        ratios.join(", "),
        out.join("erf.json").display()
    );
    Ok(())
}
