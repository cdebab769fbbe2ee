use lkd_runtime::{bench, BenchConfig, BenchReport, SessionConfig};

use crate::common::*;

#[test]
fn bench_reports_percentiles_throughput_and_gflops() {
    let cfg = BenchConfig { batch_sizes: vec![1, 4], threads: vec![1], iters: 12, warmup: 2, session: SessionConfig::default() };
    let report = bench(&model("rgb32"), None, &cfg).unwrap();
    assert_eq!(report.results.len(), 2);
    assert!(report.ab.is_empty());
    for r in &report.results {
        assert_eq!(r.iters, 12);
        assert!(r.min_ms <= r.p50_ms && r.p50_ms <= r.p90_ms && r.p90_ms <= r.p99_ms, "{r:?}");
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
    let cfg = BenchConfig { batch_sizes: vec![2], threads: vec![1], iters: 10, warmup: 1, session: SessionConfig::default() };
    let report = bench(&model("gray28"), Some(&model("slow")), &cfg).unwrap();
    assert_eq!(report.results.len(), 2);
    let ab = &report.ab[0];
    assert_eq!((ab.a.as_str(), ab.b.as_str()), ("gray28", "slow"));
    assert!((ab.ratio_p50 - ab.b_p50_ms / ab.a_p50_ms).abs() < 1e-12);
    assert!(ab.ratio_p50 > 1.0, "the 1.2-GFLOP model should be slower: {ab:?}");
}

#[test]
fn bench_refuses_impossible_settings() {
    let cfg = BenchConfig { batch_sizes: vec![4], threads: vec![1], iters: 2, warmup: 0, session: SessionConfig::default() };
    let e = bench(&model("fixed1"), None, &cfg).unwrap_err();
    assert!(e.to_string().contains("fixed batch"), "{e}");
    let cfg = BenchConfig { iters: 0, ..cfg };
    assert!(bench(&model("rgb32"), None, &cfg).is_err());
}
