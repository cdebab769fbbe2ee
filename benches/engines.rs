//! The same exported file in ONNX Runtime and in OpenVINO, side by side in one process: batch-1
//! latency per engine, each engine's per-round ratio to ONNX Runtime (spinning off) with its
//! spread, and each engine's max |Δ logits| against it.
//!
//! Engines: ORT with intra-op spinning off and on, OpenVINO f32 (dynamic batch, as a server
//! would compile it, and fixed to batch 1), and OpenVINO bf16 where the CPU has avx512_bf16/AMX.
//! Every round runs each engine once, and the order rotates each round (round r starts with
//! engine r mod n), so no engine always follows a spinning pool or a cold cache.
//!
//! Models are exported here with random weights (the timing does not depend on their values).
//! Settings (environment): `LKD_ENGINES_PRESETS` (default `slak_tiny,convnext_tiny`),
//! `LKD_ENGINES_FORMS` (`--reparam` forms: auto, dense, decomposed, none; default `auto`),
//! `LKD_ENGINES_ROUNDS` (default 12), `LKD_ENGINES_THREADS` (default 2). Exports are cached in
//! `$TMPDIR/lkd-engines-bench/`. Needs `ORT_DYLIB_PATH` and `LKD_OPENVINO_LIB` (`make -s env`):
//! an engine that cannot load is an error, not a skipped row.
//!
//! Run: `cargo bench -p lkd-openvino --bench engines` (libtorch-free) or `cargo bench --bench engines`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use lkd_exporter::{export, random_input, random_weights, ExportOptions, ReparamMode};
use lkd_models::{Graph, ModelConfig};
use lkd_openvino::{Engine, EngineConfig, Precision};
use lkd_ort::{AbTimes, RatioSpread, Session, SessionConfig};
use lkd_util::quantile;

type AnyResult<T> = Result<T, Box<dyn std::error::Error>>;

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

fn parse_form(s: &str) -> AnyResult<ReparamMode> {
    Ok(match s {
        "auto" => ReparamMode::Auto,
        "dense" => ReparamMode::Dense,
        "decomposed" => ReparamMode::Decomposed,
        "none" => ReparamMode::None,
        other => return Err(format!("unknown form `{other}` in LKD_ENGINES_FORMS").into()),
    })
}

/// The preset exported in `form` (cached by name), and its graph for the input shape.
fn exported(preset: &str, form: &str, threads: usize) -> AnyResult<(PathBuf, Graph)> {
    let mut cfg = ModelConfig::preset(preset);
    cfg.preset = preset.into();
    let graph = cfg.build()?;
    let dir = std::env::temp_dir().join("lkd-engines-bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{preset}-{form}.onnx"));
    if !path.is_file() {
        let t = Instant::now();
        let opts = ExportOptions {
            reparam: parse_form(form)?,
            threads: Some(threads),
            ..Default::default()
        };
        let report = export(&graph, &random_weights(&graph, 1), &opts, &path)?;
        let forms: Vec<String> = report
            .reparam
            .iter()
            .map(|c| format!("{}={}", c.shape, c.form.as_str()))
            .collect();
        eprintln!(
            "exported {} in {:.1} s: {} [{}]",
            path.display(),
            t.elapsed().as_secs_f64(),
            report.summary(),
            forms.join(", ")
        );
    }
    Ok((path, graph))
}

enum Runner {
    Ort(Session),
    Ov(Engine),
}

impl Runner {
    fn run(&mut self, x: &[f32], shape: &[usize]) -> AnyResult<Vec<f32>> {
        Ok(match self {
            Runner::Ort(s) => lkd_ort::run_f32(s, x, shape)?.1,
            Runner::Ov(e) => e.run_f32(x, shape)?.1,
        })
    }
}

/// Each engine with its load time (read + compile / session build) in ms.
fn engines(path: &Path, threads: usize) -> AnyResult<Vec<(String, Runner, f64)>> {
    let mut out = Vec::new();
    for spin in [false, true] {
        let cfg = SessionConfig {
            intra_threads: Some(threads),
            spin,
            ..SessionConfig::default()
        };
        let t = Instant::now();
        let (s, _) = lkd_ort::session_from_file(path, &cfg)?;
        let name = format!("ort spin {}", if spin { "on" } else { "off" });
        out.push((name, Runner::Ort(s), t.elapsed().as_secs_f64() * 1e3));
    }
    let mut ov = vec![
        ("openvino f32", Precision::F32, None),
        ("openvino f32 static1", Precision::F32, Some(1)),
    ];
    let this = lkd_util::Machine::this();
    if this.has("avx512_bf16") || this.has("amx_bf16") {
        ov.push(("openvino bf16 static1", Precision::Bf16, Some(1)));
    }
    for (name, precision, static_batch) in ov {
        let cfg = EngineConfig {
            threads: Some(threads),
            precision,
            static_batch,
        };
        let t = Instant::now();
        let engine = Engine::from_file(path, &cfg)?;
        out.push((
            name.to_string(),
            Runner::Ov(engine),
            t.elapsed().as_secs_f64() * 1e3,
        ));
    }
    Ok(out)
}

fn machine() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    format!(
        "CPU: {}\nload average at start: {}",
        lkd_util::Machine::this().describe(),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    )
}

fn bench(preset: &str, form: &str, threads: usize, rounds: usize) -> AnyResult<()> {
    let (path, graph) = exported(preset, form, threads)?;
    let x = random_input(&graph, 1, 3);
    let (input, shape) = (x.as_f32().ok_or("input is not f32")?, x.shape.clone());
    let mut engines = engines(&path, threads)?;
    let n = engines.len();
    // Warm-up, and parity against the first engine (ORT, spinning off).
    let mut outputs = Vec::new();
    for (_, e, _) in engines.iter_mut() {
        for _ in 0..2 {
            e.run(input, &shape)?;
        }
        outputs.push(e.run(input, &shape)?);
    }
    let mut ms = vec![Vec::with_capacity(rounds); n];
    for r in 0..rounds {
        for k in 0..n {
            let i = (r + k) % n;
            let t = Instant::now();
            engines[i].1.run(input, &shape)?;
            ms[i].push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    println!(
        "\n{preset} (--reparam {form}), batch 1, {}x{}, {threads} threads, {rounds} rounds, order rotated each round",
        shape[2], shape[3]
    );
    println!(
        "{:<22} {:>9} {:>17}  {:<52} {:>10} {:>8}",
        "engine", "median ms", "IQR ms", "ratio to ort spin off (per round)", "max |Δ|", "load ms"
    );
    for (i, (name, _, load_ms)) in engines.iter().enumerate() {
        let mut sorted = ms[i].clone();
        sorted.sort_by(f64::total_cmp);
        let ratio = if i == 0 {
            "1 (reference)".to_string()
        } else {
            RatioSpread::of(&AbTimes {
                a_ms: ms[0].clone(),
                b_ms: ms[i].clone(),
            })?
            .to_string()
        };
        let delta = outputs[i]
            .iter()
            .zip(&outputs[0])
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        println!(
            "{name:<22} {:>9.1} {:>7.1}–{:<9.1}  {ratio:<52} {delta:>10.2e} {load_ms:>8.0}",
            quantile(&sorted, 0.5),
            quantile(&sorted, 0.25),
            quantile(&sorted, 0.75),
        );
    }
    Ok(())
}

fn main() -> AnyResult<()> {
    // `cargo bench` passes `--bench`; a filter argument selects presets by substring.
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let threads: usize = env_or("LKD_ENGINES_THREADS", "2").parse()?;
    let rounds: usize = env_or("LKD_ENGINES_ROUNDS", "12").parse()?;
    if threads == 0 || rounds == 0 {
        return Err("LKD_ENGINES_THREADS and LKD_ENGINES_ROUNDS must be at least 1".into());
    }
    println!("{}", machine());
    println!(
        "ONNX Runtime {}; OpenVINO {}",
        lkd_ort::ort_build_info()?.0.lines().next().unwrap_or("?"),
        lkd_openvino::openvino_version()?
    );
    for preset in env_or("LKD_ENGINES_PRESETS", "slak_tiny,convnext_tiny").split(',') {
        if !filter.is_empty() && !filter.iter().any(|f| preset.contains(f.as_str())) {
            continue;
        }
        for form in env_or("LKD_ENGINES_FORMS", "auto").split(',') {
            bench(preset.trim(), form.trim(), threads, rounds)?;
        }
    }
    Ok(())
}
