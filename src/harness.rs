//! Checking another overlay implementation against the model, in process.
//!
//! A Rust implementation of overlay semantics (a FUSE overlay, a userspace VFS, a container
//! tool's layer logic) implements [`Backend`] over its own types and calls
//! [`check_scenario`] or [`check_files`]: every scenario is replayed on the model and on
//! the implementation, and each step's answer, the checked trees and the final trees are
//! compared. The model is the reference: it agrees with Linux on every scenario of
//! `spec/`, whose expectations were all recorded from a kernel.
//!
//! What an implementation cannot show (an API without errnos, modes or inode numbers) is
//! declared in [`Observes`] and masked on both sides before the comparison, so a
//! divergence is always one of meaning. What it cannot do at all (symlinks, xattrs, a mount
//! option, an operation) it refuses with [`BackendError::NotModelled`]; a scenario that
//! needs it is then [`Verdict::NotApplicable`], never a pass.
//!
//! # What each [`Backend`] method must do
//! - [`Command::Layer`]: build the named layer from its [`FlatLayer`] in the
//!   implementation's own on-disk form (whiteouts, opaque directories and redirects as it
//!   stores them). Refuse with `NotModelled` what it cannot express.
//! - [`Command::Mount`]: mount `lowers` (top-most first) and `upper`; answer
//!   [`Reply::MountRefused`] with the errno of a refused mount, `NotModelled` for options
//!   or layouts it does not support.
//! - [`Command::Op`]: carry out the operation on the merged view and answer its
//!   [`Reply::Outcome`] (the errno of a failure, the stat, data, entries...).
//! - [`Command::Unmount`], [`Command::Edit`]: as their documentation says.
//! - [`Command::DumpLayer`]: the named layer as it is now, read back *into overlay
//!   meaning*: the implementation's own whiteout or opaque encoding is translated to the
//!   kernel's (a whiteout as a character device 0/0, `trusted.overlay.opaque=y`), so the
//!   comparison is on meaning, not encoding.
//! - [`Command::DumpMerged`]: the whole merged view; [`crate::dump::dump_merged`] reads it
//!   through single operations and can be used as is.

use crate::backend::{Backend, BackendError, Command, MergedTree, ModelBackend, Reply};
use crate::errno::Errno;
#[cfg(all(feature = "proptest", target_os = "linux"))]
use crate::fuzz::{Case, GenConfig, RefState};
use crate::layer::{FileType, FlatEntry, FlatLayer, FlatNode};
use crate::ops::{Outcome, Stat};
use crate::overlay::Event;
use crate::persist::write_atomic;
use crate::scenario::{self, RunReport, Scenario};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
#[cfg(all(feature = "proptest", target_os = "linux"))]
use std::sync::atomic::{AtomicUsize, Ordering};
#[cfg(all(feature = "proptest", target_os = "linux"))]
use std::sync::Arc;

/// The lines of a tree diff a Markdown report shows per failure.
const DIFF_LINES_MAX: usize = 12;

/// What an implementation under test can show. A field set to `false` is masked on both
/// the model's and the implementation's answers before they are compared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observes {
    /// Which errno a failure gives. Without it, failures compare as failures: both sides'
    /// errnos read `EIO`.
    pub errno: bool,
    /// Permission bits in `stat` and in the trees.
    pub mode: bool,
    /// `st_uid` and `st_gid`.
    pub owner: bool,
    /// `st_nlink`.
    pub nlink: bool,
    /// Inode identity (`st_ino`, compared as labels by first sighting).
    pub ino: bool,
    /// A directory's `st_size` (tmpfs counts its entries; many implementations say 0).
    pub dir_size: bool,
    /// Xattrs a user sees (`listxattr`, `getxattr`, and the xattrs of the merged tree).
    /// The overlay's own markers in a read-back layer (`trusted.overlay.*`,
    /// `user.overlay.*`) are meaning and are always compared.
    pub xattrs: bool,
    /// The upper layer as left on disk (read back into overlay meaning).
    pub upper: bool,
}

impl Observes {
    /// Everything: what the kernel backend shows.
    pub const ALL: Observes = Observes {
        errno: true,
        mode: true,
        owner: true,
        nlink: true,
        ino: true,
        dir_size: true,
        xattrs: true,
        upper: true,
    };

    /// Everything but the fields named in `list` (comma-separated: `errno`, `mode`,
    /// `owner`, `nlink`, `ino`, `dir_size`, `xattrs`, `upper`), as `conform --ignore`
    /// takes them. An unknown name is an error that lists the known ones.
    pub fn ignoring(list: &str) -> Result<Observes, String> {
        let mut o = Observes::ALL;
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let field = match name {
                "errno" => &mut o.errno,
                "mode" => &mut o.mode,
                "owner" => &mut o.owner,
                "nlink" => &mut o.nlink,
                "ino" => &mut o.ino,
                "dir_size" => &mut o.dir_size,
                "xattrs" => &mut o.xattrs,
                "upper" => &mut o.upper,
                _ => {
                    return Err(format!(
                        "unknown field {name:?}: give errno, mode, owner, nlink, ino, dir_size, xattrs or upper"
                    ))
                }
            };
            *field = false;
        }
        Ok(o)
    }

    /// The masked fields, named, for reports (`errno, mode, ...`), or `none`.
    pub fn masked(&self) -> String {
        let fields = [
            ("errno", self.errno),
            ("mode", self.mode),
            ("owner", self.owner),
            ("nlink", self.nlink),
            ("ino", self.ino),
            ("dir_size", self.dir_size),
            ("xattrs", self.xattrs),
            ("upper", self.upper),
        ];
        let off: Vec<&str> = fields.iter().filter(|f| !f.1).map(|f| f.0).collect();
        if off.is_empty() {
            "none".to_owned()
        } else {
            off.join(", ")
        }
    }

    fn mask_errno(&self, e: Errno) -> Errno {
        if self.errno {
            e
        } else {
            Errno::EIO
        }
    }

    fn mask_stat(&self, st: &mut Stat) {
        if !self.mode {
            st.mode = 0;
        }
        if !self.owner {
            st.uid = 0;
            st.gid = 0;
        }
        if !self.nlink {
            st.nlink = 0;
        }
        if !self.ino {
            st.ino = 0;
        }
        if !self.dir_size && st.kind == FileType::Dir {
            st.size = 0;
        }
    }

    /// Masks one operation's outcome.
    pub fn mask_outcome(&self, o: &mut Outcome) {
        match o {
            Outcome::Err(e) => *e = self.mask_errno(*e),
            Outcome::Stat(st) => self.mask_stat(st),
            _ => {}
        }
    }

    /// Masks a merged view.
    pub fn mask_merged(&self, t: &mut MergedTree) {
        for entry in t.values_mut() {
            match &mut entry.stat {
                Ok(st) => self.mask_stat(st),
                Err(e) => *e = self.mask_errno(*e),
            }
            if !self.xattrs {
                entry.xattrs.clear();
            }
        }
    }

    /// Masks a layer read back from disk (the upper). Without [`Observes::upper`] the
    /// whole layer reads as empty.
    pub fn mask_layer(&self, l: &mut FlatLayer) {
        if !self.upper {
            l.entries.clear();
        }
        self.mask_node(&mut l.root);
        for e in &mut l.entries {
            if let FlatEntry::Node { node, .. } = e {
                self.mask_node(node);
            }
        }
    }

    fn mask_node(&self, n: &mut FlatNode) {
        if !self.mode {
            n.mode = 0;
        }
        if !self.owner {
            n.uid = 0;
            n.gid = 0;
        }
        if !self.xattrs {
            n.xattrs.retain(|k, _| k.starts_with("trusted.overlay.") || k.starts_with("user.overlay."));
        }
    }
}

/// A backend seen through [`Observes`]: its replies masked, and the first thing it could
/// not do remembered.
struct Masked<'a> {
    inner: &'a mut dyn Backend,
    observes: Observes,
    not_modelled: Option<String>,
    /// The first other error (a command the backend could not carry out at all: a layer
    /// edit that names a missing link target, say).
    failed: Option<String>,
}

impl Backend for Masked<'_> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn exec(&mut self, cmd: &Command) -> Result<Reply, BackendError> {
        let reply = self.inner.exec(cmd);
        self.masked(cmd.name(), reply)
    }

    fn try_unmount(&mut self) -> Result<Reply, BackendError> {
        let reply = self.inner.try_unmount();
        self.masked("unmount", reply)
    }

    fn events(&self) -> Vec<Event> {
        self.inner.events()
    }
}

impl Masked<'_> {
    /// The reply of command `name`, masked; a refusal or failure remembered.
    fn masked(&mut self, name: &str, reply: Result<Reply, BackendError>) -> Result<Reply, BackendError> {
        let mut reply = reply.inspect_err(|e| {
            if let BackendError::NotModelled(what) | BackendError::NotApplicable(what) = e {
                self.not_modelled.get_or_insert_with(|| format!("{name}: {what}"));
            } else {
                self.failed.get_or_insert_with(|| format!("{name}: {e}"));
            }
        })?;
        match &mut reply {
            Reply::Outcome(o) => self.observes.mask_outcome(o),
            Reply::MountRefused(e) => *e = self.observes.mask_errno(*e),
            Reply::CallRefused { errno, .. } => *errno = self.observes.mask_errno(*errno),
            Reply::Layer(l) => self.observes.mask_layer(l),
            Reply::Merged(t) => self.observes.mask_merged(t),
            Reply::Done | Reply::Index(_) => {}
        }
        Ok(reply)
    }
}

/// The result of checking one scenario.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Verdict {
    /// The implementation showed what the model shows, at every step and in the trees.
    Pass,
    /// It did not; the report lists each step where the two differ.
    Fail(RunReport),
    /// The scenario needs something the implementation does not do (what it refused).
    NotApplicable(String),
    /// The model itself could not run the scenario (a scenario outside the model's
    /// contract, or a harness failure); nothing was learnt about the implementation.
    Error(String),
}

impl Verdict {
    /// `pass`, `FAIL`, `n/a` or `error`.
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Fail(_) => "FAIL",
            Verdict::NotApplicable(_) => "n/a",
            Verdict::Error(_) => "error",
        }
    }
}

/// Replays `s` on the model and on `sut`, compares them under `observes`, and gives the
/// verdict. A scenario where `sut` refused something with [`BackendError::NotModelled`]
/// is not applicable, unless the two differed before the refusal (a failure, reported up
/// to the refusal). A scenario the model itself cannot run (it does not model it, or a
/// command fails on it as no valid scenario's can) is an [`Verdict::Error`]: nothing is
/// learnt about `sut`.
pub fn check_scenario(s: &Scenario, sut: &mut dyn Backend, observes: Observes) -> Verdict {
    let mut model = ModelBackend::new();
    let mut reference = Masked { inner: &mut model, observes, not_modelled: None, failed: None };
    let mut tested = Masked { inner: sut, observes, not_modelled: None, failed: None };
    let (report, stop) = scenario::differences_stopped(s, &mut reference, &mut tested);
    if let Some(what) = reference.not_modelled {
        return Verdict::Error(format!("the model does not model it: {what}"));
    }
    // A command the model itself cannot carry out (a shrunk case whose offline edit links to
    // a name an earlier step no longer makes, say) makes the scenario say nothing about the
    // implementation, whatever the implementation did.
    if let Some(what) = reference.failed {
        return Verdict::Error(format!("the model cannot run it: {what}"));
    }
    verdict_after_refusal(report, tested.not_modelled, stop)
}

/// The verdict of a replay whose system under test may have refused a command (`refused`:
/// what, when it answered [`BackendError::NotModelled`] or [`BackendError::NotApplicable`])
/// and stopped there (`stop`, in the order of [`scenario::failure_position`]). A refusal
/// makes the scenario not applicable, unless something failed before the refusal: a
/// failure, reported up to the refusal. The refusal is known by the error's kind, never by
/// the wording of a message.
pub(crate) fn verdict_after_refusal(mut report: RunReport, refused: Option<String>, stop: Option<usize>) -> Verdict {
    if let Some(what) = refused {
        let stop = stop.unwrap_or(usize::MAX);
        report.failures.retain(|f| scenario::failure_position(f) < stop);
        if report.failures.is_empty() {
            return Verdict::NotApplicable(what);
        }
        return Verdict::Fail(report);
    }
    if report.failures.is_empty() {
        Verdict::Pass
    } else {
        Verdict::Fail(report)
    }
}

/// A backend whose first refusal ([`BackendError::NotModelled`] or
/// [`BackendError::NotApplicable`]) is remembered, for [`verdict_after_refusal`] (used by
/// `conform`, which needs the `proptest` feature).
#[cfg(all(feature = "proptest", target_os = "linux"))]
pub(crate) struct Refusals<'a> {
    /// The backend.
    pub inner: &'a mut dyn Backend,
    /// The first refusal: the command's name and what was refused.
    pub refused: Option<String>,
}

#[cfg(all(feature = "proptest", target_os = "linux"))]
impl Backend for Refusals<'_> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn exec(&mut self, cmd: &Command) -> Result<Reply, BackendError> {
        self.inner.exec(cmd).inspect_err(|e| {
            if let BackendError::NotModelled(what) | BackendError::NotApplicable(what) = e {
                self.refused.get_or_insert_with(|| format!("{}: {what}", cmd.name()));
            }
        })
    }

    fn try_unmount(&mut self) -> Result<Reply, BackendError> {
        self.inner.try_unmount().inspect_err(|e| {
            if let BackendError::NotModelled(what) | BackendError::NotApplicable(what) = e {
                self.refused.get_or_insert_with(|| format!("unmount: {what}"));
            }
        })
    }

    fn events(&self) -> Vec<Event> {
        self.inner.events()
    }
}

/// One scenario's verdict in a [`Conformance`] report.
#[derive(Clone, Debug)]
pub struct Checked {
    /// The scenario file, as given.
    pub file: PathBuf,
    /// The rule folder: the file's directory, relative to the root of the walk.
    pub folder: String,
    /// The scenario, when it loaded.
    pub scenario: Option<Scenario>,
    /// The verdict.
    pub verdict: Verdict,
}

/// A conformance report: every scenario of a suite, checked on one implementation.
#[derive(Clone, Debug)]
pub struct Conformance {
    /// The implementation's name, for the report's title.
    pub implementation: String,
    /// What it shows.
    pub observes: Observes,
    /// One entry per scenario file, in walk order.
    pub results: Vec<Checked>,
}

/// Checks every scenario found under `paths` (files or directories, as `ovlsim run` finds
/// them) on a fresh backend from `make`, one per scenario. A file that does not load is an
/// [`Verdict::Error`], as is a directory that cannot be walked.
pub fn check_files(
    implementation: &str,
    paths: &[PathBuf],
    observes: Observes,
    mut make: impl FnMut() -> Box<dyn Backend>,
) -> std::io::Result<Conformance> {
    let found = scenario::find_files(paths)?;
    let mut results = Vec::new();
    for (path, why) in &found.problems {
        results.push(Checked {
            file: path.clone(),
            folder: rule_folder(paths, path),
            scenario: None,
            verdict: Verdict::Error(why.clone()),
        });
    }
    for file in &found.files {
        let folder = rule_folder(paths, file);
        let checked = match scenario::load(file) {
            Ok(s) => {
                let verdict = check_scenario(&s, make().as_mut(), observes);
                Checked { file: file.clone(), folder, scenario: Some(s), verdict }
            }
            Err(e) => Checked { file: file.clone(), folder, scenario: None, verdict: Verdict::Error(e.to_string()) },
        };
        results.push(checked);
    }
    Ok(Conformance { implementation: implementation.to_owned(), observes, results })
}

/// The folder of `file` relative to the root it was found under (`copy_up` for
/// `spec/copy_up/x.yaml` found from `spec/`), or `.` at the root.
fn rule_folder(roots: &[PathBuf], file: &Path) -> String {
    let dir = file.parent().unwrap_or(Path::new(""));
    for root in roots {
        if let Ok(rel) = dir.strip_prefix(root) {
            let s = rel.to_string_lossy().into_owned();
            return if s.is_empty() { ".".to_owned() } else { s };
        }
    }
    dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| ".".to_owned())
}

/// The smallest prefix of `s` that still shows the first divergence of `report`, with
/// every expectation and the final trees recorded from the model: a scenario that
/// passes on the model (and on the kernel) and fails on the implementation. Steps after
/// the first divergent one are dropped; a divergence in the setup or the final trees
/// keeps every step.
pub fn replayable(s: &Scenario, report: &RunReport) -> Result<Scenario, String> {
    let mut out = s.clone();
    if let Some(first) = report.failures.iter().filter_map(|f| f.step.as_ref()).map(|r| r.index).min() {
        if report.failures.iter().all(|f| f.step.is_some()) {
            out.steps.truncate(first);
        }
    }
    scenario::record(&mut out, &mut ModelBackend::new()).map_err(|e| format!("recording on the model: {e}"))?;
    Ok(out)
}

impl Conformance {
    /// Counts per verdict: (pass, fail, not applicable, error).
    pub fn counts(&self) -> (usize, usize, usize, usize) {
        let mut c = (0, 0, 0, 0);
        for r in &self.results {
            match r.verdict {
                Verdict::Pass => c.0 += 1,
                Verdict::Fail(_) => c.1 += 1,
                Verdict::NotApplicable(_) => c.2 += 1,
                Verdict::Error(_) => c.3 += 1,
            }
        }
        c
    }

    /// The files that failed, as given, sorted.
    pub fn failing(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .results
            .iter()
            .filter(|r| matches!(r.verdict, Verdict::Fail(_)))
            .map(|r| r.file.to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// The report as Markdown: a table by rule folder, then each failure with the step
    /// where the implementation first differs, and what was not applicable and why.
    pub fn to_markdown(&self) -> String {
        let mut folders: BTreeMap<&str, (usize, usize, usize, usize)> = BTreeMap::new();
        for r in &self.results {
            let c = folders.entry(&r.folder).or_default();
            match r.verdict {
                Verdict::Pass => c.0 += 1,
                Verdict::Fail(_) => c.1 += 1,
                Verdict::NotApplicable(_) => c.2 += 1,
                Verdict::Error(_) => c.3 += 1,
            }
        }
        let (p, f, n, e) = self.counts();
        let mut md = String::new();
        let _ = writeln!(md, "## {}\n", self.implementation);
        let _ = writeln!(
            md,
            "{} scenarios: {p} passed, {f} failed, {n} not applicable, {e} errors. Not observed (masked on both sides): {}.{}\n",
            self.results.len(),
            self.observes.masked(),
            if self.observes.errno { "" } else { " Without errnos, every failure reads EIO on both sides." }
        );
        let _ = writeln!(md, "| rule folder | passed | failed | not applicable | errors |");
        let _ = writeln!(md, "|---|---:|---:|---:|---:|");
        for (folder, c) in &folders {
            let _ = writeln!(md, "| {folder} | {} | {} | {} | {} |", c.0, c.1, c.2, c.3);
        }
        let fails: Vec<&Checked> = self.results.iter().filter(|r| matches!(r.verdict, Verdict::Fail(_))).collect();
        if !fails.is_empty() {
            let _ = writeln!(md, "\n### Failures (first divergence of each)\n");
            for r in fails {
                if let Verdict::Fail(report) = &r.verdict {
                    let first = &report.failures[0];
                    let msg = first.message.replace('|', "\\|");
                    let _ = writeln!(md, "- `{}`: {}: {}", r.file.display(), first.what, msg);
                    if !first.diff.is_empty() {
                        let _ = writeln!(md, "  ```diff");
                        for line in first.diff.iter().take(DIFF_LINES_MAX) {
                            let _ = writeln!(md, "  {line}");
                        }
                        if first.diff.len() > DIFF_LINES_MAX {
                            let _ = writeln!(md, "  ... ({} more lines)", first.diff.len() - DIFF_LINES_MAX);
                        }
                        let _ = writeln!(md, "  ```");
                    }
                }
            }
        }
        let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
        for r in &self.results {
            if let Verdict::NotApplicable(why) | Verdict::Error(why) = &r.verdict {
                *reasons.entry(format!("{}: {why}", r.verdict.label())).or_default() += 1;
            }
        }
        if !reasons.is_empty() {
            let _ = writeln!(md, "\n### Not applicable or not run, by reason\n");
            for (why, k) in reasons {
                let _ = writeln!(md, "- {k} × {why}");
            }
        }
        md
    }

    /// Writes each failure's [`replayable`] scenario to `dir/<folder>/<file name>`, and
    /// `dir/failing.txt` (the failing files, one per line). Every file is written through
    /// [`write_atomic`]. Gives the paths written.
    pub fn write_failures(&self, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
        let mut written = Vec::new();
        for r in &self.results {
            let (Verdict::Fail(report), Some(s)) = (&r.verdict, &r.scenario) else { continue };
            let yaml = match replayable(s, report) {
                Ok(min) => min.to_yaml(),
                Err(e) => return Err(std::io::Error::other(format!("{}: {e}", r.file.display()))),
            };
            let name = r.file.file_name().map(PathBuf::from).unwrap_or_else(|| PathBuf::from("scenario.yaml"));
            let path = dir.join(&r.folder).join(name);
            std::fs::create_dir_all(path.parent().unwrap_or(dir))?;
            write_atomic(&path, yaml.as_bytes())?;
            written.push(path);
        }
        let mut list = self.failing().join("\n");
        list.push('\n');
        std::fs::create_dir_all(dir)?;
        let list_path = dir.join("failing.txt");
        write_atomic(&list_path, list.as_bytes())?;
        written.push(list_path);
        Ok(written)
    }
}

/// What [`fuzz_backend`] found.
#[cfg(all(feature = "proptest", target_os = "linux"))]
#[derive(Clone, Debug, Default)]
pub struct FuzzSummary {
    /// The seed the cases were drawn from.
    pub seed: u64,
    /// Cases drawn.
    pub cases: u64,
    /// Cases where the implementation showed what the model shows.
    pub passed: u64,
    /// Cases the implementation refused part of (a `NotModelled`): with a configuration
    /// that matches the implementation, none.
    pub not_applicable: u64,
    /// Cases the model itself did not run (outside its contract); nothing learnt.
    pub errors: u64,
    /// Each failing case, shrunk, with the report of its first divergences: the scenario
    /// as drawn (no expectations; [`replayable`] records them from the model).
    pub failures: Vec<(Scenario, RunReport)>,
}

/// How long [`fuzz_backend`] shrinks one failing case with [`crate::fuzz::shrink::minimize`].
#[cfg(all(feature = "proptest", target_os = "linux"))]
const SHRINK_BUDGET: std::time::Duration = std::time::Duration::from_secs(10);

/// The kind of a failing report's first divergence, which a shrunk case must keep: the
/// operation (or the tree that differs) and the shape of each side's answer (`ok`, the
/// errno, or `a result`: a stat, data, a listing), without paths or step numbers, which
/// shrinking changes.
#[cfg(all(feature = "proptest", target_os = "linux"))]
fn divergence_kind(report: &RunReport) -> String {
    let Some(first) = report.failures.first() else {
        return String::new();
    };
    let op = first.what.split_whitespace().next().unwrap_or("?");
    let shape = |a: &Option<String>| {
        match a.as_deref() {
            None => "none",
            Some("ok") => "ok",
            Some(t) if t.len() > 1 && t.starts_with('E') && t.chars().all(|c| c.is_ascii_uppercase()) => t,
            Some(_) => "a result",
        }
        .to_owned()
    };
    format!("{op}: {} / {}", shape(&first.expected), shape(&first.actual))
}

/// Draws `cases` random cases by `config` (the fuzzer's own generator, with what the
/// implementation lacks switched off), checks each on the model and on a fresh backend
/// from `make` under `observes`, and shrinks every failing case to a small one before
/// going on. The same `seed` and `config` draw the same cases.
///
/// Errors: a configuration that [`GenConfig::check`] refuses.
///
/// Feature `proptest` (Linux).
#[cfg(all(feature = "proptest", target_os = "linux"))]
pub fn fuzz_backend(
    config: &GenConfig,
    observes: Observes,
    cases: u64,
    seed: u64,
    steps_max: usize,
    mut make: impl FnMut() -> Box<dyn Backend>,
) -> Result<FuzzSummary, String> {
    use crate::fuzz::machine::ModelMachine;
    use proptest::strategy::{Strategy, ValueTree};
    use proptest::test_runner::{Config, TestRunner};
    use proptest_state_machine::ReferenceStateMachine;

    config.check()?;
    let mut summary = FuzzSummary { seed, ..FuzzSummary::default() };
    crate::fuzz::with_config(config.clone(), || {
        let strategy = ModelMachine::sequential_strategy(1..=steps_max.max(1));
        let mut runner = TestRunner::new_with_rng(Config::default(), crate::fuzz::rng_for(seed));
        for i in 0..cases {
            let mut tree = strategy.new_tree(&mut runner).map_err(|e| format!("drawing case {i}: {e}"))?;
            let name = format!("fuzz-{seed}-{i}");
            let mut check_case = |case: &Case| {
                let commands = crate::fuzz::report::commands_until(case, None);
                let rule =
                    format!("Drawn by ovlsim's generator (seed {seed}, case {i}) and checked against the model.");
                let s = Scenario::from_commands(&name, &rule, &commands);
                let verdict = check_scenario(&s, make().as_mut(), observes);
                (s, verdict)
            };
            let as_case = |(state, steps, seen): (RefState, Vec<Command>, Option<Arc<AtomicUsize>>)| {
                // Every transition is run (the comparison is of whole replays), so the
                // shrinker may delete any of them.
                if let Some(seen) = seen {
                    seen.store(steps.len(), Ordering::SeqCst);
                }
                Case { start: (*state.start).clone(), steps }
            };
            summary.cases += 1;
            let drawn = as_case(tree.current());
            match check_case(&drawn) {
                (_, Verdict::Pass) => summary.passed += 1,
                (_, Verdict::NotApplicable(_)) => summary.not_applicable += 1,
                (_, Verdict::Error(_)) => summary.errors += 1,
                (_, Verdict::Fail(first)) => {
                    // Shrink as proptest does (it deletes steps), keeping a simpler case
                    // while it still fails; then as the fuzzer does (`shrink::minimize`:
                    // layers, entries, options, flags), while it fails the same way.
                    let kind = divergence_kind(&first);
                    let mut case = drawn;
                    while tree.simplify() {
                        let current = as_case(tree.current());
                        match check_case(&current) {
                            (_, Verdict::Fail(r)) if divergence_kind(&r) == kind => case = current,
                            _ => {
                                if !tree.complicate() {
                                    break;
                                }
                            }
                        }
                    }
                    let key = |c: &Case| match check_case(c) {
                        (_, Verdict::Fail(r)) => Some(divergence_kind(&r)),
                        _ => None,
                    };
                    let small = crate::fuzz::shrink::minimize(&case, key, SHRINK_BUDGET).0;
                    match check_case(&small) {
                        (s, Verdict::Fail(report)) => summary.failures.push((s, report)),
                        // `minimize` keeps only failing cases; a backend that answers
                        // otherwise on a second run is itself a finding, kept as drawn.
                        _ => match check_case(&case) {
                            (s, Verdict::Fail(report)) => summary.failures.push((s, report)),
                            _ => summary.errors += 1,
                        },
                    }
                }
            }
        }
        Ok::<(), String>(())
    })?;
    Ok(summary)
}
