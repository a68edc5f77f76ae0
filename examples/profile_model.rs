//! profile_model: the model side of `benches/model_vs_kernel.rs`, without criterion, for a
//! profiler (callgrind counts instructions; `--toggle-collect` on `run_scenarios` or
//! `run_cases` leaves loading and case generation out).
//!
//! Run: `cargo run --release --example profile_model -- [scenarios|cases|both|by-command]
//! [rounds]`; `by-command` times the cases' commands one by one and prints the time per
//! case of each kind of command. Under callgrind: `valgrind --tool=callgrind
//! --toggle-collect='profile_model::run_*' target/release/examples/profile_model both 3`.

use ovlsim::backend::{Backend, BackendError, Command, ModelBackend};
use ovlsim::fuzz::gen;
use ovlsim::scenario::{self, Scenario};
use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::PathBuf;
use std::time::Instant;

/// Operations per generated case, as in the bench.
const CASE_OPS: usize = 20;

/// Every `spec/**/*.yaml` that loads.
fn scenarios() -> Vec<Scenario> {
    let spec = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("spec");
    scenario::find_files(&[spec]).expect("list spec/").iter().filter_map(|p| scenario::load(p).ok()).collect()
}

/// Replays every scenario `rounds` times on a fresh model; the number of failed scenarios.
#[inline(never)]
fn run_scenarios(suite: &[Scenario], rounds: usize) -> usize {
    let mut failed = 0;
    for _ in 0..rounds {
        for s in suite {
            failed += usize::from(!black_box(scenario::run(s, &mut ModelBackend::new())).passed());
        }
    }
    failed
}

/// Runs every case `rounds` times on a fresh model; the number of harness failures.
#[inline(never)]
fn run_cases(cases: &[Vec<Command>], rounds: usize) -> usize {
    let mut failed = 0;
    for _ in 0..rounds {
        for cmds in cases {
            let mut b = ModelBackend::new();
            for c in cmds {
                if let Err(BackendError::Failed(_)) = black_box(b.exec(c)) {
                    failed += 1;
                }
            }
        }
    }
    failed
}

/// The kind of a command, as the breakdown groups it: `Op` by its syscall name.
fn kind(c: &Command) -> String {
    match c {
        Command::Op(op) => format!("op {}", op.name()),
        Command::Layer { .. } => "layer".into(),
        Command::Mount { .. } => "mount".into(),
        Command::Unmount => "unmount".into(),
        Command::Edit { .. } => "edit".into(),
        Command::DumpLayer { .. } => "dump layer".into(),
        Command::DumpMerged => "dump merged".into(),
    }
}

/// Runs every case `rounds` times, timing each command; prints, for each kind of command,
/// the time it takes per case and per command.
fn by_command(cases: &[Vec<Command>], rounds: usize) {
    let mut time: BTreeMap<String, (f64, usize)> = BTreeMap::new();
    for _ in 0..rounds {
        for cmds in cases {
            let mut b = ModelBackend::new();
            for c in cmds {
                let t = Instant::now();
                let _ = black_box(b.exec(c));
                let spent = t.elapsed().as_secs_f64();
                let slot = time.entry(kind(c)).or_default();
                slot.0 += spent;
                slot.1 += 1;
            }
        }
    }
    let runs = (rounds * cases.len()).max(1) as f64;
    println!("{:<16} {:>12} {:>10} {:>12}", "command", "µs per case", "per case", "ns each");
    for (k, (spent, count)) in &time {
        println!(
            "{k:<16} {:>12.2} {:>10.2} {:>12.0}",
            spent / runs * 1e6,
            *count as f64 / runs,
            spent / *count as f64 * 1e9
        );
    }
    let total: f64 = time.values().map(|(s, _)| s).sum();
    println!("{:<16} {:>12.2}", "total", total / runs * 1e6);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let what = args.get(1).map(String::as_str).unwrap_or("both");
    let rounds: usize = args.get(2).and_then(|r| r.parse().ok()).unwrap_or(1);
    if what == "scenarios" || what == "both" {
        let suite = scenarios();
        let t = Instant::now();
        let failed = run_scenarios(&suite, rounds);
        let per = t.elapsed().as_secs_f64() * 1e6 / (rounds * suite.len()).max(1) as f64;
        println!("scenarios: {} x {rounds}, {failed} failed, {per:.1} µs per scenario", suite.len());
    }
    let cases =
        || -> Vec<Vec<Command>> { (0u64..).filter_map(|seed| gen::seeded_commands(seed, CASE_OPS)).take(20).collect() };
    if what == "by-command" {
        by_command(&cases(), rounds);
    }
    if what == "cases" || what == "both" {
        let cases = cases();
        let t = Instant::now();
        let failed = run_cases(&cases, rounds);
        let per = t.elapsed().as_secs_f64() * 1e6 / (rounds * cases.len()).max(1) as f64;
        println!("cases: {} x {rounds}, {failed} harness failures, {per:.1} µs per case", cases.len());
    }
}
