//! Paired comparisons over seeds, as the study and the demo report them.
//!
//! A claim such as "teacher A gives a better student than teacher B" is measured as one
//! difference per seed (same student, method and seed, only the teacher changes). The summary is
//! the mean difference with a 95 % confidence interval from the paired t distribution, the
//! two-sided t-test p-value, and the two-sided p-value of the exact sign-flip permutation test
//! (distribution-free: every one of the 2^n sign patterns is enumerated). The verdict uses the
//! t interval: a claim holds only when the interval excludes 0 in the claimed direction.

use std::fmt;

/// Two-sided coverage of the reported interval.
pub const CONFIDENCE: f64 = 0.95;

/// The exact sign-flip test enumerates 2^n patterns; beyond this many seeds it is not computed.
pub const MAX_SIGN_FLIP_SEEDS: usize = 20;

/// What the per-seed differences show about a claim of a positive difference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The interval lies above 0.
    Holds,
    /// The interval lies below 0: the data show the opposite.
    Reversed,
    /// The interval contains 0 (or there are fewer than 2 seeds).
    NotResolved { seeds: usize },
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verdict::Holds => f.write_str("holds"),
            Verdict::Reversed => f.write_str("reversed"),
            Verdict::NotResolved { seeds: 1 } => f.write_str("not resolved at 1 seed"),
            Verdict::NotResolved { seeds } => write!(f, "not resolved at {seeds} seeds"),
        }
    }
}

/// Paired summary of per-seed differences.
#[derive(Clone, Debug, PartialEq)]
pub struct Paired {
    pub n: usize,
    pub mean: f64,
    /// Sample standard deviation of the differences (n − 1 in the denominator).
    pub std: f64,
    /// 95 % t interval of the mean difference; `None` below 2 seeds or with zero spread.
    pub interval: Option<(f64, f64)>,
    /// Two-sided paired t-test p-value; `None` where the interval is.
    pub p_t: Option<f64>,
    /// Two-sided exact sign-flip p-value; `None` for no seeds or above [`MAX_SIGN_FLIP_SEEDS`].
    pub p_sign_flip: Option<f64>,
}

impl Paired {
    /// Summarises the differences (non-finite values are the caller's to exclude).
    pub fn new(diffs: &[f64]) -> Self {
        let (mean, std) = mean_std(diffs);
        Self {
            p_sign_flip: sign_flip_p(diffs),
            ..Self::from_summary(mean, std, diffs.len())
        }
    }

    /// The t-based figures from a published mean, sample std and count (no sign-flip test:
    /// that needs the individual differences).
    pub fn from_summary(mean: f64, std: f64, n: usize) -> Self {
        // A zero spread leaves the t interval undefined (it happens with quantized measures).
        let (interval, p_t) = if n >= 2 && std > 0.0 {
            let df = (n - 1) as f64;
            let se = std / (n as f64).sqrt();
            let half = student_t_quantile(0.5 + CONFIDENCE / 2.0, df) * se;
            let p = 2.0 * student_t_sf((mean / se).abs(), df);
            (Some((mean - half, mean + half)), Some(p.min(1.0)))
        } else {
            (None, None)
        };
        Self {
            n,
            mean,
            std,
            interval,
            p_t,
            p_sign_flip: None,
        }
    }

    /// From the t interval; where it is undefined (zero spread) the exact sign-flip test at the
    /// same level decides, and without either the claim is not resolved.
    pub fn verdict(&self) -> Verdict {
        let not_resolved = Verdict::NotResolved { seeds: self.n };
        match (self.interval, self.p_sign_flip) {
            (Some((lo, _)), _) if lo > 0.0 => Verdict::Holds,
            (Some((_, hi)), _) if hi < 0.0 => Verdict::Reversed,
            (Some(_), _) => not_resolved,
            (None, Some(p)) if self.n >= 2 && p < 1.0 - CONFIDENCE => {
                if self.mean > 0.0 {
                    Verdict::Holds
                } else {
                    Verdict::Reversed
                }
            }
            (None, _) => not_resolved,
        }
    }

    /// "+0.26 [−0.31, +0.83]" with `digits` decimals (the interval as "n/a" below 2 seeds).
    pub fn mean_and_interval(&self, digits: usize) -> String {
        match self.interval {
            Some((lo, hi)) => format!("{:+.digits$} [{lo:+.digits$}, {hi:+.digits$}]", self.mean),
            None => format!("{:+.digits$} [n/a]", self.mean),
        }
    }
}

/// Mean and sample standard deviation (0 for fewer than 2 values; NaN mean for none).
pub fn mean_std(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (m, var.sqrt())
}

/// Two-sided p-value of the exact sign-flip test of "mean difference is 0": the share of the
/// 2^n sign patterns whose |mean| is at least the observed one.
pub fn sign_flip_p(diffs: &[f64]) -> Option<f64> {
    let n = diffs.len();
    if n == 0 || n > MAX_SIGN_FLIP_SEEDS {
        return None;
    }
    let observed = diffs.iter().sum::<f64>().abs();
    // Ties within rounding count as "at least as extreme", as exact tests do.
    let tolerance = 1e-12
        * diffs
            .iter()
            .map(|d| d.abs())
            .sum::<f64>()
            .max(f64::MIN_POSITIVE);
    let patterns = 1u64 << n;
    let extreme = (0..patterns)
        .filter(|&signs| {
            let s: f64 = diffs
                .iter()
                .enumerate()
                .map(|(i, d)| if signs >> i & 1 == 1 { -d } else { *d })
                .sum();
            s.abs() >= observed - tolerance
        })
        .count();
    Some(extreme as f64 / patterns as f64)
}

/// Upper tail P(T > t) of Student's t with `df` degrees of freedom, for t ≥ 0.
pub fn student_t_sf(t: f64, df: f64) -> f64 {
    if t.is_infinite() {
        return 0.0;
    }
    0.5 * regularized_incomplete_beta(df / (df + t * t), df / 2.0, 0.5)
}

/// The q-quantile of Student's t (0 < q < 1), by bisection on the distribution function.
pub fn student_t_quantile(q: f64, df: f64) -> f64 {
    if q == 0.5 {
        return 0.0;
    }
    let upper = q > 0.5;
    let tail = if upper { 1.0 - q } else { q };
    // Bracket: the tail shrinks monotonically in t; 1e7 covers df = 1 down to tails of ~3e-8.
    let (mut lo, mut hi) = (0.0f64, 1.0f64);
    while student_t_sf(hi, df) > tail && hi < 1e7 {
        hi *= 2.0;
    }
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if student_t_sf(mid, df) > tail {
            lo = mid;
        } else {
            hi = mid;
        }
        if hi - lo <= 1e-13 * hi.max(1.0) {
            break;
        }
    }
    let t = 0.5 * (lo + hi);
    if upper {
        t
    } else {
        -t
    }
}

/// I_x(a, b), the regularized incomplete beta function, by its continued fraction (modified
/// Lentz), using the symmetry I_x(a, b) = 1 − I_{1−x}(b, a) where the fraction converges slowly.
fn regularized_incomplete_beta(x: f64, a: f64, b: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    if x < (a + 1.0) / (a + b + 2.0) {
        ln_front.exp() * beta_continued_fraction(x, a, b) / a
    } else {
        1.0 - ln_front.exp() * beta_continued_fraction(1.0 - x, b, a) / b
    }
}

fn beta_continued_fraction(x: f64, a: f64, b: f64) -> f64 {
    const TINY: f64 = 1e-300;
    let mut c = 1.0;
    let mut d = 1.0 - (a + b) * x / (a + 1.0);
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..=500 {
        let m = m as f64;
        // Even step, then odd step of the fraction's terms.
        for num in [
            m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2.0 * m) * (a + 2.0 * m + 1.0)),
        ] {
            d = 1.0 + num * d;
            if d.abs() < TINY {
                d = TINY;
            }
            c = 1.0 + num / c;
            if c.abs() < TINY {
                c = TINY;
            }
            d = 1.0 / d;
            h *= d * c;
        }
        if (d * c - 1.0).abs() < 1e-16 {
            break;
        }
    }
    h
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7, 9 terms; relative error ~1e-15).
fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const COEF: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection keeps the series in its accurate range.
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut sum = COEF[0];
    for (i, c) in COEF.iter().enumerate().skip(1) {
        sum += c / (x + i as f64);
    }
    let t = x + G + 0.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * b.abs().max(1e-300)
    }

    // Reference values from scipy 1.17.1:
    //   scipy.stats.t.ppf(0.975, df), scipy.stats.t.sf(t, df),
    //   scipy.stats.ttest_1samp(d, 0) and its confidence_interval(0.95),
    //   scipy.stats.permutation_test((d,), np.mean, permutation_type='samples',
    //                                n_resamples=np.inf, alternative='two-sided').pvalue
    #[test]
    fn t_quantiles_match_scipy() {
        for (df, want) in REF_PPF {
            let got = student_t_quantile(0.975, df);
            assert!(close(got, want, 1e-10), "df {df}: {got} vs scipy {want}");
            assert!(close(student_t_quantile(0.025, df), -want, 1e-10));
        }
    }

    #[test]
    fn t_tails_match_scipy() {
        for (t, df, want) in REF_SF {
            let got = student_t_sf(t, df);
            assert!(
                close(got, want, 1e-9),
                "t {t} df {df}: {got} vs scipy {want}"
            );
        }
    }

    #[test]
    fn paired_summaries_match_scipy() {
        for (diffs, p_t, lo, hi, p_perm) in REF_PAIRED {
            let s = Paired::new(diffs);
            assert!(
                close(s.p_t.unwrap(), p_t, 1e-8),
                "{diffs:?}: p {:?} vs {p_t}",
                s.p_t
            );
            let (l, h) = s.interval.unwrap();
            assert!(
                close(l, lo, 1e-9) && close(h, hi, 1e-9),
                "{diffs:?}: [{l}, {h}] vs [{lo}, {hi}]"
            );
            let p = s.p_sign_flip.unwrap();
            assert!(
                close(p, p_perm, 1e-12),
                "{diffs:?}: sign-flip p {p} vs {p_perm}"
            );
        }
    }

    #[test]
    fn verdicts_follow_the_interval() {
        // The published study's "+0.26 ± 0.23 over 3 seeds" row: t = 1.96, p ≈ 0.19.
        let row = Paired::new(&[0.03, 0.26, 0.49]);
        assert_eq!(row.verdict(), Verdict::NotResolved { seeds: 3 });
        assert_eq!(row.verdict().to_string(), "not resolved at 3 seeds");
        assert_eq!(
            Paired::new(&[1.0, 1.2, 0.9, 1.1, 1.05]).verdict(),
            Verdict::Holds
        );
        assert_eq!(
            Paired::new(&[-1.0, -1.2, -0.9, -1.1]).verdict(),
            Verdict::Reversed
        );
        assert_eq!(
            Paired::new(&[2.0]).verdict().to_string(),
            "not resolved at 1 seed"
        );
        assert_eq!(
            Paired::new(&[0.0, 0.0, 0.0]).verdict(),
            Verdict::NotResolved { seeds: 3 }
        );
        // Identical differences (a quantized measure): the exact test decides, and 3 seeds
        // cannot reach p < 0.05 while 6 can (2/64).
        assert_eq!(
            Paired::new(&[0.01; 3]).verdict(),
            Verdict::NotResolved { seeds: 3 }
        );
        assert_eq!(Paired::new(&[0.01; 6]).verdict(), Verdict::Holds);
        assert_eq!(Paired::new(&[-0.01; 6]).verdict(), Verdict::Reversed);
        // From a published summary: the same interval as from the values.
        let summary = Paired::from_summary(row.mean, row.std, row.n);
        assert_eq!((summary.interval, summary.p_t), (row.interval, row.p_t));
        // No sign pattern is rarer than 2 in 2^n: 3 seeds can never reach p < 0.25.
        assert_eq!(sign_flip_p(&[1.0, 2.0, 3.0]), Some(0.25));
        assert_eq!(sign_flip_p(&[0.0; 21]), None);
    }

    #[test]
    fn interval_formatting() {
        let s = Paired::new(&[0.03, 0.26, 0.49]);
        assert_eq!(s.mean_and_interval(2), "+0.26 [-0.31, +0.83]");
        assert_eq!(Paired::new(&[0.5]).mean_and_interval(2), "+0.50 [n/a]");
    }

    const REF_PPF: [(f64, f64); 7] = [
        (1.0, 12.706204736174694),
        (2.0, 4.302652729749462),
        (3.0, 3.1824463052837078),
        (4.0, 2.7764451051977934),
        (5.0, 2.5705818356363146),
        (9.0, 2.262157162798205),
        (29.0, 2.045229642132703),
    ];
    const REF_SF: [(f64, f64, f64); 7] = [
        (0.5, 1.0, 0.35241638234956674),
        (1.96, 2.0, 0.09452865480086614),
        (2.5, 4.0, 0.03338327240599407),
        (3.0, 9.0, 0.007478181955207111),
        (0.1, 29.0, 0.46051622224368693),
        (6.0, 3.0, 0.004636357446142333),
        (12.0, 5.0, 3.544746258580761e-05),
    ];
    const REF_PAIRED: [(&[f64], f64, f64, f64, f64); 5] = [
        (
            &[0.03, 0.26, 0.49],
            0.189345095649908,
            -0.31135167370257577,
            0.8313516737025758,
            0.25,
        ),
        (
            &[1.0, 1.2, 0.9, 1.1, 1.05],
            3.0390450569391356e-05,
            0.9111777447401104,
            1.1888222552598897,
            0.0625,
        ),
        (
            &[-0.4, 0.1, 0.35, -0.2, 0.6, 0.05],
            0.5966752690183138,
            -0.2960150305818093,
            0.4626816972484759,
            0.625,
        ),
        (
            &[0.12, -0.03, 0.4, 0.22, 0.18, -0.05, 0.31],
            0.039853046413435456,
            0.01055929221790497,
            0.3180121363535236,
            0.0625,
        ),
        (
            &[2.5, -1.0],
            0.7422378831816868,
            -21.485858288305714,
            22.985858288305714,
            1.0,
        ),
    ];
}
