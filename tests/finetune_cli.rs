//! Fine-tuning through the `lkd` binary, as a user with their own photos does it: a timm
//! ImageNet checkpoint fine-tuned into a 3-class teacher on an RGB folder, exported with its
//! provenance, then a student distilled from it starting from a torchvision checkpoint.

mod common;

use common::{lkd_in, text};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Peer checkpoints (trainer/tests/finetune_peers.py) and a 3-class RGB JPEG folder.
fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("lkd-finetune")
            .tempdir()
            .unwrap()
            .keep();
        let python = std::env::var("LKD_PYTHON")
            .expect("LKD_PYTHON is not set: run the tests through `make test`");
        let out = std::process::Command::new(python)
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("trainer/tests/finetune_peers.py"))
            .arg("--out")
            .arg(dir.join("peers"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        lkd_trainer::data::synthetic::write_jpeg_folder(&dir.join("photos"), 3, 8, 4, 40, 36, 3)
            .unwrap();
        std::fs::write(
            dir.join("photos.toml"),
            format!(
                "[model]\npreset = \"resnet18\"\ninput_size = 32\n\n[data.dataset]\nkind = \"folder\"\npath = \"{}\"\n\n[optim]\nepochs = 1\nbatch_size = 8\nwarmup_epochs = 0\n",
                dir.join("photos").display()
            ),
        )
        .unwrap();
        dir
    })
}

fn lkd(args: &[&str]) -> std::process::Output {
    lkd_in(&scratch().join("cache"), args)
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The timm checkpoint fine-tuned into a 3-class teacher on the folder, shared.
fn teacher() -> &'static Path {
    static RUN: OnceLock<PathBuf> = OnceLock::new();
    RUN.get_or_init(|| {
        let run = scratch().join("teacher");
        let o = lkd(&[
            "train",
            "--config",
            path(&scratch().join("photos.toml")),
            "--init",
            path(&scratch().join("peers/timm_resnet18.pth")),
            "--out",
            path(&run),
        ]);
        let t = text(&o);
        assert!(o.status.success(), "{t}");
        assert!(
            t.contains("fc.weight: dropped and re-initialised (classifier for another class count: checkpoint [1000, 512], model [3, 512])")
                && !t.contains("stem adapted"),
            "{t}"
        );
        run
    })
}

#[test]
fn a_fine_tuned_teacher_exports_with_its_init_recorded() {
    let run = teacher();
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run.join("init.json")).unwrap()).unwrap();
    assert!(record["source"]
        .as_str()
        .unwrap()
        .ends_with("timm_resnet18.pth"));
    let onnx = scratch().join("teacher.onnx");
    // Export runs its ONNX Runtime parity check against the trained weights.
    let o = lkd(&["export", path(run), "--out", path(&onnx)]);
    assert!(o.status.success(), "{}", text(&o));
    let python = std::env::var("LKD_PYTHON").unwrap();
    let meta = std::process::Command::new(python)
        .args([
            "-c",
            "import onnx,sys; m=onnx.load(sys.argv[1]); print({p.key: p.value for p in m.metadata_props}['lkd.init'])",
            path(&onnx),
        ])
        .output()
        .unwrap();
    let line = String::from_utf8_lossy(&meta.stdout);
    assert!(
        line.starts_with(&format!(
            "timm_resnet18.pth sha256:{}; fc.weight: dropped",
            record["sha256"].as_str().unwrap()
        )),
        "{line}{}",
        String::from_utf8_lossy(&meta.stderr)
    );
}

#[test]
fn a_student_distils_from_the_fine_tuned_teacher_starting_from_torchvision_weights() {
    let run = scratch().join("student");
    let o = lkd(&[
        "distill",
        "--config",
        path(&scratch().join("photos.toml")),
        "--teacher",
        path(teacher()),
        "--method",
        "nkd",
        "--init",
        path(&scratch().join("peers/tv_resnet18.pth")),
        "--out",
        path(&run),
    ]);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(
        t.contains("tv_resnet18.pth") && t.contains("fc.bias: dropped and re-initialised"),
        "{t}"
    );
    let cfg = std::fs::read_to_string(run.join("config.toml")).unwrap();
    assert!(
        cfg.contains("[finetune]") && cfg.contains("tv_resnet18.pth"),
        "{cfg}"
    );
}

#[test]
fn init_and_resume_do_not_mix() {
    let o = lkd(&["train", "--resume", path(teacher()), "--init", "x.pth"]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("the argument '--resume <RESUME>' cannot be used with '--init <SOURCE>'"),
        "{}",
        text(&o)
    );
}

#[test]
fn a_missing_init_source_is_named() {
    let o = lkd(&[
        "train",
        "--config",
        path(&scratch().join("photos.toml")),
        "--init",
        "/nonexistent/weights.pth",
        "--out",
        path(&scratch().join("never")),
    ]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("finetune.init: /nonexistent/weights.pth does not exist (give a run directory or a checkpoint file)"),
        "{}",
        text(&o)
    );
}
