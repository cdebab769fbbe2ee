//! OpenVINO vs ONNX Runtime on the same files: the runtime's fixture models and a SLaK export
//! with large depthwise kernels (dense and decomposed forms). f32 must match to 1e-4.

mod common;

use common::*;
use lkd_exporter::ReparamMode;
use lkd_openvino::{Engine, EngineConfig, OvError, Precision};

const TOL: f32 = 1e-4;

fn engine(path: &std::path::Path) -> Engine {
    let cfg = EngineConfig {
        threads: Some(2),
        ..Default::default()
    };
    Engine::from_file(path, &cfg).expect("OpenVINO engine")
}

#[test]
fn fixtures_match_onnx_runtime_and_numpy() {
    let dir = fixtures();
    for name in ["gray28", "rgb32"] {
        let path = dir.join(format!("{name}.onnx"));
        let input = read_f32(&dir.join(format!("{name}_in.bin")));
        let numpy = read_f32(&dir.join(format!("{name}_out.bin")));
        let channels = if name == "gray28" { 1 } else { 3 };
        let size = if name == "gray28" { 28 } else { 32 };
        let shape = [3, channels, size, size];
        let mut ov = engine(&path);
        assert_eq!(ov.info().precision, "f32");
        assert_eq!(ov.info().threads, "2");
        assert_eq!(
            (
                ov.info().input_name.as_str(),
                ov.info().output_name.as_str()
            ),
            ("image", "logits")
        );
        assert_eq!(
            ov.info().input_shape,
            vec![-1, channels as i64, size as i64, size as i64]
        );
        let (oshape, got) = ov.run_f32(&input, &shape).unwrap();
        let (rshape, want) = ort_logits(&path, &input, &shape);
        assert_eq!(oshape, rshape, "{name}: output shapes");
        let d_ort = max_abs_diff(&got, &want);
        let d_np = max_abs_diff(&got, &numpy);
        eprintln!("{name}: max |Δ| vs ORT {d_ort:.2e}, vs NumPy {d_np:.2e}");
        assert!(d_ort <= TOL, "{name}: OpenVINO vs ORT max |Δ| {d_ort:e}");
        assert!(d_np <= TOL, "{name}: OpenVINO vs NumPy max |Δ| {d_np:e}");
        // The dynamic batch axis: one image, then three again (the input tensor is re-made).
        let one = &input[..channels * size * size];
        let (s1, l1) = ov.run_f32(one, &[1, channels, size, size]).unwrap();
        assert_eq!(s1[0], 1);
        assert!(max_abs_diff(&l1, &want[..l1.len()]) <= TOL);
        let (_, again) = ov.run_f32(&input, &shape).unwrap();
        assert_eq!(again, got, "{name}: a second run of the same batch differs");
    }
}

#[test]
fn static_batch_models_and_static_batch_option() {
    let dir = fixtures();
    let input = read_f32(&dir.join("rgb32_in.bin"));
    let one = &input[..3 * 32 * 32];
    // fixed1 is written with batch 1: other batch sizes are refused with the model's shape.
    let mut ov = engine(&dir.join("fixed1.onnx"));
    assert_eq!(ov.info().input_shape, vec![1, 3, 32, 32]);
    let (_, got) = ov.run_f32(one, &[1, 3, 32, 32]).unwrap();
    let (_, want) = ort_logits(&dir.join("fixed1.onnx"), one, &[1, 3, 32, 32]);
    assert!(max_abs_diff(&got, &want) <= TOL);
    let err = ov.run_f32(&input, &[3, 3, 32, 32]).unwrap_err();
    assert_eq!(
        err.to_string(),
        "input does not fit the model: dimension 0 is 3 but the model's input `image` is [1, 3, 32, 32] (-1: any)"
    );
    // A dynamic-batch model fixed to batch 3 at compile time.
    let cfg = EngineConfig {
        threads: Some(1),
        static_batch: Some(3),
        ..Default::default()
    };
    let mut ov = Engine::from_file(&dir.join("rgb32.onnx"), &cfg).unwrap();
    assert_eq!(ov.info().input_shape, vec![3, 3, 32, 32]);
    let (_, got) = ov.run_f32(&input, &[3, 3, 32, 32]).unwrap();
    let (_, want) = ort_logits(&dir.join("rgb32.onnx"), &input, &[3, 3, 32, 32]);
    assert!(max_abs_diff(&got, &want) <= TOL);
}

#[test]
fn slak_export_matches_onnx_runtime_in_both_kernel_forms() {
    let tmp = tempfile::tempdir().unwrap();
    for form in [ReparamMode::Dense, ReparamMode::Decomposed] {
        let (path, graph) = export("slak_proxy", form, tmp.path());
        let x = lkd_exporter::random_input(&graph, 2, 11);
        let (input, shape) = (x.as_f32().unwrap(), x.shape.clone());
        let mut ov = engine(&path);
        let (oshape, got) = ov.run_f32(input, &shape).unwrap();
        let (rshape, want) = ort_logits(&path, input, &shape);
        assert_eq!(oshape, rshape);
        let d = max_abs_diff(&got, &want);
        let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
        eprintln!("slak_proxy {form:?}: max |Δ| vs ORT {d:.2e} (max |logit| {scale:.2})");
        assert!(scale > 1e-2, "degenerate logits (max |logit| {scale})");
        assert!(
            d <= TOL,
            "slak_proxy {form:?}: OpenVINO vs ORT max |Δ| {d:e}"
        );
        // From bytes too, as the ORT core allows.
        let mut mem =
            Engine::from_memory(&std::fs::read(&path).unwrap(), &EngineConfig::default()).unwrap();
        let (_, from_mem) = mem.run_f32(input, &shape).unwrap();
        assert!(max_abs_diff(&from_mem, &want) <= TOL);
    }
}

#[test]
fn bf16_is_explicit_and_strict() {
    let dir = fixtures();
    let path = dir.join("rgb32.onnx");
    let cfg = EngineConfig {
        threads: Some(1),
        precision: Precision::Bf16,
        ..Default::default()
    };
    match Engine::from_file(&path, &cfg) {
        Ok(mut ov) => {
            assert!(
                cpu_has_bf16(),
                "bf16 compiled on a CPU without avx512_bf16/amx_bf16"
            );
            assert_eq!(ov.info().precision, "bf16");
            let input = read_f32(&dir.join("rgb32_in.bin"));
            let numpy = read_f32(&dir.join("rgb32_out.bin"));
            let (_, got) = ov.run_f32(&input, &[3, 3, 32, 32]).unwrap();
            let scale = numpy.iter().fold(0f32, |m, v| m.max(v.abs()));
            // bf16 keeps 8 bits of mantissa: close, but not f32 parity.
            assert!(max_abs_diff(&got, &numpy) <= 5e-2 * scale);
        }
        Err(e) => {
            assert!(!cpu_has_bf16(), "bf16 failed on a bf16 CPU: {e}");
            assert!(
                matches!(
                    e,
                    OvError::PrecisionUnavailable {
                        requested: "bf16",
                        ..
                    }
                ),
                "{e}"
            );
        }
    }
}

#[test]
fn bad_models_and_inputs_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = EngineConfig::default();
    let missing = tmp.path().join("nope.onnx");
    assert_eq!(
        Engine::from_file(&missing, &cfg).unwrap_err().to_string(),
        format!("model file `{}` does not exist", missing.display())
    );
    let garbage = tmp.path().join("garbage.onnx");
    std::fs::write(&garbage, b"this is not an ONNX protobuf").unwrap();
    let err = Engine::from_file(&garbage, &cfg).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("OpenVINO cannot read the model `{}`", garbage.display())
    );
    assert!(
        std::error::Error::source(&err).is_some(),
        "OpenVINO's message is kept"
    );
    let err = Engine::from_file(&fixtures().join("f64.onnx"), &cfg).unwrap_err();
    assert_eq!(
        err.to_string(),
        "the model is unusable by this engine: input `image` is F64; this engine runs float32 inputs"
    );
    let zero = EngineConfig {
        threads: Some(0),
        ..Default::default()
    };
    assert_eq!(
        Engine::from_file(&fixtures().join("rgb32.onnx"), &zero)
            .unwrap_err()
            .to_string(),
        "invalid engine setting: threads must be at least 1"
    );
    let mut ov = engine(&fixtures().join("rgb32.onnx"));
    assert_eq!(
        ov.run_f32(&[0.0; 10], &[1, 3, 32, 32])
            .unwrap_err()
            .to_string(),
        "input does not fit the model: shape [1, 3, 32, 32] holds 3072 values but 10 were given"
    );
    assert_eq!(
        ov.run_f32(&[0.0; 10], &[10, 1]).unwrap_err().to_string(),
        "input does not fit the model: shape [10, 1] has rank 2, the model's input `image` has [-1, 3, 32, 32]"
    );
    assert_eq!(
        ov.run_f32(&[], &[0, 3, 32, 32]).unwrap_err().to_string(),
        "input does not fit the model: shape [0, 3, 32, 32] is empty or larger than 1073741824 elements"
    );
}

#[test]
fn metadata_scan_matches_onnx_runtime() {
    let dir = fixtures();
    for name in ["rgb32", "gray28", "nometa"] {
        let path = dir.join(format!("{name}.onnx"));
        let ours = lkd_openvino::onnx_metadata(&path).unwrap();
        assert_eq!(ours, ort_metadata(&path), "{name}");
        assert_eq!(ours.is_empty(), name == "nometa");
    }
    let tmp = tempfile::tempdir().unwrap();
    let (path, _) = export("slak_proxy", ReparamMode::Decomposed, tmp.path());
    let ours = lkd_openvino::onnx_metadata(&path).unwrap();
    assert!(ours.len() >= 5, "{ours:?}");
    assert_eq!(ours, ort_metadata(&path));
    // A file cut inside the graph is an error that says so, not a panic.
    let bytes = std::fs::read(&path).unwrap();
    let cut = tmp.path().join("cut.onnx");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = lkd_openvino::onnx_metadata(&cut).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "cannot read ONNX metadata from `{}`: ",
            cut.display()
        )),
        "{err}"
    );
    assert!(err.contains("truncated"), "{err}");
}
