//! Random cases with the inode-cache switches of `GenConfig` on (`drop_caches`,
//! `shared_redirects`, `userxattr`), checked on the kernel backend against the model, as
//! `harness::fuzz_backend` checks any backend. Needs root.
//!
//! `cargo run --release --example cache_fuzz [CASES] [SEED]` (200 cases, seed 1).

use ovlsim::fuzz::GenConfig;
use ovlsim::harness::{fuzz_backend, Observes};
use ovlsim::kernel::KernelBackend;

fn main() {
    let cases: u64 = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(200);
    let seed: u64 = std::env::args().nth(2).and_then(|a| a.parse().ok()).unwrap_or(1);
    // No offline edits: an edit the layer refuses is reported in words that differ between the
    // backends, which says nothing about the caches.
    let config = GenConfig {
        drop_caches: true,
        shared_redirects: true,
        userxattr: true,
        offline_edits: false,
        ..GenConfig::default()
    };
    let started = std::time::Instant::now();
    let summary = fuzz_backend(&config, Observes::ALL, cases, seed, 40, || {
        Box::new(KernelBackend::new().expect("the kernel backend (run as root)"))
    });
    match summary {
        Ok(s) => {
            println!(
                "seed {}: {} cases, {} passed, {} not applicable, {} outside the model, {} failing, in {:.0?}",
                s.seed,
                s.cases,
                s.passed,
                s.not_applicable,
                s.errors,
                s.failures.len(),
                started.elapsed()
            );
            for (scenario, report) in s.failures.iter().take(5) {
                println!("---\n{}\n{report:?}", scenario.to_yaml());
            }
        }
        Err(e) => eprintln!("{e}"),
    }
}
