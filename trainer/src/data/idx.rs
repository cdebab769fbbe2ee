//! IDX files (MNIST, Fashion-MNIST), raw or gzipped.

use super::{io_err, DataError, DatasetKind, Result, Split, Store};
use std::io::Read;
use std::path::{Path, PathBuf};

pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

const LAYOUT: &str = "  train-images-idx3-ubyte[.gz]\n  train-labels-idx1-ubyte[.gz]\n  \
                      t10k-images-idx3-ubyte[.gz]\n  t10k-labels-idx1-ubyte[.gz]";

/// The raw file if present, else the `.gz` one.
fn locate(root: &Path, stem: &str) -> Result<PathBuf> {
    if !root.is_dir() {
        return Err(DataError::Missing {
            root: root.into(),
            what: "directory does not exist".into(),
            layout: LAYOUT.into(),
        });
    }
    for name in [stem.to_string(), format!("{stem}.gz")] {
        let p = root.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(DataError::Missing {
        root: root.into(),
        what: format!("no `{stem}` or `{stem}.gz`"),
        layout: LAYOUT.into(),
    })
}

fn read_all(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(io_err(path))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .map_err(io_err(path))?;
        Ok(out)
    } else {
        Ok(raw)
    }
}

/// Parses an IDX u8 tensor: returns (dims, payload).
pub(crate) fn parse(path: &Path, bytes: &[u8]) -> Result<(Vec<usize>, Vec<u8>)> {
    let bad = |msg: String| DataError::Format {
        path: path.into(),
        msg,
    };
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(bad(
            "not an IDX file (magic must start with two zero bytes)".into(),
        ));
    }
    if bytes[2] != 0x08 {
        return Err(bad(format!(
            "IDX element type 0x{:02x}; only unsigned bytes (0x08) are supported",
            bytes[2]
        )));
    }
    let nd = bytes[3] as usize;
    let header = 4 + 4 * nd;
    if bytes.len() < header {
        return Err(bad("truncated IDX header".into()));
    }
    let dims: Vec<usize> = (0..nd)
        .map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize)
        .collect();
    let n = dims
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| bad(format!("dims {dims:?} overflow")))?;
    if bytes.len() - header < n {
        return Err(bad(format!(
            "truncated: dims {dims:?} need {n} data bytes, found {}",
            bytes.len() - header
        )));
    }
    Ok((dims, bytes[header..header + n].to_vec()))
}

pub(crate) fn open(root: &Path, kind: DatasetKind, split: Split) -> Result<(Vec<String>, Store)> {
    let prefix = match split {
        Split::Train => "train",
        Split::Val => "t10k",
    };
    let img_path = locate(root, &format!("{prefix}-images-idx3-ubyte"))?;
    let lbl_path = locate(root, &format!("{prefix}-labels-idx1-ubyte"))?;
    let (idims, pixels) = parse(&img_path, &read_all(&img_path)?)?;
    let (ldims, labels) = parse(&lbl_path, &read_all(&lbl_path)?)?;
    if idims.len() != 3 || idims[1] == 0 || idims[2] == 0 {
        return Err(DataError::Format {
            path: img_path,
            msg: format!("images must be 3-d (N,H,W) with H, W ≥ 1, found {idims:?}"),
        });
    }
    if ldims.len() != 1 || ldims[0] != idims[0] {
        return Err(DataError::Format {
            path: lbl_path,
            msg: format!("labels {ldims:?} do not match {} images", idims[0]),
        });
    }
    let mut max = labels.iter().copied().max().unwrap_or(0) as usize;
    if kind == DatasetKind::Idx && split == Split::Val {
        // Class count from the training labels too, so both splits agree.
        if let Ok(p) = locate(root, "train-labels-idx1-ubyte") {
            let (_, train) = parse(&p, &read_all(&p)?)?;
            max = max.max(train.iter().copied().max().unwrap_or(0) as usize);
        }
    }
    let classes: Vec<String> = match kind {
        DatasetKind::FashionMnist => FASHION_MNIST_CLASSES
            .iter()
            .map(|s| s.to_string())
            .collect(),
        DatasetKind::Mnist => (0..10).map(|d| d.to_string()).collect(),
        _ => (0..=max).map(|d| d.to_string()).collect(),
    };
    if max >= classes.len() {
        return Err(DataError::Format {
            path: lbl_path,
            msg: format!("label {max} but only {} classes", classes.len()),
        });
    }
    let labels = labels.into_iter().map(u32::from).collect();
    Ok((
        classes,
        Store::Memory {
            width: idims[2],
            height: idims[1],
            channels: 1,
            pixels,
            labels,
        },
    ))
}
