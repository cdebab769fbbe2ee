//! The OpenVINO engine through the runtime: the same logits as ONNX Runtime on the fixtures (as a
//! library, through `lkd-run predict`, and through a KServe v2 server), the exact errors for
//! settings it does not have, and the side-by-side A/B. It needs `LKD_OPENVINO_LIB` (the
//! Makefile exports it); without it these tests fail with the engine's install hint, never skip.

use std::path::PathBuf;
use std::process::{Command, Output};

use image::ImageFormat;
use lkd_runtime::{Engine, Model, Precision, RuntimeError, ServeConfig, SessionConfig};
use lkd_util::Device;
use serde_json::{json, Value};

use crate::common::*;
use crate::serve_util::{request, Running};

const OV_F32: Engine = Engine::OpenVino {
    precision: Precision::F32,
};

fn lkd_run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lkd-run"))
        .args(args)
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn one_thread() -> SessionConfig {
    SessionConfig {
        intra_threads: Some(1),
        ..SessionConfig::default()
    }
}

#[test]
fn openvino_logits_equal_onnx_runtime_on_the_fixtures() {
    for (name, input, shape) in [
        ("gray28", "gray28_in.bin", [3, 1, 28, 28]),
        ("rgb32", "rgb32_in.bin", [3, 3, 32, 32]),
        ("fixed1", "rgb32_in.bin", [1, 3, 32, 32]),
    ] {
        let x = read_f32(&fixtures().join(input));
        let x = &x[..shape.iter().product::<usize>()];
        let mut ort = Model::load(model(name), &one_thread()).unwrap();
        let mut ov = Model::load_with(model(name), &one_thread(), OV_F32).unwrap();
        let (a, b) = (ort.run(x, shape).unwrap(), ov.run(x, shape).unwrap());
        assert_eq!((b.batch, b.classes), (a.batch, a.classes), "{name}");
        let d = max_abs_diff(&a.data, &b.data);
        assert!(d <= 1e-4, "{name}: OpenVINO differs from ORT by {d}");
        // Same description of the file, from the engine and the metadata scan.
        let (i, j) = (ort.info(), ov.info());
        assert_eq!(
            (&j.metadata, &j.labels, &j.input_shape, &j.output_name),
            (&i.metadata, &i.labels, &i.input_shape, &i.output_name),
            "{name}"
        );
        assert_eq!(j.provider, "OpenVINO CPU (f32)");
        assert_eq!(j.engine, OV_F32);
        assert!(!j.engine_version.is_empty());
    }
}

#[test]
fn openvino_refuses_cuda_and_spinning_and_bad_files() {
    let cuda = SessionConfig {
        device: Device::Cuda(0),
        ..SessionConfig::default()
    };
    let e = Model::load_with(model("gray28"), &cuda, OV_F32).unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid engine setting: the OpenVINO engine runs on the CPU only, but device cuda:0 was \
         asked for; use --engine ort for CUDA"
    );
    let spin = SessionConfig {
        spin: true,
        ..SessionConfig::default()
    };
    let e = Model::load_with(model("gray28"), &spin, OV_F32).unwrap_err();
    assert!(matches!(e, RuntimeError::EngineSetting(_)), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let junk = dir.path().join("junk.onnx");
    std::fs::write(&junk, b"not a protobuf at all \xff\xff\xff").unwrap();
    let e = Model::load_with(&junk, &one_thread(), OV_F32).unwrap_err();
    assert!(matches!(e, RuntimeError::BadModel { .. }), "{e}");
    // A float64 input is the engine's error, not a panic.
    let e = Model::load_with(model("f64"), &one_thread(), OV_F32).unwrap_err();
    assert!(e.to_string().contains("float32"), "{e}");
}

fn images(dir: &std::path::Path) -> Vec<PathBuf> {
    (0..3)
        .map(|i| {
            let p = dir.join(format!("img{i}.png"));
            std::fs::write(&p, encode(&photo(60 + 7 * i, 40, i), ImageFormat::Png)).unwrap();
            p
        })
        .collect()
}

fn predict_json(model_name: &str, images: &[PathBuf], extra: &[&str]) -> Value {
    let m = model(model_name);
    let mut args = vec!["predict", m.to_str().unwrap(), "--json", "--top-k", "5"];
    args.extend_from_slice(extra);
    args.extend(images.iter().map(|p| p.to_str().unwrap()));
    let out = lkd_run(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn predict_with_openvino_equals_onnx_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let imgs = images(dir.path());
    for name in ["gray28", "rgb32"] {
        let ort = predict_json(name, &imgs, &["--engine", "ort", "--threads", "1"]);
        let ov = predict_json(name, &imgs, &["--engine", "openvino", "--threads", "1"]);
        assert_eq!(ort["provider"], "CPUExecutionProvider");
        assert_eq!(ov["provider"], "OpenVINO CPU (f32)");
        let results = |v: &Value| v["results"].as_array().unwrap().clone();
        let (a, b) = (results(&ort), results(&ov));
        assert_eq!(a.len(), 3);
        for (ra, rb) in a.iter().zip(&b) {
            let preds = |r: &Value| {
                r["predictions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| (p["index"].as_u64().unwrap(), p["prob"].as_f64().unwrap()))
                    .collect::<Vec<_>>()
            };
            let (pa, pb) = (preds(ra), preds(rb));
            assert_eq!(pa.len(), 5);
            for ((ia, qa), (ib, qb)) in pa.iter().zip(&pb) {
                assert!((qa - qb).abs() <= 1e-4, "{name}: {pa:?} vs {pb:?}");
                // Equal probabilities may swap places; different ones may not.
                assert!(
                    ia == ib || (qa - qb).abs() <= 1e-4,
                    "{name}: {pa:?} vs {pb:?}"
                );
            }
        }
    }
}

#[test]
fn engine_flags_are_refused_with_exact_errors() {
    let m = model("gray28");
    let m = m.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let imgs = images(dir.path());
    let img = imgs[0].to_str().unwrap();
    let precision = "error: invalid engine setting: --precision applies to --engine openvino \
                     only (ONNX Runtime computes in the model's own f32)\n";
    for args in [
        vec!["predict", m, img, "--precision", "bf16"],
        vec!["predict", m, img, "--engine", "ort", "--precision", "f32"],
        vec!["bench", m, "--precision", "bf16"],
        vec!["info", m, "--precision", "bf16"],
        vec!["serve", m, "--precision", "bf16", "--addr", "127.0.0.1:0"],
    ] {
        let out = lkd_run(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(stderr(&out), precision, "{args:?}");
    }
    let out = lkd_run(&["predict", m, img, "--spin", "on", "--engine", "openvino"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error: invalid engine setting: --spin on is an ONNX Runtime setting; the OpenVINO \
         engine has no spinning thread pool to turn on (drop --spin or use --engine ort)\n"
    );
    let out = lkd_run(&["bench", m, "--vs-engine", "openvino", "--spin", "on"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("--spin on cannot be used with --vs or --vs-engine"),
        "{}",
        stderr(&out)
    );
    let out = lkd_run(&["bench", m, "--engine", "openvino", "--opt-level", "basic"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error: invalid engine setting: --opt-level is an ONNX Runtime setting; OpenVINO \
         optimizes the graph itself (drop --opt-level or measure an --engine ort side)\n"
    );
    let out = lkd_run(&["predict", m, img, "--engine", "onnx"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("[possible values: ort, openvino]"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_missing_openvino_runtime_is_an_error_not_a_fallback() {
    let m = model("gray28");
    let out = Command::new(env!("CARGO_BIN_EXE_lkd-run"))
        .args(["info", m.to_str().unwrap(), "--engine", "openvino"])
        .env("LKD_OPENVINO_LIB", "/nonexistent/libopenvino_c.so")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let e = stderr(&out);
    assert!(
        e.starts_with(
            "error: OpenVINO runtime library not found: LKD_OPENVINO_LIB=`/nonexistent/libopenvino_c.so` \
             does not exist. Run `make`"
        ),
        "{e}"
    );
}

#[test]
fn info_names_the_engine_version_and_precision() {
    let m = model("rgb32");
    let out = lkd_run(&[
        "info",
        m.to_str().unwrap(),
        "--engine",
        "openvino",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["engine"]["name"], "openvino");
    assert_eq!(v["engine"]["provider"], "OpenVINO CPU (f32)");
    assert_eq!(v["engine"]["precision"], "f32");
    assert!(
        v["engine"]["version"]
            .as_str()
            .unwrap()
            .starts_with("2026."),
        "{v}"
    );
    assert_eq!(v["labels"].as_array().unwrap().len(), 5);
    let out = lkd_run(&["info", m.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("engine      ort CPUExecutionProvider (version "),
        "{text}"
    );
}

#[test]
fn kserve_on_openvino_equals_onnx_runtime() {
    let mut cfg = ServeConfig::new(model("gray28"));
    cfg.session = SessionConfig {
        intra_threads: Some(1),
        warmup: 1,
        ..SessionConfig::default()
    };
    cfg.engine = OV_F32;
    let mut server = Running::start(cfg);
    let x = read_f32(&fixtures().join("gray28_in.bin"));
    // Batch 3 then batch 1: the OpenVINO model keeps its dynamic batch axis.
    for n in [3usize, 1] {
        let xs = &x[..n * 28 * 28];
        let req = json!({"inputs": [{"name": "image", "shape": [n, 1, 28, 28], "datatype": "FP32", "data": xs}]});
        let r = request(
            server.addr,
            "POST",
            "/v2/models/gray28/infer",
            &[("Content-Type", "application/json")],
            req.to_string().as_bytes(),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let out = &r.json()["outputs"][0];
        assert_eq!(out["shape"], json!([n, 10]));
        let got: Vec<f32> = out["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let want = Model::load(model("gray28"), &one_thread())
            .unwrap()
            .run(xs, [n, 1, 28, 28])
            .unwrap()
            .data;
        let d = max_abs_diff(&got, &want);
        assert!(
            d <= 1e-4,
            "batch {n}: OpenVINO server differs from ORT by {d}"
        );
    }
    server.stop();
}

#[test]
fn bench_vs_engine_measures_both_engines_on_one_file() {
    let m = model("gray28");
    let out = lkd_run(&[
        "bench",
        m.to_str().unwrap(),
        "--engine",
        "openvino",
        "--vs-engine",
        "ort",
        "--iters",
        "6",
        "--warmup",
        "1",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ab = &v["ab"][0];
    assert_eq!(ab["a"], "gray28 [OpenVINO CPU (f32)]");
    assert_eq!(ab["b"], "gray28 [CPUExecutionProvider]");
    let r = &ab["ratio"];
    assert_eq!(r["rounds"], 6);
    let (lo, med, hi) = (
        r["min"].as_f64().unwrap(),
        r["median"].as_f64().unwrap(),
        r["max"].as_f64().unwrap(),
    );
    assert!(lo > 0.0 && lo <= med && med <= hi, "{r}");
    let providers: Vec<&str> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["provider"].as_str().unwrap())
        .collect();
    assert_eq!(providers, ["OpenVINO CPU (f32)", "CPUExecutionProvider"]);
    // OpenVINO is compiled per measured batch; a graph with a fixed batch keeps it.
    let out = lkd_run(&[
        "bench",
        m.to_str().unwrap(),
        "--engine",
        "openvino",
        "--batch",
        "1,3",
        "--iters",
        "2",
        "--warmup",
        "0",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let batches: Vec<u64> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["batch"].as_u64().unwrap())
        .collect();
    assert_eq!(batches, [1, 3]);
    let fixed = model("fixed1");
    let out = lkd_run(&[
        "bench",
        fixed.to_str().unwrap(),
        "--engine",
        "openvino",
        "--batch",
        "2",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "error: invalid engine setting: input `image` has a fixed batch of 1; it cannot be \
         compiled for a batch of 2\n"
    );
    // The table form prints the ratio with its spread.
    let out = lkd_run(&[
        "bench",
        m.to_str().unwrap(),
        "--vs-engine",
        "openvino",
        "--iters",
        "4",
        "--warmup",
        "0",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("gray28 [OpenVINO CPU (f32)]/gray28 [CPUExecutionProvider] per round = ")
            && text.contains("4 rounds)"),
        "{text}"
    );
}

/// An operator neither engine has: each says so on one `error:` line (OpenVINO's multi-line
/// report with source locations and blank lines is folded), naming the operator.
#[test]
fn engine_errors_share_one_line_format() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(model("rgb32")).unwrap();
    // Same length, so the protobuf stays well formed: only the op type is unknown.
    let swapped: Vec<u8> = {
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i..].starts_with(b"Conv") {
                out.extend_from_slice(b"Cxnv");
                i += 4;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        out
    };
    let unknown = dir.path().join("cxnv.onnx");
    std::fs::write(&unknown, swapped).unwrap();
    let image = dir.path().join("x.png");
    std::fs::write(&image, encode(&photo(40, 40, 1), ImageFormat::Png)).unwrap();
    let (m, i) = (unknown.to_str().unwrap(), image.to_str().unwrap());
    let ort = stderr(&lkd_run(&["predict", "--engine", "ort", m, i]));
    assert_eq!(
        ort.trim_end(),
        format!(
            "error: `{m}` uses the operator `Cxnv`, which this ONNX Runtime does not have (it said: \
             \"No Op registered for Cxnv with domain_version of 17\"). Re-export the model with \
             standard ONNX operators, or point ORT_DYLIB_PATH at an ONNX Runtime that has it"
        )
    );
    let ov = stderr(&lkd_run(&["predict", "--engine", "openvino", m, i]));
    assert_eq!(
        ov.trim_end(),
        format!(
            "error: OpenVINO cannot read the model `{m}`: general error: FrontEnd API failed with \
             OpConversionFailure: Model wasn't fully converted. Summary: -- No conversion rule \
             found for operations: Cxnv-17"
        )
    );
}
