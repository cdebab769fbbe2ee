//! Data-parallel training over real c10d Gloo on loopback with real worker processes (this test
//! binary re-runs itself as `worker_entry` with a torchrun-style environment), and mixed
//! precision through the real training step.
//!
//! The equality checks compare N workers × batch B with one plain process × batch N·B on the
//! nano presets: convnext_proxy has LayerNorm only (BatchNorm would normalise per worker, as in
//! DDP), drop path is 0 and there is no Mixup (both are drawn per worker).

mod common;

use anyhow::{bail, ensure, Result};
use lkd_models::checkpoint::{read_checkpoint, write_safetensors};
use lkd_models::HostData;
use lkd_trainer::config::{DistillConfig, KdMethod, TrainConfig};
use lkd_trainer::executor::Params;
use lkd_trainer::lkd_dist::LaunchEnv;
use lkd_trainer::rundir::RunDir;
use lkd_trainer::teacher_cache::CacheSetting;
use lkd_trainer::train::{train, train_parallel, Start};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const ROLE_VAR: &str = "LKD_DP_TEST_ROLE";
const CONFIG_VAR: &str = "LKD_DP_TEST_CONFIG";
const OUT_VAR: &str = "LKD_DP_TEST_OUT";
const RESUME_VAR: &str = "LKD_DP_TEST_RESUME";

/// A tiny Fashion-MNIST run: `limit` images, batch `batch`, one epoch, a metric line per step,
/// evaluation on 200 images, one thread.
fn config(preset: &str, batch: usize, limit: usize) -> TrainConfig {
    let text =
        std::fs::read_to_string(common::repo_root().join("configs/fmnist-convnext-proxy.toml"))
            .unwrap();
    let mut cfg = TrainConfig::from_toml_str(&text).unwrap();
    cfg.model = lkd_models::ModelConfig::preset(preset);
    cfg.model.drop_path = Some(0.0);
    cfg.data.dataset.path = std::env::var("LKD_FASHION_MNIST")
        .expect("LKD_FASHION_MNIST is not set: run through `make test`")
        .into();
    cfg.data.dataset.limit = Some(limit);
    cfg.data.dataset.val_limit = Some(200);
    cfg.data.workers = 1;
    cfg.optim.epochs = 1;
    cfg.optim.batch_size = batch;
    cfg.optim.warmup_epochs = 0.5;
    cfg.run.log_every = 1;
    cfg.run.checkpoint_every = 0;
    cfg.run.threads = 1;
    cfg.run.dist_timeout_s = 30;
    cfg
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `world` workers training `cfg` into `out` (or resuming it).
fn spawn_workers(world: usize, cfg: &TrainConfig, out: &Path, resume: bool) -> Result<Vec<Child>> {
    let cfg_path = out.with_extension("toml");
    std::fs::write(&cfg_path, cfg.to_toml())?;
    let port = free_port();
    (0..world)
        .map(|rank| {
            let launch = LaunchEnv {
                rank,
                world_size: world,
                local_rank: rank,
                master_addr: "127.0.0.1".into(),
                master_port: port,
            };
            let mut cmd = Command::new(std::env::current_exe()?);
            cmd.args(["--exact", "worker_entry", "--nocapture", "--test-threads=1"])
                .env(ROLE_VAR, "train")
                .env(CONFIG_VAR, &cfg_path)
                .env(OUT_VAR, out)
                .env(RESUME_VAR, if resume { "1" } else { "0" })
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .envs(launch.vars());
            Ok(cmd.spawn()?)
        })
        .collect()
}

/// Waits for `child` until `deadline`; one still running then is killed and reported as hung.
fn finish(name: &str, mut child: Child, deadline: Instant) -> Result<Output> {
    loop {
        if child.try_wait()?.is_some() {
            return Ok(child.wait_with_output()?);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output()?;
            bail!(
                "{name} still running at the deadline (hung); stderr:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn run_workers(world: usize, cfg: &TrainConfig, out: &Path, resume: bool) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(180);
    for (rank, child) in spawn_workers(world, cfg, out, resume)?
        .into_iter()
        .enumerate()
    {
        let output = finish(&format!("rank {rank}"), child, deadline)?;
        ensure!(
            output.status.success(),
            "rank {rank} failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// The worker side: does nothing unless started by one of the tests below.
#[test]
fn worker_entry() {
    if std::env::var(ROLE_VAR).is_err() {
        return;
    }
    let launch = LaunchEnv::from_env()
        .expect("launch env")
        .expect("WORLD_SIZE set");
    let cfg = TrainConfig::load(Path::new(&std::env::var(CONFIG_VAR).unwrap())).unwrap();
    let out = PathBuf::from(std::env::var(OUT_VAR).unwrap());
    let resume = std::env::var(RESUME_VAR).as_deref() == Ok("1");
    if let Err(e) = (if resume {
        Ok(Start::resume(&out))
    } else {
        Start::new(&cfg, &out)
    })
    .and_then(|s| train_parallel(s, false, &launch))
    {
        panic!("rank {}: {e}", launch.rank);
    }
}

/// Largest |a − b| over every tensor of two weight files (same keys required).
fn max_weight_diff(a: &Path, b: &Path) -> Result<f64> {
    let (a, b) = (read_checkpoint(a)?, read_checkpoint(b)?);
    ensure!(a.keys().eq(b.keys()), "weight files hold different tensors");
    let mut max = 0f64;
    for (k, ta) in &a {
        match (&ta.data, &b[k].data) {
            (HostData::F32(x), HostData::F32(y)) => {
                for (p, q) in x.iter().zip(y) {
                    max = max.max(f64::from((p - q).abs()));
                }
            }
            (HostData::I64(x), HostData::I64(y)) => ensure!(x == y, "{k} differs"),
            _ => bail!("{k}: different dtypes"),
        }
    }
    Ok(max)
}

fn metric_lines(dir: &Path) -> Vec<serde_json::Value> {
    RunDir::open(dir).unwrap().read_metrics().unwrap()
}

/// Step losses and the epoch-end evaluation of two runs agree.
fn assert_same_metrics(single: &Path, parallel: &Path) -> Result<()> {
    let (a, b) = (metric_lines(single), metric_lines(parallel));
    ensure!(
        a.len() == b.len(),
        "{} vs {} metric lines",
        a.len(),
        b.len()
    );
    for (x, y) in a.iter().zip(&b) {
        for key in ["step", "epoch"] {
            ensure!(x[key] == y[key], "{key}: {x} vs {y}");
        }
        for key in ["loss", "val_loss", "top1", "top5"] {
            if let (Some(p), Some(q)) = (x[key].as_f64(), y[key].as_f64()) {
                ensure!((p - q).abs() <= 1e-4, "{key}: {p} vs {q} ({x} / {y})");
            } else {
                ensure!(x[key].is_null() == y[key].is_null(), "{key}: {x} vs {y}");
            }
        }
    }
    ensure!(
        a.iter().any(|l| l.get("top1").is_some()),
        "the run was not evaluated"
    );
    Ok(())
}

#[test]
fn two_workers_equal_one_worker_with_the_global_batch_and_resume_with_one() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    // 128 images, global batch 32: four steps, then evaluation.
    let single = tmp.path().join("single");
    let s =
        Start::new(&config("convnext_proxy", 32, 128), &single).and_then(|s| train(s, false))?;
    ensure!(s.finished && s.steps == 4, "{s:?}");

    let parallel = tmp.path().join("parallel");
    run_workers(2, &config("convnext_proxy", 16, 128), &parallel, false)?;
    let diff = max_weight_diff(
        &single.join("last.safetensors"),
        &parallel.join("last.safetensors"),
    )?;
    eprintln!("supervised: 2 workers x 16 vs 1 x 32, max |dw| = {diff:.3e}");
    ensure!(diff <= 1e-5, "weights differ by {diff}");
    assert_same_metrics(&single, &parallel)?;
    let lines = metric_lines(&parallel);
    ensure!(lines[0]["world_size"] == 2, "{}", lines[0]);

    // Three steps with two workers, then the rest with one: the checkpoint's global batch (32)
    // is kept, so the run ends where the uninterrupted one does.
    let resumed = tmp.path().join("resumed");
    let mut cfg = config("convnext_proxy", 16, 128);
    cfg.run.max_steps = Some(3);
    run_workers(2, &cfg, &resumed, false)?;
    let s = train(Start::resume(&resumed), false)?;
    ensure!(s.finished && s.steps == 4 && s.world_size == 1, "{s:?}");
    let diff = max_weight_diff(
        &single.join("last.safetensors"),
        &resumed.join("last.safetensors"),
    )?;
    eprintln!("2 workers x 16 for 3 steps, resumed by 1 worker: max |dw| = {diff:.3e}");
    ensure!(diff <= 1e-5, "weights differ by {diff}");
    assert_same_metrics(&single, &resumed)?;

    // Three workers cannot split a global batch of 32.
    let err = {
        let mut workers = spawn_workers(3, &cfg, &resumed, true)?;
        let deadline = Instant::now() + Duration::from_secs(120);
        let outs: Vec<Output> = workers
            .drain(..)
            .enumerate()
            .map(|(r, c)| finish(&format!("rank {r}"), c, deadline))
            .collect::<Result<_>>()?;
        ensure!(
            outs.iter().all(|o| !o.status.success()),
            "3 workers resumed"
        );
        String::from_utf8_lossy(&outs[0].stderr).to_string()
    };
    ensure!(
        err.contains("trains with a global batch of 32, which 3 workers cannot split evenly"),
        "{err}"
    );
    Ok(())
}

#[test]
fn two_workers_distil_as_one_worker_with_the_global_batch() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    // An untrained slak_proxy teacher saved as a checkpoint file (BatchNorm in eval mode).
    let teacher_model = lkd_models::ModelConfig::preset("slak_proxy");
    let teacher_graph = teacher_model.build()?;
    let teacher = tmp.path().join("teacher.safetensors");
    write_safetensors(
        &teacher,
        &Params::init(&teacher_graph, tch::Device::Cpu, 3)
            .unwrap()
            .to_state_dict()
            .unwrap(),
        None,
    )?;
    let distill = |batch: usize, cache: &str| {
        let mut cfg = config("convnext_proxy", batch, 128);
        let mut d = DistillConfig::new(KdMethod::KdFd, teacher.clone());
        d.teacher_model = Some(teacher_model.clone());
        d.alpha = Some(0.5);
        d.temperature = 2.0;
        d.cache = CacheSetting::Dir(tmp.path().join(cache));
        cfg.distill = Some(d);
        cfg
    };
    let single = tmp.path().join("single");
    Start::new(&distill(32, "cache-single"), &single).and_then(|s| train(s, false))?;
    let parallel = tmp.path().join("parallel");
    run_workers(2, &distill(16, "cache-parallel"), &parallel, false)?;
    let diff = max_weight_diff(
        &single.join("last.safetensors"),
        &parallel.join("last.safetensors"),
    )?;
    eprintln!("distillation (kd+fd): 2 workers x 16 vs 1 x 32, max |dw| = {diff:.3e}");
    ensure!(diff <= 1e-5, "weights differ by {diff}");
    assert_same_metrics(&single, &parallel)?;
    // The projector is trained and averaged too.
    let (a, b) = (
        read_checkpoint(&single.join("last.state.safetensors"))?,
        read_checkpoint(&parallel.join("last.state.safetensors"))?,
    );
    let w = lkd_trainer::train::PROJECTOR_WEIGHT;
    match (&a[w].data, &b[w].data) {
        (HostData::F32(x), HostData::F32(y)) => {
            let d = x
                .iter()
                .zip(y)
                .map(|(p, q)| (p - q).abs())
                .fold(0f32, f32::max);
            ensure!(d <= 1e-5, "projector differs by {d}");
        }
        _ => bail!("projector is not f32"),
    }
    // Each rank recorded its own teacher-output stream under a key naming its rank.
    let mut shards: Vec<serde_json::Value> = std::fs::read_dir(tmp.path().join("cache-parallel"))?
        .map(|e| {
            let key = std::fs::read(e?.path().join("key.json"))?;
            Ok(serde_json::from_slice::<serde_json::Value>(&key)?["shard"].clone())
        })
        .collect::<Result<_>>()?;
    shards.sort_by_key(|s| s[0].as_u64());
    ensure!(
        shards == vec![serde_json::json!([0, 2]), serde_json::json!([1, 2])],
        "{shards:?}"
    );
    Ok(())
}

/// Kills rank `victim` of a 2-worker run once rank 0 has logged a few steps; the survivor must
/// end with a c10d error (not hang).
fn kill_one_worker(victim: usize) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut cfg = config("convnext_proxy", 16, 128);
    cfg.optim.epochs = 500;
    cfg.run.dist_timeout_s = 20;
    let out = tmp.path().join("run");
    let mut workers = spawn_workers(2, &cfg, &out, false)?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !out.join("metrics.jsonl").is_file() || metric_lines(&out).len() < 3 {
        if Instant::now() > deadline {
            for w in &mut workers {
                let _ = w.kill();
            }
            bail!("rank 0 logged no steps in 120 s");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let survivor_rank = 1 - victim;
    workers[victim].kill()?;
    workers[victim].wait()?;
    let survivor = workers.swap_remove(survivor_rank);
    let killed = Instant::now();
    let output = finish(
        &format!("rank {survivor_rank}"),
        survivor,
        killed + Duration::from_secs(60),
    )?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!(
        "rank {survivor_rank} ended {:.1} s after rank {victim} was killed",
        killed.elapsed().as_secs_f64()
    );
    ensure!(
        !output.status.success(),
        "rank {survivor_rank} succeeded:\n{stderr}"
    );
    ensure!(
        stderr.contains(&format!("rank {survivor_rank}: c10d"))
            && stderr.contains(&format!("failed on rank {survivor_rank}")),
        "no c10d error on rank {survivor_rank}:\n{stderr}"
    );
    Ok(())
}

#[test]
fn a_killed_worker_ends_the_other_with_an_error() -> Result<()> {
    kill_one_worker(1)
}

/// Rank 0 also serves the rendezvous store.
#[test]
fn a_killed_rank_0_ends_the_other_with_an_error() -> Result<()> {
    kill_one_worker(0)
}

/// fp16 through the real training step on CPU: with a loss scale that overflows, every
/// gradient is inf/NaN, so each step is skipped (the weights stay at their seeded init) and the
/// scale backs off by half per step; a sane scale trains.
#[test]
fn fp16_loss_scaling_skips_overflowing_steps_and_backs_off() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let mut cfg = config("convnext_proxy", 16, 64);
    cfg.run.precision = "fp16".into();
    cfg.run.grad_scaler.init_scale = 2f64.powi(127);
    cfg.run.max_steps = Some(3);
    let dir = tmp.path().join("overflow");
    let s = Start::new(&cfg, &dir).and_then(|s| train(s, false))?;
    ensure!(s.steps == 3 && s.skipped_steps == 3, "{s:?}");
    let lines = metric_lines(&dir);
    let scales: Vec<f64> = lines
        .iter()
        .map(|l| l["loss_scale"].as_f64().unwrap())
        .collect();
    ensure!(
        scales == vec![2f64.powi(126), 2f64.powi(125), 2f64.powi(124)],
        "{scales:?}"
    );
    ensure!(lines[2]["skipped_steps"] == 3, "{}", lines[2]);
    let init = tmp.path().join("init.safetensors");
    let graph = RunDir::open(&dir)?.config()?.model.build()?;
    write_safetensors(
        &init,
        &Params::init(&graph, tch::Device::Cpu, cfg.run.seed)
            .unwrap()
            .to_state_dict()
            .unwrap(),
        None,
    )?;
    ensure!(max_weight_diff(&init, &dir.join("last.safetensors"))? == 0.0);

    cfg.run.grad_scaler.init_scale = 1024.0;
    let dir = tmp.path().join("sane");
    let s = Start::new(&cfg, &dir).and_then(|s| train(s, false))?;
    ensure!(s.skipped_steps == 0, "{s:?}");
    ensure!(max_weight_diff(&init, &dir.join("last.safetensors"))? > 0.0);
    Ok(())
}

/// bf16 autocast is real (weights differ from fp32's) and trains like fp32 (step losses within
/// 5 %), through the same training step as on CUDA.
#[test]
fn bf16_autocast_trains_close_to_fp32() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let run = |precision: &str| -> Result<(PathBuf, Vec<f64>)> {
        let mut cfg = config("convnext_proxy", 16, 64);
        cfg.run.precision = precision.into();
        let dir = tmp.path().join(precision);
        Start::new(&cfg, &dir).and_then(|s| train(s, false))?;
        let losses = metric_lines(&dir)
            .iter()
            .filter_map(|l| l["loss"].as_f64())
            .collect();
        Ok((dir, losses))
    };
    let (fp32, fp32_losses) = run("fp32")?;
    let (bf16, bf16_losses) = run("bf16")?;
    ensure!(fp32_losses.len() == 4 && bf16_losses.len() == 4);
    for (a, b) in fp32_losses.iter().zip(&bf16_losses) {
        ensure!(
            (a - b).abs() <= 0.05 * a.abs(),
            "loss {b} (bf16) vs {a} (fp32)"
        );
    }
    let diff = max_weight_diff(
        &fp32.join("last.safetensors"),
        &bf16.join("last.safetensors"),
    )?;
    ensure!(
        diff > 0.0,
        "bf16 gave fp32's weights exactly: autocast did not run"
    );
    Ok(())
}

#[test]
fn bad_precision_and_timeout_are_exact_errors() {
    let cfg = config("convnext_proxy", 16, 64);
    let err = |set: &str| {
        cfg.with_overrides(&[set.to_string()])
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        err("run.precision=fp8"),
        "config: run.precision = \"fp8\": expected \"fp32\", \"bf16\" or \"fp16\""
    );
    assert_eq!(
        err("run.dist_timeout_s=0"),
        "config: run.dist_timeout_s must be in 1..=86400 (seconds), found 0"
    );
    assert_eq!(
        err("run.grad_scaler.backoff_factor=2.0"),
        "config: grad scaler: backoff_factor 2 must be in (0, 1)"
    );
    // Defaults stay out of config.toml, so older run dirs and digests are unchanged.
    let text = cfg.to_toml();
    assert!(
        !text.contains("precision")
            && !text.contains("grad_scaler")
            && text.contains("dist_timeout_s = 30"),
        "{text}"
    );
    let ok = cfg
        .with_overrides(&["run.precision=\"bf16\"".to_string()])
        .unwrap();
    assert_eq!(
        ok.run.precision().unwrap(),
        lkd_trainer::precision::Precision::Bf16
    );
}
