//! Persistent layer trees: nodes, inodes and xattrs. No overlay logic lives here.
//!
//! A [`Layer`] is what one directory of `lowerdir=`, or the `upperdir=`, holds on disk. It is
//! an inode table (`imbl::HashMap`) whose directories map names to inode numbers
//! (`imbl::OrdMap`), so a clone is O(1) and an update copies only the path of the persistent
//! map it touches, never the tree. Two names that map to one inode are hard links, and the
//! inode's `nlink` counts them.
//!
//! Numbering: the lowers are numbered with 0 as the top-most, as in `lowerdir=L0:L1`. The
//! upper is above all of them.
//!
//! Overlay's own markers are stored as they are on disk: a whiteout is a character device
//! 0/0, an opaque directory carries `trusted.overlay.opaque`, and so on. What they mean is
//! decided in [`crate::lookup`], [`crate::whiteout`] and [`crate::readdir`], not here.
//!
//! The sizes and link counts follow tmpfs, on which the kernel oracle builds its layers: a
//! directory's `st_size` is 40 plus 20 per entry, and its `st_nlink` is 2 plus one per
//! subdirectory.

pub mod check;
mod data;
mod flat;

pub use data::{Digest, Digester, FileData, READ_INLINE_MAX};
pub use flat::{FlatEntry, FlatLayer, FlatNode};

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// An inode number inside one layer.
pub type Ino = u64;

/// A layer's extended attributes: name to value.
pub type Xattrs = imbl::OrdMap<String, Arc<[u8]>>;

/// A directory's entries: name to inode number.
pub type Entries = imbl::OrdMap<String, Ino>;

/// The identity of a layer: it survives edits and clones, so that an inode keeps its
/// identity across remounts with the same layer. Two layers built separately differ.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LayerId(pub u64);

impl LayerId {
    /// A fresh, process-unique layer id.
    pub fn fresh() -> LayerId {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        LayerId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// The copy-up origin of an upper inode: the lower inode it was copied from.
///
/// The kernel keeps it in `trusted.overlay.origin` as a file handle; the model keeps it here,
/// out of the xattrs, and leaves the xattr out of the on-disk view (see the crate docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Origin {
    /// The lower layer the inode came from.
    pub layer: LayerId,
    /// The inode in that layer.
    pub ino: Ino,
}

/// What kind of node an inode is, with its payload.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NodeKind {
    /// A directory and its entries.
    Dir(Entries),
    /// A regular file and its data.
    File(FileData),
    /// A symbolic link and its target.
    Symlink(Arc<str>),
    /// A character device, major and minor. 0/0 is overlay's whiteout.
    Char(u32, u32),
    /// A block device, major and minor.
    Block(u32, u32),
    /// A FIFO.
    Fifo,
}

/// The file type alone, as `d_type` or the `S_IFMT` bits report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum FileType {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A symbolic link.
    Symlink,
    /// A character device.
    Char,
    /// A block device.
    Block,
    /// A FIFO.
    Fifo,
}

impl FileType {
    /// The `S_IFMT` bits for this type.
    pub fn ifmt(self) -> u32 {
        match self {
            FileType::Dir => 0o040000,
            FileType::File => 0o100000,
            FileType::Symlink => 0o120000,
            FileType::Char => 0o020000,
            FileType::Block => 0o060000,
            FileType::Fifo => 0o010000,
        }
    }

    /// The type for `S_IFMT` bits, if they name one of the types above.
    pub fn from_ifmt(mode: u32) -> Option<FileType> {
        Some(match mode & 0o170000 {
            0o040000 => FileType::Dir,
            0o100000 => FileType::File,
            0o120000 => FileType::Symlink,
            0o020000 => FileType::Char,
            0o060000 => FileType::Block,
            0o010000 => FileType::Fifo,
            _ => return None,
        })
    }
}

impl NodeKind {
    /// The file type of this node.
    pub fn file_type(&self) -> FileType {
        match self {
            NodeKind::Dir(_) => FileType::Dir,
            NodeKind::File(_) => FileType::File,
            NodeKind::Symlink(_) => FileType::Symlink,
            NodeKind::Char(..) => FileType::Char,
            NodeKind::Block(..) => FileType::Block,
            NodeKind::Fifo => FileType::Fifo,
        }
    }
}

/// One inode of a layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Inode {
    /// The node kind and its payload.
    pub kind: NodeKind,
    /// The permission bits (`0o7777`), without the file type.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Extended attributes, overlay's markers included, exactly as on disk.
    pub xattrs: Xattrs,
    /// The number of names for this inode in the layer (for a directory: 2 plus one per
    /// subdirectory, as on tmpfs).
    pub nlink: u32,
    /// The copy-up origin, for an upper inode that was copied up (or redirected) from a lower.
    pub origin: Option<Origin>,
    /// An upper directory that may hold copied-up entries (the kernel's
    /// `trusted.overlay.impure`, kept here outside the xattrs, like `origin`).
    pub impure: bool,
}

impl Inode {
    /// A new inode of the given kind, mode, owner root, no xattrs and no link yet.
    pub fn new(kind: NodeKind, mode: u32) -> Inode {
        let nlink = if matches!(kind, NodeKind::Dir(_)) { 2 } else { 0 };
        Inode { kind, mode: mode & 0o7777, uid: 0, gid: 0, xattrs: Xattrs::new(), nlink, origin: None, impure: false }
    }

    /// An empty directory.
    pub fn dir(mode: u32) -> Inode {
        Inode::new(NodeKind::Dir(Entries::new()), mode)
    }

    /// A regular file with `data`.
    pub fn file(data: &[u8], mode: u32) -> Inode {
        Inode::new(NodeKind::File(FileData::from_bytes(data)), mode)
    }

    /// A symlink to `target` (mode 0777, as Linux creates them).
    pub fn symlink(target: &str) -> Inode {
        Inode::new(NodeKind::Symlink(Arc::from(target)), 0o777)
    }

    /// A whiteout as overlay writes it: a character device 0/0, mode 0000.
    pub fn whiteout() -> Inode {
        Inode::new(NodeKind::Char(0, 0), 0)
    }

    /// The file type.
    pub fn file_type(&self) -> FileType {
        self.kind.file_type()
    }

    /// Whether this is a directory.
    pub fn is_dir(&self) -> bool {
        matches!(self.kind, NodeKind::Dir(_))
    }

    /// The directory's entries, if this is a directory.
    pub fn entries(&self) -> Option<&Entries> {
        match &self.kind {
            NodeKind::Dir(e) => Some(e),
            _ => None,
        }
    }

    /// `st_size` as tmpfs reports it.
    pub fn size(&self) -> u64 {
        match &self.kind {
            NodeKind::Dir(e) => 40 + 20 * e.len() as u64,
            NodeKind::File(d) => d.len(),
            NodeKind::Symlink(t) => t.len() as u64,
            _ => 0,
        }
    }

    /// The value of xattr `name`, if set.
    pub fn xattr(&self, name: &str) -> Option<&[u8]> {
        self.xattrs.get(name).map(|v| &v[..])
    }
}

/// The hasher of the inode table: inode numbers are small sequential integers, so a
/// SplitMix64 finaliser spreads them well at a fraction of SipHash's cost.
#[derive(Clone, Copy, Debug, Default)]
pub struct InoHasher(u64);

impl std::hash::Hasher for InoHasher {
    fn finish(&self) -> u64 {
        let mut z = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Builds [`InoHasher`]s.
pub type InoHash = std::hash::BuildHasherDefault<InoHasher>;

/// A layer's inode table. (A persistent vector indexed by inode number was tried and not
/// kept: BENCHMARKS.md, "Model per case: readdir, LTO, and an inode table tried".)
type InodeTable = imbl::GenericHashMap<Ino, Arc<Inode>, InoHash, imbl::shared_ptr::DefaultSharedPtr>;

/// A layer: one persistent directory tree.
#[derive(Clone, Debug)]
pub struct Layer {
    id: LayerId,
    inodes: InodeTable,
    root: Ino,
    next_ino: Ino,
    /// The workdir's `index/` directory of an upper layer used with `index=on`: a directory
    /// inode of this table that no path reaches ([`crate::index`]).
    index: Option<Ino>,
}

impl PartialEq for Layer {
    /// Two layers are equal when their trees are equal, whatever their ids.
    fn eq(&self, other: &Layer) -> bool {
        self.to_flat() == other.to_flat()
    }
}

impl Default for Layer {
    fn default() -> Layer {
        Layer::new()
    }
}

/// The root inode number of every layer built here.
pub const ROOT_INO: Ino = 1;

impl Layer {
    /// An empty layer: a root directory with mode 0755, owned by root.
    pub fn new() -> Layer {
        let mut root = Inode::dir(0o755);
        root.nlink = 2;
        let mut inodes = InodeTable::default();
        inodes.insert(ROOT_INO, Arc::new(root));
        Layer { id: LayerId::fresh(), inodes, root: ROOT_INO, next_ino: ROOT_INO + 1, index: None }
    }

    /// This layer's identity.
    pub fn id(&self) -> LayerId {
        self.id
    }

    /// The same tree under a fresh identity, as if copied to a new directory.
    pub fn with_fresh_id(mut self) -> Layer {
        self.id = LayerId::fresh();
        self
    }

    /// The root directory's inode number.
    pub fn root(&self) -> Ino {
        self.root
    }

    /// Whether `self` and `other` share their whole inode table (one is an unchanged clone of
    /// the other), in O(1): `true` means the same tree; `false` says nothing (an update that
    /// changed nothing may still have copied the table's path).
    pub fn ptr_eq(&self, other: &Layer) -> bool {
        self.inodes.ptr_eq(&other.inodes) && self.root == other.root && self.next_ino == other.next_ino
    }

    /// The workdir's `index/` directory, if a mount with `index=on` made it
    /// ([`crate::index`]).
    pub(crate) fn index_dir(&self) -> Option<Ino> {
        self.index
    }

    /// The workdir's `index/` directory, made on first use (kernel: `ovl_get_indexdir`).
    pub(crate) fn index_dir_or_make(&mut self) -> Ino {
        match self.index {
            Some(dir) => dir,
            None => {
                let dir = self.alloc(Inode::dir(0));
                self.index = Some(dir);
                dir
            }
        }
    }

    /// The number of inodes, the root included.
    pub fn inode_count(&self) -> usize {
        self.inodes.len()
    }

    /// The inode `ino`.
    ///
    /// # Panics
    /// If `ino` is not in this layer: a broken model invariant.
    pub fn get(&self, ino: Ino) -> &Inode {
        self.inodes.get(&ino).expect("layer invariant: inode number is live")
    }

    /// The inode `ino`, if it is in this layer.
    pub fn try_get(&self, ino: Ino) -> Option<&Inode> {
        self.inodes.get(&ino).map(|i| &**i)
    }

    /// Inode `ino` as a shared pointer (an O(1) clone), if it is in this layer: what an open
    /// file keeps of its inode ([`crate::fd`]).
    pub(crate) fn get_shared(&self, ino: Ino) -> Option<Arc<Inode>> {
        self.inodes.get(&ino).cloned()
    }

    /// Puts inode `ino` back in the map, linked nowhere: the view of an open file whose last
    /// name is gone ([`crate::fd`]). Only on a throw-away clone.
    pub(crate) fn restore(&mut self, ino: Ino, inode: Arc<Inode>) {
        self.inodes.insert(ino, inode);
    }

    /// Changes inode `ino` in place (copying only the map path to it).
    pub fn update<R>(&mut self, ino: Ino, f: impl FnOnce(&mut Inode) -> R) -> R {
        f(Arc::make_mut(self.inodes.get_mut(&ino).expect("layer invariant: inode number is live")))
    }

    /// The entry `name` of directory `dir`, if present.
    pub fn child(&self, dir: Ino, name: &str) -> Option<Ino> {
        self.get(dir).entries().and_then(|e| e.get(name).copied())
    }

    /// Walks `path` (components, no symlink following) from the root.
    pub fn walk<'a>(&self, path: impl IntoIterator<Item = &'a str>) -> Option<Ino> {
        let mut ino = self.root;
        for name in path {
            ino = self.child(ino, name)?;
        }
        Some(ino)
    }

    /// Adds a new inode, not yet linked anywhere, and returns its number.
    pub fn alloc(&mut self, mut inode: Inode) -> Ino {
        let ino = self.next_ino;
        self.next_ino += 1;
        if !inode.is_dir() {
            inode.nlink = 0;
        } else {
            inode.nlink = 2;
        }
        self.inodes.insert(ino, Arc::new(inode));
        ino
    }

    /// Links inode `ino` into directory `dir` as `name`.
    ///
    /// # Panics
    /// If `dir` is not a directory or `name` is taken: the caller checks both.
    pub fn link(&mut self, dir: Ino, name: &str, ino: Ino) {
        let is_dir = self.get(ino).is_dir();
        if !is_dir {
            self.update(ino, |i| i.nlink += 1);
        }
        self.add_entry(dir, name, ino, is_dir);
    }

    /// Enters `name` → `ino` in directory `dir`, counting a subdirectory in its link count:
    /// the directory's half of [`Layer::link`].
    fn add_entry(&mut self, dir: Ino, name: &str, ino: Ino, is_dir: bool) {
        self.update(dir, |d| {
            if is_dir {
                d.nlink += 1;
            }
            match &mut d.kind {
                NodeKind::Dir(e) => {
                    let old = e.insert(name.to_owned(), ino);
                    assert!(old.is_none(), "layer invariant: link over an existing name");
                }
                _ => panic!("layer invariant: link into a non-directory"),
            }
        });
    }

    /// Creates `inode` as `name` in `dir` and returns its number: [`Layer::alloc`] then
    /// [`Layer::link`], with the new inode's link count set before it goes in the table.
    pub fn create(&mut self, dir: Ino, name: &str, mut inode: Inode) -> Ino {
        let is_dir = inode.is_dir();
        inode.nlink = if is_dir { 2 } else { 1 };
        let ino = self.next_ino;
        self.next_ino += 1;
        self.inodes.insert(ino, Arc::new(inode));
        self.add_entry(dir, name, ino, is_dir);
        ino
    }

    /// Removes the name `name` from `dir`, dropping the inode when its last name goes. A
    /// directory is dropped with everything under it.
    ///
    /// # Panics
    /// If there is no such name.
    pub fn unlink(&mut self, dir: Ino, name: &str) -> Ino {
        let ino = self.update(dir, |d| match &mut d.kind {
            NodeKind::Dir(e) => e.remove(name).expect("layer invariant: unlink of a present name"),
            _ => panic!("layer invariant: unlink in a non-directory"),
        });
        if self.get(ino).is_dir() {
            self.update(dir, |d| d.nlink -= 1);
            self.drop_tree(ino);
        } else {
            let left = self.update(ino, |i| {
                i.nlink -= 1;
                i.nlink
            });
            if left == 0 {
                self.inodes.remove(&ino);
            }
        }
        ino
    }

    /// Drops a detached directory and everything under it.
    fn drop_tree(&mut self, ino: Ino) {
        let inode = self.inodes.remove(&ino).expect("layer invariant: inode number is live");
        if let NodeKind::Dir(entries) = &inode.kind {
            for (_, child) in entries.iter() {
                if self.get(*child).is_dir() {
                    self.drop_tree(*child);
                } else {
                    let left = self.update(*child, |i| {
                        i.nlink -= 1;
                        i.nlink
                    });
                    if left == 0 {
                        self.inodes.remove(child);
                    }
                }
            }
        }
    }

    /// Removes the name `name` from `dir` but keeps its inode alive, to be linked again
    /// elsewhere (the middle of a rename or an exchange).
    pub fn detach(&mut self, dir: Ino, name: &str) -> Ino {
        let ino = self.update(dir, |d| match &mut d.kind {
            NodeKind::Dir(e) => e.remove(name).expect("layer invariant: detach of a present name"),
            _ => panic!("layer invariant: detach in a non-directory"),
        });
        if self.get(ino).is_dir() {
            self.update(dir, |d| d.nlink -= 1);
        } else {
            self.update(ino, |i| i.nlink -= 1);
        }
        ino
    }

    /// Moves the name `from_name` in `from_dir` to `to_name` in `to_dir`, which must be free.
    pub fn rename(&mut self, from_dir: Ino, from_name: &str, to_dir: Ino, to_name: &str) {
        let ino = self.detach(from_dir, from_name);
        self.link(to_dir, to_name, ino);
    }

    /// Sets the xattr `name` on `ino`.
    pub fn set_xattr(&mut self, ino: Ino, name: &str, value: &[u8]) {
        self.update(ino, |i| {
            i.xattrs.insert(name.to_owned(), Arc::from(value));
        });
    }

    /// Removes the xattr `name` from `ino`, returning whether it was set.
    pub fn remove_xattr(&mut self, ino: Ino, name: &str) -> bool {
        self.update(ino, |i| i.xattrs.remove(name).is_some())
    }

    /// Puts `inode` at `path` (`/`-separated, from the root), creating missing parents as
    /// directories with mode 0755 (see `Layer::new_parent`) and replacing whatever was
    /// there. For building layers and for offline edits. It does not ask whether a real
    /// layer could hold the node: [`Layer::try_put`] does ([`check::check_node`]).
    ///
    /// # Panics
    /// If `path` names the root, which cannot be replaced: callers check.
    pub fn put(&mut self, path: &str, inode: Inode) -> Ino {
        let (dir, name) = self.put_parents(path);
        if self.child(dir, name).is_some() {
            self.unlink(dir, name);
        }
        self.create(dir, name, inode)
    }

    /// Makes `path` another name for the inode at `existing`. For building layers.
    ///
    /// Returns `None` when `existing` is missing or is a directory, when `path` is the root,
    /// or when making `path`'s parents would remove `existing` itself.
    pub fn put_link(&mut self, path: &str, existing: &str) -> Option<Ino> {
        let ino = self.walk(components(existing))?;
        if self.get(ino).is_dir() || components(path).next().is_none() {
            return None;
        }
        let (dir, name) = self.put_parents(path);
        // Making the parents may have removed `existing` itself.
        self.try_get(ino)?;
        match self.child(dir, name) {
            Some(same) if same == ino => return Some(ino),
            Some(_) => {
                self.unlink(dir, name);
            }
            None => {}
        }
        self.link(dir, name, ino);
        Some(ino)
    }

    /// Removes whatever is at `path`, returning whether something was there. For offline edits.
    pub fn remove(&mut self, path: &str) -> bool {
        let parts: Vec<&str> = components(path).collect();
        let Some((name, parent)) = parts.split_last() else {
            return false;
        };
        match self.walk(parent.iter().copied()) {
            Some(dir) if self.child(dir, name).is_some() => {
                self.unlink(dir, name);
                true
            }
            _ => false,
        }
    }

    fn put_parents<'p>(&mut self, path: &'p str) -> (Ino, &'p str) {
        let parts: Vec<&str> = components(path).collect();
        let (name, parent) = parts.split_last().expect("put needs a non-root path");
        let mut dir = self.root;
        for part in parent {
            dir = match self.child(dir, part) {
                Some(c) if self.get(c).is_dir() => c,
                Some(_) => {
                    self.unlink(dir, part);
                    let made = self.new_parent(dir);
                    self.create(dir, part, made)
                }
                None => {
                    let made = self.new_parent(dir);
                    self.create(dir, part, made)
                }
            };
        }
        (dir, name)
    }

    /// A directory made as a missing parent inside `dir`: mode 0755, owned by root, and, as
    /// `mkdir(2)` does, with the group and the set-group-ID bit of a set-group-ID `dir`.
    fn new_parent(&self, dir: Ino) -> Inode {
        let parent = self.get(dir);
        let mut made = Inode::dir(0o755);
        if parent.mode & 0o2000 != 0 {
            made.mode |= 0o2000;
            made.gid = parent.gid;
        }
        made
    }

    /// The root (as `/`), then [`Layer::walk_all`], with a copy of each inode: what the layer
    /// holds, the marks that the flat form leaves out (a copy-up origin, `impure`) included.
    /// For exact comparisons.
    pub fn walk_inodes(&self) -> Vec<(String, Ino, Inode)> {
        std::iter::once(("/".to_owned(), self.root))
            .chain(self.walk_all())
            .map(|(p, i)| (p, i, self.get(i).clone()))
            .collect()
    }

    /// Every name reachable from the root, with the inode it names (a hard-linked inode once
    /// per name), parents before children, names in byte order.
    pub fn walk_all(&self) -> Vec<(String, Ino)> {
        let mut out = Vec::new();
        self.walk_into(self.root, String::new(), &mut out);
        out
    }

    fn walk_into(&self, dir: Ino, prefix: String, out: &mut Vec<(String, Ino)>) {
        if let Some(entries) = self.get(dir).entries() {
            for (name, child) in entries.iter() {
                let path = format!("{prefix}/{name}");
                out.push((path.clone(), *child));
                if self.get(*child).is_dir() {
                    self.walk_into(*child, path, out);
                }
            }
        }
    }
}

/// The components of a `/`-separated path, empty ones dropped.
pub fn components(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|c| !c.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hard_links_count_and_drop() {
        let mut l = Layer::new();
        l.put("/a/f", Inode::file(b"x", 0o644));
        let ino = l.put_link("/b", "/a/f").unwrap();
        assert_eq!(l.get(ino).nlink, 2);
        assert!(l.remove("/a"));
        assert_eq!(l.get(ino).nlink, 1);
        assert!(l.remove("/b"));
        assert!(l.try_get(ino).is_none());
        assert_eq!(l.inode_count(), 1);
    }

    #[test]
    fn dir_nlink_and_size_follow_tmpfs() {
        let mut l = Layer::new();
        l.put("/d/e/f", Inode::file(b"", 0o644));
        l.put("/d/g", Inode::file(b"", 0o644));
        let d = l.walk(["d"]).unwrap();
        assert_eq!(l.get(d).nlink, 3);
        assert_eq!(l.get(d).size(), 80);
        l.rename(d, "e", l.root(), "e");
        assert_eq!(l.get(d).nlink, 2);
        assert_eq!(l.get(l.root()).nlink, 4);
    }

    #[test]
    fn clone_shares_and_diverges() {
        let mut a = Layer::new();
        a.put("/f", Inode::file(b"one", 0o644));
        let b = a.clone();
        a.put("/f", Inode::file(b"two", 0o644));
        let fb = b.walk(["f"]).unwrap();
        assert_eq!(b.get(fb).kind, NodeKind::File(FileData::from_bytes(b"one")));
        assert_eq!(a.id(), b.id());
    }
}
