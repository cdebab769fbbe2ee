//! `lkd demo`: the end-to-end story on Fashion-MNIST — train the large-kernel teacher, distil
//! the 3×3 student with NKD next to a no-KD baseline of the same budget, export all three to
//! ONNX, benchmark them in ONNX Runtime, measure ERFs, and write a report. Finished stages are
//! reused on re-runs; every figure in the report is measured in the run that wrote it.
//!
//! The teacher is trained once per recipe under `$LKD_CACHE/teachers/<digest>` and reused by
//! later demos (`--retrain-teacher` trains it again); each student is trained for several seeds
//! so the KD gain comes with its spread.

use anyhow::{Context, Result};
use clap::Args;
use lkd_study::report::{self, ModelRow, Report};
use lkd_trainer::config::{DistillConfig, KdMethod, TrainConfig};
use lkd_trainer::erf::measure_on_dataset as measure_erf;
use lkd_trainer::rundir::RunDir;
use lkd_trainer::train::{load_model, train_or_reuse, train_or_reuse_shared, RunOutcome};
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Args, Debug, Clone)]
pub struct DemoArgs {
    /// Output directory.
    #[arg(long, default_value = "runs/demo")]
    pub out: PathBuf,
    /// The default budgets halved on a 10 000-image subset (about 2 minutes; what the tests run).
    #[arg(long)]
    pub quick: bool,
    /// Start over instead of reusing finished stages (the kept teacher is still reused).
    #[arg(long)]
    pub fresh: bool,
    /// Train the teacher again instead of reusing the one kept for this recipe.
    #[arg(long)]
    pub retrain_teacher: bool,
    /// Seeds per student (the KD gain is reported as mean ± std over them).
    #[arg(long, default_value_t = 2)]
    pub seeds: usize,
    /// Teacher epochs (default 4, quick 2).
    #[arg(long)]
    pub teacher_epochs: Option<usize>,
    /// Student epochs, the same for the distilled and the baseline student (default 2, quick 1).
    #[arg(long)]
    pub student_epochs: Option<usize>,
    /// Images for the ERF measurement (default 50, quick 8).
    #[arg(long)]
    pub erf_images: Option<usize>,
    #[arg(long, default_value = "cpu")]
    pub device: String,
}

pub struct Stage {
    pub name: String,
    pub role: String,
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
        cfg.data.dataset.limit = Some(QUICK_IMAGES);
        cfg.data.dataset.val_limit = Some(1000);
        cfg.run.log_every = 10;
    }
    Ok(cfg)
}

/// Default budgets (epochs): teacher, students; `--quick` halves them on a subset, keeping the
/// teacher's longer schedule so the short run is in the same regime (the teacher ahead).
pub const TEACHER_EPOCHS: usize = 4;
pub const STUDENT_EPOCHS: usize = 2;
const QUICK_IMAGES: usize = 10_000;

/// The teacher's stage (its run dir is filled in by `run_demo`: the kept teacher's).
pub fn teacher_stage(a: &DemoArgs) -> Result<Stage> {
    let te = a.teacher_epochs.unwrap_or(if a.quick {
        TEACHER_EPOCHS / 2
    } else {
        TEACHER_EPOCHS
    });
    let config = base_config(include_str!("../configs/fmnist-slak-proxy.toml"), a, te)?;
    Ok(Stage {
        name: "teacher".into(),
        role: "large-kernel teacher".into(),
        config,
    })
}

/// The students: for each seed, NKD from `teacher_dir` and the no-KD baseline, same budget.
pub fn student_stages(a: &DemoArgs, teacher_dir: &Path) -> Result<Vec<Stage>> {
    let se = a.student_epochs.unwrap_or(if a.quick {
        STUDENT_EPOCHS / 2
    } else {
        STUDENT_EPOCHS
    });
    if a.seeds == 0 {
        anyhow::bail!("--seeds must be at least 1");
    }
    let mut out = vec![];
    for seed in 0..a.seeds as u64 {
        let mut distilled = base_config(
            include_str!("../configs/fmnist-convnext-proxy-nkd.toml"),
            a,
            se,
        )?;
        distilled.run.seed = seed;
        let d = distilled
            .distill
            .get_or_insert_with(|| DistillConfig::new(KdMethod::Nkd, PathBuf::new()));
        d.teacher = teacher_dir.to_path_buf();
        let mut baseline =
            base_config(include_str!("../configs/fmnist-convnext-proxy.toml"), a, se)?;
        baseline.run.seed = seed;
        out.push(Stage {
            name: format!("student_nkd_s{seed}"),
            role: format!("3x3 student, NKD from the teacher, seed {seed}"),
            config: distilled,
        });
        out.push(Stage {
            name: format!("student_baseline_s{seed}"),
            role: format!("3x3 student, no distillation, seed {seed}"),
            config: baseline,
        });
    }
    Ok(out)
}

/// Trains a stage unless its run already finished; an interrupted run is resumed.
pub fn run_stage(dir: &Path, cfg: &TrainConfig) -> Result<()> {
    let outcome =
        train_or_reuse(cfg, dir, true).with_context(|| format!("training {}", dir.display()))?;
    print_outcome(dir, &outcome);
    Ok(())
}

fn print_outcome(dir: &Path, outcome: &RunOutcome) {
    match outcome {
        RunOutcome::Reused => println!("  reusing finished run {}", dir.display()),
        RunOutcome::Trained {
            resumed,
            summary: s,
        } => {
            let cache = s
                .teacher_cache
                .as_ref()
                .map(|c| {
                    format!(
                        ", teacher outputs: {} replayed / {} computed",
                        c.replayed_batches, c.live_batches
                    )
                })
                .unwrap_or_default();
            println!(
                "  {}{}: best top-1 {:.2}% in {:.0}s ({:.0} img/s, teacher {:.0}% of step time{cache})",
                dir.display(),
                if *resumed { " (resumed)" } else { "" },
                s.best_top1,
                s.seconds,
                s.images_per_s,
                100.0 * s.teacher_share
            )
        }
    }
}

pub fn run_demo(a: DemoArgs) -> Result<()> {
    let t0 = Instant::now();
    if a.fresh && a.out.exists() {
        std::fs::remove_dir_all(&a.out).with_context(|| format!("removing {}", a.out.display()))?;
    }
    std::fs::create_dir_all(a.out.join("onnx"))?;
    let teacher = teacher_stage(&a)?;
    let n = 2 * a.seeds + 4;
    println!(
        "[1/{n}] train teacher ({}), kept under $LKD_CACHE/teachers and reused across runs",
        teacher.role
    );
    let (teacher_dir, outcome) = train_or_reuse_shared(&teacher.config, a.retrain_teacher, true)
        .context("training the teacher")?;
    print_outcome(&teacher_dir, &outcome);
    let teacher_origin = match &outcome {
        RunOutcome::Reused => format!(
            "reused the teacher trained earlier for this recipe ({})",
            teacher_dir.display()
        ),
        RunOutcome::Trained { resumed: true, .. } => format!(
            "teacher training resumed and finished in this run ({})",
            teacher_dir.display()
        ),
        RunOutcome::Trained { .. } => {
            format!("teacher trained in this run ({})", teacher_dir.display())
        }
    };
    let students = student_stages(&a, &teacher_dir)?;
    for (i, st) in students.iter().enumerate() {
        println!("[{}/{n}] train {} ({})", i + 2, st.name, st.role);
        run_stage(&a.out.join(&st.name), &st.config)?;
    }
    let mut stages = vec![Stage {
        name: teacher.name,
        role: teacher.role,
        config: teacher.config,
    }];
    stages.extend(students);
    let run_dir = |st: &Stage| {
        if st.name == "teacher" {
            teacher_dir.clone()
        } else {
            a.out.join(&st.name)
        }
    };
    let mut rows = vec![];
    println!(
        "[{}/{n}] export to ONNX (deploy rewrites, parity checked)",
        stages.len() + 1
    );
    for st in &stages {
        let run = run_dir(st);
        let onnx = a.out.join("onnx").join(format!("{}.onnx", st.name));
        let fresh_export = !onnx.exists()
            || modified(&onnx)? < modified(&RunDir::open(&run)?.best_or_last_weights()?)?;
        let export = if fresh_export {
            let r = crate::export_cmd::export_run_dir(&run, &onnx)?;
            println!("  {}: {}", onnx.display(), r.summary());
            Some(r)
        } else {
            println!("  reusing {}", onnx.display());
            None
        };
        rows.push(ModelRow::new(&st.name, &st.role, &run, onnx, export)?);
    }
    println!(
        "[{}/{n}] benchmark ONNX Runtime latency (CPU, batch 1 and 32)",
        stages.len() + 2
    );
    let iters = if a.quick { 10 } else { 50 };
    for row in rows.iter_mut() {
        row.measure_latency(&[1, 32], iters)?;
    }
    println!("[{}/{n}] effective receptive fields", stages.len() + 3);
    let erf_images = a.erf_images.unwrap_or(if a.quick { 8 } else { 50 });
    let device = lkd_trainer::parse_device(&a.device)?;
    for (row, st) in rows.iter_mut().zip(&stages) {
        let (exec, params) = load_model(&row.run, None, device)?;
        let erf = measure_erf(
            &exec,
            &params,
            &st.config.data.dataset,
            erf_images,
            None,
            None,
            device,
        )?;
        // Beside the demo's other outputs: the kept teacher's run dir stays as it was trained.
        let erf_dir = a.out.join(&row.name);
        std::fs::create_dir_all(&erf_dir)?;
        lkd_util::write_atomic(
            &erf_dir.join("erf.json"),
            serde_json::to_string_pretty(&erf)?.as_bytes(),
        )?;
        row.erf = Some(erf);
    }
    let report = Report {
        title: "LKD demo: large-kernel teacher → small-kernel student on Fashion-MNIST".into(),
        quick: a.quick,
        rows,
        seconds: t0.elapsed().as_secs_f64(),
        notes: vec![teacher_origin],
    };
    let path = report::write(&a.out, &report)?;
    println!("\n{}", report.summary());
    println!("report: {}", path.display());
    Ok(())
}

fn modified(p: &Path) -> Result<std::time::SystemTime> {
    Ok(std::fs::metadata(p)
        .with_context(|| p.display().to_string())?
        .modified()?)
}
