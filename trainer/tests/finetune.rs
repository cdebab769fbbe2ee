//! Fine-tuning from pretrained weights: timm and torchvision state dicts (random weights, made by
//! `finetune_peers.py`) loaded with `finetune.init` into models with another class count, channel
//! count and patch grid, checked against timm's own adaptations; strict errors; frozen
//! parameters, linear probing and layer-wise learning-rate decay.

mod common;

use lkd_models::checkpoint::{read_checkpoint, read_safetensors, StateDict};
use lkd_models::{Graph, ModelConfig};
use lkd_trainer::config::TrainConfig;
use lkd_trainer::finetune::{frozen_params, init_from, lr_scales, INIT_RECORD};
use lkd_trainer::train::{train, Start};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use tch::Device;

/// The peer checkpoints, made once per script version under cargo's target tmpdir.
fn peers() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        lkd_util::golden::generated_once(
            &common::python(),
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/finetune_peers.py"),
            Path::new(env!("CARGO_TARGET_TMPDIR")),
            "finetune-peers",
        )
    })
}

fn graph(json: &str) -> Graph {
    serde_json::from_str::<ModelConfig>(json)
        .unwrap()
        .build()
        .unwrap()
}

fn values(sd: &StateDict, name: &str) -> Vec<f32> {
    sd[name].as_f32().unwrap().to_vec()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn expected(name: &str) -> Vec<f32> {
    values(
        &read_safetensors(&peers().join("expected.safetensors")).unwrap(),
        name,
    )
}

#[test]
fn timm_resnet18_fits_a_one_channel_ten_class_model() {
    let g = graph(r#"{"preset":"resnet18","in_chans":1,"num_classes":10,"input_size":28}"#);
    let file = peers().join("timm_resnet18.pth");
    let (params, record) = init_from(&g, &file, 1.0, Device::Cpu, 0).unwrap();
    assert_eq!(
        record.adaptations,
        [
            "conv1.weight: stem adapted from 3 to 1 input channels (summed over the checkpoint's channels)",
            "fc.weight: dropped and re-initialised (classifier for another class count: checkpoint [1000, 512], model [10, 512])",
            "fc.bias: dropped and re-initialised (classifier for another class count: checkpoint [1000], model [10])",
        ]
    );
    assert_eq!(record.reinitialised, ["fc.weight", "fc.bias"]);
    assert_eq!(record.sha256.len(), 64);
    let ours = params.to_state_dict().unwrap();
    let theirs = read_checkpoint(&file).unwrap();
    let d = max_diff(
        &values(&ours, "conv1.weight"),
        &expected("resnet18_stem_1ch"),
    );
    assert!(
        d <= 1e-5,
        "stem differs from timm's adapt_input_conv by {d}"
    );
    // Everything else is the file's tensor, bit for bit.
    for name in [
        "layer1.0.conv1.weight",
        "layer4.1.bn2.running_var",
        "bn1.bias",
    ] {
        assert_eq!(values(&ours, name), values(&theirs, name), "{name}");
    }
    assert_eq!(ours["fc.weight"].shape, vec![10, 512]);
}

#[test]
fn torchvision_resnet18_keeps_its_stem_and_drops_only_the_head() {
    let g = graph(r#"{"preset":"resnet18","in_chans":3,"num_classes":5,"input_size":32}"#);
    let (_, record) = init_from(&g, &peers().join("tv_resnet18.pth"), 1.0, Device::Cpu, 0).unwrap();
    assert_eq!(record.adaptations.len(), 2, "{:?}", record.adaptations);
    assert!(record.adaptations.iter().all(|a| a.starts_with("fc.")));
}

#[test]
fn a_one_channel_stem_is_repeated_into_three_channels_as_timm_does() {
    let g = graph(r#"{"preset":"resnet18","in_chans":3,"num_classes":1000,"input_size":32}"#);
    let (params, record) = init_from(
        &g,
        &peers().join("timm_resnet18_1ch.pth"),
        1.0,
        Device::Cpu,
        0,
    )
    .unwrap();
    assert_eq!(
        record.adaptations,
        ["conv1.weight: stem adapted from 1 to 3 input channels (channels repeated, scaled by from/to)"]
    );
    assert!(record.reinitialised.is_empty());
    let ours = params.to_state_dict().unwrap();
    let d = max_diff(
        &values(&ours, "conv1.weight"),
        &expected("resnet18_stem_3ch"),
    );
    assert!(d <= 1e-5, "{d}");
}

#[test]
fn vit_position_embeddings_are_resampled_as_timm_resamples_them() {
    // timm's ViT saw 32x32 images (8x8 patches of 4); ours sees Fashion-MNIST's 28x28 (7x7).
    let g = graph(
        r#"{"preset":"vit_proxy","in_chans":1,"num_classes":10,"input_size":28,"dims":[64],"depths":[1,1,1]}"#,
    );
    let (params, record) =
        init_from(&g, &peers().join("timm_vit.pth"), 1.0, Device::Cpu, 0).unwrap();
    assert!(
        record.adaptations.contains(&"pos_embed: position embeddings resampled from a 8x8 to a 7x7 patch grid (bicubic, antialiased; 1 prefix token(s) kept)".to_string()),
        "{:?}",
        record.adaptations
    );
    let ours = params.to_state_dict().unwrap();
    let d = max_diff(&values(&ours, "pos_embed"), &expected("vit_pos_embed_7x7"));
    assert!(d <= 1e-5, "pos_embed differs from timm's resample by {d}");
    let d = max_diff(
        &values(&ours, "patch_embed.proj.weight"),
        &expected("vit_stem_1ch"),
    );
    assert!(d <= 1e-5, "{d}");
    assert_eq!(record.reinitialised, ["head.weight", "head.bias"]);
}

#[test]
fn any_other_mismatch_names_the_key_and_both_shapes() {
    // A narrower last stage: its tensors cannot come from resnet18's.
    let g = graph(
        r#"{"preset":"resnet18","in_chans":3,"num_classes":1000,"input_size":32,"dims":[64,128,256,256]}"#,
    );
    let err = init_from(&g, &peers().join("timm_resnet18.pth"), 1.0, Device::Cpu, 0)
        .err()
        .expect("a mis-shaped tensor is refused")
        .to_string();
    assert!(
        err.contains("timm_resnet18.pth")
            && err.contains(
                "layer4.0.conv1.weight: expected F32 [256, 256, 3, 3], found [512, 256, 3, 3] f32"
            ),
        "{err}"
    );
}

#[test]
fn head_init_scale_scales_the_reinitialised_classifier() {
    let g = graph(r#"{"preset":"resnet18","in_chans":3,"num_classes":5,"input_size":32}"#);
    let file = peers().join("tv_resnet18.pth");
    let plain = init_from(&g, &file, 1.0, Device::Cpu, 0).unwrap().0;
    let scaled = init_from(&g, &file, 0.001, Device::Cpu, 0).unwrap().0;
    let (a, b) = (
        plain.to_state_dict().unwrap(),
        scaled.to_state_dict().unwrap(),
    );
    let ratio: Vec<f32> = values(&a, "fc.weight")
        .iter()
        .zip(values(&b, "fc.weight"))
        .map(|(x, y)| y / x)
        .collect();
    assert!(ratio.iter().all(|r| (r - 0.001).abs() < 1e-6));
    assert_eq!(values(&a, "conv1.weight"), values(&b, "conv1.weight"));
}

fn fmnist(preset: &str) -> TrainConfig {
    let mut cfg = common::fmnist_config("fmnist-convnext-proxy.toml", 128, 64);
    cfg.model = ModelConfig::preset(preset);
    cfg.optim.warmup_epochs = 0.0;
    cfg
}

#[test]
fn frozen_parameters_and_their_batchnorm_statistics_do_not_move() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    Start::new(&fmnist("resnet_proxy"), &base)
        .and_then(|s| train(s, false))
        .unwrap();
    let start = read_checkpoint(&base.join("best.safetensors")).unwrap();

    let mut cfg = fmnist("resnet_proxy");
    cfg.finetune.init = Some(base.clone());
    cfg.finetune.freeze = vec!["conv1".into(), "bn1".into(), "layer1".into()];
    cfg.ema = None;
    let tuned = tmp.path().join("tuned");
    Start::new(&cfg, &tuned)
        .and_then(|s| train(s, false))
        .unwrap();
    let end = read_checkpoint(&tuned.join("last.safetensors")).unwrap();
    let record: lkd_trainer::finetune::InitRecord =
        serde_json::from_slice(&std::fs::read(tuned.join(INIT_RECORD)).unwrap()).unwrap();
    assert!(record.source.ends_with("best.safetensors") && record.adaptations.is_empty());
    for (name, t) in &start {
        let frozen = ["conv1.", "bn1.", "layer1."]
            .iter()
            .any(|p| name.starts_with(p));
        if frozen {
            assert_eq!(&end[name], t, "frozen {name} moved");
        } else if name.ends_with(".weight") {
            assert_ne!(&end[name], t, "trainable {name} did not move");
        }
    }
    // A prefix ends at a name boundary, and one that names nothing is refused.
    let g = cfg.model.build().unwrap();
    let mut c = cfg.clone();
    c.finetune.freeze = vec!["layer".into()];
    let err = frozen_params(&g, &c).unwrap_err().to_string();
    assert!(
        err.contains("finetune.freeze: no parameter of resnet_proxy is under \"layer\"; its parameter paths start with conv1, bn1, layer1.0"),
        "{err}"
    );
}

#[test]
fn a_linear_probe_trains_the_classifier_only() {
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    Start::new(&fmnist("convnext_proxy"), &base)
        .and_then(|s| train(s, false))
        .unwrap();
    let start = read_checkpoint(&base.join("best.safetensors")).unwrap();
    let mut cfg = fmnist("convnext_proxy");
    cfg.finetune.init = Some(base.join("best.safetensors"));
    cfg.finetune.linear_probe = true;
    cfg.ema = None;
    let probe = tmp.path().join("probe");
    Start::new(&cfg, &probe)
        .and_then(|s| train(s, false))
        .unwrap();
    let end = read_checkpoint(&probe.join("last.safetensors")).unwrap();
    let moved: Vec<&String> = start.keys().filter(|k| end[*k] != start[*k]).collect();
    assert_eq!(moved, ["head.bias", "head.weight"]);
}

#[test]
fn layer_decay_scales_learning_rates_by_depth() {
    let mut cfg = fmnist("convnext_proxy");
    cfg.optim.layer_decay = Some(0.5);
    cfg.optim.head_lr_scale = 10.0;
    let g = cfg.model.build().unwrap();
    let s = lr_scales(&g, &cfg);
    // Depths [1, 1, 2]: four blocks, so the stem is at 0 of 5 and the head at 5.
    let at = |name: &str| s.get(name).copied().unwrap_or(1.0);
    assert_eq!(at("downsample_layers.0.0.weight"), 0.5f64.powi(5));
    assert_eq!(at("stages.0.0.dwconv.weight"), 0.5f64.powi(4));
    // A downsampling layer goes with the block after it.
    assert_eq!(at("downsample_layers.1.1.weight"), 0.5f64.powi(3));
    assert_eq!(at("stages.2.1.pwconv2.weight"), 0.5);
    assert_eq!(at("norm.weight"), 1.0);
    assert_eq!(at("head.weight"), 10.0);
    assert_eq!(at("head.bias"), 10.0);
}
