//! Checkpoints users already have, saved by other codebases: timm and torchvision ConvNeXt, and
//! the SLaK authors' distilled ConvNeXt students (the SLaK class with 7×7 kernels, BatchNorm and
//! no decomposition). `foreign_checkpoints.py` (run with `$LKD_PYTHON`) saves each peer
//! module's own `state_dict()` with `torch.save` plus its eval-mode logits; here the file loads
//! through the family's key map, strictly, exports to ONNX and must match in ORT within 1e-4.

mod common;

use lkd_exporter::{export_bytes, ExportOptions, LinearForm, ReparamMode};
use lkd_models::checkpoint::{
    adopt_state_dict, read_checkpoint, read_checkpoint_for, read_safetensors,
};
use lkd_models::families::convnext;
use lkd_models::{HostTensor, ModelConfig, ModelError};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Generates the cases once per script version (one Python process; importing torch, timm and
/// torchvision dominates), under cargo's target tmpdir so reruns reuse them.
fn cases() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        lkd_util::golden::generated_once(
            &common::python(),
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/foreign_checkpoints.py"),
            Path::new(env!("CARGO_TARGET_TMPDIR")),
            "foreign-cases",
        )
    })
}

fn config(case: &str) -> ModelConfig {
    serde_json::from_str(&std::fs::read_to_string(cases().join(case).join("case.json")).unwrap())
        .unwrap()
}

fn input() -> HostTensor {
    read_safetensors(&cases().join("input.safetensors"))
        .unwrap()
        .remove("input")
        .unwrap()
}

/// Loads the case's `.pth` as the CLI does, exports it under every reparam form the family
/// has and compares ORT's logits with the peer's.
fn export_matches_peer(case: &str) {
    common::ort_env_ok();
    let dir = cases().join(case);
    let graph = config(case).build().unwrap();
    let weights = read_checkpoint_for(&graph, &dir.join("checkpoint.pth"))
        .unwrap_or_else(|e| panic!("{case}: {e}"));
    let x = input();
    let expected = read_safetensors(&dir.join("output.safetensors"))
        .unwrap()
        .remove("logits")
        .unwrap();
    let logits = expected.as_f32().unwrap();
    let spread = logits.iter().fold(f32::MIN, |a, &b| a.max(b))
        - logits.iter().fold(f32::MAX, |a, &b| a.min(b));
    assert!(
        spread > 0.5,
        "{case}: the peer's logits barely vary ({spread}), so parity would prove little"
    );
    let modes: &[ReparamMode] = if graph.arch == "slak" {
        &[ReparamMode::Auto, ReparamMode::Dense, ReparamMode::None]
    } else {
        &[ReparamMode::Auto]
    };
    for &reparam in modes {
        for linear_form in [LinearForm::Conv, LinearForm::MatMul] {
            let opts = ExportOptions {
                reparam,
                linear_form,
                check_inputs: vec![x.clone()],
                ..Default::default()
            };
            let (bytes, _) = export_bytes(&graph, &weights, &opts)
                .unwrap_or_else(|e| panic!("{case} {reparam:?}: {e}"));
            let err = common::max_abs(&common::run_bytes(&bytes, &x), expected.as_f32().unwrap());
            println!("{case} {reparam:?} {linear_form:?}: ORT vs peer max abs {err:.2e}");
            assert!(
                err <= 1e-4,
                "{case} {reparam:?} {linear_form:?}: max abs error vs the peer {err:.3e} > 1e-4"
            );
        }
    }
}

#[test]
fn timm_convnext_loads_exports_and_matches_timm() {
    export_matches_peer("timm");
}

#[test]
fn torchvision_convnext_loads_exports_and_matches_torchvision() {
    export_matches_peer("torchvision");
}

#[test]
fn timm_compact_convnext_and_resnet34_load_export_and_match_timm() {
    export_matches_peer("timm_atto");
    export_matches_peer("timm_resnet34");
}

#[test]
fn compact_presets_have_timms_parameter_counts() {
    let counts: BTreeMap<String, usize> =
        serde_json::from_str(&std::fs::read_to_string(cases().join("param_counts.json")).unwrap())
            .unwrap();
    assert_eq!(counts.len(), 5);
    for (name, expected) in counts {
        let g = ModelConfig::preset(&name).build().unwrap();
        assert_eq!(g.num_parameters(), expected, "{name}");
    }
}

#[test]
fn slak_authors_convnext_students_load_export_and_match() {
    export_matches_peer("slak7");
    export_matches_peer("slak7_small3");
}

/// The key maps name every parameter of the full-size `convnext_tiny` preset exactly as timm's
/// and torchvision's own `convnext_tiny` do, with the same shapes, and nothing else.
#[test]
fn key_maps_cover_full_size_convnext_tiny_exactly() {
    let peers: BTreeMap<String, BTreeMap<String, Vec<usize>>> = serde_json::from_str(
        &std::fs::read_to_string(cases().join("full_size_keys.json")).unwrap(),
    )
    .unwrap();
    let graph = ModelConfig::preset("convnext_tiny").build().unwrap();
    for layout in [convnext::TIMM, convnext::TORCHVISION] {
        let ours: BTreeMap<String, Vec<usize>> = graph
            .params
            .iter()
            .map(|p| {
                let (key, shape) = layout
                    .key_for(&p.name)
                    .unwrap_or_else(|| panic!("{}: no key for {}", layout.name, p.name));
                (key, shape.theirs(&p.shape))
            })
            .collect();
        assert_eq!(
            ours.len(),
            graph.params.len(),
            "{}: two parameters share a key",
            layout.name
        );
        assert_eq!(&ours, &peers[layout.name], "{}", layout.name);
    }
}

/// A foreign file is checked as strictly as ours, and problems are named as the file names
/// them: here one key dropped, one added and one reshaped in a real timm state dict.
#[test]
fn foreign_layout_mismatches_are_listed_in_the_files_names() {
    let graph = config("timm").build().unwrap();
    let mut sd = read_checkpoint(&cases().join("timm/checkpoint.pth")).unwrap();
    assert!(sd.remove("stages.2.blocks.1.mlp.fc1.weight").is_some());
    sd.insert(
        "stages.2.blocks.2.gamma".into(),
        HostTensor::f32(vec![24], vec![1.0; 24]),
    );
    sd.insert(
        "head.fc.weight".into(),
        HostTensor::f32(vec![7, 31], vec![0.0; 7 * 31]),
    );
    let n = graph.params.len();
    let err = adopt_state_dict(&graph, sd).unwrap_err();
    assert!(matches!(err, ModelError::Mismatch { .. }));
    assert_eq!(
        err.to_string(),
        format!(
            "checkpoint does not match model `convnext_tiny`:\n  read as a timm ConvNeXt checkpoint ({} of {n} keys fit)\n  1 missing keys:\n    stages.2.blocks.1.mlp.fc1.weight\n  1 unexpected keys:\n    stages.2.blocks.2.gamma\n  1 wrong shapes:\n    head.fc.weight: expected F32 [7, 32], found [7, 31] f32\n  (is this checkpoint for another preset or config override?)",
            n - 1
        )
    );

    // The same timm file against the full-size preset: every missing block is named in timm's
    // terms, not ours.
    let full = ModelConfig::preset("convnext_tiny").build().unwrap();
    let msg = read_checkpoint_for(&full, &cases().join("timm/checkpoint.pth"))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("read as a timm ConvNeXt checkpoint")
            && msg.contains("stages.0.blocks.1.conv_dw.weight")
            && msg.contains("wrong shapes"),
        "{msg}"
    );
    assert!(msg.contains("timm/checkpoint.pth"), "names the file: {msg}");

    // A torchvision file for a ConvNeXt built the SLaK way is not silently accepted.
    let slak7 = config("slak7").build().unwrap();
    let msg = read_checkpoint_for(&slak7, &cases().join("torchvision/checkpoint.pth"))
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("missing keys")
            && msg.contains("large_kernel.lkb_origin.bn.running_var")
            && msg.contains("features.1.0.block.0.weight"),
        "{msg}"
    );
}
