//! Comparing two sessions in one process without favouring either by order.
//!
//! Each round runs A once and B once; even rounds run A first, odd rounds B first, so whatever
//! the first run of a round pays (cache misses, a thread pool waking up) is shared equally. The
//! ratio is computed per round and reported with its spread, so a reader can tell a real
//! difference from noise. Measured sessions should be built with spinning off: two spinning
//! pools in one process steal the cores from each other in a fixed order.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use lkd_util::quantile;

use crate::error::{OrtError, Result};

/// Per-round latencies in milliseconds, index-aligned.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AbTimes {
    pub a_ms: Vec<f64>,
    pub b_ms: Vec<f64>,
}

/// Runs `warmup` untimed and `rounds` timed rounds of `a` and `b`, alternating which goes first.
pub fn interleave<E>(
    rounds: usize,
    warmup: usize,
    mut a: impl FnMut() -> std::result::Result<(), E>,
    mut b: impl FnMut() -> std::result::Result<(), E>,
) -> std::result::Result<AbTimes, E> {
    let mut times = AbTimes {
        a_ms: Vec::with_capacity(rounds),
        b_ms: Vec::with_capacity(rounds),
    };
    for i in 0..warmup + rounds {
        let (first, second): (
            &mut dyn FnMut() -> std::result::Result<(), E>,
            &mut dyn FnMut() -> _,
        ) = if i % 2 == 0 {
            (&mut a, &mut b)
        } else {
            (&mut b, &mut a)
        };
        let t = Instant::now();
        first()?;
        let t1 = t.elapsed().as_secs_f64() * 1e3;
        let t = Instant::now();
        second()?;
        let t2 = t.elapsed().as_secs_f64() * 1e3;
        if i >= warmup {
            let (ta, tb) = if i % 2 == 0 { (t1, t2) } else { (t2, t1) };
            times.a_ms.push(ta);
            times.b_ms.push(tb);
        }
    }
    Ok(times)
}

/// The distribution of the per-round ratio `b / a` (above 1: B is slower).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RatioSpread {
    pub median: f64,
    /// 25th and 75th percentile.
    pub p25: f64,
    pub p75: f64,
    pub min: f64,
    pub max: f64,
    pub rounds: usize,
}

impl RatioSpread {
    pub fn of(times: &AbTimes) -> Result<Self> {
        if times.a_ms.is_empty() || times.a_ms.len() != times.b_ms.len() {
            return Err(OrtError::Ab(format!(
                "need the same positive number of A and B rounds, found {} and {}",
                times.a_ms.len(),
                times.b_ms.len()
            )));
        }
        let mut r: Vec<f64> = times
            .a_ms
            .iter()
            .zip(&times.b_ms)
            .map(|(a, b)| b / a.max(1e-9))
            .collect();
        r.sort_by(f64::total_cmp);
        Ok(Self {
            median: quantile(&r, 0.5),
            p25: quantile(&r, 0.25),
            p75: quantile(&r, 0.75),
            min: r[0],
            max: r[r.len() - 1],
            rounds: r.len(),
        })
    }
}

impl std::fmt::Display for RatioSpread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.3} (IQR {:.3}–{:.3}, min–max {:.3}–{:.3}, {} rounds)",
            self.median, self.p25, self.p75, self.min, self.max, self.rounds
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_alternate_which_side_runs_first() {
        let order = std::cell::RefCell::new(String::new());
        let times = interleave::<()>(
            4,
            1,
            || {
                order.borrow_mut().push('a');
                Ok(())
            },
            || {
                order.borrow_mut().push('b');
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(order.into_inner(), "abbaabbaab");
        assert_eq!((times.a_ms.len(), times.b_ms.len()), (4, 4));
    }

    #[test]
    fn spread_is_taken_over_per_round_ratios() {
        let t = AbTimes {
            a_ms: vec![1.0, 2.0, 4.0, 1.0, 2.0],
            b_ms: vec![2.0, 2.0, 2.0, 1.5, 5.0],
        };
        let s = RatioSpread::of(&t).unwrap();
        // ratios: 2, 1, 0.5, 1.5, 2.5 → sorted 0.5 1 1.5 2 2.5
        assert_eq!(
            (s.median, s.p25, s.p75, s.min, s.max, s.rounds),
            (1.5, 1.0, 2.0, 0.5, 2.5, 5)
        );
        assert!(RatioSpread::of(&AbTimes::default()).is_err());
    }

    #[test]
    fn an_error_in_either_side_stops_the_run() {
        let mut n = 0;
        let r = interleave(
            10,
            0,
            || Ok(()),
            || {
                n += 1;
                if n == 3 {
                    Err("b failed")
                } else {
                    Ok(())
                }
            },
        );
        assert_eq!(r, Err("b failed"));
    }
}
