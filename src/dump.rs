//! The whole merged view, read as a user reads it: `readdir` from the root down, and
//! `lstat`, `read`, `readlink`, `listxattr` and `getxattr` of every listed name.
//!
//! [`dump_merged`] reads it through single operations, by path, so that both backends read
//! it the same way; the kernel backend uses it. [`Overlay::dump_merged`] reads the same
//! view on the model by walking dentries, each name looked up once in its parent, as the
//! kernel's dentry cache would let it. The two give the same tree and leave the overlay in
//! the same state (the fuzzer's model-only invariants check this on every case).

use crate::errno::{Errno, SysResult};
use crate::layer::{Digest, FileType};
use crate::lookup::Dentry;
use crate::ops::{Op, Outcome, Stat};
use crate::overlay::Overlay;
use crate::path::{join, Follow, PATH_LEN_MAX};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One entry of the merged view: what `lstat` says, and the content where there is one.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MergedEntry {
    /// `lstat` of the entry. A listed name can fail `lstat` (a whiteout in a non-merged
    /// directory is listed but gives ENOENT).
    pub stat: Result<Stat, Errno>,
    /// A regular file's data, when it is at most [`crate::layer::READ_INLINE_MAX`] bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Vec<u8>>,
    /// A larger regular file's digest, as `read` gives it ([`Outcome::Digest`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
    /// A symlink's target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// The xattrs visible through the mount.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

impl MergedEntry {
    /// An entry with this `lstat` answer and nothing read yet.
    fn of(stat: Result<Stat, Errno>) -> MergedEntry {
        MergedEntry { stat, data: None, digest: None, target: None, xattrs: BTreeMap::new() }
    }

    /// Keeps what a `read` of the entry returned: its bytes or its digest.
    fn read(&mut self, read: Outcome) {
        match read {
            Outcome::Data(d) => self.data = Some(d),
            Outcome::Digest(d) => self.digest = Some(d),
            _ => {}
        }
    }
}

/// The merged view: every path reachable by `readdir` from the root (the root is `/`).
pub type MergedTree = BTreeMap<String, MergedEntry>;

/// Reads the whole merged view through `op`, with readdir, lstat, read, readlink,
/// listxattr and getxattr only. The kernel backend reads the view with it; the model's
/// [`Overlay::dump_merged`] must give the same tree, and the fuzzer's invariants check that
/// it does.
pub fn dump_merged(mut op: impl FnMut(&Op) -> Outcome) -> MergedTree {
    match try_dump_merged(|o| Ok::<_, std::convert::Infallible>(op(o))) {
        Ok(tree) => tree,
        Err(never) => match never {},
    }
}

/// [`dump_merged`] through an `op` that can fail as a whole (a backend that cannot carry
/// an operation out, as opposed to one that answers an errno): the first such failure is
/// the result. The walk goes on past it (the failed operation reads as EIO), so `op` sees
/// the same calls either way.
pub fn try_dump_merged<E>(mut op: impl FnMut(&Op) -> Result<Outcome, E>) -> Result<MergedTree, E> {
    let mut failure = None;
    let tree = walk_merged(|o| match op(o) {
        Ok(outcome) => outcome,
        Err(e) => {
            failure.get_or_insert(e);
            Outcome::Err(Errno::EIO)
        }
    });
    match failure {
        Some(e) => Err(e),
        None => Ok(tree),
    }
}

fn walk_merged(mut op: impl FnMut(&Op) -> Outcome) -> MergedTree {
    let mut tree = MergedTree::new();
    let mut queue = vec!["/".to_owned()];
    while let Some(path) = queue.pop() {
        let stat = match op(&Op::Lstat { path: path.clone() }) {
            Outcome::Stat(s) => Ok(s),
            Outcome::Err(e) => Err(e),
            other => panic!("lstat answered {other:?}"),
        };
        let mut entry = MergedEntry::of(stat.clone());
        if let Ok(st) = &stat {
            match st.kind {
                FileType::File => {
                    entry.read(op(&Op::Read { path: path.clone() }));
                }
                FileType::Symlink => {
                    if let Outcome::Target(t) = op(&Op::Readlink { path: path.clone() }) {
                        entry.target = Some(t);
                    }
                }
                FileType::Dir => {
                    if let Outcome::Entries(names) = op(&Op::Readdir { path: path.clone() }) {
                        for name in names.keys() {
                            queue.push(join(&path, name));
                        }
                    }
                }
                _ => {}
            }
            if st.kind != FileType::Symlink {
                if let Outcome::XattrNames(names) = op(&Op::Listxattr { path: path.clone() }) {
                    for name in names {
                        if let Outcome::Xattr(v) = op(&Op::Getxattr { path: path.clone(), name: name.clone() }) {
                            entry.xattrs.insert(name, v);
                        }
                    }
                }
            }
        }
        tree.insert(path, entry);
    }
    tree
}

impl Overlay {
    /// The merged view, as [`dump_merged`] reads it through [`Overlay::apply`], read by
    /// walking dentries: each listed name is looked up once, in its parent's dentry, instead
    /// of resolving its whole path for each of the five calls.
    ///
    /// The lookups are the ones the path walks make, in the same order, so they leave the
    /// same marks (a directory's copy-up origin, a layer's xattr-whiteout flag); the calls
    /// after the walk are the same functions (`getattr`, `read_opened`, `symlink_target`,
    /// `readdir_entries`, `listxattr_of`, `getxattr_of`). A name that a path walk would
    /// not take as a plain component (`.` or `..`, which no real layer holds) is resolved by
    /// path as the calls would.
    pub fn dump_merged(&mut self) -> MergedTree {
        self.unspecified = None;
        let mut tree = MergedTree::new();
        // Each directory listed so far; the names still to read, with their parent's index.
        // Room for a generated case's view without growing (of the first 1,000 cases' views,
        // the median has 7 paths, 3 of them directories).
        let mut dirs: Vec<Dentry> = Vec::with_capacity(8);
        let mut queue: Vec<(String, usize)> = Vec::with_capacity(16);
        let root = self.root_dentry();
        self.dump_entry(&mut tree, "/".to_owned(), Ok(root), &mut dirs, &mut queue);
        while let Some((path, parent)) = queue.pop() {
            let name = &path[path.rfind('/').expect("an absolute path") + 1..];
            let found = if path.len() >= PATH_LEN_MAX {
                Err(Errno::ENAMETOOLONG)
            } else if name == "." || name == ".." {
                self.resolve(&path, Follow::No).map(|mut chain| chain.pop().expect("chain"))
            } else {
                let d = self.lookup_child(&dirs[parent], name);
                d.and_then(|d| if d.is_positive() { Ok(d) } else { Err(Errno::ENOENT) })
            };
            self.dump_entry(&mut tree, path, found, &mut dirs, &mut queue);
        }
        tree
    }

    /// Reads one object of the merged view found at `path` (see [`Overlay::dump_merged`]),
    /// queueing a directory's names.
    fn dump_entry(
        &mut self,
        tree: &mut MergedTree,
        path: String,
        found: SysResult<Dentry>,
        dirs: &mut Vec<Dentry>,
        queue: &mut Vec<(String, usize)>,
    ) {
        let d = match found {
            Ok(d) => d,
            Err(e) => {
                tree.insert(path, MergedEntry::of(Err(e)));
                return;
            }
        };
        let stat = self.getattr(&d);
        let mut entry = MergedEntry::of(Ok(stat));
        match d.ftype.expect("positive") {
            // `open(O_RDONLY)` of a regular file passes every check of `open_at` but one: the
            // lazy lookup of its data in the data-only layers, which must have found it
            // (`ovl_verify_lowerdata`, as `Overlay::open` checks it).
            FileType::File => {
                if let Ok(read) = self.verify_lower_data(&d).and_then(|()| self.read_opened(&d)) {
                    entry.read(read);
                }
            }
            FileType::Symlink => entry.target = Some(self.symlink_target(&d)),
            FileType::Dir => {
                let index = dirs.len();
                if self.check_impure_real_dir(&d).is_ok() {
                    self.readdir_names(&d, |name| queue.push((join(&path, name), index)));
                }
            }
            _ => {}
        }
        if d.ftype != Some(FileType::Symlink) {
            for name in self.listxattr_of(&d) {
                if let Ok(v) = Overlay::xattr_name(&name).and_then(|()| self.getxattr_of(&d, &name)) {
                    entry.xattrs.insert(name, v);
                }
            }
        }
        if d.is_dir() {
            dirs.push(d);
        }
        tree.insert(path, entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::{Inode, Layer};
    use crate::mount::Options;

    /// The dentry walk and the single operations give the same tree and leave the same
    /// marks, on views that the generated cases do not reach.
    #[test]
    fn the_dentry_walk_reads_what_single_operations_read() {
        // 15 directories of 255-byte names: 3,840 bytes, close to PATH_MAX.
        let deep = |c: char| -> String { (0..15).map(|_| format!("/{}", c.to_string().repeat(255))).collect() };
        let mut lower = Layer::new();
        // Names no real layer holds: `.` and `..` resolve as path components do. Each
        // listing of such a name lists its directory again, until the path is too long;
        // deep down, that is soon.
        lower.put(&format!("{}/..", deep('a')), Inode::file(b"dotdot", 0o644));
        lower.put(&format!("{}/.", deep('b')), Inode::file(b"dot", 0o644));
        // A name over NAME_MAX is ENAMETOOLONG at lookup.
        lower.put(&format!("/d/{}", "x".repeat(300)), Inode::file(b"", 0o644));
        // Paths of 4096 bytes or more are ENAMETOOLONG before any lookup.
        lower.put(&format!("{}/{}/f", deep('c'), "c".repeat(255)), Inode::file(b"deep", 0o644));
        // `user.*` is not readable on a special file; an unknown namespace is EOPNOTSUPP.
        let fifo = lower.put("/d/fifo", Inode::new(crate::layer::NodeKind::Fifo, 0o644));
        lower.set_xattr(fifo, "user.hidden", b"1");
        let file = lower.put("/d/f", Inode::file(b"f", 0o644));
        lower.set_xattr(file, "user.shown", b"1");
        lower.set_xattr(file, "odd.namespace", b"1");
        lower.put("/d/link", Inode::symlink("/d/f"));
        let mut upper = Layer::new();
        // A merged directory whose upper has no origin yet: the lookup records it.
        upper.put("/d/g", Inode::file(b"g", 0o600));
        let ov = Overlay::mount(vec![lower, Layer::new()], Some(upper), Options::default()).expect("mount");
        let (mut walked, mut by_path) = (ov.clone(), ov);
        let tree = walked.dump_merged();
        assert_eq!(tree, dump_merged(|op| by_path.apply(op)));
        assert_eq!(walked.upper().map(Layer::walk_inodes), by_path.upper().map(Layer::walk_inodes));
        // The cases above are in the tree, so that the comparison covered them.
        assert!(tree["/d"].stat.is_ok());
        let dir = |p: &str| tree[p].stat.as_ref().map(|s| s.kind) == Ok(FileType::Dir);
        assert!(dir(&format!("{}/..", deep('a'))) && dir(&format!("{}/.", deep('b'))));
        assert_eq!(tree[&format!("/d/{}", "x".repeat(300))].stat, Err(Errno::ENAMETOOLONG));
        assert!(tree.iter().any(|(p, e)| p.len() >= PATH_LEN_MAX && e.stat == Err(Errno::ENAMETOOLONG)));
        assert!(tree["/d/fifo"].xattrs.is_empty());
        assert_eq!(tree["/d/f"].xattrs.keys().collect::<Vec<_>>(), ["user.shown"]);
        assert_eq!(tree["/d/link"].target.as_deref(), Some("/d/f"));
        let d = walked.upper().and_then(|u| u.walk(["d"])).expect("the upper /d");
        assert!(walked.upper().expect("upper").get(d).origin.is_some(), "the lookup of /d recorded its origin");
    }
}
