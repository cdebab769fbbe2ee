//! `lkd predict`, `lkd bench` and `lkd serve`: thin wrappers over `lkd-runtime`.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use lkd_runtime::{
    BenchConfig, BenchReport, Classifier, Device, Interpolation, OptLevel, PreprocessOverrides, SessionConfig,
};

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum InterpolationArg {
    Nearest,
    Bilinear,
    Bicubic,
}

impl From<InterpolationArg> for Interpolation {
    fn from(i: InterpolationArg) -> Self {
        match i {
            InterpolationArg::Nearest => Interpolation::Nearest,
            InterpolationArg::Bilinear => Interpolation::Bilinear,
            InterpolationArg::Bicubic => Interpolation::Bicubic,
        }
    }
}

/// Preprocessing flags for ONNX files without lkd metadata (each also overrides the metadata).
#[derive(Args, Clone, Debug, Default)]
pub struct PreprocessArgs {
    /// Model input size: `224` or `H,W`.
    #[arg(long, value_parser = parse_size)]
    pub input_size: Option<[usize; 2]>,
    /// 1 (luma) or 3 (RGB).
    #[arg(long)]
    pub channels: Option<usize>,
    /// Per-channel mean of pixel/255, comma separated.
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    pub mean: Option<Vec<f32>>,
    /// Per-channel std of pixel/255, comma separated.
    #[arg(long, value_delimiter = ',', num_args = 1..)]
    pub std: Option<Vec<f32>>,
    /// Centre-crop fraction: the shorter side is resized to size / crop_pct first.
    #[arg(long)]
    pub crop_pct: Option<f32>,
    #[arg(long, value_enum)]
    pub interpolation: Option<InterpolationArg>,
}

impl PreprocessArgs {
    fn overrides(&self) -> PreprocessOverrides {
        PreprocessOverrides {
            input_size: self.input_size,
            channels: self.channels,
            mean: self.mean.clone(),
            std: self.std.clone(),
            crop_pct: self.crop_pct,
            interpolation: self.interpolation.map(Into::into),
        }
    }
}

fn parse_size(s: &str) -> Result<[usize; 2], String> {
    let parts: Vec<&str> = s.split([',', 'x']).collect();
    let num = |p: &str| p.trim().parse::<usize>().ok().filter(|&v| v > 0);
    match parts.as_slice() {
        [a] => num(a).map(|v| [v, v]),
        [h, w] => num(h).zip(num(w)).map(|(h, w)| [h, w]),
        _ => None,
    }
    .ok_or_else(|| format!("expected `N` or `H,W` with positive integers, found `{s}`"))
}

fn parse_device(s: &str) -> Result<Device, String> {
    s.parse::<Device>().map_err(|e| e.to_string())
}

fn parse_opt_level(s: &str) -> Result<OptLevel, String> {
    s.parse::<OptLevel>().map_err(|e| e.to_string())
}

#[derive(Args, Debug)]
pub struct PredictArgs {
    /// ONNX classifier (as written by `lkd export`, or any single-input NCHW model with flags).
    pub model: PathBuf,
    /// Images to classify (JPEG, PNG, WebP, BMP, GIF).
    #[arg(required = true)]
    pub images: Vec<PathBuf>,
    #[arg(long, default_value_t = 5)]
    pub top_k: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    pub device: Device,
    /// Intra-op threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Images per session run.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    #[command(flatten)]
    pub preprocess: PreprocessArgs,
}

pub fn run_predict(args: PredictArgs) -> anyhow::Result<()> {
    if args.top_k == 0 || args.batch == 0 {
        bail!("--top-k and --batch must be at least 1");
    }
    let start = Instant::now();
    let cfg = SessionConfig { device: args.device, intra_threads: args.threads, ..SessionConfig::default() };
    let mut clf = Classifier::load(&args.model, &cfg, &args.preprocess.overrides())?;
    let mut results = Vec::with_capacity(args.images.len());
    for chunk in args.images.chunks(args.batch) {
        let images = chunk
            .iter()
            .map(|p| {
                let bytes = std::fs::read(p).with_context(|| format!("cannot read image `{}`", p.display()))?;
                Ok((p.display().to_string(), bytes))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let preds = clf.classify(&images, args.top_k)?;
        results.extend(chunk.iter().cloned().zip(preds));
    }
    let info = clf.info();
    if args.json {
        let out: Vec<_> = results
            .iter()
            .map(|(p, preds)| serde_json::json!({ "image": p.display().to_string(), "predictions": preds }))
            .collect();
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "model": info.name, "provider": info.provider, "results": out }))?);
    } else {
        for (p, preds) in &results {
            println!("{}", p.display());
            for pr in preds {
                println!("  {:>7.4}  {} ({})", pr.prob, pr.label, pr.index);
            }
        }
        eprintln!(
            "classified {} image(s) with {} on {} in {:.2} s",
            results.len(),
            info.name,
            info.provider,
            start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    pub model: PathBuf,
    /// A second model measured in the same loop (A/B); reports the ratio of medians.
    #[arg(long)]
    pub vs: Option<PathBuf>,
    /// Batch sizes, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub batch: Vec<usize>,
    /// Intra-op thread counts, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub threads: Vec<usize>,
    #[arg(long, default_value_t = 50)]
    pub iters: usize,
    #[arg(long, default_value_t = 5)]
    pub warmup: usize,
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    pub device: Device,
    /// ONNX Runtime graph optimization: disable, basic, extended or all.
    #[arg(long, default_value = "all", value_parser = parse_opt_level)]
    pub opt_level: OptLevel,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run_bench(args: BenchArgs) -> anyhow::Result<()> {
    let cfg = BenchConfig {
        batch_sizes: args.batch,
        threads: args.threads,
        iters: args.iters,
        warmup: args.warmup,
        session: SessionConfig { device: args.device, opt_level: args.opt_level, ..SessionConfig::default() },
    };
    let report = lkd_runtime::bench(&args.model, args.vs.as_deref(), &cfg)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_bench(&report);
    }
    Ok(())
}

fn print_bench(report: &BenchReport) {
    println!(
        "{:<20} {:<6} {:>5} {:>7} {:>9} {:>9} {:>9} {:>10} {:>9}",
        "model", "device", "batch", "threads", "p50 ms", "p90 ms", "p99 ms", "img/s", "GFLOP/s"
    );
    for r in &report.results {
        let gf = r.achieved_gflop_s.map(|g| format!("{g:.2}")).unwrap_or_else(|| "-".into());
        println!(
            "{:<20} {:<6} {:>5} {:>7} {:>9.3} {:>9.3} {:>9.3} {:>10.1} {:>9}",
            r.model, r.device, r.batch, r.threads, r.p50_ms, r.p90_ms, r.p99_ms, r.throughput_img_s, gf
        );
    }
    for ab in &report.ab {
        println!(
            "A/B batch {} threads {}: {} p50 {:.3} ms, {} p50 {:.3} ms, ratio {}/{} = {:.3}",
            ab.batch, ab.threads, ab.a, ab.a_p50_ms, ab.b, ab.b_p50_ms, ab.b, ab.a, ab.ratio_p50
        );
    }
}

pub use lkd_runtime::server::args::ServeArgs;

/// `lkd serve`: the runtime crate's implementation, shared with `lkd-run serve`.
pub fn run_serve(args: ServeArgs) -> anyhow::Result<()> {
    lkd_runtime::server::args::run_serve(&args)?;
    Ok(())
}
