//! model_vs_kernel: the same work on the model and on the kernel backend, in one run.
//! Target: the model at least 1,000× faster per scenario.
//!
//! Two workloads, each run whole per iteration:
//! - `scenarios`: every `spec/**/*.yaml` that loads (the first 8 in quick mode), replayed with `scenario::run` on a
//!   fresh backend per scenario, as `ovlsim run spec/` and `ovlsim run --backend kernel
//!   spec/` do (for the kernel, a fresh worker process per scenario: its start-up is part
//!   of the cost);
//! - `cases`: generated cases as the fuzzer makes them (`fuzz::gen::case_start`, then
//!   `CASE_OPS` operations from `fuzz::gen::op`, then `fuzz::case::final_commands`), fixed
//!   seeds, only cases whose first mount succeeds on the model; every command sent
//!   through `Backend::exec`, on a fresh `ModelBackend` per case and on one kernel worker
//!   for all of them (as the fuzzer keeps its worker).
//!
//! The kernel side runs when `KernelBackend::available()` is Ok (root, overlayfs, the worker
//! binary); otherwise it is skipped with a message, or fails when `OVLSIM_REQUIRE_KERNEL=1`.
//!
//! Run: `cargo bench --bench model_vs_kernel`.

mod common;

use criterion::{BenchmarkId, SamplingMode};
use ovlsim::backend::{Backend, BackendError, Command, ModelBackend};
use ovlsim::fuzz::gen;
use ovlsim::kernel::KernelBackend;
use ovlsim::scenario::{self, Scenario};
use std::hint::black_box;
use std::path::PathBuf;

const CASE_OPS: usize = 20;

fn scenarios() -> Vec<Scenario> {
    let spec = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("spec");
    if !spec.is_dir() {
        return Vec::new();
    }
    scenario::find_files(&[spec]).expect("list spec/").iter().filter_map(|p| scenario::load(p).ok()).collect()
}

/// Runs a case's commands; harness errors are answers here, as in the fuzzer.
fn run_case(b: &mut dyn Backend, commands: &[Command]) -> usize {
    let mut failed = 0;
    for c in commands {
        if let Err(e) = b.exec(c) {
            if matches!(e, BackendError::Failed(_)) {
                failed += 1;
            }
        }
    }
    failed
}

fn main() {
    let mut c = common::criterion().sample_size(10);
    let kernel = KernelBackend::gate("model_vs_kernel's kernel side", env!("CARGO_BIN_EXE_ovlsim-kernel-worker"));
    // Quick mode replays a few scenarios only: each one starts a kernel worker.
    let suite: Vec<Scenario> = scenarios().into_iter().take(common::size(usize::MAX, 8)).collect();
    let case_count = common::size(20, 3);
    let cases: Vec<Vec<Command>> =
        (0u64..).filter_map(|seed| gen::seeded_commands(seed, CASE_OPS)).take(case_count).collect();
    println!(
        "model_vs_kernel: {} scenarios from spec/, {} generated cases of {CASE_OPS} operations",
        suite.len(),
        cases.len()
    );

    let mut group = c.benchmark_group("model_vs_kernel");
    group.sampling_mode(SamplingMode::Flat);
    let scen_id = format!("{}_scenarios", suite.len());
    let case_id = format!("{}_cases", cases.len());
    if !suite.is_empty() {
        group.bench_function(BenchmarkId::new("model_scenarios", &scen_id), |b| {
            b.iter(|| {
                for s in &suite {
                    black_box(scenario::run(s, &mut ModelBackend::new()));
                }
            })
        });
        if kernel {
            group.bench_function(BenchmarkId::new("kernel_scenarios", &scen_id), |b| {
                b.iter(|| {
                    for s in &suite {
                        let mut k = KernelBackend::new().expect("start a kernel worker");
                        black_box(scenario::run(s, &mut k));
                    }
                })
            });
        }
    }
    group.bench_function(BenchmarkId::new("model_cases", &case_id), |b| {
        b.iter(|| {
            for cmds in &cases {
                black_box(run_case(&mut ModelBackend::new(), cmds));
            }
        })
    });
    if kernel {
        let mut k = KernelBackend::new().expect("start a kernel worker");
        let failed: usize = cases.iter().map(|cmds| run_case(&mut k, cmds)).sum();
        if failed > 0 || !k.is_alive() {
            println!("model_vs_kernel: {failed} kernel commands failed as a harness error in the check run");
        }
        group.bench_function(BenchmarkId::new("kernel_cases", &case_id), |b| {
            b.iter(|| {
                for cmds in &cases {
                    if !k.is_alive() {
                        k = KernelBackend::new().expect("restart the kernel worker");
                    }
                    black_box(run_case(&mut k, cmds));
                }
            })
        });
    }
    group.finish();
    c.final_summary();
    common::print_ratios(
        "model_vs_kernel",
        &[
            common::ratio(
                "spec/ suite, model vs kernel (target: < 0.001)",
                format!("model_vs_kernel/model_scenarios/{scen_id}"),
                format!("model_vs_kernel/kernel_scenarios/{scen_id}"),
            ),
            common::ratio(
                "generated cases, model vs kernel (target: < 0.001)",
                format!("model_vs_kernel/model_cases/{case_id}"),
                format!("model_vs_kernel/kernel_cases/{case_id}"),
            ),
        ],
    );
    common::print_rates(
        "model_vs_kernel",
        &[
            ("scenarios (model)", format!("model_vs_kernel/model_scenarios/{scen_id}"), suite.len() as f64),
            ("scenarios (kernel)", format!("model_vs_kernel/kernel_scenarios/{scen_id}"), suite.len() as f64),
            ("cases (model)", format!("model_vs_kernel/model_cases/{case_id}"), cases.len() as f64),
            ("cases (kernel)", format!("model_vs_kernel/kernel_cases/{case_id}"), cases.len() as f64),
        ],
    );
}
