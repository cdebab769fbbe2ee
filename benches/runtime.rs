//! ONNX Runtime latency and preprocessing throughput, CPU.
//!
//! The model comes from `LKD_BENCH_MODEL` (any exported classifier). Without it, small models are
//! generated with `runtime/tests/fixtures/make_models.py` through `$LKD_PYTHON`; with neither,
//! the latency benches are skipped with a message and only preprocessing runs.

use std::path::PathBuf;
use std::process::Command;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use lkd_runtime::image::{DynamicImage, ImageFormat, Rgb, RgbImage};
use lkd_runtime::{bench::synthetic_input, preprocess_batch, Model, Preprocess, SessionConfig};

fn models() -> Vec<PathBuf> {
    if let Some(p) = std::env::var_os("LKD_BENCH_MODEL") {
        return vec![PathBuf::from(p)];
    }
    let Some(python) = std::env::var_os("LKD_PYTHON") else {
        eprintln!("skipping ONNX latency benches: set LKD_BENCH_MODEL=model.onnx or LKD_PYTHON (run `make`)");
        return Vec::new();
    };
    let dir = std::env::temp_dir().join("lkd-bench-models");
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("runtime/tests/fixtures/make_models.py");
    let ok = Command::new(python)
        .arg(script)
        .arg("models")
        .arg(&dir)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("skipping ONNX latency benches: make_models.py failed");
        return Vec::new();
    }
    vec![dir.join("rgb32.onnx"), dir.join("slow.onnx")]
}

/// Latency per batch size, with ONNX Runtime's idle-thread spinning off (the default) and on.
/// One session at a time, so the two settings never compete for the cores.
fn latency(c: &mut Criterion) {
    for path in models() {
        for spin in [false, true] {
            let cfg = SessionConfig {
                intra_threads: Some(2),
                spin,
                ..SessionConfig::default()
            };
            let mut model = match Model::load(&path, &cfg) {
                Ok(m) => m,
                Err(e) => {
                    eprintln!("skipping {}: {e}", path.display());
                    continue;
                }
            };
            let name = model.info().name.clone();
            let tag = if spin { "spin_on" } else { "spin_off" };
            let mut g = c.benchmark_group(format!("ort_cpu_latency/{name}/{tag}"));
            for batch in [1usize, 8] {
                let Ok((x, shape)) = synthetic_input(&model, batch) else {
                    eprintln!("skipping {name} at batch {batch}: the graph's batch is fixed");
                    continue;
                };
                g.throughput(Throughput::Elements(batch as u64));
                g.bench_with_input(BenchmarkId::new("batch", batch), &batch, |b, _| {
                    b.iter(|| model.run(&x, shape).expect("run"))
                });
            }
            g.finish();
        }
    }
}

fn photo(w: u32, h: u32) -> Vec<u8> {
    let img = RgbImage::from_fn(w, h, |x, y| {
        Rgb([
            (x * 7 % 256) as u8,
            (y * 3 % 256) as u8,
            ((x ^ y) % 256) as u8,
        ])
    });
    let mut buf = std::io::Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(img)
        .write_to(&mut buf, ImageFormat::Jpeg)
        .expect("encode");
    buf.into_inner()
}

fn preprocessing(c: &mut Criterion) {
    let p = Preprocess::imagenet(224);
    let mut g = c.benchmark_group("preprocess_cpu");
    for (label, w, h) in [("jpeg224", 224, 224), ("jpeg500x375", 500, 375)] {
        for batch in [1usize, 8] {
            let images: Vec<(String, Vec<u8>)> = (0..batch)
                .map(|i| (format!("{i}.jpg"), photo(w, h)))
                .collect();
            g.throughput(Throughput::Elements(batch as u64));
            g.bench_with_input(BenchmarkId::new(label, batch), &images, |b, imgs| {
                b.iter(|| preprocess_batch(imgs, &p).expect("preprocess"))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, latency, preprocessing);
criterion_main!(benches);
