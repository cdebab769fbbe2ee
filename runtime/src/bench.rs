//! Latency/throughput measurement of ONNX sessions, and A/B comparison of two models measured
//! in the same loop (so machine noise hits both alike), in alternating order, with spinning off,
//! the ratio reported with its spread over rounds (see [`lkd_ort::ab`]).

use std::path::Path;
use std::time::Instant;

use lkd_ort::{interleave, RatioSpread};
use lkd_util::quantile;
use serde::{Deserialize, Serialize};

use crate::error::{Result, RuntimeError};
use crate::preprocess::{resolve_preprocess, PreprocessOverrides};
use crate::session::{Engine, Model, SessionConfig};

#[derive(Clone, Debug)]
pub struct BenchConfig {
    pub batch_sizes: Vec<usize>,
    /// Intra-op thread counts; each gets its own session.
    pub threads: Vec<usize>,
    pub iters: usize,
    pub warmup: usize,
    /// Device, optimization level etc.; its thread count is replaced by each of `threads`.
    pub session: SessionConfig,
    /// The engine of the measured model (A).
    pub engine: Engine,
    /// Measure the same file on this engine too, as B of an A/B (with `vs`, B is that file on
    /// this engine).
    pub vs_engine: Option<Engine>,
}

impl Default for BenchConfig {
    fn default() -> Self {
        Self {
            batch_sizes: vec![1],
            threads: vec![1],
            iters: 50,
            warmup: 5,
            session: SessionConfig::default(),
            engine: Engine::Ort,
            vs_engine: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BenchResult {
    pub model: String,
    pub provider: String,
    pub device: String,
    pub batch: usize,
    pub threads: usize,
    pub iters: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub mean_ms: f64,
    pub min_ms: f64,
    pub throughput_img_s: f64,
    /// From the model's `lkd.gflops` metadata.
    pub gflops_per_image: Option<f64>,
    pub achieved_gflop_s: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AbResult {
    pub batch: usize,
    pub threads: usize,
    pub a: String,
    pub b: String,
    pub a_p50_ms: f64,
    pub b_p50_ms: f64,
    /// Per-round `b / a` latency ratio: above 1 means B is slower.
    pub ratio: RatioSpread,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BenchReport {
    pub results: Vec<BenchResult>,
    pub ab: Vec<AbResult>,
}

fn summarize(model: &Model, batch: usize, threads: usize, mut ms: Vec<f64>) -> BenchResult {
    let info = model.info();
    ms.sort_by(f64::total_cmp);
    let mean = ms.iter().sum::<f64>() / ms.len() as f64;
    let throughput = batch as f64 * 1000.0 / mean;
    BenchResult {
        model: info.name.clone(),
        provider: info.provider.to_string(),
        device: info.device.to_string(),
        batch,
        threads,
        iters: ms.len(),
        p50_ms: quantile(&ms, 0.50),
        p90_ms: quantile(&ms, 0.90),
        p99_ms: quantile(&ms, 0.99),
        mean_ms: mean,
        min_ms: ms[0],
        throughput_img_s: throughput,
        gflops_per_image: info.gflops,
        achieved_gflop_s: info.gflops.map(|g| g * throughput),
    }
}

/// A deterministic pseudo-random input of the model's shape at `batch`.
pub fn synthetic_input(model: &Model, batch: usize) -> Result<(Vec<f32>, [usize; 4])> {
    let info = model.info();
    let s = &info.input_shape;
    let dims = if s[1..].iter().all(|&d| d > 0) {
        [s[1] as usize, s[2] as usize, s[3] as usize]
    } else {
        let p = resolve_preprocess(info, &PreprocessOverrides::default()).map_err(|e| {
            RuntimeError::Bench(format!(
                "input shape {s:?} is dynamic and the preprocessing is unknown: {e}"
            ))
        })?;
        [p.channels, p.input_size[0], p.input_size[1]]
    };
    let shape = [batch, dims[0], dims[1], dims[2]];
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let data = (0..shape.iter().product::<usize>())
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 24) as f32 * 4.0 - 2.0
        })
        .collect();
    model.check_input(shape)?;
    Ok((data, shape))
}

fn validate(batch: usize, iters: usize) -> Result<()> {
    if batch == 0 || iters == 0 {
        return Err(RuntimeError::Bench(format!(
            "batch and iters must be positive, found {batch} and {iters}"
        )));
    }
    Ok(())
}

fn timed(model: &mut Model, x: &[f32], shape: [usize; 4]) -> Result<f64> {
    let t = Instant::now();
    model.run(x, shape)?;
    Ok(t.elapsed().as_secs_f64() * 1e3)
}

/// Times `iters` runs of one session after `warmup` untimed ones.
pub fn bench_model(
    model: &mut Model,
    batch: usize,
    threads: usize,
    iters: usize,
    warmup: usize,
) -> Result<BenchResult> {
    validate(batch, iters)?;
    let (x, shape) = synthetic_input(model, batch)?;
    for _ in 0..warmup {
        model.run(&x, shape)?;
    }
    let mut ms = Vec::with_capacity(iters);
    for _ in 0..iters {
        ms.push(timed(model, &x, shape)?);
    }
    Ok(summarize(model, batch, threads, ms))
}

/// Runs `a` and `b` in rounds, alternating which goes first, and reports both plus the per-round
/// ratio with its spread. Both sessions must have spinning off: two spinning pools in one
/// process steal the cores from each other in a fixed order and the ratio then measures the
/// order, not the models.
pub fn bench_ab(
    a: &mut Model,
    b: &mut Model,
    batch: usize,
    threads: usize,
    iters: usize,
    warmup: usize,
) -> Result<(BenchResult, BenchResult, AbResult)> {
    validate(batch, iters)?;
    for m in [&*a, &*b] {
        if m.info().spin {
            return Err(RuntimeError::Bench(format!(
                "`{}` was loaded with spinning on; an A/B in one process needs both sessions built with \
                 `SessionConfig {{ spin: false, .. }}`",
                m.info().name
            )));
        }
    }
    let (xa, sa) = synthetic_input(a, batch)?;
    let (xb, sb) = synthetic_input(b, batch)?;
    let times = interleave(
        iters,
        warmup,
        || a.run(&xa, sa).map(drop),
        || b.run(&xb, sb).map(drop),
    )?;
    let ratio = RatioSpread::of(&times)?;
    let ra = summarize(a, batch, threads, times.a_ms);
    let rb = summarize(b, batch, threads, times.b_ms);
    let ab = AbResult {
        batch,
        threads,
        a: ra.model.clone(),
        b: rb.model.clone(),
        a_p50_ms: ra.p50_ms,
        b_p50_ms: rb.p50_ms,
        ratio,
    };
    Ok((ra, rb, ab))
}

/// Every (threads × batch) combination for `model`, and for `vs` (or `model` on
/// `cfg.vs_engine`) interleaved with it.
pub fn bench(model: &Path, vs: Option<&Path>, cfg: &BenchConfig) -> Result<BenchReport> {
    if cfg.batch_sizes.is_empty() || cfg.threads.is_empty() {
        return Err(RuntimeError::Bench(
            "give at least one batch size and one thread count".into(),
        ));
    }
    if cfg.threads.contains(&0) {
        return Err(RuntimeError::Bench("thread counts must be positive".into()));
    }
    let mut report = BenchReport::default();
    for &t in &cfg.threads {
        let mut scfg = SessionConfig {
            intra_threads: Some(t),
            inter_threads: Some(1),
            ..cfg.session.clone()
        };
        let ab = vs.is_some() || cfg.vs_engine.is_some();
        if ab {
            scfg.spin = false;
        }
        let b_engine = cfg.vs_engine.unwrap_or(cfg.engine);
        let b_path = vs.unwrap_or(model);
        // OpenVINO is compiled for each measured batch (static shapes, as a deployment at that
        // batch would be); ONNX Runtime sessions are loaded once per thread count.
        let per_batch = |e: Engine| matches!(e, Engine::OpenVino { .. });
        let load = |path: &Path, engine: Engine, n: usize| {
            Model::load_for_batch(path, &scfg, engine, per_batch(engine).then_some(n))
        };
        let first = cfg.batch_sizes[0];
        let mut a = load(model, cfg.engine, first)?;
        let mut b = if ab {
            Some(load(b_path, b_engine, first)?)
        } else {
            None
        };
        for &n in &cfg.batch_sizes {
            if n != first && per_batch(cfg.engine) {
                a = load(model, cfg.engine, n)?;
            }
            if let Some(b) = b.as_mut().filter(|_| n != first && per_batch(b_engine)) {
                *b = load(b_path, b_engine, n)?;
            }
            match b.as_mut() {
                None => report
                    .results
                    .push(bench_model(&mut a, n, t, cfg.iters, cfg.warmup)?),
                Some(b) => {
                    let (ra, rb, mut ab) = bench_ab(&mut a, b, n, t, cfg.iters, cfg.warmup)?;
                    if b_engine != cfg.engine {
                        // Same file on two engines: the names alone would not tell A from B.
                        ab.a = format!("{} [{}]", ab.a, ra.provider);
                        ab.b = format!("{} [{}]", ab.b, rb.provider);
                    }
                    report.results.extend([ra, rb]);
                    report.ab.push(ab);
                }
            }
        }
    }
    Ok(report)
}
