//! End-to-end training behaviour on small Fashion-MNIST subsets.

mod common;

use lkd_models::checkpoint::read_checkpoint;
use lkd_trainer::config::{DistillConfig, KdMethod, TrainConfig};
use lkd_trainer::executor::Params;
use lkd_trainer::losses::{kd_kl, FeatureLoss};
use lkd_trainer::rundir::RunDir;
use lkd_trainer::teacher::Teacher;
use lkd_trainer::teacher_cache::CacheSetting;
use lkd_trainer::train::{train, Start};
use std::path::Path;
use tch::{Device, Kind, Tensor};

fn config(preset: &str, limit: usize, epochs: usize) -> TrainConfig {
    let text =
        std::fs::read_to_string(common::repo_root().join("configs/fmnist-convnext-proxy.toml"))
            .unwrap();
    let mut cfg = TrainConfig::from_toml_str(&text).unwrap();
    cfg.model = lkd_models::ModelConfig::preset(preset);
    cfg.data.dataset.path = std::env::var("LKD_FASHION_MNIST")
        .expect("LKD_FASHION_MNIST is not set: run through `make test`")
        .into();
    cfg.data.dataset.limit = Some(limit);
    cfg.data.dataset.val_limit = Some(1000);
    cfg.optim.epochs = epochs;
    cfg.optim.batch_size = 64;
    cfg.run.log_every = 5;
    cfg.run.threads = 1;
    cfg
}

fn epoch_lines(dir: &Path) -> Vec<serde_json::Value> {
    RunDir::open(dir)
        .unwrap()
        .read_metrics()
        .unwrap()
        .into_iter()
        .filter(|l| l.get("top1").is_some())
        .collect()
}

#[test]
fn supervised_and_kd_runs_learn_well_above_chance() {
    let tmp = tempfile::tempdir().unwrap();
    let teacher_dir = tmp.path().join("teacher");
    let s = Start::new(&config("slak_proxy", 3000, 1), &teacher_dir)
        .and_then(|s| train(s, false))
        .unwrap();
    assert!(
        s.finished && s.best_top1 > 35.0,
        "teacher top-1 {}",
        s.best_top1
    );
    for f in [
        "config.toml",
        "last.safetensors",
        "best.safetensors",
        "last.state.safetensors",
        "metrics.jsonl",
    ] {
        assert!(teacher_dir.join(f).is_file(), "missing {f}");
    }
    let mut cfg = config("convnext_proxy", 3000, 1);
    cfg.distill = Some(DistillConfig {
        method: KdMethod::KdFd,
        teacher: teacher_dir.clone(),
        teacher_model: None,
        alpha: Some(0.5),
        temperature: 2.0,
        fd_weight: 1.0,
        fd_loss: FeatureLoss::SmoothL1,
        cache: CacheSetting::Dir(tmp.path().join("teacher-outputs")),
        cache_topk: 0,
    });
    cfg.ema = Some(lkd_trainer::config::EmaConfig { decay: 0.99 });
    let student_dir = tmp.path().join("student");
    let s = Start::new(&cfg, &student_dir)
        .and_then(|s| train(s, false))
        .unwrap();
    assert!(s.best_top1 > 35.0, "student top-1 {}", s.best_top1);
    assert!(s.teacher_share > 0.0);
    let lines = RunDir::open(&student_dir).unwrap().read_metrics().unwrap();
    let step = lines
        .iter()
        .find(|l| l.get("loss_kd").is_some())
        .expect("kd term logged");
    assert!(
        step.get("loss_fd").is_some()
            && step.get("loss_ce").is_some()
            && step.get("lr").is_some()
            && step.get("img_per_s").is_some()
    );
    let epoch = &epoch_lines(&student_dir)[0];
    assert!(epoch.get("ema_top1").is_some() && epoch.get("top5").is_some());
    // The student's weights load strictly into its own preset.
    let g = lkd_models::ModelConfig::preset("convnext_proxy")
        .build()
        .unwrap();
    Params::from_state_dict(
        &g,
        &read_checkpoint(&student_dir.join("best.safetensors")).unwrap(),
        Device::Cpu,
    )
    .unwrap();
}

#[test]
fn resumed_run_reproduces_the_straight_run() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config("convnext_proxy", 640, 2);
    cfg.data.dataset.val_limit = Some(200);
    cfg.ema = Some(lkd_trainer::config::EmaConfig { decay: 0.9 });
    cfg.model.drop_path = Some(0.1);
    let straight = tmp.path().join("straight");
    Start::new(&cfg, &straight)
        .and_then(|s| train(s, false))
        .unwrap();
    // Interrupted mid-epoch (after 7 of 10 steps of epoch 0), then at another point, then resumed to the end.
    let resumed = tmp.path().join("resumed");
    let mut first = cfg.clone();
    first.run.max_steps = Some(7);
    let s = Start::new(&first, &resumed)
        .and_then(|s| train(s, false))
        .unwrap();
    assert!(!s.finished && s.steps == 7);
    let mut again = cfg.clone();
    again.run.max_steps = Some(5);
    std::fs::write(resumed.join("config.toml"), again.to_toml()).unwrap();
    let s = train(Start::resume(&resumed), false).unwrap();
    assert_eq!(s.steps, 12);
    std::fs::write(resumed.join("config.toml"), cfg.to_toml()).unwrap();
    let s = train(Start::resume(&resumed), false).unwrap();
    assert!(s.finished);
    let strip = |dir: &Path| -> Vec<serde_json::Value> {
        RunDir::open(dir)
            .unwrap()
            .read_metrics()
            .unwrap()
            .into_iter()
            .map(|mut l| {
                l.as_object_mut().unwrap().remove("img_per_s");
                l
            })
            .collect()
    };
    assert_eq!(strip(&straight), strip(&resumed));
    assert_eq!(
        read_checkpoint(&straight.join("last.safetensors")).unwrap(),
        read_checkpoint(&resumed.join("last.safetensors")).unwrap()
    );
}

#[test]
fn exploding_loss_stops_with_a_clear_error_and_keeps_the_last_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config("convnext_proxy", 2000, 1);
    cfg.optim.lr = 1e12;
    cfg.optim.warmup_epochs = 0.0;
    cfg.run.checkpoint_every = 1;
    let dir = tmp.path().join("run");
    let err = Start::new(&cfg, &dir)
        .and_then(|s| train(s, false))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("non-finite loss") && err.contains("step") && err.contains("ce="),
        "{err}"
    );
    // The last good checkpoint loads and its loss was finite.
    let (sd, state) = RunDir::open(&dir).unwrap().load_state().unwrap();
    assert!(state.step >= 1);
    assert!(sd.keys().any(|k| k.starts_with("model.")));
    let g = lkd_models::ModelConfig::preset("convnext_proxy")
        .build()
        .unwrap();
    Params::from_state_dict(
        &g,
        &read_checkpoint(&dir.join("last.safetensors")).unwrap(),
        Device::Cpu,
    )
    .unwrap();
}

#[test]
fn teacher_is_frozen_and_receives_no_gradient() {
    let tmp = tempfile::tempdir().unwrap();
    let teacher_dir = tmp.path().join("teacher");
    let mut cfg = config("slak_proxy", 256, 1);
    cfg.data.dataset.val_limit = Some(64);
    Start::new(&cfg, &teacher_dir)
        .and_then(|s| train(s, false))
        .unwrap();
    let d = DistillConfig {
        method: KdMethod::Kd,
        teacher: teacher_dir,
        teacher_model: None,
        alpha: None,
        temperature: 1.0,
        fd_weight: 1.0,
        fd_loss: FeatureLoss::Mse,
        cache: CacheSetting::Off,
        cache_topk: 0,
    };
    let teacher = Teacher::load(&d, Device::Cpu).unwrap();
    let student_graph = lkd_models::ModelConfig::preset("convnext_proxy")
        .build()
        .unwrap();
    let student = Params::init(&student_graph, Device::Cpu, 0).unwrap();
    let exec = lkd_trainer::Executor::new(student_graph.clone());
    let x = Tensor::randn([4, 1, 28, 28], (Kind::Float, Device::Cpu));
    let (t_logits, maps) = teacher.forward(&x, &["stage3"]).unwrap();
    assert!(!t_logits.requires_grad() && !maps[0].requires_grad());
    let s_logits = exec.forward(&student, &x, true, &[]).unwrap().logits;
    kd_kl(&s_logits, &t_logits, 1.0).unwrap().backward();
    for (name, t) in &teacher.params.tensors {
        assert!(!t.requires_grad(), "{name} requires grad");
        assert!(!t.grad().defined(), "{name} received a gradient");
    }
    assert!(student.get("head.weight").grad().defined());
    // Eval mode: running statistics untouched by the teacher's forward pass.
    let sd = read_checkpoint(&tmp.path().join("teacher/best.safetensors")).unwrap();
    let before = &sd["stages.0.0.large_kernel.LoRA1.bn.running_mean"];
    let after = lkd_trainer::executor::tensor_to_host(
        teacher
            .params
            .get("stages.0.0.large_kernel.LoRA1.bn.running_mean"),
    )
    .unwrap();
    assert_eq!(before, &after);
}

/// A FIFO, a 2 GiB sparse `.jpg` and a symlink loop in a folder dataset: the first two are
/// skipped (each named with its reason in `skipped.txt`), the loop walked once; an empty class
/// folder is an error, or left out when the config says so.
#[test]
fn hostile_files_in_a_folder_dataset_are_skipped_listed_and_bounded() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("data");
    lkd_trainer::data::synthetic::write_jpeg_folder(&root, 3, 10, 4, 40, 36, 7).unwrap();
    let huge = root.join("train/class_00/huge.jpg");
    let f = std::fs::File::create(&huge).unwrap();
    std::io::Write::write_all(&mut &f, &[0xFF, 0xD8, 0xFF, 0xE0]).unwrap();
    f.set_len(2 << 30).unwrap();
    let fifo = root.join("train/class_02/pipe.jpg");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    std::os::unix::fs::symlink("..", root.join("train/class_01/loop")).unwrap();
    std::os::unix::fs::symlink("..", root.join("val/class_01/loop")).unwrap();
    std::fs::create_dir_all(root.join("train/class_03")).unwrap();
    let mut cfg = config("convnext_proxy", 1000, 1);
    cfg.data.dataset =
        lkd_trainer::data::DatasetSpec::new(lkd_trainer::data::DatasetKind::Folder, &root);
    // 32 files (30 images, 2 refused) in one batch: every file is tried in the epoch.
    cfg.optim.batch_size = 32;
    let dir = tmp.path().join("run");
    let err = Start::new(&cfg, &dir)
        .and_then(|s| train(s, false))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!(
            "class folder `{}` holds no .jpg/.jpeg/.png/.webp file: add images, remove the folder, \
             or set `empty_classes = \"exclude\"` in the dataset config to leave it out",
            root.join("train/class_03").display()
        )
    );
    cfg.data.dataset.empty_classes = lkd_trainer::data::EmptyClasses::Exclude;
    let start = std::time::Instant::now();
    let s = Start::new(&cfg, &dir)
        .and_then(|s| train(s, false))
        .unwrap();
    assert!(start.elapsed().as_secs() < 120);
    assert_eq!(s.skipped_files, 2);
    let written = RunDir::open(&dir).unwrap().config().unwrap();
    assert_eq!(written.model.num_classes, Some(3));
    // The loop was walked once: 12 validation images, not a multiple.
    let val = lkd_trainer::data::open(&cfg.data.dataset, lkd_trainer::data::Split::Val).unwrap();
    assert_eq!(val.len(), 12);
    assert_eq!(
        std::fs::read_to_string(dir.join("skipped.txt")).unwrap(),
        format!(
            "train: {}: the file is 2147483648 bytes; the limit for an image file is 134217728 \
             bytes\ntrain: {}: a FIFO (named pipe), not a regular file: give an image file\n",
            huge.display(),
            fifo.display()
        )
    );
}

#[test]
fn corrupt_images_in_a_folder_dataset_are_skipped_and_counted() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("data");
    lkd_trainer::data::synthetic::write_jpeg_folder(&root, 3, 40, 10, 40, 36, 7).unwrap();
    std::fs::write(root.join("train/class_01/broken.jpg"), b"not a jpeg at all").unwrap();
    let mut cfg = config("convnext_proxy", 1000, 1);
    cfg.data.dataset =
        lkd_trainer::data::DatasetSpec::new(lkd_trainer::data::DatasetKind::Folder, &root);
    cfg.optim.batch_size = 16;
    let dir = tmp.path().join("run");
    let s = Start::new(&cfg, &dir)
        .and_then(|s| train(s, false))
        .unwrap();
    assert_eq!(s.skipped_files, 1);
    let epoch = &epoch_lines(&dir)[0];
    assert_eq!(epoch["skipped_files"], 1);
    // The model followed the dataset: 3 classes, RGB.
    let written = RunDir::open(&dir).unwrap().config().unwrap();
    assert_eq!(
        (written.model.num_classes, written.model.in_chans),
        (Some(3), Some(3))
    );
    // Every skipped file is listed in the run dir with its reason.
    assert_eq!(
        std::fs::read_to_string(dir.join("skipped.txt")).unwrap(),
        format!(
            "train: {}: unrecognised image format: expected a JPEG, PNG, WebP, BMP or GIF file\n",
            root.join("train/class_01/broken.jpg").display()
        )
    );
    // Strict mode stops with the file's path.
    cfg.data.dataset.strict = true;
    let err = Start::new(&cfg, tmp.path().join("strict"))
        .and_then(|s| train(s, false))
        .unwrap_err()
        .to_string();
    assert!(err.contains("broken.jpg"), "{err}");
}
