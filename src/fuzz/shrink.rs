//! A second shrinking pass over a whole [`Case`], after proptest's.
//!
//! The generator draws straight from the RNG ([`super::gen`]), so proptest shrinks a
//! failing case only by deleting transitions: its start and each transition are drawn
//! whole, without a value tree to simplify. [`minimize`] does the rest and tries, greedily and until nothing more goes: deleting steps, dropping
//! lower layers, deleting layer entries (with what is under them), stripping xattrs,
//! owners, modes and data, and resetting mount options and operation flags. A candidate is
//! kept when it is still a valid case (the preconditions of
//! [`ModelMachine`] hold) and still fails the same way (`key`).

use super::case::Case;
use super::machine::{ModelMachine, RefState};
use crate::backend::{Command, Edit};
use crate::layer::{FileType, FlatEntry, FlatLayer, FlatNode};
use crate::mount::Options;
use crate::ops::{Op, OpenFlags, RenameFlags};
use proptest_state_machine::ReferenceStateMachine;
use std::time::{Duration, Instant};

/// Whether every step of `case` satisfies the state machine's preconditions.
pub fn valid(case: &Case) -> bool {
    let mut state = RefState::new(case.start.clone());
    for t in &case.steps {
        if !ModelMachine::preconditions(&state, t) {
            return false;
        }
        state = state.step(t);
    }
    true
}

/// Shrinks `case` while `fails` keeps returning `Some(key)` equal to `fails(case)`; gives
/// up after `budget`. Returns the smallest case found and the number of candidates tried.
pub fn minimize<K: PartialEq>(
    case: &Case,
    mut fails: impl FnMut(&Case) -> Option<K>,
    budget: Duration,
) -> (Case, usize) {
    let start = Instant::now();
    let Some(key) = fails(case) else {
        return (case.clone(), 1);
    };
    let mut best = case.clone();
    let mut tried = 1;
    let passes: [fn(&Case) -> Vec<Case>; 6] =
        [delete_steps, drop_lowers, delete_entries, simplify_entries, simplify_options, simplify_steps];
    loop {
        let mut progressed = false;
        for pass in passes {
            let mut i = 0;
            loop {
                if start.elapsed() > budget {
                    return (best, tried);
                }
                let candidates = pass(&best);
                let Some(c) = candidates.into_iter().nth(i) else {
                    break;
                };
                if !valid(&c) {
                    i += 1;
                    continue;
                }
                tried += 1;
                if fails(&c).as_ref() == Some(&key) {
                    best = c;
                    progressed = true;
                } else {
                    i += 1;
                }
            }
        }
        if !progressed {
            return (best, tried);
        }
    }
}

/// Every case with one step fewer, the last step first; then with two neighbouring steps
/// fewer (an unmount and the mount after it only go together).
fn delete_steps(case: &Case) -> Vec<Case> {
    let n = case.steps.len();
    let mut out: Vec<Case> = (0..n)
        .rev()
        .map(|j| {
            let mut c = case.clone();
            c.steps.remove(j);
            c
        })
        .collect();
    for j in (0..n.saturating_sub(1)).rev() {
        let mut c = case.clone();
        c.steps.drain(j..j + 2);
        out.push(c);
    }
    out
}

/// Every case with one lower layer fewer (taken out of every mount, edit and dump too).
fn drop_lowers(case: &Case) -> Vec<Case> {
    // With data-only layers, the mounts are option strings naming every layer: kept whole.
    if case.start.data > 0 || case.start.lowers.len() + usize::from(case.start.upper.is_some()) < 2 {
        return Vec::new();
    }
    (0..case.start.lowers.len())
        .rev()
        .map(|k| {
            let mut c = case.clone();
            let (name, _) = c.start.lowers.remove(k);
            c.steps.retain(|s| match s {
                Command::Edit { layer, .. } => *layer != name,
                Command::DumpLayer { name: n } => *n != name,
                _ => true,
            });
            for s in &mut c.steps {
                if let Command::Mount { lowers, .. } = s {
                    lowers.retain(|l| *l != name);
                }
            }
            c
        })
        .collect()
}

fn is_under(path: &str, top: &str) -> bool {
    path == top || path.strip_prefix(top).is_some_and(|r| r.starts_with('/'))
}

/// `layer` without the entry at `path` and everything under it (links to them included).
fn without(layer: &FlatLayer, path: &str) -> FlatLayer {
    let mut l = layer.clone();
    l.entries.retain(|e| match e {
        FlatEntry::Node { path: p, .. } => !is_under(p, path),
        FlatEntry::Link { path: p, to } => !is_under(p, path) && !is_under(to, path),
    });
    l
}

fn layers_mut(case: &mut Case) -> Vec<&mut FlatLayer> {
    let mut out: Vec<&mut FlatLayer> = case.start.lowers.iter_mut().map(|(_, l)| l).collect();
    out.extend(case.start.upper.iter_mut().map(|(_, l)| l));
    out
}

/// Every case with one layer entry fewer (with what is under it), last entries first.
fn delete_entries(case: &Case) -> Vec<Case> {
    let mut out = Vec::new();
    let count = layers_mut(&mut case.clone()).len();
    for li in 0..count {
        let paths: Vec<String> = {
            let mut c = case.clone();
            let layers = layers_mut(&mut c);
            layers[li].entries.iter().map(|e| e.path().to_owned()).collect()
        };
        for p in paths.iter().rev() {
            let mut c = case.clone();
            let mut layers = layers_mut(&mut c);
            let smaller = without(layers[li], p);
            *layers[li] = smaller;
            out.push(c);
        }
    }
    out
}

/// Simpler versions of one node: without each xattr, owned by root, the default mode, no
/// data.
fn simpler_nodes(n: &FlatNode) -> Vec<FlatNode> {
    let mut out = Vec::new();
    for k in n.xattrs.keys() {
        let mut m = n.clone();
        m.xattrs.remove(k);
        out.push(m);
    }
    if n.uid != 0 || n.gid != 0 {
        let mut m = n.clone();
        m.uid = 0;
        m.gid = 0;
        out.push(m);
    }
    let mode = match n.kind {
        FileType::Dir => 0o755,
        FileType::Symlink => n.mode,
        FileType::Char => n.mode,
        _ => 0o644,
    };
    if n.mode != mode {
        let mut m = n.clone();
        m.mode = mode;
        out.push(m);
    }
    if n.data.as_ref().is_some_and(|d| !d.is_empty()) {
        let mut m = n.clone();
        m.data = Some(Default::default());
        out.push(m);
    }
    out
}

/// Every case with one node of one layer (or its root) made simpler.
fn simplify_entries(case: &Case) -> Vec<Case> {
    let mut out = Vec::new();
    let count = layers_mut(&mut case.clone()).len();
    for li in 0..count {
        let layer = layers_mut(&mut case.clone())[li].clone();
        for (ei, e) in layer.entries.iter().enumerate() {
            if let FlatEntry::Node { node, .. } = e {
                for simpler in simpler_nodes(node) {
                    let mut c = case.clone();
                    if let FlatEntry::Node { node, .. } = &mut layers_mut(&mut c)[li].entries[ei] {
                        *node = simpler;
                    }
                    out.push(c);
                }
            }
        }
        for simpler in simpler_nodes(&layer.root) {
            let mut c = case.clone();
            layers_mut(&mut c)[li].root = simpler;
            out.push(c);
        }
    }
    out
}

/// Simpler versions of mount options: the defaults, then one field at a time.
fn simpler_options(o: &Options) -> Vec<Options> {
    let d = Options::default();
    if *o == d {
        return Vec::new();
    }
    let mut out = vec![d];
    if o.read_only {
        out.push(Options { read_only: false, ..*o });
    }
    if o.redirect_dir != d.redirect_dir {
        out.push(Options { redirect_dir: d.redirect_dir, ..*o });
    }
    if o.userxattr {
        out.push(Options { userxattr: false, ..*o });
    }
    if o.xino != d.xino {
        out.push(Options { xino: d.xino, ..*o });
    }
    out
}

/// Every case with the options of one mount made simpler.
fn simplify_options(case: &Case) -> Vec<Case> {
    let mut out = Vec::new();
    for o in simpler_options(&case.start.options) {
        let mut c = case.clone();
        c.start.options = o;
        out.push(c);
    }
    for (j, s) in case.steps.iter().enumerate() {
        if let Command::Mount { options, .. } = s {
            for o in simpler_options(options) {
                let mut c = case.clone();
                if let Command::Mount { options, .. } = &mut c.steps[j] {
                    *options = o;
                }
                out.push(c);
            }
        }
    }
    out
}

/// Simpler versions of an operation: fewer open or rename flags.
fn simpler_ops(op: &Op) -> Vec<Op> {
    let mut out = Vec::new();
    match op {
        Op::Open { path, flags, mode } => {
            let f = *flags;
            let variants = [
                OpenFlags { creat: false, ..f },
                OpenFlags { excl: false, ..f },
                OpenFlags { trunc: false, ..f },
                OpenFlags { append: false, ..f },
                OpenFlags { directory: false, ..f },
                OpenFlags { nofollow: false, ..f },
                OpenFlags { access: Default::default(), ..f },
            ];
            for v in variants {
                if v != f {
                    out.push(Op::Open { path: path.clone(), flags: v, mode: *mode });
                }
            }
        }
        Op::Rename { from, to, flags } if *flags != RenameFlags::default() => {
            out.push(Op::Rename { from: from.clone(), to: to.clone(), flags: RenameFlags::default() });
        }
        _ => {}
    }
    out.extend(simpler_op_paths(op));
    out
}

/// Simpler spellings of a path: without a trailing slash, without one `.` component, or
/// without one `name/..` pair.
fn simpler_paths(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    if path.len() > 1 && path.ends_with('/') {
        out.push(path.trim_end_matches('/').to_owned());
    }
    let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let join = |c: Vec<&str>| format!("/{}", c.join("/"));
    for i in 0..comps.len() {
        if comps[i] == "." {
            let mut c = comps.clone();
            c.remove(i);
            out.push(join(c));
        }
        if i + 1 < comps.len() && comps[i + 1] == ".." && comps[i] != ".." {
            let mut c = comps.clone();
            c.drain(i..i + 2);
            out.push(join(c));
        }
    }
    out
}

/// `op` with one of its path arguments spelled more simply. The path fields are found
/// through the serde form (`path`, `from`, `to`), so that every variant is covered.
fn simpler_op_paths(op: &Op) -> Vec<Op> {
    let Ok(serde_json::Value::Object(outer)) = serde_json::to_value(op) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (variant, fields) in &outer {
        let serde_json::Value::Object(fields) = fields else { continue };
        for key in ["path", "from", "to"] {
            let Some(serde_json::Value::String(p)) = fields.get(key) else { continue };
            for simpler in simpler_paths(p) {
                let mut f = fields.clone();
                f.insert(key.to_owned(), serde_json::Value::String(simpler));
                let mut o = serde_json::Map::new();
                o.insert(variant.clone(), serde_json::Value::Object(f));
                if let Ok(op) = serde_json::from_value(serde_json::Value::Object(o)) {
                    out.push(op);
                }
            }
        }
    }
    out
}

/// Every case with one step made simpler (an operation's flags, an edit's node).
fn simplify_steps(case: &Case) -> Vec<Case> {
    let mut out = Vec::new();
    for (j, s) in case.steps.iter().enumerate() {
        let simpler: Vec<Command> = match s {
            Command::Op(op) => simpler_ops(op).into_iter().map(Command::Op).collect(),
            Command::Edit { layer, edit: Edit::Put { path, node } } => simpler_nodes(node)
                .into_iter()
                .map(|n| Command::Edit { layer: layer.clone(), edit: Edit::Put { path: path.clone(), node: n } })
                .collect(),
            _ => Vec::new(),
        };
        for cmd in simpler {
            let mut c = case.clone();
            c.steps[j] = cmd;
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_get_simpler_spellings() {
        assert_eq!(simpler_paths("/a/../b/"), ["/a/../b", "/b"]);
        assert_eq!(simpler_paths("/a/./b"), ["/a/b"]);
        assert!(simpler_paths("/a/b").is_empty());
    }

    #[test]
    fn op_paths_are_found_in_every_field() {
        let op = Op::Rename { from: "/a/".into(), to: "/b/./c".into(), flags: RenameFlags::default() };
        let simpler = simpler_op_paths(&op);
        assert!(simpler.contains(&Op::Rename {
            from: "/a".into(),
            to: "/b/./c".into(),
            flags: RenameFlags::default()
        }));
        assert!(simpler.contains(&Op::Rename { from: "/a/".into(), to: "/b/c".into(), flags: RenameFlags::default() }));
    }

    /// A case as the fuzzer draws it (the direct generator leaves all shrinking to
    /// `minimize` but the deletion of transitions): a failure that needs one rename over a
    /// lower holding something shrinks to that rename, on one lower of one entry.
    #[test]
    fn a_drawn_case_shrinks_to_what_the_failure_needs() {
        let renames = |c: &Case| c.steps.iter().filter(|s| matches!(s, Command::Op(Op::Rename { .. }))).count();
        let entries = |c: &Case| c.start.layers().map(|(_, l)| l.entries.len()).sum::<usize>();
        let fails = |c: &Case| {
            let lower_entries = c.start.lowers.iter().any(|(_, l)| !l.entries.is_empty());
            (renames(c) > 0 && lower_entries).then_some(())
        };
        let mut shrunk = 0;
        for index in 0..40 {
            let case = crate::fuzz::campaign::draw(&mut crate::fuzz::campaign::case_runner(3, index), 40, false)
                .expect("drawn")
                .case();
            if fails(&case).is_none() || case.steps.len() < 5 || entries(&case) < 5 {
                continue;
            }
            let (small, _) = minimize(&case, fails, Duration::from_secs(20));
            assert_eq!(fails(&small), Some(()), "still fails");
            assert_eq!(small.steps.len(), 1, "one step left of {}: {:?}", case.steps.len(), small.steps);
            // A mount without an upper needs two lowers.
            let lowers = if small.start.upper.is_some() { 1 } else { 2 };
            assert_eq!(small.start.lowers.len(), lowers, "{lowers} lower(s) left: {small:?}");
            assert_eq!(entries(&small), 1, "one entry left of {}: {small:?}", entries(&case));
            shrunk += 1;
        }
        assert!(shrunk >= 3, "only {shrunk} drawn cases fit the failure");
    }

    #[test]
    fn minimize_keeps_only_what_the_failure_needs() {
        use crate::fuzz::case::CaseStart;
        let file = |d: &[u8]| {
            let mut n = crate::fuzz::gen::node(FileType::File, 0o600);
            n.data = Some(d.into());
            n
        };
        let layer = |paths: &[&str]| FlatLayer {
            root: crate::fuzz::gen::node(FileType::Dir, 0o755),
            entries: paths.iter().map(|p| FlatEntry::Node { path: (*p).into(), node: file(b"data") }).collect(),
        };
        let case = Case {
            start: CaseStart {
                lowers: vec![("L0".into(), layer(&["/a", "/b", "/c"])), ("L1".into(), layer(&["/d"]))],
                upper: Some(("U".into(), layer(&[]))),
                options: Options::default(),
                data: 0,
            },
            steps: vec![
                Command::Op(Op::Stat { path: "/a".into() }),
                Command::Op(Op::Unlink { path: "/b".into() }),
                Command::Op(Op::Stat { path: "/c".into() }),
            ],
        };
        // "Fails" while L0 holds /b and the unlink of /b is there.
        let fails = |c: &Case| {
            let has_b = c.start.lowers.iter().any(|(_, l)| l.entries.iter().any(|e| e.path() == "/b"));
            let unlinks = c.steps.iter().any(|s| matches!(s, Command::Op(Op::Unlink { .. })));
            (has_b && unlinks).then_some(())
        };
        let (small, _) = minimize(&case, fails, Duration::from_secs(10));
        assert_eq!(small.steps, vec![Command::Op(Op::Unlink { path: "/b".into() })]);
        assert_eq!(small.start.lowers.len(), 1);
        let entries = &small.start.lowers[0].1.entries;
        assert_eq!(entries.len(), 1);
        // Simplified too: no data, the default mode.
        let mut simplest = file(b"");
        simplest.mode = 0o644;
        assert_eq!(entries[0], FlatEntry::Node { path: "/b".into(), node: simplest });
    }
}
