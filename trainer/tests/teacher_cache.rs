//! Teacher-output cache: replay equals the live teacher, keys separate streams, corrupt shards
//! are recomputed, interrupted recordings are completed on resume.

mod common;

use lkd_models::checkpoint::{read_checkpoint, write_safetensors};
use lkd_trainer::config::{DistillConfig, KdMethod, TrainConfig};
use lkd_trainer::rundir::RunDir;
use lkd_trainer::teacher_cache::CacheSetting;
use lkd_trainer::train::{train, Start, Summary};
use std::path::{Path, PathBuf};

fn config(preset: &str) -> TrainConfig {
    let mut cfg = common::fmnist_config("fmnist-convnext-proxy.toml", 640, 128);
    cfg.model = lkd_models::ModelConfig::preset(preset);
    cfg.run.log_every = 1;
    cfg
}

/// A 1-epoch teacher on 640 images (10 batches of 64).
fn teacher(dir: &Path) -> PathBuf {
    Start::new(&config("slak_proxy"), dir)
        .and_then(|s| train(s, false))
        .unwrap();
    dir.to_path_buf()
}

fn student(teacher: &Path, cache: CacheSetting, method: KdMethod) -> TrainConfig {
    let mut cfg = config("convnext_proxy");
    cfg.optim.epochs = 2;
    let mut d = DistillConfig::new(method, teacher.to_path_buf());
    d.cache = cache;
    cfg.distill = Some(d);
    cfg
}

fn metrics(dir: &Path) -> Vec<serde_json::Value> {
    let mut lines = RunDir::open(dir).unwrap().read_metrics().unwrap();
    for l in &mut lines {
        l.as_object_mut().unwrap().remove("img_per_s");
    }
    lines
}

fn max_weight_diff(a: &Path, b: &Path) -> f32 {
    let (a, b) = (
        read_checkpoint(&a.join("last.safetensors")).unwrap(),
        read_checkpoint(&b.join("last.safetensors")).unwrap(),
    );
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    a.iter()
        .map(|(k, t)| {
            t.to_f32_vec()
                .iter()
                .zip(b[k].to_f32_vec())
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f32::max)
        })
        .fold(0.0, f32::max)
}

fn cache_stats(s: &Summary) -> lkd_trainer::teacher_cache::CacheStats {
    s.teacher_cache
        .clone()
        .expect("a distillation run reports cache use")
}

fn shards(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "bin"))
        .collect();
    v.sort();
    v
}

#[test]
fn replay_matches_the_live_teacher_without_loading_it() {
    let tmp = tempfile::tempdir().unwrap();
    let t = teacher(&tmp.path().join("teacher"));
    let cache = CacheSetting::Dir(tmp.path().join("cache"));
    // Feature + logit distillation, so both logits and maps go through the cache.
    let live = tmp.path().join("live");
    let s = Start::new(&student(&t, CacheSetting::Off, KdMethod::KdFd), &live)
        .and_then(|s| train(s, false))
        .unwrap();
    assert!(s.teacher_cache.as_ref().unwrap().teacher_loaded);
    let record = tmp.path().join("record");
    let s = Start::new(&student(&t, cache.clone(), KdMethod::KdFd), &record)
        .and_then(|s| train(s, false))
        .unwrap();
    let c = cache_stats(&s);
    assert_eq!(
        (
            c.live_batches,
            c.replayed_batches,
            c.recorded_shards,
            c.teacher_loaded
        ),
        (20, 0, 2, true)
    );
    let replay = tmp.path().join("replay");
    let s = Start::new(&student(&t, cache.clone(), KdMethod::KdFd), &replay)
        .and_then(|s| train(s, false))
        .unwrap();
    let c = cache_stats(&s);
    assert_eq!(
        (
            c.live_batches,
            c.replayed_batches,
            c.recorded_shards,
            c.teacher_loaded
        ),
        (0, 20, 0, false)
    );
    // Losses and weights: live = recording = replaying.
    assert_eq!(metrics(&live), metrics(&replay));
    assert_eq!(metrics(&record), metrics(&replay));
    assert!(max_weight_diff(&live, &replay) <= 1e-6);
    assert!(max_weight_diff(&record, &replay) <= 1e-6);
}

#[test]
fn a_run_whose_key_differs_never_replays() {
    let tmp = tempfile::tempdir().unwrap();
    let t = teacher(&tmp.path().join("teacher"));
    let root = tmp.path().join("cache");
    let cache = CacheSetting::Dir(root.clone());
    let base = student(&t, cache.clone(), KdMethod::Kd);
    Start::new(&base, tmp.path().join("first"))
        .and_then(|s| train(s, false))
        .unwrap();
    let keys = |root: &Path| std::fs::read_dir(root).unwrap().count();
    assert_eq!(keys(&root), 1);

    // Another seed, another batch size, another augmentation: a new stream each.
    let mut seed = base.clone();
    seed.run.seed = 7;
    let mut batch = base.clone();
    batch.optim.batch_size = 32;
    let mut aug = base.clone();
    aug.data.augment.hflip = 0.0;
    // Teacher weights differing in one value.
    let t2 = tmp.path().join("teacher2");
    std::fs::create_dir_all(&t2).unwrap();
    for f in ["config.toml", "best.safetensors"] {
        std::fs::copy(t.join(f), t2.join(f)).unwrap();
    }
    let mut sd = read_checkpoint(&t2.join("best.safetensors")).unwrap();
    let head = sd.get_mut("head.bias").unwrap();
    let mut v = head.to_f32_vec();
    v[0] += 1e-3;
    *head = lkd_models::tensor::HostTensor::f32(head.shape.clone(), v);
    write_safetensors(&t2.join("best.safetensors"), &sd, None).unwrap();
    let mut weights = base.clone();
    weights.distill.as_mut().unwrap().teacher = t2;
    for (i, cfg) in [seed, batch, aug, weights].iter().enumerate() {
        let s = Start::new(cfg, tmp.path().join(format!("other{i}")))
            .and_then(|s| train(s, false))
            .unwrap();
        let c = cache_stats(&s);
        assert_eq!(
            c.replayed_batches, 0,
            "variant {i} replayed another stream's outputs"
        );
        assert!(c.live_batches > 0 && c.teacher_loaded);
        assert_eq!(keys(&root), 2 + i);
    }
}

#[test]
fn corrupt_or_truncated_shards_are_recomputed_not_replayed() {
    let tmp = tempfile::tempdir().unwrap();
    let t = teacher(&tmp.path().join("teacher"));
    let root = tmp.path().join("cache");
    let cfg = student(&t, CacheSetting::Dir(root.clone()), KdMethod::Nkd);
    let good = tmp.path().join("good");
    Start::new(&cfg, &good)
        .and_then(|s| train(s, false))
        .unwrap();
    let key_dir = std::fs::read_dir(&root)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let files = shards(&key_dir);
    assert_eq!(files.len(), 2);
    // Epoch 0: one flipped byte; epoch 1: cut in half.
    let mut bytes = std::fs::read(&files[0]).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&files[0], &bytes).unwrap();
    let bytes = std::fs::read(&files[1]).unwrap();
    std::fs::write(&files[1], &bytes[..bytes.len() / 2]).unwrap();

    let again = tmp.path().join("again");
    let s = Start::new(&cfg, &again)
        .and_then(|s| train(s, false))
        .unwrap();
    let c = cache_stats(&s);
    assert_eq!(
        (
            c.corrupt_shards,
            c.live_batches,
            c.replayed_batches,
            c.recorded_shards
        ),
        (2, 20, 0, 2)
    );
    assert_eq!(metrics(&good), metrics(&again));
    assert!(max_weight_diff(&good, &again) <= 1e-6);
    // Rewritten whole: a third run replays everything.
    let s = Start::new(&cfg, tmp.path().join("third"))
        .and_then(|s| train(s, false))
        .unwrap();
    assert_eq!(cache_stats(&s).replayed_batches, 20);
}

#[test]
fn an_interrupted_recording_is_completed_when_the_run_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let t = teacher(&tmp.path().join("teacher"));
    let root = tmp.path().join("cache");
    let cfg = student(&t, CacheSetting::Dir(root.clone()), KdMethod::Kd);
    // Stopped after 4 of epoch 0's 10 batches: a 4-batch shard is written.
    let dir = tmp.path().join("run");
    let mut first = cfg.clone();
    first.run.max_steps = Some(4);
    let s = Start::new(&first, &dir)
        .and_then(|s| train(s, false))
        .unwrap();
    assert_eq!(cache_stats(&s).recorded_shards, 1);
    std::fs::write(dir.join("config.toml"), cfg.to_toml()).unwrap();
    let s = train(Start::resume(&dir), false).unwrap();
    assert!(s.finished);
    assert_eq!(cache_stats(&s).live_batches, 16);
    // Both epochs are complete in the cache now.
    let s = Start::new(&cfg, tmp.path().join("replay"))
        .and_then(|s| train(s, false))
        .unwrap();
    let c = cache_stats(&s);
    assert_eq!(
        (c.replayed_batches, c.live_batches, c.teacher_loaded),
        (20, 0, false)
    );
    assert_eq!(metrics(&dir), metrics(&tmp.path().join("replay")));
}
