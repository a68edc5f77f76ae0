//! Conformance of another overlay implementation: which scenarios apply to it, and the
//! report by rule folder that `ovlsim conform` writes.
//!
//! A scenario is *not applicable* to a mount-command backend ([`crate::kernel::MountConfig`])
//! when it cannot say anything about the implementation, and then it is never counted as a
//! pass:
//! - it expects a mount to be refused with an errno: a command reports an exit status, not
//!   an errno (fuzzing still compares such mounts as "both refused");
//! - its dialect ([`Dialect`]) cannot express one of its layers or edits, or the
//!   implementation lacks one of its mount options.

use crate::dialect::Dialect;
use crate::harness::Observes;
use crate::kernel::{KernelBackend, MountConfig, SystemUnderTest};
use crate::layer::FlatLayer;
use crate::scenario::{Action, Expect, RunReport, Scenario};
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Why `s` is not applicable to a mount command in `dialect`, or `None` when it is.
pub fn not_applicable(s: &Scenario, dialect: Dialect) -> Option<String> {
    let layer = |name: &str, l: &FlatLayer| dialect.write(l).err().map(|e| format!("{dialect}: layer {name}: {e}"));
    for (name, l) in &s.layers {
        if let Some(why) = layer(name, l) {
            return Some(why);
        }
    }
    let string =
        "gives an option string or fsconfig(2) calls, which are passed to mount(2) only (backend::Command::MountData)";
    let mut spec = s.mount.clone();
    if let Some(m) = &spec {
        if m.data.is_some() || m.fsconfig.is_some() {
            return Some(format!("the mount {string}"));
        }
        if let Err(e) = dialect.check_options(&m.options) {
            return Some(format!("{dialect}: {e}"));
        }
    }
    for (i, step) in s.steps.iter().enumerate() {
        let at = match step.pos {
            Some(p) => format!("step {} (line {})", i + 1, p.line),
            None => format!("step {}", i + 1),
        };
        match &step.action {
            Action::Mount(change) => {
                if let Some(Expect::Err(e) | Expect::Call { errno: e, .. }) = step.expect {
                    return Some(format!(
                        "{at} expects the mount to be refused with {e}; a mount command reports an exit status, not an errno"
                    ));
                }
                if let Ok(m) = change.apply(spec.as_ref()) {
                    if m.data.is_some() || m.fsconfig.is_some() {
                        return Some(format!("{at} {string}"));
                    }
                    if let Err(e) = dialect.check_options(&m.options) {
                        return Some(format!("{at}: {dialect}: {e}"));
                    }
                    spec = Some(m);
                }
            }
            Action::Edit { layer: name, replace, edits } => {
                if let Some(why) = replace.as_ref().and_then(|l| layer(name, l)) {
                    return Some(format!("{at}: {why}"));
                }
                for e in edits {
                    if let crate::backend::Edit::Put { path, node } = e {
                        if let Err(why) = dialect.check_node(path, node) {
                            return Some(format!("{at}: {dialect}: edit of layer {name}: {why}"));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    None
}

/// Replays `s` on a fresh mount-command backend, or says why it is not applicable. A
/// backend that cannot start, or a [`crate::backend::BackendError::NotApplicable`] the
/// static check missed, is a failed report, never a pass.
pub fn run_scenario(s: &Scenario, config: &MountConfig) -> Result<RunReport, String> {
    if let Some(why) = not_applicable(s, config.dialect) {
        return Err(why);
    }
    if s.steps.iter().any(|st| st.cred(s.umask).is_some()) {
        return Err("a step runs as another caller or with a umask (`Command::OpAs`): only the mounter may use a \
                    mount command's file system"
            .into());
    }
    match KernelBackend::with_mount(config.clone()) {
        Ok(mut b) => Ok(crate::scenario::run(s, &mut b)),
        Err(e) => Ok(unstarted(s, "mount", format!("the mount-command backend cannot start: {e}"))),
    }
}

/// The failed report of `s` on a `backend` that could not start: never a pass.
fn unstarted(s: &Scenario, backend: &str, why: String) -> RunReport {
    let file = s.source.as_ref().map_or_else(|| s.name.clone(), |src| src.file.clone());
    let e = crate::scenario::ScenarioError::single(&file, crate::scenario::Pos { line: 1, column: 1 }, None, why);
    RunReport::from_error(&file, backend, &e)
}

/// Replays `s` on a fresh backend on `sut`, checking its expectations, or says why it is not
/// applicable: for a mount command as [`run_scenario`] does; for another worker program
/// ([`SystemUnderTest::Worker`]), when the worker refused a command it does not implement
/// ([`crate::backend::BackendError::NotModelled`] or `NotApplicable`) and nothing failed
/// before the refusal (a failure before it is reported, up to the refusal). A backend that
/// cannot start is a failed report, never a pass.
pub fn run_scenario_on(s: &Scenario, sut: &SystemUnderTest) -> Result<RunReport, String> {
    if let SystemUnderTest::Mount(m) = sut {
        return run_scenario(s, m);
    }
    match sut.start() {
        Ok(mut b) => {
            let mut b = crate::harness::Refusals { inner: &mut b, refused: None };
            let (report, stop) = crate::scenario::run_stopped(s, &mut b);
            match crate::harness::verdict_after_refusal(report.clone(), b.refused, stop) {
                crate::harness::Verdict::NotApplicable(why) => Err(format!("the worker refused it: {why}")),
                crate::harness::Verdict::Fail(r) => Ok(r),
                _ => Ok(report),
            }
        }
        Err(e) => Ok(unstarted(s, "worker", format!("the backend ({}) cannot start: {e}", sut.spec()))),
    }
}

/// How one scenario or case ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every expectation held.
    Passed,
    /// An expectation failed; the first failure, in words.
    Failed(String),
    /// Not applicable, and why.
    NotApplicable(String),
}

/// One line of a conformance report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The rule folder (`spec/<folder>/`), or `fuzz`.
    pub folder: String,
    /// The scenario's file, or the fuzz case's.
    pub file: String,
    /// The verdict.
    pub verdict: Verdict,
    /// Where its replayable YAML was written, for a failure.
    pub yaml: Option<String>,
}

/// What `ovlsim conform` does.
#[derive(Clone, Debug)]
pub struct ConformConfig {
    /// The implementation: a mount command or another worker program.
    pub against: SystemUnderTest,
    /// Scenario files or directories (`spec/`).
    pub paths: Vec<std::path::PathBuf>,
    /// Fuzz cases to run after the scenarios (0: none).
    pub fuzz_cases: u64,
    /// The fuzz seed.
    pub seed: Option<u64>,
    /// Where the report (`REPORT.md`) and the failures' YAML files go.
    pub out: std::path::PathBuf,
    /// A progress bar for the fuzz cases.
    pub progress: bool,
    /// What is compared. With [`Observes::ALL`] each scenario's recorded expectations are
    /// checked on the implementation; with fields masked (`--ignore`) each scenario and
    /// fuzz case is replayed on the model and on the implementation and the two are
    /// compared with those fields masked on both sides ([`crate::harness::check_scenario`]).
    pub observes: Observes,
}

/// Runs the scenarios and the fuzz cases on `config.mount`, writes each failing scenario
/// (its expectations are the kernel's, which the model agrees with) as
/// `OUT/<rule folder>/<name>.yaml`, each shrunk fuzz divergence under `OUT/fuzz/`, and the
/// report as `OUT/REPORT.md`. Returns the entries, or why it could not run.
pub fn conform(config: &ConformConfig) -> Result<Vec<Entry>, String> {
    let found = crate::scenario::find_files(&config.paths).map_err(|e| e.to_string())?;
    let mut entries = Vec::new();
    for (path, why) in &found.problems {
        entries.push(Entry {
            folder: folder_of(path),
            file: path.display().to_string(),
            verdict: Verdict::Failed(why.clone()),
            yaml: None,
        });
    }
    for path in &found.files {
        let file = path.display().to_string();
        let folder = folder_of(path);
        let s = match crate::scenario::load(path) {
            Ok(s) => s,
            Err(e) => {
                entries.push(Entry { folder, file, verdict: Verdict::Failed(e.to_string()), yaml: None });
                continue;
            }
        };
        let to = config.out.join(&folder).join(format!("{}.yaml", s.name));
        let (verdict, yaml) = if config.observes == Observes::ALL {
            match run_scenario_on(&s, &config.against) {
                Err(why) => (Verdict::NotApplicable(why), None),
                Ok(r) if r.passed() => (Verdict::Passed, None),
                Ok(r) => {
                    let text = s.source.as_ref().map_or_else(|| s.to_yaml(), |src| src.text.clone());
                    write_yaml(&to, &text)?;
                    (Verdict::Failed(r.details(3)), Some(to.display().to_string()))
                }
            }
        } else {
            match check_masked(&s, &config.against, config.observes) {
                Err(why) => (Verdict::NotApplicable(why), None),
                Ok((verdict, None)) => (verdict, None),
                Ok((verdict, Some(text))) => {
                    write_yaml(&to, &text)?;
                    (verdict, Some(to.display().to_string()))
                }
            }
        };
        entries.push(Entry { folder, file, verdict, yaml });
    }
    if config.fuzz_cases > 0 && config.observes != Observes::ALL {
        fuzz_masked(config, &mut entries)?;
    } else if config.fuzz_cases > 0 {
        let report = crate::fuzz::run(crate::fuzz::FuzzConfig {
            cases: config.fuzz_cases,
            seed: config.seed,
            out_dir: config.out.join("fuzz"),
            keep_going: true,
            progress: config.progress,
            against: config.against.clone(),
            ..Default::default()
        });
        if let Some(why) = &report.skipped {
            return Err(format!("the fuzz cases could not run: {why}"));
        }
        let failed: usize = report.divergences.iter().map(|d| d.occurrences).sum();
        for d in &report.divergences {
            let yaml = d.files.iter().find(|f| f.extension().is_some_and(|e| e == "yaml"));
            entries.push(Entry {
                folder: "fuzz".into(),
                file: format!("{} ({} case(s), seed {})", d.signature, d.occurrences, report.seed),
                verdict: Verdict::Failed(d.message.clone()),
                yaml: yaml.map(|y| y.display().to_string()),
            });
        }
        let passed = (report.cases as usize).saturating_sub(failed);
        for i in 0..passed {
            entries.push(Entry {
                folder: "fuzz".into(),
                file: format!("case {i}"),
                verdict: Verdict::Passed,
                yaml: None,
            });
        }
    }
    let title = config.against.label();
    let mut md = match &config.against {
        SystemUnderTest::Mount(m) => markdown(&title, &m.template, m.dialect, &entries),
        other => markdown_for(&title, &format!("System under test: `{}`.", other.spec()), &entries),
    };
    if config.observes != Observes::ALL {
        let masked = config.observes.masked();
        md = md.replacen(
            "`.\n",
            &format!("`.\n\nNot compared (masked on the model's and the implementation's answers alike): {masked}. Each scenario was replayed on the model and on the implementation; a failure's YAML is the scenario up to its first divergence, with the model's answers as expectations.\n"),
            1,
        );
    }
    std::fs::create_dir_all(&config.out).map_err(|e| format!("cannot create {}: {e}", config.out.display()))?;
    let to = config.out.join("REPORT.md");
    crate::persist::write_atomic(&to, md.as_bytes()).map_err(|e| format!("cannot write {}: {e}", to.display()))?;
    Ok(entries)
}

/// Writes a failure's scenario YAML at `to`, making its folder.
fn write_yaml(to: &std::path::Path, text: &str) -> Result<(), String> {
    if let Some(dir) = to.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    crate::persist::write_atomic(to, text.as_bytes()).map_err(|e| format!("cannot write {}: {e}", to.display()))
}

/// Checks `s` on the model and on a fresh mount-command backend with the fields
/// `observes` masks hidden on both sides ([`crate::harness::check_scenario`]), or says
/// why it is not applicable (as [`run_scenario`]). A failure comes with its replayable
/// scenario ([`crate::harness::replayable`]) as YAML.
pub fn check_masked(
    s: &Scenario,
    sut: &SystemUnderTest,
    observes: Observes,
) -> Result<(Verdict, Option<String>), String> {
    use crate::harness::Verdict as H;
    if let SystemUnderTest::Mount(m) = sut {
        if let Some(why) = not_applicable(s, m.dialect) {
            return Err(why);
        }
    }
    let mut b = match sut.start() {
        Ok(b) => b,
        Err(e) => return Ok((Verdict::Failed(format!("the backend ({}) cannot start: {e}", sut.spec())), None)),
    };
    Ok(match crate::harness::check_scenario(s, &mut b, observes) {
        H::Pass => (Verdict::Passed, None),
        H::NotApplicable(why) => return Err(why),
        H::Error(why) => (Verdict::Failed(format!("nothing learnt: {why}")), None),
        H::Fail(report) => {
            let yaml = crate::harness::replayable(s, &report).ok().map(|r| r.to_yaml());
            (Verdict::Failed(report.details(3)), yaml)
        }
    })
}

/// The fuzz cases of a masked `conform`: [`crate::harness::fuzz_backend`] with the
/// default generator, each failing case shrunk and written under `OUT/fuzz/`.
fn fuzz_masked(config: &ConformConfig, entries: &mut Vec<Entry>) -> Result<(), String> {
    let seed = config.seed.unwrap_or_else(crate::fuzz::random_seed);
    let dialect = match &config.against {
        SystemUnderTest::Mount(m) => m.dialect,
        _ => Dialect::Kernel,
    };
    let summary = crate::harness::fuzz_backend(
        &gen_config(dialect),
        config.observes,
        config.fuzz_cases,
        seed,
        crate::fuzz::STEPS_MAX_DEFAULT,
        || match config.against.start() {
            Ok(b) => Box::new(b),
            Err(e) => Box::new(Unstarted(e.to_string())),
        },
    )?;
    for (s, report) in &summary.failures {
        let to = config.out.join("fuzz").join(format!("{}.yaml", s.name));
        let yaml = match crate::harness::replayable(s, report) {
            Ok(r) => {
                write_yaml(&to, &r.to_yaml())?;
                Some(to.display().to_string())
            }
            Err(_) => None,
        };
        entries.push(Entry {
            folder: "fuzz".into(),
            file: format!("{} (seed {seed})", s.name),
            verdict: Verdict::Failed(report.details(3)),
            yaml,
        });
    }
    let counted = [
        (summary.passed, None),
        (summary.not_applicable, Some("the implementation refused part of it")),
        (summary.errors, Some("the model did not run it")),
    ];
    for (n, why) in counted {
        for i in 0..n {
            let verdict = match why {
                None => Verdict::Passed,
                Some(w) => Verdict::NotApplicable(w.to_owned()),
            };
            entries.push(Entry { folder: "fuzz".into(), file: format!("case {i}"), verdict, yaml: None });
        }
    }
    Ok(())
}

/// The generator's configuration for an implementation in `dialect`: the default, with
/// what the dialect cannot express switched off (fuse-overlayfs: redirects, xattr
/// whiteouts, `redirect_dir`), so that the cases drawn can say something about it.
fn gen_config(dialect: Dialect) -> crate::fuzz::GenConfig {
    let mut c = crate::fuzz::GenConfig::default();
    if dialect == Dialect::FuseOverlayfs {
        c.redirects = false;
        c.xattr_whiteouts = false;
        c.redirect_dir = false;
    }
    c
}

/// A backend that could not start: every command fails with why, so that a case run on
/// it is an error in the report, never a pass.
struct Unstarted(String);

impl crate::backend::Backend for Unstarted {
    fn name(&self) -> &'static str {
        "mount"
    }

    fn exec(&mut self, _: &crate::backend::Command) -> Result<crate::backend::Reply, crate::backend::BackendError> {
        Err(crate::backend::BackendError::Failed(format!("the mount-command backend cannot start: {}", self.0)))
    }
}

/// The rule folder of a scenario file: its parent directory's name.
fn folder_of(path: &std::path::Path) -> String {
    path.parent().and_then(|p| p.file_name()).map_or_else(|| ".".into(), |n| n.to_string_lossy().into_owned())
}

/// The Markdown report: a table by rule folder, then every failure and every scenario that
/// was not applicable, with the reason.
pub fn markdown(title: &str, command: &str, dialect: Dialect, entries: &[Entry]) -> String {
    markdown_for(title, &format!("Mount command: `{command}`, dialect `{dialect}`."), entries)
}

/// [`markdown`], with `what` as the line under the title that says what was tested.
fn markdown_for(title: &str, what: &str, entries: &[Entry]) -> String {
    let mut by: BTreeMap<&str, [usize; 3]> = BTreeMap::new();
    for e in entries {
        let c = by.entry(&e.folder).or_default();
        match e.verdict {
            Verdict::Passed => c[0] += 1,
            Verdict::Failed(_) => c[1] += 1,
            Verdict::NotApplicable(_) => c[2] += 1,
        }
    }
    let mut out = String::new();
    let _ = writeln!(out, "# Conformance: {title}\n");
    let _ = writeln!(out, "{what}\n");
    let _ = writeln!(out, "| rule folder | passed | failed | not applicable |");
    let _ = writeln!(out, "|---|---:|---:|---:|");
    let mut total = [0; 3];
    for (folder, c) in &by {
        let _ = writeln!(out, "| {folder} | {} | {} | {} |", c[0], c[1], c[2]);
        for i in 0..3 {
            total[i] += c[i];
        }
    }
    let _ = writeln!(out, "| **total** | **{}** | **{}** | **{}** |\n", total[0], total[1], total[2]);
    let failed: Vec<&Entry> = entries.iter().filter(|e| matches!(e.verdict, Verdict::Failed(_))).collect();
    if !failed.is_empty() {
        let _ = writeln!(out, "## Failures\n");
        for e in failed {
            if let Verdict::Failed(why) = &e.verdict {
                let yaml = e.yaml.as_deref().map(|y| format!(" (replay: `{y}`)")).unwrap_or_default();
                let _ = writeln!(out, "- `{}`{yaml}: {}", e.file, one_line(why));
            }
        }
        let _ = writeln!(out);
    }
    let na: Vec<&Entry> = entries.iter().filter(|e| matches!(e.verdict, Verdict::NotApplicable(_))).collect();
    if !na.is_empty() {
        let _ = writeln!(out, "## Not applicable\n");
        for e in na {
            if let Verdict::NotApplicable(why) = &e.verdict {
                let _ = writeln!(out, "- `{}`: {}", e.file, one_line(why));
            }
        }
    }
    out
}

/// `s` on one line, cut to 300 characters.
fn one_line(s: &str) -> String {
    let s: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    match s.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}
