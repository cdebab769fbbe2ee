//! The written file: onnx.checker (full_check) through `$LKD_PYTHON`, IR/opset, names, dynamic
//! or static batch, metadata, FP16 boundaries, and clean failures that leave no file behind.

mod common;
use lkd_exporter::*;
use lkd_models::checkpoint::read_checkpoint;
use std::collections::BTreeMap;
use std::process::Command;

const INSPECT: &str = r#"
import json, sys, onnx
out = []
for path in sys.argv[1:]:
    m = onnx.load(path)
    onnx.checker.check_model(m, full_check=True)
    dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
    out.append({
        "ir": m.ir_version, "opset": m.opset_import[0].version,
        "inputs": [(i.name, i.type.tensor_type.elem_type, dims(i)) for i in m.graph.input],
        "outputs": [(o.name, o.type.tensor_type.elem_type, dims(o)) for o in m.graph.output],
        "meta": {p.key: p.value for p in m.metadata_props},
        "ops": sorted({n.op_type for n in m.graph.node}),
        "init_types": sorted({t.data_type for t in m.graph.initializer}),
    })
print(json.dumps(out))
"#;

fn inspect(paths: &[std::path::PathBuf]) -> Vec<serde_json::Value> {
    let out = Command::new(common::python())
        .arg("-c")
        .arg(INSPECT)
        .args(paths)
        .output()
        .expect("running $LKD_PYTHON");
    assert!(
        out.status.success(),
        "onnx checker failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn checker_metadata_batch_and_fp16() {
    common::ort_env_ok();
    let dir = tempfile::tempdir().unwrap();
    let mut paths = vec![];
    let mut cases = vec![];
    for preset in ["slak_proxy", "convnext_proxy", "resnet_proxy", "vit_proxy"] {
        let g = common::build(preset, "");
        let w = common::random_weights(&g, 9);
        for (tag, fp16, batch) in [
            ("dyn", false, None),
            ("static3", false, Some(3)),
            ("fp16", true, None),
        ] {
            let path = dir.path().join(format!("{preset}_{tag}.onnx"));
            let labels = (0..g.num_classes).map(|i| format!("label-{i}")).collect();
            let provenance = BTreeMap::from([
                ("lkd.kd_method".to_string(), "nkd".to_string()),
                ("lkd.config_hash".into(), "abc123".into()),
            ]);
            let opts = ExportOptions {
                fp16,
                static_batch: batch,
                labels: Some(labels),
                provenance,
                ..Default::default()
            };
            let rep =
                export(&g, &w, &opts, &path).unwrap_or_else(|e| panic!("{preset} {tag}: {e}"));
            let c = rep.check.as_ref().unwrap();
            println!(
                "{preset} {tag}: {} | max abs {:.2e} rel {:.2e}",
                rep.summary(),
                c.max_abs_err,
                c.max_rel_err
            );
            assert!(c.passed);
            paths.push(path);
            cases.push((preset, tag, g.clone()));
        }
    }
    let infos = inspect(&paths);
    for ((preset, tag, g), info) in cases.iter().zip(&infos) {
        assert_eq!(info["ir"], 8);
        assert_eq!(info["opset"], 17);
        let batch = if *tag == "static3" {
            serde_json::json!(3)
        } else {
            serde_json::json!("N")
        };
        let [h, w] = g.input_size;
        assert_eq!(
            info["inputs"],
            serde_json::json!([["pixels", 1, [batch, g.in_chans, h, w]]]),
            "{preset} {tag}"
        );
        assert_eq!(
            info["outputs"],
            serde_json::json!([["logits", 1, [batch, g.num_classes]]]),
            "{preset} {tag}"
        );
        let meta = &info["meta"];
        for (k, v) in g.preprocess.to_metadata() {
            assert_eq!(meta[&k], v, "{preset}: metadata {k}");
        }
        assert_eq!(meta["lkd.arch"], g.arch);
        assert_eq!(meta["lkd.preset"], g.preset);
        assert_eq!(meta["lkd.params"], g.num_parameters().to_string());
        assert!(meta["lkd.gflops"].as_str().unwrap().parse::<f64>().unwrap() > 0.0);
        assert_eq!(meta["lkd.kd_method"], "nkd");
        let labels: Vec<String> =
            serde_json::from_str(meta["lkd.labels"].as_str().unwrap()).unwrap();
        assert_eq!(labels.len(), g.num_classes);
        let ops: Vec<&str> = info["ops"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(
            ops.contains(&"LayerNormalization") || g.arch == "resnet",
            "{preset}: {ops:?}"
        );
        assert!(
            !ops.contains(&"BatchNormalization"),
            "{preset}: BN should be folded"
        );
        // FP16: every float initializer is fp16 (10); without: fp32 (1). Int64 (7) for shapes.
        let types: Vec<i64> = info["init_types"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        assert!(
            if *tag == "fp16" {
                !types.contains(&1) && types.contains(&10)
            } else {
                !types.contains(&10)
            },
            "{preset} {tag}: {types:?}"
        );
    }
}

#[test]
fn dynamic_batch_runs_at_any_batch() {
    let g = common::build("slak_proxy", "");
    let w = common::random_weights(&g, 2);
    let (bytes, _) = export_bytes(
        &g,
        &w,
        &ExportOptions {
            check: false,
            ..Default::default()
        },
    )
    .unwrap();
    let one = random_input(&g, 1, 4);
    let five = random_input(&g, 5, 4);
    let y1 = common::run_bytes(&bytes, &one);
    let y5 = common::run_bytes(&bytes, &five);
    assert_eq!(y5.len(), 5 * g.num_classes);
    assert!(common::max_abs(&y1, &y5[..g.num_classes]) < 1e-5);
}

fn dir_is_empty(d: &std::path::Path) -> bool {
    std::fs::read_dir(d).unwrap().next().is_none()
}

#[test]
fn bad_inputs_fail_clearly_and_leave_no_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model.onnx");
    let g = common::build("slak_proxy", "");
    let w = common::random_weights(&g, 1);

    // Unknown preset.
    let e = lkd_models::ModelConfig::preset("slak_huge")
        .build()
        .unwrap_err()
        .to_string();
    assert!(e.contains("slak_huge") && e.contains("slak_proxy"), "{e}");

    // Weights of another preset.
    let other = common::random_weights(&common::build("convnext_proxy", ""), 1);
    let e = export(&g, &other, &ExportOptions::default(), &out).unwrap_err();
    assert!(matches!(e, ExportError::Model(_)), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("missing keys") && msg.contains("unexpected keys"),
        "{msg}"
    );
    assert!(dir_is_empty(dir.path()));

    // One wrong shape.
    let mut bad = w.clone();
    bad.insert(
        "head.weight".into(),
        lkd_models::HostTensor::f32(vec![3, 96], vec![0.0; 288]),
    );
    let e = export(&g, &bad, &ExportOptions::default(), &out)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("head.weight") && e.contains("wrong shapes"),
        "{e}"
    );

    // Output in a missing directory, or a directory as output.
    let e = export(
        &g,
        &w,
        &ExportOptions::default(),
        &dir.path().join("nope/model.onnx"),
    )
    .unwrap_err();
    assert!(
        matches!(e, ExportError::Output { .. }) && e.to_string().contains("does not exist"),
        "{e}"
    );
    let e = export(&g, &w, &ExportOptions::default(), dir.path()).unwrap_err();
    assert!(matches!(e, ExportError::Output { .. }), "{e}");

    // Labels that do not match the class count.
    let e = export(
        &g,
        &w,
        &ExportOptions {
            labels: Some(vec!["a".into()]),
            ..Default::default()
        },
        &out,
    )
    .unwrap_err();
    assert!(
        e.to_string()
            .contains("1 labels given for a model with 10 classes"),
        "{e}"
    );

    // A provenance key that would overwrite preprocessing.
    let prov = BTreeMap::from([("lkd.mean".to_string(), "0".to_string())]);
    assert!(export(
        &g,
        &w,
        &ExportOptions {
            provenance: prov,
            ..Default::default()
        },
        &out
    )
    .is_err());
    assert!(
        dir_is_empty(dir.path()),
        "a failed export left files behind"
    );

    // Success writes exactly the one file (no temp file left).
    export(&g, &w, &ExportOptions::default(), &out).unwrap();
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("model.onnx")]);
    // A checkpoint read back through the generic reader exports the same way.
    let st = dir.path().join("w.safetensors");
    lkd_models::checkpoint::write_safetensors(&st, &w, None).unwrap();
    assert_eq!(read_checkpoint(&st).unwrap().len(), w.len());
}
