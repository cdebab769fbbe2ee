//! FP32 vs INT8 (QDQ, uint8 activations, per-channel int8 weights) at batch 1 on CPU.
//!
//! Presets come from `LKD_QUANT_PRESETS` (default `convnext_tiny,resnet50`), random weights,
//! exported with the normal exporter; threads from `LKD_QUANT_THREADS` (default 1). Besides the
//! criterion timings, each preset prints the interleaved A/B ratio from `bench_ab` (alternating
//! order, spinning off, median and spread over rounds), the ratio the goal (int8 ≥ 2× faster) is
//! judged by.

use std::collections::BTreeSet;

use criterion::{criterion_group, criterion_main, Criterion};
use lkd_exporter::quantize::{self, Batch, CalibMethod, QuantizeOptions};
use lkd_exporter::{export, random_input, ExportOptions, ReparamMode};
use lkd_models::checkpoint::StateDict;
use lkd_models::graph::DType;
use lkd_models::{HostTensor, ModelConfig};
use lkd_runtime::{bench::synthetic_input, Model, SessionConfig};

/// Uniform ±sqrt(3/fan_in) for matrices, around 1 for norm scales and variances.
fn random_weights(g: &lkd_models::Graph) -> StateDict {
    // xorshift: the root package has no `rand`.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut uniform = |lo: f32, hi: f32| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        lo + (hi - lo) * ((state >> 40) as f32 / (1u64 << 24) as f32)
    };
    let mut sd = StateDict::new();
    for p in &g.params {
        let n = p.numel();
        let t = match p.dtype {
            DType::I64 => HostTensor::i64(p.shape.clone(), vec![0; n]),
            DType::F32 if p.shape.len() >= 2 => {
                let b = (3.0 / p.shape[1..].iter().product::<usize>() as f32).sqrt();
                HostTensor::f32(p.shape.clone(), (0..n).map(|_| uniform(-b, b)).collect())
            }
            DType::F32
                if p.name.ends_with("running_var")
                    || p.name.ends_with(".weight")
                    || p.name.ends_with("gamma") =>
            {
                HostTensor::f32(p.shape.clone(), (0..n).map(|_| uniform(0.5, 1.5)).collect())
            }
            DType::F32 => HostTensor::f32(
                p.shape.clone(),
                (0..n).map(|_| uniform(-0.2, 0.2)).collect(),
            ),
        };
        sd.insert(p.name.clone(), t);
    }
    sd
}

fn int8_vs_fp32(c: &mut Criterion) {
    let presets =
        std::env::var("LKD_QUANT_PRESETS").unwrap_or_else(|_| "convnext_tiny,resnet50".into());
    let threads: usize = std::env::var("LKD_QUANT_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let dir = std::env::temp_dir().join("lkd-bench-quantize");
    std::fs::create_dir_all(&dir).expect("temp dir");
    for preset in presets.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let g = ModelConfig::preset(preset).build().expect("preset");
        let fp = dir.join(format!("{preset}.onnx"));
        let opts = ExportOptions {
            check: false,
            reparam: ReparamMode::None,
            ..Default::default()
        };
        if let Err(e) = export(&g, &random_weights(&g), &opts, &fp) {
            eprintln!("skipping {preset}: {e} (is ORT_DYLIB_PATH set?)");
            continue;
        }
        let bytes = std::fs::read(&fp).expect("exported model");
        let calib: Vec<Batch> = (0..2)
            .map(|i| {
                let x = random_input(&g, 2, i);
                Batch {
                    shape: [x.shape[0], x.shape[1], x.shape[2], x.shape[3]],
                    data: x.as_f32().unwrap().to_vec(),
                }
            })
            .collect();
        let qopts = QuantizeOptions {
            method: CalibMethod::MinMax,
            ..Default::default()
        };
        let prepared = quantize::prepare(&bytes, true).expect("float classifier");
        let ranges = prepared.calibrate(&calib, &qopts).expect("calibration");
        let q = prepared
            .quantize(&ranges, &BTreeSet::new(), &qopts, 4)
            .expect("quantize");
        let qp = dir.join(format!("{preset}.int8.onnx"));
        std::fs::write(&qp, &q).expect("write int8 model");

        let cfg = SessionConfig {
            intra_threads: Some(threads),
            inter_threads: Some(1),
            ..Default::default()
        };
        let (mut a, mut b) = (
            Model::load(&fp, &cfg).expect("fp32 session"),
            Model::load(&qp, &cfg).expect("int8 session"),
        );
        // Spinning off (the SessionConfig default), order alternated per round: the ratio below
        // is the per-round int8/fp32 latency ratio with its spread.
        let (ra, rb, ab) = lkd_runtime::bench_ab(&mut a, &mut b, 1, threads, 20, 3).expect("A/B");
        println!(
            "{preset} cpu batch 1, {threads} thread(s), interleaved: fp32 {:.2} ms, int8 {:.2} ms, \
             int8/fp32 per round {}, size {:.2}x",
            ra.p50_ms,
            rb.p50_ms,
            ab.ratio,
            q.len() as f64 / bytes.len() as f64
        );
        let mut grp = c.benchmark_group(format!("quantize_cpu_b1_t{threads}/{preset}"));
        grp.sample_size(10);
        for (tag, m) in [("fp32", &mut a), ("int8", &mut b)] {
            let (x, shape) = synthetic_input(m, 1).expect("input");
            grp.bench_function(tag, |bn| bn.iter(|| m.run(&x, shape).expect("run")));
        }
        grp.finish();
    }
}

criterion_group!(benches, int8_vs_fp32);
criterion_main!(benches);
