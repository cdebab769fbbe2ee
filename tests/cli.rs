//! The `lkd` binary end to end: the quick demo, a resumable two-cell study, and clear errors.

mod common;

use common::{lkd_in, text};
use std::path::Path;
use std::process::{Command, Output};

fn lkd(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lkd"))
        .args(args)
        .output()
        .expect("run lkd")
}

#[test]
fn quick_demo_writes_a_complete_report() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("demo");
    let cache = dir.path().join("cache");
    let demo = |extra: &[&str]| {
        lkd_in(
            &cache,
            &[&["demo", "--quick", "--out", out.to_str().unwrap()], extra].concat(),
        )
    };
    let o = demo(&[]);
    assert!(o.status.success(), "{}", text(&o));
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    let rows: Vec<&str> = report
        .lines()
        .filter(|l| l.starts_with("| teacher") || l.starts_with("| student"))
        .collect();
    assert_eq!(rows.len(), 5, "{report}");
    for row in rows {
        assert!(
            !row.contains("n/a") && !row.contains("NaN"),
            "unfilled cell: {row}"
        );
    }
    assert!(
        report.contains("KD gain")
            && report.contains("Over 2 seed(s)")
            && report.contains("teacher trained in this run"),
        "{report}"
    );
    // The proxy's regime on a short run: the large-kernel teacher is clearly ahead of the
    // student it teaches (the default demo asks ≥ 2 points; this run measured about 7).
    let lead: f64 = report
        .split(" points over the no-KD student")
        .next()
        .and_then(|head| head.rsplit(", ").next())
        .and_then(|v| v.trim_start_matches('+').parse().ok())
        .unwrap_or_else(|| panic!("no teacher lead in the report:\n{report}"));
    assert!(
        lead >= 2.0,
        "the teacher leads by only {lead} points:\n{report}"
    );
    for png in ["accuracy.png", "latency.png", "erf.png"] {
        let bytes = std::fs::read(out.join(png)).unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "{png}");
    }
    for onnx in [
        "teacher",
        "student_nkd_s0",
        "student_baseline_s0",
        "student_nkd_s1",
        "student_baseline_s1",
    ] {
        assert!(
            out.join("onnx").join(format!("{onnx}.onnx")).is_file(),
            "{onnx}"
        );
    }
    // A second run reuses every finished stage.
    let o = demo(&[]);
    let t = text(&o);
    assert!(
        o.status.success() && t.matches("reusing").count() >= 10,
        "{t}"
    );
    // --fresh retrains the students but not the kept teacher, and says so.
    let o = demo(&["--fresh", "--seeds", "1"]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    let report = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(
        report.contains("reused the teacher trained earlier"),
        "{report}"
    );
    assert!(t.contains("teacher outputs"), "{t}");
}

fn write_tiny_study(path: &Path) {
    let data = std::env::var("LKD_FASHION_MNIST")
        .expect("LKD_FASHION_MNIST is not set: run through `make test`");
    std::fs::write(
        path,
        format!(
            r#"
name = "tiny"
students = [{{ preset = "convnext_proxy" }}]
methods = ["none", "kd"]
seeds = [0]
teacher_epochs = 1
student_epochs = 1
erf_images = 2
[[teachers]]
label = "SLaK"
model = {{ preset = "slak_proxy" }}
[base.model]
preset = "convnext_proxy"
[base.data.dataset]
kind = "fashion-mnist"
path = "{data}"
limit = 256
val_limit = 128
[base.optim]
batch_size = 64
"#
        ),
    )
    .unwrap();
}

#[test]
fn two_cell_study_produces_tables_and_resumes_without_recomputing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("study.toml");
    write_tiny_study(&cfg);
    let out = dir.path().join("study");
    let cache = dir.path().join("cache");
    let study = |extra: &[&str]| {
        lkd_in(
            &cache,
            &[
                &[
                    "study",
                    cfg.to_str().unwrap(),
                    "--out",
                    out.to_str().unwrap(),
                ],
                extra,
            ]
            .concat(),
        )
    };
    // A look before anything ran trains nothing and says what is missing.
    let o = study(&["--report-only"]);
    let md = std::fs::read_to_string(out.join("results.md")).unwrap_or_default();
    assert!(
        o.status.success()
            && md.contains("Partial: 2 of 2 cells not finished yet")
            && !cache.join("teachers").exists(),
        "{}\n{md}",
        text(&o)
    );
    let o = study(&[]);
    assert!(o.status.success(), "{}", text(&o));
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(
        md.contains("| convnext_proxy | — | none |")
            && md.contains("| convnext_proxy | SLaK | kd |"),
        "{md}"
    );
    let csv = std::fs::read_to_string(out.join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");
    let seeds = std::fs::read_to_string(out.join("results-seeds.csv")).unwrap();
    assert!(
        seeds.starts_with("student,teacher,method,seed,top1,erf_r20,")
            && seeds.lines().count() == 3
            && seeds.contains("convnext_proxy,SLaK,kd,0,"),
        "{seeds}"
    );
    assert!(out.join("results.png").is_file());
    let stamp = |p: &Path| {
        std::fs::metadata(p.join("last.safetensors"))
            .unwrap()
            .modified()
            .unwrap()
    };
    let cell = out.join("cells/convnext_proxy-slak-kd-s0");
    let before = stamp(&cell);
    let o = study(&[]);
    let t = text(&o);
    assert!(
        o.status.success()
            && t.matches("done before").count() == 2
            && t.contains("reusing the kept teacher"),
        "{t}"
    );
    assert_eq!(stamp(&cell), before, "a finished cell was retrained");
    assert_eq!(
        std::fs::read_to_string(out.join("results.csv")).unwrap(),
        csv
    );
    assert!(
        md.contains("(c) ERF r@0.2 (interpolated): SLaK − no KD")
            && md.contains("(c) ERF RMS radius (px): SLaK − no KD")
            && md.contains("not resolved at 1 seed |"),
        "{md}"
    );
    // A changed teacher budget is another recipe: a new teacher, and the distilled cell trains
    // again while the no-KD cell stays done.
    let text_cfg = std::fs::read_to_string(&cfg).unwrap().replace(
        "model = { preset = \"slak_proxy\" }",
        "model = { preset = \"slak_proxy\" }\nepochs = 2",
    );
    std::fs::write(&cfg, text_cfg).unwrap();
    let o = study(&[]);
    let t = text(&o);
    assert!(
        o.status.success()
            && t.contains("teacher SLaK (slak_proxy, 2 epochs)")
            && !t.contains("reusing the kept teacher")
            && t.matches("done before").count() == 1
            && t.contains("holds a run of another recipe: training again"),
        "{t}"
    );
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(md.contains("| SLaK | slak_proxy | 2 |"), "{md}");
}

#[test]
fn teachers_at_matched_accuracy_distil_from_the_epoch_nearest_the_weakest_teachers_best() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("study.toml");
    write_tiny_study(&cfg);
    let text_cfg = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("teacher_epochs = 1", "teacher_epochs = 3\nteachers_at_matched_top1 = true")
        .replace(r#"methods = ["none", "kd"]"#, r#"methods = ["kd"]"#)
        + "[[teachers]]\nlabel = \"ConvNeXt\"\nmodel = { preset = \"convnext_proxy\" }\nepochs = 1\n";
    std::fs::write(&cfg, text_cfg).unwrap();
    let out = dir.path().join("study");
    let cache = dir.path().join("cache");
    let study = || {
        lkd_in(
            &cache,
            &[
                "study",
                cfg.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ],
        )
    };
    let o = study();
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    // Each teacher's record and the epoch's weights it distils from are in the study folder.
    let record = |slug: &str| -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(out.join(format!("teachers/{slug}.json"))).unwrap())
            .unwrap()
    };
    let best = |r: &serde_json::Value| r["best_top1"].as_f64().unwrap();
    let (slak, convnext) = (record("slak"), record("convnext"));
    let target = best(&slak).min(best(&convnext));
    let evals = slak["evaluations"].as_array().unwrap();
    assert_eq!(evals.len(), 3);
    let top1 = |e: &serde_json::Value| {
        let t = e["top1"].as_f64().unwrap();
        e["ema_top1"].as_f64().map_or(t, |m| m.max(t))
    };
    // The SLaK epoch closest to the target (ties: the earlier).
    let (pick, picked) = evals
        .iter()
        .enumerate()
        .map(|(i, e)| (i + 1, top1(e)))
        .reduce(|a, b| {
            if (b.1 - target).abs() < (a.1 - target).abs() {
                b
            } else {
                a
            }
        })
        .unwrap();
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(
        md.contains(&format!(
            "| SLaK | slak_proxy | 3 | {:.2} | epoch {pick} ({picked:.2} %) |",
            best(&slak)
        )) && md.contains("Teachers at matched accuracy")
            && md.contains(&format!("closest to {target:.2} %")),
        "{md}"
    );
    let weights: Vec<String> = std::fs::read_dir(out.join("teachers"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".safetensors"))
        .collect();
    assert!(
        weights
            .iter()
            .any(|n| n.starts_with("slak-") && n.ends_with(&format!("-e{pick:03}.safetensors"))),
        "{weights:?}"
    );
    let cell_cfg =
        std::fs::read_to_string(out.join("cells/convnext_proxy-slak-kd-s0/config.toml")).unwrap();
    assert!(
        cell_cfg.contains(&format!("-e{pick:03}.safetensors")),
        "{cell_cfg}"
    );
    // A fresh cache (another machine with the study folder) needs no teacher training.
    std::fs::remove_dir_all(&cache).unwrap();
    let o = study();
    let t = text(&o);
    assert!(
        o.status.success()
            && t.matches("reusing the kept teacher").count() == 2
            && t.contains("done before"),
        "{t}"
    );
}

#[test]
fn unavailable_device_is_an_error_not_a_fallback() {
    let dir = tempfile::tempdir().unwrap();
    let o = lkd(&[
        "train",
        "--device",
        "cuda:0",
        "--limit",
        "64",
        "--epochs",
        "1",
        "--out",
        dir.path().join("r").to_str().unwrap(),
    ]);
    let t = text(&o);
    assert!(
        !o.status.success() && t.contains("cuda:0") && t.contains("CUDA device"),
        "{t}"
    );
}

#[test]
fn models_lists_presets_and_rejects_unknown_ones() {
    let o = lkd(&["models"]);
    let t = text(&o);
    assert!(
        o.status.success()
            && t.contains("convnext_tiny")
            && t.contains("28,589,128")
            && t.contains("slak_proxy"),
        "{t}"
    );
    let o = lkd(&["models", "--show", "slak_tiny"]);
    let t = text(&o);
    assert!(
        o.status.success()
            && t.contains("stages.0.0.large_kernel.LoRA1.conv")
            && t.contains("Conv51x5/1 dw"),
        "{t}"
    );
    let o = lkd(&["models", "--show", "slak_huge"]);
    assert!(!o.status.success() && text(&o).contains("unknown preset `slak_huge`"));
}

#[test]
fn missing_dataset_and_truncated_checkpoint_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let o = lkd(&[
        "train",
        "--limit",
        "64",
        "--set",
        "data.dataset.path=\"/nonexistent/fmnist\"",
        "--out",
        dir.path().join("r").to_str().unwrap(),
    ]);
    let t = text(&o);
    assert!(
        !o.status.success()
            && t.contains("/nonexistent/fmnist")
            && t.contains("train-images-idx3-ubyte"),
        "{t}"
    );
    let bad = dir.path().join("bad.pth");
    std::fs::write(&bad, b"PK\x03\x04truncated").unwrap();
    let o = lkd(&[
        "eval",
        bad.to_str().unwrap(),
        "--preset",
        "convnext_proxy",
        "--limit",
        "10",
    ]);
    let t = text(&o);
    assert!(!o.status.success() && t.contains("bad.pth"), "{t}");

    // A path that does not exist is said to be missing, not taken for a checkpoint file.
    let gone = dir.path().join("gone");
    let o = lkd(&["eval", gone.to_str().unwrap(), "--limit", "10"]);
    assert!(
        text(&o).contains(&format!(
            "error: {} does not exist (give a run directory or a checkpoint file)",
            gone.display()
        )),
        "{}",
        text(&o)
    );
    let o = lkd(&[
        "distill",
        "--teacher",
        gone.to_str().unwrap(),
        "--limit",
        "512",
        "--out",
        dir.path().join("d").to_str().unwrap(),
    ]);
    assert!(
        text(&o).contains(&format!(
            "teacher {} does not exist (give a run directory or a checkpoint file)",
            gone.display()
        )),
        "{}",
        text(&o)
    );
    // Distillation flags get the config's range checks.
    for (flag, message) in [
        (
            "--temperature=-1",
            "error: config: distill.temperature must be in (0, 100], found -1",
        ),
        (
            "--alpha=-5",
            "error: config: distill.alpha must be in [0, 100], found -5",
        ),
    ] {
        let o = lkd(&[
            "distill",
            "--teacher",
            gone.to_str().unwrap(),
            flag,
            "--out",
            dir.path().join("f").to_str().unwrap(),
        ]);
        assert_eq!(text(&o).trim(), message);
    }
}

/// Two `lkd train --out RUN` at once: the second is refused naming the first's PID, and the
/// first runs to the end with a metric stream of its own (one line per step, in order).
#[test]
fn a_second_writer_on_one_run_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let args = |out: &Path| {
        vec![
            "train".to_string(),
            "--limit".into(),
            "3000".into(),
            "--epochs".into(),
            "2".into(),
            "--quiet".into(),
            "--out".into(),
            out.display().to_string(),
        ]
    };
    let first = Command::new(env!("CARGO_BIN_EXE_lkd"))
        .env("LKD_CACHE", dir.path().join("cache"))
        .args(args(&run))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The lock file names its holder once the lock is taken.
    let lock = run.join(".lock");
    let start = std::time::Instant::now();
    while !std::fs::read_to_string(&lock).is_ok_and(|s| s.starts_with("PID ")) {
        assert!(start.elapsed().as_secs() < 60, "the first run never locked");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let second = lkd_in(
        &dir.path().join("cache"),
        &args(&run).iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let t = text(&second);
    assert!(!second.status.success(), "{t}");
    assert!(
        t.contains(&format!(
            "error: run directory {} is in use by another process (PID {} (lkd train)): wait for \
             it to finish or stop it (the lock is released when it exits)",
            run.display(),
            first.id()
        )),
        "{t}"
    );
    let out = first.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let steps: Vec<u64> = metrics
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v.get("lr").is_some())
        .map(|v| v["step"].as_u64().unwrap())
        .collect();
    assert!(
        !steps.is_empty() && steps.windows(2).all(|w| w[0] < w[1]),
        "{steps:?}"
    );
    let evals = metrics.lines().filter(|l| l.contains("\"top1\"")).count();
    assert_eq!(evals, 2, "{metrics}");
    // The lock went with its holder: the finished run is a reader's, and resumable by anyone.
    let o = lkd_in(
        &dir.path().join("cache"),
        &["train", "--resume", run.to_str().unwrap()],
    );
    assert!(
        text(&o).contains("already finished all 2 epochs"),
        "{}",
        text(&o)
    );
}

/// `kill -9` of a trainer leaves no stale lock: the kernel drops the `flock` with the process,
/// so `--resume` right after goes on (from the last checkpoint, or from step 0 when there was
/// none) and runs to the end.
#[test]
fn a_killed_trainer_leaves_no_stale_lock() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let run = dir.path().join("run");
    let mut first = Command::new(env!("CARGO_BIN_EXE_lkd"))
        .env("LKD_CACHE", &cache)
        .args([
            "train", "--limit", "3000", "--epochs", "2", "--quiet", "--out",
        ])
        .arg(&run)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Killed while training: once a step's metrics are written, the lock is held.
    let start = std::time::Instant::now();
    while !std::fs::read_to_string(run.join("metrics.jsonl")).is_ok_and(|s| s.contains("\"lr\"")) {
        assert!(
            start.elapsed().as_secs() < 120,
            "the run never trained a step"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(std::fs::read_to_string(run.join(".lock"))
        .unwrap()
        .starts_with(&format!("PID {} ", first.id())));
    first.kill().unwrap(); // SIGKILL: no destructor, no unlock by the process itself
    assert!(!first.wait().unwrap().success());
    let o = lkd_in(
        &cache,
        &["train", "--resume", run.to_str().unwrap(), "--quiet"],
    );
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(!t.contains("in use by another process"), "{t}");
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    // Resume truncates the metric stream back to its checkpoint: one line per epoch.
    let evals = metrics.lines().filter(|l| l.contains("\"top1\"")).count();
    assert_eq!(evals, 2, "{metrics}");
}

/// `teacher-cache build` takes the cache entry's lock as training takes the run's: while another
/// process holds `ENTRY/.lock`, a build is refused naming the holder; once the holder is gone
/// (killed), the next build goes on.
#[test]
fn a_teacher_cache_entry_has_one_writer() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let teacher = dir.path().join("teacher");
    let t = text(&lkd_in(
        &cache,
        &[
            "train",
            "--limit",
            "600",
            "--epochs",
            "1",
            "--quiet",
            "--out",
            teacher.to_str().unwrap(),
        ],
    ));
    assert!(teacher.join("config.toml").is_file(), "{t}");
    let outputs = dir.path().join("outputs");
    let build = || {
        let mut args = vec![
            "teacher-cache".to_string(),
            "build".into(),
            "--config".into(),
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/configs/fmnist-convnext-proxy-nkd.toml"
            )
            .into(),
            "--epochs".into(),
            "1".into(),
            "--teacher".into(),
            teacher.display().to_string(),
            "--teacher-cache".into(),
            outputs.display().to_string(),
            "--set".into(),
            "data.dataset.limit=600".into(),
        ];
        if let Ok(p) = std::env::var("LKD_FASHION_MNIST") {
            args.extend(["--set".into(), format!("data.dataset.path={p}")]);
        }
        lkd_in(&cache, &args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let first = build();
    assert!(first.status.success(), "{}", text(&first));
    let entries: Vec<_> = std::fs::read_dir(&outputs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let entry = &entries[0];
    let lock = entry.join(".lock");
    // Another writer: a shell that writes its PID the way LKD does, then holds the flock (`-o`:
    // held by that process alone, not inherited by `sleep`).
    let mut holder = Command::new("sh")
        .arg("-c")
        .arg("printf 'PID %s (sh)' $$ > \"$0\" && exec flock -o \"$0\" sleep 120")
        .arg(&lock)
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while Command::new("flock")
        .args(["-n"])
        .arg(&lock)
        .arg("true")
        .status()
        .unwrap()
        .success()
    {
        assert!(start.elapsed().as_secs() < 30, "the holder never locked");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let busy = build();
    assert!(!busy.status.success(), "{}", text(&busy));
    assert!(
        text(&busy).contains(&format!(
            "error: teacher cache {} is in use by another process (PID {} (sh)): wait for it to \
             finish or stop it (the lock is released when it exits)",
            entry.display(),
            holder.id()
        )),
        "{}",
        text(&busy)
    );
    holder.kill().unwrap();
    holder.wait().unwrap();
    let again = build();
    assert!(again.status.success(), "{}", text(&again));
}
