//! Teacher-output cache (FKD-style): a frozen teacher's outputs on the exact augmented batches a
//! student run sees, stored once and replayed by every later run on the same data stream.
//!
//! The loader is deterministic per (seed, epoch, sample), Mixup/CutMix included, so a stream is
//! named by a key over everything that shapes the teacher's input and output: the teacher's
//! weights digest and architecture, the dataset's contents, augmentation and Mixup settings, the
//! student's preprocessing, batch size, seed, the tapped features and the storage format. One
//! directory per key holds `key.json` (the key material, readable) and one shard file per run of
//! up to [`SHARD_BATCHES`] consecutive batches of an epoch.
//!
//! Storage: logits in fp16, either all classes or the top-k (class index + fp16 logit) plus the
//! fp32 log-sum-exp, from which the logits are rebuilt with the remaining probability mass spread
//! evenly over the other classes (exact at T = 1 for the kept classes). Features in fp16. Every
//! run — live, recording or replaying — trains on outputs rounded to this format, so whether a
//! batch came from the cache never changes a run's result.
//!
//! Shards are written atomically (temp file + rename) and end with a SHA-256 of their contents;
//! a truncated or corrupt shard is reported, deleted and recomputed, never replayed. Each batch
//! also stores its sample indices, which must equal the loader's.

use crate::precision::Precision;
use crate::teacher::{renormalize, Teacher, TeacherSpec};
use crate::TrainError;
use half::f16;
use lkd_models::Preprocess;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::path::{Path, PathBuf};
use tch::{Device, Kind, Tensor};

/// Consecutive batches per shard file.
pub const SHARD_BATCHES: usize = 64;
/// Bump when the shard layout changes.
const FORMAT: u32 = 1;
/// Bump when the loader's sample order, augmentation or Mixup draws change.
pub const LOADER_VERSION: u32 = 1;
const MAGIC: &[u8; 8] = b"LKDTCv1\0";

/// Where teacher outputs are cached: `auto` (`$LKD_CACHE/teacher-outputs`, default
/// `~/.cache/lkd/teacher-outputs`), `off`, or a directory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum CacheSetting {
    #[default]
    Auto,
    Off,
    Dir(PathBuf),
}

impl std::str::FromStr for CacheSetting {
    type Err = TrainError;
    fn from_str(s: &str) -> Result<Self, TrainError> {
        Ok(match s {
            "auto" => Self::Auto,
            "off" => Self::Off,
            "" => {
                return Err(TrainError::Config(
                    "teacher cache: give auto, off or a directory".into(),
                ))
            }
            dir => Self::Dir(PathBuf::from(dir)),
        })
    }
}

impl std::fmt::Display for CacheSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Off => f.write_str("off"),
            Self::Dir(d) => write!(f, "{}", d.display()),
        }
    }
}

impl Serialize for CacheSetting {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for CacheSetting {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl CacheSetting {
    /// The cache root, or `None` when off.
    pub fn root(&self) -> Option<PathBuf> {
        match self {
            Self::Off => None,
            Self::Dir(d) => Some(d.clone()),
            Self::Auto => Some(lkd_cache_dir().join("teacher-outputs")),
        }
    }
}

/// `$LKD_CACHE`, else `~/.cache/lkd`.
pub fn lkd_cache_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("LKD_CACHE").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("lkd")
}

/// Everything that names a stream of teacher outputs. Serialized into `key.json`; its digest
/// names the directory.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CacheKey {
    pub format: u32,
    pub loader_version: u32,
    pub teacher_weights_sha256: String,
    pub teacher_model: lkd_models::ModelConfig,
    pub dataset: String,
    pub dataset_fingerprint: String,
    pub augment: serde_json::Value,
    pub mixup: serde_json::Value,
    pub student_preprocess: Preprocess,
    pub batch_size: usize,
    pub seed: u64,
    /// Teacher taps stored beside the logits (feature distillation).
    pub taps: Vec<String>,
    /// Classes kept per sample; equal to the class count when all are kept.
    pub topk: usize,
    pub classes: usize,
    /// The teacher's autocast precision; absent for fp32 (keys from before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub precision: Option<Precision>,
    /// A data-parallel worker's stream: its rank and the world size. Every rank records and
    /// replays its own rows of each global batch under its own key, so ranks never share (or
    /// race on) a shard file; absent for one worker.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<[usize; 2]>,
    /// Class-balanced sampling; absent for the plain shuffle (keys from before it existed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub balanced: bool,
}

impl CacheKey {
    pub fn digest(&self) -> String {
        let json = serde_json::to_vec(self).expect("key serializes");
        sha2::Sha256::digest(&json)
            .iter()
            .take(12)
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

/// One batch's teacher outputs as stored (host memory).
#[derive(Clone, Debug, PartialEq)]
struct BatchRecord {
    samples: Vec<u32>,
    /// Full: `n × classes` fp16 bits. Top-k: `n × k` (index, fp16 bits) pairs.
    logits: Vec<u16>,
    indices: Vec<u16>,
    lse: Vec<f32>,
    /// One `n × c × h × w` fp16 buffer per tap.
    features: Vec<Vec<u16>>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct ShardHeader {
    key: String,
    epoch: usize,
    first_batch: usize,
    batches: usize,
    classes: usize,
    topk: usize,
    /// Per-sample shape of each tap: [c, h, w].
    tap_shapes: Vec<[usize; 3]>,
    /// Samples in each batch.
    sizes: Vec<usize>,
}

/// What happened to the cache in a run, for the run's summary.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CacheStats {
    pub replayed_batches: usize,
    pub live_batches: usize,
    pub recorded_shards: usize,
    /// Shards found corrupt or inconsistent, deleted and recomputed.
    pub corrupt_shards: usize,
    pub teacher_loaded: bool,
}

/// The teacher as a stream of outputs: replayed from the cache where it holds them, computed
/// live (and recorded) otherwise. The teacher itself is loaded on the first miss only.
pub struct TeacherOutputs {
    pub spec: TeacherSpec,
    device: Device,
    precision: Precision,
    teacher: Option<Teacher>,
    taps: Vec<String>,
    topk: usize,
    classes: usize,
    store: Option<ShardStore>,
    /// Shard loaded for replay: (epoch, shard index, header, records); `None` records = absent.
    loaded: Option<LoadedShard>,
    /// Shard being recorded: its header fields and records so far.
    recording: Option<(usize, usize, Vec<BatchRecord>)>,
    tap_shapes: Vec<[usize; 3]>,
    pub stats: CacheStats,
}

/// A shard read for replay: (epoch, shard index, header and records; `None` = absent).
type LoadedShard = (usize, usize, Option<(ShardHeader, Vec<BatchRecord>)>);

struct ShardStore {
    dir: PathBuf,
    key: String,
    /// This process's lock on the entry, or who holds it (then nothing here is written).
    writer: Result<crate::rundir::DirLock, String>,
}

impl ShardStore {
    fn writable(&self) -> bool {
        self.writer.is_ok()
    }

    fn path(&self, epoch: usize, shard: usize) -> PathBuf {
        self.dir.join(format!("e{epoch:04}-s{shard:05}.bin"))
    }
}

/// How a stream is stored; `topk == 0` keeps all classes.
#[derive(Clone)]
pub struct StreamSpec<'a> {
    pub setting: &'a CacheSetting,
    pub topk: usize,
    pub taps: Vec<String>,
    pub dataset: &'a crate::data::Dataset,
    pub augment: &'a crate::data::AugmentConfig,
    pub mixup: Option<&'a crate::data::MixupConfig>,
    pub student_preprocess: &'a Preprocess,
    pub batch_size: usize,
    pub seed: u64,
    /// Autocast precision of the teacher's forward pass.
    pub precision: Precision,
    /// This worker's place in a data-parallel group (`Shard::whole()` for one worker).
    pub shard: crate::data::Shard,
    /// Class-balanced sampling (another sample order than the plain shuffle).
    pub balanced: bool,
}

impl TeacherOutputs {
    /// Opens the stream for `spec`'s teacher. With the cache on, creates the key directory and
    /// writes `key.json` there (atomically) if it is new.
    pub fn open(
        teacher: TeacherSpec,
        stream: StreamSpec<'_>,
        device: Device,
    ) -> Result<Self, TrainError> {
        let classes = teacher.graph.num_classes;
        let topk = if stream.topk == 0 || stream.topk >= classes {
            classes
        } else {
            stream.topk
        };
        if topk < classes && classes > usize::from(u16::MAX) + 1 {
            return Err(TrainError::Config(format!("cache_topk stores class indices as u16: {classes} classes are too many; keep all (cache_topk = 0)")));
        }
        let to_json = |v: serde_json::Result<serde_json::Value>| {
            v.map_err(|e| TrainError::Other(e.to_string()))
        };
        let store = match stream.setting.root() {
            None => None,
            Some(root) => {
                let key = CacheKey {
                    format: FORMAT,
                    loader_version: LOADER_VERSION,
                    teacher_weights_sha256: teacher.weights_digest()?,
                    teacher_model: teacher.model.clone(),
                    dataset: stream.dataset.name().to_string(),
                    dataset_fingerprint: stream.dataset.fingerprint(),
                    augment: to_json(serde_json::to_value(stream.augment))?,
                    mixup: to_json(serde_json::to_value(stream.mixup))?,
                    student_preprocess: stream.student_preprocess.clone(),
                    batch_size: stream.batch_size,
                    seed: stream.seed,
                    taps: stream.taps.clone(),
                    topk,
                    classes,
                    precision: (stream.precision != Precision::Fp32).then_some(stream.precision),
                    shard: (stream.shard.world_size > 1)
                        .then_some([stream.shard.rank, stream.shard.world_size]),
                    balanced: stream.balanced,
                };
                let digest = key.digest();
                let dir = root.join(&digest);
                std::fs::create_dir_all(&dir).map_err(|source| TrainError::Io {
                    path: dir.display().to_string(),
                    source,
                })?;
                let key_path = dir.join("key.json");
                if !key_path.is_file() {
                    let json = serde_json::to_vec_pretty(&key)
                        .map_err(|e| TrainError::Other(e.to_string()))?;
                    lkd_util::write_atomic(&key_path, &json)?;
                }
                // One writer per entry; another run on the same stream replays what is there.
                let writer = crate::rundir::DirLock::try_acquire(&dir)?;
                if let Err(holder) = &writer {
                    eprintln!(
                        "warning: teacher cache {} is being written by another process ({holder}): \
                         this run replays what it holds and computes the rest without recording",
                        dir.display()
                    );
                }
                Some(ShardStore {
                    dir,
                    key: digest,
                    writer,
                })
            }
        };
        let [h, w] = stream.student_preprocess.input_size;
        let shapes = teacher.graph.infer_shapes(1, h, w)?;
        let tap_shapes = stream
            .taps
            .iter()
            .map(|t| {
                let v = *teacher.graph.taps.get(t).ok_or_else(|| TrainError::Config(format!("teacher {} has no tap `{t}`", teacher.graph.preset)))?;
                match shapes[v].as_slice() {
                    [_, c, h, w] => Ok([*c, *h, *w]),
                    other => Err(TrainError::Config(format!("teacher tap `{t}` has shape {other:?}; feature distillation needs [N, C, H, W] maps"))),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            spec: teacher,
            device,
            precision: stream.precision,
            teacher: None,
            taps: stream.taps,
            topk,
            classes,
            store,
            loaded: None,
            recording: None,
            tap_shapes,
            stats: CacheStats::default(),
        })
    }

    /// An error naming the process that holds this entry's lock, when another one does
    /// (`teacher-cache build` exists to write it).
    pub fn require_writer(&self) -> Result<(), TrainError> {
        match self.store.as_ref().map(|s| &s.writer) {
            Some(Err(holder)) => Err(TrainError::Busy(format!(
                "teacher cache {} is in use by another process ({holder}): wait for it to finish \
                 or stop it (the lock is released when it exits)",
                self.dir()
                    .map_or(String::new(), |d| d.display().to_string())
            ))),
            _ => Ok(()),
        }
    }

    /// Where this stream's shards live (`None` when the cache is off).
    pub fn dir(&self) -> Option<&Path> {
        self.store.as_ref().map(|s| s.dir.as_path())
    }

    pub fn teacher_preprocess(&self) -> &Preprocess {
        &self.spec.graph.preprocess
    }

    /// Teacher logits `[n, classes]` (f32) and tapped maps for batch `index` of `epoch`, whose
    /// student-normalised images are `x` and dataset indices `samples`.
    pub fn get(
        &mut self,
        epoch: usize,
        index: usize,
        samples: &[usize],
        x: &Tensor,
        student_pre: &Preprocess,
    ) -> Result<(Tensor, Vec<Tensor>), TrainError> {
        let shard = index / SHARD_BATCHES;
        if self.store.is_some() {
            self.load_shard(epoch, shard)?;
            if let Some((_, _, Some((header, records)))) = &self.loaded {
                let pos = index - header.first_batch;
                if let Some(rec) = records.get(pos) {
                    if rec.samples.len() == samples.len()
                        && rec
                            .samples
                            .iter()
                            .zip(samples)
                            .all(|(a, b)| *a as usize == *b)
                    {
                        self.stats.replayed_batches += 1;
                        return self.decode(rec);
                    }
                    let path = self.store.as_ref().expect("store").path(epoch, shard);
                    eprintln!("warning: teacher cache {}: batch {index} holds other samples than the loader's; recomputing", path.display());
                    self.discard_loaded(epoch, shard);
                }
            }
        }
        // Live: compute, round to the storage format, and record when this shard is being
        // recorded contiguously from its first batch.
        self.stats.live_batches += 1;
        if self.teacher.is_none() {
            self.teacher = Some(self.spec.load(self.device)?);
            self.stats.teacher_loaded = true;
        }
        let teacher = self.teacher.as_ref().expect("loaded above");
        let xt = renormalize(x, student_pre, teacher.preprocess())?;
        let taps: Vec<&str> = self.taps.iter().map(String::as_str).collect();
        let (logits, maps) =
            crate::train::autocast(self.device, self.precision, || teacher.forward(&xt, &taps))??;
        let rec = self.encode(samples, &logits.f_to_kind(Kind::Float)?, &maps)?;
        let out = self.decode(&rec)?;
        if self.store.as_ref().is_some_and(ShardStore::writable) {
            self.record(epoch, index, rec)?;
        }
        Ok(out)
    }

    /// Writes a shard being recorded, even if shorter than [`SHARD_BATCHES`] (epoch end or a
    /// stop); a later run extends it from where it ends.
    pub fn flush(&mut self) -> Result<(), TrainError> {
        if let Some((epoch, first, records)) = self.recording.take() {
            if !records.is_empty() {
                self.write_shard(epoch, first, &records)?;
            }
        }
        Ok(())
    }

    fn record(&mut self, epoch: usize, index: usize, rec: BatchRecord) -> Result<(), TrainError> {
        let shard = index / SHARD_BATCHES;
        let first = shard * SHARD_BATCHES;
        let continues = matches!(&self.recording, Some((e, f, r)) if *e == epoch && *f == first && f + r.len() == index);
        if !continues {
            self.flush()?;
            // Start a shard at its first batch, or extend a shorter shard that ends right here.
            let seed = match &self.loaded {
                Some((e, s, Some((h, records))))
                    if *e == epoch && *s == shard && h.first_batch + records.len() == index =>
                {
                    Some(records.clone())
                }
                _ if index == first => Some(vec![]),
                _ => None,
            };
            match seed {
                Some(records) => self.recording = Some((epoch, first, records)),
                None => return Ok(()),
            }
        }
        let (_, _, records) = self.recording.as_mut().expect("recording");
        records.push(rec);
        if records.len() == SHARD_BATCHES {
            self.flush()?;
        }
        Ok(())
    }

    fn discard_loaded(&mut self, epoch: usize, shard: usize) {
        let store = self.store.as_ref().expect("store");
        if store.writable() {
            let _ = std::fs::remove_file(store.path(epoch, shard));
        }
        self.stats.corrupt_shards += 1;
        self.loaded = Some((epoch, shard, None));
    }

    fn load_shard(&mut self, epoch: usize, shard: usize) -> Result<(), TrainError> {
        if matches!(&self.loaded, Some((e, s, _)) if *e == epoch && *s == shard) {
            return Ok(());
        }
        let store = self.store.as_ref().expect("store");
        let path = store.path(epoch, shard);
        let parsed = match std::fs::read(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(TrainError::Io {
                    path: path.display().to_string(),
                    source,
                })
            }
            Ok(bytes) => match parse_shard(
                &bytes,
                &store.key,
                epoch,
                shard * SHARD_BATCHES,
                self.classes,
                self.topk,
                &self.tap_shapes,
            ) {
                Ok(v) => Some(v),
                Err(why) => {
                    eprintln!(
                        "warning: teacher cache {} is corrupt ({}); recomputing it",
                        path.display(),
                        crate::error_chain(&why)
                    );
                    if store.writable() {
                        let _ = std::fs::remove_file(&path);
                    }
                    self.stats.corrupt_shards += 1;
                    None
                }
            },
        };
        self.loaded = Some((epoch, shard, parsed));
        Ok(())
    }

    fn write_shard(
        &mut self,
        epoch: usize,
        first: usize,
        records: &[BatchRecord],
    ) -> Result<(), TrainError> {
        let store = self.store.as_ref().expect("store");
        let header = ShardHeader {
            key: store.key.clone(),
            epoch,
            first_batch: first,
            batches: records.len(),
            classes: self.classes,
            topk: self.topk,
            tap_shapes: self.tap_shapes.clone(),
            sizes: records.iter().map(|r| r.samples.len()).collect(),
        };
        let bytes = serialize_shard(&header, records);
        let path = store.path(epoch, first / SHARD_BATCHES);
        lkd_util::write_atomic(&path, &bytes)?;
        self.stats.recorded_shards += 1;
        // What was written is what a replay of this shard reads.
        self.loaded = Some((
            epoch,
            first / SHARD_BATCHES,
            Some((header, records.to_vec())),
        ));
        Ok(())
    }

    fn encode(
        &self,
        samples: &[usize],
        logits: &Tensor,
        maps: &[Tensor],
    ) -> Result<BatchRecord, TrainError> {
        let n = samples.len();
        let size = logits.size();
        if size != [n as i64, self.classes as i64] {
            return Err(TrainError::Other(format!(
                "teacher logits have shape {size:?}, expected [{n}, {}]",
                self.classes
            )));
        }
        let logits = logits.f_to_device(Device::Cpu)?.f_contiguous()?;
        let to_u16 = |t: &Tensor| -> Result<Vec<u16>, TrainError> {
            let v = Vec::<f32>::try_from(t.f_to_kind(Kind::Float)?.f_contiguous()?.f_view([-1])?)
                .map_err(TrainError::Torch)?;
            Ok(v.into_iter().map(|x| f16::from_f32(x).to_bits()).collect())
        };
        let (values, indices, lse) = if self.topk == self.classes {
            (to_u16(&logits)?, vec![], vec![])
        } else {
            let (v, i) = logits.f_topk(self.topk as i64, 1, true, true)?;
            let lse = Vec::<f32>::try_from(logits.f_logsumexp([1i64].as_slice(), false)?)
                .map_err(TrainError::Torch)?;
            let idx =
                Vec::<i64>::try_from(i.f_contiguous()?.f_view([-1])?).map_err(TrainError::Torch)?;
            (
                to_u16(&v)?,
                idx.into_iter().map(|i| i as u16).collect(),
                lse,
            )
        };
        let features = maps
            .iter()
            .map(|m| to_u16(&m.f_to_device(Device::Cpu)?))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(BatchRecord {
            samples: samples.iter().map(|&s| s as u32).collect(),
            logits: values,
            indices,
            lse,
            features,
        })
    }

    fn decode(&self, rec: &BatchRecord) -> Result<(Tensor, Vec<Tensor>), TrainError> {
        let n = rec.samples.len() as i64;
        let f = |bits: &[u16]| -> Vec<f32> {
            bits.iter().map(|&b| f16::from_bits(b).to_f32()).collect()
        };
        let logits = if self.topk == self.classes {
            Tensor::f_from_slice(&f(&rec.logits))?.f_view([n, self.classes as i64])?
        } else {
            let k = self.topk;
            let mut full = vec![0f32; n as usize * self.classes];
            let vals = f(&rec.logits);
            for r in 0..n as usize {
                let row = &vals[r * k..(r + 1) * k];
                let lse = rec.lse[r];
                // Mass outside the top-k, spread evenly over the other classes.
                let kept: f32 = row.iter().map(|v| (v - lse).exp()).sum();
                let rest = (1.0 - kept).max(1e-12) / (self.classes - k) as f32;
                let fill = lse + rest.ln();
                let out = &mut full[r * self.classes..(r + 1) * self.classes];
                out.iter_mut().for_each(|o| *o = fill);
                for (j, v) in row.iter().enumerate() {
                    out[rec.indices[r * k + j] as usize] = *v;
                }
            }
            Tensor::f_from_slice(&full)?.f_view([n, self.classes as i64])?
        };
        let maps = rec
            .features
            .iter()
            .zip(&self.tap_shapes)
            .map(|(bits, [c, h, w])| {
                Tensor::f_from_slice(&f(bits))?
                    .f_view([n, *c as i64, *h as i64, *w as i64])?
                    .f_to_device(self.device)
            })
            .collect::<Result<_, _>>()?;
        Ok((logits.f_to_device(self.device)?, maps))
    }
}

/// Bytes per sample-epoch the cache stores for `classes` classes kept as `topk` (0 = all) and
/// `feature_values` fp16 feature values per sample.
pub fn bytes_per_sample(classes: usize, topk: usize, feature_values: usize) -> usize {
    let logits = if topk == 0 || topk >= classes {
        2 * classes
    } else {
        4 * topk + 4
    };
    4 + logits + 2 * feature_values
}

fn serialize_shard(header: &ShardHeader, records: &[BatchRecord]) -> Vec<u8> {
    let head = serde_json::to_vec(header).expect("header serializes");
    let mut out = Vec::with_capacity(
        64 + head.len()
            + records
                .iter()
                .map(|r| 4 * r.samples.len() + 2 * r.logits.len())
                .sum::<usize>(),
    );
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(head.len() as u32).to_le_bytes());
    out.extend_from_slice(&head);
    for r in records {
        r.samples
            .iter()
            .for_each(|s| out.extend_from_slice(&s.to_le_bytes()));
        r.logits
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
        r.indices
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
        r.lse
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
        for f in &r.features {
            f.iter()
                .for_each(|v| out.extend_from_slice(&v.to_le_bytes()));
        }
    }
    let digest = sha2::Sha256::digest(&out);
    out.extend_from_slice(&digest);
    out
}

/// Why a shard on disk was refused (it is then recomputed, never used).
#[derive(Debug, thiserror::Error)]
enum ShardError {
    #[error("{0} bytes is too short")]
    TooShort(usize),
    #[error("checksum mismatch")]
    Checksum,
    #[error("truncated")]
    Truncated,
    #[error("not a teacher-cache shard")]
    NotAShard,
    #[error("header is not valid JSON")]
    Header(#[source] serde_json::Error),
    #[error("header {found} does not match {expected}")]
    WrongHeader { found: String, expected: String },
    #[error("class index out of range")]
    ClassIndex,
    #[error("{0} trailing bytes")]
    Trailing(usize),
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], ShardError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.bytes.len())
            .ok_or(ShardError::Truncated)?;
        let s = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u16s(&mut self, n: usize) -> Result<Vec<u16>, ShardError> {
        Ok(self
            .take(n.checked_mul(2).ok_or(ShardError::Truncated)?)?
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect())
    }
    fn u32s(&mut self, n: usize) -> Result<Vec<u32>, ShardError> {
        Ok(self
            .take(n.checked_mul(4).ok_or(ShardError::Truncated)?)?
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect())
    }
    fn f32s(&mut self, n: usize) -> Result<Vec<f32>, ShardError> {
        Ok(self.u32s(n)?.into_iter().map(f32::from_bits).collect())
    }
}

/// Parses and checks a shard: checksum first, then that it belongs to this key, epoch and
/// position and has the expected layout.
fn parse_shard(
    bytes: &[u8],
    key: &str,
    epoch: usize,
    first: usize,
    classes: usize,
    topk: usize,
    tap_shapes: &[[usize; 3]],
) -> Result<(ShardHeader, Vec<BatchRecord>), ShardError> {
    if bytes.len() < MAGIC.len() + 4 + 32 {
        return Err(ShardError::TooShort(bytes.len()));
    }
    let (body, sum) = bytes.split_at(bytes.len() - 32);
    if sha2::Sha256::digest(body).as_slice() != sum {
        return Err(ShardError::Checksum);
    }
    let mut r = Reader {
        bytes: body,
        pos: 0,
    };
    if r.take(MAGIC.len())? != MAGIC {
        return Err(ShardError::NotAShard);
    }
    let head_len = u32::from_le_bytes(r.take(4)?.try_into().expect("4 bytes")) as usize;
    let header: ShardHeader =
        serde_json::from_slice(r.take(head_len)?).map_err(ShardError::Header)?;
    let expected = (key, epoch, first, classes, topk, tap_shapes);
    let found = (
        header.key.as_str(),
        header.epoch,
        header.first_batch,
        header.classes,
        header.topk,
        header.tap_shapes.as_slice(),
    );
    if expected != found || header.sizes.len() != header.batches || header.batches > SHARD_BATCHES {
        return Err(ShardError::WrongHeader {
            found: format!("{found:?}"),
            expected: format!("{expected:?}"),
        });
    }
    // Sizes come from the file: a product that overflows cannot be in it.
    let times = |dims: &[usize]| {
        dims.iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or(ShardError::Truncated)
    };
    let mut records = Vec::with_capacity(header.batches);
    for &n in &header.sizes {
        let samples = r.u32s(n)?;
        let (logits, indices, lse) = if topk == classes {
            (r.u16s(times(&[n, classes])?)?, vec![], vec![])
        } else {
            let kept = times(&[n, topk])?;
            (r.u16s(kept)?, r.u16s(kept)?, r.f32s(n)?)
        };
        if indices.iter().any(|&i| i as usize >= classes) {
            return Err(ShardError::ClassIndex);
        }
        let features = tap_shapes
            .iter()
            .map(|[c, h, w]| r.u16s(times(&[n, *c, *h, *w])?))
            .collect::<Result<Vec<_>, _>>()?;
        records.push(BatchRecord {
            samples,
            logits,
            indices,
            lse,
            features,
        });
    }
    if r.pos != body.len() {
        return Err(ShardError::Trailing(body.len() - r.pos));
    }
    Ok((header, records))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(n: usize, classes: usize) -> BatchRecord {
        BatchRecord {
            samples: (0..n as u32).collect(),
            logits: (0..(n * classes) as u16).collect(),
            indices: vec![],
            lse: vec![],
            features: vec![],
        }
    }

    #[test]
    fn shard_round_trip_and_corruption() {
        let header = ShardHeader {
            key: "k".into(),
            epoch: 2,
            first_batch: 64,
            batches: 2,
            classes: 3,
            topk: 3,
            tap_shapes: vec![],
            sizes: vec![4, 4],
        };
        let recs = vec![record(4, 3), record(4, 3)];
        let bytes = serialize_shard(&header, &recs);
        let (h, r) = parse_shard(&bytes, "k", 2, 64, 3, 3, &[]).unwrap();
        assert_eq!((h, r), (header.clone(), recs));
        // A flipped byte, a truncation and another key are all refused.
        let mut bad = bytes.clone();
        bad[20] ^= 1;
        assert!(matches!(
            parse_shard(&bad, "k", 2, 64, 3, 3, &[]),
            Err(ShardError::Checksum)
        ));
        assert!(matches!(
            parse_shard(&bytes[..bytes.len() - 5], "k", 2, 64, 3, 3, &[]),
            Err(ShardError::Checksum)
        ));
        assert!(matches!(
            parse_shard(&bytes, "other", 2, 64, 3, 3, &[]),
            Err(ShardError::WrongHeader { .. })
        ));
        assert!(matches!(
            parse_shard(&bytes, "k", 3, 64, 3, 3, &[]),
            Err(ShardError::WrongHeader { .. })
        ));
        // A shard with a valid checksum around a broken header keeps serde's reason.
        let mut body = MAGIC.to_vec();
        body.extend_from_slice(&3u32.to_le_bytes());
        body.extend_from_slice(b"{x}");
        let digest = sha2::Sha256::digest(&body);
        body.extend_from_slice(&digest);
        let err = parse_shard(&body, "k", 2, 64, 3, 3, &[]).unwrap_err();
        assert!(matches!(err, ShardError::Header(_)));
        let text = crate::error_chain(&err);
        assert!(
            text.starts_with("header is not valid JSON: key must be a string"),
            "{text}"
        );

        // A valid checksum around sizes whose byte counts overflow: refused, no panic (the
        // sample count itself, then a feature map after one real record).
        let taps = vec![[usize::MAX / 4, 2, 2]];
        let forged = |sizes: Vec<usize>, recs: &[BatchRecord]| {
            let h = ShardHeader {
                batches: sizes.len(),
                sizes,
                tap_shapes: taps.clone(),
                ..header.clone()
            };
            parse_shard(&serialize_shard(&h, recs), "k", 2, 64, 3, 3, &taps)
        };
        assert!(matches!(
            forged(vec![usize::MAX / 2], &[]),
            Err(ShardError::Truncated)
        ));
        assert!(matches!(
            forged(vec![1], &[record(1, 3)]),
            Err(ShardError::Truncated)
        ));
    }

    #[test]
    fn bytes_per_sample_matches_layout() {
        // Fashion-MNIST, all 10 classes: index + 10 fp16 logits.
        assert_eq!(bytes_per_sample(10, 0, 0), 24);
        // ImageNet-1k, top-10: index + 10 × (u16 class + fp16 logit) + fp32 lse.
        assert_eq!(bytes_per_sample(1000, 10, 0), 48);
    }

    #[test]
    fn setting_parses() {
        assert_eq!("auto".parse::<CacheSetting>().unwrap(), CacheSetting::Auto);
        assert_eq!("off".parse::<CacheSetting>().unwrap(), CacheSetting::Off);
        assert_eq!(
            "/x".parse::<CacheSetting>().unwrap(),
            CacheSetting::Dir("/x".into())
        );
    }
}
