//! Hostile inputs from issue 13's probes: each must be refused with a clear error, before any
//! large allocation.

use std::io::Write;
use std::path::Path;

use flate2::write::ZlibEncoder;
use flate2::{Compression, Crc};
use lkd_models::preprocess::Preprocess;
use lkd_preprocess::{
    decode, eval_bytes_into, eval_into, tensor_len, Limits, Pixels, PreprocessError,
};

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut crc = Crc::new();
    crc.update(kind);
    crc.update(data);
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    out.extend_from_slice(&crc.sum().to_be_bytes());
}

/// A complete, valid 8-bit grey PNG of zeros, compressed row by row (never held in memory).
fn zero_png(width: u32, height: u32, level: Compression) -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]); // 8-bit grey, deflate, no filter, no interlace
    chunk(&mut png, b"IHDR", &ihdr);
    let mut z = ZlibEncoder::new(Vec::new(), level);
    let row = vec![0u8; width as usize + 1]; // filter byte 0 + samples
    let block = 1 << 20;
    for _ in 0..height {
        for part in row.chunks(block) {
            z.write_all(part).unwrap();
        }
    }
    chunk(&mut png, b"IDAT", &z.finish().unwrap());
    chunk(&mut png, b"IEND", &[]);
    png
}

fn too_large(bytes: &[u8]) -> PreprocessError {
    let e = decode(bytes, &Limits::default()).unwrap_err();
    assert!(e.is_too_large(), "{e}");
    e
}

#[test]
fn a_hundred_million_by_one_png_is_refused_from_its_header() {
    let png = zero_png(100_000_000, 1, Compression::best());
    assert!(
        png.len() < 200_000,
        "the probe file is small: {} bytes",
        png.len()
    );
    assert_eq!(
        too_large(&png).to_string(),
        "image is 100000000×1 pixels; the limit is 67108864 pixels and aspect ratio 1:64. \
         Downscale the image before sending it"
    );
    // Header only, data cut off: refused the same way, so nothing was decoded.
    assert!(too_large(&png[..60]).is_too_large());
}

#[test]
fn a_million_by_one_png_is_refused() {
    let png = zero_png(1_000_000, 1, Compression::best());
    assert!(png.len() < 5_000, "{} bytes", png.len());
    assert_eq!(
        too_large(&png).to_string(),
        "image is 1000000×1 pixels; the limit is 67108864 pixels and aspect ratio 1:64. \
         Downscale the image before sending it"
    );
}

#[test]
fn a_20000_square_grey_png_is_refused() {
    let png = zero_png(20_000, 20_000, Compression::fast());
    assert!(
        too_large(&png)
            .to_string()
            .starts_with("image is 20000×20000 pixels; the limit is 67108864 pixels"),
        "{}",
        too_large(&png)
    );
}

#[test]
fn a_large_but_allowed_image_decodes_within_limits() {
    // 4096×16 (1:256) is refused by aspect with the defaults, accepted with a wider bound.
    let png = zero_png(4096, 16, Compression::fast());
    assert!(too_large(&png).is_too_large());
    let wide = Limits {
        max_aspect: 256,
        ..Limits::default()
    };
    let img = decode(&png, &wide).unwrap();
    assert_eq!((img.width, img.height, img.channels), (4096, 16, 1));
    let p = Preprocess::fashion_mnist();
    let mut out = vec![0.0; tensor_len(&p)];
    eval_into(img, &p, &mut out).unwrap();
    let zero = (0.0 - p.mean[0]) / p.std[0];
    assert!(out.iter().all(|&v| v == zero));
}

#[test]
fn extreme_pixels_given_directly_are_resized_in_bounded_work() {
    // Past the decoder (e.g. from a dataset): a 100 000×1 strip resizes to 28×2.8M; only the
    // 28×28 window is computed.
    let img = Pixels::new(100_000, 1, 1, vec![200; 100_000]).unwrap();
    let p = Preprocess::fashion_mnist();
    let mut out = vec![0.0; tensor_len(&p)];
    eval_into(img, &p, &mut out).unwrap();
    let v = (200.0 / 255.0 - p.mean[0]) / p.std[0];
    assert!(out.iter().all(|&x| x == v));
}

#[test]
fn a_jpeg_cut_in_half_is_an_error_not_a_grey_image() {
    let jpeg =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rgb_64x48.jpg"))
            .unwrap();
    assert!(decode(&jpeg, &Limits::default()).is_ok());
    let half = &jpeg[..jpeg.len() / 2];
    let e = decode(half, &Limits::default()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "the JPEG is truncated: the data ends inside a scan. Send the complete file"
    );
    // Cut anywhere after the header: always an error.
    for cut in (200..jpeg.len() - 1).step_by(97) {
        assert!(
            decode(&jpeg[..cut], &Limits::default()).is_err(),
            "cut at {cut}"
        );
    }
}

#[test]
fn a_progressive_jpeg_decodes_whole_and_fails_cut() {
    let jpeg = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rgb_64x48_progressive.jpg"),
    )
    .unwrap();
    let img = decode(&jpeg, &Limits::default()).unwrap();
    assert_eq!((img.width, img.height, img.channels), (64, 48, 3));
    let e = decode(&jpeg[..jpeg.len() / 2], &Limits::default()).unwrap_err();
    assert!(matches!(e, PreprocessError::TruncatedJpeg(_)), "{e}");
}

#[test]
fn a_truncated_png_is_an_error() {
    let png =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rgb_31x29.png"))
            .unwrap();
    let e = decode(&png[..png.len() / 2], &Limits::default()).unwrap_err();
    assert!(matches!(e, PreprocessError::Decode { .. }), "{e}");
}

#[test]
fn garbage_and_empty_input_are_named() {
    let p = Preprocess::fashion_mnist();
    let mut out = vec![0.0; tensor_len(&p)];
    let e = eval_bytes_into(b"hello, not an image", &Limits::default(), &p, &mut out).unwrap_err();
    assert_eq!(
        e.to_string(),
        "unrecognised image format: expected a JPEG, PNG, WebP, BMP or GIF file"
    );
    assert!(eval_bytes_into(&[], &Limits::default(), &p, &mut out).is_err());
    let zero_wide = zero_png(0, 5, Compression::fast());
    assert!(decode(&zero_wide, &Limits::default()).is_err());
}
