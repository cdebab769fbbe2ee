//! Batch-mode Mixup / CutMix with label smoothing (timm `Mixup`, `mode='batch'`,
//! `correct_lam=True`): each sample is mixed with its mirror in the batch (`x.flip(0)`).

use super::{rng, DataError, Result};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Mixup/CutMix settings as written in a config; defaults are timm's ImageNet recipe
/// (mixup 0.8, cutmix 1.0, applied to every batch, switching with probability 0.5).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MixupConfig {
    /// Beta(alpha, alpha) for Mixup; 0 disables it.
    pub mixup_alpha: f64,
    /// Beta(alpha, alpha) for CutMix; 0 disables it.
    pub cutmix_alpha: f64,
    /// Probability that a batch is mixed at all.
    pub prob: f64,
    /// Probability of CutMix rather than Mixup when both are enabled.
    pub switch_prob: f64,
}

impl Default for MixupConfig {
    fn default() -> Self {
        Self {
            mixup_alpha: 0.8,
            cutmix_alpha: 1.0,
            prob: 1.0,
            switch_prob: 0.5,
        }
    }
}

impl MixupConfig {
    /// Binds the config to a label space; soft targets use `label_smoothing`.
    pub fn with_classes(self, num_classes: usize, label_smoothing: f64) -> Mixup {
        Mixup {
            cfg: self,
            num_classes,
            label_smoothing,
        }
    }

    pub fn validate(&self) -> Result<()> {
        let ok = |p: f64| (0.0..=1.0).contains(&p);
        // Finite so Beta(alpha, alpha) is a distribution; NaN fails `>= 0.0` too.
        let alpha_ok = |a: f64| a >= 0.0 && a.is_finite();
        if !alpha_ok(self.mixup_alpha)
            || !alpha_ok(self.cutmix_alpha)
            || !ok(self.prob)
            || !ok(self.switch_prob)
        {
            return Err(DataError::Config(format!(
                "mixup: alphas must be finite and >= 0 and prob/switch_prob in [0, 1], found {self:?}"
            )));
        }
        Ok(())
    }
}

/// Mixup bound to a label space.
#[derive(Clone, Debug, PartialEq)]
pub struct Mixup {
    pub cfg: MixupConfig,
    pub num_classes: usize,
    pub label_smoothing: f64,
}

/// What was done to one batch.
#[derive(Clone, Debug, PartialEq)]
pub struct MixOutcome {
    /// Weight of the original sample in both pixels and targets.
    pub lam: f64,
    /// CutMix box `(y0, y1, x0, x1)` pasted from the mirrored sample.
    pub cutmix_box: Option<(usize, usize, usize, usize)>,
    /// [B, num_classes], rows sum to 1.
    pub targets: Vec<f32>,
}

/// timm `rand_bbox` + lam correction by the clipped box area: returns the box and the new lam.
pub fn cutmix_box<R: Rng + ?Sized>(
    h: usize,
    w: usize,
    lam: f64,
    rng: &mut R,
) -> ((usize, usize, usize, usize), f64) {
    let ratio = (1.0 - lam).max(0.0).sqrt();
    let (cut_h, cut_w) = ((h as f64 * ratio) as isize, (w as f64 * ratio) as isize);
    let cy = rng.gen_range(0..h) as isize;
    let cx = rng.gen_range(0..w) as isize;
    let clip = |v: isize, hi: usize| v.clamp(0, hi as isize) as usize;
    let (y0, y1) = (clip(cy - cut_h / 2, h), clip(cy + cut_h / 2, h));
    let (x0, x1) = (clip(cx - cut_w / 2, w), clip(cx + cut_w / 2, w));
    let lam = 1.0 - ((y1 - y0) * (x1 - x0)) as f64 / (h * w) as f64;
    ((y0, y1, x0, x1), lam)
}

/// timm `mixup_target`: smoothed one-hots of `labels` and of `labels` reversed, blended by lam.
pub fn soft_targets(labels: &[i64], num_classes: usize, lam: f64, smoothing: f64) -> Vec<f32> {
    let off = smoothing / num_classes as f64;
    let on = 1.0 - smoothing + off;
    let b = labels.len();
    let mut t = vec![0f32; b * num_classes];
    for i in 0..b {
        let row = &mut t[i * num_classes..(i + 1) * num_classes];
        for (k, v) in row.iter_mut().enumerate() {
            let y1 = if k as i64 == labels[i] { on } else { off };
            let y2 = if k as i64 == labels[b - 1 - i] {
                on
            } else {
                off
            };
            *v = (y1 * lam + y2 * (1.0 - lam)) as f32;
        }
    }
    t
}

impl Mixup {
    /// Mixes `images` ([B, C, H, W] contiguous) in place and returns the soft targets.
    pub fn apply<R: Rng + ?Sized>(
        &self,
        images: &mut [f32],
        shape: [usize; 4],
        labels: &[i64],
        rng: &mut R,
    ) -> MixOutcome {
        let c = &self.cfg;
        let [b, ch, h, w] = shape;
        let (mut lam, mut use_cutmix) = (1.0, false);
        if (c.mixup_alpha > 0.0 || c.cutmix_alpha > 0.0) && rng.gen::<f64>() < c.prob {
            use_cutmix = if c.mixup_alpha > 0.0 && c.cutmix_alpha > 0.0 {
                rng.gen::<f64>() < c.switch_prob
            } else {
                c.cutmix_alpha > 0.0
            };
            let a = if use_cutmix {
                c.cutmix_alpha
            } else {
                c.mixup_alpha
            };
            lam = rng::beta(rng, a, a);
        }
        let mut cutmix_box = None;
        if lam < 1.0 {
            let per = ch * h * w;
            if use_cutmix {
                let (bx, l) = self::cutmix_box(h, w, lam, rng);
                lam = l;
                let (y0, y1, x0, x1) = bx;
                // Pairs (i, b-1-i) swap the box; the middle sample of an odd batch keeps its own.
                for i in 0..b / 2 {
                    let j = b - 1 - i;
                    for k in 0..ch {
                        for y in y0..y1 {
                            for x in x0..x1 {
                                let o = k * h * w + y * w + x;
                                images.swap(i * per + o, j * per + o);
                            }
                        }
                    }
                }
                cutmix_box = Some(bx);
            } else {
                let l = lam as f32;
                for i in 0..b / 2 {
                    let j = b - 1 - i;
                    let (head, tail) = images.split_at_mut(j * per);
                    let (a, z) = (&mut head[i * per..(i + 1) * per], &mut tail[..per]);
                    for (p, q) in a.iter_mut().zip(z.iter_mut()) {
                        let (pa, qa) = (*p, *q);
                        *p = l * pa + (1.0 - l) * qa;
                        *q = l * qa + (1.0 - l) * pa;
                    }
                }
            }
        }
        MixOutcome {
            lam,
            cutmix_box,
            targets: soft_targets(labels, self.num_classes, lam, self.label_smoothing),
        }
    }
}
