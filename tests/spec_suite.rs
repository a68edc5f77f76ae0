//! The whole `spec/` suite: every scenario on the model, always; and on a real overlay
//! mount when the process is root. The expectations in spec/ were recorded from the kernel,
//! so a kernel failure here means the suite is stale, and a model failure means the model
//! is wrong.

use ovlsim::backend::ModelBackend;
use ovlsim::scenario::{self, RunReport};
use ovlsim::CachePolicy;
use std::path::PathBuf;

mod common;

fn scenarios() -> Vec<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("spec");
    let files = scenario::find_files(&[root]).expect("spec/ is readable").files;
    assert!(files.len() >= 80, "spec/ should hold at least 80 scenarios, found {}", files.len());
    files
}

fn failures(reports: Vec<RunReport>) -> Vec<String> {
    reports.into_iter().filter(|r| !r.passed()).map(|r| r.details(20)).collect()
}

fn run_on_model(policy: CachePolicy) {
    let reports = scenarios()
        .iter()
        .map(|f| {
            let file = f.display().to_string();
            match scenario::load(f) {
                Ok(s) => scenario::run(&s, &mut ModelBackend::with_cache_policy(policy)),
                Err(e) => RunReport::from_error(&file, "model", &e),
            }
        })
        .collect();
    let bad = failures(reports);
    assert!(bad.is_empty(), "{} scenarios fail on the model ({policy:?}):\n{}", bad.len(), bad.join("\n"));
}

#[test]
fn every_spec_scenario_passes_on_the_model() {
    run_on_model(CachePolicy::Auto);
}

/// The same, with every lookup answered through the lookup cache (most spec/ stacks are
/// too short for the default policy to use it).
#[test]
fn every_spec_scenario_passes_on_the_model_through_the_lookup_cache() {
    run_on_model(CachePolicy::Always);
}

#[test]
fn every_spec_scenario_agrees_with_the_kernel() {
    if common::kernel_or_skip("spec/ on the kernel").is_none() {
        return;
    }
    let reports = scenarios()
        .iter()
        .map(|f| {
            let file = f.display().to_string();
            match scenario::load(f) {
                Ok(s) => {
                    let mut kernel = ovlsim::kernel::KernelBackend::new().expect("kernel backend");
                    scenario::run(&s, &mut kernel)
                }
                Err(e) => RunReport::from_error(&file, "kernel", &e),
            }
        })
        .collect();
    let bad = failures(reports);
    assert!(bad.is_empty(), "{} scenarios disagree with the kernel:\n{}", bad.len(), bad.join("\n"));
}
