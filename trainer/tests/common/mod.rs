#![allow(dead_code)]
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The bootstrapped venv's python (set by `make`); tests fail rather than skip without it.
pub fn python() -> String {
    std::env::var("LKD_PYTHON").expect(
        "LKD_PYTHON is not set: run the tests through `make test`, which bootstraps the venv",
    )
}

/// Runs the PyTorch reference generator for one preset into `out`.
pub fn make_case(preset: &str, overrides: &str, wrap: &str, out: &Path) {
    let status = Command::new(python())
        .arg(repo_root().join("tests/reference/make_case.py"))
        .args([
            "--preset",
            preset,
            "--override",
            overrides,
            "--wrap",
            wrap,
            "--out",
        ])
        .arg(out)
        .status()
        .expect("run python");
    assert!(
        status.success(),
        "make_case.py failed for {preset} {overrides}"
    );
}

/// A shipped Fashion-MNIST config (`configs/<file>`) on `$LKD_FASHION_MNIST`, cut to `limit`
/// training and `val_limit` validation images, one epoch of batch 64 on one thread.
pub fn fmnist_config(
    file: &str,
    limit: usize,
    val_limit: usize,
) -> lkd_trainer::config::TrainConfig {
    let text = std::fs::read_to_string(repo_root().join("configs").join(file)).unwrap();
    let mut cfg = lkd_trainer::config::TrainConfig::from_toml_str(&text).unwrap();
    cfg.data.dataset.path = std::env::var("LKD_FASHION_MNIST")
        .expect("LKD_FASHION_MNIST is not set: run through `make test`")
        .into();
    cfg.data.dataset.limit = Some(limit);
    cfg.data.dataset.val_limit = Some(val_limit);
    cfg.optim.epochs = 1;
    cfg.optim.batch_size = 64;
    cfg.run.threads = 1;
    cfg
}
