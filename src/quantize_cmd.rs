//! `lkd quantize`: INT8 post-training quantization of an exported model. Reads calibration and
//! eval images with the trainer's dataset readers and preprocesses them with the runtime's
//! code path and the model's own metadata, then calls `lkd_exporter::quantize`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use lkd_exporter::quantize::{
    self, ActType, Batch, CalibMethod, EvalSet, QuantizeOptions, QuantizeReport, WeightRange,
};
use lkd_runtime::image::{DynamicImage, GrayImage, RgbImage};
use lkd_runtime::{
    preprocess_into, resolve_preprocess, Model, Preprocess, PreprocessOverrides, SessionConfig,
};
use lkd_trainer::data::{self, DataError, DatasetKind, DatasetSpec, Image, Split};

/// Parses a dataset kind by the names configs use (`fashion-mnist`, `cifar10`, `folder`, ...).
fn parse_kind(s: &str) -> std::result::Result<DatasetKind, String> {
    serde_json::from_value(serde_json::Value::String(s.to_string()))
        .map_err(|_| format!("unknown dataset kind `{s}`; use fashion-mnist, mnist, idx, cifar10, cifar100 or folder"))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum MethodArg {
    /// Observed minimum and maximum.
    Minmax,
    /// Clip both tails at --percentile.
    Percentile,
    /// KL-divergence threshold over a histogram (TensorRT-style).
    Entropy,
}

/// The split of the --calib dataset calibration reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum SplitArg {
    Train,
    Val,
}

impl From<SplitArg> for Split {
    fn from(s: SplitArg) -> Self {
        match s {
            SplitArg::Train => Split::Train,
            SplitArg::Val => Split::Val,
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct QuantizeArgs {
    /// Float ONNX model written by `lkd export`.
    pub model: PathBuf,
    /// Calibration dataset root (the split --calib-split names is read).
    #[arg(long)]
    pub calib: PathBuf,
    /// The split of --calib to calibrate on. `val` on a dataset whose val split is also the
    /// eval set measures top-1 on the calibration images (said in the report).
    #[arg(long, value_enum, default_value = "train")]
    pub calib_split: SplitArg,
    /// fashion-mnist, mnist, idx, cifar10, cifar100 or folder (`train/<class>/*.jpg`, `val/...`).
    #[arg(long, value_parser = parse_kind, default_value = "fashion-mnist")]
    pub calib_kind: DatasetKind,
    /// Number of calibration images.
    #[arg(long, default_value_t = 256)]
    pub calib_size: usize,
    #[arg(long, value_enum, default_value = "percentile")]
    pub method: MethodArg,
    /// Percentile for `--method percentile`.
    #[arg(long, default_value_t = 99.99)]
    pub percentile: f64,
    #[arg(long, value_enum, default_value = "uint8")]
    pub activation_type: ActType,
    /// Weight range. 7bit gives the same answers on every CPU; 8bit adds a bit of precision but
    /// x86 CPUs without VNNI saturate u8×s8 sums in int16 (measured on AVX2: relative logit
    /// error 0.019 → 0.22 on a random-weight convnext_nano; top-1 moved on 4 of 18 images).
    #[arg(long, value_enum, default_value = "7bit")]
    pub weight_range: WeightRange,
    /// Eval dataset root (its val split); default: the calibration dataset's val split.
    #[arg(long)]
    pub eval: Option<PathBuf>,
    /// Kind of --eval (default: --calib-kind).
    #[arg(long, value_parser = parse_kind)]
    pub eval_kind: Option<DatasetKind>,
    #[arg(long, default_value_t = 1000)]
    pub eval_size: usize,
    /// Largest top-1 drop (points) on the eval set; the most sensitive layers stay float until met.
    #[arg(long, value_name = "PTS")]
    pub accuracy_budget: Option<f64>,
    /// Keep this node float (repeatable).
    #[arg(long = "float-layer", value_name = "NODE")]
    pub float_layers: Vec<String>,
    /// Output file (default: MODEL with `.int8.onnx`).
    #[arg(short, long)]
    pub out: Option<PathBuf>,
    /// Allow --out to be the input model itself (replacing the float model).
    #[arg(long)]
    pub force: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// ORT threads for calibration and evaluation (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Threads for the float vs int8 latency comparison.
    #[arg(long, default_value_t = 1)]
    pub bench_threads: usize,
    #[arg(long, default_value_t = 50)]
    pub bench_iters: usize,
    #[arg(long)]
    pub no_bench: bool,
    /// Preprocessing for models without lkd metadata: input size `H,W`.
    #[arg(long, value_parser = lkd_runtime::cli::parse_size)]
    pub input_size: Option<[usize; 2]>,
    #[arg(long)]
    pub channels: Option<usize>,
    /// Comma-separated per-channel mean (with --std), for models without metadata.
    #[arg(long, value_delimiter = ',')]
    pub mean: Option<Vec<f32>>,
    #[arg(long, value_delimiter = ',')]
    pub std: Option<Vec<f32>>,
}

/// Images read from a dataset split, preprocessed into batches.
pub struct Images {
    pub name: String,
    pub batches: Vec<Batch>,
    pub labels: Vec<usize>,
    /// Undecodable files skipped.
    pub skipped: usize,
}

fn to_dynamic(img: &Image) -> Result<DynamicImage> {
    let (w, h) = (img.width as u32, img.height as u32);
    Ok(match img.channels {
        1 => DynamicImage::ImageLuma8(
            GrayImage::from_raw(w, h, img.data.clone()).context("image buffer size")?,
        ),
        3 => DynamicImage::ImageRgb8(
            RgbImage::from_raw(w, h, img.data.clone()).context("image buffer size")?,
        ),
        c => bail!("images with {c} channels are not supported (expected 1 or 3)"),
    })
}

/// Up to `n` images of `split` (a fixed subset), preprocessed with `p`, in batches of `batch`.
/// Corrupt files are skipped and counted.
pub fn read_images(
    root: &Path,
    kind: DatasetKind,
    split: Split,
    n: usize,
    p: &Preprocess,
    batch: usize,
) -> Result<Images> {
    if n == 0 {
        bail!("the number of images must be at least 1");
    }
    let mut spec = DatasetSpec::new(kind, root);
    match split {
        Split::Train => spec.limit = Some(n),
        Split::Val => spec.val_limit = Some(n),
    }
    let ds = data::open(&spec, split)
        .with_context(|| format!("opening {} split of `{}`", split.as_str(), root.display()))?;
    let len = lkd_runtime::preprocess::image_len(p);
    let (mut data, mut labels, mut skipped) = (Vec::new(), Vec::new(), 0usize);
    for i in 0..ds.len().min(n) {
        let s = match ds.get(i) {
            Ok(s) => s,
            Err(DataError::Decode { path, source }) => {
                eprintln!(
                    "skipping corrupt image {}: {}",
                    path.display(),
                    lkd_trainer::error_chain(&source)
                );
                skipped += 1;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let start = data.len();
        data.resize(start + len, 0.0);
        preprocess_into(&to_dynamic(&s.image)?, p, &mut data[start..])?;
        labels.push(s.label);
    }
    if labels.is_empty() {
        bail!(
            "no readable images in the {} split of `{}` ({skipped} corrupt)",
            split.as_str(),
            root.display()
        );
    }
    let batches = data
        .chunks(batch * len)
        .map(|c| Batch {
            data: c.to_vec(),
            shape: [c.len() / len, p.channels, p.input_size[0], p.input_size[1]],
        })
        .collect();
    Ok(Images {
        name: ds.name().to_string(),
        batches,
        labels,
        skipped,
    })
}

fn default_out(model: &Path) -> PathBuf {
    let stem = model
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    model.with_file_name(format!("{stem}.int8.onnx"))
}

/// Whether `a` and `b` name the same existing file, however spelled (`./`, `..`, symlinks, hard
/// links).
fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        #[cfg(unix)]
        (Ok(x), Ok(y)) => {
            use std::os::unix::fs::MetadataExt;
            (x.dev(), x.ino()) == (y.dev(), y.ino())
        }
        #[cfg(not(unix))]
        (Ok(_), Ok(_)) => match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
            (Ok(x), Ok(y)) => x == y,
            _ => false,
        },
        _ => false,
    }
}

/// Refuses an --out that is the input model unless `force`: the float model would be replaced.
fn check_out(model: &Path, out: &Path, force: bool) -> Result<()> {
    if !force && same_file(model, out) {
        bail!(
            "--out `{}` is the input model `{}`: writing there would replace the float model with \
             its int8 version. Choose another --out (the default is `{}`), or pass --force to \
             replace it",
            out.display(),
            model.display(),
            default_out(model).display()
        );
    }
    Ok(())
}

/// What `run_quantize` measured, for printing or JSON.
pub struct Outcome {
    pub out: PathBuf,
    pub report: QuantizeReport,
    pub calib_name: String,
    pub calib_split: Split,
    pub calib_skipped: usize,
    /// The eval images are the calibration images' split (--calib-split val, no --eval).
    pub eval_is_calib_split: bool,
    pub eval_name: Option<String>,
    pub eval_skipped: usize,
    /// (float p50 ms, int8 p50 ms, threads).
    /// Float and int8 p50 (ms), threads, and the per-round int8/float time ratio with its spread.
    pub latency: Option<(f64, f64, usize, lkd_runtime::RatioSpread)>,
    pub seconds: f64,
}

pub fn quantize(args: &QuantizeArgs) -> Result<Outcome> {
    let t0 = Instant::now();
    let out = args.out.clone().unwrap_or_else(|| default_out(&args.model));
    check_out(&args.model, &out, args.force)?;
    let bytes = std::fs::read(&args.model)
        .with_context(|| format!("reading `{}`", args.model.display()))?;
    let overrides = PreprocessOverrides {
        input_size: args.input_size,
        channels: args.channels,
        mean: args.mean.clone(),
        std: args.std.clone(),
        ..Default::default()
    };
    // The checks (already quantized, not a classifier) run before anything is read.
    quantize::prepare(&bytes, overrides.is_empty())?;
    let float = Model::load(
        &args.model,
        &SessionConfig {
            intra_threads: args.threads,
            ..Default::default()
        },
    )?;
    let p = resolve_preprocess(float.info(), &overrides)?;
    let batch = float.info().fixed_batch().unwrap_or(32);
    drop(float);

    let calib_split = Split::from(args.calib_split);
    let calib = read_images(
        &args.calib,
        args.calib_kind,
        calib_split,
        args.calib_size,
        &p,
        batch,
    )?;
    let eval_is_calib_split = args.eval.is_none() && calib_split == Split::Val;
    let eval = match &args.eval {
        Some(root) => Some(read_images(
            root,
            args.eval_kind.unwrap_or(args.calib_kind),
            Split::Val,
            args.eval_size,
            &p,
            batch,
        )?),
        None => match read_images(
            &args.calib,
            args.eval_kind.unwrap_or(args.calib_kind),
            Split::Val,
            args.eval_size,
            &p,
            batch,
        ) {
            Ok(e) => Some(e),
            Err(e) if args.accuracy_budget.is_none() => {
                eprintln!("no eval set ({e:#}); top-1 is not measured");
                None
            }
            Err(e) => return Err(e.context("--accuracy-budget needs an eval set: give --eval")),
        },
    };
    let eval_set = eval.as_ref().map(|e| EvalSet {
        batches: e.batches.clone(),
        labels: e.labels.clone(),
    });
    let opts = QuantizeOptions {
        method: match args.method {
            MethodArg::Minmax => CalibMethod::MinMax,
            MethodArg::Percentile => CalibMethod::Percentile(args.percentile),
            MethodArg::Entropy => CalibMethod::Entropy,
        },
        activation_type: args.activation_type,
        weight_range: args.weight_range,
        float_layers: args.float_layers.clone(),
        threads: args.threads,
        calib_data: Some(calib.name.clone()),
    };
    if opts.weight_range == WeightRange::Bits8 && !host_has_vnni() {
        eprintln!(
            "note: this CPU has no VNNI: ONNX Runtime's u8×s8 kernels saturate 8-bit weights here, \
             so the top-1 measured below may differ from a VNNI or ARM board's (--weight-range 7bit \
             gives the same answers on every CPU)"
        );
    }
    let (qbytes, report) = quantize::quantize(
        &bytes,
        &calib.batches,
        eval_set.as_ref().map(|e| (e, args.accuracy_budget)),
        &opts,
        overrides.is_empty(),
    )?;
    lkd_util::write_atomic(&out, &qbytes)?;

    let latency = if args.no_bench {
        None
    } else {
        let cfg = SessionConfig {
            intra_threads: Some(args.bench_threads),
            inter_threads: Some(1),
            ..Default::default()
        };
        let mut a = Model::load(&args.model, &cfg)?;
        let mut b = Model::load(&out, &cfg)?;
        let (ra, rb, ab) =
            lkd_runtime::bench_ab(&mut a, &mut b, 1, args.bench_threads, args.bench_iters, 5)?;
        Some((ra.p50_ms, rb.p50_ms, args.bench_threads, ab.ratio))
    };
    Ok(Outcome {
        out,
        report,
        calib_name: calib.name,
        calib_split,
        calib_skipped: calib.skipped,
        eval_is_calib_split: eval_is_calib_split && eval.is_some(),
        eval_name: eval.as_ref().map(|e| e.name.clone()),
        eval_skipped: eval.as_ref().map_or(0, |e| e.skipped),
        latency,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

impl Outcome {
    pub fn to_json(&self) -> serde_json::Value {
        let r = &self.report;
        serde_json::json!({
            "out": self.out,
            "calib": { "dataset": self.calib_name, "split": self.calib_split.as_str(), "images": r.calib_images, "corrupt_skipped": self.calib_skipped },
            "eval": { "dataset": self.eval_name, "images": r.eval_images, "corrupt_skipped": self.eval_skipped },
            "layers_total": r.layers_total,
            "layers_quantized": r.layers_quantized,
            "float_layers": r.float_layers,
            "sensitivity": r.sensitivity.iter().map(|(n, s)| serde_json::json!({"layer": n, "rel_logit_mse": s})).collect::<Vec<_>>(),
            "search": r.search.iter().map(|s| serde_json::json!({"float_layers": s.float_layers, "top1": s.top1})).collect::<Vec<_>>(),
            "top1_float": r.float_top1,
            "top1_int8": r.int8_top1,
            "top1_drop": r.float_top1.zip(r.int8_top1).map(|(f, q)| f - q),
            "latency_ms_float": self.latency.map(|l| l.0),
            "latency_ms_int8": self.latency.map(|l| l.1),
            "speedup": self.latency.map(|l| 1.0 / l.3.median),
            "int8_over_float_time": self.latency.map(|l| l.3),
            "bench_threads": self.latency.map(|l| l.2),
            "bytes_float": r.float_bytes,
            "bytes_int8": r.int8_bytes,
            "size_ratio": r.int8_bytes as f64 / r.float_bytes as f64,
            "seconds": self.seconds,
        })
    }

    pub fn print(&self) {
        let r = &self.report;
        println!(
            "calibration: {} images from {} (--calib-split {}, {} corrupt skipped)",
            r.calib_images,
            self.calib_name,
            self.calib_split.as_str(),
            self.calib_skipped
        );
        println!(
            "layers: {} of {} quantized; float: {}",
            r.layers_quantized,
            r.layers_total,
            if r.float_layers.is_empty() {
                "none".to_string()
            } else {
                r.float_layers.join(", ")
            }
        );
        if let (Some(f), Some(q)) = (r.float_top1, r.int8_top1) {
            println!(
                "top-1 on {} images of {}: float {f:.2}%, int8 {q:.2}% (drop {:.2} pts)",
                r.eval_images,
                self.eval_name.as_deref().unwrap_or("?"),
                f - q
            );
            if self.eval_is_calib_split {
                println!(
                    "note: top-1 was measured on the split calibration read (--calib-split val): \
                     give --eval for held-out figures"
                );
            }
        }
        if let Some((a, b, t, ratio)) = self.latency {
            println!(
                "latency batch 1, {t} thread(s), order alternated, spinning off: float p50 {a:.3} ms, int8 p50 {b:.3} ms; int8/float time per round {ratio}"
            );
        }
        println!(
            "size: float {:.2} MB, int8 {:.2} MB ({:.2}×)",
            r.float_bytes as f64 / 1e6,
            r.int8_bytes as f64 / 1e6,
            r.int8_bytes as f64 / r.float_bytes as f64
        );
        println!("wrote {} in {:.1} s", self.out.display(), self.seconds);
    }
}

pub fn run_quantize(args: QuantizeArgs) -> Result<()> {
    let o = quantize(&args)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&o.to_json())?);
    } else {
        o.print();
    }
    Ok(())
}

/// Whether this CPU multiplies u8×s8 without int16 saturation in ONNX Runtime (VNNI on x86;
/// every aarch64 kernel widens).
fn host_has_vnni() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512vnni")
            || std::arch::is_x86_feature_detected!("avxvnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        true
    }
}
