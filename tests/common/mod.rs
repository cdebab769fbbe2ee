//! Running the `lkd` binary from the end-to-end tests.

use std::path::Path;
use std::process::{Command, Output};

/// `lkd` with its own `$LKD_CACHE` (kept teachers, teacher outputs), not the user's.
pub fn lkd_in(cache: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lkd"))
        .env("LKD_CACHE", cache)
        .args(args)
        .output()
        .expect("run lkd")
}

/// stdout then stderr, for assertion messages and matching.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
