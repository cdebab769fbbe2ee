//! Seeding: one deterministic generator per (seed, epoch, sample, purpose), and the two
//! distributions the augmentations draw from (rand_distr).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Beta, Distribution, StandardNormal};

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One seed from several parts; order matters, so (seed, epoch, index) never collide.
pub(crate) fn mix(parts: &[u64]) -> u64 {
    parts
        .iter()
        .fold(0x6A09_E667_F3BC_C908, |h, &p| splitmix(h ^ splitmix(p)))
}

pub(crate) fn rng_for(parts: &[u64]) -> StdRng {
    StdRng::seed_from_u64(mix(parts))
}

/// A standard normal draw (rand_distr's ziggurat).
pub(crate) fn normal<R: Rng + ?Sized>(rng: &mut R) -> f64 {
    rng.sample(StandardNormal)
}

/// A Beta(a, b) draw; `a` and `b` must be finite and > 0 (configs are validated before use).
pub(crate) fn beta<R: Rng + ?Sized>(rng: &mut R, a: f64, b: f64) -> f64 {
    Beta::new(a, b)
        .expect("Beta parameters validated finite and > 0")
        .sample(rng)
}

/// `n` of `len` indices chosen with a fixed seed, in ascending order.
pub(crate) fn subset(len: usize, n: usize) -> Vec<usize> {
    use rand::seq::SliceRandom;
    let mut all: Vec<usize> = (0..len).collect();
    all.shuffle(&mut rng_for(&[0x5EB5E7, len as u64]));
    let mut s = all[..n].to_vec();
    s.sort_unstable();
    s
}

/// Python's `round` (half to even), which timm/torchvision use for crop offsets.
pub(crate) fn round_half_even(x: f64) -> f64 {
    let r = x.round();
    if (x - x.trunc()).abs() == 0.5 {
        2.0 * (x / 2.0).round()
    } else {
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beta_mean() {
        let mut r = rng_for(&[1]);
        let n = 20000;
        let m: f64 = (0..n).map(|_| beta(&mut r, 0.8, 0.8)).sum::<f64>() / n as f64;
        assert!((m - 0.5).abs() < 0.02, "{m}");
    }

    #[test]
    fn half_even() {
        assert_eq!(round_half_even(0.5), 0.0);
        assert_eq!(round_half_even(1.5), 2.0);
        assert_eq!(round_half_even(2.5), 2.0);
        assert_eq!(round_half_even(2.6), 3.0);
    }
}
