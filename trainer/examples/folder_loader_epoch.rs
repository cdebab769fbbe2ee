//! One training epoch of LKD's folder loader, for `benches/folder_loader_vs_torchvision.py`:
//! random-resized crop to 224 (DCT-scaled JPEG decode), horizontal flip, normalize; prints
//! `{"images": N, "seconds": S}`.
//!
//! `cargo run --release -p lkd-trainer --example folder_loader_epoch -- ROOT WORKERS BATCH EPOCH`

use std::sync::Arc;
use std::time::Instant;

use lkd_models::preprocess::Preprocess;
use lkd_trainer::data::{
    self, AugmentConfig, DatasetKind, DatasetSpec, Loader, LoaderConfig, RrcConfig, Split,
};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [root, workers, batch, epoch] = args.as_slice() else {
        return Err("usage: folder_loader_epoch ROOT WORKERS BATCH EPOCH".into());
    };
    let (workers, batch_size, epoch) = (workers.parse()?, batch.parse()?, epoch.parse()?);
    let ds = Arc::new(data::open(
        &DatasetSpec::new(DatasetKind::Folder, root),
        Split::Train,
    )?);
    // torchvision's ImageFolder keeps the last partial batch and the tensors float32.
    let cfg = LoaderConfig {
        batch_size,
        workers,
        drop_last: false,
        ..LoaderConfig::default()
    };
    let aug = AugmentConfig {
        random_resized_crop: Some(RrcConfig::default()),
        hflip: 0.5,
        ..AugmentConfig::default()
    };
    let t0 = Instant::now();
    let loader = Loader::train(ds, &Preprocess::imagenet(224), &aug, None, 0.0, cfg)?;
    let mut images = 0;
    for b in loader.epoch(epoch, 0)? {
        images += b?.len();
    }
    println!(
        "{{\"images\": {images}, \"seconds\": {}}}",
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
