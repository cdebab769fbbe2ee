//! `lkd export`: a run dir or a preset + checkpoint → a self-describing `.onnx`.

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use lkd_exporter::{ChannelsFirstNorm, ExportOptions, LinearForm, ReparamMode};
use lkd_models::checkpoint::{check_state_dict, read_checkpoint, read_checkpoint_for, StateDict};
use lkd_models::{Graph, ModelConfig};
use lkd_util::Device;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Run directory (config.toml + best.safetensors or last.safetensors).
    pub run_dir: Option<PathBuf>,
    /// Preset to build when exporting a checkpoint file instead of a run dir.
    #[arg(long, conflicts_with = "run_dir", requires = "checkpoint")]
    pub preset: Option<String>,
    /// Model config overrides as JSON (e.g. '{"num_classes": 10}'), with --preset.
    #[arg(long, requires = "preset")]
    pub model_override: Option<String>,
    /// Weights: safetensors or an official PyTorch .pth.
    #[arg(long, conflicts_with = "run_dir")]
    pub checkpoint: Option<PathBuf>,
    /// Output file (default: RUN_DIR/model.onnx).
    #[arg(long, short)]
    pub out: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "auto")]
    pub reparam: ReparamMode,
    /// FP16 weights and compute, FP32 input and output.
    #[arg(long)]
    pub fp16: bool,
    /// Fix the batch axis to N (default: dynamic).
    #[arg(long, value_name = "N")]
    pub static_batch: Option<usize>,
    /// Skip the ONNX Runtime parity check.
    #[arg(long)]
    pub no_check: bool,
    /// Class names: a JSON array or one name per line.
    #[arg(long)]
    pub labels: Option<PathBuf>,
    /// Extra provenance metadata, KEY=VALUE (repeatable).
    #[arg(long = "meta", value_name = "KEY=VALUE")]
    pub meta: Vec<String>,
    /// How channels-last Linear pairs are written.
    #[arg(long, value_enum, default_value = "conv")]
    pub linear_form: LinearForm,
    /// How channels-first LayerNorm is written.
    #[arg(long, value_enum, default_value = "transpose")]
    pub ln_form: ChannelsFirstNorm,
    /// Device for the check and `--reparam auto` timings: cpu or cuda[:N].
    #[arg(long, default_value = "cpu")]
    pub device: Device,
    /// ORT intra-op threads for timing and checking.
    #[arg(long)]
    pub threads: Option<usize>,
}

impl ExportArgs {
    /// `lkd export DIR --out OUT` with every other flag at its default.
    pub fn for_run_dir(dir: &Path, out: &Path) -> Self {
        Self {
            run_dir: Some(dir.to_path_buf()),
            preset: None,
            model_override: None,
            checkpoint: None,
            out: Some(out.to_path_buf()),
            reparam: ReparamMode::Auto,
            fp16: false,
            static_batch: None,
            no_check: false,
            labels: None,
            meta: vec![],
            linear_form: LinearForm::Conv,
            ln_form: ChannelsFirstNorm::Transpose,
            device: Device::Cpu,
            threads: None,
        }
    }
}

struct Source {
    graph: Graph,
    weights: StateDict,
    out: PathBuf,
    labels: Option<Vec<String>>,
    provenance: BTreeMap<String, String>,
}

fn read_labels(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading labels {}", path.display()))?;
    if text.trim_start().starts_with('[') {
        return serde_json::from_str(&text)
            .with_context(|| format!("{}: not a JSON array of strings", path.display()));
    }
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

fn from_checkpoint(args: &ExportArgs, preset: &str, ckpt: &Path) -> Result<Source> {
    let cfg: ModelConfig = match &args.model_override {
        Some(json) => {
            let mut v: serde_json::Value =
                serde_json::from_str(json).context("--model-override must be a JSON object")?;
            v.as_object_mut()
                .ok_or_else(|| anyhow!("--model-override must be a JSON object"))?
                .insert("preset".into(), preset.into());
            serde_json::from_value(v).context("--model-override")?
        }
        None => ModelConfig::preset(preset),
    };
    let graph = cfg.build()?;
    // Official, timm or torchvision layout, checked strictly and renamed to the graph's names.
    let weights = read_checkpoint_for(&graph, ckpt)?;
    let out = args
        .out
        .clone()
        .ok_or_else(|| anyhow!("--out is required with --checkpoint"))?;
    let provenance = BTreeMap::from([("lkd.source".to_string(), ckpt.display().to_string())]);
    Ok(Source {
        graph,
        weights,
        out,
        labels: None,
        provenance,
    })
}

fn from_run_dir(args: &ExportArgs, dir: &Path) -> Result<Source> {
    use lkd_trainer::rundir::RunDir;
    let run = RunDir::open(dir)?;
    let cfg = run.config()?;
    let graph = cfg.model.build()?;
    let wpath = run.best_or_last_weights()?;
    let weights = read_checkpoint(&wpath)?;
    check_state_dict(&graph, &weights).with_context(|| {
        format!(
            "{} does not match {}",
            wpath.display(),
            dir.join("config.toml").display()
        )
    })?;
    let mut prov = BTreeMap::new();
    prov.insert("lkd.config_hash".to_string(), cfg.hash());
    prov.insert(
        "lkd.dataset".to_string(),
        serde_json::to_string(&cfg.data.dataset).unwrap_or_default(),
    );
    prov.insert("lkd.source".to_string(), wpath.display().to_string());
    if let Some(d) = &cfg.distill {
        prov.insert("lkd.kd_method".to_string(), d.method.as_str().to_string());
        prov.insert("lkd.teacher".to_string(), d.teacher.display().to_string());
    }
    // Fine-tuned runs say what they started from (file, sha256, every adaptation).
    if let Some(init) = std::fs::read(dir.join(lkd_trainer::finetune::INIT_RECORD))
        .ok()
        .and_then(|b| serde_json::from_slice::<lkd_trainer::finetune::InitRecord>(&b).ok())
    {
        prov.insert("lkd.init".to_string(), init.summary());
    }
    if let Ok(Some(best)) = run.best_top1() {
        prov.insert("lkd.eval_top1".to_string(), format!("{best:.2}"));
    }
    // Class names from the dataset when it is at hand; otherwise `class i`.
    let labels = lkd_trainer::data::open(&cfg.data.dataset, lkd_trainer::data::Split::Val)
        .ok()
        .map(|d| d.classes().to_vec())
        .filter(|c| c.len() == graph.num_classes);
    let out = args.out.clone().unwrap_or_else(|| dir.join("model.onnx"));
    Ok(Source {
        graph,
        weights,
        out,
        labels,
        provenance: prov,
    })
}

pub fn run_export(args: ExportArgs) -> Result<()> {
    let mut src = match (&args.run_dir, &args.preset, &args.checkpoint) {
        (Some(dir), None, None) => from_run_dir(&args, dir)?,
        (None, Some(p), Some(c)) => from_checkpoint(&args, p, c)?,
        _ => bail!("give a RUN_DIR, or --preset P --checkpoint FILE --out model.onnx"),
    };
    if let Some(p) = &args.labels {
        src.labels = Some(read_labels(p)?);
    }
    for kv in &args.meta {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| anyhow!("--meta `{kv}` is not KEY=VALUE"))?;
        src.provenance.insert(k.trim().to_string(), v.to_string());
    }
    let opts = ExportOptions {
        reparam: args.reparam,
        fp16: args.fp16,
        static_batch: args.static_batch,
        check: !args.no_check,
        labels: src.labels.clone(),
        provenance: src.provenance.clone(),
        linear_form: args.linear_form,
        channels_first_norm: args.ln_form,
        target: args.device,
        threads: args.threads,
        ..Default::default()
    };
    let report = lkd_exporter::export(&src.graph, &src.weights, &opts, &src.out)?;
    for p in report.passes.iter().filter(|p| p.rewrites > 0) {
        println!(
            "  pass {:<18} {:>4} rewrites  nodes {} → {}  ({:.0} ms)",
            p.name, p.rewrites, p.nodes_before, p.nodes_after, p.millis
        );
    }
    for c in &report.reparam {
        let t = match (c.dense_ms, c.decomposed_ms) {
            (Some(d), Some(k)) => format!("  (dense {d:.2} ms, decomposed {k:.2} ms)"),
            _ => String::new(),
        };
        println!(
            "  reparam {:<28} {:<36} {}{t}",
            c.layer,
            c.shape,
            c.form.as_str()
        );
    }
    println!("{}: {}", src.out.display(), report.summary());
    Ok(())
}

/// Exports a run dir with the default options (deploy rewrites, parity check) to `out`.
pub fn export_run_dir(dir: &Path, out: &Path) -> Result<lkd_exporter::ExportReport> {
    let args = ExportArgs::for_run_dir(dir, out);
    let src = from_run_dir(&args, dir)?;
    let opts = ExportOptions {
        labels: src.labels.clone(),
        provenance: src.provenance.clone(),
        ..Default::default()
    };
    Ok(lkd_exporter::export(&src.graph, &src.weights, &opts, out)?)
}
