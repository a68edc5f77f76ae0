//! fuzz_steps: the cost of one step of a model-only fuzz case, in a short case and in a long
//! one, as a ratio: a case of n steps must cost O(n) (`ovlsim fuzz --max-steps`).
//!
//! A case is made as `ovlsim fuzz --model-only` makes it: proptest-state-machine draws the
//! initial state and exactly n transitions from `ModelMachine` (the RNG seeded with
//! `fuzz::rng_for(1)`, so every iteration makes the same case), then
//! `fuzz::invariants::check_case` runs it on a fresh model with every invariant, then the
//! generated value tree is dropped. Three routines per length:
//! - `generate`: drawing the case (the model runs each transition to draw the next);
//! - `check`: `check_case` on the drawn case;
//! - `case`: both and the drop, what one case of `ovlsim fuzz --model-only` costs.
//!
//! The summary divides each median by its number of steps and prints the per-step cost of
//! the long case over that of the short one: 1 is linear. What still grows is the model's
//! own work on a bigger tree (the merged view the case dumps grows with the case).
//!
//! Run: `cargo bench --bench fuzz_steps`.

mod common;

use criterion::{BenchmarkId, SamplingMode};
use ovlsim::fuzz::{invariants, machine, rng_for, ModelMachine};
use proptest::strategy::{Strategy, ValueTree};
use proptest::test_runner::{Config, TestRunner};
use proptest_state_machine::ReferenceStateMachine;
use std::hint::black_box;

/// The value tree of a case of exactly `steps` transitions.
fn draw(
    steps: usize,
) -> impl ValueTree<
    Value = (
        ovlsim::fuzz::RefState,
        Vec<ovlsim::backend::Command>,
        Option<std::sync::Arc<std::sync::atomic::AtomicUsize>>,
    ),
> {
    let mut runner = TestRunner::new_with_rng(Config::default(), rng_for(1));
    ModelMachine::sequential_strategy(steps..=steps).new_tree(&mut runner).expect("a case")
}

fn main() {
    let mut c = common::criterion();
    let lengths = [common::size(1_000, 50), common::size(16_000, 200)];
    let mut group = c.benchmark_group("fuzz_steps");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    for &n in &lengths {
        let id = common::label(n);
        let (state, transitions, _) = draw(n).current();
        let case = machine::case_of(&state, &transitions);
        invariants::check_case(&case).expect("the model keeps its invariants");
        group.bench_function(BenchmarkId::new("generate", &id), |b| b.iter(|| black_box(draw(n))));
        group.bench_function(BenchmarkId::new("check", &id), |b| {
            b.iter(|| black_box(invariants::check_case(black_box(&case))))
        });
        group.bench_function(BenchmarkId::new("case", &id), |b| {
            b.iter(|| {
                let tree = draw(n);
                let (state, transitions, _) = tree.current();
                black_box(invariants::check_case(&machine::case_of(&state, &transitions)))
            })
        });
    }
    group.finish();
    c.final_summary();
    if common::quick() {
        return;
    }
    let (short, long) = (lengths[0], lengths[1]);
    println!(
        "\n## fuzz_steps: per-step cost, {} steps against {} steps (1 is linear)\n",
        common::label(long),
        common::label(short)
    );
    println!("| routine | per step, {} | per step, {} | long/short |", common::label(short), common::label(long));
    println!("|---|---:|---:|---:|");
    for routine in ["generate", "check", "case"] {
        let per_step =
            |n: usize| common::median_ns(&format!("fuzz_steps/{routine}/{}", common::label(n))).map(|ns| ns / n as f64);
        match (per_step(short), per_step(long)) {
            (Some(s), Some(l)) => {
                println!("| {routine} | {} | {} | {} |", common::human(s), common::human(l), common::num(l / s))
            }
            _ => println!("| {routine} | - | - | not measured in this run |"),
        }
    }
    println!();
}
