//! Loss values and gradients against the PyTorch reference in tests/reference/losses.py.

mod common;

use lkd_models::checkpoint::read_safetensors;
use lkd_trainer::executor::host_to_tensor;
use lkd_trainer::losses::{cross_entropy, feature_distance, kd_kl, nkd, FeatureLoss, Target};
use std::collections::BTreeMap;
use tch::{Device, Kind, TchError, Tensor};

fn reference() -> BTreeMap<String, Tensor> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("losses.safetensors");
    let status = std::process::Command::new(common::python())
        .arg(common::repo_root().join("tests/reference/losses.py"))
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    read_safetensors(&out)
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), host_to_tensor(v, Device::Cpu).unwrap()))
        .collect()
}

fn check(
    r: &BTreeMap<String, Tensor>,
    name: &str,
    input: &str,
    f: impl Fn(&Tensor) -> Result<Tensor, TchError>,
) {
    let x = r[input].copy().set_requires_grad(true);
    let v = f(&x).unwrap();
    v.backward();
    let want = r[&format!("{name}.value")].double_value(&[0]);
    let got = v.double_value(&[]);
    assert!(
        (got - want).abs() <= 1e-5,
        "{name}: value {got} vs PyTorch {want}"
    );
    let gerr = (x.grad() - &r[&format!("{name}.grad")])
        .abs()
        .max()
        .double_value(&[]);
    assert!(gerr <= 1e-5, "{name}: gradient max abs error {gerr}");
}

#[test]
fn losses_match_pytorch() {
    let r = reference();
    let labels = r["labels"].shallow_clone();
    let teacher = r["teacher"].shallow_clone();
    let soft = r["soft"].shallow_clone();
    check(&r, "ce_smooth", "student", |s| {
        cross_entropy(s, &Target::Hard(&labels), 0.1)
    });
    check(&r, "ce_soft", "student", |s| {
        cross_entropy(s, &Target::Soft(&soft), 0.0)
    });
    let kd = |s: &Tensor, alpha: f64, t: f64| {
        Ok(kd_kl(s, &teacher, t)? * alpha
            + cross_entropy(s, &Target::Hard(&labels), 0.0)? * (1.0 - alpha))
    };
    check(&r, "kd", "student", |s| kd(s, 0.1, 1.0));
    check(&r, "kd_t4", "student", |s| kd(s, 0.5, 4.0));
    check(&r, "nkd", "student", |s| {
        nkd(s, &r["teacher"], &labels, 1.0, 1.5)
    });
    let soft_labels = Target::Soft(&soft).labels().unwrap();
    check(&r, "nkd_soft_t2", "student", |s| {
        nkd(s, &r["teacher"], &soft_labels, 2.0, 1.0)
    });
    check(&r, "fd_smoothl1", "feat_s", |s| {
        feature_distance(s, &r["feat_t"], FeatureLoss::SmoothL1)
    });
    check(&r, "fd_mse", "feat_s", |s| {
        feature_distance(s, &r["feat_t"], FeatureLoss::Mse)
    });
    assert_eq!(r["student"].kind(), Kind::Float);
}

/// Inputs libtorch refuses come back as errors that say why, never as a panic.
#[test]
fn bad_loss_inputs_are_errors_not_panics() {
    let logits = Tensor::zeros([2, 3], (Kind::Float, Device::Cpu));
    let out_of_range = Tensor::from_slice(&[0i64, 7]);
    let e = cross_entropy(&logits, &Target::Hard(&out_of_range), 0.0).unwrap_err();
    assert!(e.to_string().contains("out of bounds"), "{e}");
    let other_classes = Tensor::zeros([2, 4], (Kind::Float, Device::Cpu));
    assert!(kd_kl(&logits, &other_classes, 1.0).is_err());
    let feats = Tensor::zeros([2, 3, 4, 4], (Kind::Float, Device::Cpu));
    let other_channels = Tensor::zeros([2, 5, 4, 4], (Kind::Float, Device::Cpu));
    assert!(feature_distance(&feats, &other_channels, FeatureLoss::Mse).is_err());
}
