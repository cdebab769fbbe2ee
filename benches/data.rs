//! Data loader throughput (images/s), CPU: Fashion-MNIST with the nano train transforms, and
//! 224² JPEGs generated in-process with the full ImageNet train transforms (random-resized-crop,
//! flip, RandAugment m9, random erasing, Mixup/CutMix), each with 1 and 2 workers.
//! Fashion-MNIST comes from `LKD_FASHION_MNIST`; without it that group is skipped with a message.

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use lkd_models::preprocess::Preprocess;
use lkd_trainer::data::{
    self, AugmentConfig, DatasetKind, DatasetSpec, Loader, LoaderConfig, MixupConfig, Split,
};

/// Runs one full epoch and returns the images delivered.
fn run_epoch(loader: &Loader, epoch: usize) -> usize {
    loader
        .epoch(epoch, 0)
        .expect("epoch")
        .map(|b| b.expect("batch").len())
        .sum()
}

fn report(name: &str, loader: &Loader) {
    eprintln!("{name}: {}", loader.stats());
}

fn fashion_mnist(c: &mut Criterion) {
    let Ok(mut spec) = DatasetSpec::fashion_mnist_from_env() else {
        eprintln!("skipping Fashion-MNIST loader bench: LKD_FASHION_MNIST is not set (run through `make bench`)");
        return;
    };
    spec.limit = Some(12_800);
    let ds = Arc::new(data::open(&spec, Split::Train).expect("open Fashion-MNIST"));
    let pre = Preprocess::fashion_mnist();
    let mut g = c.benchmark_group("loader_cpu/fashion_mnist_nano");
    g.sample_size(10);
    for workers in [1, 2] {
        let cfg = LoaderConfig {
            batch_size: 128,
            workers,
            ..LoaderConfig::default()
        };
        let loader = Loader::train(ds.clone(), &pre, &AugmentConfig::proxy(), None, 0.0, cfg)
            .expect("loader");
        g.throughput(Throughput::Elements(loader.samples_per_epoch() as u64));
        let mut epoch = 0;
        g.bench_function(BenchmarkId::new("workers", workers), |b| {
            b.iter(|| {
                epoch += 1;
                run_epoch(&loader, epoch)
            })
        });
        report(&format!("fashion_mnist_nano workers={workers}"), &loader);
    }
    g.finish();
}

fn imagenet_jpeg(c: &mut Criterion) {
    let tmp = tempfile::tempdir().expect("tempdir");
    data::synthetic::write_jpeg_folder(tmp.path(), 4, 48, 1, 224, 224, 0).expect("write JPEGs");
    let ds = Arc::new(
        data::open(
            &DatasetSpec::new(DatasetKind::Folder, tmp.path()),
            Split::Train,
        )
        .expect("open folder"),
    );
    let pre = Preprocess::imagenet(224);
    let mut g = c.benchmark_group("loader_cpu/imagenet224_full");
    g.sample_size(10);
    for workers in [1, 2] {
        let cfg = LoaderConfig {
            batch_size: 32,
            workers,
            ..LoaderConfig::default()
        };
        let loader = Loader::train(
            ds.clone(),
            &pre,
            &AugmentConfig::imagenet(),
            Some(&MixupConfig::default()),
            0.1,
            cfg,
        )
        .expect("loader");
        g.throughput(Throughput::Elements(loader.samples_per_epoch() as u64));
        let mut epoch = 0;
        g.bench_function(BenchmarkId::new("workers", workers), |b| {
            b.iter(|| {
                epoch += 1;
                run_epoch(&loader, epoch)
            })
        });
        report(&format!("imagenet224_full workers={workers}"), &loader);
    }
    g.finish();
}

criterion_group!(benches, fashion_mnist, imagenet_jpeg);
criterion_main!(benches);
