//! The one bounded reader of image files, used by `predict`, folder datasets and calibration:
//! only regular files, refused above a byte limit from their size before reading, the format
//! sniffed from the first bytes before the rest is read, and the read itself capped so a file
//! that grows (or lies about its size) stops at the limit.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use image::ImageFormat;

use crate::{PreprocessError, Result};

/// 128 MiB: far above any photo a model is fed (a 48-megapixel JPEG is about 20 MB), and the
/// most one image read may hold in memory.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 128 << 20;

/// Bytes enough for every signature [`sniff_format`] knows (WebP's is 12).
const SNIFF_BYTES: usize = 16;

/// The decodable format named by an image's first bytes (JPEG, PNG, WebP, BMP, GIF).
pub fn sniff_format(head: &[u8]) -> Result<ImageFormat> {
    match image::guess_format(head) {
        Ok(
            f @ (ImageFormat::Jpeg
            | ImageFormat::Png
            | ImageFormat::WebP
            | ImageFormat::Bmp
            | ImageFormat::Gif),
        ) => Ok(f),
        _ => Err(PreprocessError::UnknownFormat),
    }
}

fn file_kind(meta: &std::fs::Metadata) -> Option<&'static str> {
    let t = meta.file_type();
    if t.is_file() {
        return None;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return Some("a FIFO (named pipe)");
        }
        if t.is_char_device() {
            return Some("a character device");
        }
        if t.is_block_device() {
            return Some("a block device");
        }
        if t.is_socket() {
            return Some("a socket");
        }
    }
    Some(if t.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    })
}

fn check_file(meta: &std::fs::Metadata, max_bytes: u64) -> Result<()> {
    if let Some(kind) = file_kind(meta) {
        return Err(PreprocessError::NotAFile(kind));
    }
    if meta.len() > max_bytes {
        return Err(PreprocessError::FileTooLarge {
            bytes: meta.len(),
            limit: max_bytes,
        });
    }
    Ok(())
}

/// Reads the image file at `path` within `max_bytes`: a FIFO, device, socket or directory is
/// refused from its metadata (nothing is opened that could block or never end), a larger file
/// from its size, an unknown format from its first 16 bytes, and the read stops one byte past
/// the limit whatever the file does meanwhile.
pub fn read_image_file(path: &Path, max_bytes: u64) -> Result<Vec<u8>> {
    check_file(
        &std::fs::metadata(path).map_err(PreprocessError::Read)?,
        max_bytes,
    )?;
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    // Were the path swapped for a FIFO after the check, opening it must not wait for a writer.
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::custom_flags(&mut options, libc::O_NONBLOCK);
    let file: File = options.open(path).map_err(PreprocessError::Read)?;
    let meta = file.metadata().map_err(PreprocessError::Read)?;
    check_file(&meta, max_bytes)?;
    read_image_from(file, max_bytes, meta.len())
}

/// [`read_image_file`]'s checks on any byte stream: the format from the first bytes, then at
/// most `max_bytes` (`size_hint` only sizes the buffer, capped at the limit).
pub fn read_image_from(mut reader: impl Read, max_bytes: u64, size_hint: u64) -> Result<Vec<u8>> {
    let mut head = [0u8; SNIFF_BYTES];
    let mut n = 0;
    while n < SNIFF_BYTES {
        match reader.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(PreprocessError::Read(e)),
        }
    }
    if n == 0 {
        return Err(PreprocessError::EmptyFile);
    }
    sniff_format(&head[..n])?;
    let mut bytes = Vec::with_capacity(size_hint.min(max_bytes) as usize);
    bytes.extend_from_slice(&head[..n]);
    reader
        .take((max_bytes + 1).saturating_sub(n as u64))
        .read_to_end(&mut bytes)
        .map_err(PreprocessError::Read)?;
    if bytes.len() as u64 > max_bytes {
        return Err(PreprocessError::StreamTooLong { limit: max_bytes });
    }
    Ok(bytes)
}
