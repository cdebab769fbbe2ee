//! ONNX Runtime latency and preprocessing throughput, CPU.
//!
//! The model comes from `LKD_BENCH_MODEL` (any exported classifier). Without it, small models are
//! generated with `runtime/tests/fixtures/make_models.py` through `$LKD_PYTHON`; with neither,
//! the latency benches are skipped with a message and only preprocessing runs.

use std::path::PathBuf;
use std::process::Command;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use lkd_runtime::image::{DynamicImage, ImageFormat, Rgb, RgbImage};
use lkd_runtime::{
    bench::{bench_ab, synthetic_input},
    preprocess_batch, Model, Preprocess, SessionConfig,
};

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
/// The A/B method's own bias: the same model loaded twice, as A and as B, should measure a
/// ratio near 1 (a timing figure, so it lives here rather than in the tests).
fn same_model_ab(_: &mut Criterion) {
    let cfg = SessionConfig {
        intra_threads: Some(2),
        inter_threads: Some(1),
        ..SessionConfig::default()
    };
    for path in models() {
        let (Ok(mut a), Ok(mut b)) = (Model::load(&path, &cfg), Model::load(&path, &cfg)) else {
            continue;
        };
        match bench_ab(&mut a, &mut b, 8, 2, 100, 5) {
            Ok((_, _, ab)) => println!("same_model_ab/{}: B/A {}", a.info().name, ab.ratio),
            Err(e) => eprintln!("skipping same_model_ab for {}: {e}", path.display()),
        }
    }
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

criterion_group!(benches, latency, same_model_ab, preprocessing);
criterion_main!(benches);
