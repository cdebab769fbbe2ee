//! Classification and distillation losses, with the exact definitions the tests check against
//! PyTorch references (tests/reference/losses.py).

use serde::{Deserialize, Serialize};
use tch::{Kind, Reduction, Tensor};

/// Training targets: class indices, or per-class probabilities (after Mixup/CutMix).
pub enum Target<'a> {
    Hard(&'a Tensor),
    Soft(&'a Tensor),
}

impl Target<'_> {
    /// Class indices: the labels, or the argmax of soft targets.
    pub fn labels(&self) -> Tensor {
        match self {
            Target::Hard(t) => t.shallow_clone(),
            Target::Soft(p) => p.argmax(1, false),
        }
    }
}

/// Cross-entropy with label smoothing for hard targets (PyTorch semantics), or
/// soft-target cross-entropy `mean(-Σ p log softmax(s))` for soft targets.
pub fn cross_entropy(logits: &Tensor, target: &Target, label_smoothing: f64) -> Tensor {
    match target {
        Target::Hard(labels) => logits.cross_entropy_loss::<Tensor>(
            labels,
            None,
            Reduction::Mean,
            -100,
            label_smoothing,
        ),
        Target::Soft(p) => (-(*p) * logits.log_softmax(1, Kind::Float))
            .sum_dim_intlist([1i64].as_slice(), false, Kind::Float)
            .mean(Kind::Float),
    }
}

/// Hinton KD term: T² · KL(softmax(t/T) ‖ softmax(s/T)), summed over classes, batch mean.
pub fn kd_kl(student: &Tensor, teacher: &Tensor, temperature: f64) -> Tensor {
    let log_p_s = (student / temperature).log_softmax(1, Kind::Float);
    let log_p_t = (teacher / temperature).log_softmax(1, Kind::Float);
    let kl = (log_p_t.exp() * (&log_p_t - log_p_s))
        .sum_dim_intlist([1i64].as_slice(), false, Kind::Float)
        .mean(Kind::Float);
    kl * (temperature * temperature)
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
) -> Tensor {
    let (n, c) = (student.size()[0], student.size()[1]);
    let label = labels.view([n, 1]);
    let log_y = student.log_softmax(1, Kind::Float).gather(1, &label, false);
    let w_t = teacher
        .softmax(1, Kind::Float)
        .gather(1, &label, false)
        .detach();
    let target_term = -(w_t * log_y).mean(Kind::Float);
    let mask = student
        .ones_like()
        .scatter_value(1, &label, 0.0)
        .to_kind(Kind::Bool);
    let s_non = student.masked_select(&mask).view([n, c - 1]);
    let t_non = teacher.masked_select(&mask).view([n, c - 1]);
    let log_ps = (s_non / temperature).log_softmax(1, Kind::Float);
    let pt = (t_non / temperature).softmax(1, Kind::Float);
    let non_target = (pt * log_ps)
        .sum_dim_intlist([1i64].as_slice(), false, Kind::Float)
        .mean(Kind::Float);
    target_term - non_target * (alpha * temperature * temperature)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureLoss {
    SmoothL1,
    Mse,
}

/// Feature distillation distance between the projected student map and the teacher map
/// (student map resized bilinearly when spatial sizes differ). SmoothL1 uses β = 2.
pub fn feature_distance(projected_student: &Tensor, teacher: &Tensor, loss: FeatureLoss) -> Tensor {
    let (ts, ss) = (teacher.size(), projected_student.size());
    let s = if ts[2..] != ss[2..] {
        projected_student.upsample_bilinear2d([ts[2], ts[3]], false, None, None)
    } else {
        projected_student.shallow_clone()
    };
    let t = teacher.detach();
    match loss {
        FeatureLoss::SmoothL1 => s.smooth_l1_loss(&t, Reduction::Mean, 2.0),
        FeatureLoss::Mse => s.mse_loss(&t, Reduction::Mean),
    }
}
