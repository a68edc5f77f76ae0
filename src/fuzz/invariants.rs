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

use super::case::{final_commands, Answer, Case};
use super::machine::exec_quiet;
use crate::backend::{dump_merged, Command, ModelBackend, Reply};
use crate::dcache::CachePolicy;
use crate::layer::{FlatLayer, Layer};
use crate::ops::{Access, Op};
use std::collections::HashMap;

/// Runs `case` on a fresh model with every invariant checked; the number of commands run,
/// or the first broken invariant, in words.
///
/// The model runs with every lookup through the cache ([`CachePolicy::Always`]), and each
/// command is also run on a clone that does not use it: the answers must be the same. The
/// determinism twin shares the cache the first run just filled, so it answers from hits.
pub fn check_case(case: &Case) -> Result<usize, String> {
    let mut model = ModelBackend::with_cache_policy(CachePolicy::Always);
    let names = case.start.layer_names();
    let upper = case.start.upper.as_ref().map(|(n, _)| n.clone());
    let mut mounted = false;
    let mut count = 0;
    let mut run = |cmd: &Command, mounted: &mut bool, i: usize| -> Result<(), String> {
        let before = model.clone();
        let upper_before = upper.as_deref().and_then(|u| before.layer(u)).map(|l| l.to_flat());
        let answer = exec_quiet(&mut model, cmd);
        let fail = |what: String| Err(format!("step {i} ({cmd:?}): {what}"));
        if let Answer::Panic(p) = &answer {
            return fail(format!("the model panicked: {p}"));
        }
        let mut twin = before.clone();
        let again = exec_quiet(&mut twin, cmd);
        if again != answer {
            return fail(format!("not deterministic: {answer:?} then {again:?} from the same state"));
        }
        let mut blind = before.clone();
        blind.set_cache_policy(CachePolicy::Off);
        let uncached = exec_quiet(&mut blind, cmd);
        if uncached != answer {
            return fail(format!("the lookup cache changed the answer: {answer:?} with it, {uncached:?} without"));
        }
        if let (Command::DumpMerged, Some(mut ov)) = (cmd, before.overlay().cloned()) {
            let by_path = Answer::Reply(Reply::Merged(dump_merged(|op| ov.apply(op))));
            if by_path != answer {
                return fail(format!("the dentry walk read {answer:?}, single operations {by_path:?}"));
            }
            let after = model.overlay().expect("a dump leaves the overlay mounted");
            if ov.upper().map(Layer::walk_inodes) != after.upper().map(Layer::walk_inodes)
                || ov.xwhiteout_layers != after.xwhiteout_layers
            {
                return fail("the dentry walk and single operations left different marks".into());
            }
        }
        let upper_after = upper.as_deref().and_then(|u| model.layer(u)).map(|l| l.to_flat());
        let exact_of = |b: &ModelBackend| upper.as_deref().and_then(|u| b.layer(u)).map(|l| l.walk_inodes());
        if exact_of(&twin) != exact_of(&model) {
            return fail("not deterministic: the upper layer differs between two runs".into());
        }
        if let Command::Op(op) = cmd {
            if reads_only(op) && upper_before != upper_after {
                return fail("a read changed the upper layer".into());
            }
            let read_only_mount = before.overlay().is_some_and(|o| o.upper().is_none() || o.options().read_only);
            if read_only_mount && upper_before != upper_after {
                return fail("an operation on a read-only mount changed the upper layer".into());
            }
        }
        for n in &names {
            if let Some(l) = model.layer(n) {
                well_formed(&l).or_else(|e| fail(format!("layer {n}: {e}")))?;
            }
        }
        match cmd {
            Command::Mount { .. } => *mounted = answer.is_done(),
            Command::Unmount if matches!(answer, Answer::Reply(_)) => *mounted = false,
            _ => {}
        }
        Ok(())
    };
    for cmd in case.commands() {
        run(&cmd, &mut mounted, count)?;
        count += 1;
    }
    for cmd in final_commands(mounted, &names) {
        run(&cmd, &mut mounted, count)?;
        count += 1;
    }
    Ok(count)
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
