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
