//! Each deploy pass A/B in ORT: the rewritten export against the un-rewritten lowering of the
//! same graph and random weights (non-trivial BN statistics and layer scales), ≤ 1e-4.

mod common;
use lkd_exporter::*;

fn variants() -> Vec<(&'static str, ExportOptions)> {
    let off = ExportOptions {
        check: false,
        reparam: ReparamMode::None,
        linear_form: LinearForm::MatMul,
        fold_batchnorm: false,
        fold_layer_scale: false,
        ..Default::default()
    };
    vec![
        (
            "fold_batchnorm",
            ExportOptions {
                fold_batchnorm: true,
                ..off.clone()
            },
        ),
        (
            "fold_layer_scale",
            ExportOptions {
                fold_layer_scale: true,
                ..off.clone()
            },
        ),
        (
            "reparam dense",
            ExportOptions {
                fold_batchnorm: true,
                reparam: ReparamMode::Dense,
                ..off.clone()
            },
        ),
        (
            "reparam decomposed",
            ExportOptions {
                fold_batchnorm: true,
                reparam: ReparamMode::Decomposed,
                ..off.clone()
            },
        ),
        (
            "linear conv + reduce LN",
            ExportOptions {
                fold_layer_scale: true,
                linear_form: LinearForm::Conv,
                ..off.clone()
            },
        ),
        (
            "linear conv + transpose LN",
            ExportOptions {
                fold_layer_scale: true,
                linear_form: LinearForm::Conv,
                channels_first_norm: ChannelsFirstNorm::Transpose,
                ..off.clone()
            },
        ),
        (
            "matmul + transpose LN",
            ExportOptions {
                channels_first_norm: ChannelsFirstNorm::Transpose,
                ..off.clone()
            },
        ),
        (
            "all (defaults, auto)",
            ExportOptions {
                check: false,
                ..Default::default()
            },
        ),
    ]
}

fn ab(preset: &str, overrides: &str) {
    common::ort_env_ok();
    let g = common::build(preset, overrides);
    let w = common::random_weights(&g, 3);
    let x = random_input(&g, 2, 11);
    let reference = common::run_bytes(&reference_bytes(&g, &w, None).unwrap(), &x);
    for (name, opts) in variants() {
        let (bytes, rep) =
            export_bytes(&g, &w, &opts).unwrap_or_else(|e| panic!("{preset} {name}: {e}"));
        let out = common::run_bytes(&bytes, &x);
        let err = common::max_abs(&out, &reference);
        let rewrites: Vec<String> = rep
            .passes
            .iter()
            .filter(|p| p.rewrites > 0)
            .map(|p| format!("{}×{}", p.name, p.rewrites))
            .collect();
        println!(
            "{preset} {overrides} | {name}: max abs {err:.2e} [{}]",
            rewrites.join(" ")
        );
        assert!(
            err <= 1e-4,
            "{preset} {name}: max abs error {err:.3e} > 1e-4"
        );
    }
}

#[test]
fn slak_proxy() {
    ab("slak_proxy", "");
    // The rewrites this model must get: 3 BN per block folded, one kernel group per block.
    let g = common::build("slak_proxy", "");
    let w = common::random_weights(&g, 3);
    let (_, rep) = export_bytes(
        &g,
        &w,
        &ExportOptions {
            check: false,
            reparam: ReparamMode::Dense,
            ..Default::default()
        },
    )
    .unwrap();
    let blocks = 4;
    let get = |n: &str| rep.passes.iter().find(|p| p.name == n).unwrap().rewrites;
    assert_eq!(get("fold_batchnorm"), 3 * blocks);
    assert_eq!(get("fold_layer_scale"), blocks);
    assert_eq!(get("merge_kernels"), blocks);
    assert_eq!(get("pointwise_to_conv"), blocks);
    assert!(rep.reparam.iter().all(|c| c.form == KernelForm::Dense));
}

#[test]
fn convnext_proxy() {
    ab("convnext_proxy", "");
}

#[test]
fn resnet_proxy() {
    ab("resnet_proxy", "");
}

#[test]
fn vit_proxy() {
    ab("vit_proxy", "");
}

#[test]
fn slak_tiny_real_kernels() {
    ab("slak_tiny", r#"{"depths":[1,1,1,1],"input_size":64}"#);
}

#[test]
fn convnext_tiny_reduced() {
    ab("convnext_tiny", r#"{"depths":[1,1,1,1],"input_size":64}"#);
}

#[test]
fn reparam_forms_agree_with_each_other() {
    let g = common::build("slak_tiny", r#"{"depths":[1,1,1,1],"input_size":64}"#);
    let w = common::random_weights(&g, 5);
    let x = random_input(&g, 1, 2);
    let outs: Vec<Vec<f32>> = [
        ReparamMode::None,
        ReparamMode::Decomposed,
        ReparamMode::Dense,
    ]
    .into_iter()
    .map(|r| {
        common::run_bytes(
            &export_bytes(
                &g,
                &w,
                &ExportOptions {
                    check: false,
                    reparam: r,
                    ..Default::default()
                },
            )
            .unwrap()
            .0,
            &x,
        )
    })
    .collect();
    assert!(common::max_abs(&outs[0], &outs[1]) <= 1e-4);
    assert!(common::max_abs(&outs[0], &outs[2]) <= 1e-4);
    assert!(common::max_abs(&outs[1], &outs[2]) <= 1e-4);
}

#[test]
fn kernel_groups_are_found_generically() {
    let g = common::build("slak_tiny", r#"{"depths":[1,1,1,1],"input_size":64}"#);
    assert!(passes::find_kernel_groups(&g).is_empty());
    // Before BN folding the leaves are BatchNorms, so the pattern needs folding first.
    let mut w = common::random_weights(&g, 1);
    let mut g2 = g.clone();
    passes::fold_batchnorm(&mut g2, &mut w).unwrap();
    let groups = passes::find_kernel_groups(&g2);
    assert_eq!(groups.len(), 4);
    assert_eq!(groups[0].kernels.len(), 3);
    assert_eq!(groups[0].dense_kernel(), [51, 51]);
    let t = groups[0].decomposed_targets();
    let kept: std::collections::BTreeSet<_> = t.iter().collect();
    assert_eq!(
        kept.len(),
        2,
        "decomposed keeps k×s and s×k: {:?}",
        groups[0].kernels
    );
    // ConvNeXt has single depthwise convs: nothing to merge.
    assert!(passes::find_kernel_groups(&common::build("convnext_proxy", "")).is_empty());
}
