//! Replaying a scenario on a backend ([`execute`]), checking what it shows against the
//! expectations ([`run`]) and against another backend ([`run_both`]).

use super::diff::diff;
use super::emit::{one_line, Y};
use super::locate::{Pos, Seg};
use super::tree::{flat_from_merged, tree_from_flat, tree_from_merged, tree_lines, FlatTree, TreeContext, TreeNode};
use super::write::{expect_y, stat_y, type_word, value_y};
use super::{Action, Check, Expect, MountSpec, Scenario, ScenarioError, StatExpect, Step, StepRef};
use crate::backend::{Backend, Command, MergedTree, Reply};
use crate::errno::Errno;
use crate::layer::{FileType, FlatLayer};
use crate::ops::{Outcome, Stat};
use crate::overlay::Event;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

// ---------------------------------------------------------------------------------------
// Execution.

/// What a backend showed for one step.
#[derive(Clone, Debug)]
pub(crate) enum Obs {
    /// An operation's outcome.
    Outcome(Outcome),
    /// A mount: done, or refused with an errno.
    Mount(Result<(), Errno>),
    /// An unmount or an edit, carried out.
    Done,
    /// The trees a check asked for.
    Trees { merged: Option<MergedTree>, upper: Option<FlatLayer> },
    /// An unmount refused with an errno (EBUSY while handles are open): still mounted.
    Refused(Errno),
    /// A mount with the new mount API refused at this `fsconfig(2)` call (0 the first).
    CallRefused(usize, Errno),
}

/// One step's observation, or the backend failure that stopped the run there.
#[derive(Clone, Debug)]
pub(crate) struct StepObs {
    pub obs: Result<Obs, String>,
    pub events: Vec<Event>,
}

/// The final merged view and upper layer, each if read.
pub(crate) type FinalTrees = (Option<MergedTree>, Option<FlatLayer>);

/// Everything a backend showed over one replay.
#[derive(Clone, Debug)]
pub(crate) struct Trace {
    pub backend: String,
    /// Creating the layers and the initial mount.
    pub setup: Result<(), SetupError>,
    /// One entry per step run; the run stops after the first `Err`.
    pub steps: Vec<StepObs>,
    /// The final trees, when the run got to the end.
    pub final_trees: Option<Result<FinalTrees, String>>,
    /// The upper's workdir index at the end, when asked for and the run got to the end
    /// (`None` inside: no `index/`).
    pub final_index: Option<Result<Option<BTreeMap<String, String>>, String>>,
}

/// Why the setup failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SetupError {
    /// The initial mount was refused with this errno.
    Refused(Errno),
    /// Something else failed.
    Failed(String),
}

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetupError::Refused(e) => write!(f, "the initial mount was refused with {e}"),
            SetupError::Failed(m) => f.write_str(m),
        }
    }
}

/// Which final trees to read.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FinalWant {
    pub merged: bool,
    pub upper: bool,
    /// The upper's workdir index.
    pub index: bool,
    /// Read what can be read and skip the rest (recording), instead of failing.
    pub lenient: bool,
}

impl FinalWant {
    /// The trees the scenario's `final:` checks.
    pub fn of(s: &Scenario) -> FinalWant {
        FinalWant {
            merged: s.final_check.as_ref().is_some_and(|c| c.merged.is_some()),
            upper: s.final_check.as_ref().is_some_and(|c| c.upper.is_some()),
            index: s.final_check.as_ref().is_some_and(|c| c.index.is_some()),
            lenient: false,
        }
    }

    /// Every tree there is.
    pub fn all() -> FinalWant {
        FinalWant { merged: true, upper: true, index: true, lenient: true }
    }
}

/// What an observer sees after each step.
pub(crate) struct StepView<'a, B: ?Sized> {
    pub index: usize,
    pub step: &'a Step,
    pub obs: &'a StepObs,
    pub backend: &'a B,
    pub spec: Option<&'a MountSpec>,
    pub mounted: bool,
}

fn exec<B: Backend + ?Sized>(b: &mut B, cmd: &Command) -> Result<Reply, String> {
    b.exec(cmd).map_err(|e| e.to_string())
}

fn mount_cmd(m: &MountSpec) -> Command {
    if let Some(calls) = &m.fsconfig {
        return Command::MountData { data: String::new(), fsconfig: Some(calls.clone()) };
    }
    if let Some(data) = &m.data {
        return Command::MountData { data: data.clone(), fsconfig: None };
    }
    Command::Mount { lowers: m.lowers.clone(), upper: m.upper.clone(), options: m.options }
}

fn protocol(cmd: &str, r: &Reply) -> String {
    format!("backend protocol: {cmd} answered {r:?}")
}

fn expect_done<B: Backend + ?Sized>(b: &mut B, cmd: &Command, what: &str) -> Result<(), String> {
    match exec(b, cmd)? {
        Reply::Done => Ok(()),
        other => Err(protocol(what, &other)),
    }
}

/// Creates a layer ([`Command::Layer`]) and expects it done.
fn expect_layer_done<B: Backend + ?Sized>(b: &mut B, name: &str, content: &FlatLayer) -> Result<(), String> {
    match b.exec_layer(name, content).map_err(|e| e.to_string())? {
        Reply::Done => Ok(()),
        other => Err(protocol("Layer", &other)),
    }
}

fn dump_merged<B: Backend + ?Sized>(b: &mut B) -> Result<MergedTree, String> {
    match exec(b, &Command::DumpMerged)? {
        Reply::Merged(t) => Ok(t),
        other => Err(protocol("DumpMerged", &other)),
    }
}

fn dump_layer<B: Backend + ?Sized>(b: &mut B, name: &str) -> Result<FlatLayer, String> {
    match exec(b, &Command::DumpLayer { name: name.to_owned() })? {
        Reply::Layer(l) => Ok(l),
        other => Err(protocol("DumpLayer", &other)),
    }
}

/// Replays `s` on `b`, calling `on_step` after each step. The overlay is unmounted at the
/// end whatever happens.
pub(crate) fn execute<B: Backend + ?Sized>(
    s: &Scenario,
    b: &mut B,
    want: FinalWant,
    mut on_step: impl FnMut(StepView<'_, B>),
) -> Trace {
    let mut trace =
        Trace { backend: b.name().to_owned(), setup: Ok(()), steps: Vec::new(), final_trees: None, final_index: None };
    for (name, content) in &s.layers {
        if let Err(e) = expect_layer_done(b, name, content) {
            trace.setup = Err(SetupError::Failed(format!("creating layer {name}: {e}")));
            return trace;
        }
    }
    let mut spec = s.mount.clone();
    let mut mounted = false;
    if let Some(m) = &spec {
        match exec(b, &mount_cmd(m)) {
            Ok(Reply::Done) => mounted = true,
            Ok(Reply::MountRefused(e) | Reply::CallRefused { errno: e, .. }) => {
                trace.setup = Err(SetupError::Refused(e));
                return trace;
            }
            Ok(other) => {
                trace.setup = Err(SetupError::Failed(protocol("Mount", &other)));
                return trace;
            }
            Err(e) => {
                trace.setup = Err(SetupError::Failed(format!("the initial mount: {e}")));
                return trace;
            }
        }
    }
    let mut stopped = false;
    for (i, step) in s.steps.iter().enumerate() {
        let obs = run_step(b, step, s.umask, &mut spec, &mut mounted);
        let so = StepObs { events: b.events(), obs };
        stopped = so.obs.is_err();
        trace.steps.push(so);
        on_step(StepView {
            index: i,
            step,
            obs: trace.steps.last().expect("just pushed"),
            backend: b,
            spec: spec.as_ref(),
            mounted,
        });
        if stopped {
            break;
        }
    }
    if !stopped {
        trace.final_trees = Some(final_trees(b, want, &spec, &mut mounted));
        if want.index {
            trace.final_index = final_index(b, want.lenient, &spec, &mut mounted);
        }
    }
    if mounted {
        let _ = b.exec(&Command::Unmount);
    }
    trace
}

fn run_step<B: Backend + ?Sized>(
    b: &mut B,
    step: &Step,
    umask: Option<u32>,
    spec: &mut Option<MountSpec>,
    mounted: &mut bool,
) -> Result<Obs, String> {
    let op_cmd = |op: &crate::ops::Op| match step.cred(umask) {
        Some(cred) => Command::OpAs { cred, op: op.clone() },
        None => Command::Op(op.clone()),
    };
    match &step.action {
        Action::Op(op) => match exec(b, &op_cmd(op))? {
            Reply::Outcome(o) => Ok(Obs::Outcome(o)),
            other => Err(protocol("Op", &other)),
        },
        Action::Mount(change) => {
            let m = change.apply(spec.as_ref())?;
            let r = exec(b, &mount_cmd(&m))?;
            *spec = Some(m);
            match r {
                Reply::Done => {
                    *mounted = true;
                    Ok(Obs::Mount(Ok(())))
                }
                Reply::MountRefused(e) => {
                    *mounted = false;
                    Ok(Obs::Mount(Err(e)))
                }
                Reply::CallRefused { call, errno } => {
                    *mounted = false;
                    Ok(Obs::CallRefused(call, errno))
                }
                other => Err(protocol("Mount", &other)),
            }
        }
        Action::Unmount => match b.try_unmount() {
            Ok(Reply::Done) => {
                *mounted = false;
                Ok(Obs::Done)
            }
            Ok(Reply::MountRefused(e)) => Ok(Obs::Refused(e)),
            Ok(other) => Err(protocol("Unmount", &other)),
            Err(e) => Err(e.to_string()),
        },
        Action::DropCaches => {
            expect_done(b, &Command::DropCaches, "DropCaches")?;
            Ok(Obs::Done)
        }
        Action::Edit { layer, replace, edits } => {
            if let Some(content) = replace {
                expect_layer_done(b, layer, content)?;
            }
            for e in edits {
                let cmd = Command::Edit { layer: layer.clone(), edit: e.clone() };
                expect_done(b, &cmd, "Edit")?;
            }
            Ok(Obs::Done)
        }
        Action::Check(c) => {
            let merged = match c.merged {
                Some(_) => Some(dump_merged(b)?),
                None => None,
            };
            let upper = match c.upper {
                Some(_) => Some(read_upper(b, spec.as_ref(), *mounted)?),
                None => None,
            };
            Ok(Obs::Trees { merged, upper })
        }
    }
}

/// The upper layer as on disk. While mounted, the overlay is unmounted to read it and
/// mounted again with the same layers and options.
fn read_upper<B: Backend + ?Sized>(b: &mut B, spec: Option<&MountSpec>, mounted: bool) -> Result<FlatLayer, String> {
    let m = spec.ok_or("no mount has named an upper layer")?;
    let name = m.upper.as_deref().ok_or("the mount has no upper layer")?;
    if !mounted {
        return dump_layer(b, name);
    }
    expect_done(b, &Command::Unmount, "Unmount")?;
    let layer = dump_layer(b, name)?;
    match exec(b, &mount_cmd(m))? {
        Reply::Done => Ok(layer),
        Reply::MountRefused(e) => Err(format!("mounting again after reading the upper layer was refused with {e}")),
        other => Err(protocol("Mount", &other)),
    }
}

fn final_trees<B: Backend + ?Sized>(
    b: &mut B,
    want: FinalWant,
    spec: &Option<MountSpec>,
    mounted: &mut bool,
) -> Result<FinalTrees, String> {
    let merged = if want.merged {
        if *mounted {
            Some(dump_merged(b)?)
        } else if want.lenient {
            None
        } else {
            return Err("the overlay is not mounted at the end".into());
        }
    } else {
        None
    };
    let upper_name = spec.as_ref().and_then(|m| m.upper.clone());
    let upper = match (want.upper, upper_name) {
        (true, Some(name)) => {
            if *mounted {
                expect_done(b, &Command::Unmount, "Unmount")?;
                *mounted = false;
            }
            Some(dump_layer(b, &name)?)
        }
        (true, None) if !want.lenient => {
            return Err("the mount has no upper layer".into());
        }
        _ => None,
    };
    Ok((merged, upper))
}

/// The upper's workdir index at the end ([`Command::DumpLayer`] of `NAME/index`), the
/// overlay unmounted first; `None` when lenient and there is no upper.
fn final_index<B: Backend + ?Sized>(
    b: &mut B,
    lenient: bool,
    spec: &Option<MountSpec>,
    mounted: &mut bool,
) -> Option<Result<Option<BTreeMap<String, String>>, String>> {
    let Some(name) = spec.as_ref().and_then(|m| m.upper.clone()) else {
        return (!lenient).then(|| Err("the mount has no upper layer".into()));
    };
    let read = |b: &mut B, mounted: &mut bool| {
        if *mounted {
            expect_done(b, &Command::Unmount, "Unmount")?;
            *mounted = false;
        }
        let cmd = Command::DumpLayer { name: format!("{name}{}", crate::backend::INDEX_SUFFIX) };
        match exec(b, &cmd)? {
            Reply::Index(i) => Ok(i),
            other => Err(protocol("DumpLayer", &other)),
        }
    };
    Some(read(b, mounted))
}

// ---------------------------------------------------------------------------------------
// Inode labels.

/// Expected labels bound to actual inode numbers, one to one, by first sighting.
#[derive(Clone, Debug, Default)]
pub(crate) struct Labels {
    by_label: HashMap<String, u64>,
    by_ino: HashMap<u64, String>,
    /// Names for display only (`#1`, `#2`, ...) of inodes no label is bound to.
    unlabeled: HashMap<u64, String>,
}

impl Labels {
    /// Whether label `l` may be inode `ino`, binding both if neither is bound yet.
    pub fn check(&mut self, l: &str, ino: u64) -> bool {
        match (self.by_label.get(l), self.by_ino.get(&ino)) {
            (Some(i), _) => *i == ino,
            (None, Some(_)) => false,
            (None, None) => {
                self.by_label.insert(l.to_owned(), ino);
                self.by_ino.insert(ino, l.to_owned());
                true
            }
        }
    }

    /// How to show inode `ino`: its label, or that it has none (its name from
    /// [`Labels::name_unlabeled`], else `#` and its number).
    pub fn show(&self, ino: u64) -> String {
        match self.by_ino.get(&ino).or_else(|| self.unlabeled.get(&ino)) {
            Some(l) => l.clone(),
            None => format!("#{ino}"),
        }
    }

    /// Gives inode `ino`, if no label is bound to it, the next display name `#1`, `#2`, ...
    /// (no label is bound to it by that: [`Labels::check`] is unchanged).
    pub fn name_unlabeled(&mut self, ino: u64) {
        if !self.by_ino.contains_key(&ino) && !self.unlabeled.contains_key(&ino) {
            let name = format!("#{}", self.unlabeled.len() + 1);
            self.unlabeled.insert(ino, name);
        }
    }
}

/// Labels given by first sighting: `a`, `b`, ..., `z`, `aa`, ...
#[derive(Clone, Debug, Default)]
pub(crate) struct Labeler {
    seen: HashMap<u64, String>,
}

/// The `n`th label (from 0): `a`..`z`, `aa`..
pub(crate) fn nth_label(mut n: usize) -> String {
    let mut s = Vec::new();
    loop {
        s.push(b'a' + (n % 26) as u8);
        if n < 26 {
            break;
        }
        n = n / 26 - 1;
    }
    s.reverse();
    String::from_utf8(s).expect("ASCII")
}

impl Labeler {
    /// The label of `ino`, giving it the next one if it is new.
    pub fn label(&mut self, ino: u64) -> String {
        let n = self.seen.len();
        self.seen.entry(ino).or_insert_with(|| nth_label(n)).clone()
    }
}

// ---------------------------------------------------------------------------------------
// Rendering observations.

/// A stat in full, as an expectation would spell it.
pub(crate) fn full_stat(st: &Stat, ino: Option<String>) -> StatExpect {
    StatExpect {
        kind: Some(st.kind),
        mode: Some(st.mode),
        size: Some(st.size),
        nlink: Some(st.nlink),
        uid: Some(st.uid),
        gid: Some(st.gid),
        rdev: matches!(st.kind, FileType::Char | FileType::Block).then_some(st.rdev),
        ino,
    }
}

/// An outcome in the notation of expectations.
pub(crate) fn outcome_y(o: &Outcome, ino: &mut dyn FnMut(u64) -> Option<String>) -> Y {
    match o {
        Outcome::Ok => Y::Raw("ok".into()),
        Outcome::Err(e) => Y::Raw(e.name().into()),
        Outcome::Stat(st) => stat_y(&full_stat(st, ino(st.ino))),
        Outcome::Data(d) | Outcome::Xattr(d) => value_y(d),
        Outcome::Digest(d) => super::write::digest_y(d),
        Outcome::Target(t) => value_y(t.as_bytes()),
        Outcome::Entries(m) if m.is_empty() => Y::seq(Vec::new()),
        Outcome::Entries(m) => Y::map(m.iter().map(|(n, t)| (n.clone(), Y::Raw(type_word(*t).into()))).collect()),
        Outcome::XattrNames(n) => Y::seq(n.iter().map(|x| Y::s(x.clone())).collect()),
    }
}

// ---------------------------------------------------------------------------------------
// Reports.

/// One thing that went wrong in a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Failure {
    /// The backend it happened on (`model`, `kernel`), or `model/kernel` for a divergence.
    pub backend: String,
    /// The step, if the failure is in one.
    pub step: Option<StepRef>,
    /// What failed: the step's summary (`rename /a /b`), `setup`, `final merged`, ...
    pub what: String,
    /// Where in the file.
    pub pos: Option<Pos>,
    /// What is wrong, in one line.
    pub message: String,
    /// The expected result, in the notation, when there is one.
    pub expected: Option<String>,
    /// The actual result, in the notation, when there is one.
    pub actual: Option<String>,
    /// A line diff of trees (`-` expected, `+` actual), when trees differ.
    pub diff: Vec<String>,
}

/// The result of replaying one scenario.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RunReport {
    /// The scenario's file.
    pub file: String,
    /// The scenario's name.
    pub name: String,
    /// The backend(s): `model`, `kernel` or `model+kernel`.
    pub backend: String,
    /// How many steps the scenario has.
    pub steps_total: usize,
    /// How many steps were run (a backend failure stops the run).
    pub steps_run: usize,
    /// Everything that went wrong; empty when the scenario passed.
    pub failures: Vec<Failure>,
}

impl RunReport {
    /// Whether every expectation held (and, for two backends, they agreed).
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// A failed report for a scenario that could not be loaded.
    pub fn from_error(file: &str, backend: &str, err: &ScenarioError) -> RunReport {
        RunReport {
            file: file.to_owned(),
            name: String::new(),
            backend: backend.to_owned(),
            steps_total: 0,
            steps_run: 0,
            failures: err
                .problems
                .iter()
                .map(|p| Failure {
                    backend: backend.to_owned(),
                    step: p.step.clone(),
                    what: "load".into(),
                    pos: Some(p.pos),
                    message: p.message.clone(),
                    expected: None,
                    actual: None,
                    diff: Vec::new(),
                })
                .collect(),
        }
    }

    /// The failures, one block each, as the CLI prints them.
    pub fn details(&self, max: usize) -> String {
        let mut out = String::new();
        for f in self.failures.iter().take(max) {
            out.push_str(&format_failure(&self.file, f, self.backend.contains('+')));
        }
        if self.failures.len() > max {
            out.push_str(&format!("  ... and {} more failures\n", self.failures.len() - max));
        }
        out
    }
}

fn format_failure(file: &str, f: &Failure, tag: bool) -> String {
    let mut out = String::from("  ");
    match f.pos {
        Some(p) if f.what == "load" => out.push_str(&format!("{file}:{p}: ")),
        Some(p) => out.push_str(&format!("{file}:{}: ", p.line)),
        None => out.push_str(&format!("{file}: ")),
    }
    if tag && f.what != "load" {
        out.push_str(&format!("[{}] ", f.backend));
    }
    match &f.step {
        Some(s) if f.what == "load" => out.push_str(&format!("{s}: ")),
        Some(s) => out.push_str(&format!("step {} ({}): ", s.index, f.what)),
        None if f.what != "load" => out.push_str(&format!("{}: ", f.what)),
        None => {}
    }
    out.push_str(&f.message);
    out.push('\n');
    let long = |s: &Option<String>| s.as_ref().is_some_and(|s| s.len() > 30);
    if (f.expected.is_some() || f.actual.is_some()) && (long(&f.expected) || long(&f.actual)) {
        if let Some(e) = &f.expected {
            out.push_str(&format!("      expected: {e}\n"));
        }
        if let Some(a) = &f.actual {
            out.push_str(&format!("      actual:   {a}\n"));
        }
    }
    for l in &f.diff {
        out.push_str(&format!("      {l}\n"));
    }
    out
}

impl fmt::Display for RunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.passed() { "PASS" } else { "FAIL" };
        writeln!(f, "{verdict} {} [{}]", self.file, self.backend)?;
        f.write_str(&self.details(usize::MAX))
    }
}

// ---------------------------------------------------------------------------------------
// Checking a trace against the expectations.

/// The optional parts of a failure.
#[derive(Default)]
struct Extra {
    expected: Option<String>,
    actual: Option<String>,
    diff: Vec<String>,
}

struct Checker<'s> {
    s: &'s Scenario,
    backend: String,
    labels: Labels,
    failures: Vec<Failure>,
}

impl Checker<'_> {
    fn fail(&mut self, step: Option<(usize, &Step)>, what: String, pos: Option<Pos>, message: String, extra: Extra) {
        let Extra { expected, actual, diff } = extra;
        self.failures.push(Failure {
            backend: self.backend.clone(),
            step: step.map(|(i, s)| StepRef { index: i + 1, op: s.op_name().to_owned() }),
            what,
            pos,
            message,
            expected,
            actual,
            diff,
        });
    }

    fn mismatch(&mut self, i: usize, step: &Step, expected: String, actual: String) {
        let message = if expected.len() > 30 || actual.len() > 30 {
            "the result differs from the expectation".to_owned()
        } else {
            format!("expected {expected}, got {actual}")
        };
        let extra = Extra { expected: Some(expected), actual: Some(actual), diff: Vec::new() };
        self.fail(Some((i, step)), step.summary(), step.pos, message, extra);
    }

    fn no_expectation(&mut self, i: usize, step: &Step, actual: String) {
        self.fail(
            Some((i, step)),
            step.summary(),
            step.pos,
            format!("no expectation (got {actual}); `ovlsim record` fills it in"),
            Extra { actual: Some(actual), ..Extra::default() },
        );
    }

    fn outcome(&mut self, i: usize, step: &Step, o: &Outcome) {
        let labels = &mut self.labels;
        let Some(exp) = &step.expect else {
            let a = one_line(&outcome_y(o, &mut |ino| Some(labels.show(ino))));
            self.no_expectation(i, step, a);
            return;
        };
        let ok = match (exp, o) {
            (Expect::Ok, o) => o.errno().is_none(),
            (Expect::Err(e), Outcome::Err(a)) => e == a,
            (Expect::Stat(se), Outcome::Stat(st)) => stat_matches(se, st, labels),
            (Expect::Data(d), Outcome::Data(a) | Outcome::Xattr(a)) => d == a,
            (Expect::Digest(d), Outcome::Digest(a)) => d == a,
            (Expect::Target(t), Outcome::Target(a)) => t == a,
            (Expect::Names(n), Outcome::Entries(a)) => n.iter().eq(a.keys()),
            (Expect::Names(n), Outcome::XattrNames(a)) => n == a,
            (Expect::Entries(m), Outcome::Entries(a)) => m == a,
            _ => false,
        };
        if ok {
            return;
        }
        let actual = match (exp, o) {
            (Expect::Stat(se), Outcome::Stat(st)) => {
                one_line(&stat_y(&se.with_values_of(st, Some(labels.show(st.ino)))))
            }
            (Expect::Names(_), Outcome::Entries(a)) => one_line(&Y::seq(a.keys().map(|k| Y::s(k.clone())).collect())),
            _ => one_line(&outcome_y(o, &mut |ino| Some(labels.show(ino)))),
        };
        self.mismatch(i, step, one_line(&expect_y(exp)), actual);
    }

    /// Checks the merged view read from the backend against the expected tree. `pos` gives
    /// the position to report; it is called only when the check fails (finding a position
    /// may parse the scenario's text again).
    ///
    /// The expected inode labels are bound (or checked) once, in the view's order. The view
    /// is compared in flat form first ([`flat_from_merged`]): equal flat forms are equal
    /// trees. Otherwise both trees are built and compared as trees, then line by line.
    fn merged_check(
        &mut self,
        step: Option<(usize, &Step)>,
        what: &str,
        pos: impl FnOnce() -> Option<Pos>,
        expected: &Option<FlatTree>,
        m: &MergedTree,
    ) {
        let exp_labels: HashMap<&str, &str> = match expected {
            Some(t) if t.root.ino.is_some() || t.entries.iter().any(|(_, n)| n.ino.is_some()) => {
                std::iter::once(("/", &t.root))
                    .chain(t.entries.iter().map(|(p, n)| (p.as_str(), n)))
                    .filter_map(|(p, n)| n.ino.as_deref().map(|l| (p, l)))
                    .collect()
            }
            _ => HashMap::new(),
        };
        // The label each labelled path shows, bound in the view's order.
        let mut shown: HashMap<&str, String> = HashMap::new();
        if !exp_labels.is_empty() {
            let labels = &mut self.labels;
            for (path, e) in m {
                if let (Some(l), Ok(st)) = (exp_labels.get(path.as_str()), &e.stat) {
                    let show = if labels.check(l, st.ino) { (*l).to_owned() } else { labels.show(st.ino) };
                    shown.insert(path, show);
                }
            }
        }
        let ino = |path: &str, _: u64| shown.get(path).cloned();
        if let (Some(exp), Some(actual)) = (expected, flat_from_merged(m, ino)) {
            if *exp == actual {
                return;
            }
        }
        let expected = expected.as_ref().map(FlatTree::to_tree);
        self.tree_compare(step, what, pos, expected, tree_from_merged(m, ino), TreeContext::Merged);
    }

    /// Checks the upper layer read from the backend against the expected one, as
    /// [`Checker::merged_check`] does: equal flat layers first, then the trees.
    fn upper_check(
        &mut self,
        step: Option<(usize, &Step)>,
        what: &str,
        pos: impl FnOnce() -> Option<Pos>,
        expected: &Option<FlatLayer>,
        u: &FlatLayer,
    ) {
        if expected.as_ref() == Some(u) {
            return;
        }
        let expected = expected.as_ref().map(tree_from_flat);
        self.tree_compare(step, what, pos, expected, tree_from_flat(u), TreeContext::Layer);
    }

    /// Compares an expected tree (`None`: none recorded yet) with the one read.
    fn tree_compare(
        &mut self,
        step: Option<(usize, &Step)>,
        what: &str,
        pos: impl FnOnce() -> Option<Pos>,
        expected: Option<TreeNode>,
        actual_tree: TreeNode,
        ctx: TreeContext,
    ) {
        // Equal trees give equal lines; the lines are written out only to compare trees
        // that differ in form (an explicit default `nlink`, say) and to report.
        if expected.as_ref() == Some(&actual_tree) {
            return;
        }
        let a = tree_lines(&actual_tree, ctx);
        let Some(exp) = expected else {
            self.fail(
                step,
                what.to_owned(),
                pos(),
                "no expected tree; `ovlsim record` fills it in".into(),
                Extra { diff: a.iter().map(|l| format!("+ {l}")).collect(), ..Extra::default() },
            );
            return;
        };
        let e = tree_lines(&exp, ctx);
        if e != a {
            self.fail(
                step,
                what.to_owned(),
                pos(),
                "the trees differ (- expected, + actual)".into(),
                Extra { diff: diff(&e, &a, 3), ..Extra::default() },
            );
        }
    }

    fn check(&mut self, i: usize, step: &Step, c: &Check, merged: Option<&MergedTree>, upper: Option<&FlatLayer>) {
        if let (Some(exp), Some(m)) = (&c.merged, merged) {
            self.merged_check(Some((i, step)), "check merged", || step.pos, exp, m);
        }
        if let (Some(exp), Some(u)) = (&c.upper, upper) {
            self.upper_check(Some((i, step)), "check upper", || step.pos, exp, u);
        }
    }
}

fn stat_matches(se: &StatExpect, st: &Stat, labels: &mut Labels) -> bool {
    let mut ok = se.kind.is_none_or(|k| k == st.kind)
        && se.mode.is_none_or(|m| m == st.mode)
        && se.size.is_none_or(|v| v == st.size)
        && se.nlink.is_none_or(|v| v == st.nlink)
        && se.uid.is_none_or(|v| v == st.uid)
        && se.gid.is_none_or(|v| v == st.gid)
        && se.rdev.is_none_or(|v| v == st.rdev);
    if let Some(l) = &se.ino {
        ok &= labels.check(l, st.ino);
    }
    ok
}

/// Checks a trace against the scenario's expectations.
pub(crate) fn check_trace(s: &Scenario, t: &Trace) -> Vec<Failure> {
    check_trace_labeled(s, t, Labels::default()).0
}

/// [`check_trace`], starting from the label bindings `labels`, and the bindings at the end.
///
/// Checking again from the bindings a first check ended with gives the same failures (a
/// label is bound once, at its first sighting, and never rebound), with every inode shown
/// by the label it has anywhere in the trace: `show` does this so that its whole output
/// names each inode one way.
pub(crate) fn check_trace_labeled(s: &Scenario, t: &Trace, labels: Labels) -> (Vec<Failure>, Labels) {
    let mut c = Checker { s, backend: t.backend.clone(), labels, failures: Vec::new() };
    if let Err(e) = &t.setup {
        let pos = c.s.locate(&[Seg::Key("mount".into())]);
        c.fail(None, "setup".into(), pos, e.to_string(), Extra::default());
        return (c.failures, c.labels);
    }
    for (i, step) in s.steps.iter().enumerate() {
        let Some(so) = t.steps.get(i) else { break };
        let obs = match &so.obs {
            Ok(o) => o,
            Err(e) => {
                let left = s.steps.len() - i - 1;
                let tail = if left > 0 { format!(" ({left} later steps not run)") } else { String::new() };
                c.fail(Some((i, step)), step.summary(), step.pos, format!("{e}{tail}"), Extra::default());
                break;
            }
        };
        match (&step.action, obs) {
            (Action::Op(_), Obs::Outcome(o)) => c.outcome(i, step, o),
            (Action::Mount(_), Obs::Mount(r)) => {
                let actual = match r {
                    Ok(()) => "ok".to_owned(),
                    Err(e) => e.name().to_owned(),
                };
                match &step.expect {
                    None => c.no_expectation(i, step, actual),
                    Some(Expect::Ok) if r.is_ok() => {}
                    Some(Expect::Err(e)) if *r == Err(*e) => {}
                    Some(e) => c.mismatch(i, step, one_line(&expect_y(e)), actual),
                }
            }
            (Action::Mount(_), Obs::CallRefused(call, errno)) => {
                let actual = Expect::Call { call: *call, errno: *errno };
                match &step.expect {
                    None => c.no_expectation(i, step, one_line(&expect_y(&actual))),
                    Some(e) if *e == actual => {}
                    Some(e) => c.mismatch(i, step, one_line(&expect_y(e)), one_line(&expect_y(&actual))),
                }
            }
            (Action::Check(chk), Obs::Trees { merged, upper }) => {
                c.check(i, step, chk, merged.as_ref(), upper.as_ref())
            }
            (Action::Unmount, Obs::Done) => {
                if let Some(e @ Expect::Err(_)) = &step.expect {
                    c.mismatch(i, step, one_line(&expect_y(e)), "ok".to_owned());
                }
            }
            (Action::Unmount, Obs::Refused(r)) => match &step.expect {
                Some(Expect::Err(e)) if e == r => {}
                None => c.no_expectation(i, step, r.name().to_owned()),
                Some(e) => c.mismatch(i, step, one_line(&expect_y(e)), r.name().to_owned()),
            },
            _ => {}
        }
    }
    if let (Some(fin), Some(result)) = (&s.final_check, &t.final_trees) {
        match result {
            Ok((merged, upper)) => {
                if let Some(exp) = &fin.merged {
                    let pos = || s.locate(&[Seg::Key("final".into()), Seg::Key("merged".into())]);
                    if let Some(m) = merged {
                        c.merged_check(None, "final merged", pos, exp, m);
                    }
                }
                if let Some(exp) = &fin.upper {
                    let pos = || s.locate(&[Seg::Key("final".into()), Seg::Key("upper".into())]);
                    if let Some(u) = upper {
                        c.upper_check(None, "final upper", pos, exp, u);
                    }
                }
            }
            Err(e) => {
                let pos = s.locate(&[Seg::Key("final".into())]);
                c.fail(None, "final".into(), pos, e.clone(), Extra::default());
            }
        }
    }
    if let (Some(Some(Some(exp))), Some(result)) = (s.final_check.as_ref().map(|f| &f.index), &t.final_index) {
        let pos = s.locate(&[Seg::Key("final".into()), Seg::Key("index".into())]);
        let show = |m: &BTreeMap<String, String>| m.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>();
        let msg = match result {
            Ok(Some(got)) if got == exp => None,
            Ok(Some(got)) => Some(format!("index: expected {:?}, got {:?}", show(exp), show(got))),
            Ok(None) => Some(format!("index: expected {:?}, but the workdir has no index/", show(exp))),
            Err(e) => Some(e.clone()),
        };
        if let Some(msg) = msg {
            c.fail(None, "final index".into(), pos, msg, Extra::default());
        }
    }
    (c.failures, c.labels)
}

fn report(s: &Scenario, backend: String, steps_run: usize, failures: Vec<Failure>) -> RunReport {
    RunReport {
        file: s.file().to_owned(),
        name: s.name.clone(),
        backend,
        steps_total: s.steps.len(),
        steps_run,
        failures,
    }
}

/// Replays `s` on `b` and checks every expectation: each step's result, the trees of
/// `check` steps and the `final` trees. A backend error (a `NotModelled` mount, a failed
/// setup) stops the replay and counts as a failure.
pub fn run(s: &Scenario, b: &mut dyn Backend) -> RunReport {
    let trace = execute(s, b, FinalWant::of(s), |_| {});
    let failures = check_trace(s, &trace);
    report(s, trace.backend.clone(), trace.steps.len(), failures)
}

// ---------------------------------------------------------------------------------------
// Two backends.

/// Each observation of a trace as lines, inode numbers as labels by first sighting.
fn normalize(t: &Trace) -> Vec<(String, Vec<String>)> {
    let mut lab = Labeler::default();
    let mut out = Vec::new();
    out.push((
        "setup".to_owned(),
        vec![match &t.setup {
            Ok(()) => "ok".to_owned(),
            Err(e) => e.to_string(),
        }],
    ));
    for so in &t.steps {
        let lines = match &so.obs {
            Err(e) => vec![format!("backend error: {e}")],
            Ok(Obs::Outcome(o)) => vec![one_line(&outcome_y(o, &mut |i| Some(lab.label(i))))],
            Ok(Obs::Mount(Ok(()))) => vec!["ok".into()],
            Ok(Obs::Mount(Err(e))) => vec![e.name().into()],
            Ok(Obs::Done) => vec!["done".into()],
            Ok(Obs::Refused(e)) => vec![e.name().into()],
            Ok(Obs::CallRefused(call, e)) => vec![format!("fsconfig call {} refused {}", call + 1, e.name())],
            Ok(Obs::Trees { merged, upper }) => trees_lines(merged.as_ref(), upper.as_ref(), &mut lab),
        };
        out.push(("step".into(), lines));
    }
    if let Some(f) = &t.final_trees {
        let lines = match f {
            Ok((m, u)) => trees_lines(m.as_ref(), u.as_ref(), &mut lab),
            Err(e) => vec![format!("error: {e}")],
        };
        out.push(("final".into(), lines));
    }
    out
}

fn trees_lines(m: Option<&MergedTree>, u: Option<&FlatLayer>, lab: &mut Labeler) -> Vec<String> {
    let mut lines = Vec::new();
    if let Some(m) = m {
        lines.push("merged:".to_owned());
        let t = tree_from_merged(m, |_, i| Some(lab.label(i)));
        lines.extend(tree_lines(&t, TreeContext::Merged));
    }
    if let Some(u) = u {
        lines.push("upper:".to_owned());
        lines.extend(tree_lines(&tree_from_flat(u), TreeContext::Layer));
    }
    lines
}

/// Replays `s` on both backends, checks each against the expectations, and reports every
/// step where the two backends show different results (inode numbers compared as labels by
/// first sighting).
pub fn run_both(s: &Scenario, a: &mut dyn Backend, b: &mut dyn Backend) -> RunReport {
    let ta = execute(s, a, FinalWant::all(), |_| {});
    let tb = execute(s, b, FinalWant::all(), |_| {});
    let mut failures = trace_differences(s, &ta, &tb);
    // A failure both backends share is reported once, for both.
    let mut fb = check_trace(s, &tb);
    for f in check_trace(s, &ta) {
        let same = |g: &Failure| Failure { backend: f.backend.clone(), ..g.clone() } == f;
        match fb.iter().position(same) {
            Some(k) => {
                fb.remove(k);
                failures.push(Failure { backend: format!("{}+{}", ta.backend, tb.backend), ..f });
            }
            None => failures.push(f),
        }
    }
    failures.extend(fb);
    report(s, format!("{}+{}", ta.backend, tb.backend), ta.steps.len().max(tb.steps.len()), failures)
}

/// Where a replay stopped on a backend error (a refused command, a dead worker): in the
/// order of [`failure_position`], 0 for the setup, `k` for step `k` (1-based), and
/// `usize::MAX` for the final trees; `None` when it did not stop.
fn stopped_at(t: &Trace) -> Option<usize> {
    if t.setup.is_err() {
        return Some(0);
    }
    if t.steps.last().is_some_and(|so| so.obs.is_err()) {
        return Some(t.steps.len());
    }
    match &t.final_trees {
        Some(Err(_)) => Some(usize::MAX),
        _ => None,
    }
}

/// Where in a replay a failure is, in the order of [`stopped_at`]: the setup (and a
/// scenario that did not load) first, then each step, then the final trees.
pub(crate) fn failure_position(f: &Failure) -> usize {
    match &f.step {
        Some(step) if f.what != "load" => step.index,
        _ if f.what == "setup" || f.what == "load" => 0,
        _ => usize::MAX,
    }
}

/// [`run`], and where the replay stopped on a backend error ([`stopped_at`]): a caller that
/// knows the backend refused a command (by the [`crate::backend::BackendError`] it saw)
/// keeps only the failures before that point.
#[cfg(all(feature = "proptest", target_os = "linux"))]
pub(crate) fn run_stopped(s: &Scenario, b: &mut dyn Backend) -> (RunReport, Option<usize>) {
    let trace = execute(s, b, FinalWant::of(s), |_| {});
    let failures = check_trace(s, &trace);
    let stop = stopped_at(&trace);
    (report(s, trace.backend.clone(), trace.steps.len(), failures), stop)
}

/// [`differences`], and where the replay on `sut` stopped on a backend error
/// ([`stopped_at`]).
pub(crate) fn differences_stopped(
    s: &Scenario,
    reference: &mut dyn Backend,
    sut: &mut dyn Backend,
) -> (RunReport, Option<usize>) {
    let ta = execute(s, reference, FinalWant::all(), |_| {});
    let tb = execute(s, sut, FinalWant::all(), |_| {});
    let failures = trace_differences(s, &ta, &tb);
    let stop = stopped_at(&tb);
    (report(s, format!("{}/{}", ta.backend, tb.backend), ta.steps.len().max(tb.steps.len()), failures), stop)
}

/// Replays `s` on `reference` and on `sut` and reports every step where the two show
/// different results, without checking the scenario's own expectations: the comparison a
/// conformance check makes, with the model as the reference. The report's `steps_run` is
/// the longer of the two replays.
pub fn differences(s: &Scenario, reference: &mut dyn Backend, sut: &mut dyn Backend) -> RunReport {
    let ta = execute(s, reference, FinalWant::all(), |_| {});
    let tb = execute(s, sut, FinalWant::all(), |_| {});
    let failures = trace_differences(s, &ta, &tb);
    report(s, format!("{}/{}", ta.backend, tb.backend), ta.steps.len().max(tb.steps.len()), failures)
}

/// The steps where two traces of `s` differ, one [`Failure`] each (setup, steps, final).
fn trace_differences(s: &Scenario, ta: &Trace, tb: &Trace) -> Vec<Failure> {
    let mut failures = Vec::new();
    let (na, nb) = (normalize(ta), normalize(tb));
    let pair = format!("{}/{}", ta.backend, tb.backend);
    for k in 0..na.len().max(nb.len()) {
        let not_run = || vec!["(not run)".to_owned()];
        let la = na.get(k).map(|x| x.1.clone()).unwrap_or_else(not_run);
        let lb = nb.get(k).map(|x| x.1.clone()).unwrap_or_else(not_run);
        if la == lb {
            continue;
        }
        let kind = na.get(k).or(nb.get(k)).map(|x| x.0.as_str()).unwrap_or("step");
        let (step, what, pos) = if k == 0 {
            (None, "setup".to_owned(), s.locate(&[Seg::Key("mount".into())]))
        } else if kind == "final" || k > s.steps.len() {
            (None, "final".to_owned(), s.locate(&[Seg::Key("final".into())]))
        } else {
            let st = &s.steps[k - 1];
            (Some(StepRef { index: k, op: st.op_name().to_owned() }), st.summary(), st.pos)
        };
        let (expected, actual, d, message) = if la.len() == 1 && lb.len() == 1 {
            (
                Some(la[0].clone()),
                Some(lb[0].clone()),
                Vec::new(),
                format!("{} gives {}, {} gives {}", ta.backend, la[0], tb.backend, lb[0]),
            )
        } else {
            (None, None, diff(&la, &lb, 3), format!("the backends differ (- {}, + {})", ta.backend, tb.backend))
        };
        failures.push(Failure { backend: pair.clone(), step, what, pos, message, expected, actual, diff: d });
    }
    failures
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{MergedEntry, ModelBackend};
    use crate::errno::Errno;

    /// Every merged view the model shows over the spec/ suite: each check step's and the
    /// final one, with the scenario's expected trees for them.
    fn spec_views() -> Vec<(String, MergedTree, Option<FlatTree>)> {
        let mut out = Vec::new();
        for p in crate::scenario::find_files(&["spec".into()]).unwrap().files {
            let Ok(s) = crate::scenario::load(&p) else { continue };
            let t = execute(&s, &mut ModelBackend::new(), FinalWant::all(), |_| {});
            for (step, so) in s.steps.iter().zip(&t.steps) {
                if let (Action::Check(c), Ok(Obs::Trees { merged: Some(m), .. })) = (&step.action, &so.obs) {
                    out.push((p.display().to_string(), m.clone(), c.merged.clone().flatten()));
                }
            }
            if let Some(Ok((Some(m), _))) = &t.final_trees {
                let exp = s.final_check.as_ref().and_then(|c| c.merged.clone()).flatten();
                out.push((p.display().to_string(), m.clone(), exp));
            }
        }
        out
    }

    /// A label for some inodes, as a check's label bindings would show them.
    fn some_labels(path: &str, ino: u64) -> Option<String> {
        path.len().is_multiple_of(3).then(|| format!("i{ino}"))
    }

    /// `flat_from_merged` is the flat form of `tree_from_merged` whenever it gives one, and
    /// then comparing flat forms is comparing trees.
    fn flat_is_tree(m: &MergedTree, expected: Option<&FlatTree>) -> bool {
        let Some(flat) = flat_from_merged(m, some_labels) else { return false };
        let tree = tree_from_merged(m, some_labels);
        assert_eq!(flat, FlatTree::from_tree(&tree), "{m:?}");
        assert_eq!(flat_from_merged(m, |_, _| None), Some(FlatTree::from_tree(&tree_from_merged(m, |_, _| None))));
        if let Some(e) = expected {
            assert_eq!(*e == flat, e.to_tree() == tree);
        }
        true
    }

    /// On every merged view of the spec/ suite on the model: the flat form is the tree's,
    /// and the expected tree (labels aside) compares the same both ways.
    #[test]
    fn the_flat_merged_view_is_its_tree_on_the_spec_suite() {
        let views = spec_views();
        assert!(views.len() > 300, "{} views", views.len());
        let mut equal = 0;
        for (file, m, exp) in &views {
            assert!(flat_is_tree(m, exp.as_ref()), "{file}: a dump is a tree");
            if let Some(e) = exp {
                let unlabelled = |t: &FlatTree| {
                    let mut t = t.clone();
                    t.root.ino = None;
                    t.entries.iter_mut().for_each(|(_, n)| n.ino = None);
                    t
                };
                let actual = flat_from_merged(m, |_, _| None).expect("a dump is a tree");
                equal += usize::from(unlabelled(e) == actual);
            }
        }
        // Most expected trees match the view as written (the rest give a link count that
        // is the default, or labels).
        assert!(equal * 10 > views.len() * 8, "{equal} of {} views equal in flat form", views.len());
    }

    /// Views that are not a dump's tree: no flat form (the caller builds the tree), or the
    /// tree's.
    #[test]
    fn a_view_that_is_not_a_tree_has_no_flat_form() {
        let views = spec_views();
        // A view with a directory below the root that holds something.
        let (base, dir) = views
            .iter()
            .find_map(|(_, m, _)| {
                let child = m.keys().find(|p| p.matches('/').count() > 1)?;
                Some((m, child[..child.rfind('/').unwrap()].to_owned()))
            })
            .unwrap();
        let dir_entry = base[&dir].clone();
        let err = MergedEntry {
            stat: Err(Errno::ENOENT),
            data: None,
            digest: None,
            target: None,
            xattrs: Default::default(),
        };
        let mut cases: Vec<MergedTree> = Vec::new();
        let mut no_root = base.clone();
        no_root.remove("/");
        cases.push(no_root);
        let mut root_err = base.clone();
        root_err.insert("/".into(), err.clone());
        cases.push(root_err);
        let mut no_parent = base.clone();
        no_parent.remove(&dir);
        cases.push(no_parent);
        let mut parent_err = base.clone();
        parent_err.insert(dir.clone(), err.clone());
        cases.push(parent_err);
        for odd in ["relative", "/a//b", "/a/", "/.", "/x/..", " /a"] {
            let mut c = base.clone();
            c.insert(odd.into(), dir_entry.clone());
            cases.push(c);
        }
        for m in &cases {
            assert!(!flat_is_tree(m, None), "{:?}", m.keys().collect::<Vec<_>>());
        }
        // And a well-formed view still has its flat form.
        assert!(flat_is_tree(base, None));
    }
}
