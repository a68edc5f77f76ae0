//! The in-process route of checking an implementation: the `vfs` crate's `OverlayFS`
//! through the adapter of `examples/vfs_conformance/`, on every scenario of `spec/`.
//!
//! The set of failing scenarios must equal `conformance/vfs/failing.txt`, the committed
//! report's list: a change in `vfs`, in the adapter, in the model or in `spec/` that moves
//! a scenario in or out of it shows here. Regenerate the report with
//! `cargo run --release --example vfs_conformance -- --out conformance/vfs > REPORT.tmp && mv REPORT.tmp
//! conformance/vfs/REPORT.md`.

#[path = "../examples/vfs_conformance/adapter.rs"]
mod adapter;

use adapter::{VfsBackend, OBSERVES};
use ovlsim::backend::{Backend, BackendError, Command, ModelBackend, Reply};
use ovlsim::fuzz::GenConfig;
use ovlsim::harness::{check_files, check_scenario, fuzz_backend, replayable, Observes, Verdict};
use ovlsim::ops::{Op, Outcome};
use std::path::PathBuf;

fn spec() -> Vec<PathBuf> {
    vec![PathBuf::from("spec")]
}

fn in_crate() {
    std::env::set_current_dir(env!("CARGO_MANIFEST_DIR")).unwrap();
}

#[test]
fn vfs_failing_set_equals_the_committed_report() {
    in_crate();
    let report = check_files("vfs", &spec(), OBSERVES, || Box::new(VfsBackend::new())).unwrap();
    let committed = std::fs::read_to_string("conformance/vfs/failing.txt").unwrap();
    let committed: Vec<String> = committed.lines().filter(|l| !l.is_empty()).map(str::to_owned).collect();
    assert_eq!(
        report.failing(),
        committed,
        "the vfs failures moved; regenerate conformance/vfs (see this file's header)"
    );
    let (pass, fail, na, err) = report.counts();
    assert_eq!(err, 0, "{}", report.to_markdown());
    assert!(pass > 0 && fail > 0 && na > 0, "pass {pass}, fail {fail}, n/a {na}");
}

/// Each committed minimal scenario (from spec/ and from random cases) passes on the model
/// (whose answers it records) and still fails on vfs.
#[test]
fn vfs_committed_failures_replay() {
    in_crate();
    let report =
        check_files("vfs", &[PathBuf::from("conformance/vfs")], OBSERVES, || Box::new(VfsBackend::new())).unwrap();
    // The spec failures (failing.txt) and the smallest random case of each kind (fuzz/).
    let committed = std::fs::read_to_string("conformance/vfs/failing.txt").unwrap();
    let fuzz = report.results.iter().filter(|r| r.folder == "fuzz").count();
    assert_eq!(report.results.len(), committed.lines().count() + fuzz);
    assert!(fuzz > 0);
    for r in &report.results {
        assert!(matches!(r.verdict, Verdict::Fail(_)), "{}: {}", r.file.display(), r.verdict.label());
        let s = r.scenario.as_ref().unwrap();
        let on_model = ovlsim::scenario::run(s, &mut ModelBackend::new());
        assert!(on_model.passed(), "{}", on_model.details(5));
    }
}

/// The model checked against itself: every scenario passes, none is not applicable.
#[test]
fn model_against_itself_passes_everything() {
    in_crate();
    let report = check_files("model", &spec(), Observes::ALL, || Box::new(ModelBackend::new())).unwrap();
    let (pass, fail, na, err) = report.counts();
    assert_eq!((fail, na, err), (0, 0, 0), "{}", report.to_markdown());
    assert!(pass > 100);
}

/// A backend that answers one operation wrongly: the model with every `readdir` missing
/// its last name.
struct DropsLastName(ModelBackend);

impl Backend for DropsLastName {
    fn name(&self) -> &'static str {
        "drops-last-name"
    }
    fn exec(&mut self, cmd: &Command) -> Result<Reply, BackendError> {
        let mut r = self.0.exec(cmd)?;
        if let (Command::Op(Op::Readdir { .. }), Reply::Outcome(Outcome::Entries(e))) = (cmd, &mut r) {
            e.pop_last();
        }
        Ok(r)
    }
}

#[test]
fn a_wrong_answer_fails_and_a_refusal_is_not_applicable() {
    in_crate();
    let s = ovlsim::scenario::load("spec/readdir/readdir-merged-union-dtype.yaml").unwrap();
    let verdict = check_scenario(&s, &mut DropsLastName(ModelBackend::new()), Observes::ALL);
    let Verdict::Fail(report) = verdict else { panic!("{}", verdict.label()) };
    // The minimal replayable scenario passes on the model and still fails.
    let min = replayable(&s, &report).unwrap();
    assert!(min.steps.len() <= s.steps.len());
    assert!(ovlsim::scenario::run(&min, &mut ModelBackend::new()).passed());
    assert!(matches!(check_scenario(&min, &mut DropsLastName(ModelBackend::new()), Observes::ALL), Verdict::Fail(_)));

    // A layer with a symlink, which vfs cannot hold: not applicable, never a pass.
    let with_symlink = ovlsim::scenario::load("spec/symlink_path/open-nofollow-symlink-eloop.yaml").unwrap();
    let verdict = check_scenario(&with_symlink, &mut VfsBackend::new(), OBSERVES);
    assert!(matches!(&verdict, Verdict::NotApplicable(why) if why.contains("symlink")), "{verdict:?}");
}

/// Random cases drawn for what vfs does (files, directories, eight calls) find its bugs,
/// and each shrunk failure, with expectations recorded from the model, passes on the
/// model and still fails on vfs.
#[test]
fn vfs_random_cases_fail_and_replay() {
    let summary = fuzz_backend(&adapter::config(), OBSERVES, 150, 1, 24, || Box::new(VfsBackend::new())).unwrap();
    assert_eq!(summary.cases, 150);
    assert_eq!(summary.not_applicable, 0, "the configuration draws only what the adapter maps");
    assert!(!summary.failures.is_empty() && summary.passed > 0, "{summary:?}");
    for (s, r) in summary.failures.iter().take(10) {
        let min = replayable(s, r).unwrap();
        assert!(ovlsim::scenario::run(&min, &mut ModelBackend::new()).passed(), "{}", min.to_yaml());
        assert!(
            matches!(check_scenario(&min, &mut VfsBackend::new(), OBSERVES), Verdict::Fail(_)),
            "{}",
            min.to_yaml()
        );
    }
}

/// The model against itself on random cases of the full generator: no divergence and
/// nothing not applicable.
#[test]
fn model_against_itself_on_random_cases() {
    let summary =
        fuzz_backend(&GenConfig::default(), Observes::ALL, 100, 7, 24, || Box::new(ModelBackend::new())).unwrap();
    assert!(summary.failures.is_empty(), "{:?}", summary.failures.first().map(|f| f.1.details(5)));
    assert_eq!(summary.not_applicable, 0);
    assert!(summary.passed >= 90, "{summary:?}");
}

#[test]
fn a_configuration_is_checked() {
    assert!(GenConfig::minimal().without_ops(&["rename"]).is_ok());
    assert!(GenConfig::default().without_ops(&["renameat"]).is_err());
    let none = GenConfig { ops: Default::default(), ..GenConfig::minimal() };
    assert!(fuzz_backend(&none, OBSERVES, 1, 1, 4, || Box::new(VfsBackend::new())).is_err());
}

/// The model, with `readdir` answers wrong when `wrong`, refusing to dump the merged view.
struct RefusesDump {
    inner: DropsLastName,
    wrong: bool,
}

impl Backend for RefusesDump {
    fn name(&self) -> &'static str {
        "refuses-dump"
    }
    fn exec(&mut self, cmd: &Command) -> Result<Reply, BackendError> {
        match cmd {
            Command::DumpMerged => Err(BackendError::NotModelled("dumping the merged view".into())),
            _ if self.wrong => self.inner.exec(cmd),
            _ => self.inner.0.exec(cmd),
        }
    }
}

/// A refusal makes a scenario not applicable, but a divergence before it is a failure.
#[test]
fn a_divergence_before_a_refusal_is_a_failure() {
    in_crate();
    let s = ovlsim::scenario::load("spec/readdir/readdir-merged-union-dtype.yaml").unwrap();
    let mut wrong = RefusesDump { inner: DropsLastName(ModelBackend::new()), wrong: true };
    let verdict = check_scenario(&s, &mut wrong, Observes::ALL);
    let Verdict::Fail(report) = &verdict else { panic!("{verdict:?}") };
    assert!(report.failures.iter().all(|f| !f.message.contains("not modelled")), "{}", report.details(5));
    let mut right = RefusesDump { inner: DropsLastName(ModelBackend::new()), wrong: false };
    assert!(matches!(check_scenario(&s, &mut right, Observes::ALL), Verdict::NotApplicable(_)));
}

/// A scenario the model itself cannot run (an offline edit that links to a name the layer
/// does not hold, as a shrunk case can be) says nothing about the implementation: an error,
/// never a failure, whatever the implementation answers.
#[test]
fn a_case_the_model_cannot_run_is_an_error_not_a_failure() {
    use ovlsim::backend::Edit;
    let commands = [
        Command::Layer { name: "L0".into(), content: ovlsim::layer::Layer::new().to_flat() },
        Command::Edit { layer: "L0".into(), edit: Edit::Link { path: "/y".into(), to: "/missing".into() } },
    ];
    let s = ovlsim::scenario::Scenario::from_commands("edit-link-missing", "a broken case", &commands);
    let verdict = check_scenario(&s, &mut DropsLastName(ModelBackend::new()), Observes::ALL);
    assert!(matches!(&verdict, Verdict::Error(why) if why.contains("edit")), "{verdict:?}");
}
