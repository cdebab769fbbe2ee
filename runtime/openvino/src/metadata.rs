//! The `metadata_props` of an ONNX file (LKD's preprocessing, labels, provenance), read without
//! loading the graph: OpenVINO's C API does not expose them, and opening the file in ONNX Runtime
//! just for them would load the whole model twice.
//!
//! A `ModelProto` is a sequence of protobuf fields; the scan reads each tag, collects field 14
//! (`StringStringEntryProto { key = 1, value = 2 }`) and seeks past everything else — the graph
//! (field 7, most of the file) is never read. Every length is checked against the file size
//! before anything is allocated, so a hostile file gets an error, not a panic or a huge buffer.

use std::collections::BTreeMap;
use std::io::{BufReader, Cursor, Read, Seek, SeekFrom};
use std::path::Path;

use crate::error::{OvError, Result};

/// `ModelProto.metadata_props`.
const METADATA_FIELD: u64 = 14;
/// Largest single metadata entry accepted, and all of them together.
const MAX_ENTRY_BYTES: u64 = 16 << 20;
const MAX_TOTAL_BYTES: u64 = 64 << 20;

/// The metadata of the ONNX file at `path`, key → value.
pub fn onnx_metadata(path: &Path) -> Result<BTreeMap<String, String>> {
    let fail = |reason: String| OvError::Metadata {
        path: path.to_path_buf(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| fail(e.to_string()))?;
    let len = file.metadata().map_err(|e| fail(e.to_string()))?.len();
    scan(BufReader::new(file), len).map_err(fail)
}

/// The metadata of ONNX bytes held in memory.
pub fn onnx_metadata_from_bytes(bytes: &[u8]) -> Result<BTreeMap<String, String>> {
    scan(Cursor::new(bytes), bytes.len() as u64).map_err(|reason| OvError::Metadata {
        path: "<memory>".into(),
        reason,
    })
}

fn scan<R: Read + Seek>(
    mut r: R,
    len: u64,
) -> std::result::Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    let mut pos = 0u64;
    let mut total = 0u64;
    while pos < len {
        let (tag, n) = varint(&mut r, len - pos)?;
        pos += n;
        let (field, wire) = (tag >> 3, tag & 7);
        let skip = match wire {
            0 => {
                pos += varint(&mut r, len - pos)?.1;
                continue;
            }
            1 => 8,
            5 => 4,
            2 => {
                let (size, n) = varint(&mut r, len - pos)?;
                pos += n;
                if size > len - pos {
                    return Err(format!(
                        "field {field} at byte {pos} claims {size} bytes but only {} remain (truncated file?)",
                        len - pos
                    ));
                }
                if field == METADATA_FIELD {
                    if size > MAX_ENTRY_BYTES {
                        return Err(format!(
                            "a metadata entry of {size} bytes exceeds the {MAX_ENTRY_BYTES}-byte limit"
                        ));
                    }
                    total += size;
                    if total > MAX_TOTAL_BYTES {
                        return Err(format!(
                            "metadata exceeds the {MAX_TOTAL_BYTES}-byte limit"
                        ));
                    }
                    let mut entry = vec![0u8; size as usize];
                    r.read_exact(&mut entry).map_err(|e| e.to_string())?;
                    pos += size;
                    let (key, value) = entry_of(&entry)?;
                    if out.insert(key.clone(), value).is_some() {
                        return Err(format!("metadata key `{key}` appears twice"));
                    }
                    continue;
                }
                size
            }
            other => {
                return Err(format!(
                    "unsupported protobuf wire type {other} (field {field}) at byte {pos}: not an ONNX model"
                ))
            }
        };
        if skip > len - pos {
            return Err(format!("field {field} runs past the end of the file"));
        }
        r.seek(SeekFrom::Current(skip as i64))
            .map_err(|e| e.to_string())?;
        pos += skip;
    }
    Ok(out)
}

/// One `StringStringEntryProto`: key (1) and value (2), both UTF-8; unknown fields are skipped.
fn entry_of(bytes: &[u8]) -> std::result::Result<(String, String), String> {
    let (mut key, mut value) = (None, String::new());
    let mut r = Cursor::new(bytes);
    let len = bytes.len() as u64;
    while r.position() < len {
        let left = len - r.position();
        let (tag, _) = varint(&mut r, left)?;
        let (field, wire) = (tag >> 3, tag & 7);
        let size = match wire {
            0 => {
                let left = len - r.position();
                varint(&mut r, left)?;
                continue;
            }
            1 => 8,
            5 => 4,
            2 => {
                let left = len - r.position();
                varint(&mut r, left)?.0
            }
            other => return Err(format!("unsupported wire type {other} in a metadata entry")),
        };
        let start = r.position();
        if size > len - start {
            return Err("a metadata entry is truncated".into());
        }
        let data = &bytes[start as usize..(start + size) as usize];
        r.set_position(start + size);
        if wire == 2 && (field == 1 || field == 2) {
            let s = String::from_utf8(data.to_vec())
                .map_err(|_| "a metadata key or value is not UTF-8".to_string())?;
            if field == 1 {
                key = Some(s);
            } else {
                value = s;
            }
        }
    }
    let key = key.ok_or("a metadata entry has no key")?;
    Ok((key, value))
}

/// A base-128 varint of at most 10 bytes and at most `left` bytes; returns it and its length.
fn varint<R: Read>(r: &mut R, left: u64) -> std::result::Result<(u64, u64), String> {
    let mut value = 0u64;
    for i in 0..10u64 {
        if i >= left {
            return Err("a varint runs past the end of the data (truncated file?)".into());
        }
        let mut b = [0u8];
        r.read_exact(&mut b).map_err(|e| e.to_string())?;
        value |= u64::from(b[0] & 0x7f) << (7 * i);
        if b[0] & 0x80 == 0 {
            return Ok((value, i + 1));
        }
    }
    Err("a varint is longer than 10 bytes: not an ONNX model".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(num: u64, data: &[u8]) -> Vec<u8> {
        let mut v = vec![(num << 3 | 2) as u8, data.len() as u8];
        v.extend_from_slice(data);
        v
    }

    fn entry(k: &str, v: &str) -> Vec<u8> {
        let mut e = field(1, k.as_bytes());
        e.extend(field(2, v.as_bytes()));
        field(METADATA_FIELD, &e)
    }

    #[test]
    fn reads_entries_and_skips_other_fields() {
        let mut m = vec![0x08, 0x08]; // ir_version = 8
        m.extend(field(7, &[0xAA; 40])); // a "graph" that is never parsed
        m.extend(entry("lkd.arch", "slak"));
        m.extend([0x15, 1, 2, 3, 4]); // a fixed32 field
        m.extend(entry("empty", ""));
        let md = onnx_metadata_from_bytes(&m).unwrap();
        assert_eq!(md.len(), 2);
        assert_eq!(md["lkd.arch"], "slak");
        assert_eq!(md["empty"], "");
        assert!(onnx_metadata_from_bytes(&[]).unwrap().is_empty());
    }

    #[test]
    fn hostile_bytes_are_errors() {
        let err = |b: &[u8]| onnx_metadata_from_bytes(b).unwrap_err().to_string();
        assert_eq!(
            err(&[0x3a, 100, 1, 2]),
            "cannot read ONNX metadata from `<memory>`: field 7 at byte 2 claims 100 bytes but only 2 remain (truncated file?)"
        );
        assert!(err(&[0x08]).ends_with("a varint runs past the end of the data (truncated file?)"));
        assert!(err(&[0x0b]).contains("unsupported protobuf wire type 3"));
        assert!(err(&[0x80; 12]).ends_with("a varint is longer than 10 bytes: not an ONNX model"));
        let mut twice = entry("k", "a");
        twice.extend(entry("k", "b"));
        assert!(err(&twice).ends_with("metadata key `k` appears twice"));
        assert!(
            err(&field(METADATA_FIELD, &field(2, b"v"))).ends_with("a metadata entry has no key")
        );
        assert!(err(&field(METADATA_FIELD, &field(1, &[0xff]))).ends_with("not UTF-8"));
    }

    /// Found by the `openvino_metadata` fuzz target: rust-protobuf 3.4 reads these two bytes as
    /// one empty metadata entry (a nested message cut short by the end of the input passes
    /// there); the walker, like protobuf's C++ and Python parsers, refuses the truncation.
    #[test]
    fn an_entry_cut_off_by_the_end_of_the_file_is_refused() {
        assert_eq!(
            onnx_metadata_from_bytes(&[0x72, 0x6c])
                .unwrap_err()
                .to_string(),
            "cannot read ONNX metadata from `<memory>`: field 14 at byte 2 claims 108 bytes but \
             only 0 remain (truncated file?)"
        );
    }
}
