use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use image::{DynamicImage, ImageFormat, Rgb, RgbImage};

fn required_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set. These tests need the project's Python env and ONNX Runtime: run `make` \
             once, then `eval \"$(sed -n 's/^export \\([A-Z_]*\\) := \\(.*\\)$/export \\1=\"\\2\"/p' \
             ~/.cache/lkd/env.mk)\"` (or run the tests through make)"
        )
    })
}

pub fn python() -> String {
    required_env("LKD_PYTHON")
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/make_models.py")
}

/// Directory holding the generated models (made once per test run).
pub fn fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        required_env("ORT_DYLIB_PATH");
        // Regenerated on every run; the script overwrites its outputs.
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("lkd-runtime-fixtures");
        let out = Command::new(python())
            .arg(script())
            .arg("models")
            .arg(&dir)
            .output()
            .expect("run $LKD_PYTHON");
        assert!(
            out.status.success(),
            "make_models.py failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
}

pub fn model(name: &str) -> PathBuf {
    fixtures().join(format!("{name}.onnx"))
}

pub fn read_f32(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

pub fn write_f32(path: &Path, data: &[f32]) {
    std::fs::write(
        path,
        data.iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>(),
    )
    .unwrap();
}

/// The script's NumPy logits for an NCHW input.
pub fn numpy_reference(model_name: &str, input: &[f32], shape: [usize; 4]) -> Vec<f32> {
    let dir = tempfile::tempdir().unwrap();
    let (i, o) = (dir.path().join("in.bin"), dir.path().join("out.bin"));
    write_f32(&i, input);
    let mut cmd = Command::new(python());
    cmd.arg(script())
        .arg("ref")
        .arg(model(model_name))
        .arg(&i)
        .arg(&o);
    cmd.args(shape.iter().map(|d| d.to_string()));
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "reference failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    read_f32(&o)
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// A deterministic "photo": smooth gradients with a few hard edges, so resampling matters.
pub fn photo(w: u32, h: u32, seed: u32) -> DynamicImage {
    DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |x, y| {
        let (fx, fy) = (x as f32 / w as f32, y as f32 / h as f32);
        let disc = ((fx - 0.5).powi(2) + (fy - 0.4).powi(2)) < 0.05 + 0.01 * seed as f32;
        let r = (255.0 * fx) as u8 ^ if disc { 0x80 } else { 0 };
        let g = (255.0 * fy) as u8;
        let b = ((x / 8 + y / 8 + seed) % 2 * 200) as u8;
        Rgb([r, g, b])
    }))
}

pub fn encode(img: &DynamicImage, format: ImageFormat) -> Vec<u8> {
    let mut buf = std::io::Cursor::new(Vec::new());
    img.write_to(&mut buf, format).unwrap();
    buf.into_inner()
}

pub struct HttpResponse {
    pub status: u16,
    pub body: String,
}

/// Minimal HTTP/1.1 client: one request per connection.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> HttpResponse {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(ct) = content_type {
        head.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).unwrap();
    // The server may answer (413) before reading the whole body and close; that is fine.
    let _ = s.write_all(body);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("malformed response: {text:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    HttpResponse { status, body }
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

pub fn multipart(field: &str, filename: &str, bytes: &[u8]) -> (String, Vec<u8>) {
    let boundary = "lkdboundary7d1f";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n\
         Content-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut crc = flate2::Crc::new();
    crc.update(kind);
    crc.update(data);
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    out.extend_from_slice(&crc.sum().to_be_bytes());
}

/// A complete, valid 8-bit grey PNG of zeros whose header declares `width`×`height`: tiny on
/// disk, huge once decoded (issue 13's hostile probes). Compressed row by row, so the pixels are
/// never held in memory here.
pub fn zero_png(width: u32, height: u32, level: flate2::Compression) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]); // 8-bit grey, deflate, no filter, no interlace
    png_chunk(&mut png, b"IHDR", &ihdr);
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), level);
    // Each row is filter byte 0 then `width` zero samples: all zeros, written 1 MiB at a time.
    let zeros = vec![0u8; 1 << 20];
    let mut left = (width as u64 + 1) * height as u64;
    while left > 0 {
        let n = left.min(zeros.len() as u64) as usize;
        z.write_all(&zeros[..n]).unwrap();
        left -= n as u64;
    }
    png_chunk(&mut png, b"IDAT", &z.finish().unwrap());
    png_chunk(&mut png, b"IEND", &[]);
    png
}
