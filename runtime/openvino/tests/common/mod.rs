//! Shared helpers: the runtime's fixture models, a small SLaK export with random weights, and
//! ONNX Runtime as the reference engine.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use lkd_models::{Graph, ModelConfig};

fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the tests through `make test`, or `eval \"$(make -s env)\"` first")
    })
}

/// The runtime crate's fixture models (`runtime/tests/fixtures/make_models.py`), made once.
pub fn fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/make_models.py");
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("lkd-openvino-fixtures");
        let out = Command::new(required_env("LKD_PYTHON"))
            .arg(script)
            .arg("models")
            .arg(&dir)
            .output()
            .expect("run $LKD_PYTHON");
        assert!(
            out.status.success(),
            "make_models.py failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
}

pub fn read_f32(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// ONNX Runtime's logits for the same file and input (1 thread, the project's CPU core).
pub fn ort_logits(path: &Path, input: &[f32], shape: &[usize]) -> (Vec<i64>, Vec<f32>) {
    required_env("ORT_DYLIB_PATH");
    let (mut s, _) = lkd_ort::session_from_file(path, &lkd_ort::SessionConfig::cpu(Some(1)))
        .expect("ORT session");
    lkd_ort::run_f32(&mut s, input, shape).expect("ORT run")
}

pub fn build(preset: &str) -> Graph {
    let mut cfg = ModelConfig::preset(preset);
    cfg.preset = preset.into();
    cfg.build().unwrap()
}

#[allow(unused_imports)] // not every test binary uses it
pub use lkd_exporter::random_weights;

/// `preset` with random weights, exported by the project's exporter (parity-checked in ORT)
/// in the given large-kernel form, written to `dir`.
pub fn export(preset: &str, reparam: lkd_exporter::ReparamMode, dir: &Path) -> (PathBuf, Graph) {
    let g = build(preset);
    let w = random_weights(&g, 7);
    let opts = lkd_exporter::ExportOptions {
        reparam,
        threads: Some(1),
        ..Default::default()
    };
    let path = dir.join(format!("{preset}-{reparam:?}.onnx"));
    lkd_exporter::export(&g, &w, &opts, &path).expect("export");
    (path, g)
}

/// Whether /proc/cpuinfo lists a bf16 instruction set OpenVINO's CPU plugin uses.
pub fn cpu_has_bf16() -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|s| {
            s.split_whitespace()
                .any(|f| f == "avx512_bf16" || f == "amx_bf16")
        })
        .unwrap_or(false)
}

/// ONNX Runtime's view of the file's custom metadata.
pub fn ort_metadata(path: &Path) -> std::collections::BTreeMap<String, String> {
    let (s, _) = lkd_ort::session_from_file(path, &lkd_ort::SessionConfig::cpu(Some(1)))
        .expect("ORT session");
    let meta = s.metadata().expect("ORT metadata");
    meta.custom_keys()
        .expect("ORT metadata keys")
        .into_iter()
        .map(|k| {
            let v = meta.custom(&k).expect("ORT metadata value");
            (k, v)
        })
        .collect()
}
