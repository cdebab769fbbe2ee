//! Shared helpers: random weights with non-trivial BatchNorm statistics and layer scales (so
//! folding errors show), and running ONNX bytes in ORT.
#![allow(dead_code)]

use lkd_exporter::ortrun;
use lkd_models::checkpoint::StateDict;
use lkd_models::graph::DType;
use lkd_models::{Graph, HostTensor, ModelConfig};
use rand::{Rng, SeedableRng};

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

pub fn random_weights(g: &Graph, seed: u64) -> StateDict {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut sd = StateDict::new();
    for p in &g.params {
        let n = p.numel();
        let t = match p.dtype {
            DType::I64 => HostTensor::i64(p.shape.clone(), vec![0; n]),
            DType::F32 => {
                let data: Vec<f32> = if p.shape.len() >= 2
                    && !p.name.contains("token")
                    && !p.name.contains("pos_embed")
                {
                    let fan_in: usize = p.shape[1..].iter().product();
                    let b = (3.0 / fan_in as f32).sqrt();
                    (0..n).map(|_| rng.gen_range(-b..b)).collect()
                } else if p.name.ends_with("running_var")
                    || p.name.ends_with(".weight")
                    || p.name.ends_with("gamma")
                {
                    (0..n).map(|_| rng.gen_range(0.5..1.5)).collect()
                } else {
                    (0..n).map(|_| rng.gen_range(-0.2..0.2)).collect()
                };
                HostTensor::f32(p.shape.clone(), data)
            }
        };
        sd.insert(p.name.clone(), t);
    }
    sd
}

pub fn run_bytes(bytes: &[u8], x: &HostTensor) -> Vec<f32> {
    let mut s = ortrun::session(bytes, ortrun::Device::Cpu, Some(1)).expect("session");
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
