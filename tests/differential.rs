//! Differential property tests: the model against the real kernel.
//!
//! The model is the reference state machine (`ovlsim::fuzz::ModelMachine`), the kernel the
//! system under test (`ovlsim::fuzz::KernelMachine`): proptest-state-machine generates a
//! random layer stack, a first mount, and a sequence of commands (operations, remounts,
//! offline edits), runs it on both, and compares every answer (inode numbers as
//! identities), then the merged view and the upper layer as on disk. A divergence is shrunk to a minimal case, written as a scenario
//! under `target/ovlsim-divergences/`, and its seed is kept in
//! `proptest-regressions/differential.txt` so that it is replayed first next time.
//!
//! The kernel test needs root, Linux and overlayfs. Without them it prints `SKIPPED: ...`
//! and passes, unless `OVLSIM_REQUIRE_KERNEL=1`. `PROPTEST_CASES` sets the number of cases
//! (default 2,000).

mod common;

use ovlsim::fuzz::{self, machine, ModelMachine};
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestError, TestRunner};
use proptest_state_machine::ReferenceStateMachine;
use std::cell::{Cell, RefCell};
use std::path::Path;
use std::time::Instant;

/// Kernel cases per run, unless `PROPTEST_CASES` says otherwise.
const KERNEL_CASES_DEFAULT: u32 = 2000;
/// Model-only cases per run, unless `PROPTEST_CASES` says otherwise.
const MODEL_CASES_DEFAULT: u32 = 2000;
/// Where the seeds of failing cases are kept (committed).
const REGRESSIONS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/proptest-regressions/differential.txt");
/// Where shrunk divergences are written.
const OUT_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/target/ovlsim-divergences");

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(REGRESSIONS))),
        source_file: Some(file!()),
        max_shrink_iters: 4096,
        max_shrink_time: 180_000,
        max_local_rejects: 1 << 20,
        ..Config::default()
    }
}

#[test]
fn model_agrees_with_kernel_on_random_stacks_and_commands() {
    if !common::kernel_runs("the differential kernel test") {
        return;
    }
    machine::install_panic_filter();
    let mut runner = TestRunner::new(config(cases(KERNEL_CASES_DEFAULT)));
    let strategy = ModelMachine::sequential_strategy(1..=fuzz::STEPS_MAX_DEFAULT);
    let start = Instant::now();
    let (cases, shrinks, failed) = (Cell::new(0u64), Cell::new(0u64), Cell::new(false));
    let steps_before = machine::kernel_steps();
    // The last failing case: proptest-state-machine may end its shrinking on a passing one.
    let last_failing = RefCell::new(None);
    let result = runner.run(&strategy, |(state, transitions, seen)| {
        let counter = if failed.get() { &shrinks } else { &cases };
        counter.set(counter.get() + 1);
        let case = machine::case_of(&state, &transitions);
        // KernelMachine::test_sequential, with its divergence panic caught.
        let r = fuzz::check_on_kernel(state, transitions, seen);
        if r.is_err() {
            failed.set(true);
            *last_failing.borrow_mut() = Some(case);
        }
        r
    });
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "differential: {} kernel cases and {} shrinking runs ({} commands) in {secs:.1} s",
        cases.get(),
        shrinks.get(),
        machine::kernel_steps() - steps_before,
    );
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, (state, transitions, _))) => {
            let case = last_failing.take().unwrap_or_else(|| machine::case_of(&state, &transitions));
            let found = fuzz::record_failure(Path::new(OUT_DIR), &case, why.message(), false);
            for p in &found.files {
                eprintln!("divergence written to {}", p.display());
            }
            panic!(
                "the model and the kernel diverge ({}):\n{}\nminimal case: {:?}",
                found.signature, found.message, case
            );
        }
        Err(e) => panic!("the property could not run: {e}"),
    }
}

#[test]
fn model_keeps_its_invariants_on_random_stacks_and_commands() {
    machine::install_panic_filter();
    let mut runner = TestRunner::new(config(cases(MODEL_CASES_DEFAULT)));
    let strategy = ModelMachine::sequential_strategy(1..=fuzz::STEPS_MAX_DEFAULT);
    let last_failing = RefCell::new(None);
    let result = runner.run(&strategy, |(state, transitions, _)| {
        let case = machine::case_of(&state, &transitions);
        let r = fuzz::invariants::check_case(&case).map(drop).map_err(TestCaseError::fail);
        if r.is_err() {
            *last_failing.borrow_mut() = Some(case);
        }
        r
    });
    match result {
        Ok(()) => {}
        Err(TestError::Fail(why, (state, transitions, _))) => {
            let case = last_failing.take().unwrap_or_else(|| machine::case_of(&state, &transitions));
            let found = fuzz::record_failure(Path::new(OUT_DIR), &case, why.message(), true);
            for p in &found.files {
                eprintln!("broken invariant written to {}", p.display());
            }
            panic!("a model invariant is broken: {}", found.message);
        }
        Err(e) => panic!("the property could not run: {e}"),
    }
}
