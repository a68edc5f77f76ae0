//! Filling in a scenario's expectations and final trees from a backend.

use super::locate::{Pos, Seg};
use super::runner::{execute, full_stat, nth_label, FinalWant, Obs, SetupError, Trace};
use super::tree::{tree_from_flat, tree_from_merged, tree_to_flat, FlatTree};
use super::{Action, Check, Expect, MountChange, Scenario, Step, StepRef};
use crate::backend::{Backend, MergedTree};
use crate::layer::FlatLayer;
use crate::ops::Outcome;
use std::collections::{BTreeSet, HashMap};
use std::fmt;

/// Why a scenario could not be recorded: the backend failed (at a step, or setting up).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordError {
    /// The scenario's file.
    pub file: String,
    /// Where, if known.
    pub pos: Option<Pos>,
    /// The step, if the failure is in one.
    pub step: Option<StepRef>,
    /// What went wrong.
    pub message: String,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(p) = self.pos {
            write!(f, ":{p}")?;
        }
        write!(f, ": ")?;
        if let Some(s) = &self.step {
            write!(f, "{s}: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for RecordError {}

/// Where an inode number was seen.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Sight {
    /// The stat result of step `i`.
    Step(usize),
    /// The merged tree of check step `i`, at a path.
    StepTree(usize, String),
    /// The final merged tree, at a path.
    Final(String),
}

fn merged_sights(m: &MergedTree, mk: impl Fn(String) -> Sight, out: &mut Vec<(Sight, u64)>) {
    for (p, e) in m {
        if let Ok(st) = &e.stat {
            out.push((mk(p.clone()), st.ino));
        }
    }
}

fn tree_label(t: &FlatTree, path: &str) -> Option<String> {
    t.get(path).and_then(|n| n.ino.clone())
}

/// The label the old scenario gave at a sighting, if any.
fn old_label(s: &Scenario, sight: &Sight) -> Option<String> {
    match sight {
        Sight::Step(i) => match &s.steps[*i].expect {
            Some(Expect::Stat(se)) => se.ino.clone(),
            _ => None,
        },
        Sight::StepTree(i, p) => match &s.steps[*i].action {
            Action::Check(Check { merged: Some(Some(t)), .. }) => tree_label(t, p),
            _ => None,
        },
        Sight::Final(p) => match &s.final_check {
            Some(Check { merged: Some(Some(t)), .. }) => tree_label(t, p),
            _ => None,
        },
    }
}

/// Labels for the inodes seen more than once (or labelled by the old scenario), by first
/// sighting; old labels are kept where they still fit.
fn assign_labels(s: &Scenario, t: &Trace) -> HashMap<u64, String> {
    let mut sights = Vec::new();
    for (i, so) in t.steps.iter().enumerate() {
        match &so.obs {
            Ok(Obs::Outcome(Outcome::Stat(st))) => sights.push((Sight::Step(i), st.ino)),
            Ok(Obs::Trees { merged: Some(m), .. }) => merged_sights(m, |p| Sight::StepTree(i, p), &mut sights),
            _ => {}
        }
    }
    if let Some(Ok((Some(m), _))) = &t.final_trees {
        merged_sights(m, Sight::Final, &mut sights);
    }
    let mut order: Vec<u64> = Vec::new();
    let mut count: HashMap<u64, usize> = HashMap::new();
    let mut olds: HashMap<u64, Vec<String>> = HashMap::new();
    let mut all_old: BTreeSet<String> = BTreeSet::new();
    for (sight, ino) in &sights {
        let c = count.entry(*ino).or_insert(0);
        if *c == 0 {
            order.push(*ino);
        }
        *c += 1;
        if let Some(l) = old_label(s, sight) {
            all_old.insert(l.clone());
            olds.entry(*ino).or_default().push(l);
        }
    }
    let mut used: BTreeSet<String> = BTreeSet::new();
    let mut out = HashMap::new();
    let mut next = 0;
    for ino in order {
        let old = olds.get(&ino);
        if count[&ino] < 2 && old.is_none() {
            continue;
        }
        let label = match old.and_then(|ls| ls.iter().find(|l| !used.contains(*l))) {
            Some(l) => l.clone(),
            None => loop {
                let l = nth_label(next);
                next += 1;
                if !used.contains(&l) && !all_old.contains(&l) {
                    break l;
                }
            },
        };
        used.insert(label.clone());
        out.insert(ino, label);
    }
    out
}

fn expect_from(o: &Outcome, old: Option<&Expect>, labels: &HashMap<u64, String>) -> Expect {
    match o {
        Outcome::Ok => Expect::Ok,
        Outcome::Err(e) => Expect::Err(*e),
        Outcome::Stat(st) => {
            let label = labels.get(&st.ino).cloned();
            match old {
                Some(Expect::Stat(se)) => Expect::Stat(se.with_values_of(st, label.or_else(|| se.ino.clone()))),
                _ => Expect::Stat(full_stat(st, label)),
            }
        }
        Outcome::Data(d) | Outcome::Xattr(d) => Expect::Data(d.clone()),
        Outcome::Digest(d) => Expect::Digest(*d),
        Outcome::Target(t) => Expect::Target(t.clone()),
        Outcome::Entries(m) => match old {
            Some(Expect::Names(_)) => Expect::Names(m.keys().cloned().collect()),
            _ => Expect::Entries(m.clone()),
        },
        Outcome::XattrNames(n) => Expect::Names(n.clone()),
    }
}

/// Replays `s` on `b` and sets every expectation from what `b` shows: each operation's and
/// mount's `expect`, the trees of `check` steps, and the `final` trees (the merged view when
/// the overlay is mounted at the end, and the upper layer when there is one).
///
/// A stat expectation that lists some fields keeps those fields; a readdir expectation
/// written as a list of names stays a list. Inode labels are given by first sighting to the
/// inodes seen more than once, keeping the labels the scenario already used where they
/// still fit. If the initial `mount` is refused, it becomes the first step, with the errno
/// as its expectation.
pub fn record(s: &mut Scenario, b: &mut dyn Backend) -> Result<(), RecordError> {
    let mut trace = execute(s, b, FinalWant::all(), |_| {});
    if let Err(SetupError::Refused(_)) = &trace.setup {
        if let Some(m) = s.mount.take() {
            let change = match m.data {
                Some(d) => MountChange { data: Some(d), ..MountChange::default() },
                None if m.fsconfig.is_some() => MountChange { fsconfig: m.fsconfig, ..MountChange::default() },
                None => MountChange {
                    lowers: Some(m.lowers),
                    upper: Some(m.upper),
                    options: Some(m.options),
                    data: None,
                    fsconfig: None,
                },
            };
            s.steps.insert(0, Step::new(Action::Mount(change)));
            trace = execute(s, b, FinalWant::all(), |_| {});
        }
    }
    let fail = |step: Option<usize>, message: String| {
        let (step, pos) = match step {
            Some(i) => (Some(StepRef { index: i + 1, op: s.steps[i].op_name().to_owned() }), s.steps[i].pos),
            None => (None, s.locate(&[Seg::Key("mount".into())])),
        };
        RecordError { file: s.file().to_owned(), pos, step, message }
    };
    if let Err(e) = &trace.setup {
        return Err(fail(None, e.to_string()));
    }
    for (i, so) in trace.steps.iter().enumerate() {
        if let Err(e) = &so.obs {
            return Err(fail(Some(i), e.clone()));
        }
    }
    let (final_merged, final_upper) = match &trace.final_trees {
        Some(Ok(t)) => t.clone(),
        Some(Err(e)) => return Err(fail(None, format!("reading the final trees: {e}"))),
        None => (None, None),
    };
    fill(s, &trace, final_merged, final_upper);
    if let Some(Ok(Some(index))) = &trace.final_index {
        s.final_check.get_or_insert_with(Default::default).index = Some(Some(index.clone()));
    }
    Ok(())
}

/// Sets the expectations of `s` from a complete trace (every step observed) and the final
/// trees; the final check is replaced by the trees given (none: no final check).
pub(crate) fn fill(s: &mut Scenario, trace: &Trace, final_merged: Option<MergedTree>, final_upper: Option<FlatLayer>) {
    let labels = assign_labels(s, trace);
    let label_of = |_: &str, ino: u64| labels.get(&ino).cloned();
    for (step, so) in s.steps.iter_mut().zip(&trace.steps) {
        let Ok(obs) = &so.obs else { continue };
        match (&mut step.action, obs) {
            (Action::Op(_), Obs::Outcome(o)) => {
                step.expect = Some(expect_from(o, step.expect.as_ref(), &labels));
            }
            (Action::Mount(_), Obs::Mount(r)) => {
                step.expect = Some(match r {
                    Ok(()) => Expect::Ok,
                    Err(e) => Expect::Err(*e),
                });
            }
            (Action::Mount(_), Obs::CallRefused(call, errno)) => {
                step.expect = Some(Expect::Call { call: *call, errno: *errno });
            }
            // A refused unmount says so; one that is done needs no expectation.
            (Action::Unmount, Obs::Refused(e)) => step.expect = Some(Expect::Err(*e)),
            (Action::Unmount, Obs::Done) => step.expect = None,
            (Action::Check(c), Obs::Trees { merged, upper }) => {
                if let (Some(slot), Some(m)) = (&mut c.merged, merged) {
                    *slot = Some(FlatTree::from_tree(&tree_from_merged(m, label_of)));
                }
                if let (Some(slot), Some(u)) = (&mut c.upper, upper) {
                    *slot = Some(canonical_layer(u));
                }
            }
            _ => {}
        }
    }
    let fin = Check {
        merged: final_merged.map(|m| Some(FlatTree::from_tree(&tree_from_merged(&m, label_of)))),
        upper: final_upper.map(|u| Some(canonical_layer(&u))),
        index: None,
    };
    s.final_check = (fin.merged.is_some() || fin.upper.is_some()).then_some(fin);
}

/// A layer read from a backend in the form a scenario reads it back in ([`tree_to_flat`] of
/// its tree, as `record` wrote it before checks held flat layers); the layer as it is when
/// it has no such form.
fn canonical_layer(u: &FlatLayer) -> FlatLayer {
    tree_to_flat(&tree_from_flat(u)).unwrap_or_else(|_| u.clone())
}
