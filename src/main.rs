//! The `lkd` binary: parse, run, report the error chain once.

use clap::Parser;

fn main() {
    let cli = lkd::Cli::parse();
    if let Err(e) = lkd::run(cli) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
