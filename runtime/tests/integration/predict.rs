use image::{DynamicImage, GrayImage, ImageFormat, Luma, Rgb, RgbImage};
use lkd_runtime::{
    preprocess_batch, preprocess_into, resolve_preprocess, Classifier, Model, PreprocessOverrides,
    RuntimeError, SessionConfig,
};
use lkd_util::Device;

use crate::common::*;

fn cpu() -> SessionConfig {
    SessionConfig {
        intra_threads: Some(1),
        ..SessionConfig::default()
    }
}

#[test]
fn ort_matches_numpy_reference() {
    for (name, shape) in [("gray28", [3, 1, 28, 28]), ("rgb32", [3, 3, 32, 32])] {
        let dir = fixtures();
        let x = read_f32(&dir.join(format!("{name}_in.bin")));
        let want = read_f32(&dir.join(format!("{name}_out.bin")));
        let mut m = Model::load(model(name), &cpu()).unwrap();
        let got = m.run(&x, shape).unwrap();
        assert_eq!((got.batch, got.classes), (3, want.len() / 3));
        let d = max_abs_diff(&got.data, &want);
        assert!(d <= 1e-4, "{name}: ORT vs NumPy max abs diff {d}");
        assert_eq!(m.info().provider, "CPUExecutionProvider");
    }
}

#[test]
fn preprocessed_photos_match_numpy_reference() {
    for (name, format) in [("rgb32", ImageFormat::Jpeg), ("gray28", ImageFormat::Png)] {
        let mut c = Classifier::load(model(name), &cpu(), &PreprocessOverrides::default()).unwrap();
        let images: Vec<(String, Vec<u8>)> = (0..3)
            .map(|i| {
                (
                    format!("p{i}"),
                    encode(&photo(120 + 40 * i, 90 + 13 * i, i), format),
                )
            })
            .collect();
        let batch = preprocess_batch(&images, &c.preprocess).unwrap();
        let got = c.model.run(&batch.data, batch.shape).unwrap();
        let want = numpy_reference(name, &batch.data, batch.shape);
        let d = max_abs_diff(&got.data, &want);
        assert!(
            d <= 1e-4,
            "{name}: ORT vs NumPy on preprocessed photos, max abs diff {d}"
        );
    }
}

#[test]
fn crop_without_resize_is_exact() {
    // rgb32: crop_pct 0.875 → shorter side 36; a 48×36 image is only cropped (left 8, top 2).
    let m = Model::load(model("rgb32"), &cpu()).unwrap();
    let p = resolve_preprocess(m.info(), &PreprocessOverrides::default()).unwrap();
    assert_eq!(p.resize_size(), 36);
    let img = photo(48, 36, 1);
    let mut out = vec![0f32; 3 * 32 * 32];
    preprocess_into(&img, &p, &mut out).unwrap();
    let rgb = img.to_rgb8();
    for c in 0..3 {
        for y in 0..32 {
            for x in 0..32 {
                let v = rgb.get_pixel(x as u32 + 8, y as u32 + 2)[c] as f32 / 255.0;
                let want = (v - p.mean[c]) / p.std[c];
                let got = out[c * 1024 + y * 32 + x];
                assert!((got - want).abs() < 1e-5, "c{c} y{y} x{x}: {got} vs {want}");
            }
        }
    }

    // gray28: 1 channel, crop_pct 1; an RGB 40×28 image becomes PIL's `convert("L")` luma
    // (BT.601 in 16-bit fixed point, rounded to u8), cropped at left 6.
    let m = Model::load(model("gray28"), &cpu()).unwrap();
    let p = resolve_preprocess(m.info(), &PreprocessOverrides::default()).unwrap();
    let img = photo(40, 28, 2);
    let mut out = vec![0f32; 28 * 28];
    preprocess_into(&img, &p, &mut out).unwrap();
    let rgb = img.to_rgb8();
    for y in 0..28 {
        for x in 0..28 {
            let px = rgb.get_pixel(x as u32 + 6, y as u32);
            let l = ((px[0] as u32 * 19595 + px[1] as u32 * 38470 + px[2] as u32 * 7471 + 0x8000)
                >> 16) as f32
                / 255.0;
            let want = (l - p.mean[0]) / p.std[0];
            assert!((out[y * 28 + x] - want).abs() < 1e-5);
        }
    }
}

#[test]
fn resized_constant_image_normalizes_per_channel() {
    let m = Model::load(model("rgb32"), &cpu()).unwrap();
    let p = resolve_preprocess(m.info(), &PreprocessOverrides::default()).unwrap();
    let colour = [200u8, 30, 90];
    let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(301, 177, Rgb(colour)));
    let images = vec![("flat.png".to_string(), encode(&img, ImageFormat::Png))];
    let batch = preprocess_batch(&images, &p).unwrap();
    assert_eq!(batch.shape, [1, 3, 32, 32]);
    for (c, &value) in colour.iter().enumerate() {
        let want = (value as f32 / 255.0 - p.mean[c]) / p.std[c];
        for v in &batch.data[c * 1024..(c + 1) * 1024] {
            assert!((v - want).abs() < 1e-5, "channel {c}: {v} vs {want}");
        }
    }
    // A grey source image into a 1-channel model keeps its value exactly.
    let m = Model::load(model("gray28"), &cpu()).unwrap();
    let p = resolve_preprocess(m.info(), &PreprocessOverrides::default()).unwrap();
    let img = DynamicImage::ImageLuma8(GrayImage::from_pixel(90, 64, Luma([77])));
    let mut out = vec![0f32; 28 * 28];
    preprocess_into(&img, &p, &mut out).unwrap();
    let want = (77.0 / 255.0 - p.mean[0]) / p.std[0];
    assert!(out.iter().all(|v| (v - want).abs() < 1e-5));
}

#[test]
fn predict_returns_labels_from_metadata() {
    let mut c = Classifier::load(model("rgb32"), &cpu(), &PreprocessOverrides::default()).unwrap();
    let animals = ["cat", "dog", "eagle", "kite", "horse"];
    let images: Vec<(String, Vec<u8>)> = (0..4)
        .map(|i| {
            (
                format!("{i}.jpg"),
                encode(&photo(64 + 9 * i, 80, i), ImageFormat::Jpeg),
            )
        })
        .collect();
    let out = c.classify(&images, 3).unwrap();
    assert_eq!(out.len(), 4);
    for preds in &out {
        assert_eq!(preds.len(), 3);
        for w in preds.windows(2) {
            assert!(w[0].prob >= w[1].prob);
        }
        for p in preds {
            assert_eq!(p.label, animals[p.index]);
        }
    }
    let all = c.classify(&images[..1], 10).unwrap();
    assert_eq!(all[0].len(), 5, "top-k is capped by the number of classes");
    let total: f32 = all[0].iter().map(|p| p.prob).sum();
    assert!((total - 1.0).abs() < 1e-5);

    // The same graph without metadata, preprocessing given as flags: labels fall back to "class N"
    // and, with the same values, the predictions agree.
    let m = Model::load(model("rgb32"), &cpu()).unwrap();
    let flags = PreprocessOverrides {
        mean: Some(vec![0.4, 0.5, 0.6]),
        std: Some(vec![0.2, 0.25, 0.3]),
        crop_pct: Some(0.875),
        interpolation: Some(lkd_runtime::Interpolation::Bicubic),
        ..Default::default()
    };
    assert_eq!(
        resolve_preprocess(m.info(), &PreprocessOverrides::default()).unwrap(),
        {
            let mut n = Classifier::load(model("nometa"), &cpu(), &flags).unwrap();
            let preds = n.classify(&images, 3).unwrap();
            for (a, b) in preds.iter().zip(&out) {
                assert_eq!(a[0].label, format!("class {}", b[0].index));
                assert!((a[0].prob - b[0].prob).abs() < 1e-5);
            }
            n.preprocess
        }
    );
}

#[test]
fn fixed_batch_model_is_padded() {
    let images: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| {
            (
                format!("{i}.png"),
                encode(&photo(50, 40 + i, i), ImageFormat::Png),
            )
        })
        .collect();
    let mut dynamic =
        Classifier::load(model("rgb32"), &cpu(), &PreprocessOverrides::default()).unwrap();
    let mut fixed =
        Classifier::load(model("fixed1"), &cpu(), &PreprocessOverrides::default()).unwrap();
    assert_eq!(fixed.info().fixed_batch(), Some(1));
    let (a, b) = (
        dynamic.classify(&images, 2).unwrap(),
        fixed.classify(&images, 2).unwrap(),
    );
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x[0].index, y[0].index);
        assert!((x[0].prob - y[0].prob).abs() < 1e-5);
    }
}

#[test]
fn malformed_models_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(model("rgb32")).unwrap();
    let truncated = dir.path().join("truncated.onnx");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let garbage = dir.path().join("garbage.onnx");
    std::fs::write(&garbage, b"this is not a protobuf at all \xff\xfe").unwrap();
    for p in [&truncated, &garbage] {
        let e = Model::load(p, &cpu()).unwrap_err();
        assert!(matches!(e, RuntimeError::BadModel { .. }), "{e}");
        assert!(e.to_string().contains("re-export"), "{e}");
    }
    let e = Model::load(dir.path().join("missing.onnx"), &cpu()).unwrap_err();
    assert!(matches!(e, RuntimeError::Io { .. }), "{e}");
}

#[test]
fn wrong_inputs_are_errors_before_running() {
    let mut m = Model::load(model("rgb32"), &cpu()).unwrap();
    let x = vec![0f32; 3 * 28 * 28];
    let e = m.run(&x, [1, 3, 28, 28]).unwrap_err();
    assert!(matches!(e, RuntimeError::Input { .. }), "{e}");
    assert!(e.to_string().contains("[?, 3, 32, 32]"), "{e}");
    let e = m.run(&x[..10], [1, 3, 32, 32]).unwrap_err();
    assert!(matches!(e, RuntimeError::Input { .. }), "{e}");

    let mut fixed = Model::load(model("fixed1"), &cpu()).unwrap();
    let e = fixed
        .run(&vec![0f32; 2 * 3 * 32 * 32], [2, 3, 32, 32])
        .unwrap_err();
    assert!(e.to_string().contains("fixed batch of 1"), "{e}");

    let e = Model::load(model("f64"), &cpu()).unwrap_err();
    assert!(matches!(e, RuntimeError::Input { .. }), "{e}");
    assert!(e.to_string().contains("float32"), "{e}");

    // Flags that contradict the graph are refused too.
    let m = Model::load(model("rgb32"), &cpu()).unwrap();
    let flags = PreprocessOverrides {
        input_size: Some([28, 28]),
        ..Default::default()
    };
    assert!(matches!(
        resolve_preprocess(m.info(), &flags),
        Err(RuntimeError::Input { .. })
    ));
}

#[test]
fn undecodable_image_is_an_error() {
    let mut c = Classifier::load(model("rgb32"), &cpu(), &PreprocessOverrides::default()).unwrap();
    let good = encode(&photo(40, 40, 0), ImageFormat::Png);
    let mut truncated_png = good.clone();
    truncated_png.truncate(good.len() / 3);
    for bad in [b"definitely not an image".to_vec(), truncated_png] {
        let images = vec![
            ("ok.png".to_string(), good.clone()),
            ("bad.png".to_string(), bad),
        ];
        let e = c.classify(&images, 1).unwrap_err();
        assert!(matches!(e, RuntimeError::Image { .. }), "{e}");
        assert!(e.to_string().contains("bad.png"), "{e}");
    }
}

#[test]
fn missing_metadata_without_flags_is_an_error() {
    let e = Classifier::load(model("nometa"), &cpu(), &PreprocessOverrides::default()).unwrap_err();
    assert!(matches!(e, RuntimeError::NoPreprocess { .. }), "{e}");
    // The hint first, then the typed reason as its source, each printed once.
    assert_eq!(
        lkd_runtime::error_chain(&e),
        "nometa has no usable preprocessing metadata. Pass the preprocessing explicitly: --mean \
         and --std (one value per channel), plus --input-size and --channels when the model's \
         input shape is dynamic: metadata key `lkd.input_size` is missing"
    );
    // Mean without std is still not enough.
    let flags = PreprocessOverrides {
        mean: Some(vec![0.5; 3]),
        ..Default::default()
    };
    assert!(Classifier::load(model("nometa"), &cpu(), &flags).is_err());
}

#[test]
fn devices_parse_and_cuda_never_falls_back() {
    assert_eq!("cpu".parse::<Device>().unwrap(), Device::Cpu);
    assert_eq!("cuda".parse::<Device>().unwrap(), Device::Cuda(0));
    assert_eq!("cuda:1".parse::<Device>().unwrap(), Device::Cuda(1));
    assert!("tpu".parse::<Device>().is_err());
    assert!("cuda:x".parse::<Device>().is_err());
    // The CPU-only ONNX Runtime (or a build without the feature) cannot give CUDA: that must be an
    // error, not a CPU session.
    let cfg = SessionConfig {
        device: Device::Cuda(0),
        ..cpu()
    };
    match Model::load(model("rgb32"), &cfg) {
        Err(e) => assert!(
            matches!(e, RuntimeError::Ort(lkd_runtime::OrtError::Provider { .. })),
            "{e}"
        ),
        Ok(m) => assert_eq!(m.info().provider, "CUDAExecutionProvider"),
    }
}

#[test]
fn nan_logits_are_an_error_not_a_null_probability() {
    let img = vec![(
        "a.png".to_string(),
        encode(&photo(28, 28, 0), ImageFormat::Png),
    )];
    let mut c = Classifier::load(model("nan"), &cpu(), &PreprocessOverrides::default()).unwrap();
    let e = c.classify(&img, 3).unwrap_err();
    assert_eq!(
        e.to_string(),
        "model `nan` produced a non-finite logit (NaN for image 0, class 3), so no prediction is \
         reported. Its weights or this input are broken (e.g. a model trained into NaN); check \
         the model with `lkd eval` before exporting it"
    );

    // The binary: exit status 1, the error on stderr, nothing on stdout.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.png");
    std::fs::write(&path, &img[0].1).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lkd-run"))
        .args(["predict", "--json"])
        .arg(model("nan"))
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).lines().next().unwrap(),
        format!("error: {e}")
    );
}

#[test]
fn a_label_list_not_matching_the_classes_is_an_error() {
    let img = vec![(
        "a.png".to_string(),
        encode(&photo(28, 28, 0), ImageFormat::Png),
    )];
    for (name, labels) in [("labels9", 9), ("labels11", 11)] {
        let mut c = Classifier::load(model(name), &cpu(), &PreprocessOverrides::default()).unwrap();
        let e = c.classify(&img, 1).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "model `{name}` names {labels} classes in its `lkd.labels` metadata but outputs 10, \
                 so predictions would carry the wrong names. Re-export it with `lkd export` (labels \
                 come from the run's dataset) or fix `lkd.labels` to list exactly 10 names"
            )
        );
    }
    // The server refuses to start with it rather than answering with wrong names.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut cfg = lkd_runtime::ServeConfig::new(model("labels9"));
    cfg.addr = "127.0.0.1:0".into();
    let e = rt
        .block_on(lkd_runtime::bind(cfg))
        .err()
        .unwrap()
        .to_string();
    assert!(e.starts_with("model `labels9` names 9 classes"), "{e}");
}

#[test]
fn error_causes_are_printed_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.png");
    let garbage = dir.path().join("garbage.png");
    std::fs::write(&garbage, b"not an image at all").unwrap();
    let truncated = dir.path().join("truncated.png");
    let png = encode(&photo(64, 64, 2), ImageFormat::Png);
    std::fs::write(&truncated, &png[..png.len() / 2]).unwrap();
    let stderr = |image: &std::path::Path| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_lkd-run"))
            .arg("predict")
            .arg(model("gray28"))
            .arg(image)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1));
        String::from_utf8_lossy(&out.stderr).trim_end().to_string()
    };
    assert_eq!(
        stderr(&missing),
        format!(
            "error: cannot read image `{}`: No such file or directory (os error 2)",
            missing.display()
        )
    );
    assert_eq!(
        stderr(&garbage),
        format!(
            "error: cannot decode image `{}`: unrecognised image format: expected a JPEG, PNG, \
             WebP, BMP or GIF file",
            garbage.display()
        )
    );
    // The decoder's own message comes once, after ours.
    let line = stderr(&truncated);
    let prefix = format!(
        "error: cannot decode image `{}`: corrupt image data: ",
        truncated.display()
    );
    let cause = line
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{line}"));
    assert!(
        !cause.is_empty() && !cause.contains(": corrupt image data"),
        "{line}"
    );
    let parts: Vec<&str> = line.split(": ").collect();
    let mut unique = parts.clone();
    unique.dedup();
    assert_eq!(parts, unique, "a cause is repeated: {line}");
}

/// A model stamped with a newer IR version than ONNX Runtime reads: ORT's own words (found and
/// maximum) and what to do, not "truncated".
#[test]
fn a_newer_ir_version_says_what_ort_reads_and_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = std::fs::read(model("rgb32")).unwrap();
    // ModelProto field 1 (ir_version, a varint) is serialized first: 0x08, then 8.
    assert_eq!(bytes[..2], [0x08, 8]);
    bytes[1] = 14;
    let newer = dir.path().join("ir14.onnx");
    std::fs::write(&newer, &bytes).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_lkd-run"))
        .arg("predict")
        .arg(&newer)
        .arg(dir.path().join("unused.png"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim_end(),
        format!(
            "error: `{}` has ONNX IR version 14, newer than this ONNX Runtime reads (IR version 13 \
             at most; it said: \"Unsupported model IR version: 14, max supported IR version: 13\"). \
             Re-export the model with IR version 13 or lower (`lkd export` writes 8; for \
             torch.onnx.export, an onnx package whose IR version is at most 13), or point \
             ORT_DYLIB_PATH at a newer ONNX Runtime",
            newer.display()
        )
    );
    let e = Model::load(&newer, &cpu()).unwrap_err();
    assert!(matches!(e, RuntimeError::ModelTooNew { .. }), "{e}");
}
