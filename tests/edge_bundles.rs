//! The device bundles as `make edge` writes them (dist/lkd-edge/ for x86_64,
//! dist/lkd-edge-aarch64/ for ARM64): their glibc floor, README's figures about them, and the
//! aarch64 `lkd-run` run under qemu-aarch64 (scripts/run_aarch64.sh) on an exported ConvNeXt nano
//! and its INT8 version, compared with the x86_64 path. `make test` builds both bundles first
//! and sets LKD_REQUIRE_EDGE_BUNDLES=1, so there a missing piece fails; a bare `cargo test`
//! without the bundles skips these with the reason. No speed is asserted or quoted from emulation.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use clap::Parser;
use lkd::quantize_cmd::{self, QuantizeArgs};
use lkd_exporter::{export, random_weights, ExportOptions};
use lkd_models::ModelConfig;
use lkd_runtime::{preprocess_batch, Classifier, PreprocessOverrides, SessionConfig};
use serde_json::{json, Value};

/// The ONNX Runtime wheels' floor (manylinux_2_28), which the bundles must not exceed.
const GLIBC_FLOOR: (u32, u32) = (2, 28);
const X86_BUNDLE: &str = "dist/lkd-edge";
const ARM_BUNDLE: &str = "dist/lkd-edge-aarch64";

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn required() -> bool {
    std::env::var("LKD_REQUIRE_EDGE_BUNDLES").is_ok_and(|v| v == "1")
}

/// `None` after printing why, unless this run requires the bundles (then the reason fails it).
fn missing<T>(reason: String) -> Option<T> {
    assert!(
        !required(),
        "{reason} (LKD_REQUIRE_EDGE_BUNDLES=1: make test builds the bundles and must not skip)"
    );
    eprintln!("skipped: {reason}");
    None
}

fn bundle(rel: &str) -> Option<PathBuf> {
    let dir = repo().join(rel);
    if dir.join("lkd-run").is_file() {
        return Some(dir);
    }
    let make = if rel == ARM_BUNDLE {
        "make edge TARGET=aarch64-unknown-linux-gnu"
    } else {
        "make edge"
    };
    missing(format!("{rel}/lkd-run is missing: build it with `{make}`"))
}

fn ort_library(dir: &Path) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("libonnxruntime.so")
        })
        .unwrap_or_else(|| panic!("{} holds no libonnxruntime.so*", dir.display()))
}

fn readelf(args: &[&str], file: &Path) -> String {
    let out = Command::new("readelf")
        .args(args)
        .arg(file)
        .output()
        .expect("readelf (binutils) must be installed");
    assert!(
        out.status.success(),
        "readelf {args:?} {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The GLIBC_x.y versions an ELF file needs, from its version-needs section (.gnu.version_r).
fn glibc_needs(file: &Path) -> Vec<(u32, u32)> {
    let text = readelf(&["-V", "--wide"], file);
    let mut v: Vec<(u32, u32)> = text
        .lines()
        .filter_map(|l| l.split("Name: GLIBC_").nth(1))
        .filter_map(|r| {
            let ver = r.split_whitespace().next()?;
            let mut it = ver.split('.').map(|n| n.parse::<u32>());
            Some((it.next()?.ok()?, it.next().unwrap_or(Ok(0)).ok()?))
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

#[test]
fn both_bundles_need_at_most_glibc_2_28_and_only_libc_beside_onnxruntime() {
    for (rel, machine) in [(X86_BUNDLE, "X86-64"), (ARM_BUNDLE, "AArch64")] {
        let Some(dir) = bundle(rel) else { continue };
        let bin = dir.join("lkd-run");
        let header = readelf(&["-h"], &bin);
        assert!(
            header
                .lines()
                .any(|l| l.trim_start().starts_with("Machine:") && l.contains(machine)),
            "{rel}/lkd-run is not {machine}:\n{header}"
        );
        for file in [bin.clone(), ort_library(&dir)] {
            let needs = glibc_needs(&file);
            let highest = *needs
                .last()
                .unwrap_or_else(|| panic!("{} needs no GLIBC_ version", file.display()));
            eprintln!(
                "{}: highest glibc symbol version GLIBC_{}.{}",
                file.display(),
                highest.0,
                highest.1
            );
            assert!(
                highest <= GLIBC_FLOOR,
                "{} needs GLIBC_{}.{}, above the floor {}.{} (build it with `make edge`, which links \
                 through cargo-zigbuild against glibc 2.28)",
                file.display(),
                highest.0,
                highest.1,
                GLIBC_FLOOR.0,
                GLIBC_FLOOR.1
            );
        }
        // libonnxruntime is opened at run time, never linked; the rest is glibc and the unwinder.
        let dynamic = readelf(&["-d"], &bin);
        for lib in dynamic
            .lines()
            .filter(|l| l.contains("(NEEDED)"))
            .filter_map(|l| l.split('[').nth(1)?.split(']').next())
        {
            assert!(
                [
                    "libc.so.",
                    "libm.so.",
                    "libgcc_s.so.",
                    "ld-linux",
                    "libpthread.so.",
                    "libdl.so.",
                    "librt.so."
                ]
                .iter()
                .any(|a| lib.starts_with(a)),
                "{rel}/lkd-run links {lib}"
            );
        }
        assert!(
            dir.join("device-check.sh").is_file(),
            "{rel} lacks device-check.sh"
        );
        assert!(
            repo().join(format!("{rel}.tar.gz")).is_file(),
            "{rel}.tar.gz is missing"
        );
    }
}

fn file_bytes(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

/// Bytes under `dir` as `du -sb` counts them (files plus the directories themselves).
fn tree_bytes(dir: &Path) -> u64 {
    let mut n = file_bytes(dir);
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        n += if p.is_dir() {
            tree_bytes(&p)
        } else {
            file_bytes(&p)
        };
    }
    n
}

/// README's bundle table: `| \`dist/lkd-edge...\` ... | X MB | Y MB | Z MB |` rows.
fn readme_bundle_rows() -> BTreeMap<String, [f64; 3]> {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let mut rows = BTreeMap::new();
    for line in readme.lines().filter(|l| l.starts_with("| `dist/lkd-edge")) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let name = cells[0].split('`').nth(1).unwrap().trim_end_matches('/');
        let mb: Vec<f64> = cells[1..]
            .iter()
            .filter_map(|c| c.strip_suffix(" MB")?.parse().ok())
            .collect();
        assert_eq!(mb.len(), 3, "README row {line:?}: want three `N MB` cells");
        rows.insert(name.to_string(), [mb[0], mb[1], mb[2]]);
    }
    rows
}

#[test]
fn readme_bundle_figures_are_within_ten_percent_of_the_bundles() {
    let rows = readme_bundle_rows();
    for rel in [X86_BUNDLE, ARM_BUNDLE] {
        let want = rows
            .get(rel)
            .unwrap_or_else(|| panic!("README's bundle table has no row for `{rel}/`"));
        let Some(dir) = bundle(rel) else { continue };
        let got = [
            file_bytes(&dir.join("lkd-run")),
            tree_bytes(&dir),
            file_bytes(&repo().join(format!("{rel}.tar.gz"))),
        ]
        .map(|b| b as f64 / 1e6);
        eprintln!(
            "{rel}: lkd-run {:.2} MB, folder {:.1} MB, .tar.gz {:.1} MB (README: {want:?})",
            got[0], got[1], got[2]
        );
        for (what, (g, w)) in ["lkd-run", "folder", ".tar.gz"]
            .iter()
            .zip(got.iter().zip(want))
        {
            assert!(
                (g - w).abs() <= 0.10 * g,
                "README says {rel} {what} is {w} MB but it is {g:.2} MB (more than 10 % off): \
                 update the README table from `make edge` / `make edge TARGET=aarch64-unknown-linux-gnu`"
            );
        }
    }
}

/// README's ARM table: `| class | \`preset\` [\`{overrides}\`] | params | GMACs | ... |`.
#[test]
fn readme_arm_table_has_the_models_own_params_and_macs() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let section = readme
        .split("\n## ")
        .find(|s| s.starts_with("ARM64 devices"))
        .expect("README has an `## ARM64 devices` section");
    let mut checked = 0;
    for line in section.lines().filter(|l| l.starts_with('|')) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let code: Vec<&str> = cells.get(1).map_or(vec![], |c| {
            c.split('`').skip(1).step_by(2).collect::<Vec<_>>()
        });
        let Some(preset) = code.first() else { continue };
        let mut cfg: Value = match code.get(1) {
            Some(o) => serde_json::from_str(o).unwrap_or_else(|e| panic!("{line}: {e}")),
            None => json!({}),
        };
        cfg["preset"] = json!(preset);
        let graph = serde_json::from_value::<ModelConfig>(cfg)
            .unwrap()
            .build()
            .unwrap_or_else(|e| panic!("{line}: {e}"));
        let params = lkd_models::summary::group_thousands(graph.num_parameters());
        let gmacs = format!("{:.3}", graph.macs().unwrap() as f64 / 1e9);
        assert_eq!(cells[2], params, "params of {line}");
        assert_eq!(cells[3], gmacs, "GMACs of {line}");
        checked += 1;
    }
    assert!(checked >= 6, "only {checked} model rows in the ARM table");
}

// ---- the aarch64 bundle under emulation ----

/// The aarch64 bundle's lkd-run, when it and the emulator are there and it starts.
fn emulated() -> Option<PathBuf> {
    static PROBE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let probe = PROBE.get_or_init(|| {
        let dir = repo().join(ARM_BUNDLE);
        if !dir.join("lkd-run").is_file() {
            return Err(format!(
                "{ARM_BUNDLE}/lkd-run is missing: build it with `make edge TARGET=aarch64-unknown-linux-gnu`"
            ));
        }
        let out = arm(&["--version"]).output().unwrap();
        if out.status.success() {
            Ok(dir.join("lkd-run"))
        } else {
            Err(format!(
                "the aarch64 lkd-run does not start under scripts/run_aarch64.sh (qemu-user, \
                 libc6-arm64-cross and a private mount namespace are needed; \
                 scripts/bootstrap_aarch64.sh installs the packages): {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    });
    match probe {
        Ok(p) => Some(p.clone()),
        Err(e) => missing(e.clone()),
    }
}

/// `lkd-run ARGS` of the aarch64 bundle under qemu, with an empty environment.
fn arm(args: &[&str]) -> Command {
    let mut c = Command::new("env");
    c.arg("-i")
        .arg(format!(
            "PATH={}",
            std::env::var("PATH").unwrap_or_default()
        ))
        .arg("bash")
        .arg(repo().join("scripts/run_aarch64.sh"))
        .arg(repo().join(ARM_BUNDLE).join("lkd-run"))
        .args(args);
    c
}

/// `lkd-run ARGS` of the x86_64 bundle, with an empty environment.
fn x86(args: &[&str]) -> Command {
    let mut c = Command::new("env");
    c.arg("-i")
        .arg(repo().join(X86_BUNDLE).join("lkd-run"))
        .args(args);
    c
}

fn ok(out: Output, what: &str) -> Vec<u8> {
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

struct Models {
    dir: PathBuf,
    fp32: PathBuf,
    int8: PathBuf,
    images: Vec<PathBuf>,
}

#[derive(Parser)]
struct QuantizeCli {
    #[command(flatten)]
    args: QuantizeArgs,
}

/// A ConvNeXt nano exported by the exporter (seeded random weights with non-trivial norm and
/// layer-scale statistics), its `lkd quantize` INT8 version calibrated on Fashion-MNIST, and
/// 16 Fashion-MNIST test images plus two larger colour JPEGs (resized and greyed by lkd-run).
fn models() -> &'static Models {
    static M: OnceLock<Models> = OnceLock::new();
    M.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("lkd-edge-arm")
            .tempdir()
            .unwrap()
            .keep();
        let graph = ModelConfig::preset("convnext_proxy").build().unwrap();
        let fp32 = dir.join("nano.onnx");
        let labels = [
            "t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
            "boot",
        ];
        export(
            &graph,
            &random_weights(&graph, 22),
            &ExportOptions {
                labels: Some(labels.iter().map(|s| s.to_string()).collect()),
                ..Default::default()
            },
            &fp32,
        )
        .unwrap();
        let fashion = std::env::var("LKD_FASHION_MNIST")
            .expect("LKD_FASHION_MNIST must point at the Fashion-MNIST folder (see env.mk)");
        let int8 = dir.join("nano.int8.onnx");
        let cli = QuantizeCli::try_parse_from([
            "quantize",
            fp32.to_str().unwrap(),
            "--calib",
            &fashion,
            "--calib-size",
            "64",
            "--eval-size",
            "64",
            "--no-bench",
            "--out",
            int8.to_str().unwrap(),
        ])
        .unwrap();
        quantize_cmd::quantize(&cli.args).unwrap();

        let img = dir.join("img");
        std::fs::create_dir(&img).unwrap();
        let py = std::env::var("LKD_PYTHON").expect("LKD_PYTHON must point at the venv python");
        let code = r#"
import gzip, sys, numpy as np
from PIL import Image
root, out = sys.argv[1], sys.argv[2]
x = np.frombuffer(gzip.open(root + "/t10k-images-idx3-ubyte.gz").read()[16:], np.uint8).reshape(-1, 28, 28)
for i in range(16):
    Image.fromarray(x[i * 37]).save(f"{out}/f{i:02}.png")
for i, (w, h) in enumerate([(120, 90), (64, 200)]):
    g = np.array(Image.fromarray(x[500 + i]).resize((w, h), Image.BICUBIC))
    rgb = np.stack([g, 255 - g, (g // 2 + 60).astype(np.uint8)], -1)
    Image.fromarray(rgb).save(f"{out}/c{i}.jpg", quality=90)
"#;
        let out = Command::new(py)
            .args(["-c", code])
            .arg(&fashion)
            .arg(&img)
            .output()
            .unwrap();
        ok(out, "writing the test images");
        let mut images: Vec<PathBuf> = std::fs::read_dir(&img)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        images.sort();
        assert_eq!(images.len(), 18);
        Models {
            dir,
            fp32,
            int8,
            images,
        }
    })
}

#[test]
fn aarch64_info_prints_the_same_metadata_as_x86() {
    let Some(_) = emulated() else { return };
    let Some(_) = bundle(X86_BUNDLE) else { return };
    let m = models();
    let model = m.fp32.to_str().unwrap();
    let got: Value = serde_json::from_slice(&ok(
        arm(&["info", "--json", model]).output().unwrap(),
        "aarch64 info",
    ))
    .unwrap();
    let want: Value = serde_json::from_slice(&ok(
        x86(&["info", "--json", model]).output().unwrap(),
        "x86 info",
    ))
    .unwrap();
    assert_eq!(got["provenance"]["lkd.preset"], "convnext_proxy", "{got}");
    assert_eq!(got["preprocess"]["input_size"], json!([28, 28]));
    assert_eq!(got["labels"][9], "boot");
    assert_eq!(got, want, "aarch64 and x86 info differ");

    // The human form names the model's preset and labels too.
    let text = ok(arm(&["info", model]).output().unwrap(), "aarch64 info");
    let text = String::from_utf8_lossy(&text);
    assert!(
        text.contains("convnext_proxy") && text.contains("t-shirt"),
        "{text}"
    );
}

/// `predict --json` results: per image, (index, prob) best first.
fn predictions(cmd: &mut Command, what: &str) -> Vec<Vec<(u64, f64)>> {
    let v: Value = serde_json::from_slice(&ok(cmd.output().unwrap(), what)).unwrap();
    v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r["predictions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| (p["index"].as_u64().unwrap(), p["prob"].as_f64().unwrap()))
                .collect()
        })
        .collect()
}

fn predict_args<'a>(model: &'a Path, images: &'a [PathBuf], k: &'a str) -> Vec<&'a str> {
    let mut a = vec!["predict", model.to_str().unwrap()];
    a.extend(images.iter().map(|p| p.to_str().unwrap()));
    a.extend(["--json", "--top-k", k, "--threads", "1"]);
    a
}

#[test]
fn aarch64_predict_has_the_x86_top5_and_the_int8_top1() {
    let Some(_) = emulated() else { return };
    let Some(_) = bundle(X86_BUNDLE) else { return };
    let m = models();
    let args = predict_args(&m.fp32, &m.images, "5");
    let got = predictions(&mut arm(&args), "aarch64 predict");
    let want = predictions(&mut x86(&args), "x86 predict");
    assert_eq!(got.len(), m.images.len());
    let mut worst = 0f64;
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let gi: Vec<u64> = g.iter().map(|p| p.0).collect();
        let wi: Vec<u64> = w.iter().map(|p| p.0).collect();
        assert_eq!(gi, wi, "top-5 of {}", m.images[i].display());
        for (a, b) in g.iter().zip(w) {
            worst = worst.max((a.1 - b.1).abs());
        }
    }
    eprintln!("FP32 predict, aarch64 (qemu) vs x86: top-5 equal on {} images, largest probability difference {worst:e}", got.len());
    assert!(worst <= 1e-5, "probabilities differ by {worst}");

    let args = predict_args(&m.int8, &m.images, "1");
    let got = predictions(&mut arm(&args), "aarch64 INT8 predict");
    let want = predictions(&mut x86(&args), "x86 INT8 predict");
    let differ: Vec<String> = got
        .iter()
        .zip(&want)
        .zip(&m.images)
        .filter(|((g, w), _)| g[0].0 != w[0].0)
        .map(|((g, w), p)| format!("{}: aarch64 {} x86 {}", p.display(), g[0].0, w[0].0))
        .collect();
    assert!(differ.is_empty(), "INT8 top-1 differs: {differ:?}");
}

/// A KServe v2 / HTTP client for the emulated server: one request per connection.
fn http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("HTTP response");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(
        !head.to_ascii_lowercase().contains("chunked"),
        "unexpected chunked response: {head}"
    );
    (status, body.to_string())
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in bytes.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            out.push(if i <= c.len() {
                A[(n >> (18 - 6 * i) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    out
}

/// The emulated `lkd-run serve`, stopped (qemu killed) when dropped.
struct Served {
    child: Child,
    addr: SocketAddr,
    log: std::sync::Arc<Mutex<String>>,
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve_emulated(models: &[String]) -> Served {
    let mut args = vec!["serve".to_string()];
    for m in models {
        args.extend(["--model".into(), m.clone()]);
    }
    args.extend(["--addr", "127.0.0.1:0", "--threads", "1"].map(String::from));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = arm(&refs).stderr(Stdio::piped()).spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = String::new();
    let addr = loop {
        let Some(Ok(line)) = lines.next() else {
            panic!("emulated lkd-run serve exited before serving:\n{log}")
        };
        log.push_str(&line);
        log.push('\n');
        if let Some(rest) = line.split(" on http://").nth(1) {
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    let log = std::sync::Arc::new(Mutex::new(log));
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            sink.lock().unwrap().push_str(&(line + "\n"));
        }
    });
    Served { child, addr, log }
}

/// The x86 runtime's logits (lkd-runtime's own decode, preprocessing and session).
fn x86_logits(model: &Path, images: &[(String, Vec<u8>)]) -> Vec<f32> {
    let mut c = Classifier::load(
        model,
        &SessionConfig::cpu(Some(1)),
        &PreprocessOverrides::default(),
    )
    .unwrap();
    let batch = preprocess_batch(images, &c.preprocess).unwrap();
    c.model.run(&batch.data, batch.shape).unwrap().data
}

fn argmax_rows(logits: &[f32], classes: usize) -> Vec<usize> {
    logits
        .chunks(classes)
        .map(|r| (0..classes).max_by(|&a, &b| r[a].total_cmp(&r[b])).unwrap())
        .collect()
}

#[test]
fn aarch64_serve_answers_healthz_and_kserve_with_the_x86_logits() {
    let Some(_) = emulated() else { return };
    let m = models();
    let server = serve_emulated(&[
        format!("nano={}", m.fp32.display()),
        format!("int8={}", m.int8.display()),
    ]);
    let (status, body) = http(server.addr, "GET", "/healthz", b"");
    assert_eq!(status, 200, "{body}");

    let images: Vec<(String, Vec<u8>)> = m
        .images
        .iter()
        .map(|p| (p.display().to_string(), std::fs::read(p).unwrap()))
        .collect();
    let request = json!({"inputs": [{"name": "encoded_image", "shape": [images.len()], "datatype": "BYTES",
                                     "data": images.iter().map(|(_, b)| base64(b)).collect::<Vec<_>>()}]});
    let mut report = Vec::new();
    for name in ["nano", "int8"] {
        let (status, body) = http(
            server.addr,
            "POST",
            &format!("/v2/models/{name}/infer"),
            request.to_string().as_bytes(),
        );
        assert_eq!(
            status,
            200,
            "{name}: {body}\nserver log:\n{}",
            server.log.lock().unwrap()
        );
        let v: Value = serde_json::from_str(&body).unwrap();
        let out = &v["outputs"][0];
        assert_eq!(out["shape"], json!([images.len(), 10]), "{v}");
        let got: Vec<f32> = out["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect();
        let model = if name == "nano" { &m.fp32 } else { &m.int8 };
        let want = x86_logits(model, &images);
        let diff = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let range = want.iter().fold(0f32, |a, b| a.max(b.abs()));
        report.push(format!(
            "{name}: largest logit difference aarch64 (qemu) vs x86 {diff:e} over {} images (largest |logit| {range:.3})",
            images.len()
        ));
        if name == "nano" {
            assert!(diff <= 1e-4, "FP32 logits differ by {diff}");
        } else {
            // ARM and x86 INT8 kernels round differently; the class must not change.
            assert_eq!(argmax_rows(&got, 10), argmax_rows(&want, 10), "INT8 top-1");
        }
    }
    eprintln!("{}", report.join("\n"));
}

#[test]
fn aarch64_bench_runs() {
    let Some(_) = emulated() else { return };
    let m = models();
    let v: Value = serde_json::from_slice(&ok(
        arm(&[
            "bench",
            m.int8.to_str().unwrap(),
            "--iters",
            "3",
            "--warmup",
            "1",
            "--threads",
            "1,2",
            "--json",
        ])
        .current_dir(&m.dir)
        .output()
        .unwrap(),
        "aarch64 bench",
    ))
    .unwrap();
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 2, "{v}");
    for (r, threads) in results.iter().zip([1, 2]) {
        assert_eq!(r["model"], "nano.int8", "{r}");
        assert_eq!(r["threads"], threads);
        assert_eq!(r["iters"], 3);
        assert_eq!(r["provider"], "CPUExecutionProvider");
        assert!(r["p50_ms"].as_f64().unwrap() > 0.0, "{r}");
    }
}

#[test]
fn device_check_reports_the_machine_latency_rss_and_cold_start() {
    let Some(dir) = bundle(X86_BUNDLE) else {
        return;
    };
    let m = models();
    let script = dir.join("device-check.sh");
    let run = |args: &[&str]| {
        Command::new("env")
            .args(["-i", "PATH=/usr/bin:/bin"])
            .arg(&script)
            .args(args)
            .current_dir(&m.dir)
            .output()
            .unwrap()
    };
    let out = run(&[
        "--threads",
        "2",
        "--iters",
        "5",
        "nano.onnx",
        "nano.int8.onnx",
    ]);
    let text = String::from_utf8(ok(out, "device-check.sh")).unwrap();
    eprintln!("{text}");
    for row in [
        "| machine | ",
        "| cores | ",
        "| glibc | glibc 2.",
        "| kernel | Linux ",
    ] {
        assert!(text.contains(row), "no `{row}` row:\n{text}");
    }
    for model in ["nano.onnx", "nano.int8.onnx"] {
        for threads in [1, 2] {
            let prefix = format!("| {model} | {threads} | ");
            let line = text
                .lines()
                .find(|l| l.starts_with(&prefix))
                .unwrap_or_else(|| panic!("no latency row `{prefix}`:\n{text}"));
            let cells: Vec<f64> = line
                .trim_matches('|')
                .split('|')
                .skip(2)
                .map(|c| c.trim().parse().unwrap())
                .collect();
            assert!(cells.len() == 3 && cells.iter().all(|v| *v > 0.0), "{line}");
        }
        // size, peak RSS, cold start first, best of 5: all numbers.
        let line = text
            .lines()
            .rfind(|l| l.starts_with(&format!("| {model} | ")))
            .unwrap();
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        assert_eq!(cells.len(), 5, "{line}");
        for c in &cells[1..] {
            assert!(c.parse::<f64>().is_ok_and(|v| v > 0.0), "{line}");
        }
    }

    let out = run(&["--threads", "0", "nano.onnx"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("--threads must be a positive integer, found 0"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run(&["missing.onnx"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("model missing.onnx does not exist"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
