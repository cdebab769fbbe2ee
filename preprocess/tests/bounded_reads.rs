//! Image files are read within a bound of time and memory whatever the path names: devices,
//! FIFOs, sparse files far over the limit, streams that never end. One test (one process
//! thread), so the peak-memory figure is this test's own.

use lkd_preprocess::{read_image_file, read_image_from, PreprocessError, DEFAULT_MAX_FILE_BYTES};
use std::path::Path;
use std::time::{Duration, Instant};

/// Peak resident memory of this process (VmHWM), in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

fn refused(path: &Path) -> (String, Duration) {
    let t0 = Instant::now();
    let e = read_image_file(path, DEFAULT_MAX_FILE_BYTES).unwrap_err();
    (e.to_string(), t0.elapsed())
}

#[test]
fn devices_fifos_sparse_files_and_endless_streams_are_refused_quickly() {
    let before = peak_rss();
    let limit = DEFAULT_MAX_FILE_BYTES;
    assert_eq!(limit, 128 << 20);

    for dev in ["/dev/zero", "/dev/urandom"] {
        let (e, took) = refused(Path::new(dev));
        assert_eq!(
            e,
            "a character device, not a regular file: give an image file"
        );
        assert!(took < Duration::from_secs(1), "{dev}: {took:?}");
    }

    let tmp = tempfile::tempdir().unwrap();
    // A FIFO nobody writes to: opening it for reading would wait forever.
    let fifo = tmp.path().join("pipe.jpg");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a NUL-terminated path; mkfifo reads it only.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let (e, took) = refused(&fifo);
    assert_eq!(
        e,
        "a FIFO (named pipe), not a regular file: give an image file"
    );
    assert!(took < Duration::from_secs(1), "{took:?}");

    // A 2 GiB sparse file that starts like a JPEG: refused from its size, nothing read.
    let sparse = tmp.path().join("huge.jpg");
    let f = std::fs::File::create(&sparse).unwrap();
    std::io::Write::write_all(&mut &f, &[0xFF, 0xD8, 0xFF, 0xE0]).unwrap();
    f.set_len(2 << 30).unwrap();
    let (e, took) = refused(&sparse);
    assert_eq!(
        e,
        "the file is 2147483648 bytes; the limit for an image file is 134217728 bytes"
    );
    assert!(took < Duration::from_secs(1), "{took:?}");

    // Under the limit but not an image: refused from its first bytes.
    let zeros = tmp.path().join("zeros.jpg");
    std::fs::File::create(&zeros)
        .unwrap()
        .set_len(100 << 20)
        .unwrap();
    let (e, took) = refused(&zeros);
    assert!(matches!(
        read_image_file(&zeros, limit),
        Err(PreprocessError::UnknownFormat)
    ));
    assert_eq!(
        e,
        "unrecognised image format: expected a JPEG, PNG, WebP, BMP or GIF file"
    );
    assert!(took < Duration::from_secs(1), "{took:?}");
    let empty = tmp.path().join("empty.png");
    std::fs::write(&empty, b"").unwrap();
    assert_eq!(refused(&empty).0, "the file is empty");
    assert_eq!(
        refused(tmp.path()).0,
        "a directory, not a regular file: give an image file"
    );

    // A stream that starts like a PNG and never ends stops one byte past the limit.
    let endless = std::io::Read::chain(&b"\x89PNG\r\n\x1a\n"[..], std::io::repeat(0));
    let t0 = Instant::now();
    let e = read_image_from(endless, 1 << 20, 0).unwrap_err();
    assert_eq!(
        e.to_string(),
        "the file holds more than 1048576 bytes, the limit for an image file"
    );
    assert!(e.is_too_large());
    assert!(t0.elapsed() < Duration::from_secs(1));

    // A real image within the limit reads whole.
    let png = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rgb_31x29.png");
    assert_eq!(
        read_image_file(&png, limit).unwrap(),
        std::fs::read(&png).unwrap()
    );
    assert!(matches!(
        read_image_file(&png, 100),
        Err(PreprocessError::FileTooLarge { limit: 100, .. })
    ));

    // Nothing above held more than a few MiB (a whole read of the sparse file would be 2 GiB).
    let grew = peak_rss().saturating_sub(before);
    assert!(grew < 32 << 20, "peak RSS grew by {grew} bytes");
}
