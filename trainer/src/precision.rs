//! Training precision (`run.precision`) and dynamic loss scaling with PyTorch's GradScaler
//! semantics.
//!
//! - `fp32` (default, as the paper's authors trained): no autocast, no scaling.
//! - `bf16`: autocast in bfloat16, the fast choice on CUDA; bf16 has fp32's exponent range, so
//!   no loss scaling. tch cannot set the autocast dtype (CUDA's default is fp16):
//!   `lkd_dist::set_autocast_dtype` does, on the thread that runs the forward pass.
//! - `fp16`: autocast in float16, only with a [`GradScaler`]: small gradients (the loss is
//!   divided by `update_freq`, layer scale starts at 1e-6) underflow fp16 to zero otherwise.
//!
//! CPU autocast (bf16 or fp16) is real ATen autocast too, so the whole path runs in CPU tests;
//! it is rarely faster than fp32 on a CPU.
//!
//! The scaler runs torch's own kernels (`_amp_foreach_non_finite_check_and_unscale_`,
//! `_amp_update_scale_`) on its state tensors, as `torch.amp.GradScaler` does.

use crate::TrainError;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// The shape of a 0-dimensional tensor (torch keeps the scale and tracker as scalars).
const SCALAR: [i64; 0] = [];

#[derive(
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    Serialize,
    Deserialize,
    strum::EnumString,
    strum::IntoStaticStr,
    strum::VariantNames,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Precision {
    #[default]
    Fp32,
    Bf16,
    Fp16,
}

impl Precision {
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    pub fn parse(text: &str) -> Result<Self, TrainError> {
        use strum::VariantNames;
        text.parse().map_err(|_| {
            TrainError::Config(format!(
                "run.precision = {text:?}: expected {}",
                lkd_util::one_of_quoted(Self::VARIANTS)
            ))
        })
    }

    /// The dtype autocast must run in, or `None` for plain fp32.
    pub fn autocast_kind(self) -> Option<Kind> {
        match self {
            Precision::Fp32 => None,
            Precision::Bf16 => Some(Kind::BFloat16),
            Precision::Fp16 => Some(Kind::Half),
        }
    }

    /// Only fp16 needs dynamic loss scaling.
    pub fn needs_loss_scaling(self) -> bool {
        self == Precision::Fp16
    }

    /// Autocast runs on CUDA and on CPU (ATen's CPU autocast: real, but rarely faster than fp32
    /// except on CPUs with bf16/fp16 units); another device is an error, not a silent fp32 run.
    pub fn check_device(self, device: Device) -> Result<(), TrainError> {
        if self != Precision::Fp32 && !matches!(device, Device::Cuda(_) | Device::Cpu) {
            return Err(TrainError::Config(format!(
                "run.precision = \"{}\" needs a CUDA or CPU device (got {device:?}); use \"fp32\"",
                self.as_str()
            )));
        }
        Ok(())
    }
}

impl std::fmt::Display for Precision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `torch.amp.GradScaler`'s constructor arguments, with its defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScalerConfig {
    pub init_scale: f64,
    pub growth_factor: f64,
    pub backoff_factor: f64,
    /// Consecutive finite steps before the scale grows.
    pub growth_interval: i64,
}

impl Default for ScalerConfig {
    fn default() -> Self {
        Self {
            init_scale: 65536.0,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
        }
    }
}

impl ScalerConfig {
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |msg: String| Err(TrainError::Config(format!("grad scaler: {msg}")));
        if !(self.init_scale.is_finite() && self.init_scale > 0.0) {
            return bad(format!(
                "init_scale {} must be positive and finite",
                self.init_scale
            ));
        }
        if !(self.growth_factor.is_finite() && self.growth_factor > 1.0) {
            return bad(format!(
                "growth_factor {} must be greater than 1",
                self.growth_factor
            ));
        }
        if !(self.backoff_factor > 0.0 && self.backoff_factor < 1.0) {
            return bad(format!(
                "backoff_factor {} must be in (0, 1)",
                self.backoff_factor
            ));
        }
        if self.growth_interval < 1 || self.growth_interval > i32::MAX as i64 {
            return bad(format!(
                "growth_interval {} must be a positive 32-bit count",
                self.growth_interval
            ));
        }
        Ok(())
    }
}

/// What a scaled step did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StepOutcome {
    Applied,
    /// A gradient held inf/NaN: the optimizer did not run and the scale backed off.
    Skipped,
}

/// The scaler's state for checkpoints (`torch.amp.GradScaler.state_dict()`'s `scale` and
/// `_growth_tracker`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScalerState {
    pub scale: f64,
    pub growth_tracker: i64,
}

/// Dynamic loss scaling: multiply the loss by `scale` before backward, divide the gradients by
/// it before the optimizer, skip the step and shrink the scale when a gradient is inf/NaN, and
/// grow it after `growth_interval` clean steps. A disabled scaler (fp32, bf16) passes
/// everything through.
pub struct GradScaler {
    cfg: ScalerConfig,
    enabled: bool,
    /// fp32 scalar, as torch keeps it.
    scale: Tensor,
    /// int32 scalar: consecutive finite steps since the last change.
    growth_tracker: Tensor,
    /// `Some(found_inf)` once the current step's gradients are unscaled.
    unscaled: Option<bool>,
}

impl GradScaler {
    /// A scaler on `device`, enabled when `precision` needs one.
    pub fn new(
        precision: Precision,
        cfg: ScalerConfig,
        device: Device,
    ) -> Result<Self, TrainError> {
        cfg.validate()?;
        Ok(Self {
            enabled: precision.needs_loss_scaling(),
            scale: Tensor::f_full(SCALAR, cfg.init_scale, (Kind::Float, device))?,
            growth_tracker: Tensor::f_zeros(SCALAR, (Kind::Int, device))?,
            cfg,
            unscaled: None,
        })
    }

    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    /// The current scale (1 when disabled).
    pub fn scale_value(&self) -> Result<f64, TrainError> {
        Ok(if self.enabled {
            self.scale.f_double_value(&[])?
        } else {
            1.0
        })
    }

    /// `loss · scale`, to call `backward` on.
    pub fn scale(&self, loss: &Tensor) -> Result<Tensor, TrainError> {
        if !self.enabled {
            return Ok(loss.shallow_clone());
        }
        Ok(loss.f_mul(&self.scale.f_to_device(loss.device())?)?)
    }

    /// Divides the gradients of `params` by the scale in place and reports whether any was
    /// inf/NaN (then the step must be skipped). Call it before clipping; at most once a step.
    pub fn unscale(&mut self, params: &[&Tensor]) -> Result<bool, TrainError> {
        if !self.enabled {
            return Ok(false);
        }
        if self.unscaled.is_some() {
            return Err(TrainError::Other(
                "GradScaler::unscale called twice for one step (update() starts the next)".into(),
            ));
        }
        // As torch: the reciprocal in double, then rounded to float.
        let inv_scale = self
            .scale
            .f_to_kind(Kind::Double)?
            .f_reciprocal()?
            .f_to_kind(Kind::Float)?;
        let mut found_inf = Tensor::f_zeros(SCALAR, (Kind::Float, self.scale.device()))?;
        tch::no_grad(|| -> Result<(), TrainError> {
            for p in params {
                let mut grad = p.f_grad()?;
                if grad.defined() {
                    grad.f_internal_amp_non_finite_check_and_unscale(&mut found_inf, &inv_scale)?;
                }
            }
            Ok(())
        })?;
        let found = found_inf.f_double_value(&[])? != 0.0;
        self.unscaled = Some(found);
        Ok(found)
    }

    /// Updates the scale from this step's outcome: back off on inf/NaN, otherwise count the
    /// step and grow after `growth_interval` of them.
    pub fn update(&mut self) -> Result<(), TrainError> {
        if !self.enabled {
            return Ok(());
        }
        let found = self.unscaled.take().ok_or_else(|| {
            TrainError::Other("GradScaler::update called before unscale for this step".into())
        })?;
        let found_inf = Tensor::f_full(
            SCALAR,
            if found { 1.0 } else { 0.0 },
            (Kind::Float, self.scale.device()),
        )?;
        let _ = self.scale.f_internal_amp_update_scale_(
            &self.growth_tracker,
            &found_inf,
            self.cfg.growth_factor,
            self.cfg.backoff_factor,
            self.cfg.growth_interval,
        )?;
        Ok(())
    }

    /// One optimizer step under scaling: unscale (unless done already, e.g. for clipping), run
    /// `optimizer_step` only when every gradient is finite, then update the scale.
    pub fn step(
        &mut self,
        params: &[&Tensor],
        optimizer_step: impl FnOnce() -> Result<(), TrainError>,
    ) -> Result<StepOutcome, TrainError> {
        if !self.enabled {
            optimizer_step()?;
            return Ok(StepOutcome::Applied);
        }
        let found = match self.unscaled {
            Some(found) => found,
            None => self.unscale(params)?,
        };
        if !found {
            optimizer_step()?;
        }
        self.update()?;
        Ok(if found {
            StepOutcome::Skipped
        } else {
            StepOutcome::Applied
        })
    }

    pub fn state(&self) -> Result<ScalerState, TrainError> {
        Ok(ScalerState {
            scale: self.scale.f_double_value(&[])?,
            growth_tracker: self.growth_tracker.f_int64_value(&[])?,
        })
    }

    /// Restores a checkpointed state (a resumed fp16 run continues with its scale).
    pub fn load_state(&mut self, state: ScalerState) -> Result<(), TrainError> {
        if !(state.scale.is_finite() && state.scale > 0.0) || state.growth_tracker < 0 {
            return Err(TrainError::Config(format!(
                "grad scaler state {state:?}: scale must be positive, tracker >= 0"
            )));
        }
        let _ = self.scale.f_fill_(state.scale)?;
        let _ = self.growth_tracker.f_fill_(state.growth_tracker)?;
        self.unscaled = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CPU: Device = Device::Cpu;

    fn param_with_grad(values: &[f32]) -> Tensor {
        let p = Tensor::zeros([values.len() as i64], (Kind::Float, CPU)).set_requires_grad(true);
        (&p * Tensor::from_slice(values))
            .sum(Kind::Float)
            .backward();
        p
    }

    fn fast(interval: i64) -> ScalerConfig {
        ScalerConfig {
            growth_interval: interval,
            ..ScalerConfig::default()
        }
    }

    #[test]
    fn precision_parses_and_checks_its_device() {
        assert_eq!(Precision::default(), Precision::Fp32);
        assert_eq!(Precision::parse("bf16").unwrap(), Precision::Bf16);
        assert_eq!(
            Precision::parse("fp8").unwrap_err().to_string(),
            "config: run.precision = \"fp8\": expected \"fp32\", \"bf16\" or \"fp16\""
        );
        assert_eq!(Precision::Bf16.autocast_kind(), Some(Kind::BFloat16));
        assert!(Precision::Fp16.needs_loss_scaling() && !Precision::Bf16.needs_loss_scaling());
        Precision::Fp32.check_device(CPU).unwrap();
        Precision::Fp16.check_device(Device::Cuda(0)).unwrap();
        Precision::Bf16.check_device(CPU).unwrap();
        assert_eq!(
            Precision::Bf16
                .check_device(Device::Mps)
                .unwrap_err()
                .to_string(),
            "config: run.precision = \"bf16\" needs a CUDA or CPU device (got Mps); use \"fp32\""
        );
        let parsed: std::collections::BTreeMap<String, Precision> =
            toml::from_str("precision = \"fp16\"").unwrap();
        assert_eq!(parsed["precision"], Precision::Fp16);
    }

    #[test]
    fn an_inf_gradient_skips_the_step_and_backs_off() {
        let mut scaler = GradScaler::new(Precision::Fp16, ScalerConfig::default(), CPU).unwrap();
        assert_eq!(scaler.scale_value().unwrap(), 65536.0);
        let loss = Tensor::from(0.5f32);
        assert_eq!(
            scaler.scale(&loss).unwrap().double_value(&[]),
            0.5 * 65536.0
        );

        let good = param_with_grad(&[65536.0, -131072.0]);
        let bad = param_with_grad(&[1.0, f32::INFINITY]);
        let mut ran = false;
        let outcome = scaler
            .step(&[&good, &bad], || {
                ran = true;
                Ok(())
            })
            .unwrap();
        assert_eq!(outcome, StepOutcome::Skipped);
        assert!(!ran, "the optimizer must not run on an inf gradient");
        assert_eq!(
            scaler.state().unwrap(),
            ScalerState {
                scale: 32768.0,
                growth_tracker: 0
            }
        );
        // Gradients are unscaled even on a skipped step (as torch does).
        assert_eq!(Vec::<f32>::try_from(good.grad()).unwrap(), vec![1.0, -2.0]);

        let nan = param_with_grad(&[f32::NAN]);
        assert_eq!(
            scaler
                .step(&[&nan], || {
                    ran = true;
                    Ok(())
                })
                .unwrap(),
            StepOutcome::Skipped
        );
        assert_eq!(scaler.scale_value().unwrap(), 16384.0);
    }

    #[test]
    fn the_scale_grows_after_the_interval_of_finite_steps() {
        let mut scaler = GradScaler::new(Precision::Fp16, fast(3), CPU).unwrap();
        let mut steps = 0;
        for i in 0..3 {
            let p = param_with_grad(&[1.0, 2.0]);
            assert_eq!(
                scaler
                    .step(&[&p], || {
                        steps += 1;
                        Ok(())
                    })
                    .unwrap(),
                StepOutcome::Applied
            );
            let expected = if i < 2 {
                (65536.0, i + 1)
            } else {
                (131072.0, 0)
            };
            assert_eq!(
                scaler.state().unwrap(),
                ScalerState {
                    scale: expected.0,
                    growth_tracker: expected.1
                }
            );
        }
        assert_eq!(steps, 3);
        // An inf resets the count: growth needs 3 more clean steps.
        let bad = param_with_grad(&[f32::NEG_INFINITY]);
        scaler
            .step(&[&bad], || {
                steps += 1;
                Ok(())
            })
            .unwrap();
        assert_eq!(
            scaler.state().unwrap(),
            ScalerState {
                scale: 65536.0,
                growth_tracker: 0
            }
        );
        assert_eq!(steps, 3);
    }

    #[test]
    fn misuse_and_bad_config_are_errors() {
        let mut scaler = GradScaler::new(Precision::Fp16, ScalerConfig::default(), CPU).unwrap();
        let p = param_with_grad(&[1.0]);
        scaler.unscale(&[&p]).unwrap();
        assert_eq!(
            scaler.unscale(&[&p]).unwrap_err().to_string(),
            "GradScaler::unscale called twice for one step (update() starts the next)"
        );
        scaler.update().unwrap();
        assert_eq!(
            scaler.update().unwrap_err().to_string(),
            "GradScaler::update called before unscale for this step"
        );
        let err = GradScaler::new(
            Precision::Fp16,
            ScalerConfig {
                backoff_factor: 1.5,
                ..Default::default()
            },
            CPU,
        )
        .err()
        .unwrap();
        assert_eq!(
            err.to_string(),
            "config: grad scaler: backoff_factor 1.5 must be in (0, 1)"
        );
        assert!(scaler
            .load_state(ScalerState {
                scale: f64::INFINITY,
                growth_tracker: 0
            })
            .is_err());
    }

    #[test]
    fn disabled_scaler_passes_through() {
        let mut scaler = GradScaler::new(Precision::Bf16, ScalerConfig::default(), CPU).unwrap();
        assert!(!scaler.is_enabled());
        assert_eq!(
            scaler
                .scale(&Tensor::from(3.0f32))
                .unwrap()
                .double_value(&[]),
            3.0
        );
        let p = param_with_grad(&[f32::INFINITY]);
        let mut ran = false;
        assert_eq!(
            scaler
                .step(&[&p], || {
                    ran = true;
                    Ok(())
                })
                .unwrap(),
            StepOutcome::Applied
        );
        assert!(ran);
    }

    /// The same gradient stream through torch.amp.GradScaler("cpu") and ours: scale, growth
    /// tracker, skip decisions and unscaled gradients agree at every step.
    #[test]
    fn matches_torch_amp_grad_scaler_on_cpu() {
        let python = std::env::var("LKD_PYTHON").expect(
            "LKD_PYTHON is not set: run the tests through `make test`, which bootstraps the venv",
        );
        // Gradient multipliers per step; inf/nan entries force skips; interval 2 forces growth.
        let stream: Vec<[f32; 3]> = vec![
            [1.0, 2.0, -3.0],
            [0.5, 0.25, 8.0],
            [1.0, f32::INFINITY, 0.0],
            [3.0, 1.0, 1.0],
            [f32::NAN, 1.0, 1.0],
            [1e-3, 2.0, 5.0],
            [2.0, 2.0, 2.0],
            [7.0, -1.0, 0.5],
        ];
        let fmt = |v: f32| {
            if v.is_nan() {
                "float('nan')".to_string()
            } else if v.is_infinite() {
                "float('inf')".to_string()
            } else {
                format!("{v:?}")
            }
        };
        let stream_py: Vec<String> = stream
            .iter()
            .map(|s| {
                format!(
                    "[{}]",
                    s.iter().map(|&v| fmt(v)).collect::<Vec<_>>().join(", ")
                )
            })
            .collect();
        let script = format!(
            r#"
import torch
stream = [{}]
p = torch.nn.Parameter(torch.ones(3))
opt = torch.optim.SGD([p], lr=0.1)
scaler = torch.amp.GradScaler("cpu", init_scale=1024.0, growth_factor=2.0, backoff_factor=0.5, growth_interval=2)
for g in stream:
    opt.zero_grad()
    loss = (p * torch.tensor(g)).sum() * 1e-3
    scaler.scale(loss).backward()
    scaler.unscale_(opt)
    grads = p.grad.tolist()
    before = p.detach().clone()
    scaler.step(opt)
    scaler.update()
    applied = not torch.equal(before, p.detach())
    print(scaler.get_scale(), scaler._growth_tracker.item(), int(applied), *[repr(x) for x in grads])
"#,
            stream_py.join(", ")
        );
        let out = std::process::Command::new(python)
            .args(["-c", &script])
            .output()
            .expect("run python");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let torch_lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(String::from)
            .collect();
        assert_eq!(torch_lines.len(), stream.len());

        let cfg = ScalerConfig {
            init_scale: 1024.0,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2,
        };
        let mut scaler = GradScaler::new(Precision::Fp16, cfg, CPU).unwrap();
        let p = Tensor::ones([3], (Kind::Float, CPU)).set_requires_grad(true);
        for (g, torch_line) in stream.iter().zip(&torch_lines) {
            let mut grad = p.grad();
            if grad.defined() {
                let _ = grad.zero_();
            }
            let loss = (&p * Tensor::from_slice(g)).sum(Kind::Float) * 1e-3;
            scaler.scale(&loss).unwrap().backward();
            scaler.unscale(&[&p]).unwrap();
            let grads: Vec<f32> = Vec::try_from(p.grad()).unwrap();
            let before = p.detach().copy();
            let outcome = scaler
                .step(&[&p], || {
                    tch::no_grad(|| {
                        let mut w = p.shallow_clone();
                        let _ = w.f_sub_(&(p.grad() * 0.1)).unwrap();
                    });
                    Ok(())
                })
                .unwrap();
            let applied = !p.detach().equal(&before);
            assert_eq!(applied, outcome == StepOutcome::Applied);
            let state = scaler.state().unwrap();
            let fields: Vec<&str> = torch_line.split_whitespace().collect();
            assert_eq!(
                fields[0].parse::<f64>().unwrap(),
                state.scale,
                "scale; torch: {torch_line}"
            );
            assert_eq!(
                fields[1].parse::<i64>().unwrap(),
                state.growth_tracker,
                "tracker; torch: {torch_line}"
            );
            assert_eq!(
                fields[2] == "1",
                applied,
                "skip decision; torch: {torch_line}"
            );
            for (theirs, ours) in fields[3..].iter().zip(&grads) {
                let theirs: f32 = if *theirs == "nan" {
                    f32::NAN
                } else {
                    theirs.parse().unwrap()
                };
                assert!(
                    theirs.to_bits() == ours.to_bits() || (theirs.is_nan() && ours.is_nan()),
                    "grad {ours} vs torch {theirs}"
                );
            }
        }
    }
}
