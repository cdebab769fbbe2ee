//! Whole-model parity against PyTorch: `tests/reference/make_case.py` (run with `$LKD_PYTHON`)
//! writes random weights with official keys, an input and eval-mode logits; our export run in
//! ORT must match within 1e-4, for every family at nano size and for reduced-depth big presets
//! with their real kernel sizes, under every reparam form.

mod common;
use lkd_exporter::*;
use lkd_models::checkpoint::{read_checkpoint, read_safetensors};
use std::path::Path;
use std::process::Command;

const CASES: &[(&str, &str)] = &[
    ("slak_proxy", "{}"),
    ("convnext_proxy", "{}"),
    ("resnet_proxy", "{}"),
    ("vit_proxy", "{}"),
    ("slak_tiny", r#"{"depths":[1,1,1,1],"input_size":64}"#),
    ("convnext_tiny", r#"{"depths":[1,1,1,1],"input_size":64}"#),
    ("resnet18", r#"{"depths":[1,1,1,1],"input_size":64}"#),
];

fn make_cases(root: &Path) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/reference/make_case.py");
    assert!(script.is_file(), "missing {}", script.display());
    let cases: Vec<Vec<String>> = CASES
        .iter()
        .map(|(p, o)| {
            vec![
                "--preset".into(),
                p.to_string(),
                "--override".into(),
                o.to_string(),
                "--out".into(),
                root.join(p).display().to_string(),
            ]
        })
        .collect();
    let out = Command::new(common::python())
        .arg(&script)
        .arg("--cases")
        .arg(serde_json::to_string(&cases).unwrap())
        .output()
        .expect("running $LKD_PYTHON make_case.py");
    assert!(
        out.status.success(),
        "make_case.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn export_matches_pytorch() {
    common::ort_env_ok();
    let root = tempfile::tempdir().unwrap();
    make_cases(root.path());
    for (preset, overrides) in CASES {
        let dir = root.path().join(preset);
        let g = common::build(preset, if *overrides == "{}" { "" } else { overrides });
        let w = read_safetensors(&dir.join("state.safetensors")).unwrap();
        let x = read_safetensors(&dir.join("input.safetensors"))
            .unwrap()
            .remove("input")
            .unwrap();
        let expected = read_safetensors(&dir.join("output.safetensors"))
            .unwrap()
            .remove("logits")
            .unwrap();
        let modes: &[ReparamMode] = if g.arch == "slak" {
            &[
                ReparamMode::Auto,
                ReparamMode::Decomposed,
                ReparamMode::Dense,
                ReparamMode::None,
            ]
        } else {
            &[ReparamMode::Auto]
        };
        for &reparam in modes {
            let forms: &[LinearForm] = if reparam == ReparamMode::Auto {
                &[LinearForm::Conv, LinearForm::MatMul]
            } else {
                &[LinearForm::Conv]
            };
            for &linear_form in forms {
                let opts = ExportOptions {
                    reparam,
                    linear_form,
                    check_inputs: vec![x.clone()],
                    ..Default::default()
                };
                let (bytes, rep) = export_bytes(&g, &w, &opts)
                    .unwrap_or_else(|e| panic!("{preset} {reparam:?}: {e}"));
                let y = common::run_bytes(&bytes, &x);
                let err = common::max_abs(&y, expected.as_f32().unwrap());
                println!(
                    "{preset} {reparam:?} {linear_form:?}: vs PyTorch max abs {err:.2e}; {}",
                    rep.summary()
                );
                assert!(err <= 1e-4, "{preset} {reparam:?} {linear_form:?}: max abs error vs PyTorch {err:.3e} > 1e-4");
            }
        }
    }
    // The official `.pth` archive of the same weights loads to the same state dict.
    let dir = root.path().join("slak_proxy");
    let pth = read_checkpoint(&dir.join("checkpoint.pth")).unwrap();
    let st = read_safetensors(&dir.join("state.safetensors")).unwrap();
    assert_eq!(pth, st);
}
