//! profile_model: the model side of `benches/model_vs_kernel.rs`, without criterion, for a
//! profiler (callgrind counts instructions; `--toggle-collect` on `run_scenarios` or
//! `run_cases` leaves loading and case generation out).
//!
//! Run: `cargo run --release --example profile_model -- [scenarios|cases|both] [rounds]`;
//! under callgrind: `valgrind --tool=callgrind --toggle-collect='profile_model::run_*'
//! target/release/examples/profile_model both 3`.

use ovlsim::backend::{Backend, BackendError, Command, ModelBackend};
use ovlsim::fuzz::gen;
use ovlsim::scenario::{self, Scenario};
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
    if what == "cases" || what == "both" {
        let cases: Vec<Vec<Command>> =
            (0u64..).filter_map(|seed| gen::seeded_commands(seed, CASE_OPS)).take(20).collect();
        let t = Instant::now();
        let failed = run_cases(&cases, rounds);
        let per = t.elapsed().as_secs_f64() * 1e6 / (rounds * cases.len()).max(1) as f64;
        println!("cases: {} x {rounds}, {failed} harness failures, {per:.1} µs per case", cases.len());
    }
}
