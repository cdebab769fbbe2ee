//! Whole-model parity with independent PyTorch references (tests/reference/models.py): the
//! reference saves random weights with `torch.save` in the official key layout; we load that
//! `.pth` through the official-checkpoint path and compare eval-mode outputs and taps.

mod common;

use lkd_models::checkpoint::{read_checkpoint, read_safetensors};
use lkd_models::ModelConfig;
use lkd_trainer::executor::{host_to_tensor, Executor, Params};
use tch::{Device, Tensor};

fn config(preset: &str, overrides: &str) -> ModelConfig {
    let mut v: serde_json::Value = serde_json::from_str(overrides).unwrap();
    v["preset"] = preset.into();
    serde_json::from_value(v).unwrap()
}

fn max_abs(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

fn check(preset: &str, overrides: &str, wrap: &str) {
    let dir = tempfile::tempdir().unwrap();
    common::make_case(preset, overrides, wrap, dir.path());
    let graph = config(preset, overrides).build().unwrap();
    let sd = read_checkpoint(&dir.path().join("checkpoint.pth")).unwrap();
    let params = Params::from_state_dict(&graph, &sd, Device::Cpu).unwrap();
    let input = host_to_tensor(
        &read_safetensors(&dir.path().join("input.safetensors")).unwrap()["input"],
        Device::Cpu,
    )
    .unwrap();
    let expected = read_safetensors(&dir.path().join("output.safetensors")).unwrap();
    let exec = Executor::new(graph);
    let tap_names: Vec<String> = exec
        .graph
        .taps
        .keys()
        .filter(|k| *k != "logits")
        .cloned()
        .collect();
    let taps: Vec<&str> = tap_names.iter().map(|s| s.as_str()).collect();
    let out = tch::no_grad(|| exec.forward(&params, &input, false, &taps)).unwrap();
    let err = max_abs(
        &out.logits,
        &host_to_tensor(&expected["logits"], Device::Cpu).unwrap(),
    );
    assert!(
        err <= 1e-4,
        "{preset} {overrides}: logits max abs error {err}"
    );
    for name in &tap_names {
        let want = expected
            .get(name)
            .unwrap_or_else(|| panic!("reference lacks tap {name}"));
        let got = &out.taps[name];
        assert_eq!(
            got.size().iter().map(|&d| d as usize).collect::<Vec<_>>(),
            want.shape,
            "{preset}: tap {name} shape"
        );
        let err = max_abs(got, &host_to_tensor(want, Device::Cpu).unwrap());
        assert!(
            err <= 1e-4,
            "{preset} {overrides}: tap {name} max abs error {err}"
        );
    }
}

#[test]
fn slak_nano_matches_pytorch() {
    check("slak_proxy", "{}", "model");
}

#[test]
fn convnext_nano_matches_pytorch() {
    check("convnext_proxy", "{}", "none");
}

#[test]
fn resnet_nano_matches_pytorch() {
    check("resnet_proxy", "{}", "state_dict");
}

#[test]
fn vit_nano_matches_pytorch() {
    check("vit_proxy", "{}", "model_ema");
}

#[test]
fn slak_tiny_real_kernels_reduced_depth_matches_pytorch() {
    check(
        "slak_tiny",
        r#"{"depths":[1,1,1,1],"input_size":64}"#,
        "model",
    );
}

#[test]
fn convnext_tiny_reduced_depth_matches_pytorch() {
    check(
        "convnext_tiny",
        r#"{"depths":[1,1,1,1],"input_size":64}"#,
        "model",
    );
}

#[test]
fn resnet50_reduced_depth_matches_pytorch() {
    check(
        "resnet50",
        r#"{"depths":[1,1,1,1],"input_size":64}"#,
        "none",
    );
}

#[test]
fn resnet18_matches_pytorch() {
    check("resnet18", r#"{"input_size":64}"#, "model");
}

#[test]
fn vit_small_reduced_depth_matches_pytorch() {
    check("vit_small", r#"{"depths":[1,1],"input_size":32}"#, "model");
}
