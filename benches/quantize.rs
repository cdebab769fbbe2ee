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
use lkd_exporter::{export, random_input, random_weights, ExportOptions, ReparamMode};
use lkd_models::ModelConfig;
use lkd_runtime::{bench::synthetic_input, Model, SessionConfig};

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
        if let Err(e) = export(&g, &random_weights(&g, 1), &opts, &fp) {
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
