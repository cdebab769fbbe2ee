//! ImageNet-style folders: `<root>/{train,val}/<class>/**/*.{jpg,jpeg,png,webp}`.

use super::{io_err, DataError, Image, Result, Split, Store};
use std::path::{Path, PathBuf};

const EXTENSIONS: [&str; 4] = ["jpg", "jpeg", "png", "webp"];
const LAYOUT: &str = "  train/<class>/<image>.{jpg,jpeg,png,webp}\n  val/<class>/<image>.{jpg,jpeg,png,webp}\n\
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
    let mut entries: Vec<PathBuf> =
        std::fs::read_dir(dir).map_err(io_err(dir))?.map(|e| e.map(|e| e.path())).collect::<Result<_, _>>().map_err(io_err(dir))?;
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
    let missing = |what: String| DataError::Missing { root: root.into(), what, layout: LAYOUT.into() };
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
            missing(format!("class folder `{}/{name}` has no counterpart in train/", split.as_str()))
        })?;
        let mut paths = Vec::new();
        collect(&dir.join(&name), &mut paths)?;
        files.extend(paths.into_iter().map(|p| (p, label as u32)));
    }
    if files.is_empty() {
        return Err(missing(format!("no .jpg/.jpeg/.png/.webp files under `{}`", dir.display())));
    }
    Ok((classes, Store::Files { files }))
}

/// A JPEG whose last scan is not followed by an EOI marker was cut short. Checked by hand
/// because some decoders fill the missing rows with grey instead of failing.
fn jpeg_truncated(bytes: &[u8]) -> bool {
    if !bytes.starts_with(&[0xFF, 0xD8]) {
        return false;
    }
    // 0xFF inside entropy-coded data is always followed by 0x00 or a restart marker, so these
    // byte pairs are real markers.
    let last_sos = bytes.windows(2).rposition(|w| w == [0xFF, 0xDA]);
    let last_eoi = bytes.windows(2).rposition(|w| w == [0xFF, 0xD9]);
    match (last_sos, last_eoi) {
        (Some(s), Some(e)) => e < s,
        _ => true,
    }
}

/// Reads and decodes one file to luma (grey sources) or RGB (everything else, alpha dropped).
pub(crate) fn decode(path: &Path) -> Result<Image> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    let fail = |msg: String| DataError::Decode { path: path.into(), msg };
    if jpeg_truncated(&bytes) {
        return Err(fail("truncated JPEG (no end-of-image marker after the last scan)".into()));
    }
    let img = image::ImageReader::new(std::io::Cursor::new(&bytes))
        .with_guessed_format()
        .map_err(|e| fail(e.to_string()))?
        .decode()
        .map_err(|e| fail(e.to_string()))?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    if w == 0 || h == 0 {
        return Err(fail("empty image".into()));
    }
    Ok(if img.color().channel_count() <= 2 {
        Image::new(w, h, 1, img.into_luma8().into_raw())
    } else {
        Image::new(w, h, 3, img.into_rgb8().into_raw())
    })
}
