//! AdamW against torch.optim.AdamW (tests/reference/adamw.py).

mod common;

use lkd_models::checkpoint::read_safetensors;
use lkd_trainer::executor::host_to_tensor;
use lkd_trainer::optim::{AdamW, Slot};
use tch::Device;

#[test]
fn adamw_matches_pytorch() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("adamw.safetensors");
    let status = std::process::Command::new(common::python())
        .arg(common::repo_root().join("tests/reference/adamw.py"))
        .arg(&out)
        .status()
        .unwrap();
    assert!(status.success());
    let r = read_safetensors(&out).unwrap();
    let t = |k: &str| host_to_tensor(&r[k], Device::Cpu).unwrap();
    let w = t("w0").set_requires_grad(true);
    let b = t("b0").set_requires_grad(true);
    let mut opt = AdamW::new(0.05);
    for i in 0..3 {
        let slots = [
            Slot {
                name: "w".into(),
                tensor: w.shallow_clone(),
                decay: true,
                lr_scale: 1.0,
            },
            Slot {
                name: "b".into(),
                tensor: b.shallow_clone(),
                decay: false,
                lr_scale: 1.0,
            },
        ];
        // A loss whose gradient is exactly the reference gradient.
        ((&w * t(&format!("gw{i}"))).sum(tch::Kind::Float)
            + (&b * t(&format!("gb{i}"))).sum(tch::Kind::Float))
        .backward();
        opt.step(&slots, 1e-2 * (i + 1) as f64).unwrap();
        lkd_trainer::optim::zero_grad(&slots).unwrap();
    }
    let ew = (&w - t("w3")).abs().max().double_value(&[]);
    let eb = (&b - t("b3")).abs().max().double_value(&[]);
    assert!(
        ew < 1e-6 && eb < 1e-6,
        "AdamW differs from PyTorch: {ew} {eb}"
    );
}
