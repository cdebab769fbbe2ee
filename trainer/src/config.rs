//! Run configuration: a TOML file plus CLI overrides, resolved once and written into the run dir.

use crate::data::{AugmentConfig, DatasetSpec, MixupConfig};
use crate::losses::FeatureLoss;
use crate::precision::{Precision, ScalerConfig};
use crate::teacher_cache::CacheSetting;
use crate::TrainError;
use lkd_models::ModelConfig;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    pub model: ModelConfig,
    pub data: DataConfig,
    #[serde(default)]
    pub optim: OptimConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distill: Option<DistillConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ema: Option<EmaConfig>,
    #[serde(default, skip_serializing_if = "FinetuneConfig::is_off")]
    pub finetune: FinetuneConfig,
    #[serde(default)]
    pub run: RunConfig,
}

/// Starting from pretrained weights (`--init`) and what fine-tuning trains.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FinetuneConfig {
    /// Weights to start from: a run dir or checkpoint of ours, official SLaK / ConvNeXt,
    /// timm or torchvision `.pth` / `.safetensors`. Loaded strictly, except the classifier
    /// (re-initialised for another class count), the stem's channels and a ViT's position grid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init: Option<PathBuf>,
    /// Scale of the re-initialised classifier's weight and bias (the ConvNeXt / SLaK
    /// fine-tuning recipes' `head_init_scale`).
    pub head_init_scale: f64,
    /// Parameter-path prefixes (upstream names, e.g. "stem", "stages.0", "layer1") not trained;
    /// their BatchNorm layers stay in eval mode.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub freeze: Vec<String>,
    /// Train the classifier only (everything else frozen).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub linear_probe: bool,
}

impl Default for FinetuneConfig {
    fn default() -> Self {
        Self {
            init: None,
            head_init_scale: 1.0,
            freeze: vec![],
            linear_probe: false,
        }
    }
}

impl FinetuneConfig {
    pub fn is_off(&self) -> bool {
        *self == Self::default()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    pub dataset: DatasetSpec,
    #[serde(default)]
    pub augment: AugmentConfig,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mixup: Option<MixupConfig>,
    /// Decode/augment threads; 0 = one per core.
    #[serde(default)]
    pub workers: usize,
    /// Batches decoded ahead of the model.
    #[serde(default = "default_prefetch")]
    pub prefetch: usize,
    /// Draw training samples class-balanced (with replacement, each class equally often)
    /// instead of a plain shuffle: for folders with very unequal classes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub balanced_sampling: bool,
}

fn default_prefetch() -> usize {
    4
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    pub epochs: usize,
    /// Per-step batch; the effective batch is `batch_size * update_freq`.
    pub batch_size: usize,
    pub update_freq: usize,
    pub lr: f64,
    pub min_lr: f64,
    pub weight_decay: f64,
    pub warmup_epochs: f64,
    /// Global gradient-norm clip; none when absent.
    pub clip_grad: Option<f64>,
    pub label_smoothing: f64,
    /// Layer-wise learning-rate decay for fine-tuning: a parameter at depth `i` of `L`
    /// (stem 0, each residual block, head `L`) gets `lr * layer_decay^(L - i)`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer_decay: Option<f64>,
    /// Learning-rate multiplier of the classifier.
    #[serde(skip_serializing_if = "is_one")]
    pub head_lr_scale: f64,
}

fn is_one(v: &f64) -> bool {
    *v == 1.0
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            epochs: 10,
            batch_size: 128,
            update_freq: 1,
            lr: 4e-3,
            min_lr: 1e-6,
            weight_decay: 0.05,
            warmup_epochs: 1.0,
            clip_grad: None,
            label_smoothing: 0.1,
            layer_decay: None,
            head_lr_scale: 1.0,
        }
    }
}

/// One spelling table (strum) for flags, configs and run dirs: serde goes through it too.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Serialize,
    Deserialize,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::VariantNames,
)]
#[serde(try_from = "String", into = "&'static str")]
pub enum KdMethod {
    #[strum(serialize = "none")]
    None,
    #[strum(serialize = "kd")]
    Kd,
    #[strum(serialize = "nkd")]
    Nkd,
    #[strum(serialize = "fd")]
    Fd,
    #[strum(serialize = "kd+fd")]
    KdFd,
    #[strum(serialize = "nkd+fd")]
    NkdFd,
}

impl TryFrom<String> for KdMethod {
    type Error = TrainError;
    fn try_from(s: String) -> Result<Self, TrainError> {
        Self::parse(&s)
    }
}

impl KdMethod {
    pub fn parse(s: &str) -> Result<Self, TrainError> {
        use strum::VariantNames;
        s.parse().map_err(|_| {
            TrainError::Config(format!(
                "unknown KD method `{s}`; use {}",
                lkd_util::one_of(Self::VARIANTS)
            ))
        })
    }
    pub fn as_str(self) -> &'static str {
        self.into()
    }
    pub fn uses_logits(self) -> bool {
        !matches!(self, KdMethod::None | KdMethod::Fd)
    }
    pub fn uses_features(self) -> bool {
        matches!(self, KdMethod::Fd | KdMethod::KdFd | KdMethod::NkdFd)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DistillConfig {
    pub method: KdMethod,
    /// A run dir of ours, or a checkpoint file (safetensors or official `.pth`).
    pub teacher: PathBuf,
    /// Architecture of a checkpoint-file teacher (a run dir states its own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub teacher_model: Option<ModelConfig>,
    /// KD: weight of the KL term (the CE term gets 1 − alpha). NKD: weight of the non-target term.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alpha: Option<f64>,
    #[serde(default = "one")]
    pub temperature: f64,
    #[serde(default = "one")]
    pub fd_weight: f64,
    #[serde(default = "smooth_l1")]
    pub fd_loss: FeatureLoss,
    /// Teacher-output cache: "auto" (under `$LKD_CACHE`), "off", or a directory.
    #[serde(default)]
    pub cache: CacheSetting,
    /// Classes of teacher logits the cache keeps per sample (top-k + log-sum-exp); 0 keeps all.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cache_topk: usize,
}

fn is_zero(v: &usize) -> bool {
    *v == 0
}

fn one() -> f64 {
    1.0
}
fn smooth_l1() -> FeatureLoss {
    FeatureLoss::SmoothL1
}

impl DistillConfig {
    /// A method and teacher with the default temperature, weights and feature loss.
    pub fn new(method: KdMethod, teacher: PathBuf) -> Self {
        Self {
            method,
            teacher,
            teacher_model: None,
            alpha: None,
            temperature: 1.0,
            fd_weight: 1.0,
            fd_loss: FeatureLoss::SmoothL1,
            cache: CacheSetting::Auto,
            cache_topk: 0,
        }
    }

    /// Defaults per method, as the SLaK distillation code: KD α 0.1 (Hinton), NKD α 1.0
    /// (`NKDLoss()`'s defaults there: non-target weight 1.0, T = 1).
    pub fn alpha(&self) -> f64 {
        self.alpha.unwrap_or(match self.method {
            KdMethod::Nkd | KdMethod::NkdFd => 1.0,
            _ => 0.1,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmaConfig {
    pub decay: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunConfig {
    pub seed: u64,
    pub device: String,
    /// Optimizer steps between metric lines.
    pub log_every: usize,
    /// Optimizer steps between mid-epoch checkpoints (0: at epoch ends only).
    pub checkpoint_every: usize,
    /// Stop after this many optimizer steps in this invocation (used to test resume).
    pub max_steps: Option<usize>,
    /// libtorch intra-op threads (0: libtorch's default, or the cores split between the
    /// workers of a data-parallel launch on one node).
    pub threads: usize,
    /// "fp32" (default, as the paper's authors trained), "bf16" (autocast; the fast choice on
    /// CUDA) or "fp16" (autocast with dynamic loss scaling). See [`crate::precision`].
    #[serde(skip_serializing_if = "is_fp32")]
    pub precision: String,
    /// Dynamic loss scaling for `precision = "fp16"` (torch.amp.GradScaler's defaults).
    #[serde(skip_serializing_if = "is_default_scaler")]
    pub grad_scaler: ScalerConfig,
    /// Data-parallel runs: seconds a collective (or the rendezvous) may wait for the other
    /// workers before the run stops with an error naming the operation (torch's default: 1800).
    #[serde(skip_serializing_if = "is_default_dist_timeout")]
    pub dist_timeout_s: u64,
    /// Also keep each epoch's evaluated weights (`epoch-NNN.safetensors`, student or EMA as
    /// `best` picks), so a study can distil from the checkpoint at a chosen accuracy.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub keep_epoch_weights: bool,
}

// Fields added after run dirs existed are left out of `config.toml` at their defaults, so
// older configs and `result_digest`s stay as they were.
fn is_fp32(p: &String) -> bool {
    p == "fp32"
}
fn is_default_scaler(s: &ScalerConfig) -> bool {
    *s == ScalerConfig::default()
}
fn is_default_dist_timeout(t: &u64) -> bool {
    *t == DEFAULT_DIST_TIMEOUT_S
}

/// torch.distributed's default collective timeout.
pub const DEFAULT_DIST_TIMEOUT_S: u64 = 1800;

impl RunConfig {
    /// The parsed `precision` (validated by [`TrainConfig::validate`]).
    pub fn precision(&self) -> Result<Precision, TrainError> {
        Precision::parse(&self.precision)
    }
}

impl Default for RunConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            device: "cpu".into(),
            log_every: 20,
            checkpoint_every: 0,
            max_steps: None,
            threads: 0,
            precision: "fp32".into(),
            grad_scaler: ScalerConfig::default(),
            dist_timeout_s: DEFAULT_DIST_TIMEOUT_S,
            keep_epoch_weights: false,
        }
    }
}

/// A range check on one config field: `field` must satisfy `ok`, described as `range`.
fn check(field: &str, value: f64, ok: bool, range: &str) -> Result<(), TrainError> {
    if ok && value.is_finite() {
        Ok(())
    } else {
        // Huge values in exponent form (1e300, not 301 digits).
        let found = if value.abs() >= 1e6 && value.is_finite() {
            format!("{value:e}")
        } else {
            value.to_string()
        };
        Err(TrainError::Config(format!(
            "{field} must be {range}, found {found}"
        )))
    }
}

fn validate_optim(o: &OptimConfig) -> Result<(), TrainError> {
    check(
        "optim.epochs",
        o.epochs as f64,
        (1..=100_000).contains(&o.epochs),
        "in 1..=100000",
    )?;
    check(
        "optim.batch_size",
        o.batch_size as f64,
        (1..=65536).contains(&o.batch_size),
        "in 1..=65536",
    )?;
    check(
        "optim.update_freq",
        o.update_freq as f64,
        (1..=4096).contains(&o.update_freq),
        "in 1..=4096",
    )?;
    // No upper bound: a diverging recipe is a result the non-finite-loss guard reports.
    check("optim.lr", o.lr, o.lr > 0.0, "a positive finite number")?;
    check(
        "optim.min_lr",
        o.min_lr,
        o.min_lr >= 0.0 && o.min_lr <= o.lr,
        "in [0, optim.lr]",
    )?;
    check(
        "optim.weight_decay",
        o.weight_decay,
        (0.0..=10.0).contains(&o.weight_decay),
        "in [0, 10]",
    )?;
    check(
        "optim.warmup_epochs",
        o.warmup_epochs,
        o.warmup_epochs >= 0.0 && o.warmup_epochs <= o.epochs as f64,
        "in [0, optim.epochs]",
    )?;
    if let Some(c) = o.clip_grad {
        check("optim.clip_grad", c, c > 0.0 && c <= 1e6, "in (0, 1e6]")?;
    }
    check(
        "optim.label_smoothing",
        o.label_smoothing,
        (0.0..1.0).contains(&o.label_smoothing),
        "in [0, 1)",
    )?;
    if let Some(d) = o.layer_decay {
        check("optim.layer_decay", d, d > 0.0 && d <= 1.0, "in (0, 1]")?;
    }
    check(
        "optim.head_lr_scale",
        o.head_lr_scale,
        o.head_lr_scale > 0.0 && o.head_lr_scale <= 1e4,
        "in (0, 1e4]",
    )?;
    Ok(())
}

fn validate_finetune(f: &FinetuneConfig) -> Result<(), TrainError> {
    check(
        "finetune.head_init_scale",
        f.head_init_scale,
        f.head_init_scale > 0.0 && f.head_init_scale <= 1e4,
        "in (0, 1e4]",
    )?;
    if let Some(p) = f.freeze.iter().find(|p| p.trim().is_empty()) {
        return Err(TrainError::Config(format!(
            "finetune.freeze holds an empty prefix {p:?}: name parameter paths such as \"stages.0\""
        )));
    }
    Ok(())
}

fn validate_data(d: &DataConfig) -> Result<(), TrainError> {
    check(
        "data.workers",
        d.workers as f64,
        d.workers <= 256,
        "at most 256 (0: one per core)",
    )?;
    check(
        "data.prefetch",
        d.prefetch as f64,
        (1..=64).contains(&d.prefetch),
        "in 1..=64",
    )?;
    validate_augment(&d.augment)?;
    if let Some(m) = &d.mixup {
        validate_mixup(m)?;
    }
    Ok(())
}

fn validate_augment(a: &AugmentConfig) -> Result<(), TrainError> {
    check(
        "data.augment.hflip",
        a.hflip,
        (0.0..=1.0).contains(&a.hflip),
        "a probability in [0, 1]",
    )?;
    check(
        "data.augment.random_erasing",
        a.random_erasing,
        (0.0..=1.0).contains(&a.random_erasing),
        "a probability in [0, 1]",
    )?;
    check(
        "data.augment.crop_padding",
        a.crop_padding as f64,
        a.crop_padding <= 1024,
        "at most 1024",
    )?;
    if let Some(spec) = &a.rand_augment {
        // The spelling only: fill and interpolation come from the model at load time.
        let interpolation = lkd_models::preprocess::Interpolation::Bilinear;
        crate::data::RandAugment::parse(spec, vec![0], interpolation).map_err(|e| match e {
            crate::data::DataError::Config(m) => TrainError::Config(format!("data.augment.{m}")),
            other => other.into(),
        })?;
    }
    if let Some(r) = &a.random_resized_crop {
        let [s0, s1] = r.scale;
        check(
            "data.augment.random_resized_crop.scale[0]",
            s0,
            s0 > 0.0 && s0 <= s1 && s1 <= 1.0,
            "in (0, scale[1]] with scale[1] ≤ 1",
        )?;
        let [r0, r1] = r.ratio;
        check(
            "data.augment.random_resized_crop.ratio[0]",
            r0,
            r0 > 0.0 && r0 <= r1,
            "positive and ≤ ratio[1]",
        )?;
    }
    Ok(())
}

fn validate_mixup(m: &MixupConfig) -> Result<(), TrainError> {
    check(
        "data.mixup.mixup_alpha",
        m.mixup_alpha,
        (0.0..=100.0).contains(&m.mixup_alpha),
        "in [0, 100]",
    )?;
    check(
        "data.mixup.cutmix_alpha",
        m.cutmix_alpha,
        (0.0..=100.0).contains(&m.cutmix_alpha),
        "in [0, 100]",
    )?;
    check(
        "data.mixup.prob",
        m.prob,
        (0.0..=1.0).contains(&m.prob),
        "a probability in [0, 1]",
    )?;
    check(
        "data.mixup.switch_prob",
        m.switch_prob,
        (0.0..=1.0).contains(&m.switch_prob),
        "a probability in [0, 1]",
    )?;
    Ok(())
}

fn validate_distill(k: &DistillConfig) -> Result<(), TrainError> {
    check(
        "distill.temperature",
        k.temperature,
        k.temperature > 0.0 && k.temperature <= 100.0,
        "in (0, 100]",
    )?;
    check(
        "distill.fd_weight",
        k.fd_weight,
        (0.0..=1000.0).contains(&k.fd_weight),
        "in [0, 1000]",
    )?;
    if let Some(al) = k.alpha {
        match k.method {
            KdMethod::Kd | KdMethod::KdFd => check(
                "distill.alpha",
                al,
                (0.0..=1.0).contains(&al),
                "in [0, 1] for KD (the KL weight; CE gets 1 − alpha)",
            )?,
            _ => check(
                "distill.alpha",
                al,
                (0.0..=100.0).contains(&al),
                "in [0, 100]",
            )?,
        }
    }
    Ok(())
}

fn validate_ema(e: &EmaConfig) -> Result<(), TrainError> {
    check(
        "ema.decay",
        e.decay,
        e.decay > 0.0 && e.decay < 1.0,
        "in (0, 1)",
    )
}

fn validate_run(r: &RunConfig) -> Result<(), TrainError> {
    check(
        "run.threads",
        r.threads as f64,
        r.threads <= 4096,
        "at most 4096 (0: libtorch's default)",
    )?;
    if let Some(m) = r.max_steps {
        check("run.max_steps", m as f64, m >= 1, "at least 1")?;
    }
    r.device
        .parse::<lkd_util::Device>()
        .map_err(|e| TrainError::Config(format!("run.device: {e}")))?;
    r.precision()?;
    r.grad_scaler.validate()?;
    check(
        "run.dist_timeout_s",
        r.dist_timeout_s as f64,
        (1..=86_400).contains(&r.dist_timeout_s),
        "in 1..=86400 (seconds)",
    )?;
    Ok(())
}

impl TrainConfig {
    pub fn from_toml_str(text: &str) -> Result<Self, TrainError> {
        let cfg: Self = toml::from_str(text).map_err(|e| TrainError::Config(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks every numeric field against its range, so a bad value is a clear error before any
    /// work starts instead of a panic or a silently meaningless run. Sections go in a fixed
    /// order, so the first error of a config with several is always the same one.
    pub fn validate(&self) -> Result<(), TrainError> {
        validate_optim(&self.optim)?;
        validate_finetune(&self.finetune)?;
        validate_data(&self.data)?;
        if let Some(k) = &self.distill {
            validate_distill(k)?;
        }
        if let Some(e) = &self.ema {
            validate_ema(e)?;
        }
        validate_run(&self.run)
    }

    pub fn load(path: &Path) -> Result<Self, TrainError> {
        let text = std::fs::read_to_string(path).map_err(|source| TrainError::Io {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml_str(&text).map_err(|e| TrainError::ConfigFile {
            path: path.display().to_string(),
            source: Box::new(e),
        })
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("config serializes")
    }

    /// Applies `key.path=value` overrides (value parsed as TOML, else taken as a string).
    pub fn with_overrides(&self, sets: &[String]) -> Result<Self, TrainError> {
        let mut doc: toml::Value =
            toml::Value::try_from(self).map_err(|e| TrainError::Config(e.to_string()))?;
        for set in sets {
            let (key, raw) = set
                .split_once('=')
                .ok_or_else(|| TrainError::Config(format!("override `{set}` is not key=value")))?;
            let value: toml::Value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
                .ok()
                .and_then(|mut t| t.remove("v"))
                .unwrap_or_else(|| toml::Value::String(raw.to_string()));
            let mut node = &mut doc;
            let parts: Vec<&str> = key.trim().split('.').collect();
            for (i, part) in parts.iter().enumerate() {
                let table = node.as_table_mut().ok_or_else(|| {
                    TrainError::Config(format!("override `{key}`: `{part}` is not inside a table"))
                })?;
                if i + 1 == parts.len() {
                    table.insert(part.to_string(), value.clone());
                    break;
                }
                node = table
                    .entry(part.to_string())
                    .or_insert_with(|| toml::Value::Table(Default::default()));
            }
        }
        let cfg: Self = doc
            .try_into()
            .map_err(|e: toml::de::Error| TrainError::Config(format!("after overrides: {e}")))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Digest of what determines a run's result — model, data, optimisation, distillation,
    /// EMA, seed, device, precision — and not of logging, checkpoint cadence, thread or worker counts. Two
    /// configs with the same digest train the same model, so a finished run can stand in for
    /// the other (trained teachers are kept under `$LKD_CACHE/teachers/<digest>`).
    pub fn result_digest(&self) -> String {
        use sha2::Digest;
        let mut c = self.clone();
        c.run = RunConfig {
            seed: self.run.seed,
            device: self.run.device.clone(),
            precision: self.run.precision.clone(),
            grad_scaler: self.run.grad_scaler.clone(),
            // A run without epoch weights cannot stand in for one asked to keep them.
            keep_epoch_weights: self.run.keep_epoch_weights,
            ..RunConfig::default()
        };
        c.data.workers = 0;
        c.data.prefetch = default_prefetch();
        if let Ok(p) = c.data.dataset.path.canonicalize() {
            c.data.dataset.path = p;
        }
        let digest = sha2::Sha256::digest(c.to_toml().as_bytes());
        digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }

    /// Whether `stored`, the config a run directory holds, trains what `self` asks for. A run
    /// stores its config with the model fields it took from the data filled in
    /// ([`crate::train::resolve_model`]); the data settings are part of the digest, so the same
    /// data gives the same fields, and those `self` leaves open are taken from `stored`.
    pub fn same_recipe_as(&self, stored: &TrainConfig) -> bool {
        let mut asked = self.clone();
        let (m, s) = (&mut asked.model, &stored.model);
        m.num_classes = m.num_classes.or(s.num_classes);
        m.in_chans = m.in_chans.or(s.in_chans);
        m.input_size = m.input_size.or(s.input_size);
        asked.result_digest() == stored.result_digest()
    }

    /// A short stable hash of the resolved config (provenance in exports).
    pub fn hash(&self) -> String {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(self.to_toml().as_bytes());
        digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::KdMethod;
    use strum::VariantNames;

    /// Flags, configs and run dirs share one spelling per method, and a typo lists them all.
    #[test]
    fn kd_method_spellings_round_trip() {
        for &name in KdMethod::VARIANTS {
            let m = KdMethod::parse(name).unwrap();
            assert_eq!(m.as_str(), name);
            #[derive(serde::Serialize, serde::Deserialize)]
            struct T {
                method: KdMethod,
            }
            let text = toml::to_string(&T { method: m }).unwrap();
            assert_eq!(text.trim(), format!("method = \"{name}\""));
            assert_eq!(toml::from_str::<T>(&text).unwrap().method, m);
        }
        assert_eq!(
            KdMethod::parse("kd+nkd").unwrap_err().to_string(),
            "config: unknown KD method `kd+nkd`; use none, kd, nkd, fd, kd+fd or nkd+fd"
        );
    }
}
