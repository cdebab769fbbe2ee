//! `read_pth` against archives written by PyTorch itself (`tests/reference/make_case.py`, run
//! with `$LKD_PYTHON`): every key, shape and value must equal the case's `state.safetensors`,
//! and malformed archives must be errors naming the file, never panics.

use lkd_models::checkpoint::{check_state_dict, read_checkpoint, read_pth, read_safetensors};
use lkd_models::{ModelConfig, ModelError};
use std::hash::{Hash, Hasher};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// (case name, ModelConfig JSON, make_case.py arguments after `--preset`).
const CASES: &[(&str, &str, &[&str])] = &[
    // Training checkpoint layout: model + optimizer + epoch + argparse.Namespace + scaler.
    (
        "slak_model",
        r#"{"preset":"slak_proxy"}"#,
        &["slak_proxy", "--wrap", "model"],
    ),
    // Bare state dict, protocol 4 (FRAME, MEMOIZE, STACK_GLOBAL).
    (
        "convnext_bare_p4",
        r#"{"preset":"convnext_proxy"}"#,
        &["convnext_proxy", "--wrap", "none", "--protocol", "4"],
    ),
    // fp16, transposed views and shared-storage slices, nn.Parameter records, DDP prefix.
    (
        "resnet_fp16_views",
        r#"{"preset":"resnet_proxy"}"#,
        &[
            "resnet_proxy",
            "--wrap",
            "state_dict",
            "--module-prefix",
            "--dtype",
            "float16",
            "--views",
            "--parameters",
        ],
    ),
    (
        "vit_ema_bf16_p5",
        r#"{"preset":"vit_proxy"}"#,
        &[
            "vit_proxy",
            "--wrap",
            "model_ema",
            "--dtype",
            "bfloat16",
            "--protocol",
            "5",
        ],
    ),
    (
        "convnext_override_f64",
        r#"{"preset":"convnext_proxy","kernel_size":7,"dims":[8,16,24]}"#,
        &[
            "convnext_proxy",
            "--override",
            r#"{"kernel_size":7,"dims":[8,16,24]}"#,
            "--dtype",
            "float64",
        ],
    ),
    (
        "legacy",
        r#"{"preset":"resnet_proxy"}"#,
        &["resnet_proxy", "--legacy-format", "--wrap", "none"],
    ),
];

/// Generates every case once, in one Python process (importing torch dominates the cost),
/// into a folder under cargo's target tmpdir keyed by the generator's sources, the case list
/// and the interpreter, so reruns reuse it and nothing piles up in /tmp.
fn cases() -> &'static Path {
    static CASES_DIR: OnceLock<PathBuf> = OnceLock::new();
    CASES_DIR.get_or_init(|| {
        let python = std::env::var("LKD_PYTHON").unwrap_or_else(|_| {
            panic!("LKD_PYTHON is not set: point it at the venv python with torch (run `make test`, or `eval \"$(make -s env)\"` first)")
        });
        let reference = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/reference");
        let script = reference.join("make_case.py");
        let mut key = format!("{python}\n{CASES:?}\n");
        for f in ["make_case.py", "models.py"] {
            key.push_str(&std::fs::read_to_string(reference.join(f)).unwrap());
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("pth-cases-{:016x}", h.finish()));
        if root.join("done").exists() {
            return root;
        }
        let work = tempfile::Builder::new().prefix("pth-cases-tmp").tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let argv: Vec<Vec<String>> = CASES
            .iter()
            .map(|(name, _, args)| {
                let mut a = vec!["--preset".to_string()];
                a.extend(args.iter().map(|s| s.to_string()));
                a.extend(["--out".to_string(), work.path().join(name).display().to_string()]);
                a
            })
            .collect();
        let out = std::process::Command::new(&python)
            .arg(&script)
            .arg("--cases")
            .arg(serde_json::to_string(&argv).unwrap())
            .output()
            .unwrap_or_else(|e| panic!("cannot run LKD_PYTHON={python}: {e}"));
        assert!(out.status.success(), "make_case.py failed:\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        std::fs::write(work.path().join("done"), b"").unwrap();
        // Another test process may have finished first; either copy is complete.
        let kept = work.keep();
        if std::fs::rename(&kept, &root).is_err() {
            let _ = std::fs::remove_dir_all(&kept);
        }
        assert!(root.join("done").exists(), "cannot create {}", root.display());
        root
    })
}

fn case(name: &str) -> PathBuf {
    cases().join(name)
}

fn config(name: &str) -> ModelConfig {
    let json = CASES.iter().find(|c| c.0 == name).unwrap().1;
    serde_json::from_str(json).unwrap()
}

fn assert_matches_truth(name: &str) {
    let dir = case(name);
    let got = read_pth(&dir.join("checkpoint.pth")).unwrap_or_else(|e| panic!("{name}: {e}"));
    let want = read_safetensors(&dir.join("state.safetensors")).unwrap();
    let got_keys: Vec<_> = got.keys().collect();
    let want_keys: Vec<_> = want.keys().collect();
    assert_eq!(got_keys, want_keys, "{name}: keys differ");
    for (k, w) in &want {
        let g = &got[k];
        assert_eq!(g.shape, w.shape, "{name}: {k} shape");
        assert!(
            g == w,
            "{name}: {k} values differ ({} vs {})",
            g.dtype_name(),
            w.dtype_name()
        );
    }
    let graph = config(name).build().unwrap();
    check_state_dict(&graph, &got).unwrap_or_else(|e| panic!("{name}: {e}"));
}

#[test]
fn training_checkpoint_with_namespace_and_optimizer() {
    assert_matches_truth("slak_model");
}

#[test]
fn bare_state_dict_protocol_4() {
    assert_matches_truth("convnext_bare_p4");
}

#[test]
fn fp16_views_parameters_and_module_prefix() {
    assert_matches_truth("resnet_fp16_views");
    // num_batches_tracked stays an integer buffer.
    let sd = read_pth(&case("resnet_fp16_views").join("checkpoint.pth")).unwrap();
    assert_eq!(sd["bn1.num_batches_tracked"].dtype_name(), "i64");
    assert_eq!(sd["bn1.num_batches_tracked"].shape, Vec::<usize>::new());
}

#[test]
fn ema_bf16_protocol_5() {
    assert_matches_truth("vit_ema_bf16_p5");
}

#[test]
fn float64_with_config_overrides() {
    assert_matches_truth("convnext_override_f64");
}

#[test]
fn read_checkpoint_recognises_both_formats() {
    let dir = case("convnext_bare_p4");
    let a = read_checkpoint(&dir.join("checkpoint.pth")).unwrap();
    let b = read_checkpoint(&dir.join("state.safetensors")).unwrap();
    assert!(a == b);
}

fn checkpoint_error(path: &Path) -> String {
    match read_pth(path) {
        Ok(sd) => panic!(
            "{}: expected an error, loaded {} tensors",
            path.display(),
            sd.len()
        ),
        Err(e @ ModelError::Checkpoint { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains(&path.display().to_string()),
                "error does not name the file: {msg}"
            );
            msg
        }
        Err(e) => panic!("expected ModelError::Checkpoint, got {e:?}"),
    }
}

#[test]
fn legacy_format_says_how_to_convert() {
    let msg = checkpoint_error(&case("legacy").join("checkpoint.pth"));
    assert!(
        msg.contains("legacy") && msg.contains("torch>=1.6"),
        "{msg}"
    );
}

#[test]
fn garbage_and_empty_files() {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in [
        ("empty.pth", &b""[..]),
        ("text.pth", b"hello, not a checkpoint"),
        ("pk.pth", b"PK\x03\x04 truncated"),
    ] {
        let p = dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        checkpoint_error(&p);
    }
    assert!(matches!(
        read_pth(&dir.path().join("absent.pth")),
        Err(ModelError::Io { .. })
    ));
}

/// Entries of an archive as (name, bytes), in order.
fn entries(path: &Path) -> Vec<(String, Vec<u8>)> {
    let mut z = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    (0..z.len())
        .map(|i| {
            let mut f = z.by_index(i).unwrap();
            let mut b = vec![];
            f.read_to_end(&mut b).unwrap();
            (f.name().to_string(), b)
        })
        .collect()
}

fn write_zip(path: &Path, entries: &[(String, Vec<u8>)]) {
    let mut w = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, bytes) in entries {
        w.start_file(name.as_str(), opts).unwrap();
        w.write_all(bytes).unwrap();
    }
    w.finish().unwrap();
}

#[test]
fn truncated_archives_are_errors() {
    let src = case("convnext_bare_p4").join("checkpoint.pth");
    let bytes = std::fs::read(&src).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let n = bytes.len();
    for cut in [1, 2, 4, 30, 100, 1000, n / 3, n / 2, n - 200, n - 22, n - 1] {
        let p = dir.path().join(format!("cut{cut}.pth"));
        std::fs::write(&p, &bytes[..cut]).unwrap();
        checkpoint_error(&p);
    }
}

#[test]
fn flipped_bytes_never_panic() {
    let src = case("convnext_bare_p4").join("checkpoint.pth");
    let bytes = std::fs::read(&src).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("flipped.pth");
    // Whole-file flips mostly hit zip structures and CRCs.
    for i in (0..bytes.len()).step_by(bytes.len() / 60) {
        let mut b = bytes.clone();
        b[i] ^= 0xff;
        std::fs::write(&p, &b).unwrap();
        let _ = read_pth(&p);
    }
    // Flips and cuts inside data.pkl, re-zipped with valid CRCs, reach the pickle machine.
    let ents = entries(&src);
    let pkl_at = ents
        .iter()
        .position(|(n, _)| n.ends_with("/data.pkl"))
        .unwrap();
    let pkl = ents[pkl_at].1.clone();
    let mut variants: Vec<Vec<u8>> = (0..pkl.len())
        .step_by(7)
        .map(|i| {
            let mut b = pkl.clone();
            b[i] ^= 0xff;
            b
        })
        .collect();
    variants.extend((0..pkl.len()).step_by(97).map(|i| pkl[..i].to_vec()));
    for (j, v) in variants.into_iter().enumerate() {
        let mut e = ents.clone();
        e[pkl_at].1 = v;
        let q = dir.path().join(format!("pkl{j}.pth"));
        write_zip(&q, &e);
        let _ = read_pth(&q);
        std::fs::remove_file(&q).unwrap();
    }
}

#[test]
fn missing_storage_entry_is_named() {
    let src = case("slak_model").join("checkpoint.pth");
    let mut ents = entries(&src);
    let root = ents[0].0.split('/').next().unwrap().to_string();
    let gone = format!("{root}/data/3");
    ents.retain(|(n, _)| *n != gone);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("missing.pth");
    write_zip(&p, &ents);
    let msg = checkpoint_error(&p);
    assert!(msg.contains(&gone), "{msg}");
}

#[test]
fn archive_root_name_does_not_matter() {
    let src = case("convnext_bare_p4").join("checkpoint.pth");
    let ents: Vec<_> = entries(&src)
        .into_iter()
        .map(|(n, b)| (format!("renamed{}", &n[n.find('/').unwrap()..]), b))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("renamed.pth");
    write_zip(&p, &ents);
    let got = read_pth(&p).unwrap();
    assert!(got == read_safetensors(&case("convnext_bare_p4").join("state.safetensors")).unwrap());
}

fn single_pickle_archive(dir: &Path, name: &str, pkl: &[u8]) -> PathBuf {
    let p = dir.join(name);
    write_zip(
        &p,
        &[
            ("archive/data.pkl".into(), pkl.to_vec()),
            ("archive/byteorder".into(), b"little".to_vec()),
        ],
    );
    p
}

#[test]
fn dicts_without_tensors_list_their_keys() {
    let dir = tempfile::tempdir().unwrap();
    // {'epoch': 7, 'note': 'x'}
    let p = single_pickle_archive(
        dir.path(),
        "no_tensors.pth",
        b"\x80\x02}q\x00(X\x05\x00\x00\x00epochq\x01K\x07X\x04\x00\x00\x00noteq\x02X\x01\x00\x00\x00xq\x03u.",
    );
    let msg = checkpoint_error(&p);
    assert!(
        msg.contains("\"epoch\"") && msg.contains("\"note\""),
        "{msg}"
    );
    // {'model': <__main__.Net object>}: a whole pickled module, not a state dict.
    let p = single_pickle_archive(
        dir.path(),
        "module.pth",
        b"\x80\x02}q\x00X\x05\x00\x00\x00modelq\x01c__main__\nNet\nq\x02)\x81q\x03}q\x04bs.",
    );
    let msg = checkpoint_error(&p);
    assert!(msg.contains("__main__.Net"), "{msg}");
    // No data.pkl at all.
    let p = dir.path().join("plain.zip");
    write_zip(&p, &[("readme.txt".into(), b"hi".to_vec())]);
    let msg = checkpoint_error(&p);
    assert!(msg.contains("data.pkl"), "{msg}");
}
