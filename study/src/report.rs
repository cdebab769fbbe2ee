//! The demo report: a markdown table of measured figures and PNG figures (plotters).

use crate::plots::write_heatmaps;
use anyhow::{Context, Result};
use lkd_exporter::ExportReport;
use lkd_runtime::{BenchConfig, BenchResult};
use lkd_trainer::erf::ErfResult;
use lkd_trainer::rundir::RunDir;
use lkd_trainer::stats::{mean_std, Paired, Verdict};
use plotters::prelude::*;
use std::path::{Path, PathBuf};

pub struct ModelRow {
    pub name: String,
    pub role: String,
    pub run: PathBuf,
    pub onnx: PathBuf,
    pub preset: String,
    pub kd: String,
    pub seed: u64,
    pub params: usize,
    pub gflops: f64,
    /// (epoch, top-1) of the student weights, and of the EMA where kept.
    pub curve: Vec<(usize, f64)>,
    pub best_top1: f64,
    pub latency: Vec<BenchResult>,
    pub erf: Option<ErfResult>,
    pub export: Option<ExportReport>,
}

impl ModelRow {
    pub fn new(
        name: &str,
        role: &str,
        run: &Path,
        onnx: PathBuf,
        export: Option<ExportReport>,
    ) -> Result<Self> {
        let rd = RunDir::open(run)?;
        let cfg = rd.config()?;
        let graph = cfg.model.build()?;
        let evals = rd.evaluations()?;
        let curve: Vec<(usize, f64)> = evals.iter().map(|e| (e.epoch, e.top1)).collect();
        let best = evals.iter().map(|e| e.best_top1()).fold(f64::NAN, f64::max);
        Ok(Self {
            name: name.into(),
            role: role.into(),
            run: run.to_path_buf(),
            onnx,
            preset: graph.preset.clone(),
            kd: cfg
                .distill
                .as_ref()
                .map(|d| d.method.as_str().to_string())
                .unwrap_or_else(|| "none".into()),
            seed: cfg.run.seed,
            params: graph.num_parameters(),
            gflops: graph.gflops(),
            curve,
            best_top1: best,
            latency: vec![],
            erf: None,
            export,
        })
    }

    pub fn measure_latency(&mut self, batches: &[usize], iters: usize) -> Result<()> {
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let cfg = BenchConfig {
            batch_sizes: batches.to_vec(),
            threads: vec![threads],
            iters,
            warmup: 3,
            ..Default::default()
        };
        let rep = lkd_runtime::bench(&self.onnx, None, &cfg)
            .with_context(|| format!("benchmarking {}", self.onnx.display()))?;
        for r in &rep.results {
            println!(
                "  {:<18} batch {:>3}: p50 {:>8.3} ms  p90 {:>8.3} ms  {:>8.0} img/s",
                self.name, r.batch, r.p50_ms, r.p90_ms, r.throughput_img_s
            );
        }
        self.latency = rep.results;
        Ok(())
    }

    fn p50(&self, batch: usize) -> Option<f64> {
        self.latency
            .iter()
            .find(|r| r.batch == batch)
            .map(|r| r.p50_ms)
    }

    fn erf_ratio(&self, t: f64) -> Option<f64> {
        self.erf
            .as_ref()?
            .area_ratios
            .iter()
            .find(|(x, _)| (*x - t).abs() < 1e-9)
            .map(|(_, r)| *r)
    }
}

pub struct Report {
    pub title: String,
    pub quick: bool,
    pub rows: Vec<ModelRow>,
    pub seconds: f64,
    /// Lines stated under the table (e.g. where the teacher came from).
    pub notes: Vec<String>,
}

fn fmt_opt(v: Option<f64>, digits: usize) -> String {
    v.filter(|x| x.is_finite())
        .map(|x| format!("{x:.digits$}"))
        .unwrap_or_else(|| "n/a".into())
}

impl Report {
    /// The no-KD student of the same preset and seed as `row`.
    fn baseline(&self, row: &ModelRow) -> Option<&ModelRow> {
        self.rows.iter().find(|r| {
            r.kd == "none"
                && r.name.contains("student")
                && r.preset == row.preset
                && r.seed == row.seed
        })
    }

    /// Top-1 gain of a distilled student over the no-KD student of the same preset and seed.
    pub fn kd_gain(&self, row: &ModelRow) -> Option<f64> {
        let base = self.baseline(row)?;
        (row.kd != "none").then_some(row.best_top1 - base.best_top1)
    }

    /// The verdict under the table: teacher vs student, and the KD gain paired by seed (mean, 95 %
    /// t interval, p-values); "helped" only when the interval lies above 0.
    pub fn verdict(&self) -> String {
        let gains: Vec<f64> = self.rows.iter().filter_map(|r| self.kd_gain(r)).collect();
        let base: Vec<f64> = self
            .rows
            .iter()
            .filter(|r| r.kd == "none" && r.name.contains("student"))
            .map(|r| r.best_top1)
            .collect();
        let kd: Vec<f64> = self
            .rows
            .iter()
            .filter(|r| r.kd != "none")
            .map(|r| r.best_top1)
            .collect();
        let teacher = self
            .rows
            .iter()
            .find(|r| r.name == "teacher")
            .map(|r| r.best_top1);
        let mut out = vec![];
        if let (Some(t), false) = (teacher, base.is_empty()) {
            let (b, _) = mean_std(&base);
            out.push(format!("The teacher reached {t:.2}% top-1, {:+.2} points over the no-KD student ({b:.2}% mean).", t - b));
        }
        if gains.is_empty() {
            return out.join(" ");
        }
        let gain = Paired::new(&gains);
        let (k, ks) = mean_std(&kd);
        let (b, bs) = mean_std(&base);
        let n = gain.n;
        let finding = match gain.verdict() {
            Verdict::Holds => "distillation helped".to_string(),
            Verdict::Reversed => "distillation hurt".to_string(),
            not_resolved => format!("whether distillation helped is {not_resolved}"),
        };
        let tests = match (gain.p_t, gain.p_sign_flip) {
            (Some(pt), Some(ps)) => format!(", paired t p = {pt:.3}, sign-flip p = {ps:.3}"),
            _ => String::new(),
        };
        out.push(format!(
            "Over {n} seed(s): NKD student {k:.2} ± {ks:.2}%, no-KD student {b:.2} ± {bs:.2}%, KD gain {} points (mean [95 % CI]{tests}): {finding}.",
            gain.mean_and_interval(2)
        ));
        out.join(" ")
    }

    pub fn table(&self) -> String {
        let mut s = String::from(
            "| model | role | preset | KD | top-1 (%) | KD gain (pts) | params | GFLOPs | ORT p50 b1 (ms) | ORT p50 b32 (ms) | ERF r@0.2 | r@0.3 | r@0.5 | r@0.99 |\n\
             |---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        );
        for r in &self.rows {
            s.push_str(&format!(
                "| {} | {} | {} | {} | {:.2} | {} | {} | {:.4} | {} | {} | {} | {} | {} | {} |\n",
                r.name,
                r.role,
                r.preset,
                r.kd,
                r.best_top1,
                self.kd_gain(r)
                    .map(|g| format!("{g:+.2}"))
                    .unwrap_or_else(|| "—".into()),
                lkd_models::summary::group_thousands(r.params),
                r.gflops,
                fmt_opt(r.p50(1), 3),
                fmt_opt(r.p50(32), 3),
                fmt_opt(r.erf_ratio(0.2), 3),
                fmt_opt(r.erf_ratio(0.3), 3),
                fmt_opt(r.erf_ratio(0.5), 3),
                fmt_opt(r.erf_ratio(0.99), 3),
            ));
        }
        s
    }

    pub fn summary(&self) -> String {
        let mut lines = vec![];
        for r in &self.rows {
            lines.push(format!(
                "{:<18} top-1 {:>6.2}%  {:>9} params  b1 {:>7} ms{}",
                r.name,
                r.best_top1,
                lkd_models::summary::group_thousands(r.params),
                fmt_opt(r.p50(1), 3),
                self.kd_gain(r)
                    .map(|g| format!("  KD gain {g:+.2} pts"))
                    .unwrap_or_default()
            ));
        }
        lines.push(self.verdict());
        lines.extend(self.notes.iter().cloned());
        lines.push(format!(
            "total {:.0}s{}",
            self.seconds,
            if self.quick { " (quick subset)" } else { "" }
        ));
        lines.join("\n")
    }
}

/// Writes report.md and its figures into `dir`; returns the report's path.
pub fn write(dir: &Path, rep: &Report) -> Result<PathBuf> {
    accuracy_plot(&dir.join("accuracy.png"), rep)?;
    latency_plot(&dir.join("latency.png"), rep)?;
    let erfs: Vec<(&str, &ErfResult)> = rep
        .rows
        .iter()
        .filter_map(|r| Some((r.name.as_str(), r.erf.as_ref()?)))
        .collect();
    if !erfs.is_empty() {
        write_heatmaps(&dir.join("erf.png"), &erfs)?;
    }
    let mut md = format!("# {}\n\n", rep.title);
    md.push_str(&format!(
        "Fashion-MNIST ({}), CPU. Every figure below was measured in this run ({:.0} s in all).\n\n",
        if rep.quick { "quick subset: 4 000 train / 1 000 val images, 1 epoch" } else { "60 000 train / 10 000 val images" },
        rep.seconds
    ));
    md.push_str(&rep.table());
    md.push_str(&format!("\n**{}**\n", rep.verdict()));
    for n in &rep.notes {
        md.push_str(&format!("\n- {n}"));
    }
    md.push('\n');
    md.push_str(
        "\ntop-1: best epoch of the student or its EMA on the validation split. KD gain: distilled student minus the \
         no-KD student trained with the same budget. Latency: ONNX Runtime (CPU) median over repeated runs of the exported \
         model (deploy rewrites on). ERF r@t: side² / area of the smallest centred square holding a share t of the \
         (log, max-normalised) input-gradient contribution of the last stage's centre pixel, measured on inputs \
         upscaled 4x as the papers measure ImageNet models on 1024² inputs — larger means a wider effective receptive field.\n\n",
    );
    for r in &rep.rows {
        if let Some(e) = &r.export {
            md.push_str(&format!(
                "- export `{}`: {}\n",
                r.onnx.display(),
                e.summary()
            ));
        }
    }
    md.push_str("\n![accuracy](accuracy.png)\n\n![latency](latency.png)\n\n![erf](erf.png)\n");
    let path = dir.join("report.md");
    lkd_util::write_atomic(&path, md.as_bytes())?;
    Ok(path)
}

const COLOURS: [RGBColor; 4] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
];

fn accuracy_plot(path: &Path, rep: &Report) -> Result<()> {
    crate::plots::write_png_atomic(path, |tmp| {
        {
            let root = BitMapBackend::new(tmp, (720, 420)).into_drawing_area();
            root.fill(&WHITE)?;
            let max_epoch = rep
                .rows
                .iter()
                .flat_map(|r| r.curve.iter().map(|c| c.0))
                .max()
                .unwrap_or(0)
                + 1;
            let lo = rep
                .rows
                .iter()
                .flat_map(|r| r.curve.iter().map(|c| c.1))
                .fold(100.0, f64::min)
                .floor()
                .max(0.0);
            let mut chart = ChartBuilder::on(&root)
                .caption("validation top-1 per epoch", ("sans-serif", 20))
                .margin(12)
                .x_label_area_size(36)
                .y_label_area_size(48)
                .build_cartesian_2d(0.5f64..max_epoch as f64 + 0.5, lo..100.0)?;
            chart
                .configure_mesh()
                .x_desc("epoch")
                .y_desc("top-1 (%)")
                .draw()?;
            for (i, r) in rep.rows.iter().enumerate() {
                let c = COLOURS[i % COLOURS.len()];
                let pts: Vec<(f64, f64)> =
                    r.curve.iter().map(|&(e, a)| (e as f64 + 1.0, a)).collect();
                chart
                    .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))?
                    .label(r.name.clone())
                    .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], c));
                chart.draw_series(pts.iter().map(|&p| Circle::new(p, 3, c.filled())))?;
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()?;
            root.present()?;
        }
        Ok(())
    })
}

fn latency_plot(path: &Path, rep: &Report) -> Result<()> {
    crate::plots::write_png_atomic(path, |tmp| {
        {
            let root = BitMapBackend::new(tmp, (720, 420)).into_drawing_area();
            root.fill(&WHITE)?;
            let batches: Vec<usize> = {
                let mut b: Vec<usize> = rep
                    .rows
                    .iter()
                    .flat_map(|r| r.latency.iter().map(|l| l.batch))
                    .collect();
                b.sort();
                b.dedup();
                b
            };
            let panels = root.split_evenly((1, batches.len().max(1)));
            for (panel, &batch) in panels.iter().zip(&batches) {
                let vals: Vec<f64> = rep
                    .rows
                    .iter()
                    .map(|r| r.p50(batch).unwrap_or(0.0))
                    .collect();
                let top = vals.iter().cloned().fold(0.0, f64::max) * 1.2 + 1e-6;
                let mut chart = ChartBuilder::on(panel)
                    .caption(
                        format!("ORT p50 latency, batch {batch}"),
                        ("sans-serif", 18),
                    )
                    .margin(12)
                    .x_label_area_size(36)
                    .y_label_area_size(52)
                    .build_cartesian_2d((0..rep.rows.len()).into_segmented(), 0.0..top)?;
                let names: Vec<String> = rep.rows.iter().map(|r| r.name.clone()).collect();
                chart
                    .configure_mesh()
                    .disable_x_mesh()
                    .y_desc("ms")
                    .x_label_formatter(&|v| match v {
                        SegmentValue::CenterOf(i) => names.get(*i).cloned().unwrap_or_default(),
                        _ => String::new(),
                    })
                    .draw()?;
                chart.draw_series(vals.iter().enumerate().map(|(i, &v)| {
                    let c = COLOURS[i % COLOURS.len()];
                    Rectangle::new(
                        [
                            (SegmentValue::Exact(i), 0.0),
                            (SegmentValue::Exact(i + 1), v),
                        ],
                        c.filled(),
                    )
                }))?;
            }
            root.present()?;
        }
        Ok(())
    })
}
