//! Model-only checks: with no kernel to compare with, run the model and check that it never
//! panics and that its own invariants hold at every step.
//!
//! The invariants:
//! - **no panic** (a panic is a broken model invariant, never an errno);
//! - **determinism**: the same command on a clone of the state gives the same answer and the
//!   same upper layer (the clone shares the lookup cache the first run filled, so it answers
//!   from hits);
//! - **the lookup cache changes no answer**: the model runs with every lookup through the
//!   cache ([`CachePolicy::Always`]), and the same command on a clone without it
//!   ([`CachePolicy::Off`]) gives the same answer;
//! - **the merged dump walks dentries faithfully**: [`crate::overlay::Overlay::dump_merged`]
//!   gives the tree that single operations by path give ([`dump_merged`]), and leaves the
//!   same marks on the overlay;
//! - **reads change nothing**: `stat`, `lstat`, `read`, `readlink`, `readdir`, `getxattr`,
//!   `listxattr` and a plain read-only `open` leave the upper layer as it was
//!   (overlayfs.rst, "Non-directories": only writes copy up);
//! - **a read-only mount changes nothing**: with no upper or `ro`, no operation changes the
//!   upper layer;
//! - **layers are well formed**: every non-directory's `nlink` is its number of names, every
//!   directory's is 2 plus its subdirectories, every inode is reachable, and the flat form
//!   round-trips.
//!
//! The checks that walk whole layers run on a schedule (every step of a short case, then at
//! doubling steps and at the end: [`whole_layer_check_due`]), so that a long case costs
//! time linear in its length.

use super::case::{final_commands, Answer, Case};
use super::machine::exec_quiet;
use crate::backend::{dump_merged, Command, ModelBackend, Reply};
use crate::dcache::CachePolicy;
use crate::layer::{FlatLayer, Layer};
use crate::ops::{Access, Op};
use std::collections::HashMap;

/// Every step up to this one gets the whole-layer checks (see [`whole_layer_check_due`]):
/// a case of the default length ([`super::STEPS_MAX_DEFAULT`]) is checked at every step.
pub const WHOLE_LAYER_EVERY_STEP_MAX: usize = 32;

// A case of the default length is checked at every step.
const _: () = assert!(WHOLE_LAYER_EVERY_STEP_MAX >= super::STEPS_MAX_DEFAULT);

/// Whether step `i` of a case (counted from 0, the setup included) gets the checks that
/// walk whole layers: every step up to [`WHOLE_LAYER_EVERY_STEP_MAX`], then steps 64, 128,
/// 256, … (each power of two), and always the last step of a case ([`check_case`]).
///
/// A whole-layer check costs the size of the layers, which grows with a long case; at every
/// step, a case of n steps would cost O(n²). On this schedule it costs O(n) in all. What is
/// given up: a layer that is malformed, or an upper that differs between two runs of one
/// command, at an unchecked step and put right again before the next checked one is not
/// seen; one that stays wrong is seen at the next checked step or at the end, and the
/// shrinker ([`super::shrink`]) then finds the first step that breaks it, since a shorter
/// case ends there and is checked at its end.
pub fn whole_layer_check_due(i: usize) -> bool {
    i <= WHOLE_LAYER_EVERY_STEP_MAX || i.is_power_of_two()
}

/// Whether `a` and `b` are the same layer tree (or both absent): O(1) when one is an
/// unchanged clone of the other ([`Layer::ptr_eq`]), else by their flat forms.
fn same_tree(a: Option<&Layer>, b: Option<&Layer>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a.ptr_eq(b) || a.to_flat() == b.to_flat(),
        _ => false,
    }
}

/// Runs `case` on a fresh model with every invariant checked; the number of commands run,
/// or the first broken invariant, in words.
///
/// The model runs with every lookup through the cache ([`CachePolicy::Always`]), and each
/// command is also run on a clone that does not use it: the answers must be the same. The
/// determinism twin shares the cache the first run just filled, so it answers from hits.
///
/// Answers, panics and "reads change nothing" are checked at every step; the checks that
/// walk whole layers (well-formed layers, the upper after a twin run equal to the upper
/// after the first run, and every re-run of a dump of the merged view: on the twin, without
/// the cache, and as single operations) on the schedule of [`whole_layer_check_due`] and at
/// the last step, so that a long case costs linear time (at the other steps, the twin's
/// upper must only hold as many inodes).
pub fn check_case(case: &Case) -> Result<usize, String> {
    check_case_with_progress(case, &mut |_| {})
}

/// How often [`check_case_with_progress`] reports, in commands.
pub const PROGRESS_EVERY: usize = 1024;

/// [`check_case`], telling `progress` the number of commands run every [`PROGRESS_EVERY`]
/// commands (for a progress line during a long case).
pub fn check_case_with_progress(case: &Case, progress: &mut dyn FnMut(usize)) -> Result<usize, String> {
    let mut checker = Checker::new(&case.start);
    let mut model = checker.setup(&case.start)?;
    for cmd in &case.steps {
        checker.run(&mut model, cmd, false)?;
        if checker.count.is_multiple_of(PROGRESS_EVERY) {
            progress(checker.count);
        }
    }
    checker.finish(model)
}

/// The invariant checks of [`check_case`], one command at a time: the case's commands are
/// run by [`Checker::run`], or run elsewhere and handed over with the state before them
/// ([`Checker::check`]: the fuzzer's invariant mode checks the very runs that drew the case,
/// [`super::campaign::draw`], instead of running the case again).
#[derive(Debug)]
pub struct Checker {
    /// The case's layers.
    names: Vec<String>,
    /// The case's upper layer.
    upper: Option<String>,
    /// The last tree of each layer found well formed.
    well_formed_before: HashMap<String, Layer>,
    /// Whether the model is mounted after the commands so far.
    mounted: bool,
    /// Commands checked so far.
    count: usize,
}

impl Checker {
    /// A checker for a case starting with `start`.
    pub fn new(start: &super::case::CaseStart) -> Checker {
        Checker {
            names: start.layer_names(),
            upper: start.upper.as_ref().map(|(n, _)| n.clone()),
            well_formed_before: HashMap::new(),
            mounted: false,
            count: 0,
        }
    }

    /// Commands checked so far.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Runs and checks the setup of `start` ([`super::case::CaseStart::setup`]) on a fresh
    /// model (every lookup through the cache), and returns the model after it.
    pub fn setup(&mut self, start: &super::case::CaseStart) -> Result<ModelBackend, String> {
        let mut model = ModelBackend::with_cache_policy(CachePolicy::Always);
        for cmd in start.setup() {
            self.run(&mut model, &cmd, false)?;
        }
        Ok(model)
    }

    /// Runs `cmd` on `model` and checks it; `last` makes it get the whole-layer checks
    /// whatever the schedule ([`whole_layer_check_due`]).
    pub fn run(&mut self, model: &mut ModelBackend, cmd: &Command, last: bool) -> Result<(), String> {
        let before = model.clone();
        let answer = exec_quiet(model, cmd);
        self.check(&before, model, cmd, &answer, last)
    }

    /// Runs and checks the final commands ([`final_commands`]) on `model`; the number of
    /// commands checked in all.
    pub fn finish(&mut self, mut model: ModelBackend) -> Result<usize, String> {
        let finals = final_commands(self.mounted, &self.names);
        let last = finals.len();
        for (k, cmd) in finals.iter().enumerate() {
            self.run(&mut model, cmd, k + 1 == last)?;
        }
        Ok(self.count)
    }

    /// Checks `cmd`, which took the model from `before` to `model` with `answer` (`model`
    /// must be the result of running `cmd` on a clone of `before`, which shares its lookup
    /// cache); `last` as in [`Checker::run`].
    pub fn check(
        &mut self,
        before: &ModelBackend,
        model: &ModelBackend,
        cmd: &Command,
        answer: &Answer,
        last: bool,
    ) -> Result<(), String> {
        let i = self.count;
        let whole = whole_layer_check_due(i) || last;
        self.count += 1;
        let upper = &self.upper;
        let fail = |what: String| Err(format!("step {i} ({cmd:?}): {what}"));
        if let Answer::Panic(p) = answer {
            return fail(format!("the model panicked: {p}"));
        }
        // A dump of the merged view walks the whole tree: it is run again (on the twin,
        // without the cache, and as single operations) only on the whole-layer schedule.
        let rerun = whole || !matches!(cmd, Command::DumpMerged);
        let upper_of = |b: &ModelBackend| upper.as_deref().and_then(|u| b.layer(u));
        let upper_model = upper_of(model);
        if rerun {
            let mut twin = before.clone();
            let again = exec_quiet(&mut twin, cmd);
            if again != *answer {
                return fail(format!("not deterministic: {answer:?} then {again:?} from the same state"));
            }
            let mut blind = before.clone();
            blind.set_cache_policy(CachePolicy::Off);
            let uncached = exec_quiet(&mut blind, cmd);
            if uncached != *answer {
                return fail(format!("the lookup cache changed the answer: {answer:?} with it, {uncached:?} without"));
            }
            if let (Command::DumpMerged, Some(mut ov)) = (cmd, before.overlay().cloned()) {
                let by_path = Answer::Reply(Reply::Merged(dump_merged(|op| ov.apply(op))));
                if by_path != *answer {
                    return fail(format!("the dentry walk read {answer:?}, single operations {by_path:?}"));
                }
                let after = model.overlay().expect("a dump leaves the overlay mounted");
                if ov.upper().map(Layer::walk_inodes) != after.upper().map(Layer::walk_inodes)
                    || ov.xwhiteout_layers != after.xwhiteout_layers
                {
                    return fail("the dentry walk and single operations left different marks".into());
                }
            }
            let twin_differs = match (&upper_model, &upper_of(&twin)) {
                (Some(m), Some(t)) if m.ptr_eq(t) => false,
                (Some(m), Some(t)) if !whole => m.inode_count() != t.inode_count(),
                (m, t) => m.as_ref().map(Layer::walk_inodes) != t.as_ref().map(Layer::walk_inodes),
            };
            if twin_differs {
                return fail("not deterministic: the upper layer differs between two runs".into());
            }
        }
        if let Command::Op(op) = cmd {
            // A read-only mount still copies up to encode a file handle (`ovl_want_write` asks
            // for the private upper mount): spec/nfs_export/
            // name_to_handle-lower-dir-nfs-export-read-only-copy-up.yaml, recorded on 6.18.
            let encodes = matches!(op, crate::ops::Op::Fd(crate::ops::fd::FdOp::NameToHandle { .. }));
            let read_only_mount = before.overlay().is_some_and(|o| o.upper().is_none() || o.options().read_only);
            let read_only_mount = read_only_mount && !encodes;
            if (reads_only(op) || read_only_mount) && !same_tree(upper_of(before).as_ref(), upper_model.as_ref()) {
                return fail(if reads_only(op) {
                    "a read changed the upper layer".into()
                } else {
                    "an operation on a read-only mount changed the upper layer".into()
                });
            }
        }
        if whole {
            for n in &self.names {
                if let Some(l) = model.layer(n) {
                    // A layer that is the very tree checked before (an unchanged lower, an
                    // upper a read left alone) is well formed still.
                    if self.well_formed_before.get(n).is_some_and(|c: &Layer| c.ptr_eq(&l)) {
                        continue;
                    }
                    well_formed(&l).or_else(|e| fail(format!("layer {n}: {e}")))?;
                    self.well_formed_before.insert(n.clone(), l);
                }
            }
        }
        match cmd {
            Command::Mount { .. } | Command::MountData { .. } => self.mounted = answer.is_done(),
            Command::Unmount if matches!(answer, Answer::Reply(_)) => self.mounted = false,
            _ => {}
        }
        Ok(())
    }
}

/// Whether `op` only reads: it must not change the upper layer, whatever it returns.
pub fn reads_only(op: &Op) -> bool {
    match op {
        Op::Stat { .. }
        | Op::Lstat { .. }
        | Op::Read { .. }
        | Op::Readlink { .. }
        | Op::Readdir { .. }
        | Op::Getxattr { .. }
        | Op::Listxattr { .. } => true,
        Op::Open { flags, .. } => flags.access == Access::ReadOnly && !flags.creat && !flags.trunc,
        _ => false,
    }
}

/// Checks a layer's link counts, reachability and flat round trip.
pub fn well_formed(l: &Layer) -> Result<(), String> {
    let all = l.walk_all();
    let mut names: HashMap<u64, u32> = HashMap::new();
    let mut subdirs: HashMap<u64, u32> = HashMap::new();
    let parent_of = |path: &str| -> u64 {
        let parent = path.rsplit_once('/').map(|(p, _)| p).unwrap_or("");
        l.walk(parent.split('/').filter(|c| !c.is_empty())).expect("the parent of a walked path walks")
    };
    for (path, ino) in &all {
        let inode = l.try_get(*ino).ok_or_else(|| format!("{path} names a dead inode {ino}"))?;
        if inode.is_dir() {
            if names.insert(*ino, 1).is_some() {
                return Err(format!("directory {path} has two names"));
            }
            *subdirs.entry(parent_of(path)).or_default() += 1;
        } else {
            *names.entry(*ino).or_default() += 1;
        }
    }
    // The workdir's `index/` of an upper used with `index=on` ([`crate::index`]): a
    // directory no path reaches, whose entries are names too.
    if let Some(index) = l.index_dir() {
        names.insert(index, 1);
        for (name, ino) in l.get(index).entries().ok_or("the index is not a directory")?.iter() {
            let inode = l.try_get(*ino).ok_or_else(|| format!("index entry {name} names a dead inode {ino}"))?;
            if inode.is_dir() {
                names.insert(*ino, 1);
                *subdirs.entry(index).or_default() += 1;
            } else {
                *names.entry(*ino).or_default() += 1;
            }
        }
    }
    for (ino, count) in &names {
        let inode = l.get(*ino);
        let want = if inode.is_dir() { 2 + subdirs.get(ino).copied().unwrap_or(0) } else { *count };
        if inode.nlink != want {
            return Err(format!("inode {ino} ({:?}) has nlink {} but {want} names", inode.file_type(), inode.nlink));
        }
    }
    let root = l.get(l.root());
    let root_want = 2 + subdirs.get(&l.root()).copied().unwrap_or(0);
    if root.nlink != root_want {
        return Err(format!("the root has nlink {} but {root_want}", root.nlink));
    }
    if l.inode_count() != names.len() + 1 {
        return Err(format!("{} inodes but {} reachable", l.inode_count(), names.len() + 1));
    }
    let flat: FlatLayer = l.to_flat();
    if Layer::from_flat(&flat).to_flat() != flat {
        return Err("the flat form does not round-trip".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzz::machine::{case_of, ModelMachine};
    use proptest::strategy::{Strategy, ValueTree};
    use proptest::test_runner::{Config, TestRunner};
    use proptest_state_machine::ReferenceStateMachine;

    #[test]
    fn an_upper_with_an_index_is_well_formed_and_its_entries_count() {
        use crate::layer::Inode;
        use crate::mount::Options;
        let mut lower = Layer::new();
        lower.put("/h1", Inode::file(b"x", 0o644));
        lower.put_link("/h2", "/h1").expect("link");
        lower.put("/d/f", Inode::file(b"f", 0o644));
        let options = Options { index: true, nfs_export: true, ..Options::default() };
        let mut ov = crate::Overlay::mount(vec![lower], Some(Layer::new()), options).expect("mount");
        for path in ["/h1", "/d/f"] {
            assert_eq!(ov.apply(&Op::Chmod { path: path.into(), mode: 0o600 }), crate::Outcome::Ok);
        }
        assert_eq!(ov.apply(&Op::Unlink { path: "/d/f".into() }), crate::Outcome::Ok);
        let upper = ov.upper().expect("upper").clone();
        assert_eq!(ov.index_entries().len(), 3, "h1, d and f's whiteout");
        assert_eq!(well_formed(&upper), Ok(()));
    }

    #[test]
    fn whole_layer_checks_run_at_every_short_step_then_at_doubling_steps() {
        assert!((0..=WHOLE_LAYER_EVERY_STEP_MAX).all(whole_layer_check_due));
        let late: Vec<usize> = (WHOLE_LAYER_EVERY_STEP_MAX + 1..5000).filter(|&i| whole_layer_check_due(i)).collect();
        assert_eq!(late, [64, 128, 256, 512, 1024, 2048, 4096]);
    }

    #[test]
    fn a_long_case_reports_progress_and_runs_to_its_end() {
        let mut runner = TestRunner::new_with_rng(Config::default(), crate::fuzz::rng_for(3));
        let (state, transitions, _) =
            ModelMachine::sequential_strategy(3000..=3000).new_tree(&mut runner).expect("a case").current();
        let case = case_of(&state, &transitions);
        let mut seen = Vec::new();
        let n = check_case_with_progress(&case, &mut |k| seen.push(k)).expect("the model keeps its invariants");
        assert!(n > 3000, "every command and the final dumps ran: {n}");
        assert_eq!(seen, [1024, 2048, 3072][..n / PROGRESS_EVERY]);
    }
}
