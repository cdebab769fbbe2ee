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
    check("convnext_proxy", 56);
    check("slak_proxy", 56);
}

/// k stacked 3×3 convolutions of ones (stride 1, no nonlinearity): the centre output's input
/// gradient is the outer product of the k-fold self-convolution of [1, 1, 1] — support exactly
/// the analytic receptive field of side 2k + 1, RMS radius √(4k/3) (each axis adds variance 2/3
/// per layer).
#[test]
fn erf_of_a_conv_stack_is_its_analytic_receptive_field() {
    use tch::{Kind, Tensor};
    let (k, side) = (3usize, 17usize);
    let ones = Tensor::ones([1, 1, 3, 3], (Kind::Float, Device::Cpu));
    let images = Tensor::rand([2, 1, side as i64, side as i64], (Kind::Float, Device::Cpu)) + 0.1;
    let mut meter = ErfMeter::new();
    meter
        .add_with(&images, |x| {
            let mut y = x.shallow_clone();
            for _ in 0..k {
                y = y.f_conv2d(&ones, None::<Tensor>, [1, 1], [1, 1], [1, 1], 1)?;
            }
            Ok(y)
        })
        .unwrap();
    let got = meter.finish("stack").unwrap();
    let mut taps = vec![1.0f64];
    for _ in 0..k {
        let mut next = vec![0.0; taps.len() + 2];
        for (i, v) in taps.iter().enumerate() {
            for j in 0..3 {
                next[i + j] += v;
            }
        }
        taps = next;
    }
    let (c, r) = (side / 2, k as isize);
    let analytic = |y: usize, x: usize| {
        let (dy, dx) = (y as isize - c as isize, x as isize - c as isize);
        if dy.abs() > r || dx.abs() > r {
            0.0
        } else {
            taps[(dy + r) as usize] * taps[(dx + r) as usize]
        }
    };
    let peak = (1.0 + analytic(c, c)).log10();
    for y in 0..side {
        for x in 0..side {
            let want = (1.0 + analytic(y, x)).log10() / peak;
            let v = got.map[y * side + x] as f64;
            assert!(
                (v - want).abs() < 1e-6,
                "({y}, {x}): {v} vs analytic {want}"
            );
        }
    }
    let rf = (2 * k + 1) as f64;
    let r99 = got.area_ratios.iter().find(|r| r.0 == 0.99).unwrap().1;
    assert!(
        (r99 - rf * rf / (side * side) as f64).abs() < 1e-12,
        "r@0.99 {r99}"
    );
    let want_rms = (4.0 * k as f64 / 3.0).sqrt();
    assert!(
        (got.rms_radius_px - want_rms).abs() < 1e-5,
        "RMS radius {} vs {want_rms}",
        got.rms_radius_px
    );
}
