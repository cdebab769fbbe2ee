//! Distillation training-step throughput (images/s), CPU: the step `lkd_trainer::train` runs
//! (student forward in train mode, teacher forward under no-grad, NKD loss, backward, AdamW,
//! zero-grad) on random weights and a fixed random batch.
//!
//! - `train_step_cpu/nano_nkd_b128`: convnext_proxy ← slak_proxy, 128 × 1 × 28 × 28;
//! - `train_step_cpu/tiny224_nkd_b8`: convnext_tiny ← slak_tiny, 8 × 3 × 224 × 224, only with
//!   `LKD_BENCH_TINY=1` (tens of seconds a step on 2 cores).
//!
//! Each group also times the teacher's forward alone, so teacher share = teacher / step.
//!
//! - `train_step_cpu/slak_train_ce_b128`: the large-kernel teacher's own supervised step
//!   (slak_proxy forward in train mode, cross-entropy with label smoothing 0.1, backward, AdamW).
//!
//! - `kd_epoch_cpu/nano_6400`: one whole NKD epoch through `lkd_trainer::train` (6 400
//!   Fashion-MNIST images, loader, evaluation on 500) with the teacher computed live vs replayed
//!   from the teacher-output cache. `--raw kd_epoch [--iters N]` alternates the two N times and
//!   prints the per-round ratio with its spread.
//!
//! - `--raw ddp [--iters N] [--batch B]`: data-parallel scaling of an NKD run of
//!   convnext_proxy ← slak_proxy (teacher live, 2 560 Fashion-MNIST images): one process × 1
//!   thread vs 2 workers × 1 thread each (Gloo on loopback, batch B per worker, so the same
//!   images per epoch), alternated N times; prints images/s of both (training steps, from the
//!   run summary), the per-round ratio, and the CPU seconds of each whole run (all its
//!   processes), which shows the data-parallel overhead even on a machine too busy to scale.
//!
//! `--raw CASE [--iters N] [--warmup N] [--threads N] [--batch N] [--workers N]` skips criterion
//! and prints one JSON line of per-step times (cases: nano, tiny, slak_train, loader, nano_fed). The PyTorch
//! twin `benches/train_step_torch.py` prints the same line; `benches/compare_train_step.py`
//! interleaves the two and prints the table.

use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use lkd_models::ModelConfig;
use lkd_trainer::data::{self, AugmentConfig, DatasetSpec, Loader, LoaderConfig, Split};
use lkd_trainer::losses::{cross_entropy, nkd, Target};
use lkd_trainer::optim::{slots, zero_grad, AdamW, Slot};
use lkd_trainer::tch::{self, Device, Kind, Tensor};
use lkd_trainer::teacher::{renormalize, Teacher};
use lkd_trainer::{Executor, Params};

const NKD_TEMPERATURE: f64 = 1.0;
const NKD_ALPHA: f64 = 1.0;
const LR: f64 = 1e-3;
const WEIGHT_DECAY: f64 = 0.05;

struct Case {
    name: &'static str,
    student: &'static str,
    /// `None`: a supervised step (cross-entropy) instead of distillation.
    teacher: Option<&'static str>,
    batch: usize,
}

const NANO: Case = Case {
    name: "nano",
    student: "convnext_proxy",
    teacher: Some("slak_proxy"),
    batch: 128,
};
const SLAK_TRAIN: Case = Case {
    name: "slak_train",
    student: "slak_proxy",
    teacher: None,
    batch: 128,
};
const LABEL_SMOOTHING: f64 = 0.1;
const TINY: Case = Case {
    name: "tiny",
    student: "convnext_tiny",
    teacher: Some("slak_tiny"),
    batch: 8,
};

struct Pair {
    student: Executor,
    params: Params,
    teacher: Option<Teacher>,
    x: Tensor,
    labels: Tensor,
}

impl Pair {
    fn new(case: &Case, batch: usize) -> Self {
        tch::manual_seed(0);
        let graph = ModelConfig::preset(case.student)
            .build()
            .expect("student graph");
        let params = Params::init(&graph, Device::Cpu, 0).unwrap();
        let teacher = case.teacher.map(|name| {
            let t_model = ModelConfig::preset(name);
            let t_graph = t_model.build().expect("teacher graph");
            let t_params = Params::init(&t_graph, Device::Cpu, 1).unwrap();
            // Frozen as `Teacher::load` leaves a loaded teacher.
            for t in t_params.tensors.values() {
                let _ = t.shallow_clone().set_requires_grad(false);
            }
            Teacher {
                exec: Executor::new(t_graph),
                params: t_params,
                model: t_model,
                source: "random init".into(),
            }
        });
        let [h, w] = graph.input_size;
        let x = Tensor::randn(
            [batch as i64, graph.in_chans as i64, h as i64, w as i64],
            (Kind::Float, Device::Cpu),
        );
        let labels = Tensor::randint(
            graph.num_classes as i64,
            [batch as i64],
            (Kind::Int64, Device::Cpu),
        );
        Self {
            student: Executor::new(graph),
            params,
            teacher,
            x,
            labels,
        }
    }

    fn slots(&self) -> Vec<Slot> {
        slots(
            &self.student.graph,
            &self.params,
            "",
            &Default::default(),
            &Default::default(),
        )
    }

    fn teacher_logits(&self, x: &Tensor) -> Option<Tensor> {
        let teacher = self.teacher.as_ref()?;
        let xt = renormalize(x, &self.student.graph.preprocess, teacher.preprocess())
            .expect("renormalize");
        let logits = teacher
            .forward(&xt, &[])
            .expect("teacher forward")
            .0
            .to_kind(Kind::Float);
        Some(logits)
    }

    /// One optimisation step as the training loop does it; returns the seconds of its phases:
    /// student forward, teacher forward, loss + backward, AdamW + zero-grad.
    fn step(&self, x: &Tensor, labels: &Tensor, slots: &[Slot], opt: &mut AdamW) -> [f64; 4] {
        let t0 = Instant::now();
        let logits = self
            .student
            .forward(&self.params, x, true, &[])
            .expect("student forward")
            .logits
            .to_kind(Kind::Float);
        let t1 = Instant::now();
        let t_logits = self.teacher_logits(x);
        let t2 = Instant::now();
        let loss = match &t_logits {
            Some(t) => nkd(&logits, t, labels, NKD_TEMPERATURE, NKD_ALPHA),
            None => cross_entropy(&logits, &Target::Hard(labels), LABEL_SMOOTHING),
        }
        .expect("loss");
        assert!(loss.double_value(&[]).is_finite(), "non-finite loss");
        loss.backward();
        let t3 = Instant::now();
        opt.step(slots, LR).unwrap();
        zero_grad(slots).unwrap();
        let t4 = Instant::now();
        [t1 - t0, t2 - t1, t3 - t2, t4 - t3].map(|d| d.as_secs_f64())
    }
}

fn step_group(c: &mut Criterion, case: &Case, samples: usize, slow: bool) {
    let pair = Pair::new(case, case.batch);
    let slots = pair.slots();
    let mut opt = AdamW::new(WEIGHT_DECAY);
    let loss = if case.teacher.is_some() { "nkd" } else { "ce" };
    let mut g = c.benchmark_group(format!(
        "train_step_cpu/{}_{loss}_b{}",
        case.name, case.batch
    ));
    g.sample_size(samples);
    if slow {
        // One warm-up step and the minimum of samples; criterion's default timings would take minutes.
        g.warm_up_time(Duration::from_millis(1))
            .measurement_time(Duration::from_secs(1));
    }
    g.throughput(Throughput::Elements(case.batch as u64));
    let id = match case.teacher {
        Some(t) => format!("{}<-{t}", case.student),
        None => case.student.to_string(),
    };
    g.bench_function(BenchmarkId::new("step", id), |b| {
        b.iter(|| pair.step(&pair.x, &pair.labels, &slots, &mut opt))
    });
    if let Some(t) = case.teacher {
        g.bench_function(BenchmarkId::new("teacher_forward", t), |b| {
            b.iter(|| pair.teacher_logits(&pair.x))
        });
    }
    g.finish();
}

fn nano(c: &mut Criterion) {
    step_group(c, &NANO, 20, false);
    step_group(c, &SLAK_TRAIN, 20, false);
}

fn tiny(c: &mut Criterion) {
    if std::env::var_os("LKD_BENCH_TINY").is_none() {
        eprintln!("skipping convnext_tiny <- slak_tiny at 224² (tens of seconds a step on 2 cores): set LKD_BENCH_TINY=1");
        return;
    }
    step_group(c, &TINY, 10, true);
}

// ---------------------------------------------------------------------------------------------
// A whole KD epoch, teacher live vs replayed from the cache.

struct KdEpoch {
    _tmp: tempfile::TempDir,
    root: std::path::PathBuf,
    config: lkd_trainer::config::TrainConfig,
    runs: std::cell::Cell<usize>,
}

impl KdEpoch {
    /// A random-init slak_proxy teacher checkpoint and the NKD demo config on 6 400 images; the
    /// cache is recorded once so that `replay` runs never compute the teacher.
    fn new() -> Self {
        use lkd_trainer::config::{DistillConfig, KdMethod, TrainConfig};
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().to_path_buf();
        let t_graph = ModelConfig::preset("slak_proxy")
            .build()
            .expect("teacher graph");
        let teacher = root.join("teacher.safetensors");
        lkd_models::checkpoint::write_safetensors(
            &teacher,
            &Params::init(&t_graph, Device::Cpu, 1)
                .unwrap()
                .to_state_dict()
                .unwrap(),
            None,
        )
        .expect("write teacher");
        let mut config =
            TrainConfig::from_toml_str(include_str!("../configs/fmnist-convnext-proxy-nkd.toml"))
                .expect("config");
        config.data.dataset = DatasetSpec::fashion_mnist_from_env()
            .expect("LKD_FASHION_MNIST (eval \"$(make -s env)\")");
        config.data.dataset.limit = Some(6400);
        config.data.dataset.val_limit = Some(500);
        config.optim.epochs = 1;
        config.run.checkpoint_every = 0;
        let mut d = DistillConfig::new(KdMethod::Nkd, teacher);
        d.teacher_model = Some(ModelConfig::preset("slak_proxy"));
        config.distill = Some(d);
        let me = Self {
            _tmp: tmp,
            root,
            config,
            runs: std::cell::Cell::new(0),
        };
        me.run(true);
        me
    }

    /// One epoch; returns its wall seconds.
    fn run(&self, cached: bool) -> f64 {
        use lkd_trainer::teacher_cache::CacheSetting;
        let mut cfg = self.config.clone();
        cfg.distill.as_mut().expect("distill").cache = if cached {
            CacheSetting::Dir(self.root.join("cache"))
        } else {
            CacheSetting::Off
        };
        let n = self.runs.get();
        self.runs.set(n + 1);
        let dir = self.root.join(format!("run{n}"));
        let t0 = Instant::now();
        let s = lkd_trainer::train::Start::new(&cfg, &dir)
            .and_then(|s| lkd_trainer::train::train(s, false))
            .expect("kd epoch");
        let secs = t0.elapsed().as_secs_f64();
        let c = s.teacher_cache.expect("cache stats");
        assert_eq!(
            c.teacher_loaded,
            !cached || n == 0,
            "replay loaded the teacher"
        );
        let _ = std::fs::remove_dir_all(&dir);
        secs
    }
}

fn kd_epoch(c: &mut Criterion) {
    let e = KdEpoch::new();
    let mut g = c.benchmark_group("kd_epoch_cpu/nano_6400");
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements(6400));
    g.bench_function("teacher_live", |b| b.iter(|| e.run(false)));
    g.bench_function("teacher_cached", |b| b.iter(|| e.run(true)));
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// Raw mode: per-step times as one JSON line, for the side-by-side driver.

struct RawArgs {
    case: String,
    iters: usize,
    warmup: usize,
    threads: i32,
    batch: Option<usize>,
    workers: usize,
}

fn parse_raw(args: &[String]) -> RawArgs {
    let mut r = RawArgs {
        case: args
            .first()
            .cloned()
            .expect("--raw needs a case: nano, tiny, slak_train, loader, nano_fed, kd_epoch, ddp"),
        iters: 10,
        warmup: 2,
        threads: 2,
        batch: None,
        workers: 2,
    };
    let mut it = args[1..].iter();
    while let Some(flag) = it.next() {
        let v = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        let n: usize = v
            .parse()
            .unwrap_or_else(|_| panic!("{flag}: expected a number, found {v}"));
        match flag.as_str() {
            "--iters" => r.iters = n,
            "--warmup" => r.warmup = n,
            "--threads" => r.threads = n as i32,
            "--batch" => r.batch = Some(n),
            "--workers" => r.workers = n,
            _ => panic!("unknown flag {flag}; known: --iters --warmup --threads --batch --workers"),
        }
    }
    r
}

fn json_list(v: &[f64]) -> String {
    format!(
        "[{}]",
        v.iter()
            .map(|s| format!("{s:.6}"))
            .collect::<Vec<_>>()
            .join(",")
    )
}

fn fashion_loader(batch: usize, workers: usize) -> Loader {
    let spec = DatasetSpec::fashion_mnist_from_env()
        .expect("LKD_FASHION_MNIST must point at Fashion-MNIST (eval \"$(make -s env)\")");
    let ds = Arc::new(data::open(&spec, Split::Train).expect("open Fashion-MNIST"));
    let pre = lkd_models::Preprocess::fashion_mnist();
    let cfg = LoaderConfig {
        batch_size: batch,
        workers,
        ..LoaderConfig::default()
    };
    Loader::train(ds, &pre, &AugmentConfig::proxy(), None, 0.0, cfg).expect("loader")
}

fn raw(args: &[String]) {
    let a = parse_raw(args);
    tch::set_num_threads(a.threads);
    let head = |batch: usize| {
        format!(
            "{{\"impl\":\"lkd\",\"case\":\"{}\",\"batch\":{batch},\"threads\":{},\"workers\":{}",
            a.case, a.threads, a.workers
        )
    };
    match a.case.as_str() {
        "nano" | "tiny" | "slak_train" => {
            let case = match a.case.as_str() {
                "nano" => &NANO,
                "tiny" => &TINY,
                _ => &SLAK_TRAIN,
            };
            let batch = a.batch.unwrap_or(case.batch);
            let pair = Pair::new(case, batch);
            let slots = pair.slots();
            let mut opt = AdamW::new(WEIGHT_DECAY);
            let mut step_s = vec![];
            let mut phases: [Vec<f64>; 4] = Default::default();
            for i in 0..a.warmup + a.iters {
                let t0 = Instant::now();
                let t = pair.step(&pair.x, &pair.labels, &slots, &mut opt);
                if i >= a.warmup {
                    step_s.push(t0.elapsed().as_secs_f64());
                    for (p, v) in phases.iter_mut().zip(t) {
                        p.push(v);
                    }
                }
            }
            let names = ["forward_s", "teacher_s", "backward_s", "optim_s"];
            let phases: String = names
                .iter()
                .zip(&phases)
                .map(|(n, v)| format!(",\"{n}\":{}", json_list(v)))
                .collect();
            println!(
                "{},\"step_s\":{}{phases}}}",
                head(batch),
                json_list(&step_s)
            );
        }
        "loader" => {
            // Loader alone, 2 workers by default. Batches arrive in bursts (prefetch), so only
            // the total over many batches means anything.
            let batch = a.batch.unwrap_or(NANO.batch);
            let loader = fashion_loader(batch, a.workers);
            let mut batches = loader.epoch(0, 0).expect("epoch");
            let mut t0 = Instant::now();
            for i in 0..a.warmup + a.iters {
                if i == a.warmup {
                    t0 = Instant::now();
                }
                let b = batches
                    .next()
                    .expect("epoch ended: lower --iters")
                    .expect("batch");
                assert_eq!(b.len(), batch);
            }
            let seconds = t0.elapsed().as_secs_f64();
            println!(
                "{},\"batches\":{},\"seconds\":{seconds:.6}}}",
                head(batch),
                a.iters
            );
        }
        "nano_fed" => {
            // The nano step fed by the loader: its workers share the cores with the step, as in training.
            let batch = a.batch.unwrap_or(NANO.batch);
            let pair = Pair::new(&NANO, batch);
            let slots = pair.slots();
            let mut opt = AdamW::new(WEIGHT_DECAY);
            let loader = fashion_loader(batch, a.workers);
            let mut batches = loader.epoch(0, 0).expect("epoch");
            let (mut step_s, mut wait_s, mut teacher_s) = (vec![], vec![], vec![]);
            for i in 0..a.warmup + a.iters {
                let t0 = Instant::now();
                let b = batches
                    .next()
                    .expect("epoch ended: lower --iters")
                    .expect("batch");
                let waited = t0.elapsed().as_secs_f64();
                let t = pair.step(&b.images, &b.labels, &slots, &mut opt);
                if i >= a.warmup {
                    step_s.push(t0.elapsed().as_secs_f64());
                    wait_s.push(waited);
                    teacher_s.push(t[1]);
                }
            }
            println!(
                "{},\"step_s\":{},\"wait_s\":{},\"teacher_s\":{}}}",
                head(batch),
                json_list(&step_s),
                json_list(&wait_s),
                json_list(&teacher_s)
            );
        }
        "kd_epoch" => {
            // Live and cached epochs alternated (live first on even rounds); ratio per round.
            let e = KdEpoch::new();
            let (mut live, mut cached) = (vec![], vec![]);
            for round in 0..a.iters {
                for &c in if round % 2 == 0 {
                    &[false, true]
                } else {
                    &[true, false]
                } {
                    let s = e.run(c);
                    if c {
                        cached.push(s)
                    } else {
                        live.push(s)
                    }
                }
            }
            let mut ratios: Vec<f64> = live.iter().zip(&cached).map(|(l, c)| l / c).collect();
            ratios.sort_by(f64::total_cmp);
            let median = ratios[ratios.len() / 2];
            println!(
                "{},\"live_s\":{},\"cached_s\":{},\"speedup_median\":{median:.3},\"speedup_min\":{:.3},\"speedup_max\":{:.3}}}",
                head(128),
                json_list(&live),
                json_list(&cached),
                ratios[0],
                ratios[ratios.len() - 1]
            );
        }
        "ddp" => ddp_scaling(a.iters, a.batch.unwrap_or(64)),
        "ddp_worker" => ddp_worker(),
        other => panic!(
            "unknown case {other}; known: nano, tiny, slak_train, loader, nano_fed, kd_epoch, ddp"
        ),
    }
}

// ---------------------------------------------------------------------------------------------
// Data-parallel scaling: worker processes are this binary again (`--raw ddp_worker`).

const DDP_CONFIG: &str = "LKD_BENCH_DDP_CONFIG";
const DDP_OUT: &str = "LKD_BENCH_DDP_OUT";

/// One NKD run (rank 0 of a launch, or a plain process without one); rank 0 writes its
/// summary's images/s to `$LKD_BENCH_DDP_OUT.ips`.
fn ddp_worker() {
    use lkd_trainer::lkd_dist::LaunchEnv;
    let cfg = lkd_trainer::config::TrainConfig::load(std::path::Path::new(
        &std::env::var(DDP_CONFIG).expect("config"),
    ))
    .expect("config");
    let out = std::path::PathBuf::from(std::env::var(DDP_OUT).expect("out"));
    let s = match LaunchEnv::from_env().expect("launch env") {
        Some(l) => lkd_trainer::train::Start::new(&cfg, &out)
            .and_then(|s| lkd_trainer::train::train_parallel(s, false, &l)),
        None => lkd_trainer::train::Start::new(&cfg, &out)
            .and_then(|s| lkd_trainer::train::train(s, false)),
    }
    .expect("ddp bench run");
    // CPU seconds of this process (user + system), whatever else the machine runs.
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .expect("stat")
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    std::fs::write(
        out.with_extension(format!("r{}", s.rank)),
        format!("{} {}", s.images_per_s, ticks / 100.0),
    )
    .expect("write");
}

/// Runs `world` worker processes (0: one plain process) on `config`; rank 0's images/s and the
/// CPU seconds of all workers together.
fn ddp_run(config: &std::path::Path, out: &std::path::Path, world: usize) -> (f64, f64) {
    use lkd_trainer::lkd_dist::LaunchEnv;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let children: Vec<_> = (0..world.max(1))
        .map(|rank| {
            let mut cmd = std::process::Command::new(std::env::current_exe().expect("exe"));
            cmd.args(["--raw", "ddp_worker"])
                .env(DDP_CONFIG, config)
                .env(DDP_OUT, out);
            if world > 0 {
                cmd.envs(
                    LaunchEnv {
                        rank,
                        world_size: world,
                        local_rank: rank,
                        master_addr: "127.0.0.1".into(),
                        master_port: port,
                    }
                    .vars(),
                );
            }
            cmd.spawn().expect("spawn worker")
        })
        .collect();
    for mut c in children {
        assert!(c.wait().expect("wait").success(), "a worker failed");
    }
    let _ = std::fs::remove_dir_all(out);
    let (mut ips, mut cpu) = (0.0, 0.0);
    for rank in 0..world.max(1) {
        let text =
            std::fs::read_to_string(out.with_extension(format!("r{rank}"))).expect("summary");
        let (i, c) = text.split_once(' ').expect("summary");
        if rank == 0 {
            ips = i.parse().expect("images/s");
        }
        cpu += c.parse::<f64>().expect("cpu seconds");
    }
    (ips, cpu)
}

fn ddp_scaling(rounds: usize, batch: usize) {
    use lkd_trainer::config::{DistillConfig, KdMethod, TrainConfig};
    let tmp = tempfile::tempdir().expect("tempdir");
    let t_graph = ModelConfig::preset("slak_proxy")
        .build()
        .expect("teacher graph");
    let teacher = tmp.path().join("teacher.safetensors");
    lkd_models::checkpoint::write_safetensors(
        &teacher,
        &Params::init(&t_graph, Device::Cpu, 1)
            .unwrap()
            .to_state_dict()
            .unwrap(),
        None,
    )
    .expect("write teacher");
    let mut cfg =
        TrainConfig::from_toml_str(include_str!("../configs/fmnist-convnext-proxy-nkd.toml"))
            .expect("config");
    cfg.data.dataset =
        DatasetSpec::fashion_mnist_from_env().expect("LKD_FASHION_MNIST (eval \"$(make -s env)\")");
    cfg.data.dataset.limit = Some(2560);
    cfg.data.dataset.val_limit = Some(100);
    cfg.data.workers = 1;
    cfg.optim.epochs = 1;
    cfg.optim.batch_size = batch;
    cfg.run.threads = 1;
    cfg.run.checkpoint_every = 0;
    let mut d = DistillConfig::new(KdMethod::Nkd, teacher);
    d.teacher_model = Some(ModelConfig::preset("slak_proxy"));
    d.cache = lkd_trainer::teacher_cache::CacheSetting::Off;
    cfg.distill = Some(d);
    let config = tmp.path().join("config.toml");
    std::fs::write(&config, cfg.to_toml()).expect("write config");
    let (mut one, mut two, mut one_cpu, mut two_cpu) = (vec![], vec![], vec![], vec![]);
    for round in 0..rounds.max(1) {
        let order: &[usize] = if round % 2 == 0 { &[0, 2] } else { &[2, 0] };
        for &world in order {
            let (ips, cpu) = ddp_run(
                &config,
                &tmp.path().join(format!("r{round}w{world}")),
                world,
            );
            if world == 0 {
                one.push(ips);
                one_cpu.push(cpu);
            } else {
                two.push(ips);
                two_cpu.push(cpu);
            }
        }
    }
    let mut ratios: Vec<f64> = two.iter().zip(&one).map(|(t, o)| t / o).collect();
    ratios.sort_by(f64::total_cmp);
    println!(
        "{{\"impl\":\"lkd\",\"case\":\"ddp\",\"batch_per_worker\":{batch},\"threads_per_worker\":1,\"images\":2560,\"one_worker_img_s\":{},\"two_workers_img_s\":{},\"ratio_median\":{:.3},\"ratio_min\":{:.3},\"ratio_max\":{:.3},\"one_worker_cpu_s\":{},\"two_workers_cpu_s\":{}}}",
        json_list(&one),
        json_list(&two),
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1],
        json_list(&one_cpu),
        json_list(&two_cpu)
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--raw") {
        raw(&args[i + 1..]);
        return;
    }
    let mut c = Criterion::default().configure_from_args();
    nano(&mut c);
    tiny(&mut c);
    kd_epoch(&mut c);
    c.final_summary();
}
