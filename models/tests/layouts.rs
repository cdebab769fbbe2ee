//! Layout choice and strictness of `adopt_state_dict` without Python; parity against the real
//! timm and torchvision modules is in `exporter/tests/foreign_checkpoints.rs`.

use lkd_models::checkpoint::{adopt_state_dict, StateDict};
use lkd_models::families::convnext;
use lkd_models::graph::DType;
use lkd_models::{Graph, HostTensor, ModelConfig};

fn graph() -> Graph {
    serde_json::from_str::<ModelConfig>(r#"{"preset":"convnext_tiny","depths":[1,1,2,1],"dims":[8,16,24,32],"num_classes":5,"input_size":64}"#)
        .unwrap()
        .build()
        .unwrap()
}

/// Every parameter under its own name, values numbered so a mix-up shows.
fn ours(g: &Graph) -> StateDict {
    g.params
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let t = match p.dtype {
                DType::F32 => HostTensor::f32(p.shape.clone(), vec![i as f32; p.numel()]),
                DType::I64 => HostTensor::i64(p.shape.clone(), vec![i as i64; p.numel()]),
            };
            (p.name.clone(), t)
        })
        .collect()
}

#[test]
fn official_layout_passes_through_unchanged() {
    let g = graph();
    let sd = ours(&g);
    assert_eq!(adopt_state_dict(&g, sd.clone()).unwrap(), sd);
}

#[test]
fn torchvision_layer_scale_is_reshaped_and_every_tensor_lands_on_its_parameter() {
    let g = graph();
    let sd = ours(&g);
    let theirs: StateDict = sd
        .iter()
        .map(|(name, t)| {
            let (key, rule) = convnext::TORCHVISION.key_for(name).unwrap();
            (
                key,
                HostTensor {
                    shape: rule.theirs(&t.shape),
                    data: t.data.clone(),
                },
            )
        })
        .collect();
    assert_eq!(theirs["features.5.1.layer_scale"].shape, vec![24, 1, 1]);
    assert_eq!(adopt_state_dict(&g, theirs).unwrap(), sd);
}

#[test]
fn a_file_mostly_in_our_layout_is_checked_in_our_layout() {
    let g = graph();
    let mut sd = ours(&g);
    let t = sd.remove("head.weight").unwrap();
    sd.insert("head.fc.weight".into(), t);
    let msg = adopt_state_dict(&g, sd).unwrap_err().to_string();
    assert!(
        msg.contains("1 missing keys:\n    head.weight\n  1 unexpected keys:\n    head.fc.weight"),
        "{msg}"
    );
    assert!(msg.ends_with("(read in the official layout; this family also loads timm ConvNeXt, timm ConvNeXt (conv_mlp), torchvision ConvNeXt checkpoints)"), "{msg}");
}
