//! Classification and distillation losses, with the exact definitions the tests check against
//! PyTorch references (tests/reference/losses.py). Fallible tch calls throughout: a libtorch
//! failure (e.g. device out of memory) is an error for the caller, never a panic.

use serde::{Deserialize, Serialize};
use tch::{Kind, Reduction, TchError, Tensor};

/// Training targets: class indices, or per-class probabilities (after Mixup/CutMix).
pub enum Target<'a> {
    Hard(&'a Tensor),
    Soft(&'a Tensor),
}

impl Target<'_> {
    /// Class indices: the labels, or the argmax of soft targets.
    pub fn labels(&self) -> Result<Tensor, TchError> {
        match self {
            Target::Hard(t) => Ok(t.shallow_clone()),
            Target::Soft(p) => p.f_argmax(1, false),
        }
    }
}

/// Σ over classes (dim 1), then the batch mean.
fn class_sum_batch_mean(x: &Tensor) -> Result<Tensor, TchError> {
    x.f_sum_dim_intlist([1i64].as_slice(), false, Kind::Float)?
        .f_mean(Kind::Float)
}

/// Cross-entropy with label smoothing for hard targets (PyTorch semantics), or
/// soft-target cross-entropy `mean(-Σ p log softmax(s))` for soft targets.
pub fn cross_entropy(
    logits: &Tensor,
    target: &Target,
    label_smoothing: f64,
) -> Result<Tensor, TchError> {
    match target {
        Target::Hard(labels) => logits.f_cross_entropy_loss::<Tensor>(
            labels,
            None,
            Reduction::Mean,
            -100,
            label_smoothing,
        ),
        Target::Soft(p) => {
            class_sum_batch_mean(&p.f_neg()?.f_mul(&logits.f_log_softmax(1, Kind::Float)?)?)
        }
    }
}

/// Hinton KD term: T² · KL(softmax(t/T) ‖ softmax(s/T)), summed over classes, batch mean.
pub fn kd_kl(student: &Tensor, teacher: &Tensor, temperature: f64) -> Result<Tensor, TchError> {
    let log_p_s = student
        .f_div_scalar(temperature)?
        .f_log_softmax(1, Kind::Float)?;
    let log_p_t = teacher
        .f_div_scalar(temperature)?
        .f_log_softmax(1, Kind::Float)?;
    let kl = class_sum_batch_mean(&log_p_t.f_exp()?.f_mul(&log_p_t.f_sub(&log_p_s)?)?)?;
    kl.f_mul_scalar(temperature * temperature)
}

/// Normalized KD (Yang et al.), as in the large-kernel distillation code: target term
/// `-mean(w_t · log y_t)` with the teacher's target probability `w_t`, plus
/// `-α·T²·mean Σ p̂_t log p̂_s` over the renormalised non-target distributions.
pub fn nkd(
    student: &Tensor,
    teacher: &Tensor,
    labels: &Tensor,
    temperature: f64,
    alpha: f64,
) -> Result<Tensor, TchError> {
    let (n, c) = (student.size()[0], student.size()[1]);
    let label = labels.f_view([n, 1])?;
    let log_y = student
        .f_log_softmax(1, Kind::Float)?
        .f_gather(1, &label, false)?;
    let w_t = teacher
        .f_softmax(1, Kind::Float)?
        .f_gather(1, &label, false)?
        .detach();
    let target_term = w_t.f_mul(&log_y)?.f_mean(Kind::Float)?.f_neg()?;
    let mask = student
        .f_ones_like()?
        .f_scatter_value(1, &label, 0.0)?
        .f_to_kind(Kind::Bool)?;
    let s_non = student.f_masked_select(&mask)?.f_view([n, c - 1])?;
    let t_non = teacher.f_masked_select(&mask)?.f_view([n, c - 1])?;
    let log_ps = s_non
        .f_div_scalar(temperature)?
        .f_log_softmax(1, Kind::Float)?;
    let pt = t_non.f_div_scalar(temperature)?.f_softmax(1, Kind::Float)?;
    let non_target = class_sum_batch_mean(&pt.f_mul(&log_ps)?)?;
    target_term.f_sub(&non_target.f_mul_scalar(alpha * temperature * temperature)?)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureLoss {
    SmoothL1,
    Mse,
}

/// Feature distillation distance between the projected student map and the teacher map
/// (student map resized bilinearly when spatial sizes differ). SmoothL1 uses β = 2.
pub fn feature_distance(
    projected_student: &Tensor,
    teacher: &Tensor,
    loss: FeatureLoss,
) -> Result<Tensor, TchError> {
    let (ts, ss) = (teacher.size(), projected_student.size());
    let s = if ts[2..] != ss[2..] {
        projected_student.f_upsample_bilinear2d([ts[2], ts[3]], false, None, None)?
    } else {
        projected_student.shallow_clone()
    };
    let t = teacher.detach();
    match loss {
        FeatureLoss::SmoothL1 => s.f_smooth_l1_loss(&t, Reduction::Mean, 2.0),
        FeatureLoss::Mse => s.f_mse_loss(&t, Reduction::Mean),
    }
}
