//! Replays the committed corpus (seeds, plus every crash the fuzzers found, minimized) through
//! each target's function: a plain `cargo test`, no nightly needed.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no corpus for {target} in {}",
        dir.display()
    );
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        if std::panic::catch_unwind(|| run(&bytes)).is_err() {
            panic!("{target}: {} panics", f.display());
        }
    }
    eprintln!("{target}: {} inputs replayed", files.len());
}

#[test]
fn pth_corpus() {
    replay("pth", lkd_fuzz::pth);
}

#[test]
fn safetensors_corpus() {
    replay("safetensors", lkd_fuzz::safetensors);
}

#[test]
fn onnx_metadata_corpus() {
    replay("onnx_metadata", lkd_fuzz::onnx_metadata);
}

#[test]
fn openvino_metadata_corpus() {
    replay("openvino_metadata", lkd_fuzz::openvino_metadata);
}

#[test]
fn image_decode_corpus() {
    replay("image_decode", lkd_fuzz::image_decode);
}

#[test]
fn preprocess_pixels_corpus() {
    replay("preprocess_pixels", lkd_fuzz::preprocess_pixels);
}
