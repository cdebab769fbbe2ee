//! CIFAR-10/100 binary version: records of label byte(s) + 3072 bytes of R, G, B planes.

use super::{io_err, DataError, Result, Split, Store};
use std::path::{Path, PathBuf};

pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

const LAYOUT10: &str = "  data_batch_1.bin .. data_batch_5.bin\n  test_batch.bin\n  batches.meta.txt (optional class names)\n\
                        (or the same inside cifar-10-batches-bin/)";
const LAYOUT100: &str =
    "  train.bin\n  test.bin\n  fine_label_names.txt, coarse_label_names.txt (optional)\n\
                         (or the same inside cifar-100-binary/)";

fn read_names(path: &Path) -> Result<Option<Vec<String>>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    Ok(Some(
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect(),
    ))
}

pub(crate) fn open(
    root: &Path,
    hundred: bool,
    coarse: bool,
    split: Split,
) -> Result<(Vec<String>, Store)> {
    let layout = if hundred { LAYOUT100 } else { LAYOUT10 };
    let missing = |what: String| DataError::Missing {
        root: root.into(),
        what,
        layout: layout.into(),
    };
    if !root.is_dir() {
        return Err(missing("directory does not exist".into()));
    }
    let sub = root.join(if hundred {
        "cifar-100-binary"
    } else {
        "cifar-10-batches-bin"
    });
    let probe = if hundred {
        "test.bin"
    } else {
        "test_batch.bin"
    };
    let dir = if !root.join(probe).is_file() && sub.join(probe).is_file() {
        sub
    } else {
        root.to_path_buf()
    };
    let files: Vec<PathBuf> = match (hundred, split) {
        (false, Split::Train) => (1..=5)
            .map(|i| dir.join(format!("data_batch_{i}.bin")))
            .collect(),
        (false, Split::Val) => vec![dir.join("test_batch.bin")],
        (true, Split::Train) => vec![dir.join("train.bin")],
        (true, Split::Val) => vec![dir.join("test.bin")],
    };
    if let Some(f) = files.iter().find(|f| !f.is_file()) {
        return Err(missing(format!("no `{}`", f.display())));
    }
    let label_bytes = if hundred { 2 } else { 1 };
    let rec = label_bytes + 3072;
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for f in &files {
        let bytes = std::fs::read(f).map_err(io_err(f))?;
        if bytes.is_empty() || bytes.len() % rec != 0 {
            return Err(DataError::Format {
                path: f.clone(),
                msg: format!(
                    "size {} is not a multiple of the {rec}-byte record (truncated?)",
                    bytes.len()
                ),
            });
        }
        pixels.reserve(bytes.len() / rec * 3072);
        for r in bytes.chunks_exact(rec) {
            // coarse label first, then fine, in CIFAR-100 records
            labels.push(u32::from(if hundred && !coarse { r[1] } else { r[0] }));
            let planes = &r[label_bytes..];
            for p in 0..1024 {
                pixels.extend_from_slice(&[planes[p], planes[1024 + p], planes[2048 + p]]);
            }
        }
    }
    let names = match (hundred, coarse) {
        (false, _) => read_names(&dir.join("batches.meta.txt"))?,
        (true, false) => read_names(&dir.join("fine_label_names.txt"))?,
        (true, true) => read_names(&dir.join("coarse_label_names.txt"))?,
    };
    let n_classes = match (hundred, coarse) {
        (false, _) => 10,
        (true, false) => 100,
        (true, true) => 20,
    };
    let classes = match names {
        Some(n) if n.len() == n_classes => n,
        Some(n) => {
            return Err(DataError::Format {
                path: dir.clone(),
                msg: format!(
                    "class-name file lists {} names, expected {n_classes}",
                    n.len()
                ),
            })
        }
        None if !hundred => CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect(),
        None => (0..n_classes).map(|i| i.to_string()).collect(),
    };
    if let Some(&l) = labels.iter().find(|&&l| l as usize >= n_classes) {
        return Err(DataError::Format {
            path: dir,
            msg: format!("label {l} out of range for {n_classes} classes"),
        });
    }
    Ok((
        classes,
        Store::Memory {
            width: 32,
            height: 32,
            channels: 3,
            pixels,
            labels,
        },
    ))
}
