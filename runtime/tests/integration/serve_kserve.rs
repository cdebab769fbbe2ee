//! The KServe v2 / open inference protocol against a live server: the official tritonclient
//! HTTP client, and raw requests for the JSON forms and the errors.

use std::path::Path;
use std::process::Command;

use base64::Engine;
use image::ImageFormat;
use lkd_runtime::server::{BearerToken, ModelSpec};
use lkd_runtime::{
    preprocess_batch, Classifier, Model, PreprocessOverrides, ServeConfig, SessionConfig,
};
use serde_json::{json, Value};

use crate::common::*;
use crate::serve_util::{get, request, Running};

const TOKEN: &str = "kserve-test-token-0123456789";

fn two_models() -> ServeConfig {
    let mut cfg = ServeConfig::with_models(vec![
        ModelSpec {
            name: "rgb".into(),
            path: model("rgb32"),
        },
        ModelSpec {
            name: "digits".into(),
            path: model("gray28"),
        },
    ]);
    cfg.session = SessionConfig {
        intra_threads: Some(1),
        warmup: 1,
        ..SessionConfig::default()
    };
    cfg
}

/// Logits of the runtime's own predict path (preprocess_batch + Model::run) for encoded images.
fn runtime_logits(name: &str, images: &[(String, Vec<u8>)]) -> Vec<f32> {
    let mut c = Classifier::load(
        model(name),
        &SessionConfig::default(),
        &PreprocessOverrides::default(),
    )
    .unwrap();
    let batch = preprocess_batch(images, &c.preprocess).unwrap();
    c.model.run(&batch.data, batch.shape).unwrap().data
}

#[test]
fn tritonclient_infers_like_the_runtime() {
    let mut cfg = two_models();
    cfg.auth = Some(BearerToken::new(TOKEN).unwrap());
    let mut server = Running::start(cfg);
    let dir = tempfile::tempdir().unwrap();
    let input = fixtures().join("rgb32_in.bin");
    let images: Vec<(String, Vec<u8>)> = vec![
        ("a.jpg".into(), encode(&photo(90, 70, 1), ImageFormat::Jpeg)),
        ("b.png".into(), encode(&photo(40, 64, 2), ImageFormat::Png)),
    ];
    let mut paths = Vec::new();
    for (name, bytes) in &images {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        paths.push(p);
    }
    let out = Command::new(python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/triton_client.py"))
        .arg(server.addr.to_string())
        .arg("rgb")
        .arg(&input)
        .args(["3", "3", "32", "32"])
        .arg(dir.path())
        .args(&paths)
        .env("LKD_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "triton_client.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).unwrap()).unwrap();

    assert_eq!(
        (
            report["live"].as_bool(),
            report["ready"].as_bool(),
            report["model_ready"].as_bool()
        ),
        (Some(true), Some(true), Some(true))
    );
    let meta = &report["metadata"];
    assert_eq!(meta["name"], "rgb");
    assert_eq!(
        meta["inputs"][0],
        json!({"name": "image", "datatype": "FP32", "shape": [-1, 3, 32, 32]})
    );
    assert_eq!(
        meta["inputs"][1],
        json!({"name": "encoded_image", "datatype": "BYTES", "shape": [-1]})
    );
    assert_eq!(
        meta["outputs"][0],
        json!({"name": "logits", "datatype": "FP32", "shape": [-1, 5]})
    );

    // FP32: the same input through the runtime's session.
    let x = read_f32(&input);
    let mut m = Model::load(model("rgb32"), &SessionConfig::default()).unwrap();
    let want = m.run(&x, [3, 3, 32, 32]).unwrap().data;
    for tag in ["binary", "json"] {
        let got = read_f32(&dir.path().join(format!("fp32_{tag}.bin")));
        assert_eq!(report[format!("fp32_{tag}_shape")], json!([3, 5]));
        assert_eq!(report[format!("fp32_{tag}_id")], "req-1");
        let d = max_abs_diff(&got, &want);
        eprintln!("tritonclient FP32 ({tag}) vs runtime: max abs diff {d:e}");
        assert!(d <= 1e-5, "FP32 {tag}: max abs diff {d}");
    }
    // Classification: "<logit>:<index>:<label>", best first, equal to the logits' top 3.
    let labels = ["cat", "dog", "eagle", "kite", "horse"];
    for (row, top) in report["classification"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let logits = &want[row * 5..row * 5 + 5];
        let mut order: Vec<usize> = (0..5).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        let top: Vec<&str> = top
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
        assert_eq!(top.len(), 3);
        for (entry, &i) in top.iter().zip(&order) {
            let parts: Vec<&str> = entry.splitn(3, ':').collect();
            assert_eq!(
                (parts[1], parts[2]),
                (i.to_string().as_str(), labels[i]),
                "{entry}"
            );
            let v: f32 = parts[0].parse().unwrap();
            assert!((v - logits[i]).abs() <= 1e-5, "{entry} vs {}", logits[i]);
        }
    }
    // BYTES: encoded images decoded and preprocessed by the server.
    let got = read_f32(&dir.path().join("bytes.bin"));
    assert_eq!(report["bytes_shape"], json!([2, 5]));
    let d = max_abs_diff(&got, &runtime_logits("rgb32", &images));
    eprintln!("tritonclient BYTES vs runtime predict path: max abs diff {d:e}");
    assert!(d <= 1e-5, "BYTES: max abs diff {d}");

    // Errors reach the client as the protocol's error object.
    assert_eq!(report["bad_shape"]["status"], "400");
    assert_eq!(
        report["bad_shape"]["message"],
        "input `image` must have shape [N, 3, 32, 32] (preprocessed NCHW), found [1, 3, 33, 32]"
    );
    assert_eq!(report["unknown_model"]["status"], "404");
    assert_eq!(
        report["unknown_model"]["message"],
        "unknown model `no-such-model`; this server serves: digits, rgb"
    );
    server.stop();
}

fn post_json(addr: std::net::SocketAddr, path: &str, body: &Value) -> crate::serve_util::Reply {
    request(
        addr,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
    )
}

#[test]
fn json_requests_and_protocol_errors() {
    let mut server = Running::start(two_models());
    let addr = server.addr;

    let v2 = get(addr, "/v2").json();
    assert_eq!(
        v2["extensions"],
        json!(["binary_tensor_data", "classification"])
    );
    assert_eq!(get(addr, "/v2/health/live").status, 200);
    assert_eq!(get(addr, "/v2/models/digits/ready").status, 200);
    assert_eq!(
        get(addr, "/v2/models/digits/versions/1").json()["name"],
        "digits"
    );
    let v9 = get(addr, "/v2/models/digits/versions/9");
    assert_eq!(
        (v9.status, v9.error()),
        (
            404,
            "model `digits` has no version `9`; it serves version 1".to_string()
        )
    );

    // FP32 as nested JSON: equal to the session's logits.
    let x = read_f32(&fixtures().join("gray28_in.bin"));
    let nested: Vec<Vec<Vec<Vec<f32>>>> = x
        .chunks(28 * 28)
        .map(|img| vec![img.chunks(28).map(<[f32]>::to_vec).collect()])
        .collect();
    let req = json!({"inputs": [{"name": "image", "shape": [3, 1, 28, 28], "datatype": "FP32", "data": nested}]});
    let r = post_json(addr, "/v2/models/digits/infer", &req);
    assert_eq!(r.status, 200, "{}", r.text());
    let out = &r.json()["outputs"][0];
    assert_eq!(
        (out["name"].as_str(), out["shape"].clone()),
        (Some("logits"), json!([3, 10]))
    );
    let got: Vec<f32> = out["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    let want = Model::load(model("gray28"), &SessionConfig::default())
        .unwrap()
        .run(&x, [3, 1, 28, 28])
        .unwrap()
        .data;
    assert!(max_abs_diff(&got, &want) <= 1e-5);

    // BYTES in JSON: base64 strings.
    let png = encode(&photo(50, 30, 4), ImageFormat::Png);
    let b64 = base64::engine::general_purpose::STANDARD.encode(&png);
    let req = json!({"inputs": [{"name": "encoded_image", "shape": [1], "datatype": "BYTES", "data": [b64]}],
                     "outputs": [{"name": "logits", "parameters": {"classification": 2}}]});
    let r = post_json(addr, "/v2/models/digits/infer", &req);
    assert_eq!(r.status, 200, "{}", r.text());
    let top = r.json()["outputs"][0]["data"].clone();
    let logits = runtime_logits("gray28", &[("p".into(), png)]);
    let best = (0..10)
        .max_by(|&a, &b| logits[a].total_cmp(&logits[b]))
        .unwrap();
    let digits = [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    ];
    assert!(
        top[0]
            .as_str()
            .unwrap()
            .ends_with(&format!(":{best}:{}", digits[best])),
        "{top}"
    );

    // Binary extension by hand: NaN is refused, a short header length too.
    let mut body = json!({"inputs": [{"name": "image", "shape": [1, 1, 28, 28], "datatype": "FP32",
                                      "parameters": {"binary_data_size": 28 * 28 * 4}}]})
    .to_string()
    .into_bytes();
    let json_len = body.len().to_string();
    let mut values = vec![0f32; 28 * 28];
    values[5] = f32::NAN;
    body.extend(values.iter().flat_map(|v| v.to_le_bytes()));
    let r = request(
        addr,
        "POST",
        "/v2/models/digits/infer",
        &[("Inference-Header-Content-Length", &json_len)],
        &body,
    );
    assert_eq!(
        (r.status, r.error()),
        (
            400,
            "input `image`: element 5 is NaN, expected a finite number".to_string()
        )
    );
    let too_long = (body.len() + 1).to_string();
    let r = request(
        addr,
        "POST",
        "/v2/models/digits/infer",
        &[("Inference-Header-Content-Length", &too_long)],
        &body,
    );
    assert_eq!(r.status, 400);
    assert!(r.error().contains("but the body has only"), "{}", r.text());

    // Every error, from our handlers or from the HTTP layer, is `{"error": "..."}`.
    let cases: Vec<(crate::serve_util::Reply, u16, &str)> = vec![
        (
            request(addr, "POST", "/v2/models/digits/infer", &[], b"{not json"),
            400,
            "not valid JSON for the v2 protocol",
        ),
        (
            post_json(addr, "/v2/models/digits/infer", &json!({"inputs": []})),
            400,
            "takes exactly one input",
        ),
        (
            post_json(
                addr,
                "/v2/models/digits/infer",
                &json!({"inputs": [{"name": "image", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": [1.0, 2.0]}]}),
            ),
            400,
            "needs 784 values, found 2",
        ),
        (
            post_json(
                addr,
                "/v2/models/digits/infer",
                &json!({"inputs": [{"name": "image", "shape": [0, 1, 28, 28], "datatype": "FP32", "data": []}]}),
            ),
            400,
            "the batch dimension must be between 1 and 256, found 0",
        ),
        (
            post_json(
                addr,
                "/v2/models/digits/infer",
                &json!({"inputs": [{"name": "encoded_image", "shape": [1], "datatype": "BYTES", "data": ["@@@"]}]}),
            ),
            400,
            "element 0 is not valid base64",
        ),
        (
            post_json(
                addr,
                "/v2/models/digits/infer",
                &json!({"inputs": [{"name": "encoded_image", "shape": [1], "datatype": "BYTES", "data": ["aGVsbG8="]}]}),
            ),
            400,
            "cannot decode image `element 0`",
        ),
        (
            post_json(
                addr,
                "/v2/models/digits/infer",
                &json!({"inputs": [{"name": "image", "shape": [1, 1, 28, 28], "datatype": "INT8", "data": []}]}),
            ),
            400,
            "input `image` of datatype INT8 is not accepted",
        ),
        (
            post_json(
                addr,
                "/v2/models/digits/infer",
                &json!({"inputs": [{"name": "image", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": []}], "outputs": [{"name": "logits", "parameters": {"classification": 11}}]}),
            ),
            400,
            "classification must be between 1 and 10",
        ),
        (
            post_json(
                addr,
                "/v2/models/digits/infer",
                &json!({"inputs": [{"name": "image", "shape": [1, 1, 28, 28], "datatype": "FP32", "parameters": {"shared_memory_region": "r"}}]}),
            ),
            400,
            "shared memory",
        ),
        (
            post_json(
                addr,
                "/v2/models/digits/infer",
                &json!({"inputs": [{"name": "image", "shape": [1, 1, 28, 28], "datatype": "FP32", "data": []}], "outputs": [{"name": "logits"}, {"name": "logits", "parameters": {"classification": 1}}]}),
            ),
            400,
            "output `logits` is requested more than once",
        ),
        (
            post_json(addr, "/v2/models/nope/infer", &json!({})),
            404,
            "unknown model `nope`",
        ),
        (
            get(addr, "/v2/models/digits/infer"),
            405,
            "Method Not Allowed",
        ),
        (get(addr, "/nothing/here"), 404, "no such endpoint"),
    ];
    for (reply, status, needle) in cases {
        assert_eq!(reply.status, status, "{}", reply.text());
        let message = reply.error();
        assert!(
            message.contains(needle),
            "expected `{needle}` in `{message}`"
        );
    }
    server.stop();
}
