//! Shared helpers: random weights with non-trivial BatchNorm statistics and layer scales (so
//! folding errors show), and running ONNX bytes in ORT.
#![allow(dead_code)]

use lkd_exporter::ortrun;
use lkd_models::{Graph, HostTensor, ModelConfig};

pub fn build(preset: &str, overrides: &str) -> Graph {
    let mut cfg: ModelConfig = if overrides.is_empty() {
        ModelConfig::preset(preset)
    } else {
        let mut v: serde_json::Value = serde_json::from_str(overrides).unwrap();
        v["preset"] = serde_json::Value::String(preset.into());
        serde_json::from_value(v).unwrap()
    };
    cfg.preset = preset.into();
    cfg.build().unwrap()
}

#[allow(unused_imports)] // not every test binary uses it
pub use lkd_exporter::random_weights;

pub fn run_bytes(bytes: &[u8], x: &HostTensor) -> Vec<f32> {
    let mut s = ortrun::session(bytes, lkd_util::Device::Cpu, Some(1)).expect("session");
    ortrun::run(&mut s, x.as_f32().unwrap(), &x.shape).expect("run")
}

pub fn max_abs(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (*x as f64 - *y as f64).abs())
        .fold(0.0, f64::max)
}

/// `$LKD_PYTHON`, or a clear failure.
pub fn python() -> String {
    std::env::var("LKD_PYTHON")
        .expect("LKD_PYTHON must point at the venv python (see /root/.cache/lkd/env.mk)")
}

pub fn ort_env_ok() {
    assert!(
        std::env::var_os("ORT_DYLIB_PATH").is_some(),
        "ORT_DYLIB_PATH must point at libonnxruntime.so"
    );
}
