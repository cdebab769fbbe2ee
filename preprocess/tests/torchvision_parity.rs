//! The eval preprocessing against PIL + torchvision 0.26 (`torchvision_eval.py` through
//! `$LKD_PYTHON`) on the fixtures in `fixtures/` (made by `fixtures/make_images.py`).
//! PNGs must give identical tensors; JPEGs are decoded by different libraries (zune-jpeg vs
//! libjpeg-turbo), so they are compared with a bound on the decoders' rounding difference.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use lkd_models::preprocess::{Interpolation, Preprocess};
use lkd_preprocess::{decode, eval_into, tensor_len, Limits};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// torchvision's tensors for every (case, file), concatenated, from one Python process.
fn reference(cases: &[Preprocess], files: &[&str]) -> Vec<f32> {
    let python = std::env::var("LKD_PYTHON").expect(
        "LKD_PYTHON is not set: run the tests through `make test`, which bootstraps the venv",
    );
    let out = tempfile_path();
    let paths: Vec<String> = files
        .iter()
        .map(|f| format!("{:?}", fixtures().join(f).display().to_string()))
        .collect();
    let json_floats = |v: &[f32]| {
        v.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    let spec: Vec<String> = cases
        .iter()
        .map(|p| {
            format!(
                r#"{{"size":{},"crop_pct":{},"interpolation":"{}","channels":{},"mean":[{}],"std":[{}],"files":[{}]}}"#,
                p.input_size[0],
                p.crop_pct,
                p.interpolation.as_str(),
                p.channels,
                json_floats(&p.mean),
                json_floats(&p.std),
                paths.join(",")
            )
        })
        .collect();
    let mut child = Command::new(python)
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/torchvision_eval.py"))
        .arg(&out)
        .stdin(Stdio::piped())
        .spawn()
        .expect("run $LKD_PYTHON");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("[{}]", spec.join(",")).as_bytes())
        .unwrap();
    assert!(
        child.wait().unwrap().success(),
        "torchvision_eval.py failed"
    );
    let bytes = std::fs::read(&out).unwrap();
    std::fs::remove_file(&out).ok();
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn tempfile_path() -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    std::env::temp_dir().join(format!(
        "lkd-tv-{}-{}.f32",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ))
}

fn ours(p: &Preprocess, files: &[&str]) -> Vec<f32> {
    let len = tensor_len(p);
    let mut out = vec![0f32; len * files.len()];
    for (f, dst) in files.iter().zip(out.chunks_mut(len)) {
        let bytes = std::fs::read(fixtures().join(f)).unwrap();
        eval_into(decode(&bytes, &Limits::default()).unwrap(), p, dst).unwrap();
    }
    out
}

const PNGS: [&str; 6] = [
    "grey_29x31.png",
    "rgb_31x29.png",
    "rgba_40x23.png",
    "la_17x45.png",
    "palette_30x30.png",
    "rgb_241x161.png",
];

fn cases() -> Vec<Preprocess> {
    let mut v = Vec::new();
    for interpolation in [
        Interpolation::Bilinear,
        Interpolation::Bicubic,
        Interpolation::Nearest,
    ] {
        // 28 with crop 1.0: the 29-px side is cropped to 28 (offset round(0.5) = 0).
        v.push(Preprocess {
            interpolation,
            ..Preprocess::fashion_mnist()
        });
        v.push(Preprocess {
            input_size: [24, 24],
            crop_pct: 0.875,
            interpolation,
            ..Preprocess::imagenet(24)
        });
        v.push(Preprocess {
            input_size: [64, 64],
            crop_pct: 0.9,
            interpolation,
            ..Preprocess::imagenet(64)
        });
    }
    v
}

/// Ours and torchvision's tensors for every case over `files`, one chunk per (case, file).
fn both<'a>(files: &[&'a str]) -> Vec<(Preprocess, &'a str, Vec<f32>, Vec<f32>)> {
    let cases = cases();
    let theirs = reference(&cases, files);
    let mut at = 0;
    let mut out = Vec::new();
    for p in cases {
        let len = tensor_len(&p);
        for (f, mine) in files.iter().zip(ours(&p, files).chunks(len)) {
            out.push((p.clone(), *f, mine.to_vec(), theirs[at..at + len].to_vec()));
            at += len;
        }
    }
    assert_eq!(
        at,
        theirs.len(),
        "torchvision wrote a different number of values"
    );
    out
}

/// One Python process for all cases (importing torch takes seconds).
#[test]
fn tensors_equal_torchvision_png_exactly_jpeg_within_decoder_rounding() {
    let jpegs = [
        "rgb_64x48.jpg",
        "rgb_64x48_progressive.jpg",
        "grey_50x37.jpg",
    ];
    let files: Vec<&str> = PNGS.iter().chain(&jpegs).copied().collect();
    let mut failures = Vec::new();
    let mut worst_jpeg = 0f32;
    for (p, file, a, b) in both(&files) {
        if file.ends_with(".png") {
            let bad = a.iter().zip(&b).filter(|(x, y)| x != y).count();
            if bad > 0 {
                failures.push(format!(
                    "{file} {:?} size {}: {bad} of {} values differ",
                    p.interpolation,
                    p.input_size[0],
                    a.len()
                ));
            }
        } else {
            // Two IDCT/upsampling implementations: a few grey levels apart at most.
            let std = p.std.iter().cloned().fold(f32::INFINITY, f32::min);
            let levels = a
                .iter()
                .zip(&b)
                .map(|(x, y)| (x - y).abs() * std * 255.0)
                .fold(0.0, f32::max);
            worst_jpeg = worst_jpeg.max(levels);
            if levels > 4.01 {
                failures.push(format!(
                    "{file} {p:?}: max |ours - torchvision| = {levels} grey levels"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    eprintln!("JPEG: max difference to torchvision {worst_jpeg:.2} grey levels");
}
