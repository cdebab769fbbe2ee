//! A run directory: `config.toml`, `last.safetensors` / `best.safetensors` (model weights only,
//! loadable by any tool), `last.state.safetensors` (weights + optimizer + EMA + trainer state, the
//! one file resume reads, so it is always self-consistent), `metrics.jsonl` and, when files
//! were skipped, `skipped.txt`. Every file is written to a temp file and renamed.
//!
//! A process that writes a run (train, distill, resume) holds an advisory lock on `.lock`
//! ([`DirLock`], `flock`): a second writer is refused with the holder's PID, and the kernel
//! releases the lock when the holder exits, however it exits. Readers (eval, export, erf) take
//! no lock: every file they read is complete, as it was renamed into place.

use crate::config::TrainConfig;
use crate::TrainError;
use lkd_models::checkpoint::{read_safetensors, write_safetensors, StateDict};
use lkd_util::write_atomic;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

pub const CONFIG: &str = "config.toml";
pub const LAST: &str = "last.safetensors";
pub const BEST: &str = "best.safetensors";
pub const STATE: &str = "last.state.safetensors";
pub const METRICS: &str = "metrics.jsonl";
pub const SKIPPED: &str = "skipped.txt";
/// Weights evaluated at the end of epoch `n` (1-based), kept when `run.keep_epoch_weights`.
pub fn epoch_weights_file(epoch: usize) -> String {
    format!("epoch-{epoch:03}.safetensors")
}
fn is_epoch_weights(name: &str) -> bool {
    name.strip_prefix("epoch-")
        .and_then(|r| r.strip_suffix(".safetensors"))
        .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
}
/// The advisory lock file of a run (or a teacher-cache entry); it holds the writer's PID.
pub const LOCK: &str = ".lock";
/// Skipped files printed when they are found; `skipped.txt` lists them all.
const SKIPPED_PRINTED: usize = 5;

/// An exclusive advisory lock (`flock(2)`) on `<dir>/.lock`, held while the value lives. The
/// kernel drops it when the process exits, so a killed writer never leaves a stale lock.
#[derive(Debug)]
pub struct DirLock {
    _file: std::fs::File,
}

impl DirLock {
    /// Takes the lock of `dir` (which must exist) without waiting. `Ok(Err(holder))` when another
    /// process (or another handle in this one) holds it: `holder` is what it wrote, its PID and
    /// command.
    pub fn try_acquire(dir: &Path) -> Result<Result<Self, String>, TrainError> {
        use std::io::{Read, Seek};
        let path = dir.join(LOCK);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io(&path))?;
        if let Err(e) = flock_exclusive(&file) {
            if e.kind() != std::io::ErrorKind::WouldBlock {
                return Err(io(&path)(e));
            }
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            return Ok(Err(if holder.is_empty() {
                "PID not written yet".into()
            } else {
                holder.to_string()
            }));
        }
        let me = format!(
            "PID {} ({})",
            std::process::id(),
            std::env::args()
                .take(2)
                .map(|a| {
                    Path::new(&a)
                        .file_name()
                        .map_or(a.clone(), |f| f.to_string_lossy().into_owned())
                })
                .collect::<Vec<_>>()
                .join(" ")
        );
        file.set_len(0).map_err(io(&path))?;
        file.rewind().map_err(io(&path))?;
        file.write_all(me.as_bytes()).map_err(io(&path))?;
        Ok(Ok(Self { _file: file }))
    }

    /// [`DirLock::try_acquire`], a held lock being an error that names the holder.
    pub fn acquire(dir: &Path, what: &str) -> Result<Self, TrainError> {
        Self::try_acquire(dir)?.map_err(|holder| {
            TrainError::Busy(format!(
                "{what} {} is in use by another process ({holder}): wait for it to finish or stop \
                 it (the lock is released when it exits)",
                dir.display()
            ))
        })
    }
}

#[cfg(unix)]
fn flock_exclusive(file: &std::fs::File) -> std::io::Result<()> {
    use std::os::unix::io::AsRawFd;
    // SAFETY: flock on a descriptor this File owns; no memory is passed.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(not(unix))]
fn flock_exclusive(_file: &std::fs::File) -> std::io::Result<()> {
    Ok(())
}

/// Where training stands, saved with every checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps taken.
    pub step: usize,
    /// Epoch in progress and the next batch of it to train on.
    pub epoch: usize,
    pub next_batch: usize,
    pub best_top1: f64,
    pub best_epoch: Option<usize>,
    /// Length of metrics.jsonl at this checkpoint; resume truncates back to it.
    pub metrics_len: u64,
    pub adam_step: i64,
    pub finished: bool,
    /// Loss sums since the last metric line, so a resumed run logs the same averages.
    #[serde(default)]
    pub pending_loss: std::collections::BTreeMap<String, f64>,
    #[serde(default)]
    pub pending_count: usize,
    /// Samples per global micro-batch (workers × per-worker batch) the run trains with; 0 in
    /// checkpoints written before data parallelism (then the config's batch, one worker). A
    /// resume with another world size keeps it, so the sample stream continues unchanged.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub global_batch: usize,
}

fn is_zero(v: &usize) -> bool {
    *v == 0
}

/// The line written to metrics.jsonl after each epoch's evaluation. Readers go through
/// [`RunDir::evaluations`] and [`RunDir::best_top1`] rather than picking JSON keys.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochEval {
    pub epoch: usize,
    pub step: usize,
    pub top1: f64,
    pub top5: f64,
    pub val_loss: f64,
    /// Undecodable files skipped so far (train and validation loaders).
    pub skipped_files: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ema_top1: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ema_top5: Option<f64>,
}

impl EpochEval {
    /// The better of the weights and their EMA (the one saved as best weights).
    pub fn best_top1(&self) -> f64 {
        self.ema_top1.map_or(self.top1, |e| e.max(self.top1))
    }
}

pub struct RunDir {
    pub path: PathBuf,
    /// Held by the process writing the run; `None` for readers.
    _lock: Option<DirLock>,
    /// Skipped files already printed (the first [`SKIPPED_PRINTED`] are).
    skipped_printed: std::cell::Cell<usize>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> TrainError + '_ {
    move |source| TrainError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl RunDir {
    pub fn open(path: &Path) -> Result<Self, TrainError> {
        if !path.join(CONFIG).is_file() {
            return Err(TrainError::Config(format!(
                "{} is not a run directory (no {CONFIG})",
                path.display()
            )));
        }
        Ok(Self {
            path: path.to_path_buf(),
            _lock: None,
            skipped_printed: Default::default(),
        })
    }

    /// The run at `path` opened for writing, under its writer's lock: a new run's directory is
    /// created first; a resumed one must be a run directory. Another writer holding it is an
    /// error naming its PID.
    pub fn acquire(path: &Path, resume: bool) -> Result<Self, TrainError> {
        if resume {
            Self::open(path)?;
        }
        std::fs::create_dir_all(path).map_err(io(path))?;
        let lock = DirLock::acquire(path, "run directory")?;
        Ok(Self {
            path: path.to_path_buf(),
            _lock: Some(lock),
            skipped_printed: Default::default(),
        })
    }

    /// Creates a new run dir; an existing one with a config is an error (resume it or pick another).
    pub fn create(path: &Path, config: &TrainConfig) -> Result<Self, TrainError> {
        std::fs::create_dir_all(path).map_err(io(path))?;
        let run = Self {
            path: path.to_path_buf(),
            _lock: None,
            skipped_printed: Default::default(),
        };
        run.write_config(config)?;
        Ok(run)
    }

    /// Stores a new run's config; a directory already holding one is an error (resume it or
    /// pick another).
    pub fn write_config(&self, config: &TrainConfig) -> Result<(), TrainError> {
        if self.file(CONFIG).exists() {
            return Err(TrainError::Config(format!(
                "{} already holds a run: use --resume {0} or another --out",
                self.path.display()
            )));
        }
        Ok(write_atomic(
            &self.file(CONFIG),
            config.to_toml().as_bytes(),
        )?)
    }

    /// Whether the run holds a config but never reached its first checkpoint.
    pub fn is_unstarted(&self) -> bool {
        self.file(CONFIG).exists() && !self.file(STATE).exists()
    }

    /// Whether the run has a checkpoint to resume from.
    pub fn has_checkpoint(&self) -> bool {
        self.file(STATE).exists()
    }

    /// Removes what a run that never reached its first checkpoint left (config and metric
    /// lines), so it can start over cleanly. Refuses a directory holding anything else.
    pub fn clear_unstarted(&self) -> Result<(), TrainError> {
        let path = &self.path;
        let entries: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(io(path))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .collect();
        // Our files, and the temp files `write_atomic` leaves when killed mid-write
        // (`.{name}.XXXXXX`).
        let ours = |p: &PathBuf| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                [CONFIG, METRICS, LAST, BEST, SKIPPED, LOCK].contains(&n)
                    || is_epoch_weights(n)
                    || [CONFIG, METRICS, LAST, BEST, STATE]
                        .iter()
                        .any(|f| n.starts_with(&format!(".{f}.")))
                    || n.starts_with(".epoch-")
            })
        };
        if let Some(other) = entries.iter().find(|p| !ours(p)) {
            return Err(TrainError::Config(format!(
                "{} holds a run without a checkpoint but also {}: remove it or pick another --out",
                path.display(),
                other.display()
            )));
        }
        // The lock stays: its holder (this process) keeps it across the restart.
        for p in entries.iter().filter(|p| !p.ends_with(LOCK)) {
            std::fs::remove_file(p).map_err(io(p))?;
        }
        Ok(())
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    pub fn config(&self) -> Result<TrainConfig, TrainError> {
        TrainConfig::load(&self.file(CONFIG))
    }

    /// `best.safetensors`, else `last.safetensors`.
    pub fn best_or_last_weights(&self) -> Result<PathBuf, TrainError> {
        [BEST, LAST]
            .iter()
            .map(|f| self.file(f))
            .find(|p| p.is_file())
            .ok_or_else(|| {
                TrainError::Config(format!(
                    "run {} has no weights yet ({BEST} or {LAST})",
                    self.path.display()
                ))
            })
    }

    pub fn save_weights(&self, name: &str, sd: &StateDict) -> Result<(), TrainError> {
        Ok(write_safetensors(&self.file(name), sd, None)?)
    }

    pub fn save_state(&self, tensors: &StateDict, state: &TrainerState) -> Result<(), TrainError> {
        let meta = HashMap::from([("state".to_string(), serde_json::to_string(state).unwrap())]);
        Ok(write_safetensors(&self.file(STATE), tensors, Some(meta))?)
    }

    pub fn load_state(&self) -> Result<(StateDict, TrainerState), TrainError> {
        let path = self.file(STATE);
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| {
            TrainError::Other(format!("{}: not a valid state file ({e})", path.display()))
        })?;
        let state = meta
            .metadata()
            .as_ref()
            .and_then(|m| m.get("state"))
            .and_then(|s| serde_json::from_str(s).ok())
            .ok_or_else(|| {
                TrainError::Other(format!("{}: no trainer state in metadata", path.display()))
            })?;
        Ok((read_safetensors(&path)?, state))
    }

    /// The trainer state of the checkpoint without reading its tensors (the header only).
    pub fn load_trainer_state(&self) -> Result<TrainerState, TrainError> {
        use std::io::Read;
        let path = self.file(STATE);
        let bad = |what: &str| TrainError::Other(format!("{}: {what}", path.display()));
        let mut f = std::fs::File::open(&path).map_err(io(&path))?;
        let mut len = [0u8; 8];
        f.read_exact(&mut len).map_err(io(&path))?;
        let n = u64::from_le_bytes(len);
        // safetensors caps its own header at 100 MB.
        if n > 100_000_000 {
            return Err(bad("not a valid state file (header too large)"));
        }
        let mut header = vec![0u8; n as usize];
        f.read_exact(&mut header).map_err(io(&path))?;
        let header: serde_json::Value = serde_json::from_slice(&header)
            .map_err(|e| bad(&format!("not a valid state file ({e})")))?;
        header["__metadata__"]["state"]
            .as_str()
            .and_then(|s| serde_json::from_str(s).ok())
            .ok_or_else(|| bad("no trainer state in metadata"))
    }

    pub fn metrics_len(&self) -> u64 {
        std::fs::metadata(self.file(METRICS))
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// Drops metric lines written after the checkpoint being resumed.
    pub fn truncate_metrics(&self, len: u64) -> Result<(), TrainError> {
        let path = self.file(METRICS);
        if path.exists() {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(io(&path))?;
            f.set_len(len).map_err(io(&path))?;
        }
        Ok(())
    }

    /// Appends one JSON line (a single write, so a kill never leaves half a line followed by more).
    pub fn log(&self, value: &serde_json::Value) -> Result<(), TrainError> {
        let path = self.file(METRICS);
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        let mut line = serde_json::to_vec(value).unwrap();
        line.push(b'\n');
        f.write_all(&line).map_err(io(&path))
    }

    /// Writes `skipped.txt`, one `<split>: <path>: <reason>` line per skipped file (rewritten
    /// whole each time, so it is always complete), and prints the first few when found.
    pub fn record_skipped(&self, splits: &[(&str, Vec<String>)]) -> Result<(), TrainError> {
        let lines: Vec<String> = splits
            .iter()
            .flat_map(|(split, files)| files.iter().map(move |f| format!("{split}: {f}")))
            .collect();
        if lines.is_empty() {
            return Ok(());
        }
        let printed = self.skipped_printed.get();
        for l in lines
            .iter()
            .skip(printed)
            .take(SKIPPED_PRINTED.saturating_sub(printed))
        {
            eprintln!("warning: skipped {l}");
        }
        self.skipped_printed
            .set(lines.len().min(SKIPPED_PRINTED).max(printed));
        if lines.len() > SKIPPED_PRINTED && printed < SKIPPED_PRINTED {
            eprintln!(
                "warning: {} files skipped so far; all are listed in {}",
                lines.len(),
                self.file(SKIPPED).display()
            );
        }
        let mut text = lines.join("\n");
        text.push('\n');
        Ok(write_atomic(&self.file(SKIPPED), text.as_bytes())?)
    }

    pub fn log_eval(&self, eval: &EpochEval) -> Result<(), TrainError> {
        let line = serde_json::to_value(eval).map_err(|e| TrainError::Other(e.to_string()))?;
        self.log(&line)
    }

    /// The evaluation lines of metrics.jsonl, in order (step lines are skipped).
    pub fn evaluations(&self) -> Result<Vec<EpochEval>, TrainError> {
        Ok(self
            .read_metrics()?
            .into_iter()
            .filter_map(|l| serde_json::from_value(l).ok())
            .collect())
    }

    /// The best top-1 any epoch reached (weights or EMA); `None` before the first evaluation.
    pub fn best_top1(&self) -> Result<Option<f64>, TrainError> {
        Ok(self
            .evaluations()?
            .iter()
            .map(EpochEval::best_top1)
            .reduce(f64::max))
    }

    pub fn read_metrics(&self) -> Result<Vec<serde_json::Value>, TrainError> {
        let path = self.file(METRICS);
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        Ok(text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_killed_inside_its_first_checkpoint_can_start_over() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for name in [
            CONFIG,
            METRICS,
            ".last.safetensors.Ab12Cd",
            ".last.state.safetensors.Xy34Zw",
        ] {
            std::fs::write(d.join(name), b"partial").unwrap();
        }
        RunDir::open(d).unwrap().clear_unstarted().unwrap();
        assert_eq!(std::fs::read_dir(d).unwrap().count(), 0);
        // Anything that is not ours is kept, and the run is refused.
        std::fs::write(d.join(CONFIG), b"").unwrap();
        std::fs::write(d.join("notes.txt"), b"mine").unwrap();
        let e = RunDir::open(d)
            .unwrap()
            .clear_unstarted()
            .unwrap_err()
            .to_string();
        assert!(
            e.ends_with(&format!(
                "{}: remove it or pick another --out",
                d.join("notes.txt").display()
            )),
            "{e}"
        );
        assert!(d.join("notes.txt").is_file() && d.join(CONFIG).is_file());
    }

    #[test]
    fn evaluations_skip_step_lines_and_best_counts_the_ema() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir {
            path: dir.path().to_path_buf(),
            _lock: None,
            skipped_printed: Default::default(),
        };
        assert!(run.evaluations().is_err(), "no metrics file yet");
        run.log(&serde_json::json!({"step": 10, "epoch": 0, "lr": 0.1, "loss": 2.0}))
            .unwrap();
        assert_eq!(run.best_top1().unwrap(), None);
        let first = EpochEval {
            epoch: 0,
            step: 10,
            top1: 61.5,
            top5: 90.0,
            val_loss: 1.1,
            skipped_files: 0,
            ema_top1: Some(63.0),
            ema_top5: Some(91.0),
        };
        let second = EpochEval {
            epoch: 1,
            step: 20,
            top1: 62.0,
            ema_top1: None,
            ema_top5: None,
            ..first.clone()
        };
        run.log_eval(&first).unwrap();
        run.log(&serde_json::json!({"step": 20, "epoch": 1, "lr": 0.05, "loss": 1.5}))
            .unwrap();
        run.log_eval(&second).unwrap();
        assert_eq!(run.evaluations().unwrap(), vec![first, second]);
        assert_eq!(run.best_top1().unwrap(), Some(63.0));
    }
}
