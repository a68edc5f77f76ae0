//! fuzz_throughput: model-only fuzz cases per second, as `ovlsim fuzz` runs them on one
//! core, against the way it ran them before campaigns (the baseline, in the same run).
//!
//! Each routine runs the same 50 cases (the default generator, at most 24 steps):
//! - `state_machine` (the baseline): proptest's `TestRunner::run` over
//!   `ModelMachine::sequential_strategy`, each case checked by `invariants::check_case`:
//!   the loop `ovlsim fuzz --model-only` ran before campaigns, and the one proptest
//!   harnesses run (`tests/differential.rs`, `harness::fuzz_backend`). Since the generator
//!   draws straight from the RNG (issue 12) its strategies wrap the direct draws, so this
//!   baseline is no longer the old generator (gone): the before/after of that change is
//!   measured on two binaries in BENCHMARKS.md;
//! - `invariants`: `campaign::run_case` in `Mode::Invariants` for cases 0..50 of seed 1
//!   (`ovlsim fuzz --model-only`);
//! - `plain`: `campaign::run_case` in `Mode::Plain` (`ovlsim fuzz --model-only --plain`).
//!
//! The summary prints cases/s of each and its speed-up over the baseline.
//!
//! Run: `cargo bench --bench fuzz_throughput`.

mod common;

use criterion::SamplingMode;
use ovlsim::fuzz::campaign::{self, Mode};
use ovlsim::fuzz::{invariants, machine, rng_for, ModelMachine, STEPS_MAX_DEFAULT};
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use proptest_state_machine::ReferenceStateMachine;
use std::hint::black_box;

fn main() {
    let cases = common::size(50, 3) as u64;
    let mut c = common::criterion();
    let mut group = c.benchmark_group("fuzz_throughput");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.bench_function("state_machine", |b| {
        b.iter(|| {
            let config = Config { cases: cases as u32, failure_persistence: None, ..Config::default() };
            let mut runner = TestRunner::new_with_rng(config, rng_for(1));
            let strategy = ModelMachine::sequential_strategy(1..=STEPS_MAX_DEFAULT);
            let r = runner.run(&strategy, |(state, transitions, _)| {
                invariants::check_case(&machine::case_of(&state, &transitions)).map(drop).map_err(TestCaseError::fail)
            });
            black_box(r.is_ok())
        })
    });
    for (name, mode) in [("invariants", Mode::Invariants), ("plain", Mode::Plain)] {
        group.bench_function(name, |b| {
            b.iter(|| {
                for i in 0..cases {
                    let _ = black_box(campaign::run_case(mode, 1, i, STEPS_MAX_DEFAULT));
                }
            })
        });
    }
    group.finish();
    c.final_summary();
    if common::quick() {
        return;
    }
    println!("\n## fuzz_throughput: model-only cases per second, one core ({cases} cases a batch)\n");
    println!("| routine | per case | cases/s | speed-up over state_machine |");
    println!("|---|---:|---:|---:|");
    let per_case = |r: &str| common::median_ns(&format!("fuzz_throughput/{r}")).map(|ns| ns / cases as f64);
    let base = per_case("state_machine");
    for r in ["state_machine", "invariants", "plain"] {
        match (per_case(r), base) {
            (Some(ns), Some(b)) => {
                println!("| {r} | {} | {} | {} |", common::human(ns), common::num(1e9 / ns), common::num(b / ns))
            }
            _ => println!("| {r} | - | - | not measured in this run |"),
        }
    }
    println!();
}
