//! ImageNet-style folders: `<root>/{train,val}/<class>/**/*.{jpg,jpeg,png,webp}`.

use super::{io_err, DataError, Image, Result, Split, Store};
use std::path::{Path, PathBuf};

const EXTENSIONS: [&str; 4] = ["jpg", "jpeg", "png", "webp"];
const LAYOUT: &str =
    "  train/<class>/<image>.{jpg,jpeg,png,webp}\n  val/<class>/<image>.{jpg,jpeg,png,webp}\n\
                      (classes are the sorted folder names of train/, one folder per class)";

fn class_dirs(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io_err(dir))? {
        let e = e.map_err(io_err(dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        // Hidden folders (.ipynb_checkpoints, .cache) are not classes.
        if e.path().is_dir() && !name.starts_with('.') {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io_err(dir))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(io_err(dir))?;
    entries.sort();
    for p in entries {
        if p.is_dir() {
            collect(&p, out)?;
        } else if p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        {
            out.push(p);
        }
    }
    Ok(())
}

pub(crate) fn open(root: &Path, split: Split) -> Result<(Vec<String>, Store)> {
    let missing = |what: String| DataError::Missing {
        root: root.into(),
        what,
        layout: LAYOUT.into(),
    };
    if !root.is_dir() {
        return Err(missing("directory does not exist".into()));
    }
    let dir = root.join(split.as_str());
    if !dir.is_dir() {
        return Err(missing(format!("no `{}/` folder", split.as_str())));
    }
    // Label indices come from train/ so both splits agree even if val/ lacks a class.
    let train = root.join("train");
    let classes = class_dirs(if train.is_dir() { &train } else { &dir })?;
    if classes.is_empty() {
        return Err(missing(format!("`{}` has no class folders", dir.display())));
    }
    let mut files = Vec::new();
    for name in class_dirs(&dir)? {
        let label = classes.binary_search(&name).map_err(|_| {
            missing(format!(
                "class folder `{}/{name}` has no counterpart in train/",
                split.as_str()
            ))
        })?;
        let mut paths = Vec::new();
        collect(&dir.join(&name), &mut paths)?;
        files.extend(paths.into_iter().map(|p| (p, label as u32)));
    }
    if files.is_empty() {
        return Err(missing(format!(
            "no .jpg/.jpeg/.png/.webp files under `{}`",
            dir.display()
        )));
    }
    Ok((classes, Store::Files { files }))
}

/// Reads and decodes one file with the serving decoder (`lkd_preprocess::decode`: size bounds
/// from the header, truncated JPEGs refused): luma for grey sources, RGB for everything else.
pub(crate) fn decode(path: &Path) -> Result<Image> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    let pixels =
        lkd_preprocess::decode(&bytes, &lkd_preprocess::Limits::default()).map_err(|e| {
            DataError::Decode {
                path: path.into(),
                source: e,
            }
        })?;
    Ok(super::ops::from_pixels(pixels))
}
