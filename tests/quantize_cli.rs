//! `lkd quantize` end to end on a Fashion-MNIST nano model trained here: accuracy within the
//! budget, ORT runs it, onnx.checker passes, corrupt calibration files are skipped and counted,
//! and re-quantizing is refused, through the library functions the binary calls and through the
//! binary itself.

use lkd::quantize_cmd;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use clap::Parser;
use quantize_cmd::QuantizeArgs;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: QuantizeArgs,
}

fn args(list: &[&str]) -> QuantizeArgs {
    Cli::try_parse_from(std::iter::once("quantize").chain(list.iter().copied()))
        .expect("flags parse")
        .args
}

fn fashion() -> String {
    std::env::var("LKD_FASHION_MNIST")
        .expect("LKD_FASHION_MNIST must point at the Fashion-MNIST folder (see env.mk)")
}

/// A nano student trained for one short epoch and exported, shared by the tests.
fn model() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("lkd-quant")
            .tempdir()
            .unwrap()
            .keep();
        let lkd = env!("CARGO_BIN_EXE_lkd");
        let run = dir.join("run");
        let st = Command::new(lkd)
            .args(["train", "--out"])
            .arg(&run)
            .args(["--limit", "3000", "--epochs", "1"])
            .status()
            .unwrap();
        assert!(st.success(), "lkd train failed");
        let st = Command::new(lkd)
            .arg("export")
            .arg(&run)
            .arg("--out")
            .arg(dir.join("m.onnx"))
            .status()
            .unwrap();
        assert!(st.success(), "lkd export failed");
        dir.join("m.onnx")
    })
}

fn checker(path: &Path) {
    let py = std::env::var("LKD_PYTHON").expect("LKD_PYTHON must point at the venv python");
    let code =
        "import onnx,sys; m=onnx.load(sys.argv[1]); onnx.checker.check_model(m, full_check=True); \
                print(sum(n.op_type=='QuantizeLinear' for n in m.graph.node))";
    let out = Command::new(py)
        .args(["-c", code])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "onnx.checker: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let q: usize = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(q > 0, "no QuantizeLinear nodes");
}

#[test]
fn nano_within_budget_checked_and_runs() {
    let m = model();
    let out = m.with_file_name("m.int8.onnx");
    let o = quantize_cmd::quantize(&args(&[
        m.to_str().unwrap(),
        "--calib",
        &fashion(),
        "--calib-size",
        "128",
        "--eval-size",
        "500",
        "--accuracy-budget",
        "0.5",
        "--bench-iters",
        "10",
        "--out",
        out.to_str().unwrap(),
    ]))
    .unwrap();
    o.print();
    let r = &o.report;
    let (f, q) = (r.float_top1.unwrap(), r.int8_top1.unwrap());
    assert!(f - q <= 0.5, "top-1 float {f} int8 {q}");
    assert_eq!(r.eval_images, 500);
    assert!(r.layers_quantized > 0, "nothing was quantized");
    assert!(r.int8_bytes < r.float_bytes);
    assert!(o.latency.is_some());
    checker(&out);

    // Runs through the runtime, keeps the float metadata and records the settings.
    let model = lkd_runtime::Model::load(&out, &Default::default()).unwrap();
    let meta = &model.info().metadata;
    assert_eq!(meta["lkd.input_size"], "28,28");
    assert!(meta.contains_key("lkd.labels"));
    assert_eq!(meta["lkd.quant.calib_size"], "128");
    assert_eq!(meta["lkd.quant.activation_type"], "uint8");
    assert!(meta["lkd.quant.method"].starts_with("percentile"));
    let floats: Vec<String> = serde_json::from_str(&meta["lkd.quant.float_layers"]).unwrap();
    assert_eq!(floats, r.float_layers);

    // Quantizing the result again is refused.
    let again = quantize_cmd::quantize(&args(&[
        out.to_str().unwrap(),
        "--calib",
        &fashion(),
        "--calib-size",
        "8",
        "--no-bench",
    ]));
    let e = format!("{:#}", again.err().expect("re-quantizing must fail"));
    assert!(e.contains("already quantized"), "{e}");
}

fn write_png(path: &Path, seed: u8) {
    let img = lkd_runtime::image::GrayImage::from_fn(28, 28, |x, y| {
        lkd_runtime::image::Luma([(x as u8 * 9) ^ (y as u8 * 7) ^ seed])
    });
    img.save(path).unwrap();
}

/// `root/train/{a,b}/{0..3}.png`: 8 distinct calibration images.
fn two_classes_of_four_pngs(root: &Path) {
    for (c, class) in ["a", "b"].iter().enumerate() {
        let d = root.join("train").join(class);
        std::fs::create_dir_all(&d).unwrap();
        for i in 0..4 {
            write_png(&d.join(format!("{i}.png")), (c * 16 + i) as u8);
        }
    }
}

#[test]
fn corrupt_calibration_image_is_skipped_and_counted() {
    let m = model();
    let root = tempfile::tempdir().unwrap();
    two_classes_of_four_pngs(root.path());
    std::fs::write(
        root.path().join("train/a/broken.png"),
        b"\x89PNG\r\n\x1a\nnot really",
    )
    .unwrap();
    let out = root.path().join("q.onnx");
    let o = quantize_cmd::quantize(&args(&[
        m.to_str().unwrap(),
        "--calib",
        root.path().to_str().unwrap(),
        "--calib-kind",
        "folder",
        "--calib-size",
        "100",
        "--method",
        "entropy",
        "--activation-type",
        "int8",
        "--no-bench",
        "--out",
        out.to_str().unwrap(),
    ]))
    .unwrap();
    assert_eq!(o.calib_skipped, 1);
    assert_eq!(o.report.calib_images, 8);
    assert!(o.eval_name.is_none(), "the folder has no val split");
    let j = o.to_json();
    assert_eq!(j["calib"]["corrupt_skipped"], 1);
    checker(&out);
}

/// A FIFO and a sparse 2 GiB file named as images in the calibration folder are refused from
/// their metadata (never opened for reading, which would block or read gigabytes), named with
/// the reason and counted; calibration goes on with the real images.
#[test]
fn calibration_skips_fifos_and_oversized_files_without_reading_them() {
    let lkd = env!("CARGO_BIN_EXE_lkd");
    let m = model();
    let root = tempfile::tempdir().unwrap();
    two_classes_of_four_pngs(root.path());
    let class = root.path().join("train/a");
    let fifo = class.join("pipe.png");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let sparse = class.join("huge.jpg");
    let f = std::fs::File::create(&sparse).unwrap();
    std::io::Write::write_all(&mut &f, &[0xFF, 0xD8, 0xFF, 0xE0]).unwrap();
    f.set_len(2 << 30).unwrap();
    let out = root.path().join("q.onnx");
    let start = std::time::Instant::now();
    let res = Command::new(lkd)
        .arg("quantize")
        .arg(m)
        .arg("--calib")
        .arg(root.path())
        .args(["--calib-kind", "folder", "--no-bench", "--json", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let took = start.elapsed();
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(res.status.success(), "{stderr}");
    for line in [
        format!(
            "skipping corrupt image {}: a FIFO (named pipe), not a regular file: give an image file",
            fifo.display()
        ),
        format!(
            "skipping corrupt image {}: the file is 2147483648 bytes; the limit for an image file \
             is 134217728 bytes",
            sparse.display()
        ),
    ] {
        assert!(stderr.lines().any(|l| l == line), "{line:?} not in:\n{stderr}");
    }
    let j: serde_json::Value = serde_json::from_slice(&res.stdout).unwrap();
    assert_eq!(j["calib"]["corrupt_skipped"], 2);
    assert_eq!(j["calib"]["images"], 8);
    // Reading the sparse file whole took 8.6 s in `lkd-run predict`; a blocked FIFO never ends.
    assert!(took < std::time::Duration::from_secs(60), "{took:?}");
    checker(&out);
}

#[test]
fn binary_subcommand_quantizes_with_a_json_report() {
    let lkd = env!("CARGO_BIN_EXE_lkd");
    let m = model();
    let out = m.with_file_name("cli.int8.onnx");
    let res = Command::new(lkd)
        .arg("quantize")
        .arg(m)
        .args([
            "--calib",
            &fashion(),
            "--calib-size",
            "64",
            "--eval-size",
            "200",
            "--bench-iters",
            "5",
            "--json",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&res.stdout).unwrap();
    assert!(j["speedup"].as_f64().unwrap() > 0.0);
    assert!(j["size_ratio"].as_f64().unwrap() < 1.0);
    assert!(out.is_file());
}

/// `LKD_QUANT_MODEL=m.onnx cargo test --test quantize_cli -- --ignored --nocapture`: figures for
/// a better-trained model on the whole Fashion-MNIST test split.
#[test]
#[ignore]
fn measure_model_from_env() {
    let m = std::env::var("LKD_QUANT_MODEL").expect("LKD_QUANT_MODEL=model.onnx");
    let out = std::env::temp_dir().join("lkd-measure.int8.onnx");
    let o = quantize_cmd::quantize(&args(&[
        &m,
        "--calib",
        &fashion(),
        "--eval-size",
        "10000",
        "--bench-iters",
        "200",
        "--out",
        out.to_str().unwrap(),
    ]))
    .unwrap();
    o.print();
}

#[test]
fn quantizing_onto_the_input_is_refused_unless_forced() {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m.onnx");
    let original = b"stands in for a float model: the refusal comes before it is read";
    std::fs::write(&m, original).unwrap();
    std::fs::create_dir(dir.path().join("sub")).unwrap();
    std::os::unix::fs::symlink(&m, dir.path().join("link.onnx")).unwrap();
    std::fs::hard_link(&m, dir.path().join("hard.onnx")).unwrap();
    let m_str = m.to_str().unwrap();
    for out in [
        m.clone(),
        dir.path().join(".").join("m.onnx"),
        dir.path().join("sub/../m.onnx"),
        dir.path().join("link.onnx"),
        dir.path().join("hard.onnx"),
    ] {
        let out_str = out.to_str().unwrap();
        let e = quantize_cmd::quantize(&args(&[m_str, "--calib", "unused", "--out", out_str]))
            .err()
            .unwrap();
        assert_eq!(
            format!("{e:#}"),
            format!(
                "--out `{out_str}` is the input model `{m_str}`: writing there would replace the \
                 float model with its int8 version. Choose another --out (the default is \
                 `{}`), or pass --force to replace it",
                dir.path().join("m.int8.onnx").display()
            )
        );
        assert_eq!(std::fs::read(&m).unwrap(), original);
    }
    // --force lets it through to the next check (this file is no model).
    let e = quantize_cmd::quantize(&args(&[
        m_str, "--calib", "unused", "--out", m_str, "--force",
    ]))
    .err()
    .unwrap();
    assert!(
        format!("{e:#}").starts_with("the file is not a readable ONNX model"),
        "{e:#}"
    );
    assert_eq!(std::fs::read(&m).unwrap(), original);
}

#[test]
fn the_calibration_line_is_printed_once() {
    let lkd = env!("CARGO_BIN_EXE_lkd");
    let m = model();
    let out = m.with_file_name("once.int8.onnx");
    let res = Command::new(lkd)
        .arg("quantize")
        .arg(m)
        .args([
            "--calib",
            &fashion(),
            "--calib-size",
            "32",
            "--eval-size",
            "64",
        ])
        .args(["--no-bench", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&res.stdout),
        String::from_utf8_lossy(&res.stderr)
    );
    let lines: Vec<&str> = all
        .lines()
        .filter(|l| l.starts_with("calibration:"))
        .collect();
    assert_eq!(
        lines,
        ["calibration: 32 images from fashion-mnist/train (--calib-split train, 0 corrupt skipped)"],
        "{all}"
    );
}

#[test]
fn the_calibration_split_is_chosen_recorded_and_reported() {
    let lkd = env!("CARGO_BIN_EXE_lkd");
    let m = model();
    let out = m.with_file_name("val-calib.int8.onnx");
    let res = Command::new(lkd)
        .arg("quantize")
        .arg(m)
        .args([
            "--calib",
            &fashion(),
            "--calib-split",
            "val",
            "--calib-size",
            "32",
            "--eval-size",
            "64",
            "--no-bench",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&res.stdout),
        String::from_utf8_lossy(&res.stderr)
    );
    assert!(res.status.success(), "{all}");
    let lines: Vec<&str> = all
        .lines()
        .filter(|l| l.starts_with("calibration:") || l.starts_with("note:"))
        .collect();
    assert_eq!(
        lines,
        [
            "calibration: 32 images from fashion-mnist/val (--calib-split val, 0 corrupt skipped)",
            "note: top-1 was measured on the split calibration read (--calib-split val): give \
             --eval for held-out figures",
        ],
        "{all}"
    );
    let model = lkd_runtime::Model::load(&out, &Default::default()).unwrap();
    assert_eq!(
        model.info().metadata["lkd.quant.calib_data"],
        "fashion-mnist/val"
    );

    // The default is the train split, in the JSON report and the metadata.
    let o = quantize_cmd::quantize(&args(&[
        m.to_str().unwrap(),
        "--calib",
        &fashion(),
        "--calib-size",
        "16",
        "--eval-size",
        "16",
        "--no-bench",
        "--out",
        out.to_str().unwrap(),
    ]))
    .unwrap();
    assert_eq!(o.to_json()["calib"]["split"], "train");
    let model = lkd_runtime::Model::load(&out, &Default::default()).unwrap();
    assert_eq!(
        model.info().metadata["lkd.quant.calib_data"],
        "fashion-mnist/train"
    );

    // A split the dataset lacks is a clear error naming it.
    let root = tempfile::tempdir().unwrap();
    let d = root.path().join("train/a");
    std::fs::create_dir_all(&d).unwrap();
    write_png(&d.join("0.png"), 1);
    let e = quantize_cmd::quantize(&args(&[
        m.to_str().unwrap(),
        "--calib",
        root.path().to_str().unwrap(),
        "--calib-kind",
        "folder",
        "--calib-split",
        "val",
        "--no-bench",
        "--out",
        root.path().join("q.onnx").to_str().unwrap(),
    ]))
    .err()
    .expect("no val split");
    assert!(
        format!("{e:#}").starts_with(&format!(
            "opening val split of `{}`: ",
            root.path().display()
        )),
        "{e:#}"
    );
    assert!(!root.path().join("q.onnx").exists());
}
