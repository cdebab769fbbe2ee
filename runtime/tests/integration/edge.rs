//! `lkd-run` as it goes to a device: its shared-library dependencies, and the `make edge` bundle
//! (assembled by the same script) running from another directory with no environment at all.

use std::path::{Path, PathBuf};
use std::process::Command;

use image::ImageFormat;
use lkd_runtime::{Classifier, PreprocessOverrides, SessionConfig};

use crate::common::*;

fn lkd_run() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_lkd-run"))
}

fn bundle_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/edge_bundle.sh")
}

/// The ELF's DT_NEEDED entries, read with binutils' `readelf`.
fn needed(binary: &Path) -> Vec<String> {
    let out = Command::new("readelf")
        .arg("-d")
        .arg(binary)
        .output()
        .expect("readelf (binutils) must be installed");
    assert!(
        out.status.success(),
        "readelf failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| {
            l.split_once('[')
                .and_then(|(_, r)| r.split_once(']'))
                .map(|(n, _)| n.to_string())
        })
        .collect()
}

#[test]
fn lkd_run_needs_only_libc_and_onnxruntime() {
    let libs = needed(&lkd_run());
    assert!(
        libs.iter().any(|l| l.starts_with("libc.so")),
        "no libc in {libs:?}: not a dynamic glibc binary?"
    );
    // glibc's own pieces and the compiler's unwinder, which every Rust binary on glibc links.
    let allowed = [
        "libc.so.",
        "libm.so.",
        "libgcc_s.so.",
        "ld-linux",
        "libpthread.so.",
        "libdl.so.",
        "librt.so.",
        "libonnxruntime.so",
    ];
    let foreign: Vec<&String> = libs
        .iter()
        .filter(|l| !allowed.iter().any(|a| l.starts_with(a)))
        .collect();
    assert!(
        foreign.is_empty(),
        "lkd-run must not link {foreign:?} (all NEEDED: {libs:?})"
    );
    for l in &libs {
        let lower = l.to_ascii_lowercase();
        assert!(
            !["torch", "c10", "cuda", "cudnn", "cublas", "nvrtc"]
                .iter()
                .any(|w| lower.contains(w)),
            "{l}"
        );
    }
}

fn probabilities(json: &serde_json::Value) -> Vec<(usize, f64)> {
    json["results"][0]["predictions"]
        .as_array()
        .expect("predictions")
        .iter()
        .map(|p| {
            (
                p["index"].as_u64().unwrap() as usize,
                p["prob"].as_f64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn edge_bundle_runs_anywhere_with_no_environment_and_matches_the_library() {
    let ort = std::env::var("ORT_DYLIB_PATH").expect("ORT_DYLIB_PATH");
    let tmp = tempfile::tempdir().unwrap();
    let bundle = tmp.path().join("lkd-edge");
    let out = Command::new("bash")
        .arg(bundle_script())
        .arg(lkd_run())
        .arg(&ort)
        .arg(&bundle)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "edge_bundle.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for f in [
        "lkd-run",
        "LICENSE",
        "onnxruntime-LICENSE",
        "onnxruntime-ThirdPartyNotices.txt",
        "README",
        "device-check.sh",
    ] {
        assert!(bundle.join(f).is_file(), "bundle lacks {f}");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(bundle.join("device-check.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o111, 0o111, "device-check.sh must be executable");
    // The archive holds the folder under its own name.
    let tar = Command::new("tar")
        .arg("-tzf")
        .arg(tmp.path().join("lkd-edge.tar.gz"))
        .output()
        .unwrap();
    assert!(
        tar.status.success(),
        "{}",
        String::from_utf8_lossy(&tar.stderr)
    );
    let listed = String::from_utf8_lossy(&tar.stdout);
    for f in [
        "lkd-edge/lkd-run",
        "lkd-edge/device-check.sh",
        "lkd-edge/README",
    ] {
        assert!(
            listed.lines().any(|l| l == f),
            "{f} not in the archive:\n{listed}"
        );
    }
    assert_eq!(
        std::fs::read_to_string(bundle.join("README"))
            .unwrap()
            .lines()
            .count(),
        3
    );
    assert!(
        !tmp.path().join("lkd-edge.tmp").exists()
            && !tmp.path().join("lkd-edge.tar.gz.tmp").exists(),
        "the staging folder and archive must be renamed away"
    );

    // Model and image in another directory, run from there with an empty environment.
    let work = tmp.path().join("work");
    std::fs::create_dir(&work).unwrap();
    std::fs::copy(model("rgb32"), work.join("m.onnx")).unwrap();
    std::fs::write(
        work.join("p.png"),
        encode(&photo(77, 51, 3), ImageFormat::Png),
    )
    .unwrap();
    let run = Command::new("env")
        .arg("-i")
        .arg(bundle.join("lkd-run"))
        .args([
            "predict",
            "m.onnx",
            "p.png",
            "--json",
            "--top-k",
            "1000",
            "--threads",
            "1",
        ])
        .current_dir(&work)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "bundle under env -i failed: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let got: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    let got = probabilities(&got);

    let mut clf = Classifier::load(
        work.join("m.onnx"),
        &SessionConfig::cpu(Some(1)),
        &PreprocessOverrides::default(),
    )
    .unwrap();
    let want = clf
        .classify(
            &[(
                "p.png".to_string(),
                std::fs::read(work.join("p.png")).unwrap(),
            )],
            1000,
        )
        .unwrap();
    assert_eq!(got.len(), want[0].len());
    assert_eq!(got.len(), clf.info().labels.len(), "every class compared");
    for ((gi, gp), w) in got.iter().zip(&want[0]) {
        assert_eq!(*gi, w.index);
        assert!(
            (gp - w.prob as f64).abs() <= 1e-6,
            "class {gi}: bundle {gp} vs library {}",
            w.prob
        );
    }

    // The same binary without the library beside it says what is missing instead of guessing.
    let alone = tmp.path().join("alone");
    std::fs::create_dir(&alone).unwrap();
    std::fs::copy(bundle.join("lkd-run"), alone.join("lkd-run")).unwrap();
    let run = Command::new("env")
        .arg("-i")
        .arg(alone.join("lkd-run"))
        .args(["info", "m.onnx"])
        .current_dir(&work)
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(1));
    let err = String::from_utf8_lossy(&run.stderr);
    assert!(
        err.contains(&format!(
            "ORT_DYLIB_PATH is not set and `{}` holds no libonnxruntime.so*",
            alone.display()
        )),
        "{err}"
    );
}

#[test]
fn info_prints_preprocessing_labels_and_provenance() {
    let out = Command::new(lkd_run())
        .args(["info", "--json"])
        .arg(model("rgb32"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["input"]["shape"], serde_json::json!([-1, 3, 32, 32]));
    assert_eq!(v["preprocess"]["input_size"], serde_json::json!([32, 32]));
    assert_eq!(v["preprocess"]["channels"], 3);
    assert_eq!(v["provenance"]["lkd.preset"], "test");
    assert!(
        v["provenance"].get("lkd.mean").is_none(),
        "preprocessing keys are not provenance"
    );
    assert!(!v["labels"].as_array().unwrap().is_empty());

    let out = Command::new(lkd_run())
        .arg("info")
        .arg(model("nometa"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    // The reason is part of the line, not only the hint.
    assert!(
        text.contains("preprocess  none: nometa has no usable preprocessing metadata")
            && text.contains("input shape is dynamic: metadata key `lkd.input_size` is missing"),
        "{text}"
    );
    assert!(text.contains("labels      none"), "{text}");
}

#[test]
fn bench_refuses_spinning_ab() {
    let out = Command::new(lkd_run())
        .arg("bench")
        .arg(model("gray28"))
        .arg("--vs")
        .arg(model("gray28"))
        .args(["--spin", "on"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--spin on cannot be used with --vs"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
