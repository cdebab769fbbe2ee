//! Issue 13's probe 1 through the runtime, as a hostile user runs it: small PNGs whose headers
//! declare 100 000 000 × 1, 1 000 000 × 1 and 20 000² pixels once killed `lkd-run predict` and
//! `lkd-run serve` (SIGABRT on a 44.8 GB allocation). Now `predict` exits 1 with the reason, and
//! the server answers 413 on `/v1/classify` and on KServe v2 BYTES and keeps serving.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use flate2::Compression;
use image::ImageFormat;
use serde_json::json;

use crate::common::*;
use crate::serve_util::request;

/// The refusal for a `width`×`height` image, as lkd-preprocess words it.
fn too_many_pixels(width: u32, height: u32) -> String {
    format!(
        "image is {width}×{height} pixels; the limit is 67108864 pixels and aspect ratio 1:64. \
         Downscale the image before sending it"
    )
}

/// (what, file bytes, refusal): each file is small, each would be gigabytes decoded.
fn hostile_pngs() -> Vec<(&'static str, Vec<u8>, String)> {
    let huge_strip = zero_png(100_000_000, 1, Compression::best());
    assert!(huge_strip.len() < 200_000, "{} bytes", huge_strip.len());
    let strip = zero_png(1_000_000, 1, Compression::best());
    assert!(strip.len() < 5_000, "{} bytes", strip.len());
    let square = zero_png(20_000, 20_000, Compression::best());
    assert!(square.len() < 1_000_000, "{} bytes", square.len());
    // Cut after the header (signature, IHDR, the first bytes of IDAT): refused the same way, so
    // nothing is decoded before the size check.
    let header_only = huge_strip[..60].to_vec();
    vec![
        ("100000000×1", huge_strip, too_many_pixels(100_000_000, 1)),
        ("1000000×1", strip, too_many_pixels(1_000_000, 1)),
        ("20000×20000", square, too_many_pixels(20_000, 20_000)),
        (
            "100000000×1 header only",
            header_only,
            too_many_pixels(100_000_000, 1),
        ),
    ]
}

fn lkd_run() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lkd-run"))
}

#[test]
fn predict_refuses_a_huge_declared_size_with_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    let model = model("gray28");
    for (what, png, refusal) in hostile_pngs() {
        let path = dir.path().join("hostile.png");
        std::fs::write(&path, &png).unwrap();
        let start = Instant::now();
        let out = lkd_run()
            .arg("predict")
            .arg(&model)
            .arg(&path)
            .args(["--threads", "1"])
            .output()
            .unwrap();
        let took = start.elapsed();
        let stderr = String::from_utf8_lossy(&out.stderr);
        // 134 would be the SIGABRT of the failed allocation, 101 a panic.
        assert_eq!(out.status.code(), Some(1), "{what}: {stderr}");
        assert_eq!(
            stderr.trim_end(),
            format!("error: cannot decode image `{}`: {refusal}", path.display()),
            "{what}"
        );
        assert!(out.stdout.is_empty(), "{what}");
        // Refused from the header: no decode of gigabytes (the 1 000 000 × 1 file took 17 s).
        eprintln!("lkd-run predict refused {what} in {took:?}");
        assert!(took < Duration::from_secs(10), "{what}: {took:?}");
    }
}

/// Paths that are not image files are refused before (or while) reading, never read whole:
/// devices and FIFOs from their metadata, a sparse 2 GiB `.jpg` from its size.
#[test]
fn predict_refuses_devices_fifos_and_oversized_files_quickly() {
    let dir = tempfile::tempdir().unwrap();
    let model = model("gray28");
    let sparse = dir.path().join("huge.jpg");
    let f = std::fs::File::create(&sparse).unwrap();
    std::io::Write::write_all(&mut &f, &[0xFF, 0xD8, 0xFF, 0xE0]).unwrap();
    f.set_len(2 << 30).unwrap();
    let fifo = dir.path().join("pipe.png");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let cases = [
        (
            std::path::PathBuf::from("/dev/zero"),
            "a character device, not a regular file: give an image file",
        ),
        (
            "/dev/urandom".into(),
            "a character device, not a regular file: give an image file",
        ),
        (
            fifo,
            "a FIFO (named pipe), not a regular file: give an image file",
        ),
        (
            sparse,
            "the file is 2147483648 bytes; the limit for an image file is 134217728 bytes",
        ),
    ];
    for (path, why) in cases {
        let start = Instant::now();
        let out = lkd_run()
            .arg("predict")
            .arg(&model)
            .arg(&path)
            .args(["--threads", "1"])
            .output()
            .unwrap();
        let took = start.elapsed();
        assert_eq!(out.status.code(), Some(1), "{}", path.display());
        assert_eq!(
            String::from_utf8_lossy(&out.stderr).trim_end(),
            format!("error: cannot read image `{}`: {why}", path.display())
        );
        // Model load included; /dev/zero read whole reached 3.4 GB in 6 s.
        assert!(
            took < Duration::from_secs(10),
            "{}: {took:?}",
            path.display()
        );
    }
}

/// `lkd-run serve` as a process on loopback; killed on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(model: &Path) -> Self {
        let mut child = lkd_run()
            .arg("serve")
            .arg("--model")
            .arg(format!("digits={}", model.display()))
            .args(["--addr", "127.0.0.1:0", "--threads", "1"])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let addr = loop {
            let line = lines
                .next()
                .expect("lkd-run serve exited before serving")
                .unwrap();
            if let Some(rest) = line.split(" on http://").nth(1) {
                break rest.split_whitespace().next().unwrap().parse().unwrap();
            }
        };
        // Keep reading the log so the server never blocks on a full pipe.
        std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
        Self { child, addr }
    }

    fn classify(&self, png: &[u8]) -> crate::serve_util::Reply {
        let (content_type, body) = multipart("file", "upload.png", png);
        request(
            self.addr,
            "POST",
            "/v1/classify",
            &[("Content-Type", &content_type)],
            &body,
        )
    }

    fn infer_bytes(&self, png: &[u8]) -> crate::serve_util::Reply {
        let b64 = base64::engine::general_purpose::STANDARD.encode(png);
        let body = json!({"inputs": [{"name": "encoded_image", "shape": [1], "datatype": "BYTES",
                                      "data": [b64]}]});
        request(
            self.addr,
            "POST",
            "/v2/models/digits/infer",
            &[("Content-Type", "application/json")],
            body.to_string().as_bytes(),
        )
    }

    fn still_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn serve_answers_413_for_a_huge_declared_size_and_keeps_serving() {
    let mut server = Server::start(&model("gray28"));
    let normal = encode(&photo(40, 30, 2), ImageFormat::Png);
    for (what, png, refusal) in hostile_pngs() {
        let r = server.classify(&png);
        assert_eq!(r.status, 413, "{what}: {}", r.text());
        assert_eq!(
            r.error(),
            format!("cannot decode image: {refusal}"),
            "{what}"
        );
        let r = server.infer_bytes(&png);
        assert_eq!(r.status, 413, "{what}: {}", r.text());
        assert_eq!(
            r.error(),
            format!("cannot decode image `element 0`: {refusal}"),
            "{what}"
        );
        // The same server, still up, answers an ordinary image on both endpoints.
        assert!(server.still_running(), "{what}: lkd-run serve died");
        let ok = server.classify(&normal);
        assert_eq!(ok.status, 200, "{what}: {}", ok.text());
        assert_eq!(ok.json()["predictions"].as_array().unwrap().len(), 5);
        let ok = server.infer_bytes(&normal);
        assert_eq!(ok.status, 200, "{what}: {}", ok.text());
        assert_eq!(ok.json()["outputs"][0]["shape"], json!([1, 10]));
    }
    assert!(server.still_running());
}
