//! Data pipeline: dataset readers (IDX, CIFAR binary, ImageNet-style folders), per-sample
//! transforms on u8 HWC images, batch-level Mixup/CutMix, and a deterministic, resumable,
//! multi-threaded loader that yields `tch` tensors. Normalization always comes from the model's
//! `Preprocess`; nothing here holds mean/std values.

mod cifar;
pub mod cluttered;
mod folder;
mod idx;
pub mod loader;
pub mod mixup;
pub mod ops;
pub mod randaug;
mod rng;
pub mod shard;
pub mod synthetic;
pub mod transform;

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub use folder::{MAX_DEPTH as FOLDER_MAX_DEPTH, MAX_FILES as FOLDER_MAX_FILES};
pub use loader::{Batch, Epoch, Loader, LoaderConfig, LoaderState, LoaderStats};
pub use mixup::{Mixup, MixupConfig};
pub use randaug::RandAugment;
pub use shard::Shard;
pub use transform::{AugmentConfig, DecodePlan, RrcConfig, Transform};

#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The display names the file only; the io error is the source.
    #[error("{path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("dataset not found: {what}\nexpected layout under {root}:\n{layout}")]
    Missing {
        root: PathBuf,
        what: String,
        layout: String,
    },
    #[error("{path}: malformed file: {msg}")]
    Format { path: PathBuf, msg: String },
    #[error("{path}: cannot decode image (set `strict = false` to skip such files)")]
    Decode {
        path: PathBuf,
        #[source]
        source: lkd_preprocess::PreprocessError,
    },
    #[error("{path}: cannot write the generated image")]
    Encode {
        path: PathBuf,
        #[source]
        source: image::ImageError,
    },
    #[error(
        "class folder `{dir}` holds no .jpg/.jpeg/.png/.webp file: add images, remove the folder, \
         or set `empty_classes = \"exclude\"` in the dataset config to leave it out"
    )]
    EmptyClass { dir: PathBuf },
    #[error("data config: {0}")]
    Config(String),
    /// A sample the configured preprocessing cannot produce (e.g. a resize past the limit).
    #[error("sample {index}: cannot preprocess it")]
    Transform {
        index: usize,
        #[source]
        source: lkd_preprocess::PreprocessError,
    },
    #[error("data config: invalid preprocessing")]
    Preprocess(#[from] lkd_models::PreprocessSpecError),
    #[error("sample {index} is out of range: the dataset has {len} samples")]
    Index { index: usize, len: usize },
    #[error("loader: {0}")]
    Loader(String),
    #[error(transparent)]
    Torch(#[from] tch::TchError),
}

/// Classes up to which [`summary`] lists every one; above, the smallest and largest.
const SUMMARY_CLASSES: usize = 32;

/// What a run trains on, printed at its start: images per class and split, e.g.
/// `dataset folder/train: 8 images, folder/val: 4 images, 2 classes` then one line per class
/// (`  cat  train 5  val 2`). Classes with no validation image are named.
pub fn summary(train: &Dataset, val: &Dataset) -> String {
    let (tc, vc) = (train.class_counts(), val.class_counts());
    let mut out = format!(
        "dataset {}: {} images, {}: {} images, {} classes",
        train.name(),
        train.len(),
        val.name(),
        val.len(),
        train.num_classes()
    );
    let names = train.classes();
    let width = names.iter().map(|n| n.len()).max().unwrap_or(0);
    let line = |i: usize| {
        format!(
            "\n  {:width$}  train {}  val {}",
            names[i],
            tc[i],
            vc.get(i).copied().unwrap_or(0)
        )
    };
    if names.len() <= SUMMARY_CLASSES {
        (0..names.len()).for_each(|i| out.push_str(&line(i)));
    } else {
        let min = (0..names.len()).min_by_key(|&i| tc[i]).unwrap_or(0);
        let max = (0..names.len()).max_by_key(|&i| tc[i]).unwrap_or(0);
        out.push_str(&format!("\n  fewest train images:{}", line(min)));
        out.push_str(&format!("\n  most train images:{}", line(max)));
    }
    let no_val: Vec<&str> = (0..names.len())
        .filter(|&i| vc.get(i).copied().unwrap_or(0) == 0)
        .map(|i| names[i].as_str())
        .collect();
    if !no_val.is_empty() && !val.is_empty() {
        out.push_str(&format!(
            "\n  no validation image of {} class(es): {}",
            no_val.len(),
            no_val
                .iter()
                .take(8)
                .copied()
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    out
}

/// Train classes this many times apart in size (most / fewest) get a warning.
pub const IMBALANCE_WARNING_RATIO: f64 = 5.0;

/// A warning when the largest train class holds [`IMBALANCE_WARNING_RATIO`] times the images of
/// the smallest and sampling is not class-balanced.
pub fn imbalance_warning(train: &Dataset, balanced: bool) -> Option<String> {
    let counts = train.class_counts();
    let names = train.classes();
    let (lo, hi) = (
        (0..counts.len()).min_by_key(|&i| counts[i])?,
        (0..counts.len()).max_by_key(|&i| counts[i])?,
    );
    let ratio = counts[hi] as f64 / counts[lo].max(1) as f64;
    (ratio >= IMBALANCE_WARNING_RATIO && !balanced).then(|| {
        format!(
            "warning: classes are imbalanced: `{}` has {} train images, `{}` {} ({ratio:.1}x); \
             data.balanced_sampling = true draws every class equally often",
            names[hi], counts[hi], names[lo], counts[lo]
        )
    })
}

pub type Result<T, E = DataError> = std::result::Result<T, E>;

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> DataError + '_ {
    move |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// An 8-bit image, rows of interleaved channels (HWC); `channels` is 1 (luma) or 3 (RGB).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub data: Vec<u8>,
}

impl Image {
    pub fn new(width: usize, height: usize, channels: usize, data: Vec<u8>) -> Self {
        assert_eq!(data.len(), width * height * channels, "image buffer size");
        Self {
            width,
            height,
            channels,
            data,
        }
    }

    pub fn filled(width: usize, height: usize, channels: usize, value: u8) -> Self {
        Self {
            width,
            height,
            channels,
            data: vec![value; width * height * channels],
        }
    }

    #[inline]
    pub fn px(&self, x: usize, y: usize, c: usize) -> u8 {
        self.data[(y * self.width + x) * self.channels + c]
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    pub image: Image,
    pub label: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, strum::IntoStaticStr)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Split {
    Train,
    Val,
}

impl Split {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, strum::IntoStaticStr)]
#[serde(rename_all = "kebab-case")]
#[strum(serialize_all = "kebab-case")]
pub enum DatasetKind {
    FashionMnist,
    Mnist,
    /// Any IDX pair with the MNIST file names; classes are the label values.
    Idx,
    Cifar10,
    Cifar100,
    /// `train/<class>/*.{jpg,jpeg,png,webp}` and `val/<class>/...`.
    Folder,
    /// Fashion-MNIST items at random positions on a larger canvas among fragments of other
    /// items (`canvas`, `clutter`); `path` is the Fashion-MNIST folder.
    ClutteredFashionMnist,
}

/// What a folder dataset does with a class folder of train/ that holds no image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmptyClasses {
    /// Refuse the dataset, naming the folder.
    #[default]
    Error,
    /// Leave the class out (a warning names it): the labels are the other folders.
    Exclude,
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// Where a dataset lives and how to read it; deserializes from a config table such as
/// `{ kind = "fashion-mnist", path = "/usr/share/datasets/fashion-mnist", limit = 5000 }`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetSpec {
    pub kind: DatasetKind,
    pub path: PathBuf,
    /// Use a fixed subset of this many training samples (same subset every run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// The same for the validation split.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_limit: Option<usize>,
    /// CIFAR-100 only: train on the 20 coarse labels instead of the 100 fine ones.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub coarse_labels: bool,
    /// Stop at the first undecodable file instead of skipping and counting it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub strict: bool,
    /// cluttered-fashion-mnist only: canvas side in pixels (default 64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canvas: Option<usize>,
    /// cluttered-fashion-mnist only: fragments of other items per canvas (default 6).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clutter: Option<usize>,
    /// Folder datasets: an empty class folder is an error (default) or left out.
    #[serde(default, skip_serializing_if = "is_default")]
    pub empty_classes: EmptyClasses,
    /// Folder datasets without a split (`path/<class>/*.jpg`): this share of each class
    /// becomes the validation split, chosen by a hash of the file's path inside the folder, so
    /// a file's split never changes when files are added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_fraction: Option<f64>,
    /// Keep only these classes (label indices of the source), relabelled 0.. in this order:
    /// e.g. a transfer experiment's pretraining and target halves of one dataset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_subset: Option<Vec<usize>>,
    /// Train on a fixed subset of this many samples of each class (the same samples every
    /// run); exclusive with `limit`. The validation split keeps `val_limit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_class_limit: Option<usize>,
}

impl DatasetSpec {
    pub fn new(kind: DatasetKind, path: impl Into<PathBuf>) -> Self {
        Self {
            kind,
            path: path.into(),
            limit: None,
            val_limit: None,
            coarse_labels: false,
            strict: false,
            canvas: None,
            clutter: None,
            empty_classes: EmptyClasses::Error,
            val_fraction: None,
            class_subset: None,
            per_class_limit: None,
        }
    }

    /// Fashion-MNIST at `$LKD_FASHION_MNIST`; the error says how to get it.
    pub fn fashion_mnist_from_env() -> Result<Self> {
        let path = std::env::var_os("LKD_FASHION_MNIST").ok_or_else(|| {
            DataError::Config(
                "LKD_FASHION_MNIST is not set: `apt-get install dataset-fashion-mnist` and point it at \
                 /usr/share/datasets/fashion-mnist (make does this)"
                    .into(),
            )
        })?;
        Ok(Self::new(DatasetKind::FashionMnist, PathBuf::from(path)))
    }
}

pub(crate) enum Store {
    /// Decoded up front (IDX, CIFAR): all images share one size.
    Memory {
        width: usize,
        height: usize,
        channels: usize,
        pixels: Vec<u8>,
        labels: Vec<u32>,
    },
    /// Decoded lazily on the loader's worker threads.
    Files { files: Vec<(PathBuf, u32)> },
}

/// A split of a dataset; `get` is safe to call from many threads.
pub struct Dataset {
    name: String,
    root: PathBuf,
    classes: Vec<String>,
    store: Store,
    /// Subset selected by `limit`, in original order.
    subset: Option<Vec<usize>>,
    strict: bool,
}

/// The classes `keep` (source label indices, distinct) relabelled 0.. in that order, the other
/// samples dropped.
fn keep_classes(
    classes: Vec<String>,
    store: Store,
    keep: &[usize],
) -> Result<(Vec<String>, Store)> {
    let mut new_label = vec![None; classes.len()];
    for (new, &old) in keep.iter().enumerate() {
        match new_label.get_mut(old) {
            Some(slot @ None) => *slot = Some(new as u32),
            Some(Some(_)) => {
                return Err(DataError::Config(format!(
                    "class_subset names class {old} twice"
                )))
            }
            None => {
                return Err(DataError::Config(format!(
                    "class_subset names class {old}, but the dataset has {} classes (0..{})",
                    classes.len(),
                    classes.len().saturating_sub(1)
                )))
            }
        }
    }
    if keep.is_empty() {
        return Err(DataError::Config("class_subset is empty".into()));
    }
    let names = keep.iter().map(|&k| classes[k].clone()).collect();
    let store = match store {
        Store::Memory {
            width,
            height,
            channels,
            pixels,
            labels,
        } => {
            let n = width * height * channels;
            let mut kept_pixels = vec![];
            let mut kept_labels = vec![];
            for (i, &l) in labels.iter().enumerate() {
                if let Some(new) = new_label[l as usize] {
                    kept_pixels.extend_from_slice(&pixels[i * n..(i + 1) * n]);
                    kept_labels.push(new);
                }
            }
            Store::Memory {
                width,
                height,
                channels,
                pixels: kept_pixels,
                labels: kept_labels,
            }
        }
        Store::Files { files } => Store::Files {
            files: files
                .into_iter()
                .filter_map(|(p, l)| new_label[l as usize].map(|n| (p, n)))
                .collect(),
        },
    };
    Ok((names, store))
}

/// A fixed choice of up to `n` samples of each class (sorted indices).
fn per_class_subset(store: &Store, classes: usize, n: usize) -> Vec<usize> {
    let labels: Vec<u32> = match store {
        Store::Memory { labels, .. } => labels.clone(),
        Store::Files { files } => files.iter().map(|f| f.1).collect(),
    };
    let mut shuffled: Vec<usize> = (0..labels.len()).collect();
    {
        use rand::seq::SliceRandom;
        shuffled.shuffle(&mut rng::rng_for(&[0x9C1A55, labels.len() as u64]));
    }
    let mut taken = vec![0usize; classes];
    let mut out: Vec<usize> = shuffled
        .into_iter()
        .filter(|&i| {
            let c = &mut taken[labels[i] as usize];
            *c += 1;
            *c <= n
        })
        .collect();
    out.sort_unstable();
    out
}

/// Opens one split of the dataset described by `spec`.
pub fn open(spec: &DatasetSpec, split: Split) -> Result<Dataset> {
    if spec.kind != DatasetKind::ClutteredFashionMnist
        && (spec.canvas.is_some() || spec.clutter.is_some())
    {
        return Err(DataError::Config(
            "`canvas` and `clutter` apply only to kind = \"cluttered-fashion-mnist\"".into(),
        ));
    }
    if let Some(f) = spec.val_fraction {
        if spec.kind != DatasetKind::Folder {
            return Err(DataError::Config(
                "`val_fraction` applies only to kind = \"folder\"".into(),
            ));
        }
        if !(f > 0.0 && f < 1.0) {
            return Err(DataError::Config(format!(
                "data.dataset.val_fraction must be in (0, 1), found {f}"
            )));
        }
    }
    let (classes, store) = match spec.kind {
        DatasetKind::FashionMnist | DatasetKind::Mnist | DatasetKind::Idx => {
            idx::open(&spec.path, spec.kind, split)?
        }
        DatasetKind::Cifar10 => cifar::open(&spec.path, false, false, split)?,
        DatasetKind::Cifar100 => cifar::open(&spec.path, true, spec.coarse_labels, split)?,
        DatasetKind::Folder => match spec.val_fraction {
            Some(f) => folder::open_unsplit(&spec.path, split, spec.empty_classes, f)?,
            None => folder::open(&spec.path, split, spec.empty_classes)?,
        },
        DatasetKind::ClutteredFashionMnist => {
            let (classes, items) = idx::open(&spec.path, DatasetKind::FashionMnist, split)?;
            let canvas = spec.canvas.unwrap_or(cluttered::DEFAULT_CANVAS);
            let clutter = spec.clutter.unwrap_or(cluttered::DEFAULT_CLUTTER);
            (classes, cluttered::compose(items, canvas, clutter, split)?)
        }
    };
    let (classes, store) = match &spec.class_subset {
        Some(keep) => keep_classes(classes, store, keep)?,
        None => (classes, store),
    };
    let full_len = match &store {
        Store::Memory { labels, .. } => labels.len(),
        Store::Files { files } => files.len(),
    };
    let limit = match split {
        Split::Train => spec.limit,
        Split::Val => spec.val_limit,
    };
    let per_class = spec.per_class_limit.filter(|_| split == Split::Train);
    let subset = match (limit, per_class) {
        (Some(_), Some(_)) => {
            return Err(DataError::Config(
                "`per_class_limit` and `limit` exclude each other".into(),
            ))
        }
        (_, Some(0)) | (Some(0), _) => {
            return Err(DataError::Config("`limit` must be at least 1".into()))
        }
        (None, Some(n)) => Some(per_class_subset(&store, classes.len(), n)),
        (Some(n), None) if n < full_len => Some(rng::subset(full_len, n)),
        _ => None,
    };
    let kind: &str = spec.kind.into();
    Ok(Dataset {
        name: format!("{kind}/{}", split.as_str()),
        root: spec.path.clone(),
        classes,
        store,
        subset,
        strict: spec.strict,
    })
}

impl Dataset {
    pub fn len(&self) -> usize {
        match (&self.subset, &self.store) {
            (Some(s), _) => s.len(),
            (None, Store::Memory { labels, .. }) => labels.len(),
            (None, Store::Files { files }) => files.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// e.g. `fashion-mnist/train`.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    pub fn num_classes(&self) -> usize {
        self.classes.len()
    }

    /// (width, height, channels) when every sample has the same shape (IDX, CIFAR).
    pub fn image_shape(&self) -> Option<(usize, usize, usize)> {
        match &self.store {
            Store::Memory {
                width,
                height,
                channels,
                ..
            } => Some((*width, *height, *channels)),
            Store::Files { .. } => None,
        }
    }

    pub fn strict(&self) -> bool {
        self.strict
    }

    pub fn set_strict(&mut self, strict: bool) {
        self.strict = strict;
    }

    fn raw_index(&self, i: usize) -> Result<usize> {
        let len = self.len();
        if i >= len {
            return Err(DataError::Index { index: i, len });
        }
        Ok(self.subset.as_ref().map_or(i, |s| s[i]))
    }

    /// A digest identifying this split's contents and subset, for caches keyed by data. In-memory
    /// datasets hash every pixel and label; folder datasets hash each file's relative path, size
    /// and label (reading every image would cost as much as an epoch).
    pub fn fingerprint(&self) -> String {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(self.name.as_bytes());
        for c in &self.classes {
            h.update(c.as_bytes());
            h.update([0]);
        }
        match &self.store {
            Store::Memory {
                width,
                height,
                channels,
                pixels,
                labels,
            } => {
                h.update(format!("{width}x{height}x{channels}").as_bytes());
                h.update(pixels);
                labels.iter().for_each(|l| h.update(l.to_le_bytes()));
            }
            Store::Files { files } => {
                for (path, label) in files {
                    let rel = path.strip_prefix(&self.root).unwrap_or(path);
                    h.update(rel.to_string_lossy().as_bytes());
                    h.update(
                        std::fs::metadata(path)
                            .map_or(u64::MAX, |m| m.len())
                            .to_le_bytes(),
                    );
                    h.update(label.to_le_bytes());
                }
            }
        }
        if let Some(s) = &self.subset {
            s.iter().for_each(|i| h.update((*i as u64).to_le_bytes()));
        }
        h.finalize()
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// Samples per class (by label index), without decoding anything.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes.len()];
        for i in 0..self.len() {
            if let Some(c) = self.label(i).ok().and_then(|l| counts.get_mut(l)) {
                *c += 1;
            }
        }
        counts
    }

    /// The label of sample `i` without decoding it.
    pub fn label(&self, i: usize) -> Result<usize> {
        let r = self.raw_index(i)?;
        Ok(match &self.store {
            Store::Memory { labels, .. } => labels[r] as usize,
            Store::Files { files } => files[r].1 as usize,
        })
    }

    /// The file behind sample `i` (folder datasets only).
    pub fn path(&self, i: usize) -> Option<&Path> {
        let r = self.raw_index(i).ok()?;
        match &self.store {
            Store::Files { files } => Some(&files[r].0),
            Store::Memory { .. } => None,
        }
    }

    /// Decodes sample `i` for a transform that needs `min_scale(width, height)` of its full
    /// resolution (JPEG files are decoded DCT-scaled, see [`folder::decode_reduced`]); returns
    /// the sample and its full-size `[width, height]`.
    pub fn get_reduced(
        &self,
        i: usize,
        min_scale: impl FnOnce(usize, usize) -> f64,
    ) -> Result<(Sample, [usize; 2])> {
        let Store::Files { files } = &self.store else {
            let s = self.get(i)?;
            let full = [s.image.width, s.image.height];
            min_scale(full[0], full[1]);
            return Ok((s, full));
        };
        let (path, label) = &files[self.raw_index(i)?];
        let (image, full) = folder::decode_reduced(path, min_scale)?;
        let label = *label as usize;
        Ok((Sample { image, label }, full))
    }

    /// Decodes sample `i`. A corrupt file is `DataError::Decode` naming its path.
    pub fn get(&self, i: usize) -> Result<Sample> {
        let r = self.raw_index(i)?;
        match &self.store {
            Store::Memory {
                width,
                height,
                channels,
                pixels,
                labels,
            } => {
                let n = width * height * channels;
                Ok(Sample {
                    image: Image::new(
                        *width,
                        *height,
                        *channels,
                        pixels[r * n..(r + 1) * n].to_vec(),
                    ),
                    label: labels[r] as usize,
                })
            }
            Store::Files { files } => {
                let (path, label) = &files[r];
                Ok(Sample {
                    image: folder::decode(path)?,
                    label: *label as usize,
                })
            }
        }
    }
}
