//! Every generator profile (`ovlsim fuzz --profile NAME`) stays exercised: a few cases of
//! each against the kernel (root only: without a kernel the test prints `SKIPPED: ...`
//! and passes, unless `OVLSIM_REQUIRE_KERNEL=1`), and a model-only run of each, which
//! checks the model's invariants on what the profile draws.
//!
//! The cases are few (the campaign's numbers are in the README): this keeps the profiles'
//! generators and the model's answers on them from rotting, not a search.

mod common;

use ovlsim::fuzz::profile::Profile;
use ovlsim::fuzz::{self, FuzzConfig};
use std::io::Write;

/// Where divergences of these runs are written.
const OUT_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/target/ovlsim-divergences/profiles");

/// A run of `cases` cases of `profile` from a fixed seed.
fn config(profile: Profile, cases: u64, model_only: bool) -> FuzzConfig {
    FuzzConfig {
        cases,
        seed: Some(16),
        max_steps: profile.steps_max(),
        out_dir: OUT_DIR.into(),
        model_only,
        generator: profile.config(),
        ..FuzzConfig::default()
    }
}

/// Fewer cases for the profiles whose cases cost more (long sequences, many layers).
fn cases(profile: Profile, base: u64) -> u64 {
    match profile {
        Profile::Wide | Profile::Long | Profile::Tall => base / 4,
        _ => base,
    }
}

#[test]
fn every_profile_agrees_with_the_kernel_on_a_few_cases() {
    if !common::kernel_runs("the generator profiles' kernel runs") {
        return;
    }
    for p in Profile::ALL {
        let report = fuzz::run(config(p, cases(p, 80), false));
        let _ = writeln!(std::io::stderr(), "profile {p}: {report}");
        assert!(report.skipped.is_none(), "profile {p}: the kernel ran for the gate but not here: {report}");
        assert!(report.cases >= cases(p, 80), "profile {p}: {} cases ran", report.cases);
        assert!(report.is_clean(), "profile {p}: {report}");
    }
}

#[test]
fn every_profile_keeps_the_model_invariants() {
    for p in Profile::ALL {
        let report = fuzz::run(config(p, cases(p, 40), true));
        let _ = writeln!(std::io::stderr(), "profile {p}: {report}");
        assert!(report.cases >= cases(p, 40), "profile {p}: {} cases ran", report.cases);
        assert!(report.is_clean(), "profile {p}: {report}");
    }
}

#[test]
fn a_bad_generator_configuration_is_an_error_not_a_panic() {
    let mut generator = Profile::Sparse.config();
    generator.lowers_min = generator.lowers_max + 1;
    let report =
        fuzz::run(FuzzConfig { cases: 1, seed: Some(1), model_only: true, generator, ..FuzzConfig::default() });
    assert_eq!(report.cases, 0);
    assert!(report.errors.iter().any(|e| e.contains("lowers_min")), "{report}");
}
