//! ERF against the PyTorch reference (tests/reference/erf.py) on the same weights and images.

mod common;

use lkd_models::checkpoint::{read_checkpoint, read_safetensors};
use lkd_models::ModelConfig;
use lkd_trainer::erf::ErfMeter;
use lkd_trainer::executor::{host_to_tensor, Executor, Params};
use tch::Device;

fn check(preset: &str, size: usize) {
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new(common::python())
        .arg(common::repo_root().join("tests/reference/erf.py"))
        .args([
            "--preset",
            preset,
            "--size",
            &size.to_string(),
            "--images",
            "3",
            "--out",
        ])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    let graph = ModelConfig::preset(preset).build().unwrap();
    let params = Params::from_state_dict(
        &graph,
        &read_checkpoint(&dir.path().join("checkpoint.pth")).unwrap(),
        Device::Cpu,
    )
    .unwrap();
    let exec = Executor::new(graph);
    let x = host_to_tensor(
        &read_safetensors(&dir.path().join("input.safetensors")).unwrap()["input"],
        Device::Cpu,
    )
    .unwrap();
    let tap = exec.graph.stage_taps().last().unwrap().0.clone();
    let mut meter = ErfMeter::new();
    meter.add(&exec, &params, &x, &tap).unwrap();
    let got = meter.finish(&tap).unwrap();
    let want = read_safetensors(&dir.path().join("erf.safetensors")).unwrap();
    let want_map = want["map"].as_f32().unwrap();
    assert_eq!(got.map.len(), want_map.len());
    let err = got
        .map
        .iter()
        .zip(want_map)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(err <= 1e-4, "{preset}: ERF map max abs error {err}");
    let ratios: Vec<f32> = got.area_ratios.iter().map(|r| r.1 as f32).collect();
    assert_eq!(
        ratios,
        want["ratios"].as_f32().unwrap(),
        "{preset}: area ratios"
    );
}

#[test]
fn erf_matches_pytorch_reference() {
    check("convnext_nano", 56);
    check("slak_nano", 56);
}
