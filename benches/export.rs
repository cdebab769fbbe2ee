//! Export bench (CPU): export time of convnext_tiny and slak_tiny (check off), and ORT CPU
//! latency at batch 1, 224², 2 threads: our convnext_tiny export vs `torch.onnx.export` of the
//! same weights (`exporter/scripts/torch_export.py` via `$LKD_PYTHON`), and slak_tiny under each
//! reparam form. Ratios come from one interleaved run so machine load hits both sides alike.
//!
//! `cargo bench --bench export` (needs ORT_DYLIB_PATH; LKD_PYTHON for the torch baseline).

use criterion::{criterion_group, criterion_main, Criterion};
use lkd_exporter::{export_bytes, ortrun, random_input, ExportOptions, ReparamMode};
use lkd_models::checkpoint::{write_safetensors, StateDict};
use lkd_models::graph::DType;
use lkd_models::{Graph, HostTensor, ModelConfig};
use lkd_util::Device;
use std::time::{Duration, Instant};

const THREADS: usize = 2;

/// Deterministic weights with realistic scales (no rand dependency in the root crate).
fn weights(g: &Graph) -> StateDict {
    let mut sd = StateDict::new();
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    for p in &g.params {
        let n = p.numel();
        let t = match p.dtype {
            DType::I64 => HostTensor::i64(p.shape.clone(), vec![0; n]),
            DType::F32 => {
                let fan_in: usize = p.shape.iter().skip(1).product::<usize>().max(1);
                let (scale, offset) = if p.shape.len() >= 2 {
                    (2.0 * (3.0 / fan_in as f32).sqrt(), 0.0)
                } else if p.name.ends_with("running_var")
                    || p.name.ends_with(".weight")
                    || p.name.ends_with("gamma")
                {
                    (1.0, 1.0)
                } else {
                    (0.2, 0.0)
                };
                HostTensor::f32(
                    p.shape.clone(),
                    (0..n).map(|_| next() * scale + offset).collect(),
                )
            }
        };
        sd.insert(p.name.clone(), t);
    }
    sd
}

fn opts(reparam: ReparamMode) -> ExportOptions {
    ExportOptions {
        reparam,
        check: false,
        threads: Some(THREADS),
        ..Default::default()
    }
}

/// Medians of interleaved runs: one run of each session per round.
fn interleaved(
    sessions: &mut [(String, ortrun::Session)],
    x: &HostTensor,
    rounds: usize,
) -> Vec<f64> {
    let data = x.as_f32().unwrap();
    for (_, s) in sessions.iter_mut() {
        ortrun::run(s, data, &x.shape).unwrap();
    }
    let mut times = vec![vec![]; sessions.len()];
    for _ in 0..rounds {
        for (i, (_, s)) in sessions.iter_mut().enumerate() {
            let t = Instant::now();
            ortrun::run(s, data, &x.shape).unwrap();
            times[i].push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    times
        .into_iter()
        .map(|mut t| {
            t.sort_by(|a, b| a.partial_cmp(b).unwrap());
            t[t.len() / 2]
        })
        .collect()
}

fn torch_baseline(preset: &str, w: &StateDict) -> Option<Vec<u8>> {
    let Ok(py) = std::env::var("LKD_PYTHON") else {
        eprintln!("LKD_PYTHON is not set: skipping the torch.onnx.export baseline");
        return None;
    };
    let dir = tempfile::tempdir().unwrap();
    let wpath = dir.path().join("w.safetensors");
    let out = dir.path().join("torch.onnx");
    write_safetensors(&wpath, w, None).unwrap();
    // Built from the root package or from lkd-exporter.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let script = [
        root.join("exporter/scripts/torch_export.py"),
        root.join("scripts/torch_export.py"),
    ]
    .into_iter()
    .find(|p| p.is_file())
    .expect("torch_export.py");
    let st = std::process::Command::new(py)
        .arg(&script)
        .args(["--preset", preset, "--weights"])
        .arg(&wpath)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "torch_export.py failed:\n{}",
        String::from_utf8_lossy(&st.stderr)
    );
    Some(std::fs::read(&out).unwrap())
}

fn bench_export(c: &mut Criterion) {
    assert!(
        std::env::var_os("ORT_DYLIB_PATH").is_some(),
        "ORT_DYLIB_PATH must point at libonnxruntime.so"
    );
    let mut group = c.benchmark_group("export_cpu");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8));
    for preset in ["convnext_tiny", "slak_tiny"] {
        let g = ModelConfig::preset(preset).build().unwrap();
        let w = weights(&g);
        group.bench_function(format!("{preset}/decomposed_nocheck"), |b| {
            b.iter(|| export_bytes(&g, &w, &opts(ReparamMode::Decomposed)).unwrap())
        });
    }
    group.finish();

    // Latency of the exports, plus same-run ratios.
    let mut group = c.benchmark_group("ort_cpu_b1_224_t2");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    let g = ModelConfig::preset("convnext_tiny").build().unwrap();
    let w = weights(&g);
    let x = random_input(&g, 1, 0);
    let mut sessions = vec![(
        "convnext_tiny/lkd".to_string(),
        ortrun::session(
            &export_bytes(&g, &w, &opts(ReparamMode::Auto)).unwrap().0,
            Device::Cpu,
            Some(THREADS),
        )
        .unwrap(),
    )];
    if let Some(bytes) = torch_baseline("convnext_tiny", &w) {
        sessions.push((
            "convnext_tiny/torch_onnx_export".into(),
            ortrun::session(&bytes, Device::Cpu, Some(THREADS)).unwrap(),
        ));
    }
    let med = interleaved(&mut sessions, &x, 20);
    for ((name, _), m) in sessions.iter().zip(&med) {
        println!("{name}: median {m:.1} ms");
    }
    if med.len() == 2 {
        println!(
            "convnext_tiny lkd / torch.onnx.export latency ratio: {:.3}",
            med[0] / med[1]
        );
    }
    for (name, s) in sessions.iter_mut() {
        group.bench_function(name.as_str(), |b| {
            b.iter(|| ortrun::run(s, x.as_f32().unwrap(), &x.shape).unwrap())
        });
    }

    let g = ModelConfig::preset("slak_tiny").build().unwrap();
    let w = weights(&g);
    let mut sessions = vec![];
    for (tag, mode) in [
        ("auto", ReparamMode::Auto),
        ("decomposed", ReparamMode::Decomposed),
        ("dense", ReparamMode::Dense),
        ("none", ReparamMode::None),
    ] {
        let t = Instant::now();
        let (bytes, rep) = export_bytes(&g, &w, &opts(mode)).unwrap();
        println!(
            "slak_tiny export reparam={tag}: {:.0} ms (tuning {:.0} ms)",
            t.elapsed().as_secs_f64() * 1e3,
            rep.timings.tune_ms
        );
        for ch in rep.reparam.iter().filter(|c| c.dense_ms.is_some()) {
            println!(
                "  {:<28} {:<34} -> {:<10} dense {:.2} ms, decomposed {:.2} ms",
                ch.layer,
                ch.shape,
                ch.form.as_str(),
                ch.dense_ms.unwrap(),
                ch.decomposed_ms.unwrap()
            );
        }
        sessions.push((
            format!("slak_tiny/{tag}"),
            ortrun::session(&bytes, Device::Cpu, Some(THREADS)).unwrap(),
        ));
    }
    let med = interleaved(&mut sessions, &x, 8);
    for ((name, _), m) in sessions.iter().zip(&med) {
        println!("{name}: median {m:.1} ms ({:.2}x of auto)", m / med[0]);
    }
    for (name, s) in sessions.iter_mut() {
        group.bench_function(name.as_str(), |b| {
            b.iter(|| ortrun::run(s, x.as_f32().unwrap(), &x.shape).unwrap())
        });
    }
    group.finish();
}

criterion_group!(benches, bench_export);
criterion_main!(benches);
