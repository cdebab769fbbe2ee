//! `lkd train --nproc-per-node N` end to end: local workers over Gloo on loopback, one run dir
//! written by rank 0, a failed worker reported with its rank, and clear config errors.

mod common;

use common::{lkd_in as lkd, text};
use std::path::Path;
use std::process::Command;

/// A tiny supervised run: 128 images, batch 16 per worker, one epoch.
fn tiny_run(out: &Path) -> Vec<String> {
    let data = std::env::var("LKD_FASHION_MNIST")
        .expect("LKD_FASHION_MNIST is not set: run through `make test`");
    [
        "train",
        "--preset",
        "convnext_proxy",
        "--limit",
        "128",
        "--batch-size",
        "16",
        "--epochs",
        "1",
        "--quiet",
        "--out",
        out.to_str().unwrap(),
        "--set",
        &format!("data.dataset.path=\"{data}\""),
        "--set",
        "data.dataset.val_limit=200",
        "--set",
        "data.workers=1",
        "--set",
        "run.log_every=1",
        "--set",
        "run.threads=1",
        "--set",
        "run.dist_timeout_s=60",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn nproc_per_node_trains_with_two_workers_and_reports_a_failed_rank() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let args = tiny_run(&out);
    let mut with_workers: Vec<&str> = args.iter().map(String::as_str).collect();
    with_workers.extend(["--nproc-per-node", "2"]);
    let o = lkd(tmp.path(), &with_workers);
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    // One summary (rank 0's), naming the two workers.
    assert_eq!(t.matches("finished ").count(), 1, "{t}");
    assert!(t.contains("data parallel: 2 workers"), "{t}");
    for f in [
        "config.toml",
        "last.safetensors",
        "best.safetensors",
        "last.state.safetensors",
    ] {
        assert!(out.join(f).is_file(), "missing {f}");
    }
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = metrics
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // 128 images / (2 x 16) = 4 steps (one line each, written once), then the evaluation.
    assert_eq!(lines.len(), 5, "{metrics}");
    assert!(lines[..4].iter().all(|l| l["world_size"] == 2), "{metrics}");
    assert!(lines[4]["top1"].as_f64().is_some(), "{metrics}");

    // The same command again: rank 0 refuses to overwrite the run, and the launcher stops the
    // other worker and names the failed rank.
    let o = lkd(tmp.path(), &with_workers);
    let t = text(&o);
    assert!(!o.status.success(), "{t}");
    assert!(t.contains("already holds a run"), "{t}");
    assert!(
        t.contains("error: worker rank ") && t.contains(" of 2 failed (exit status: 1)"),
        "{t}"
    );
}

#[test]
fn bad_precision_and_nested_launches_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    let mut args = tiny_run(&out);
    args.extend(["--set".into(), "run.precision=fp8".into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let o = lkd(tmp.path(), &args);
    assert!(!o.status.success());
    assert_eq!(
        String::from_utf8_lossy(&o.stderr).trim_end(),
        "error: config: run.precision = \"fp8\": expected \"fp32\", \"bf16\" or \"fp16\""
    );

    let o = Command::new(env!("CARGO_BIN_EXE_lkd"))
        .env("LKD_CACHE", tmp.path())
        .envs([
            ("RANK", "0"),
            ("WORLD_SIZE", "1"),
            ("LOCAL_RANK", "0"),
            ("MASTER_ADDR", "127.0.0.1"),
            ("MASTER_PORT", "29500"),
        ])
        .args([
            "train",
            "--out",
            out.to_str().unwrap(),
            "--nproc-per-node",
            "2",
        ])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr)
            .contains("--nproc-per-node starts its own workers, but this process already is one"),
        "{}",
        text(&o)
    );
    assert!(!out.exists(), "nothing may be written");
}
