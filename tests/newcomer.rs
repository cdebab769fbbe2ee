//! What a newcomer meets first (issue 26), through the `lkd` binary: progress lines in a log
//! file, a preset that follows an RGB folder (and says so), and `lkd eval` refusing a model whose
//! classes are not the dataset's.

mod common;

use common::{lkd_in, text};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

fn fashion() -> String {
    std::env::var("LKD_FASHION_MNIST")
        .expect("LKD_FASHION_MNIST must point at the Fashion-MNIST folder (see env.mk)")
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A temp dir shared by the tests: a 3-class RGB JPEG folder and a config naming it.
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("lkd-newcomer")
            .tempdir()
            .unwrap()
            .keep();
        lkd_trainer::data::synthetic::write_jpeg_folder(&dir.join("rgb"), 3, 12, 4, 40, 36, 3)
            .unwrap();
        std::fs::write(
            dir.join("folder.toml"),
            format!(
                "[model]\npreset = \"convnext_proxy\"\n\n[data.dataset]\nkind = \"folder\"\npath = \"{}\"\n",
                dir.join("rgb").display()
            ),
        )
        .unwrap();
        std::fs::write(
            dir.join("fashion.toml"),
            format!(
                "[model]\npreset = \"convnext_proxy\"\n\n[data.dataset]\nkind = \"fashion-mnist\"\npath = \"{}\"\nval_limit = 64\n",
                fashion()
            ),
        )
        .unwrap();
        dir
    })
}

fn lkd(args: &[&str]) -> std::process::Output {
    lkd_in(&scratch().join("cache"), args)
}

/// One short run on Fashion-MNIST (10 classes, 1 channel), shared.
fn fashion_run() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        let run = scratch().join("fashion-run");
        let o = lkd(&[
            "train",
            "--out",
            run.to_str().unwrap(),
            "--limit",
            "256",
            "--epochs",
            "1",
            "--batch-size",
            "32",
            "--set",
            "data.dataset.val_limit=64",
            "--set",
            "run.log_every=3",
        ]);
        assert!(o.status.success(), "{}", text(&o));
        std::fs::write(scratch().join("fashion-run.stderr"), &o.stderr).unwrap();
        run
    })
}

/// One step on the RGB folder with the 1-channel, 10-class preset, shared.
fn folder_run() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        let run = scratch().join("folder-run");
        let config = scratch().join("folder.toml");
        let o = lkd(&[
            "train",
            "--config",
            config.to_str().unwrap(),
            "--out",
            run.to_str().unwrap(),
            "--batch-size",
            "8",
            "--set",
            "run.max_steps=1",
        ]);
        assert!(o.status.success(), "{}", text(&o));
        std::fs::write(scratch().join("folder-run.stderr"), &o.stderr).unwrap();
        run
    })
}

#[test]
fn progress_is_printed_as_plain_lines_off_a_terminal() {
    let run = fashion_run();
    let err = std::fs::read_to_string(scratch().join("fashion-run.stderr")).unwrap();
    let metrics: Vec<serde_json::Value> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v.get("loss").is_some())
        .collect();
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("step ")).collect();
    // 256 images in batches of 32: 8 steps, a line every 3.
    assert_eq!(lines.len(), 2, "{err}");
    assert_eq!(metrics.len(), 2);
    for (line, m) in lines.iter().zip(&metrics) {
        let step = m["step"].as_u64().unwrap();
        let prefix = format!(
            "step {step}/8  epoch 1/1 {step}/8 ({:.0}%)  loss {:.4}  lr {:.2e}  ",
            100.0 * step as f64 / 8.0,
            m["loss"].as_f64().unwrap(),
            m["lr"].as_f64().unwrap()
        );
        assert!(line.starts_with(&prefix), "{line:?} vs {prefix:?}");
        let rest = &line[prefix.len()..];
        let (ips, eta) = rest.split_once(" img/s  eta ").expect(line);
        assert!(ips.parse::<f64>().unwrap() > 0.0, "{line}");
        let hms: Vec<u64> = eta.split(':').map(|p| p.parse().unwrap()).collect();
        assert_eq!(hms.len(), 3, "{line}");
    }
    // No progress-bar drawing in the log.
    assert!(!err.contains("=>") && !err.contains('\r'), "{err}");
    assert!(err.contains("epoch 1/1: top-1 "), "{err}");
}

#[test]
fn quiet_prints_no_progress_lines() {
    let run = scratch().join("quiet-run");
    let o = lkd(&[
        "train",
        "--out",
        run.to_str().unwrap(),
        "--limit",
        "64",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--quiet",
        "--set",
        "data.dataset.val_limit=32",
        "--set",
        "run.log_every=1",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        !stderr(&o).lines().any(|l| l.starts_with("step ")),
        "{}",
        text(&o)
    );
}

#[test]
fn a_preset_follows_an_rgb_folder_and_says_so() {
    let run = folder_run();
    let err = std::fs::read_to_string(scratch().join("folder-run.stderr")).unwrap();
    let notes: Vec<&str> = err.lines().filter(|l| l.starts_with("model.")).collect();
    assert_eq!(
        notes,
        [
            "model.num_classes = 3 from dataset folder/train (preset convnext_proxy has 10)",
            "model.in_chans = 3 from dataset folder/train (preset convnext_proxy has 1)",
        ],
        "{err}"
    );
    let config = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(
        config.contains("in_chans = 3") && config.contains("num_classes = 3"),
        "{config}"
    );
}

#[test]
fn a_channel_count_the_data_do_not_have_is_refused() {
    let run = scratch().join("three-channel-fashion");
    let o = lkd(&[
        "train",
        "--out",
        run.to_str().unwrap(),
        "--limit",
        "64",
        "--set",
        "model.in_chans=3",
    ]);
    assert!(!o.status.success());
    assert_eq!(
        stderr(&o).trim_end(),
        format!(
            "error: run {}: config: model.in_chans = 3, but dataset fashion-mnist/train has \
             1-channel images: remove model.in_chans to follow the dataset",
            run.display()
        )
    );
    assert!(!run.join("config.toml").exists(), "nothing written");
}

#[test]
fn eval_refuses_a_model_with_other_classes_than_the_data() {
    let ten = fashion_run();
    let folder = scratch().join("folder.toml");
    // 10-class model on a 3-class folder: refused, then scored with the flag.
    let o = lkd(&[
        "eval",
        ten.to_str().unwrap(),
        "--config",
        folder.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert_eq!(
        stderr(&o).trim_end(),
        "error: the model predicts 10 classes, dataset folder/val has 3: evaluate a model \
         trained on this dataset (lkd train / lkd distill), or pass --allow-class-mismatch if \
         its labels 0..2 are the model's first 3 classes"
    );
    let o = lkd(&[
        "eval",
        ten.to_str().unwrap(),
        "--config",
        folder.to_str().unwrap(),
        "--allow-class-mismatch",
        "--json",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        stderr(&o)
            .contains("scoring dataset label i as model class i (3 of the model's 10 classes)"),
        "{}",
        text(&o)
    );
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j["images"], 12);

    // A 3-class model on 10-class data: labels 3..9 have no output, so the flag cannot help.
    let three = folder_run();
    let fashion = scratch().join("fashion.toml");
    for extra in [&[][..], &["--allow-class-mismatch"][..]] {
        let o = lkd(&[
            &[
                "eval",
                three.to_str().unwrap(),
                "--config",
                fashion.to_str().unwrap(),
            ][..],
            extra,
        ]
        .concat());
        assert!(!o.status.success());
        assert_eq!(
            stderr(&o).trim_end(),
            "error: the model predicts 3 classes, dataset fashion-mnist/val has 10: evaluate a \
             model trained on this dataset (lkd train / lkd distill)"
        );
    }
    // Matching classes evaluate as before.
    let o = lkd(&["eval", ten.to_str().unwrap(), "--limit", "32"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("on fashion-mnist/val (32 images): top-1 "),
        "{}",
        text(&o)
    );
}
