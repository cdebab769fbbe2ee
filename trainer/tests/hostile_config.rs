//! Bad config values are clear errors before any work, and a run stopped before its first
//! checkpoint can be resumed or started again.

mod common;

use lkd_trainer::config::TrainConfig;
use lkd_trainer::rundir::RunDir;
use lkd_trainer::train::{train, Start};

fn config() -> TrainConfig {
    common::fmnist_config("fmnist-convnext-proxy-nkd.toml", 128, 64)
}

fn err(sets: &[&str]) -> String {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    config().with_overrides(&sets).unwrap_err().to_string()
}

#[test]
fn out_of_range_values_name_the_field_and_the_range() {
    assert_eq!(
        err(&["optim.label_smoothing=2"]),
        "config: optim.label_smoothing must be in [0, 1), found 2"
    );
    assert_eq!(
        err(&["optim.lr=-1"]),
        "config: optim.lr must be a positive finite number, found -1"
    );
    assert_eq!(
        err(&["optim.lr=nan"]),
        "config: optim.lr must be a positive finite number, found NaN"
    );
    assert_eq!(
        err(&["distill.temperature=-1"]),
        "config: distill.temperature must be in (0, 100], found -1"
    );
    assert_eq!(
        err(&["distill.alpha=-5"]),
        "config: distill.alpha must be in [0, 100], found -5"
    );
    assert_eq!(
        err(&["distill.method=\"kd\"", "distill.alpha=1.5"]),
        "config: distill.alpha must be in [0, 1] for KD (the KL weight; CE gets 1 − alpha), found 1.5"
    );
    assert_eq!(
        err(&["optim.epochs=0"]),
        "config: optim.epochs must be in 1..=100000, found 0"
    );
    assert_eq!(
        err(&["optim.epochs=10000000000"]),
        "config: optim.epochs must be in 1..=100000, found 1e10"
    );
    assert_eq!(
        err(&["optim.lr=inf"]),
        "config: optim.lr must be a positive finite number, found inf"
    );
    assert_eq!(
        err(&["distill.fd_weight=1e9"]),
        "config: distill.fd_weight must be in [0, 1000], found 1e9"
    );
    assert_eq!(
        err(&["run.device=\"tpu\""]),
        "config: run.device: unknown device `tpu`: expected `cpu`, `cuda` or `cuda:N`"
    );
    assert_eq!(
        err(&["data.augment.rand_augment=\"rand-m9-x\""]),
        "config: data.augment.rand_augment `rand-m9-x`: unknown option `x` (supported: m, mstd, mmax, n, p, inc)"
    );
    assert_eq!(
        err(&["data.augment.rand_augment=\"rand-n1000000000\""]),
        "config: data.augment.rand_augment `rand-n1000000000`: `n1000000000`: n must be a whole number in 0..=16"
    );
    assert_eq!(
        err(&["data.augment.rand_augment=\"rand-m9-p2\""]),
        "config: data.augment.rand_augment `rand-m9-p2`: p = 2 must be in [0, 1]"
    );
    assert_eq!(
        err(&["data.augment.hflip=1.5"]),
        "config: data.augment.hflip must be a probability in [0, 1], found 1.5"
    );
    assert_eq!(
        err(&["optim.warmup_epochs=5"]),
        "config: optim.warmup_epochs must be in [0, optim.epochs], found 5"
    );
}

#[test]
fn a_run_stopped_before_its_first_checkpoint_resumes_or_restarts() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config();
    cfg.distill = None;
    // What a kill (or a start-up failure) before the first checkpoint leaves: the config alone.
    let dir = tmp.path().join("run");
    RunDir::create(&dir, &cfg).unwrap();
    let s = train(Start::resume(&dir), false).unwrap();
    assert!(s.finished && s.steps == 2, "{s:?}");
    // Started again with --out: also fine, from step 0.
    let dir2 = tmp.path().join("run2");
    RunDir::create(&dir2, &cfg).unwrap();
    std::fs::write(dir2.join("metrics.jsonl"), "{\"step\":1}\n").unwrap();
    let s = Start::new(&cfg, &dir2)
        .and_then(|s| train(s, false))
        .unwrap();
    assert!(s.finished && s.steps == 2);
    assert!(!std::fs::read_to_string(dir2.join("metrics.jsonl"))
        .unwrap()
        .starts_with("{\"step\":1}"));
    // Anything else in the directory is never deleted.
    let dir3 = tmp.path().join("run3");
    RunDir::create(&dir3, &cfg).unwrap();
    std::fs::write(dir3.join("notes.txt"), "mine").unwrap();
    let e = Start::new(&cfg, &dir3)
        .and_then(|s| train(s, false))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("notes.txt") && dir3.join("notes.txt").is_file(),
        "{e}"
    );
}
