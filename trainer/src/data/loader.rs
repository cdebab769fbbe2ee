//! Multi-threaded batch loader. Determinism does not depend on thread scheduling: the epoch's
//! order is a permutation seeded by (seed, epoch), each sample's augmentation RNG by
//! (seed, epoch, sample index), each batch's Mixup RNG by (seed, epoch, batch index); batch k
//! is built by worker k mod W and delivered in order through that worker's bounded queue.

use super::transform::DecodePlan;
use super::{rng, DataError, Dataset, Mixup, Result, Shard, Transform};
use rand::distributions::Distribution;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tch::Tensor;

const TAG_PERM: u64 = 0x7065_726d;
const TAG_BALANCED: u64 = 0x6261_6c61;
const TAG_MIX: u64 = 0x006d_6978;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoaderConfig {
    pub batch_size: usize,
    /// Decode/augment threads; 0 = available cores.
    pub workers: usize,
    /// Batches each worker may have ready ahead of the consumer.
    pub prefetch: usize,
    pub shuffle: bool,
    pub drop_last: bool,
    pub seed: u64,
    /// Class-balanced sampling (shuffled loaders only): each epoch draws as many samples as
    /// the dataset holds, with replacement, every class equally likely.
    pub balanced: bool,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        Self {
            batch_size: 128,
            workers: 0,
            prefetch: 2,
            shuffle: true,
            drop_last: true,
            seed: 0,
            balanced: false,
        }
    }
}

impl LoaderConfig {
    pub fn train(batch_size: usize, seed: u64) -> Self {
        Self {
            batch_size,
            seed,
            ..Self::default()
        }
    }

    pub fn eval(batch_size: usize) -> Self {
        Self {
            batch_size,
            shuffle: false,
            drop_last: false,
            ..Self::default()
        }
    }

    pub fn resolved_workers(&self) -> usize {
        if self.workers == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            self.workers
        }
    }
}

/// Where to continue: the next batch to deliver. Saved with checkpoints.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoaderState {
    pub epoch: usize,
    pub next_batch: usize,
}

pub struct Batch {
    pub epoch: usize,
    /// Position of this batch in the epoch.
    pub index: usize,
    /// [B, C, H, W] f32, normalized.
    pub images: Tensor,
    /// [B] i64 hard labels (before mixing).
    pub labels: Tensor,
    /// [B, classes] f32 soft targets when Mixup/CutMix is on (label smoothing included).
    pub targets: Option<Tensor>,
    /// Mixing weight (1 when not mixed).
    pub lam: f64,
    /// Dataset indices of the samples (after substitution of skipped files).
    pub samples: Vec<usize>,
}

impl Batch {
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

/// Loader progress: per epoch iterator (`Epoch::stats`) or over the loader's life
/// (`Loader::stats`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LoaderStats {
    pub epoch: usize,
    pub batches: usize,
    pub images: usize,
    /// Wall time from the iterator's creation to its last delivered batch.
    pub elapsed_s: f64,
    /// Time `next()` spent blocked waiting for a batch.
    pub wait_s: f64,
    /// Distinct files skipped as undecodable so far (whole loader lifetime).
    pub skipped: usize,
}

impl LoaderStats {
    pub fn images_per_sec(&self) -> f64 {
        if self.elapsed_s > 0.0 {
            self.images as f64 / self.elapsed_s
        } else {
            0.0
        }
    }

    /// Share of wall time the consumer waited for data: the data-loading share of step time.
    pub fn wait_share(&self) -> f64 {
        if self.elapsed_s > 0.0 {
            self.wait_s / self.elapsed_s
        } else {
            0.0
        }
    }
}

impl std::fmt::Display for LoaderStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} batches, {} images, {:.0} img/s, waited {:.1}% of the time, {} files skipped",
            self.batches,
            self.images,
            self.images_per_sec(),
            100.0 * self.wait_share(),
            self.skipped
        )
    }
}

struct Shared {
    dataset: Arc<Dataset>,
    transform: Transform,
    mixup: Option<Mixup>,
    cfg: LoaderConfig,
    /// This worker's share of each global batch (the whole batch for one worker).
    shard: Shard,
    /// Undecodable samples: index -> error message (with path).
    skipped: Mutex<BTreeMap<usize, String>>,
    totals: Mutex<LoaderStats>,
}

#[derive(Clone)]
pub struct Loader {
    shared: Arc<Shared>,
}

impl Loader {
    pub fn new(
        dataset: Arc<Dataset>,
        transform: Transform,
        mixup: Option<Mixup>,
        cfg: LoaderConfig,
    ) -> Result<Self> {
        Self::sharded(dataset, transform, mixup, cfg, Shard::whole())
    }

    /// A loader for one data-parallel worker: batch k is this rank's `cfg.batch_size` rows of
    /// global batch k (see [`Shard`]), so `world_size` such loaders together deliver what one
    /// loader with batch `world_size · batch_size` does. Needs a shuffled, `drop_last` stream.
    pub fn sharded(
        dataset: Arc<Dataset>,
        transform: Transform,
        mixup: Option<Mixup>,
        cfg: LoaderConfig,
        shard: Shard,
    ) -> Result<Self> {
        transform.validate()?;
        if shard.world_size > 1 && !cfg.drop_last {
            return Err(DataError::Config(
                "a sharded loader drops the last incomplete global batch (drop_last)".into(),
            ));
        }
        if cfg.batch_size == 0 {
            return Err(DataError::Config("batch_size must be at least 1".into()));
        }
        if dataset.is_empty() {
            return Err(DataError::Config(format!(
                "dataset {} is empty",
                dataset.name()
            )));
        }
        if cfg.drop_last && dataset.len() < cfg.batch_size * shard.world_size {
            return Err(DataError::Config(format!(
                "drop_last with batch_size {}{} but {} has only {} samples: no batch would be produced",
                cfg.batch_size,
                if shard.world_size > 1 {
                    format!(" x {} workers", shard.world_size)
                } else {
                    String::new()
                },
                dataset.name(),
                dataset.len()
            )));
        }
        if let Some(m) = &mixup {
            m.cfg.validate()?;
            if m.num_classes != dataset.num_classes() {
                return Err(DataError::Config(format!(
                    "mixup built for {} classes, dataset {} has {}",
                    m.num_classes,
                    dataset.name(),
                    dataset.num_classes()
                )));
            }
        }
        let shared = Shared {
            dataset,
            transform,
            mixup,
            cfg,
            shard,
            skipped: Mutex::new(BTreeMap::new()),
            totals: Mutex::default(),
        };
        Ok(Self {
            shared: Arc::new(shared),
        })
    }

    /// Train loader: per-sample augmentations from `aug`, optional Mixup/CutMix whose soft
    /// targets use `label_smoothing`.
    pub fn train(
        dataset: Arc<Dataset>,
        pre: &lkd_models::preprocess::Preprocess,
        aug: &super::AugmentConfig,
        mixup: Option<&super::MixupConfig>,
        label_smoothing: f64,
        cfg: LoaderConfig,
    ) -> Result<Self> {
        let mixup = mixup.map(|m| {
            m.clone()
                .with_classes(dataset.num_classes(), label_smoothing)
        });
        Self::new(dataset, Transform::train(aug, pre), mixup, cfg)
    }

    /// Eval loader: resize + centre crop, dataset order, every sample.
    pub fn eval(
        dataset: Arc<Dataset>,
        pre: &lkd_models::preprocess::Preprocess,
        batch_size: usize,
        workers: usize,
    ) -> Result<Self> {
        let cfg = LoaderConfig {
            workers,
            ..LoaderConfig::eval(batch_size)
        };
        Self::new(dataset, Transform::eval(pre), None, cfg)
    }

    pub fn dataset(&self) -> &Arc<Dataset> {
        &self.shared.dataset
    }

    pub fn config(&self) -> &LoaderConfig {
        &self.shared.cfg
    }

    pub fn shard(&self) -> Shard {
        self.shared.shard
    }

    /// Batches per epoch; for a sharded loader, the global batches (each rank delivers its
    /// share of every one).
    pub fn batches_per_epoch(&self) -> usize {
        let (n, b) = (self.shared.dataset.len(), self.shared.cfg.batch_size);
        if self.shared.cfg.drop_last {
            self.shared.shard.global_batches(n, b)
        } else {
            n.div_ceil(b)
        }
    }

    /// Samples delivered per epoch.
    pub fn samples_per_epoch(&self) -> usize {
        let n = self.shared.dataset.len();
        if self.shared.cfg.drop_last {
            self.batches_per_epoch() * self.shared.cfg.batch_size
        } else {
            n
        }
    }

    /// Skipped files so far, as `path: reason` lines.
    pub fn skipped(&self) -> Vec<String> {
        self.shared
            .skipped
            .lock()
            .unwrap()
            .values()
            .cloned()
            .collect()
    }

    /// Dataset order for `epoch` (the global order: every rank computes the same one).
    pub fn order(&self, epoch: usize) -> Vec<usize> {
        if self.shared.cfg.shuffle && self.shared.cfg.balanced {
            return self.balanced_order(epoch);
        }
        let mut perm: Vec<usize> = (0..self.shared.dataset.len()).collect();
        if self.shared.cfg.shuffle {
            perm.shuffle(&mut rng::rng_for(&[
                self.shared.cfg.seed,
                epoch as u64,
                TAG_PERM,
            ]));
        }
        perm
    }

    /// `len` draws with replacement, each sample weighted by one over its class's count (as
    /// PyTorch's `WeightedRandomSampler` with inverse class frequencies).
    fn balanced_order(&self, epoch: usize) -> Vec<usize> {
        let ds = &self.shared.dataset;
        let counts = ds.class_counts();
        let weights: Vec<f64> = (0..ds.len())
            .map(|i| {
                ds.label(i)
                    .ok()
                    .and_then(|l| counts.get(l))
                    .map_or(0.0, |&c| 1.0 / c.max(1) as f64)
            })
            .collect();
        let Ok(pick) = rand::distributions::WeightedIndex::new(&weights) else {
            return (0..ds.len()).collect();
        };
        let mut r = rng::rng_for(&[self.shared.cfg.seed, epoch as u64, TAG_BALANCED]);
        (0..ds.len()).map(|_| pick.sample(&mut r)).collect()
    }

    /// Batches `start_batch..` of `epoch`, identical to those of the uninterrupted epoch.
    pub fn epoch(&self, epoch: usize, start_batch: usize) -> Result<Epoch> {
        self.resume(LoaderState {
            epoch,
            next_batch: start_batch,
        })
    }

    /// Totals over every epoch iterated so far (`epoch` is the latest one).
    pub fn stats(&self) -> LoaderStats {
        let mut s = self.shared.totals.lock().unwrap().clone();
        s.skipped = self.shared.skipped.lock().unwrap().len();
        s
    }

    /// Continues from a saved state (see `Epoch::state`).
    pub fn resume(&self, state: LoaderState) -> Result<Epoch> {
        let n = self.batches_per_epoch();
        if state.next_batch > n {
            return Err(DataError::Loader(format!(
                "resume at batch {} but an epoch has {n}",
                state.next_batch
            )));
        }
        let order = self.order(state.epoch);
        let order = if self.shared.shard.world_size > 1 {
            self.shared
                .shard
                .rank_order(&order, self.shared.cfg.batch_size)?
        } else {
            order
        };
        Ok(Epoch::start(self.shared.clone(), state, order, n))
    }
}

/// Iterator over one epoch's batches. Dropping it stops the workers.
pub struct Epoch {
    epoch: usize,
    next: usize,
    end: usize,
    start: usize,
    receivers: Vec<Receiver<Result<Batch>>>,
    workers: Vec<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
    started: Instant,
    last_tick: Instant,
    wait: Duration,
    images: usize,
    failed: bool,
}

impl Epoch {
    fn start(shared: Arc<Shared>, state: LoaderState, order: Vec<usize>, end: usize) -> Self {
        let n_workers = shared
            .cfg
            .resolved_workers()
            .min(end.saturating_sub(state.next_batch))
            .max(1);
        let stop = Arc::new(AtomicBool::new(false));
        let order = Arc::new(order);
        let mut receivers = Vec::new();
        let mut workers = Vec::new();
        for w in 0..n_workers {
            let (tx, rx) = sync_channel(shared.cfg.prefetch.max(1));
            receivers.push(rx);
            let (shared, stop, order) = (shared.clone(), stop.clone(), order.clone());
            let first = state.next_batch + w;
            let epoch = state.epoch;
            let handle = std::thread::Builder::new()
                .name(format!("lkd-data-{w}"))
                .spawn(move || {
                    let mut k = first;
                    while k < end && !stop.load(Ordering::Relaxed) {
                        let b = build_batch(&shared, &order, epoch, k);
                        let failed = b.is_err();
                        if tx.send(b).is_err() || failed {
                            return;
                        }
                        k += n_workers;
                    }
                })
                .expect("spawn data worker");
            workers.push(handle);
        }
        Self {
            epoch: state.epoch,
            next: state.next_batch,
            end,
            start: state.next_batch,
            receivers,
            workers,
            stop,
            shared,
            started: Instant::now(),
            last_tick: Instant::now(),
            wait: Duration::ZERO,
            images: 0,
            failed: false,
        }
    }

    /// Where to resume after the batches delivered so far.
    pub fn state(&self) -> LoaderState {
        if self.next >= self.end {
            LoaderState {
                epoch: self.epoch + 1,
                next_batch: 0,
            }
        } else {
            LoaderState {
                epoch: self.epoch,
                next_batch: self.next,
            }
        }
    }

    /// Batches left in this epoch.
    pub fn remaining(&self) -> usize {
        self.end - self.next
    }

    pub fn stats(&self) -> LoaderStats {
        LoaderStats {
            epoch: self.epoch,
            batches: self.next - self.start,
            images: self.images,
            elapsed_s: self.last_tick.duration_since(self.started).as_secs_f64(),
            wait_s: self.wait.as_secs_f64(),
            skipped: self.shared.skipped.lock().unwrap().len(),
        }
    }
}

impl Iterator for Epoch {
    type Item = Result<Batch>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.next >= self.end {
            return None;
        }
        let rx = &self.receivers[(self.next - self.start) % self.receivers.len()];
        let t0 = Instant::now();
        let got = rx.recv();
        self.wait += t0.elapsed();
        match got {
            Ok(Ok(b)) => {
                self.next += 1;
                self.images += b.len();
                let now = Instant::now();
                let mut t = self.shared.totals.lock().unwrap();
                t.epoch = self.epoch;
                t.batches += 1;
                t.images += b.len();
                t.wait_s += now.duration_since(t0).as_secs_f64();
                t.elapsed_s += now.duration_since(self.last_tick).as_secs_f64();
                self.last_tick = now;
                Some(Ok(b))
            }
            Ok(Err(e)) => {
                self.failed = true;
                Some(Err(e))
            }
            Err(_) => {
                self.failed = true;
                Some(Err(DataError::Loader(format!(
                    "data worker for batch {} stopped unexpectedly (panic?)",
                    self.next
                ))))
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let r = if self.failed { 0 } else { self.remaining() };
        (r, Some(r))
    }
}

impl Drop for Epoch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Dropping the receivers unblocks workers waiting on a full queue.
        self.receivers.clear();
        for h in self.workers.drain(..) {
            let _ = h.join();
        }
    }
}

/// A decoded sample with its full size, its drawn crop and its random stream.
struct Loaded {
    idx: usize,
    sample: super::Sample,
    full: [usize; 2],
    plan: DecodePlan,
    rng: rand::rngs::StdRng,
}

/// Loads sample `order[pos]`; an undecodable one is recorded and replaced by the next decodable
/// sample in epoch order, so the substitute is the same whatever the thread timing.
///
/// The sample's random stream is drawn from first for its crop, so the decoder can scale a JPEG
/// down to what the crop needs ([`Transform::plan`]); the rest of the transform continues it.
fn load_sample(shared: &Shared, order: &[usize], pos: usize, epoch: usize) -> Result<Loaded> {
    let ds = &shared.dataset;
    for step in 0..order.len() {
        let idx = order[(pos + step) % order.len()];
        if !ds.strict() && shared.skipped.lock().unwrap().contains_key(&idx) {
            continue;
        }
        let mut rng = rng::rng_for(&[shared.cfg.seed, epoch as u64, idx as u64]);
        let mut plan = None;
        let got = ds.get_reduced(idx, |w, h| {
            let p = shared.transform.plan(w, h, &mut rng);
            plan = Some(p);
            p.min_scale
        });
        match got {
            Ok((sample, full)) => {
                let plan = plan.ok_or_else(|| {
                    DataError::Loader(format!("sample {idx} was decoded without a plan"))
                })?;
                return Ok(Loaded {
                    idx,
                    sample,
                    full,
                    plan,
                    rng,
                });
            }
            Err(e @ (DataError::Decode { .. } | DataError::Io { .. })) => {
                if ds.strict() {
                    return Err(e);
                }
                shared
                    .skipped
                    .lock()
                    .unwrap()
                    .entry(idx)
                    .or_insert_with(|| skip_reason(&e));
            }
            Err(e) => return Err(e),
        }
    }
    Err(DataError::Loader(format!(
        "no decodable sample in {}",
        ds.name()
    )))
}

/// `path: reason` for a skipped file (the reason without the hint about `strict`).
fn skip_reason(e: &DataError) -> String {
    match e {
        DataError::Decode { path, source } => {
            format!("{}: {}", path.display(), crate::error_chain(source))
        }
        DataError::Io { path, source } => format!("{}: {source}", path.display()),
        other => crate::error_chain(other),
    }
}

fn build_batch(shared: &Shared, order: &[usize], epoch: usize, k: usize) -> Result<Batch> {
    let cfg = &shared.cfg;
    let lo = k * cfg.batch_size;
    let hi = ((k + 1) * cfg.batch_size).min(order.len());
    let b = hi - lo;
    let [c, h, w] = shared.transform.output_shape();
    let per = c * h * w;
    let mut buf = vec![0f32; b * per];
    let mut labels = Vec::with_capacity(b);
    let mut samples = Vec::with_capacity(b);
    for (j, pos) in (lo..hi).enumerate() {
        let Loaded {
            idx,
            sample: s,
            full,
            plan,
            mut rng,
        } = load_sample(shared, order, pos, epoch)?;
        shared
            .transform
            .apply_planned(
                s.image,
                full,
                &plan,
                &mut rng,
                &mut buf[j * per..(j + 1) * per],
            )
            .map_err(|source| DataError::Transform { index: idx, source })?;
        labels.push(s.label as i64);
        samples.push(idx);
    }
    let (soft, lam) = match &shared.mixup {
        Some(m) => {
            let mut r = rng::rng_for(&[cfg.seed, epoch as u64, k as u64, TAG_MIX]);
            let out = m.apply(&mut buf, [b, c, h, w], &labels, &mut r);
            let t = Tensor::f_from_slice(&out.targets)?.f_view([b as i64, m.num_classes as i64])?;
            (Some(t), out.lam)
        }
        None => (None, 1.0),
    };
    Ok(Batch {
        epoch,
        index: k,
        images: Tensor::f_from_slice(&buf)?.f_view([b as i64, c as i64, h as i64, w as i64])?,
        labels: Tensor::f_from_slice(&labels)?,
        targets: soft,
        lam,
        samples,
    })
}
