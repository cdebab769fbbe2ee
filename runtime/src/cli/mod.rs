//! Command-line arguments and actions shared by `lkd` and `lkd-run` (`predict`, `bench`,
//! `info`, and `serve` in [`serve`]): one set of clap structs and one implementation, so the two
//! binaries cannot drift. The whole command line of the runtime lives in this module.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::bail;
use clap::{Args, ValueEnum};
use lkd_util::Device;

pub mod serve;

pub use serve::{run_serve, ServeArgs};

use crate::{
    resolve_preprocess, BenchConfig, BenchReport, Classifier, Engine, Interpolation, Model,
    OptLevel, Precision, PreprocessOverrides, RuntimeError, SessionConfig,
};

/// `--engine`: what runs the model.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum EngineArg {
    /// ONNX Runtime (CPU or CUDA).
    #[default]
    Ort,
    /// OpenVINO's CPU runtime (`LKD_OPENVINO_LIB`).
    #[value(name = "openvino")]
    OpenVino,
}

/// The message for `--precision` given without an OpenVINO engine.
pub const PRECISION_NEEDS_OPENVINO: &str =
    "--precision applies to --engine openvino only (ONNX Runtime computes in the model's own f32)";

impl EngineArg {
    fn with_precision(self, precision: Option<Precision>) -> Engine {
        match self {
            EngineArg::Ort => Engine::Ort,
            EngineArg::OpenVino => Engine::OpenVino {
                precision: precision.unwrap_or_default(),
            },
        }
    }
}

/// Engine flags shared by predict, bench, info and serve.
#[derive(Args, Clone, Debug, Default)]
pub struct EngineArgs {
    /// Inference engine: `ort` (ONNX Runtime, CPU or CUDA) or `openvino` (OpenVINO, CPU only).
    /// An engine that cannot load is an error, never replaced by the other.
    #[arg(long, value_enum, default_value_t = EngineArg::Ort)]
    pub engine: EngineArg,
    /// OpenVINO's arithmetic: `f32` (default; logits match ONNX Runtime) or `bf16` (an error
    /// where the CPU lacks it). Only with --engine openvino.
    #[arg(long, value_enum)]
    pub precision: Option<Precision>,
}

impl EngineArgs {
    /// The engine these flags choose; `--precision` without `--engine openvino` is an error.
    pub fn engine(&self) -> Result<Engine, RuntimeError> {
        if self.precision.is_some() && self.engine != EngineArg::OpenVino {
            return Err(RuntimeError::EngineSetting(PRECISION_NEEDS_OPENVINO.into()));
        }
        Ok(self.engine.with_precision(self.precision))
    }
}

/// Whether ONNX Runtime's idle intra-op threads spin (`on`) or sleep (`off`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Spin {
    On,
    #[default]
    Off,
}

impl Spin {
    pub fn enabled(self) -> bool {
        self == Spin::On
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
    pub interpolation: Option<Interpolation>,
}

impl PreprocessArgs {
    pub fn overrides(&self) -> PreprocessOverrides {
        PreprocessOverrides {
            input_size: self.input_size,
            channels: self.channels,
            mean: self.mean.clone(),
            std: self.std.clone(),
            crop_pct: self.crop_pct,
            interpolation: self.interpolation,
        }
    }
}

pub fn parse_size(s: &str) -> Result<[usize; 2], RuntimeError> {
    let parts: Vec<&str> = s.split([',', 'x']).collect();
    let num = |p: &str| p.trim().parse::<usize>().ok().filter(|&v| v > 0);
    match parts.as_slice() {
        [a] => num(a).map(|v| [v, v]),
        [h, w] => num(h).zip(num(w)).map(|(h, w)| [h, w]),
        _ => None,
    }
    .ok_or_else(|| RuntimeError::Flag {
        expected: "`N` or `H,W` with positive integers",
        found: s.to_string(),
    })
}

pub fn parse_device(s: &str) -> Result<Device, lkd_util::DeviceError> {
    s.parse::<Device>()
}

pub fn parse_opt_level(s: &str) -> Result<OptLevel, lkd_ort::OrtError> {
    OptLevel::parse(s)
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
    /// Idle ONNX Runtime threads spin for work (lower latency under constant load, but they
    /// burn cores other processes need).
    #[arg(long, value_enum, default_value_t = Spin::Off)]
    pub spin: Spin,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Images per session run.
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    #[command(flatten)]
    pub preprocess: PreprocessArgs,
}

/// An image file, read within `lkd_preprocess::DEFAULT_MAX_FILE_BYTES` (devices and FIFOs
/// refused, the format sniffed first): an unknown format is a decode error like any other.
fn read_image(p: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    use lkd_preprocess::PreprocessError;
    lkd_preprocess::read_image_file(p, lkd_preprocess::DEFAULT_MAX_FILE_BYTES).map_err(|e| {
        let name = p.display().to_string();
        match e {
            PreprocessError::Read(io) => {
                anyhow::Error::new(io).context(format!("cannot read image `{name}`"))
            }
            e @ PreprocessError::UnknownFormat => crate::RuntimeError::Image {
                name: Some(name),
                source: e,
            }
            .into(),
            other => anyhow::Error::new(other).context(format!("cannot read image `{name}`")),
        }
    })
}

pub fn run_predict(args: PredictArgs) -> anyhow::Result<()> {
    if args.top_k == 0 || args.batch == 0 {
        bail!("--top-k and --batch must be at least 1");
    }
    let engine = args.engine.engine()?;
    let start = Instant::now();
    let cfg = SessionConfig {
        device: args.device,
        intra_threads: args.threads,
        spin: args.spin.enabled(),
        ..SessionConfig::default()
    };
    let mut clf = Classifier::load_with(&args.model, &cfg, engine, &args.preprocess.overrides())?;
    let mut results = Vec::with_capacity(args.images.len());
    for chunk in args.images.chunks(args.batch) {
        let images = chunk
            .iter()
            .map(|p| {
                let bytes = read_image(p)?;
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
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "model": info.name, "provider": info.provider, "results": out })
            )?
        );
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
    /// A second model measured in the same loop (A/B): alternating order, spinning off, the
    /// ratio reported with its spread over rounds.
    #[arg(long)]
    pub vs: Option<PathBuf>,
    /// Measure the same file (or --vs's) on this engine too, as B of the A/B: the engines
    /// side by side in one loop, the ratio B/A with its spread. --precision applies to the
    /// OpenVINO side.
    #[arg(long, value_enum)]
    pub vs_engine: Option<EngineArg>,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Batch sizes, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub batch: Vec<usize>,
    /// Intra-op thread counts, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    pub threads: Vec<usize>,
    /// Timed runs (rounds of A and B with --vs).
    #[arg(long, default_value_t = 50)]
    pub iters: usize,
    #[arg(long, default_value_t = 5)]
    pub warmup: usize,
    #[arg(long, default_value = "cpu", value_parser = parse_device)]
    pub device: Device,
    /// Idle thread spinning of the measured session; must stay off with --vs.
    #[arg(long, value_enum, default_value_t = Spin::Off)]
    pub spin: Spin,
    /// ONNX Runtime graph optimization: disable, basic, extended or all.
    #[arg(long, default_value = "all", value_parser = parse_opt_level)]
    pub opt_level: OptLevel,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run_bench(args: BenchArgs) -> anyhow::Result<()> {
    if (args.vs.is_some() || args.vs_engine.is_some()) && args.spin.enabled() {
        bail!(
            "--spin on cannot be used with --vs or --vs-engine: two spinning thread pools in one process steal the cores \
             from each other and the ratio then measures the order, not the models"
        );
    }
    let precision = args.engine.precision;
    let any_openvino =
        args.engine.engine == EngineArg::OpenVino || args.vs_engine == Some(EngineArg::OpenVino);
    if precision.is_some() && !any_openvino {
        return Err(RuntimeError::EngineSetting(PRECISION_NEEDS_OPENVINO.into()).into());
    }
    let any_ort = args.engine.engine == EngineArg::Ort || args.vs_engine == Some(EngineArg::Ort);
    if args.opt_level != OptLevel::All && !any_ort {
        return Err(RuntimeError::EngineSetting(
            "--opt-level is an ONNX Runtime setting; OpenVINO optimizes the graph itself \
             (drop --opt-level or measure an --engine ort side)"
                .into(),
        )
        .into());
    }
    let cfg = BenchConfig {
        engine: args.engine.engine.with_precision(precision),
        vs_engine: args.vs_engine.map(|e| e.with_precision(precision)),
        batch_sizes: args.batch,
        threads: args.threads,
        iters: args.iters,
        warmup: args.warmup,
        session: SessionConfig {
            device: args.device,
            opt_level: args.opt_level,
            spin: args.spin.enabled(),
            ..SessionConfig::default()
        },
    };
    let report = crate::bench(&args.model, args.vs.as_deref(), &cfg)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_bench(&report);
    }
    Ok(())
}

pub fn print_bench(report: &BenchReport) {
    println!(
        "{:<20} {:<6} {:>5} {:>7} {:>9} {:>9} {:>9} {:>10} {:>9}",
        "model", "device", "batch", "threads", "p50 ms", "p90 ms", "p99 ms", "img/s", "GFLOP/s"
    );
    for r in &report.results {
        let gf = r
            .achieved_gflop_s
            .map(|g| format!("{g:.2}"))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<20} {:<6} {:>5} {:>7} {:>9.3} {:>9.3} {:>9.3} {:>10.1} {:>9}",
            r.model,
            r.device,
            r.batch,
            r.threads,
            r.p50_ms,
            r.p90_ms,
            r.p99_ms,
            r.throughput_img_s,
            gf
        );
    }
    for ab in &report.ab {
        println!(
            "A/B batch {} threads {}: {} p50 {:.3} ms, {} p50 {:.3} ms, {}/{} per round = {}",
            ab.batch, ab.threads, ab.a, ab.a_p50_ms, ab.b, ab.b_p50_ms, ab.b, ab.a, ab.ratio
        );
    }
}

#[derive(Args, Debug)]
pub struct InfoArgs {
    pub model: PathBuf,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// What a model file says about itself: input/output, preprocessing, labels and provenance.
pub fn model_info(model: &Model) -> serde_json::Value {
    let info = model.info();
    let preprocess = match resolve_preprocess(info, &PreprocessOverrides::default()) {
        Ok(p) => serde_json::json!({
            "input_size": p.input_size,
            "channels": p.channels,
            "crop_pct": p.crop_pct,
            "interpolation": p.interpolation.as_str(),
            "mean": p.mean,
            "std": p.std,
        }),
        Err(e) => serde_json::Value::String(format!("none: {}", crate::error_chain(&e))),
    };
    let skip = [
        lkd_models::preprocess::keys::LABELS,
        lkd_models::preprocess::keys::INPUT_SIZE,
        lkd_models::preprocess::keys::CHANNELS,
        lkd_models::preprocess::keys::CROP_PCT,
        lkd_models::preprocess::keys::INTERPOLATION,
        lkd_models::preprocess::keys::MEAN,
        lkd_models::preprocess::keys::STD,
    ];
    let provenance: serde_json::Map<String, serde_json::Value> = info
        .metadata
        .iter()
        .filter(|(k, _)| !skip.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect();
    serde_json::json!({
        "model": info.name,
        "path": info.path.display().to_string(),
        "input": { "name": info.input_name, "shape": info.input_shape },
        "output": info.output_name,
        "engine": {
            "name": info.engine.name(),
            "provider": info.provider,
            "version": info.engine_version,
            "precision": match info.engine {
                Engine::Ort => "model",
                Engine::OpenVino { precision } => precision.as_str(),
            },
        },
        "preprocess": preprocess,
        "labels": info.labels,
        "provenance": provenance,
    })
}

pub fn run_info(args: InfoArgs) -> anyhow::Result<()> {
    let model = Model::load_with(
        &args.model,
        &SessionConfig::cpu(Some(1)),
        args.engine.engine()?,
    )?;
    let v = model_info(&model);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let dims = |s: &serde_json::Value| {
        s.as_array()
            .map(|a| {
                a.iter()
                    .map(|d| {
                        if d.as_i64().unwrap_or(-1) < 0 {
                            "?".into()
                        } else {
                            d.to_string()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("×")
            })
            .unwrap_or_default()
    };
    println!("model       {}", v["model"].as_str().unwrap_or_default());
    println!(
        "input       {} [{}]",
        v["input"]["name"].as_str().unwrap_or_default(),
        dims(&v["input"]["shape"])
    );
    println!("output      {}", v["output"].as_str().unwrap_or_default());
    println!(
        "engine      {} {} (version {}, precision {})",
        v["engine"]["name"].as_str().unwrap_or_default(),
        v["engine"]["provider"].as_str().unwrap_or_default(),
        v["engine"]["version"].as_str().unwrap_or_default(),
        v["engine"]["precision"].as_str().unwrap_or_default()
    );
    match &v["preprocess"] {
        serde_json::Value::Object(p) => {
            let list = |k: &str| {
                p[k].as_array()
                    .map(|a| {
                        a.iter()
                            .map(|x| x.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    })
                    .unwrap_or_default()
            };
            println!(
                "preprocess  size {} channels {} crop_pct {} {} mean [{}] std [{}]",
                dims(&p["input_size"]),
                p["channels"],
                p["crop_pct"],
                p["interpolation"].as_str().unwrap_or_default(),
                list("mean"),
                list("std")
            );
        }
        other => println!("preprocess  {}", other.as_str().unwrap_or_default()),
    }
    let labels = model.info().labels.as_slice();
    match labels.len() {
        0 => println!("labels      none (predictions say `class N`)"),
        n => {
            let head = labels
                .iter()
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join(", ");
            println!("labels      {n}: {head}{}", if n > 5 { ", …" } else { "" });
        }
    }
    if let Some(p) = v["provenance"].as_object() {
        for (k, val) in p {
            println!("{:<11} {}", k, val.as_str().unwrap_or_default());
        }
    }
    Ok(())
}
