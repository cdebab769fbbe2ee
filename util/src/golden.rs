//! Golden files made by a peer script (PyTorch, timm, ...), generated once per Python and
//! script text and reused by every test process after: the tests' Python reference cases.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

/// Runs `python script --out DIR` unless `root/<prefix>-<hash>` is complete already (hash of the
/// Python path and the script's text), and returns that folder. Safe when test processes race:
/// each writes a temporary folder and renames it into place; the loser's copy is dropped.
/// Panics (these are test fixtures) when the script fails, with its stderr.
pub fn generated_once(python: &str, script: &Path, root: &Path, prefix: &str) -> PathBuf {
    let text = std::fs::read_to_string(script)
        .unwrap_or_else(|e| panic!("reading {}: {e}", script.display()));
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (python, text.as_str()).hash(&mut h);
    let dir = root.join(format!("{prefix}-{:016x}", h.finish()));
    if dir.join("done").exists() {
        return dir;
    }
    std::fs::create_dir_all(root).expect("creating the golden-file root");
    let work = tempfile::Builder::new()
        .prefix(&format!("{prefix}-tmp"))
        .tempdir_in(root)
        .expect("a temporary folder for golden files");
    let out = std::process::Command::new(python)
        .arg(script)
        .arg("--out")
        .arg(work.path())
        .output()
        .unwrap_or_else(|e| panic!("running {python} {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "{} failed:\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(work.path().join("done"), b"").expect("marking golden files complete");
    let kept = work.keep();
    if std::fs::rename(&kept, &dir).is_err() {
        // Another test process finished first; either copy is complete.
        let _ = std::fs::remove_dir_all(&kept);
    }
    dir
}
