//! One function per fuzz target, shared by the libFuzzer binaries (`fuzz_targets/`) and the
//! corpus replay test (`tests/replay.rs`). Each must return for every input, never panic;
//! where a parse succeeds, the result is checked for the invariants callers rely on.

use std::collections::BTreeMap;

use lkd_models::checkpoint::{read_pth_bytes, read_safetensors_bytes, StateDict};
use lkd_models::preprocess::{Interpolation, Preprocess};
use lkd_models::HostData;
use lkd_preprocess::{eval_bytes_into, eval_into, tensor_len, Limits, Pixels};

fn check_state_dict(sd: &StateDict) {
    for (name, t) in sd {
        let numel: usize = t.shape.iter().product();
        let len = match &t.data {
            HostData::F32(v) => v.len(),
            HostData::I64(v) => v.len(),
        };
        assert_eq!(
            numel, len,
            "tensor `{name}`: shape {:?} but {len} values",
            t.shape
        );
    }
}

/// `torch.save` zip archive → state dict (`read_pth` on a file).
pub fn pth(data: &[u8]) {
    if let Ok(sd) = read_pth_bytes(data) {
        check_state_dict(&sd);
    }
}

/// safetensors bytes → state dict (checkpoints, run dirs, teacher caches).
pub fn safetensors(data: &[u8]) {
    if let Ok(sd) = read_safetensors_bytes(data) {
        check_state_dict(&sd);
    }
}

/// ONNX bytes → protobuf parse, float-classifier checks, lkd metadata (`metadata_props` →
/// `Preprocess`), quantizable layers: what `lkd quantize` reads before ONNX Runtime sees the file.
pub fn onnx_metadata(data: &[u8]) {
    let _ = lkd_exporter::quantize::prepare(data, true);
}

/// ONNX bytes → the runtime's own protobuf walker over `metadata_props`
/// (`lkd_openvino::onnx_metadata_from_bytes`), which reads every model file `lkd-run` loads with
/// OpenVINO, checked against the protobuf library (`lkd_exporter::proto`):
/// - where both read the bytes, they agree entry for entry;
/// - the library's own encoding of whatever it read (well-formed by construction) is read by the
///   walker to the same entries, unless a key is repeated or missing (the walker's stated
///   refusals).
///
/// The library's reading of arbitrary bytes is not the reference for refusals: rust-protobuf
/// 3.4 alone accepts a nested message cut short by the end of the input (corpus file
/// `found-truncated-entry`, `72 6c`: "field 14, 108 bytes", then nothing), which the walker and
/// protobuf's C++ and Python parsers refuse as truncated; `proto::decode` now checks the
/// top-level lengths first and refuses it too.
pub fn openvino_metadata(data: &[u8]) {
    let walked = lkd_openvino::onnx_metadata_from_bytes(data);
    let Ok(model) = lkd_exporter::proto::decode(data) else {
        return;
    };
    let mut parsed = BTreeMap::new();
    let mut repeated = false;
    for e in &model.metadata_props {
        repeated |= parsed.insert(e.key.clone(), e.value.clone()).is_some();
    }
    if let Ok(walked) = walked {
        assert!(!repeated, "the walker accepted a repeated key");
        assert_eq!(walked, parsed, "the walker and protobuf disagree");
    }
    let Ok(canonical) = lkd_exporter::proto::encode(&model) else {
        return;
    };
    match lkd_openvino::onnx_metadata_from_bytes(&canonical) {
        Ok(walked) => {
            assert!(!repeated, "the walker accepted a repeated key");
            assert_eq!(walked, parsed, "the walker misread protobuf's own encoding");
        }
        Err(e) => {
            let e = e.to_string();
            // proto3 writes no empty key, so an entry with key "" has none when read back.
            let stated = (repeated && e.ends_with("appears twice"))
                || (parsed.contains_key("") && e.ends_with("a metadata entry has no key"));
            assert!(stated, "the walker refuses protobuf's own encoding: {e}");
        }
    }
}

/// The first bytes choose a small preprocessing, so fuzzing covers every interpolation,
/// channel count and crop.
fn preprocess_from(b: &[u8]) -> Preprocess {
    let at = |i: usize| b.get(i).copied().unwrap_or(0) as usize;
    let channels = if at(0) & 1 == 0 { 1 } else { 3 };
    let side = 1 + at(1) % 48;
    let interpolation = [
        Interpolation::Nearest,
        Interpolation::Bilinear,
        Interpolation::Bicubic,
    ][at(2) % 3];
    Preprocess {
        input_size: [side, 1 + at(3) % 48],
        channels,
        crop_pct: [1.0, 0.875, 0.9, 0.95, 0.3][at(0) / 2 % 5],
        interpolation,
        mean: vec![0.5; channels],
        std: vec![0.25; channels],
    }
}

fn check_tensor(out: &[f32]) {
    // (v / 255 - 0.5) / 0.25 lies in [-2, 2] for every u8 v.
    assert!(
        out.iter().all(|v| (-2.0..=2.0).contains(v)),
        "normalized values out of range"
    );
}

/// Encoded image bytes → bounded decode → eval tensor (what `predict` and `serve` do per image).
/// Limits are smaller than the defaults so each input stays fast.
pub fn image_decode(data: &[u8]) {
    let (head, bytes) = data.split_at(data.len().min(4));
    let p = preprocess_from(head);
    let limits = Limits {
        max_pixels: 1 << 20,
        max_aspect: 64,
    };
    let mut out = vec![0f32; tensor_len(&p)];
    if eval_bytes_into(bytes, &limits, &p, &mut out).is_ok() {
        check_tensor(&out);
    }
}

/// Arbitrary decoded pixels (any size up to 96², 1 or 3 channels) → eval tensor: the resize and
/// crop arithmetic on every geometry.
pub fn preprocess_pixels(data: &[u8]) {
    let (head, rest) = data.split_at(data.len().min(7));
    let p = preprocess_from(head);
    let at = |i: usize| head.get(i).copied().unwrap_or(0) as usize;
    let (w, h, c) = (at(4) % 97, at(5) % 97, if at(6) & 1 == 0 { 1 } else { 3 });
    let pixels: Vec<u8> = if rest.is_empty() {
        vec![0; w * h * c]
    } else {
        rest.iter().copied().cycle().take(w * h * c).collect()
    };
    let img = Pixels::new(w, h, c, pixels).expect("the buffer matches the dimensions");
    let mut out = vec![0f32; tensor_len(&p)];
    match eval_into(img, &p, &mut out) {
        Ok(()) => check_tensor(&out),
        Err(e) => assert!(
            w == 0 || h == 0,
            "a non-empty {w}×{h}×{c} image was refused: {e}"
        ),
    }
}
