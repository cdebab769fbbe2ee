use lkd_runtime::{bench, bench_ab, BenchConfig, BenchReport, Model, SessionConfig};

use crate::common::*;

#[test]
fn bench_reports_percentiles_throughput_and_gflops() {
    let cfg = BenchConfig {
        batch_sizes: vec![1, 4],
        threads: vec![1],
        iters: 12,
        warmup: 2,
        session: SessionConfig::default(),
        ..BenchConfig::default()
    };
    let report = bench(&model("rgb32"), None, &cfg).unwrap();
    assert_eq!(report.results.len(), 2);
    assert!(report.ab.is_empty());
    for r in &report.results {
        assert_eq!(r.iters, 12);
        assert!(
            r.min_ms <= r.p50_ms && r.p50_ms <= r.p90_ms && r.p90_ms <= r.p99_ms,
            "{r:?}"
        );
        assert!(r.throughput_img_s > 0.0);
        let g = r.gflops_per_image.expect("lkd.gflops metadata");
        assert!((r.achieved_gflop_s.unwrap() - g * r.throughput_img_s).abs() < 1e-9);
    }
    let json = serde_json::to_string(&report).unwrap();
    let back: BenchReport = serde_json::from_str(&json).unwrap();
    assert_eq!(back.results.len(), 2);
    assert!((back.results[1].p50_ms - report.results[1].p50_ms).abs() < 1e-9);
}

#[test]
fn ab_mode_interleaves_and_reports_ratio() {
    let cfg = BenchConfig {
        batch_sizes: vec![2],
        threads: vec![1],
        iters: 10,
        warmup: 1,
        session: SessionConfig::default(),
        ..BenchConfig::default()
    };
    let report = bench(&model("gray28"), Some(&model("slow")), &cfg).unwrap();
    assert_eq!(report.results.len(), 2);
    let ab = &report.ab[0];
    assert_eq!((ab.a.as_str(), ab.b.as_str()), ("gray28", "slow"));
    let r = &ab.ratio;
    assert_eq!(r.rounds, 10);
    assert!(
        r.min <= r.p25 && r.p25 <= r.median && r.median <= r.p75 && r.p75 <= r.max,
        "{r:?}"
    );
    assert!(
        r.median > 1.0,
        "the 1.2-GFLOP model should be slower: {ab:?}"
    );
}

#[test]
fn bench_refuses_impossible_settings() {
    let cfg = BenchConfig {
        batch_sizes: vec![4],
        threads: vec![1],
        iters: 2,
        warmup: 0,
        session: SessionConfig::default(),
        ..BenchConfig::default()
    };
    let e = bench(&model("fixed1"), None, &cfg).unwrap_err();
    assert!(e.to_string().contains("fixed batch"), "{e}");
    let cfg = BenchConfig { iters: 0, ..cfg };
    assert!(bench(&model("rgb32"), None, &cfg).is_err());
}

/// The same model as A and as B must measure as equal: with spinning on and a fixed order, two
/// sessions in one process measured 1.25x apart (and 1.37x the other way round when swapped).
/// A model of some milliseconds on one thread keeps scheduler noise small next to a run; a
/// loaded machine can still push one attempt out, so a bias must show in three attempts.
#[test]
fn same_model_as_a_and_b_measures_equal() {
    let cfg = SessionConfig {
        intra_threads: Some(1),
        inter_threads: Some(1),
        ..SessionConfig::default()
    };
    let mut a = Model::load(model("slow"), &cfg).unwrap();
    let mut b = Model::load(model("slow"), &cfg).unwrap();
    let mut seen = vec![];
    for _ in 0..3 {
        let (_, _, ab) = bench_ab(&mut a, &mut b, 1, 1, 40, 3).unwrap();
        if (0.9..=1.1).contains(&ab.ratio.median) {
            return;
        }
        seen.push(ab.ratio.to_string());
    }
    panic!("same model, A/B ratio outside 0.9-1.1 in every attempt: {seen:?}");
}

#[test]
fn ab_refuses_spinning_sessions() {
    let spinning = SessionConfig {
        intra_threads: Some(1),
        spin: true,
        ..SessionConfig::default()
    };
    let mut a = Model::load(model("gray28"), &SessionConfig::default()).unwrap();
    let mut b = Model::load(model("gray28"), &spinning).unwrap();
    let e = bench_ab(&mut a, &mut b, 1, 1, 3, 0).unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid benchmark setting: `gray28` was loaded with spinning on; an A/B in one process needs both \
         sessions built with `SessionConfig { spin: false, .. }`"
    );
}
