//! `lkd study CONFIG`: the paper's Table 1 at CPU scale — teachers × KD methods × students ×
//! seeds, each cell a run dir; results as mean ± std over seeds (markdown + CSV) and a bar
//! chart, plus the students' ERF per teacher. Finished cells are skipped on re-runs.

use anyhow::{bail, Context, Result};
use lkd_models::ModelConfig;
use lkd_trainer::config::{DistillConfig, KdMethod, TrainConfig};
use lkd_trainer::erf::measure_on_dataset as measure_erf;
use lkd_trainer::rundir::{EpochEval, RunDir};
use lkd_trainer::stats::{mean_std, Paired, Verdict};
use lkd_trainer::train::{
    kept_teacher, load_model, train_or_reuse, train_or_reuse_shared, RunOutcome,
};
use plotters::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StudyConfig {
    pub name: String,
    /// Training template (data, optimizer, run settings) shared by every cell, inline.
    pub base: TrainConfig,
    pub students: Vec<ModelConfig>,
    pub teachers: Vec<TeacherSpec>,
    pub methods: Vec<String>,
    pub seeds: Vec<u64>,
    pub teacher_epochs: usize,
    pub student_epochs: usize,
    /// Images for each student's ERF (0: skip).
    #[serde(default)]
    pub erf_images: usize,
    /// Distil from each teacher's checkpoint whose validation top-1 is closest to the least
    /// accurate teacher's best, so the grid compares kinds of teacher, not accuracies.
    #[serde(default)]
    pub teachers_at_matched_top1: bool,
}

/// A trained teacher as the study keeps it in its own folder (`teachers/<slug>.json` beside the
/// weights it distils from), so a later invocation, or a fresh checkout holding the folder,
/// needs neither the teacher cache nor a retrain.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct KeptTeacher {
    label: String,
    /// `TrainConfig::result_digest` of the teacher's recipe: a changed recipe is another teacher.
    recipe_digest: String,
    model: ModelConfig,
    best_top1: f64,
    evaluations: Vec<EpochEval>,
    /// Where it was trained (the teacher cache), for copying another epoch's weights.
    run_dir: PathBuf,
    /// Training seconds (0 when an earlier study trained it).
    seconds: f64,
}

/// The checkpoint a study distils from (the teacher's best epoch, or with
/// `teachers_at_matched_top1` the epoch whose top-1 is closest to a target) and its model.
#[derive(Clone, Debug)]
struct UsedTeacher {
    weights: PathBuf,
    model: ModelConfig,
}

impl KeptTeacher {
    fn from_run(label: &str, digest: String, dir: &Path, seconds: f64) -> Result<Self> {
        let run = RunDir::open(dir)?;
        Ok(Self {
            label: label.into(),
            recipe_digest: digest,
            model: run.config()?.model,
            best_top1: run.best_top1()?.unwrap_or(f64::NAN),
            evaluations: run.evaluations()?,
            run_dir: dir.to_path_buf(),
            seconds,
        })
    }

    /// The 0-based epoch to distil from: the first best one, or the one closest to `target`
    /// (ties: the earlier).
    fn pick_epoch(&self, target: Option<f64>) -> Result<&EpochEval> {
        let score = |e: &EpochEval| match target {
            Some(t) => -(e.best_top1() - t).abs(),
            None => e.best_top1(),
        };
        self.evaluations
            .iter()
            .reduce(|a, b| if score(b) > score(a) { b } else { a })
            .with_context(|| format!("teacher {} has no evaluated epoch", self.label))
    }

    /// The file name of `epoch`'s weights in the study folder: the recipe digest in it, so
    /// another recipe's teacher never passes for this one in a cell's config.
    fn weights_name(&self, epoch: &EpochEval) -> String {
        format!(
            "{}-{}-e{:03}.safetensors",
            slug(&self.label),
            self.recipe_digest,
            epoch.epoch + 1
        )
    }

    /// Copies the weights of `epoch` (0-based) into `folder` unless they are there; returns
    /// their path there.
    fn weights_in(&self, folder: &Path, epoch: &EpochEval, matched: bool) -> Result<PathBuf> {
        let dest = folder.join(self.weights_name(epoch));
        if dest.is_file() {
            return Ok(dest);
        }
        let source = if matched {
            self.run_dir
                .join(lkd_trainer::rundir::epoch_weights_file(epoch.epoch + 1))
        } else {
            self.run_dir.join(lkd_trainer::rundir::BEST)
        };
        let bytes = std::fs::read(&source).with_context(|| {
            format!(
                "teacher {}: the weights of epoch {} are neither in {} nor at {} (train it again with --retrain-teachers)",
                self.label,
                epoch.epoch + 1,
                folder.display(),
                source.display()
            )
        })?;
        lkd_util::write_atomic(&dest, &bytes)?;
        Ok(dest)
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeacherSpec {
    /// Label in the tables, e.g. "SLaK (large kernel)".
    pub label: String,
    pub model: ModelConfig,
    /// Epochs for this teacher (default: the study's `teacher_epochs`); Transformers without
    /// convolutions' inductive bias need longer to reach the ConvNets' accuracy.
    #[serde(default)]
    pub epochs: Option<usize>,
}

/// What one invocation of a study asks for (the `lkd study` flags).
#[derive(Clone, Debug, Default)]
pub struct StudyOptions {
    /// Study TOML (see configs/study-fmnist.toml).
    pub config: PathBuf,
    /// Output directory (default runs/study-<name>).
    pub out: Option<PathBuf>,
    /// Training subset sizes for a fast look: train and val images.
    pub limit: Option<usize>,
    pub val_limit: Option<usize>,
    /// Train the teachers again instead of reusing those kept for the same recipes.
    pub retrain_teachers: bool,
    /// Train nothing: write the tables from the cells finished so far, stating how many are
    /// missing.
    pub report_only: bool,
}

/// What a finished cell recorded (written atomically when it completes).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct CellResult {
    student: String,
    teacher: String,
    method: String,
    seed: u64,
    top1: f64,
    seconds: f64,
    run_dir: String,
    #[serde(default)]
    erf_r20: Option<f64>,
    /// ERF area ratio per contribution threshold (0.2, 0.3, 0.5, 0.99), as the papers report.
    #[serde(default)]
    erf: Vec<(f64, f64)>,
    /// The same ratios with the square's side interpolated between whole pixels (continuous).
    #[serde(default)]
    erf_interpolated: Vec<(f64, f64)>,
    /// Contribution-weighted RMS radius of the ERF, in input pixels.
    #[serde(default)]
    erf_rms_radius: Option<f64>,
}

impl CellResult {
    fn erf_at(&self, threshold: f64) -> Option<f64> {
        self.erf
            .iter()
            .find(|(t, _)| (t - threshold).abs() < 1e-9)
            .map(|r| r.1)
            .or(self.erf_r20.filter(|_| (threshold - 0.2).abs() < 1e-9))
    }

    fn erf_interpolated_at(&self, threshold: f64) -> Option<f64> {
        self.erf_interpolated
            .iter()
            .find(|(t, _)| (t - threshold).abs() < 1e-9)
            .map(|r| r.1)
    }

    fn set_erf(&mut self, erf: lkd_trainer::erf::ErfResult) {
        self.erf = erf.area_ratios;
        self.erf_interpolated = erf.area_ratios_interpolated;
        self.erf_rms_radius = Some(erf.rms_radius_px);
        self.erf_r20 = self.erf_at(0.2);
    }
}

/// The student's ERF measured on `images` validation images.
fn cell_erf(dir: &Path, cfg: &TrainConfig, images: usize) -> Result<lkd_trainer::erf::ErfResult> {
    let device = lkd_trainer::parse_device(&cfg.run.device)?;
    let (exec, params) = load_model(dir, None, device)?;
    let erf = measure_erf(
        &exec,
        &params,
        &cfg.data.dataset,
        images,
        None,
        None,
        device,
    )?;
    Ok(erf)
}

/// Thresholds whose ERF area ratio the tables and claim (c) report.
const ERF_THRESHOLDS: [f64; 4] = [0.2, 0.3, 0.5, 0.99];

fn slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

fn best_top1(dir: &Path) -> Result<f64> {
    Ok(RunDir::open(dir)?.best_top1()?.unwrap_or(f64::NAN))
}

const COMPUTE_FILE: &str = "compute_seconds";

/// Trains `cfg` into `dir` unless it finished before; returns the training seconds the run
/// took (recorded in the run dir, so re-runs report the same total).
fn ensure_run(dir: &Path, cfg: &TrainConfig) -> Result<f64> {
    let recorded = || {
        std::fs::read_to_string(dir.join(COMPUTE_FILE))
            .ok()
            .and_then(|s| s.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let before = recorded();
    let t = Instant::now();
    let resumed = match train_or_reuse(cfg, dir, true)
        .with_context(|| format!("training {}", dir.display()))?
    {
        RunOutcome::Reused => return Ok(before),
        RunOutcome::Trained { resumed, .. } => resumed,
    };
    let total = if resumed { before } else { 0.0 } + t.elapsed().as_secs_f64();
    lkd_util::write_atomic(&dir.join(COMPUTE_FILE), format!("{total:.3}").as_bytes())?;
    Ok(total)
}

/// Runs (or resumes, or only reports) the study `opts.config` describes: the teachers, each
/// trained once per recipe; the checkpoint of each at matched accuracy; every cell (student ×
/// teacher × method × seed); then the tables, claims and chart. Returns the output directory.
pub fn run_study(opts: &StudyOptions) -> Result<PathBuf> {
    let (study, methods) = load_study(opts)?;
    let out = opts
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs").join(format!("study-{}", slug(&study.name))));
    std::fs::create_dir_all(&out)?;
    let t0 = Instant::now();
    let wall = WallClock::open(&out.join("wall_seconds"));
    let mut compute = 0.0;
    let kept = train_teachers(&study, &methods, opts, &out, &mut compute)?;
    let teachers = teachers_at_matched_accuracy(&study, &kept, opts, &out)?;
    let (results, missing) = run_cells(
        &study,
        &methods,
        &teachers.used,
        opts,
        &out,
        &wall,
        &mut compute,
    )?;
    if !opts.report_only {
        wall.save()?;
    }
    write_results(
        &study,
        opts,
        &out,
        &results,
        &teachers,
        missing,
        wall.total(),
        compute,
    )?;
    println!(
        "wrote {} ({:.0}s this invocation, {:.0}s of training compute in all)",
        out.join("results.md").display(),
        t0.elapsed().as_secs_f64(),
        compute
    );
    Ok(out)
}

/// The study file with the invocation's overrides, and its methods parsed.
fn load_study(opts: &StudyOptions) -> Result<(StudyConfig, Vec<KdMethod>)> {
    let text = std::fs::read_to_string(&opts.config)
        .with_context(|| format!("reading {}", opts.config.display()))?;
    let mut study: StudyConfig =
        toml::from_str(&text).with_context(|| format!("parsing {}", opts.config.display()))?;
    if let Ok(p) = std::env::var("LKD_FASHION_MNIST") {
        if matches!(
            study.base.data.dataset.kind,
            lkd_trainer::data::DatasetKind::FashionMnist
                | lkd_trainer::data::DatasetKind::ClutteredFashionMnist
        ) {
            study.base.data.dataset.path = p.into();
        }
    }
    if let Some(l) = opts.limit {
        study.base.data.dataset.limit = Some(l);
    }
    if let Some(l) = opts.val_limit {
        study.base.data.dataset.val_limit = Some(l);
    }
    let methods: Vec<KdMethod> = study
        .methods
        .iter()
        .map(|m| KdMethod::parse(m))
        .collect::<Result<_, _>>()?;
    if study.seeds.is_empty() || study.students.is_empty() {
        bail!("a study needs at least one seed and one student");
    }
    Ok((study, methods))
}

/// A teacher the study distils from: its kept record, where it came from, its config.
type Kept = (KeptTeacher, &'static str, TrainConfig);

/// Each teacher trained once per recipe under $LKD_CACHE/teachers and reused by later studies;
/// the study keeps what it distils from in its own folder (`teachers/`).
fn train_teachers(
    study: &StudyConfig,
    methods: &[KdMethod],
    opts: &StudyOptions,
    out: &Path,
    compute: &mut f64,
) -> Result<Vec<Kept>> {
    let kept_dir = out.join("teachers");
    let mut kept: Vec<Kept> = vec![];
    let needs_teachers = methods.iter().any(|m| *m != KdMethod::None);
    if needs_teachers {
        std::fs::create_dir_all(&kept_dir)?;
        for t in &study.teachers {
            let mut cfg = study.base.clone();
            cfg.model = t.model.clone();
            cfg.optim.epochs = t.epochs.unwrap_or(study.teacher_epochs);
            cfg.run.keep_epoch_weights = study.teachers_at_matched_top1;
            let digest = cfg.result_digest();
            println!(
                "teacher {} ({}, {} epochs)",
                t.label, t.model.preset, cfg.optim.epochs
            );
            let record = kept_dir.join(format!("{}.json", slug(&t.label)));
            let earlier = std::fs::read(&record)
                .ok()
                .and_then(|b| serde_json::from_slice::<KeptTeacher>(&b).ok())
                .filter(|k| k.recipe_digest == digest && !opts.retrain_teachers);
            if let Some(k) = earlier {
                println!("  reusing the kept teacher {}", record.display());
                kept.push((k, "kept by an earlier invocation", cfg));
                continue;
            }
            let t_start = Instant::now();
            let (dir, outcome) = if opts.report_only {
                match kept_teacher(&cfg) {
                    Some(dir) => (dir, RunOutcome::Reused),
                    None => {
                        println!("  not trained yet: its cells are left out");
                        continue;
                    }
                }
            } else {
                train_or_reuse_shared(&cfg, opts.retrain_teachers, true)
                    .with_context(|| format!("training teacher {}", t.label))?
            };
            let (seconds, origin) = match outcome {
                RunOutcome::Reused => {
                    println!("  reusing the kept teacher {}", dir.display());
                    (0.0, "reused (trained by an earlier run)")
                }
                RunOutcome::Trained { .. } => (t_start.elapsed().as_secs_f64(), "trained here"),
            };
            *compute += seconds;
            let k = KeptTeacher::from_run(&t.label, digest, &dir, seconds)?;
            if !opts.report_only {
                lkd_util::write_atomic(&record, serde_json::to_string_pretty(&k)?.as_bytes())?;
            }
            kept.push((k, origin, cfg));
        }
    }
    Ok(kept)
}

/// The teachers' weights the cells distil from, and the teacher table's rows.
struct ChosenTeachers {
    used: BTreeMap<String, UsedTeacher>,
    rows: Vec<TeacherRow>,
    /// The matched top-1 (the least accurate teacher's), when teachers are matched.
    target: Option<f64>,
}

/// Each teacher's checkpoint closest to the least accurate teacher's top-1 (or its best, when
/// the study does not match), copied into the study folder.
fn teachers_at_matched_accuracy(
    study: &StudyConfig,
    kept: &[Kept],
    opts: &StudyOptions,
    out: &Path,
) -> Result<ChosenTeachers> {
    let kept_dir = out.join("teachers");
    // Matching needs every teacher: with one missing, no distillation cell can be judged.
    let all_teachers = kept.len() == study.teachers.len();
    let target = (study.teachers_at_matched_top1 && all_teachers).then(|| {
        kept.iter()
            .map(|(k, ..)| k.best_top1)
            .fold(f64::INFINITY, f64::min)
    });
    let mut used: BTreeMap<String, UsedTeacher> = BTreeMap::new();
    let mut teacher_rows: Vec<TeacherRow> = vec![];
    for (k, origin, cfg) in kept {
        let e = k.pick_epoch(target)?;
        let weights = if opts.report_only {
            kept_dir.join(k.weights_name(e))
        } else {
            match k.weights_in(&kept_dir, e, target.is_some()) {
                Ok(w) => w,
                // A record whose epoch weights are neither copied here nor in the teacher
                // cache (a fresh machine, before every teacher was trained): the recipe is
                // deterministic, so train it into the cache again and copy them from there.
                Err(first) => {
                    println!(
                        "teacher {}: the weights of epoch {} are not at hand: training it again",
                        k.label,
                        e.epoch + 1
                    );
                    let (dir, _) = train_or_reuse_shared(cfg, false, true)
                        .with_context(|| format!("training teacher {}", k.label))?;
                    let again = KeptTeacher {
                        run_dir: dir,
                        ..k.clone()
                    };
                    again
                        .weights_in(&kept_dir, e, target.is_some())
                        .map_err(|e| e.context(first))?
                }
            }
        };
        if let Some(target) = target {
            println!(
                "teacher {}: distilling from epoch {} ({:.2} %), closest to the least accurate teacher's {target:.2} %",
                k.label,
                e.epoch + 1,
                e.best_top1()
            );
        }
        teacher_rows.push(TeacherRow {
            label: k.label.clone(),
            best_top1: k.best_top1,
            used_epoch: e.epoch + 1,
            used_top1: e.best_top1(),
            // The study folder's copy, not the cache path of the machine that trained it.
            origin: format!(
                "{origin}; weights `{}`",
                weights.strip_prefix(out).unwrap_or(&weights).display()
            ),
        });
        if !study.teachers_at_matched_top1 || all_teachers {
            used.insert(
                k.label.clone(),
                UsedTeacher {
                    weights,
                    model: k.model.clone(),
                },
            );
        }
    }

    Ok(ChosenTeachers {
        used,
        rows: teacher_rows,
        target,
    })
}

/// Every cell, trained (or resumed) unless it finished before with the recipe asked now.
/// Returns the finished cells and how many are missing.
#[allow(clippy::too_many_arguments)]
fn run_cells(
    study: &StudyConfig,
    methods: &[KdMethod],
    used: &BTreeMap<String, UsedTeacher>,
    opts: &StudyOptions,
    out: &Path,
    wall: &WallClock,
    compute: &mut f64,
) -> Result<(Vec<CellResult>, usize)> {
    let mut results: Vec<CellResult> = vec![];
    let mut missing = 0usize;
    for student in &study.students {
        for &method in methods {
            let teachers: Vec<Option<&TeacherSpec>> = if method == KdMethod::None {
                vec![None]
            } else {
                study.teachers.iter().map(Some).collect()
            };
            for teacher in teachers {
                for &seed in &study.seeds {
                    let tlabel = teacher
                        .map(|t| t.label.clone())
                        .unwrap_or_else(|| "—".into());
                    let name = format!(
                        "{}-{}-{}-s{seed}",
                        slug(&student.preset),
                        teacher
                            .map(|t| slug(&t.label))
                            .unwrap_or_else(|| "none".into()),
                        slug(method.as_str())
                    );
                    let dir = out.join("cells").join(&name);
                    let result_path = dir.join("result.json");
                    let teacher_used = teacher.map(|t| used.get(&t.label));
                    if teacher_used.is_some_and(|u| u.is_none()) {
                        missing += 1;
                        continue;
                    }
                    let mut cfg = study.base.clone();
                    cfg.model = student.clone();
                    cfg.optim.epochs = study.student_epochs;
                    cfg.run.seed = seed;
                    cfg.distill = teacher_used.flatten().map(|u| {
                        let mut d = DistillConfig::new(method, u.weights.clone());
                        d.teacher_model = Some(u.model.clone());
                        d
                    });
                    // A cell counts as done only for the recipe asked now (a changed teacher,
                    // budget or base config trains it again).
                    let same_recipe = RunDir::open(&dir)
                        .and_then(|r| r.config())
                        .is_ok_and(|c| cfg.same_recipe_as(&c));
                    if let Some(mut r) = std::fs::read(&result_path)
                        .ok()
                        .filter(|_| same_recipe)
                        .and_then(|b| serde_json::from_slice::<CellResult>(&b).ok())
                    {
                        println!("cell {name}: done before (top-1 {:.2}%)", r.top1);
                        if study.erf_images > 0 && r.erf_rms_radius.is_none() {
                            // Cells recorded before the continuous ERF measures: measure again.
                            r.set_erf(cell_erf(&dir, &cfg, study.erf_images)?);
                            lkd_util::write_atomic(
                                &result_path,
                                serde_json::to_string_pretty(&r)?.as_bytes(),
                            )?;
                        }
                        *compute += r.seconds;
                        results.push(r);
                        continue;
                    }
                    if opts.report_only {
                        missing += 1;
                        continue;
                    }
                    println!("cell {name}");
                    let seconds = ensure_run(&dir, &cfg)?;
                    *compute += seconds;
                    let erf = if study.erf_images > 0 {
                        Some(cell_erf(&dir, &cfg, study.erf_images)?)
                    } else {
                        None
                    };
                    let mut r = CellResult {
                        student: student.preset.clone(),
                        teacher: tlabel,
                        method: method.as_str().into(),
                        seed,
                        top1: best_top1(&dir)?,
                        seconds,
                        run_dir: dir.display().to_string(),
                        erf_r20: None,
                        erf: vec![],
                        erf_interpolated: vec![],
                        erf_rms_radius: None,
                    };
                    if let Some(erf) = erf {
                        r.set_erf(erf);
                    }
                    lkd_util::write_atomic(
                        &result_path,
                        serde_json::to_string_pretty(&r)?.as_bytes(),
                    )?;
                    results.push(r);
                    wall.save()?;
                }
            }
        }
    }
    Ok((results, missing))
}

/// results.md (tables, claims, provenance), results.csv, results-seeds.csv and results.png.
#[allow(clippy::too_many_arguments)]
fn write_results(
    study: &StudyConfig,
    opts: &StudyOptions,
    out: &Path,
    results: &[CellResult],
    teachers: &ChosenTeachers,
    missing: usize,
    wall_seconds: f64,
    compute: f64,
) -> Result<()> {
    let (mut md, csv) = tables(study, results, &teachers.rows, teachers.target, compute);
    md.push_str(&claims(study, results));
    if missing > 0 {
        md.push_str(&format!(
            "\n**Partial: {missing} of {} cells not finished yet**; the tables hold the finished ones.\n",
            missing + results.len()
        ));
    }
    md.push_str(&provenance(&opts.config, wall_seconds, missing == 0));
    lkd_util::write_atomic(&out.join("results.md"), md.as_bytes())?;
    lkd_util::write_atomic(&out.join("results.csv"), csv.as_bytes())?;
    lkd_util::write_atomic(
        &out.join("results-seeds.csv"),
        per_seed_csv(results).as_bytes(),
    )?;
    if !results.is_empty() {
        chart(&out.join("results.png"), results)?;
    }
    println!("{md}");
    Ok(())
}

/// Wall time over every invocation of a study (resumed ones add to it), saved after each cell so
/// a killed invocation still counts up to its last finished cell.
struct WallClock {
    path: PathBuf,
    before: f64,
    start: Instant,
}

impl WallClock {
    fn open(path: &Path) -> Self {
        let before = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0.0);
        Self {
            path: path.to_path_buf(),
            before,
            start: Instant::now(),
        }
    }
    fn total(&self) -> f64 {
        self.before + self.start.elapsed().as_secs_f64()
    }
    fn save(&self) -> Result<()> {
        Ok(lkd_util::write_atomic(
            &self.path,
            format!("{:.1}", self.total()).as_bytes(),
        )?)
    }
}

/// Command, commit, machine, date and wall time, stated under the tables.
fn provenance(config: &Path, wall: f64, finished: bool) -> String {
    let machine = lkd_util::Machine::this();
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    format!(
        "\nCommand: `lkd study {}` (lkd {}, commit {}). Machine: {}. {} {date}; wall time {:.0} s ({:.2} h) over all invocations.\n",
        config.display(),
        env!("CARGO_PKG_VERSION"),
        env!("LKD_GIT_COMMIT"),
        machine.describe(),
        if finished { "Finished" } else { "Reported" },
        wall,
        wall / 3600.0
    )
}

/// A teacher's line in the tables.
struct TeacherRow {
    label: String,
    best_top1: f64,
    used_epoch: usize,
    used_top1: f64,
    origin: String,
}

/// Cells sharing (student, teacher, method).
type CellGroup<'a> = ((String, String, String), Vec<&'a CellResult>);

/// Groups by (student, teacher, method) in first-seen order.
fn groups(results: &[CellResult]) -> Vec<CellGroup<'_>> {
    let mut out: Vec<CellGroup<'_>> = vec![];
    for r in results {
        let key = (r.student.clone(), r.teacher.clone(), r.method.clone());
        match out.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(r),
            None => out.push((key, vec![r])),
        }
    }
    out
}

fn tables(
    study: &StudyConfig,
    results: &[CellResult],
    teachers: &[TeacherRow],
    matched_to: Option<f64>,
    compute: f64,
) -> (String, String) {
    let mut md = format!("# Study `{}`\n\n", study.name);
    if !teachers.is_empty() {
        md.push_str("| teacher | preset | epochs | best top-1 (%) | distilled from | run |\n|---|---|---:|---:|---|---|\n");
        for t in &study.teachers {
            let Some(row) = teachers.iter().find(|r| r.label == t.label) else {
                continue;
            };
            md.push_str(&format!(
                "| {} | {} | {} | {:.2} | epoch {} ({:.2} %) | {} |\n",
                t.label,
                t.model.preset,
                t.epochs.unwrap_or(study.teacher_epochs),
                row.best_top1,
                row.used_epoch,
                row.used_top1,
                row.origin
            ));
        }
        if let Some(target) = matched_to {
            md.push_str(&format!("\nTeachers at matched accuracy: each student distils from the teacher's epoch checkpoint whose top-1 is closest to {target:.2} %, the least accurate teacher's best, so differences between teachers are not differences in teacher accuracy.\n"));
        }
        md.push('\n');
    }
    md.push_str("| student | teacher | KD | top-1 mean ± std (%) | seeds | gain vs no-KD | ERF r@0.2 mean ± std | ERF r@0.99 mean ± std |\n|---|---|---|---:|---:|---:|---:|---:|\n");
    // The csv crate quotes labels holding commas or quotes ("ConvNeXt (3x3, small)").
    let mut csv_out = csv::Writer::from_writer(vec![]);
    csv_out
        .write_record([
            "student",
            "teacher",
            "method",
            "top1_mean",
            "top1_std",
            "seeds",
            "gain_vs_none",
            "erf_r20",
            "erf_r30",
            "erf_r50",
            "erf_r99",
            "run_dirs",
        ])
        .expect("in-memory csv");
    let gs = groups(results);
    let baseline = |student: &str| {
        gs.iter()
            .find(|((s, _, m), _)| s == student && m == "none")
            .map(|(_, v)| mean_std(&v.iter().map(|r| r.top1).collect::<Vec<_>>()).0)
    };
    for ((student, teacher, method), cells) in &gs {
        let (m, s) = mean_std(&cells.iter().map(|r| r.top1).collect::<Vec<_>>());
        let gain = baseline(student)
            .filter(|_| method != "none")
            .map(|b| m - b);
        let erf = |t: f64| {
            let v: Vec<f64> = cells.iter().filter_map(|r| r.erf_at(t)).collect();
            (!v.is_empty()).then(|| mean_std(&v))
        };
        let erf_cell = |t: f64| {
            erf(t)
                .map(|(e, s)| format!("{e:.4} ± {s:.4}"))
                .unwrap_or_else(|| "—".into())
        };
        md.push_str(&format!(
            "| {student} | {teacher} | {method} | {m:.2} ± {s:.2} | {} | {} | {} | {} |\n",
            cells.len(),
            gain.map(|g| format!("{g:+.2}"))
                .unwrap_or_else(|| "—".into()),
            erf_cell(0.2),
            erf_cell(0.99)
        ));
        let dirs: Vec<&str> = cells.iter().map(|r| r.run_dir.as_str()).collect();
        let mut record = vec![
            student.clone(),
            teacher.clone(),
            method.clone(),
            format!("{m:.4}"),
            format!("{s:.4}"),
            cells.len().to_string(),
            gain.map(|g| format!("{g:.4}")).unwrap_or_default(),
        ];
        record.extend(
            ERF_THRESHOLDS.map(|t| erf(t).map(|(e, _)| format!("{e:.6}")).unwrap_or_default()),
        );
        record.push(dirs.join(";"));
        csv_out.write_record(record).expect("in-memory csv");
    }
    md.push_str(&format!(
        "\nTop-1: best epoch (student or EMA) on the validation split; mean ± sample std over seeds. Training compute: {compute:.0} s in all. Per-seed figures and run dirs: results-seeds.csv.\n"
    ));
    (
        md,
        String::from_utf8(csv_out.into_inner().expect("in-memory csv"))
            .expect("csv of utf-8 strings"),
    )
}

/// One row per finished cell (every seed's top-1 and ERF area ratios), so anyone can recompute
/// the paired tests from what is published.
fn per_seed_csv(results: &[CellResult]) -> String {
    let mut out = csv::Writer::from_writer(vec![]);
    let mut header = vec!["student", "teacher", "method", "seed", "top1"];
    header.extend(["erf_r20", "erf_r30", "erf_r50", "erf_r99"]);
    header.extend([
        "erf_interp_r20",
        "erf_interp_r30",
        "erf_interp_r50",
        "erf_interp_r99",
    ]);
    header.extend(["erf_rms_radius_px", "run_dir"]);
    out.write_record(header).expect("in-memory csv");
    for r in results {
        let mut record = vec![
            r.student.clone(),
            r.teacher.clone(),
            r.method.clone(),
            r.seed.to_string(),
            format!("{:.4}", r.top1),
        ];
        record.extend(
            ERF_THRESHOLDS.map(|t| r.erf_at(t).map(|e| format!("{e:.6}")).unwrap_or_default()),
        );
        record.extend(ERF_THRESHOLDS.map(|t| {
            r.erf_interpolated_at(t)
                .map(|e| format!("{e:.6}"))
                .unwrap_or_default()
        }));
        record.push(
            r.erf_rms_radius
                .map(|e| format!("{e:.4}"))
                .unwrap_or_default(),
        );
        record.push(r.run_dir.clone());
        out.write_record(record).expect("in-memory csv");
    }
    String::from_utf8(out.into_inner().expect("in-memory csv")).expect("csv of utf-8 strings")
}

/// The paper's claims checked on this grid, each as a per-seed paired difference: (a) a
/// large-kernel teacher vs a Transformer teacher, same student, method and seed; (c) the
/// student's ERF under the large-kernel teacher vs without distillation. A claim holds when the
/// 95 % paired t interval lies above 0, is reversed when it lies below, otherwise it is not
/// resolved at that many seeds (see `lkd_trainer::stats`).
fn claims(study: &StudyConfig, results: &[CellResult]) -> String {
    let family = |prefix: &str| {
        study
            .teachers
            .iter()
            .find(|t| t.model.preset.starts_with(prefix))
            .map(|t| t.label.clone())
    };
    let small = family("convnext");
    let (Some(large), vit) = (family("slak"), family("vit")) else {
        return String::new();
    };
    let cell = |student: &str, teacher: &str, method: &str, seed: u64| {
        results.iter().find(|r| {
            r.student == student && r.teacher == teacher && r.method == method && r.seed == seed
        })
    };
    let mut md = String::from(
        "\n## The paper's claims on this grid\n\nPaired by seed: the mean of the per-seed differences with its 95 % confidence interval (paired t), the two-sided paired t-test p-value and the exact sign-flip permutation p-value (all 2^n sign patterns). A claim holds only when the interval lies above 0, is reversed when it lies below 0, and is otherwise not resolved at that many seeds. With n seeds no sign-flip p-value can be below 2/2^n (0.25 at 3 seeds).\n\n| claim | student | KD | mean difference [95 % CI] | n | t-test p | sign-flip p | verdict |\n|---|---|---|---:|---:|---:|---:|---|\n",
    );
    let mut tally: BTreeMap<&str, [usize; 4]> = BTreeMap::new();
    let mut students: Vec<&str> = results.iter().map(|r| r.student.as_str()).collect();
    students.dedup();
    let methods: Vec<&str> = study
        .methods
        .iter()
        .map(String::as_str)
        .filter(|m| *m != "none")
        .collect();
    for student in students {
        for method in &methods {
            let mut rows: Vec<(&str, String, Vec<f64>)> = vec![];
            // Per-seed top-1 of the large-kernel teacher's student minus `other`'s.
            let top1_over = |other: &str| -> Vec<f64> {
                study
                    .seeds
                    .iter()
                    .filter_map(|&s| {
                        Some(
                            cell(student, &large, method, s)?.top1
                                - cell(student, other, method, s)?.top1,
                        )
                    })
                    .collect()
            };
            if let Some(vit) = &vit {
                rows.push((
                    "(a) top-1",
                    format!("{large} − {vit} (pts)"),
                    top1_over(vit),
                ));
            }
            // Kernel size alone: the large- against the small-kernel ConvNet teacher.
            if let Some(small) = &small {
                rows.push((
                    "(k) top-1, kernel size",
                    format!("{large} − {small} (pts)"),
                    top1_over(small),
                ));
            }
            // (c) on the continuous measures: the whole-pixel ratio moves in steps and is
            // bounded by the student's theoretical receptive field at high thresholds.
            let erf_diff = |measure: &dyn Fn(&CellResult) -> Option<f64>| -> Vec<f64> {
                study
                    .seeds
                    .iter()
                    .filter_map(|&s| {
                        Some(
                            measure(cell(student, &large, method, s)?)?
                                - measure(cell(student, "—", "none", s)?)?,
                        )
                    })
                    .collect()
            };
            for (t, claim) in ERF_THRESHOLDS.iter().zip([
                "(c) ERF r@0.2 (interpolated)",
                "(c) ERF r@0.3 (interpolated)",
                "(c) ERF r@0.5 (interpolated)",
                "(c) ERF r@0.99 (interpolated)",
            ]) {
                let d = erf_diff(&|r: &CellResult| r.erf_interpolated_at(*t));
                rows.push((claim, format!("{large} − no KD"), d));
            }
            let d = erf_diff(&|r: &CellResult| r.erf_rms_radius);
            rows.push(("(c) ERF RMS radius (px)", format!("{large} − no KD"), d));
            for (claim, what, d) in rows {
                if d.is_empty() {
                    continue;
                }
                let test = Paired::new(&d);
                let v = test.verdict();
                let t = tally.entry(claim).or_default();
                t[match v {
                    Verdict::Holds => 0,
                    Verdict::Reversed => 1,
                    Verdict::NotResolved { .. } => 2,
                }] += 1;
                t[3] += 1;
                let digits = if claim.starts_with("(c)") { 4 } else { 2 };
                let p =
                    |p: Option<f64>| p.map(|p| format!("{p:.3}")).unwrap_or_else(|| "n/a".into());
                md.push_str(&format!(
                    "| {claim}: {what} | {student} | {method} | {} | {} | {} | {} | {v} |\n",
                    test.mean_and_interval(digits),
                    test.n,
                    p(test.p_t),
                    p(test.p_sign_flip),
                ));
            }
        }
    }
    md.push('\n');
    for (claim, [held, reversed, open, of]) in tally {
        md.push_str(&format!(
            "- {claim}: holds in {held}, reversed in {reversed}, not resolved in {open} of {of} student × KD pairs.\n"
        ));
    }
    md
}

fn chart(path: &Path, results: &[CellResult]) -> Result<()> {
    let gs = groups(results);
    crate::plots::write_png_atomic(path, |tmp| {
        {
            let root = BitMapBackend::new(tmp, (900, 460)).into_drawing_area();
            root.fill(&WHITE)?;
            let vals: Vec<(String, f64, f64)> = gs
                .iter()
                .map(|((s, t, m), v)| {
                    let (mean, std) = mean_std(&v.iter().map(|r| r.top1).collect::<Vec<_>>());
                    (format!("{s}\n{t}/{m}"), mean, std)
                })
                .collect();
            let lo = vals
                .iter()
                .map(|v| v.1 - v.2)
                .fold(100.0, f64::min)
                .floor()
                .max(0.0)
                - 1.0;
            let hi = vals.iter().map(|v| v.1 + v.2).fold(0.0, f64::max).ceil() + 1.0;
            let mut chart = ChartBuilder::on(&root)
                .caption("student top-1 by teacher and KD method", ("sans-serif", 18))
                .margin(12)
                .x_label_area_size(60)
                .y_label_area_size(48)
                .build_cartesian_2d((0..vals.len()).into_segmented(), lo.max(0.0)..hi.min(100.0))?;
            let labels: Vec<String> = vals.iter().map(|v| v.0.replace('\n', " ")).collect();
            chart
                .configure_mesh()
                .disable_x_mesh()
                .y_desc("top-1 (%)")
                .x_label_formatter(&|v| match v {
                    SegmentValue::CenterOf(i) => labels.get(*i).cloned().unwrap_or_default(),
                    _ => String::new(),
                })
                .x_label_style(("sans-serif", 10))
                .draw()?;
            chart.draw_series(vals.iter().enumerate().map(|(i, v)| {
                Rectangle::new(
                    [
                        (SegmentValue::Exact(i), lo.max(0.0)),
                        (SegmentValue::Exact(i + 1), v.1),
                    ],
                    RGBColor(31, 119, 180).mix(0.8).filled(),
                )
            }))?;
            chart.draw_series(vals.iter().enumerate().map(|(i, v)| {
                PathElement::new(
                    [
                        (SegmentValue::CenterOf(i), v.1 - v.2),
                        (SegmentValue::CenterOf(i), v.1 + v.2),
                    ],
                    BLACK.stroke_width(2),
                )
            }))?;
            root.present()?;
        }
        Ok(())
    })
}
