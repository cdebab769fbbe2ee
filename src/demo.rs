//! `lkd demo`: the end-to-end story on Fashion-MNIST — train the large-kernel teacher, distil
//! the 3×3 student with NKD next to a no-KD baseline of the same budget, export all three to
//! ONNX, benchmark them in ONNX Runtime, measure ERFs, and write a report. Finished stages are
//! reused on re-runs; every figure in the report is measured in the run that wrote it.

use crate::report::{self, ModelRow, Report};
use crate::train_cmds::measure_erf;
use anyhow::{Context, Result};
use clap::Args;
use lkd_trainer::config::{DistillConfig, KdMethod, TrainConfig};
use lkd_trainer::rundir::RunDir;
use lkd_trainer::train::{load_model, train_or_reuse, RunOutcome};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Output directory.
    #[arg(long, default_value = "runs/demo")]
    pub out: PathBuf,
    /// A small subset and one epoch per model (about 2 minutes; what the tests run).
    #[arg(long)]
    pub quick: bool,
    /// Start over instead of reusing finished stages.
    #[arg(long)]
    pub fresh: bool,
    /// Teacher epochs (default 2, quick 1).
    #[arg(long)]
    pub teacher_epochs: Option<usize>,
    /// Student epochs, the same for the distilled and the baseline student (default 3, quick 1).
    #[arg(long)]
    pub student_epochs: Option<usize>,
    /// Images for the ERF measurement (default 50, quick 8).
    #[arg(long)]
    pub erf_images: Option<usize>,
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

pub struct Stage {
    pub name: &'static str,
    pub role: &'static str,
    pub config: TrainConfig,
}

fn base_config(text: &str, a: &DemoArgs, epochs: usize) -> Result<TrainConfig> {
    let mut cfg = TrainConfig::from_toml_str(text)?;
    if let Ok(p) = std::env::var("LKD_FASHION_MNIST") {
        cfg.data.dataset.path = p.into();
    }
    cfg.optim.epochs = epochs;
    cfg.run.device = a.device.clone();
    if a.quick {
        cfg.data.dataset.limit = Some(4000);
        cfg.data.dataset.val_limit = Some(1000);
        cfg.run.log_every = 10;
    }
    Ok(cfg)
}

pub fn stages(a: &DemoArgs) -> Result<Vec<Stage>> {
    let te = a.teacher_epochs.unwrap_or(if a.quick { 1 } else { 2 });
    let se = a.student_epochs.unwrap_or(if a.quick { 1 } else { 3 });
    let teacher = base_config(include_str!("../configs/fmnist-slak-nano.toml"), a, te)?;
    let baseline = base_config(include_str!("../configs/fmnist-convnext-nano.toml"), a, se)?;
    let mut distilled = base_config(include_str!("../configs/fmnist-convnext-nano-nkd.toml"), a, se)?;
    let d = distilled.distill.get_or_insert_with(|| DistillConfig::new(KdMethod::Nkd, PathBuf::new()));
    d.teacher = a.out.join("teacher");
    Ok(vec![
        Stage { name: "teacher", role: "large-kernel teacher", config: teacher },
        Stage { name: "student_nkd", role: "3x3 student, NKD from the teacher", config: distilled },
        Stage { name: "student_baseline", role: "3x3 student, no distillation", config: baseline },
    ])
}

/// Trains a stage unless its run already finished; an interrupted run is resumed.
pub fn run_stage(dir: &Path, cfg: &TrainConfig) -> Result<()> {
    match train_or_reuse(cfg, dir, true).with_context(|| format!("training {}", dir.display()))? {
        RunOutcome::Reused => println!("  reusing finished run {}", dir.display()),
        RunOutcome::Trained { resumed, summary: s } => println!(
            "  {}{}: best top-1 {:.2}% in {:.0}s ({:.0} img/s, teacher {:.0}% of step time)",
            dir.display(),
            if resumed { " (resumed)" } else { "" },
            s.best_top1,
            s.seconds,
            s.images_per_s,
            100.0 * s.teacher_share
        ),
    }
    Ok(())
}

pub fn run_demo(a: DemoArgs) -> Result<()> {
    let t0 = Instant::now();
    if a.fresh && a.out.exists() {
        std::fs::remove_dir_all(&a.out).with_context(|| format!("removing {}", a.out.display()))?;
    }
    std::fs::create_dir_all(a.out.join("onnx"))?;
    let stages = stages(&a)?;
    let n = stages.len() + 3;
    for (i, st) in stages.iter().enumerate() {
        println!("[{}/{n}] train {} ({})", i + 1, st.name, st.role);
        run_stage(&a.out.join(st.name), &st.config)?;
    }
    let mut rows = vec![];
    println!("[{}/{n}] export to ONNX (deploy rewrites, parity checked)", stages.len() + 1);
    for st in &stages {
        let run = a.out.join(st.name);
        let onnx = a.out.join("onnx").join(format!("{}.onnx", st.name));
        let fresh_export = !onnx.exists() || modified(&onnx)? < modified(&RunDir::open(&run)?.best_or_last_weights()?)?;
        let export = if fresh_export {
            let r = crate::export_cmd::export_run_dir(&run, &onnx)?;
            println!("  {}: {}", onnx.display(), r.summary());
            Some(r)
        } else {
            println!("  reusing {}", onnx.display());
            None
        };
        rows.push(ModelRow::new(st.name, st.role, &run, onnx, export)?);
    }
    println!("[{}/{n}] benchmark ONNX Runtime latency (CPU, batch 1 and 32)", stages.len() + 2);
    let iters = if a.quick { 10 } else { 50 };
    for row in rows.iter_mut() {
        row.measure_latency(&[1, 32], iters)?;
    }
    println!("[{}/{n}] effective receptive fields", stages.len() + 3);
    let erf_images = a.erf_images.unwrap_or(if a.quick { 8 } else { 50 });
    let device = lkd_trainer::parse_device(&a.device)?;
    for (row, st) in rows.iter_mut().zip(&stages) {
        let (exec, params) = load_model(&row.run, None, device)?;
        let erf = measure_erf(&exec, &params, &st.config.data.dataset, erf_images, None, None, device)?;
        lkd_models::checkpoint::write_atomic(&row.run.join("erf.json"), serde_json::to_string_pretty(&erf)?.as_bytes())?;
        row.erf = Some(erf);
    }
    let report = Report { title: "LKD demo: large-kernel teacher → small-kernel student on Fashion-MNIST".into(), quick: a.quick, rows, seconds: t0.elapsed().as_secs_f64() };
    let path = report::write(&a.out, &report)?;
    println!("\n{}", report.summary());
    println!("report: {}", path.display());
    Ok(())
}

fn modified(p: &Path) -> Result<std::time::SystemTime> {
    Ok(std::fs::metadata(p).with_context(|| p.display().to_string())?.modified()?)
}
