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
//!   for all of them (as the fuzzer keeps its worker);
//! - `cases_without_ops`: the same cases with their operations left out: building the
//!   layers, mounting, dumping the merged view and the layers, unmounting. It is the part of
//!   a case that does not depend on its length; the difference between the two case
//!   workloads is the cost of the operations alone, printed as its own ratio.
//!
//! The kernel side runs when `KernelBackend::available()` is Ok (root, overlayfs, the `ovlsim`
//! binary as the worker); otherwise it is skipped with a message, or fails when `OVLSIM_REQUIRE_KERNEL=1`.
//!
//! Run: `cargo bench --bench model_vs_kernel`.

mod common;

use criterion::{BenchmarkId, SamplingMode};
use ovlsim::backend::{Backend, BackendError, Command, ModelBackend};
use ovlsim::fuzz::gen;
use ovlsim::kernel::{KernelBackend, WorkerCommand};
use ovlsim::scenario::{self, Scenario};
use std::hint::black_box;
use std::path::PathBuf;

const CASE_OPS: usize = 20;

fn scenarios() -> Vec<Scenario> {
    let spec = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("spec");
    if !spec.is_dir() {
        return Vec::new();
    }
    scenario::find_files(&[spec]).expect("list spec/").files.iter().filter_map(|p| scenario::load(p).ok()).collect()
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

/// The operations alone: each side's cases less the same cases without their operations,
/// per operation, and the ratio of the two.
fn print_ops_alone(case_id: &str, ops: usize) {
    let per_op = |side: &str| {
        let with = common::median_ns(&format!("model_vs_kernel/{side}_cases/{case_id}"))?;
        let without = common::median_ns(&format!("model_vs_kernel/{side}_cases_without_ops/{case_id}"))?;
        Some((with - without) / ops as f64)
    };
    if let (Some(model), Some(kernel)) = (per_op("model"), per_op("kernel")) {
        println!(
            "model_vs_kernel: the operations alone (cases less cases without ops, per operation): model {}, kernel {}, model/kernel {}",
            common::human(model),
            common::human(kernel),
            common::show_ratio(model / kernel)
        );
    }
}

fn main() {
    let mut c = common::criterion().sample_size(10);
    let kernel = KernelBackend::gate("model_vs_kernel's kernel side", WorkerCommand::cli(env!("CARGO_BIN_EXE_ovlsim")));
    // Quick mode replays a few scenarios only: each one starts a kernel worker.
    let suite: Vec<Scenario> = scenarios().into_iter().take(common::size(usize::MAX, 8)).collect();
    let case_count = common::size(20, 3);
    let cases: Vec<Vec<Command>> =
        (0u64..).filter_map(|seed| gen::seeded_commands(seed, CASE_OPS)).take(case_count).collect();
    let bare: Vec<Vec<Command>> =
        cases.iter().map(|c| c.iter().filter(|c| !matches!(c, Command::Op(_))).cloned().collect()).collect();
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
    for (workload, stream) in [("cases", &cases), ("cases_without_ops", &bare)] {
        group.bench_function(BenchmarkId::new(format!("model_{workload}"), &case_id), |b| {
            b.iter(|| {
                for cmds in stream {
                    black_box(run_case(&mut ModelBackend::new(), cmds));
                }
            })
        });
        if kernel {
            let mut k = KernelBackend::new().expect("start a kernel worker");
            let failed: usize = stream.iter().map(|cmds| run_case(&mut k, cmds)).sum();
            if failed > 0 || !k.is_alive() {
                println!("model_vs_kernel: {failed} kernel commands of {workload} failed as a harness error in the check run");
            }
            group.bench_function(BenchmarkId::new(format!("kernel_{workload}"), &case_id), |b| {
                b.iter(|| {
                    for cmds in stream {
                        if !k.is_alive() {
                            k = KernelBackend::new().expect("restart the kernel worker");
                        }
                        black_box(run_case(&mut k, cmds));
                    }
                })
            });
        }
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
            common::ratio(
                "the same cases without their operations, model vs kernel",
                format!("model_vs_kernel/model_cases_without_ops/{case_id}"),
                format!("model_vs_kernel/kernel_cases_without_ops/{case_id}"),
            ),
        ],
    );
    print_ops_alone(&case_id, cases.len() * CASE_OPS);
    common::print_rates(
        "model_vs_kernel",
        &[
            ("scenarios (model)", format!("model_vs_kernel/model_scenarios/{scen_id}"), suite.len() as f64),
            ("scenarios (kernel)", format!("model_vs_kernel/kernel_scenarios/{scen_id}"), suite.len() as f64),
            ("cases (model)", format!("model_vs_kernel/model_cases/{case_id}"), cases.len() as f64),
            ("cases (kernel)", format!("model_vs_kernel/kernel_cases/{case_id}"), cases.len() as f64),
            (
                "cases without ops (model)",
                format!("model_vs_kernel/model_cases_without_ops/{case_id}"),
                bare.len() as f64,
            ),
            (
                "cases without ops (kernel)",
                format!("model_vs_kernel/kernel_cases_without_ops/{case_id}"),
                bare.len() as f64,
            ),
        ],
    );
}
