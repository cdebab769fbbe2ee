//! AdamW with decoupled weight decay on selected tensors, cosine schedule with linear warmup,
//! global-norm gradient clipping, and an EMA of the weights. Written over raw tensors so that
//! every state tensor is ours to checkpoint.

use crate::executor::Params;
use lkd_models::Graph;
use std::collections::{BTreeMap, BTreeSet};
use tch::{TchError, Tensor};

pub struct AdamW {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub step: i64,
    pub exp_avg: BTreeMap<String, Tensor>,
    pub exp_avg_sq: BTreeMap<String, Tensor>,
}

/// A tensor to optimise: name (for state), a handle sharing the parameter's storage and
/// gradient, and whether weight decay applies. Built once per run, not per step.
pub struct Slot {
    pub name: String,
    pub tensor: Tensor,
    pub decay: bool,
    /// Multiplies the step's learning rate (layer-wise decay, head multiplier); 1 by default.
    pub lr_scale: f64,
}

impl AdamW {
    pub fn new(weight_decay: f64) -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay,
            step: 0,
            exp_avg: BTreeMap::new(),
            exp_avg_sq: BTreeMap::new(),
        }
    }

    /// One update with learning rate `lr` (PyTorch AdamW semantics).
    pub fn step(&mut self, slots: &[Slot], lr: f64) -> Result<(), TchError> {
        self.step += 1;
        let bc1 = 1.0 - self.beta1.powi(self.step as i32);
        let bc2 = 1.0 - self.beta2.powi(self.step as i32);
        tch::no_grad(|| {
            for s in slots {
                let grad = s.tensor.f_grad()?;
                if !grad.defined() {
                    continue;
                }
                let lr = lr * s.lr_scale;
                let mut p = s.tensor.shallow_clone();
                let m = state_for(&mut self.exp_avg, &s.name, &p)?;
                let v = state_for(&mut self.exp_avg_sq, &s.name, &p)?;
                if s.decay && self.weight_decay > 0.0 {
                    let _ = p.f_mul_scalar_(1.0 - lr * self.weight_decay)?;
                }
                let _ = m.f_lerp_(&grad, 1.0 - self.beta1)?;
                let _ = v
                    .f_mul_scalar_(self.beta2)?
                    .f_addcmul_(&grad.f_mul_scalar(1.0 - self.beta2)?, &grad)?;
                let mut denom = v.f_sqrt()?;
                let _ = denom.f_div_scalar_(bc2.sqrt())?.f_add_scalar_(self.eps)?;
                // addcdiv_ has no scale argument in tch: fold -lr/bc1 into the denominator.
                if lr > 0.0 {
                    let _ = denom.f_mul_scalar_(-bc1 / lr)?;
                    let _ = p.f_addcdiv_(&*m, &denom)?;
                }
            }
            Ok(())
        })
    }
}

/// The optimizer state tensor `name` in `states`, created as zeros shaped like `like`.
fn state_for<'a>(
    states: &'a mut BTreeMap<String, Tensor>,
    name: &str,
    like: &Tensor,
) -> Result<&'a mut Tensor, TchError> {
    if !states.contains_key(name) {
        states.insert(name.to_string(), like.f_zeros_like()?);
    }
    Ok(states.get_mut(name).expect("inserted above"))
}

pub fn zero_grad(slots: &[Slot]) -> Result<(), TchError> {
    for s in slots {
        let mut g = s.tensor.f_grad()?;
        if g.defined() {
            let _ = g.f_detach_()?.f_zero_()?;
        }
    }
    Ok(())
}

/// Scales gradients so their global L2 norm is at most `max_norm`; returns the norm before.
pub fn clip_grad_norm(slots: &[Slot], max_norm: f64) -> Result<f64, TchError> {
    tch::no_grad(|| {
        let mut norms = Vec::with_capacity(slots.len());
        for s in slots {
            let g = s.tensor.f_grad()?;
            if g.defined() {
                norms.push(g.f_square()?.f_sum(tch::Kind::Float)?);
            }
        }
        if norms.is_empty() {
            return Ok(0.0);
        }
        let total = Tensor::f_stack(&norms, 0)?
            .f_sum(tch::Kind::Float)?
            .f_sqrt()?
            .f_double_value(&[])?;
        if total.is_finite() && total > max_norm {
            let scale = max_norm / (total + 1e-6);
            for s in slots {
                let mut g = s.tensor.f_grad()?;
                if g.defined() {
                    let _ = g.f_mul_scalar_(scale)?;
                }
            }
        }
        Ok(total)
    })
}

/// Per-step learning rate: linear warmup from 0 to `base`, then cosine to `min`.
pub fn cosine_lr(step: usize, total_steps: usize, warmup_steps: usize, base: f64, min: f64) -> f64 {
    if step < warmup_steps {
        return base * (step + 1) as f64 / warmup_steps as f64;
    }
    let span = (total_steps.saturating_sub(warmup_steps)).max(1) as f64;
    let t = ((step - warmup_steps) as f64 / span).min(1.0);
    min + 0.5 * (base - min) * (1.0 + (std::f64::consts::PI * t).cos())
}

/// Exponential moving average of all parameters and buffers (buffers copied, as timm's ModelEmaV2).
pub struct Ema {
    pub decay: f64,
    pub params: Params,
}

impl Ema {
    pub fn new(params: &Params, decay: f64) -> Result<Self, TchError> {
        Ok(Self {
            decay,
            params: params.deep_copy()?,
        })
    }

    pub fn update(&mut self, graph: &Graph, params: &Params) -> Result<(), TchError> {
        tch::no_grad(|| {
            for spec in &graph.params {
                let src = params.get(&spec.name);
                let mut dst = self.params.get(&spec.name).shallow_clone();
                if spec.is_trainable() || src.f_is_floating_point()? {
                    let _ = dst
                        .f_mul_scalar_(self.decay)?
                        .f_add_(&src.f_detach()?.f_mul_scalar(1.0 - self.decay)?)?;
                } else {
                    dst.f_copy_(src)?;
                }
            }
            Ok(())
        })
    }
}

/// The graph's trainable parameters to optimise, but those in `frozen`, each at its
/// learning-rate scale from `lr_scales` (1 when absent).
pub fn slots(
    graph: &Graph,
    params: &Params,
    prefix: &str,
    frozen: &BTreeSet<String>,
    lr_scales: &BTreeMap<String, f64>,
) -> Vec<Slot> {
    params
        .trainable(graph)
        .into_iter()
        .filter(|(n, ..)| !frozen.contains(*n))
        .map(|(n, t, decay)| Slot {
            name: format!("{prefix}{n}"),
            tensor: t.shallow_clone(),
            decay,
            lr_scale: lr_scales.get(n).copied().unwrap_or(1.0),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_min() {
        assert!((cosine_lr(0, 100, 10, 1.0, 0.0) - 0.1).abs() < 1e-12);
        assert!((cosine_lr(9, 100, 10, 1.0, 0.0) - 1.0).abs() < 1e-12);
        assert!((cosine_lr(55, 100, 10, 1.0, 0.0) - 0.5).abs() < 1e-12);
        assert!((cosine_lr(100, 100, 10, 1.0, 0.1) - 0.1).abs() < 1e-12);
    }
}
