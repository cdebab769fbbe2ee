//! ImageNet-style folders: `<root>/{train,val}/<class>/**/*.{jpg,jpeg,png,webp}`.
//!
//! Symbolic links are followed, each real directory (device + inode) at most once: a link back
//! to a folder already walked (`loop -> ..`, `self -> .`, a second link to one folder) is not
//! followed and a warning names it. The walk is bounded: [`MAX_DEPTH`] folders below a class
//! folder and [`MAX_FILES`] images per split. Every image is read through
//! [`lkd_preprocess::read_image_file`] (regular files only, at most
//! [`lkd_preprocess::DEFAULT_MAX_FILE_BYTES`]).

use super::{io_err, DataError, EmptyClasses, Image, Result, Split, Store};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

const EXTENSIONS: [&str; 4] = ["jpg", "jpeg", "png", "webp"];
const LAYOUT: &str =
    "  train/<class>/<image>.{jpg,jpeg,png,webp}\n  val/<class>/<image>.{jpg,jpeg,png,webp}\n\
                      (classes are the sorted folder names of train/, one folder per class)";

/// Folders below a class folder; deeper trees are refused (a dataset is a few levels deep).
pub const MAX_DEPTH: usize = 32;
/// Images per split (ImageNet-1k's train split holds 1.28 M).
pub const MAX_FILES: usize = 10_000_000;

/// A real directory: device and inode, so every path (links included) to it is the same id.
type DirId = (u64, u64);

#[cfg(unix)]
fn dir_id(_path: &Path, meta: &std::fs::Metadata) -> DirId {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

#[cfg(not(unix))]
fn dir_id(path: &Path, _meta: &std::fs::Metadata) -> DirId {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::fs::canonicalize(path)
        .unwrap_or_else(|_| path.into())
        .hash(&mut h);
    (0, h.finish())
}

fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// A bounded walk that follows each real directory once.
struct Walk {
    /// Real directories walked (or about to be), with the path they were first reached by.
    visited: HashMap<DirId, PathBuf>,
    warnings: Vec<String>,
    max_depth: usize,
    max_files: usize,
    files: usize,
}

impl Walk {
    fn new(max_depth: usize, max_files: usize) -> Self {
        Self {
            visited: HashMap::new(),
            warnings: Vec::new(),
            max_depth,
            max_files,
            files: 0,
        }
    }

    /// Marks `dir` as walked; `Err(first path)` when it was reached before.
    fn enter(&mut self, dir: &Path) -> Result<Result<(), PathBuf>> {
        let meta = std::fs::metadata(dir).map_err(io_err(dir))?;
        match self.visited.entry(dir_id(dir, &meta)) {
            std::collections::hash_map::Entry::Occupied(e) => Ok(Err(e.get().clone())),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(dir.to_path_buf());
                Ok(Ok(()))
            }
        }
    }

    /// Images under `dir` (already entered), sorted per folder; stops after `stop_at` images.
    fn collect(
        &mut self,
        dir: &Path,
        depth: usize,
        stop_at: usize,
        out: &mut Vec<PathBuf>,
    ) -> Result<()> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io_err(dir))?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .map_err(io_err(dir))?;
        entries.sort();
        for p in entries {
            if out.len() >= stop_at {
                return Ok(());
            }
            // A dangling or self-referencing link has no metadata: an image name is kept (its
            // read fails and it is skipped with the reason), anything else is ignored.
            let is_dir = std::fs::metadata(&p).is_ok_and(|m| m.is_dir());
            if is_dir {
                if let Err(first) = self.enter(&p)? {
                    self.warnings.push(format!(
                        "`{}` leads to `{}`, a folder already walked: not followed (a symlink \
                         loop, or a second link to one folder)",
                        p.display(),
                        first.display()
                    ));
                    continue;
                }
                if depth >= self.max_depth {
                    return Err(DataError::Config(format!(
                        "`{}` is more than {} folders below its class folder: the walk stops \
                         there (flatten the dataset)",
                        p.display(),
                        self.max_depth
                    )));
                }
                self.collect(&p, depth + 1, stop_at, out)?;
            } else if is_image(&p) {
                if self.files >= self.max_files {
                    return Err(DataError::Config(format!(
                        "more than {} images under `{}`: the limit for one split of a folder \
                         dataset",
                        self.max_files,
                        dir.display()
                    )));
                }
                self.files += 1;
                out.push(p);
            }
        }
        Ok(())
    }
}

/// The class folders of a split (sorted names, hidden folders skipped). A class folder that is
/// a link to the split, the dataset root or another class folder is an error naming it.
fn class_dirs(root: &Path, dir: &Path, walk: &mut Walk) -> Result<Vec<String>> {
    for d in [root, dir] {
        let _ = walk.enter(d)?;
    }
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
    for name in &names {
        let p = dir.join(name);
        if let Err(first) = walk.enter(&p)? {
            return Err(DataError::Config(format!(
                "class folder `{}` leads to `{}`, a folder already in the dataset (a symlink \
                 loop, or two links to one folder): remove the link",
                p.display(),
                first.display()
            )));
        }
    }
    Ok(names)
}

fn missing(root: &Path, what: String) -> DataError {
    DataError::Missing {
        root: root.into(),
        what,
        layout: LAYOUT.into(),
    }
}

/// Label names, from train/ so both splits agree even if val/ lacks a class. With
/// `EmptyClasses::Exclude`, train/ folders without an image are left out.
fn train_classes(
    root: &Path,
    split: Split,
    split_dir: &Path,
    empty: EmptyClasses,
) -> Result<Vec<String>> {
    let train = root.join("train");
    let dir = if train.is_dir() { &train } else { split_dir };
    let mut walk = Walk::new(MAX_DEPTH, MAX_FILES);
    let names = class_dirs(root, dir, &mut walk)?;
    if empty == EmptyClasses::Error {
        return Ok(names);
    }
    let mut kept = Vec::new();
    for name in names {
        let mut one = Vec::new();
        walk.collect(&dir.join(&name), 0, 1, &mut one)?;
        if !one.is_empty() {
            kept.push(name);
        } else if split == Split::Train {
            eprintln!(
                "warning: class folder `{}` holds no image: left out (empty_classes = \"exclude\")",
                dir.join(&name).display()
            );
        }
    }
    Ok(kept)
}

pub(crate) fn open(root: &Path, split: Split, empty: EmptyClasses) -> Result<(Vec<String>, Store)> {
    open_bounded(root, split, empty, MAX_DEPTH, MAX_FILES)
}

fn open_bounded(
    root: &Path,
    split: Split,
    empty: EmptyClasses,
    max_depth: usize,
    max_files: usize,
) -> Result<(Vec<String>, Store)> {
    if !root.is_dir() {
        return Err(missing(root, "directory does not exist".into()));
    }
    let dir = root.join(split.as_str());
    if !dir.is_dir() {
        return Err(missing(root, format!("no `{}/` folder", split.as_str())));
    }
    let classes = train_classes(root, split, &dir, empty)?;
    if classes.is_empty() {
        return Err(missing(
            root,
            format!("`{}` has no class folders", dir.display()),
        ));
    }
    let mut walk = Walk::new(max_depth, max_files);
    let names = class_dirs(root, &dir, &mut walk)?;
    let mut files = Vec::new();
    for name in names {
        let class_dir = dir.join(&name);
        let mut paths = Vec::new();
        walk.collect(&class_dir, 0, usize::MAX, &mut paths)?;
        let Ok(label) = classes.binary_search(&name) else {
            if paths.is_empty() && empty == EmptyClasses::Exclude {
                continue; // an empty class left out of train/ is empty here too
            }
            return Err(missing(
                root,
                format!(
                    "class folder `{}/{name}` has no counterpart in train/",
                    split.as_str()
                ),
            ));
        };
        if paths.is_empty() {
            // val/ may lack a class (the dataset summary shows it); train/ may not.
            if split == Split::Train {
                return Err(DataError::EmptyClass { dir: class_dir });
            }
        }
        files.extend(paths.into_iter().map(|p| (p, label as u32)));
    }
    for w in &walk.warnings {
        eprintln!("warning: {w}");
    }
    if files.is_empty() {
        return Err(missing(
            root,
            format!("no .jpg/.jpeg/.png/.webp files under `{}`", dir.display()),
        ));
    }
    Ok((classes, Store::Files { files }))
}

/// Whether `relative` (a file's path inside the dataset folder) belongs to the validation
/// share `fraction`: the first 8 bytes of its SHA-256 as a number in [0, 1).
pub(crate) fn in_val_share(relative: &Path, fraction: f64) -> bool {
    use sha2::Digest;
    let h = sha2::Sha256::digest(relative.to_string_lossy().as_bytes());
    let x = u64::from_be_bytes(h[..8].try_into().expect("8 bytes")) as f64 / 2f64.powi(64);
    x < fraction
}

/// A folder without train/ and val/ (`root/<class>/*`): each file goes to the validation split
/// when [`in_val_share`] says so, to the training split otherwise.
pub(crate) fn open_unsplit(
    root: &Path,
    split: Split,
    empty: EmptyClasses,
    fraction: f64,
) -> Result<(Vec<String>, Store)> {
    if !root.is_dir() {
        return Err(missing(root, "directory does not exist".into()));
    }
    if let Some(s) = ["train", "val"].iter().find(|s| root.join(s).is_dir()) {
        return Err(DataError::Config(format!(
            "{} has a `{s}/` folder, so it is split already: remove val_fraction, or give the folder of class folders",
            root.display()
        )));
    }
    let mut walk = Walk::new(MAX_DEPTH, MAX_FILES);
    let names = class_dirs(root, root, &mut walk)?;
    let mut classes = vec![];
    let mut files = vec![];
    for name in names {
        let mut paths = Vec::new();
        walk.collect(&root.join(&name), 0, usize::MAX, &mut paths)?;
        if paths.is_empty() {
            match empty {
                EmptyClasses::Error => {
                    return Err(DataError::EmptyClass {
                        dir: root.join(&name),
                    })
                }
                EmptyClasses::Exclude => {
                    if split == Split::Train {
                        eprintln!(
                            "warning: class folder `{}` holds no image: left out (empty_classes = \"exclude\")",
                            root.join(&name).display()
                        );
                    }
                    continue;
                }
            }
        }
        let label = classes.len() as u32;
        classes.push(name);
        files.extend(
            paths
                .into_iter()
                .filter(|p| {
                    let rel = p.strip_prefix(root).unwrap_or(p);
                    in_val_share(rel, fraction) == (split == Split::Val)
                })
                .map(|p| (p, label)),
        );
    }
    for w in &walk.warnings {
        eprintln!("warning: {w}");
    }
    if classes.is_empty() {
        return Err(missing(
            root,
            format!("`{}` has no class folders", root.display()),
        ));
    }
    if files.is_empty() {
        return Err(missing(
            root,
            format!(
                "no {} files under `{}` at val_fraction {fraction}",
                split.as_str(),
                root.display()
            ),
        ));
    }
    Ok((classes, Store::Files { files }))
}

/// Reads (bounded, see [`lkd_preprocess::read_image_file`]) and decodes one file with the
/// serving decoder (size bounds from the header, truncated JPEGs refused): luma for grey
/// sources, RGB for everything else. Evaluation decodes here, so its pixels are `lkd predict`'s.
pub(crate) fn decode(path: &Path) -> Result<Image> {
    serving_decode(path, &read(path)?, |_, _| 1.0).map(|(image, _)| image)
}

/// The serving decoder ([`lkd_preprocess::decode_reduced`]) on bytes already read.
fn serving_decode(
    path: &Path,
    bytes: &[u8],
    min_scale: impl FnOnce(u32, u32) -> f64,
) -> Result<(Image, [usize; 2])> {
    let (pixels, [w, h]) =
        lkd_preprocess::decode_reduced(bytes, &lkd_preprocess::Limits::default(), min_scale)
            .map_err(|source| DataError::Decode {
                path: path.into(),
                source,
            })?;
    Ok((super::ops::from_pixels(pixels), [w as usize, h as usize]))
}

fn read(path: &Path) -> Result<Vec<u8>> {
    lkd_preprocess::read_image_file(path, lkd_preprocess::DEFAULT_MAX_FILE_BYTES).map_err(
        |source| DataError::Decode {
            path: path.into(),
            source,
        },
    )
}

/// The training decode: a JPEG whose `min_scale(width, height)` is below 1 (a random-resized
/// crop that needs less than the full resolution) goes through libjpeg-turbo at the smallest DCT
/// scale N/8 (N = 1..7) that keeps that share in both axes (as PIL's `draft`), after the serving
/// decoder's checks (size bounds from the header, truncated JPEGs refused). Everything else (full
/// resolution, so evaluation's pixels stay `lkd predict`'s; other formats; CMYK JPEGs) goes
/// through the serving decoder. Returns the image and the full-size `[width, height]`.
pub(crate) fn decode_reduced(
    path: &Path,
    min_scale: impl FnOnce(usize, usize) -> f64,
) -> Result<(Image, [usize; 2])> {
    let bytes = read(path)?;
    if !bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        return serving_decode(path, &bytes, |w, h| min_scale(w as usize, h as usize));
    }
    match turbo::decode_scaled(&bytes, &lkd_preprocess::Limits::default(), min_scale) {
        Ok(turbo::Decoded::Image(image, full)) => Ok((image, full)),
        Ok(turbo::Decoded::Unsupported(scale)) => serving_decode(path, &bytes, |_, _| scale),
        Err(source) => Err(DataError::Decode {
            path: path.into(),
            source,
        }),
    }
}

/// libjpeg-turbo's TurboJPEG API (the system library, found by pkg-config; the bootstrap
/// installs Debian's libturbojpeg0-dev). One decompressor per thread.
mod turbo {
    use super::Image;
    use lkd_preprocess::{Limits, PreprocessError};
    use std::ffi::CStr;
    use turbojpeg_sys as tj;

    pub(super) enum Decoded {
        Image(Image, [usize; 2]),
        /// Full resolution asked for, or not luma or YCbCr/RGB (CMYK): the caller decodes it
        /// with the serving decoder, at this scale.
        Unsupported(f64),
    }

    struct Handle(tj::tjhandle);

    impl Drop for Handle {
        fn drop(&mut self) {
            // SAFETY: the handle came from tjInitDecompress and is destroyed once.
            unsafe { tj::tjDestroy(self.0) };
        }
    }

    thread_local! {
        static HANDLE: Handle = Handle(
            // SAFETY: no arguments; a null handle is checked before use.
            unsafe { tj::tjInitDecompress() },
        );
    }

    fn error(msg: String) -> PreprocessError {
        PreprocessError::Decode {
            source: image::ImageError::Decoding(image::error::DecodingError::new(
                image::error::ImageFormatHint::Exact(image::ImageFormat::Jpeg),
                msg,
            )),
        }
    }

    fn message(h: tj::tjhandle) -> String {
        // SAFETY: tjGetErrorStr2 returns a NUL-terminated string owned by the handle (or a
        // static one), valid until the next call on it.
        unsafe {
            let s = tj::tjGetErrorStr2(h);
            if s.is_null() {
                "libjpeg-turbo error".into()
            } else {
                CStr::from_ptr(s).to_string_lossy().into_owned()
            }
        }
    }

    /// The smallest N/8 with N/8 >= `scale` (N = 8 when `scale` >= 1).
    pub(super) fn eighths(scale: f64) -> usize {
        (1..=8).find(|&n| n as f64 / 8.0 >= scale).unwrap_or(8)
    }

    pub(super) fn decode_scaled(
        bytes: &[u8],
        limits: &Limits,
        min_scale: impl FnOnce(usize, usize) -> f64,
    ) -> Result<Decoded, PreprocessError> {
        if let Some(reason) = lkd_preprocess::jpeg_is_truncated(bytes) {
            return Err(PreprocessError::TruncatedJpeg(reason));
        }
        let len = std::os::raw::c_ulong::try_from(bytes.len())
            .map_err(|_| error("file too large".into()))?;
        HANDLE.with(|handle| {
            let h = handle.0;
            if h.is_null() {
                return Err(error("tjInitDecompress failed".into()));
            }
            let (mut w, mut ht, mut subsamp, mut cs) = (0, 0, 0, 0);
            // SAFETY: `bytes` is valid for `len` bytes; the outputs are plain ints.
            let rc = unsafe {
                tj::tjDecompressHeader3(
                    h,
                    bytes.as_ptr(),
                    len,
                    &mut w,
                    &mut ht,
                    &mut subsamp,
                    &mut cs,
                )
            };
            if rc != 0 {
                return Err(error(message(h)));
            }
            let (width, height) = (w.max(0) as usize, ht.max(0) as usize);
            limits.check(width as u64, height as u64)?;
            let scale = min_scale(width, height);
            if scale >= 1.0 {
                // No reduction: the serving decoder's pixels, the ones evaluation and `lkd
                // predict` see (eval geometry asks for the full resolution).
                return Ok(Decoded::Unsupported(scale));
            }
            let (format, channels) = match cs as tj::TJCS {
                tj::TJCS_TJCS_GRAY => (tj::TJPF_TJPF_GRAY, 1),
                tj::TJCS_TJCS_YCbCr | tj::TJCS_TJCS_RGB => (tj::TJPF_TJPF_RGB, 3),
                _ => return Ok(Decoded::Unsupported(scale)),
            };
            // TJSCALED: ceil(side * N / 8); libjpeg-turbo picks the largest factor that fits.
            let n = eighths(scale);
            let side = |s: usize| (s * n).div_ceil(8);
            let (sw, sh) = (side(width), side(height));
            let mut data = vec![0u8; sw * sh * channels];
            // SAFETY: `data` holds sw×sh pixels of `channels` bytes with pitch sw×channels, the
            // size libjpeg-turbo writes for a factor that fits sw×sh.
            let rc = unsafe {
                tj::tjDecompress2(
                    h,
                    bytes.as_ptr(),
                    len,
                    data.as_mut_ptr(),
                    sw as i32,
                    (sw * channels) as i32,
                    sh as i32,
                    format,
                    0,
                )
            };
            // A warning (recoverable corrupt data) still leaves a full image, as in Pillow.
            // SAFETY: h is a live handle.
            if rc != 0 && unsafe { tj::tjGetErrorCode(h) } != tj::TJERR_TJERR_WARNING as i32 {
                return Err(error(message(h)));
            }
            Ok(Decoded::Image(
                Image::new(sw, sh, channels, data),
                [width, height],
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn tree(root: &Path) {
        for (class, n) in [("a", 2), ("b", 1)] {
            let d = root.join("train").join(class);
            std::fs::create_dir_all(d.join("deep")).unwrap();
            for i in 0..n {
                std::fs::write(d.join(format!("{i}.jpg")), b"x").unwrap();
            }
            std::fs::write(d.join("deep/z.png"), b"x").unwrap();
        }
    }

    fn files(store: Store) -> Vec<PathBuf> {
        match store {
            Store::Files { files } => files.into_iter().map(|f| f.0).collect(),
            Store::Memory { .. } => unreachable!(),
        }
    }

    /// The training decode of a JPEG through libjpeg-turbo: the N/8 size that covers the crop,
    /// pixels close to the serving decoder's at the same DCT scale, the full size returned,
    /// grey kept grey, and a truncated file refused as the serving decoder refuses it.
    #[test]
    fn reduced_jpeg_decode_goes_through_libjpeg_turbo() {
        let dir = tempfile::tempdir().unwrap();
        let rgb = dir.path().join("rgb.jpg");
        image::RgbImage::from_fn(640, 480, |x, y| {
            image::Rgb([(x / 3) as u8, (y / 2) as u8, ((x + y) / 5) as u8])
        })
        .save(&rgb)
        .unwrap();
        assert_eq!(
            [0.1, 0.125, 0.3, 0.5, 0.9].map(turbo::eighths),
            [1, 1, 3, 4, 8]
        );
        let (image, full) = decode_reduced(&rgb, |_, _| 0.3).unwrap();
        assert_eq!(full, [640, 480]);
        assert_eq!((image.width, image.height, image.channels), (240, 180, 3));
        // At 1/2 both decoders scale in the IDCT: the same picture up to rounding.
        let (turbo_half, _) = decode_reduced(&rgb, |_, _| 0.5).unwrap();
        let bytes = std::fs::read(&rgb).unwrap();
        let (serving_half, _) = serving_decode(&rgb, &bytes, |_, _| 0.5).unwrap();
        assert_eq!(
            (turbo_half.width, turbo_half.height),
            (serving_half.width, serving_half.height)
        );
        let mean_diff = turbo_half
            .data
            .iter()
            .zip(&serving_half.data)
            .map(|(a, b)| (*a as f64 - *b as f64).abs())
            .sum::<f64>()
            / turbo_half.data.len() as f64;
        assert!(mean_diff < 2.0, "mean |difference| {mean_diff}");

        let grey = dir.path().join("grey.jpg");
        image::GrayImage::from_fn(320, 200, |x, y| image::Luma([(x ^ y) as u8]))
            .save(&grey)
            .unwrap();
        let (image, _) = decode_reduced(&grey, |_, _| 0.25).unwrap();
        assert_eq!((image.width, image.height, image.channels), (80, 50, 1));

        let cut = dir.path().join("cut.jpg");
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        let turbo_err = decode_reduced(&cut, |_, _| 0.3).unwrap_err().to_string();
        let serving_err = serving_decode(&cut, &bytes[..bytes.len() / 2], |_, _| 0.3)
            .unwrap_err()
            .to_string();
        assert_eq!(turbo_err, serving_err);
    }

    #[test]
    fn symlink_loops_are_walked_once_and_named() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        tree(root);
        // Back to the split, to the class itself, and a second link to another class.
        symlink("..", root.join("train/a/loop")).unwrap();
        symlink(".", root.join("train/a/deep/self")).unwrap();
        symlink("../b", root.join("train/a/other")).unwrap();
        let start = std::time::Instant::now();
        let (classes, store) = open(root, Split::Train, EmptyClasses::Error).unwrap();
        assert!(start.elapsed().as_secs() < 5);
        assert_eq!(classes, ["a", "b"]);
        let rel: Vec<_> = files(store)
            .iter()
            .map(|p| p.strip_prefix(root).unwrap().display().to_string())
            .collect();
        assert_eq!(
            rel,
            [
                "train/a/0.jpg",
                "train/a/1.jpg",
                "train/a/deep/z.png",
                "train/b/0.jpg",
                "train/b/deep/z.png"
            ]
        );

        // A class folder that is the split itself is an error naming it.
        symlink(".", root.join("train/selfloop")).unwrap();
        let e = open(root, Split::Train, EmptyClasses::Error)
            .err()
            .unwrap()
            .to_string();
        assert_eq!(
            e,
            format!(
                "data config: class folder `{}` leads to `{}`, a folder already in the dataset \
                 (a symlink loop, or two links to one folder): remove the link",
                root.join("train/selfloop").display(),
                root.join("train").display()
            )
        );
    }

    #[test]
    fn walk_depth_and_file_count_are_bounded() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        tree(root);
        let e = open_bounded(root, Split::Train, EmptyClasses::Error, 0, 100)
            .err()
            .unwrap()
            .to_string();
        assert_eq!(
            e,
            format!(
                "data config: `{}` is more than 0 folders below its class folder: the walk stops \
                 there (flatten the dataset)",
                root.join("train/a/deep").display()
            )
        );
        let e = open_bounded(root, Split::Train, EmptyClasses::Error, 4, 3)
            .err()
            .unwrap()
            .to_string();
        assert_eq!(
            e,
            format!(
                "data config: more than 3 images under `{}`: the limit for one split of a folder \
                 dataset",
                root.join("train/b").display()
            )
        );
        assert!(open_bounded(root, Split::Train, EmptyClasses::Error, 1, 5).is_ok());
    }

    #[test]
    fn an_empty_class_is_an_error_or_excluded() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        tree(root);
        std::fs::create_dir_all(root.join("train/c_empty/sub")).unwrap();
        std::fs::create_dir_all(root.join("val/a")).unwrap();
        std::fs::create_dir_all(root.join("val/c_empty")).unwrap();
        std::fs::write(root.join("val/a/v.jpg"), b"x").unwrap();
        let e = open(root, Split::Train, EmptyClasses::Error)
            .err()
            .unwrap()
            .to_string();
        assert_eq!(
            e,
            format!(
                "class folder `{}` holds no .jpg/.jpeg/.png/.webp file: add images, remove the \
                 folder, or set `empty_classes = \"exclude\"` in the dataset config to leave it out",
                root.join("train/c_empty").display()
            )
        );
        for split in [Split::Train, Split::Val] {
            let (classes, _) = open(root, split, EmptyClasses::Exclude).unwrap();
            assert_eq!(classes, ["a", "b"], "{split:?}");
        }
    }
}
