//! Re-judges a published claims table (`| claim | student | KD | mean ± std | seeds | verdict |`,
//! as `lkd study` wrote it before per-seed figures were published) with the paired-t rule of
//! `lkd_trainer::stats`. Only the t figures can be recomputed from a summary; the sign-flip test
//! needs the per-seed differences.
//!
//!     cargo run -p lkd-trainer --example rejudge_claims -- docs/results/study-fmnist.md

use lkd_trainer::stats::Paired;

fn main() {
    let path = std::env::args().nth(1).unwrap_or_else(|| {
        eprintln!("usage: rejudge_claims STUDY.md");
        std::process::exit(2)
    });
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        eprintln!("error: reading {path}: {e}");
        std::process::exit(1)
    });
    println!("| claim | student | KD | published | mean difference [95 % CI] | n | t-test p | verdict then | verdict now |");
    println!("|---|---|---|---:|---:|---:|---:|---|---|");
    let mut changed = 0;
    for line in text.lines().filter(|l| l.starts_with("| (")) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let [claim, student, kd, difference, seeds, then] = cells[..] else {
            continue;
        };
        let Some((mean, std)) = difference.split_once(" ± ") else {
            continue;
        };
        let (Ok(mean), Ok(std), Ok(n)) = (
            mean.parse::<f64>(),
            std.parse::<f64>(),
            seeds.parse::<usize>(),
        ) else {
            continue;
        };
        let digits = difference.split_once('.').map_or(2, |(_, f)| {
            f.chars().take_while(char::is_ascii_digit).count()
        });
        let test = Paired::from_summary(mean, std, n);
        let now = test.verdict().to_string();
        // "within seed noise" was the old wording of "not resolved".
        changed += usize::from((then == "holds" || then == "reversed") && now != then);
        let p = test
            .p_t
            .map(|p| format!("{p:.3}"))
            .unwrap_or_else(|| "n/a".into());
        println!(
            "| {claim} | {student} | {kd} | {difference} | {} | {n} | {p} | {then} | {now} |",
            test.mean_and_interval(digits)
        );
    }
    println!("\n{changed} verdict(s) of holds or reversed no longer stand.");
}
