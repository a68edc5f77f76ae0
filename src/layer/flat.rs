//! A flat, serialisable form of a layer: every path with its node, hard links as references
//! to the first path of their inode. It is how layers travel to the kernel worker and back,
//! and how two layers are compared: raw inode numbers, link counts and directory sizes are
//! left out, because they follow from the structure.

use super::check::{check_entry, check_root, Refusal};
use super::{Entries, FileData, FileType, Ino, InoHash, Inode, InodeTable, Layer, LayerId, NodeKind, Xattrs, ROOT_INO};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// One node of a flat layer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlatNode {
    /// The file type.
    pub kind: FileType,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// A regular file's data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<FileData>,
    /// A symlink's target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// A device's major and minor numbers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rdev: Option<(u32, u32)>,
    /// Extended attributes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

/// One path of a flat layer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum FlatEntry {
    /// A node, first seen at this path.
    Node {
        /// The path, from the layer root, starting with `/`.
        path: String,
        /// The node.
        node: FlatNode,
    },
    /// Another name for the node first seen at `to`.
    Link {
        /// The path of this name.
        path: String,
        /// The path where the inode was first seen.
        to: String,
    },
}

impl FlatEntry {
    /// The path of this entry.
    pub fn path(&self) -> &str {
        match self {
            FlatEntry::Node { path, .. } | FlatEntry::Link { path, .. } => path,
        }
    }
}

/// A layer as a list of paths, parents before children, names in byte order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlatLayer {
    /// The root directory's metadata.
    pub root: FlatNode,
    /// Every other path.
    pub entries: Vec<FlatEntry>,
}

impl FlatNode {
    /// The flat form of an inode.
    pub fn of(inode: &Inode) -> FlatNode {
        let (data, target, rdev) = match &inode.kind {
            NodeKind::File(d) => (Some(d.clone()), None, None),
            NodeKind::Symlink(t) => (None, Some(String::from(&**t)), None),
            NodeKind::Char(a, b) | NodeKind::Block(a, b) => (None, None, Some((*a, *b))),
            NodeKind::Dir(_) | NodeKind::Fifo => (None, None, None),
        };
        FlatNode {
            kind: inode.file_type(),
            mode: inode.mode,
            uid: inode.uid,
            gid: inode.gid,
            data,
            target,
            rdev,
            xattrs: xattrs_of(inode),
        }
    }

    /// The inode this flat node describes (not yet linked anywhere).
    pub fn to_inode(&self) -> Inode {
        let rdev = self.rdev.unwrap_or((0, 0));
        let kind = match self.kind {
            FileType::Dir => NodeKind::Dir(Default::default()),
            FileType::File => NodeKind::File(self.data.clone().unwrap_or_default()),
            FileType::Symlink => NodeKind::Symlink(Arc::from(self.target.as_deref().unwrap_or_default())),
            FileType::Char => NodeKind::Char(rdev.0, rdev.1),
            FileType::Block => NodeKind::Block(rdev.0, rdev.1),
            FileType::Fifo => NodeKind::Fifo,
        };
        let mut inode = Inode::new(kind, self.mode);
        inode.uid = self.uid;
        inode.gid = self.gid;
        if !self.xattrs.is_empty() {
            inode.xattrs = shared_xattrs(&self.xattrs);
        }
        inode
    }
}

/// How many xattr maps [`shared_xattrs`] keeps.
const XATTR_MAPS_KEPT: usize = 32;

/// The xattr maps built last on this thread: each one's [`xattrs_print`] (0 for an empty
/// slot), the maps, and the slot the next one goes to.
struct XattrMaps {
    prints: [u64; XATTR_MAPS_KEPT],
    maps: [Xattrs; XATTR_MAPS_KEPT],
    next: usize,
}

thread_local! {
    static XATTR_MAPS: std::cell::RefCell<XattrMaps> = std::cell::RefCell::new(XattrMaps {
        prints: [0; XATTR_MAPS_KEPT],
        maps: std::array::from_fn(|_| Xattrs::new()),
        next: 0,
    });
}

/// The xattr map of a flat node, shared with an inode built before with the same xattrs if
/// one of the last few was: a map is persistent, so a clone costs one reference count, where
/// building it costs a node, and a name and a value for each xattr (layers draw their
/// xattrs from few sets: an opaque or whiteout marker, a `user.` pair). An inode that
/// changes its xattrs later copies the map's node then, as after any clone.
fn shared_xattrs(flat: &BTreeMap<String, Vec<u8>>) -> Xattrs {
    let print = xattrs_print(flat);
    XATTR_MAPS.with(|kept| {
        let mut kept = kept.borrow_mut();
        for (i, _) in kept.prints.iter().enumerate().filter(|(_, p)| **p == print) {
            if same_xattrs(flat, &kept.maps[i]) {
                return kept.maps[i].clone();
            }
        }
        let mut built = Xattrs::new();
        let mut small = flat.len() <= XATTR_KEPT_COUNT_MAX;
        for (k, v) in flat {
            small &= k.len() + v.len() <= XATTR_KEPT_BYTES_MAX;
            built.insert(k.clone(), Arc::from(&v[..]));
        }
        // Only small maps are kept, so that the few kept never hold much memory alive.
        if small {
            let slot = kept.next;
            kept.prints[slot] = print;
            kept.maps[slot] = built.clone();
            kept.next = (slot + 1) % XATTR_MAPS_KEPT;
        }
        built
    })
}

/// The most xattrs in a map that [`shared_xattrs`] keeps.
const XATTR_KEPT_COUNT_MAX: usize = 4;
/// The longest name and value, together, of an xattr in a map that [`shared_xattrs`] keeps.
const XATTR_KEPT_BYTES_MAX: usize = 128;

/// A cheap digest of a non-empty xattr map, so that most maps that differ are told apart
/// without comparing them: the number of xattrs, and each one's name length and last byte
/// and value length and first byte. Never 0 (the digest of an empty slot).
fn xattrs_print(flat: &BTreeMap<String, Vec<u8>>) -> u64 {
    let mut print = flat.len() as u64;
    for (k, v) in flat {
        let name = (k.len() as u64) << 8 | u64::from(k.as_bytes().last().copied().unwrap_or(0));
        let value = (v.len() as u64) << 8 | u64::from(v.first().copied().unwrap_or(0));
        print = print.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (name << 32 | value);
    }
    print | 1 << 63
}

/// Whether `built` holds exactly the xattrs of `flat`.
fn same_xattrs(flat: &BTreeMap<String, Vec<u8>>, built: &Xattrs) -> bool {
    flat.len() == built.len() && flat.iter().zip(built.iter()).all(|((k, v), (bk, bv))| k == bk && v[..] == bv[..])
}

/// An inode's xattrs as a flat node holds them. They come sorted, so they are inserted one
/// by one: `collect` would buffer and sort them first, and most inodes have none.
fn xattrs_of(inode: &Inode) -> BTreeMap<String, Vec<u8>> {
    let mut xattrs = BTreeMap::new();
    // An iterator over an empty `OrdMap` still sets up its two cursors.
    if inode.xattrs.is_empty() {
        return xattrs;
    }
    for (k, v) in inode.xattrs.iter() {
        xattrs.insert(k.clone(), v.to_vec());
    }
    xattrs
}

impl Layer {
    /// The flat form of this layer.
    pub fn to_flat(&self) -> FlatLayer {
        // Every inode but the root once, plus the hard links: one allocation, most times.
        let inodes = self.inode_count();
        let mut flat = FlatWriter { layer: self, first_seen: HashMap::default(), entries: Vec::with_capacity(inodes) };
        let root = self.get(self.root());
        flat.dir(root, None);
        FlatLayer { root: FlatNode::of(root), entries: flat.entries }
    }

    /// A layer built from its flat form, under a fresh identity.
    ///
    /// Entries must come parents first; a link to a path not seen yet is skipped. Unchecked:
    /// [`super::check::check_layer`] says whether a real layer could hold it, and
    /// [`Layer::try_from_flat`] checks as it builds.
    pub fn from_flat(flat: &FlatLayer) -> Layer {
        match Layer::build(flat, |_, _| Ok::<(), std::convert::Infallible>(())) {
            Ok(layer) => layer,
            Err(never) => match never {},
        }
    }

    /// [`Layer::from_flat`] for a layer that a real filesystem can hold: the refusal of
    /// [`super::check::check_layer`] otherwise, the same one, found in the same order (the
    /// root, then each node entry as it comes), in one pass with the building.
    pub fn try_from_flat(flat: &FlatLayer) -> Result<Layer, (String, Refusal)> {
        check_root(&flat.root)?;
        Layer::build(flat, check_entry)
    }

    /// The layer of `flat`, each node entry passed to `check` before it is built; the first
    /// error of `check` stops the building.
    fn build<E>(flat: &FlatLayer, mut check: impl FnMut(&str, &FlatNode) -> Result<(), E>) -> Result<Layer, E> {
        // While the entries come in walk order (each below a directory among the current
        // one's ancestors, under a new name), the layer is built bottom-up ([`Builder`]).
        // From the first entry that does not, the part built goes into the table and each
        // entry is put by path, which also makes missing parents, replaces names and skips
        // bad links.
        let mut builder = Builder::new(&flat.root);
        let mut entries = flat.entries.iter();
        for entry in entries.by_ref() {
            if let FlatEntry::Node { path, node } = entry {
                check(path, node)?;
            }
            if !builder.add(entry) {
                let mut layer = builder.finish();
                layer.put_entry(entry);
                for entry in entries {
                    if let FlatEntry::Node { path, node } = entry {
                        check(path, node)?;
                    }
                    layer.put_entry(entry);
                }
                return Ok(layer);
            }
        }
        Ok(builder.finish())
    }
}

/// A directory that a [`Builder`] is filling: owned, not in the inode table yet.
struct OpenDir<'f> {
    /// Its path as the flat layer gives it (empty for the root).
    path: &'f str,
    ino: Ino,
    inode: Inode,
    /// The greatest name entered so far, in byte order.
    last: Option<&'f str>,
}

impl<'f> OpenDir<'f> {
    /// Enters `name` → `ino`, a name not taken here.
    fn enter(&mut self, name: &'f str, ino: Ino) {
        dir_entries_mut(&mut self.inode).insert(name.to_owned(), ino);
        if self.last.is_none_or(|last| name > last) {
            self.last = Some(name);
        }
    }
}

/// A path's parent path and last name, if the path starts with `/` and ends with a name
/// (`/a/b` gives `/a` and `b`; `/a` gives `` and `a`). A byte scan: names are short, and
/// `rfind` pays a searcher's setup for each.
fn split_last(path: &str) -> Option<(&str, &str)> {
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return None;
    }
    let cut = bytes.iter().rposition(|&b| b == b'/')?;
    let name = &path[cut + 1..];
    (!name.is_empty()).then(|| (&path[..cut], name))
}

/// Builds a layer from entries in walk order, bottom-up: the directories on the path to the
/// current entry are kept out of the table, each entry is entered in its owned parent, and
/// a directory goes into the table once, when the walk leaves it. Each inode is so inserted
/// once, and no entry copies its parent's table path, as [`Layer::create`] does. The inode
/// numbers, link counts and entries are those that [`Layer::put`] and [`Layer::put_link`]
/// give for the same entries, one by one (the tests check it).
struct Builder<'f> {
    id: LayerId,
    inodes: InodeTable,
    next_ino: Ino,
    /// The root, then each directory down to the last one made.
    open: Vec<OpenDir<'f>>,
}

impl<'f> Builder<'f> {
    /// A builder whose root is [`Layer::new`]'s, with the attributes of `root` (mode, owner,
    /// xattrs).
    fn new(root: &FlatNode) -> Builder<'f> {
        let id = LayerId::fresh();
        let mut inode = root.to_inode();
        inode.kind = NodeKind::Dir(Default::default());
        inode.nlink = 2;
        // Deep enough for most layers without growing, small enough for a heap's fast path
        // (glibc's tcache takes up to 1,032 bytes).
        let mut open = Vec::with_capacity(4);
        open.push(OpenDir { path: "", ino: ROOT_INO, inode, last: None });
        Builder { id, inodes: InodeTable::default(), next_ino: ROOT_INO + 1, open }
    }

    /// Adds `entry` in its parent if the parent is an open directory, the name is free, and,
    /// for a link, the target is a non-directory; a new directory is then open, the last.
    /// Returns whether it did; if not, nothing has changed.
    fn add(&mut self, entry: &'f FlatEntry) -> bool {
        let path = entry.path();
        let Some((parent_path, name)) = split_last(path) else {
            return false;
        };
        // The root's path is empty, so a non-empty parent path never names it.
        let k = if parent_path.is_empty() {
            0
        } else {
            match self.open.iter().rposition(|d| d.path == parent_path) {
                Some(k) => k,
                None => return false,
            }
        };
        // Names that come in byte order (as a walk writes them) are new without a lookup.
        let dir = &self.open[k];
        if dir.last.is_some_and(|last| name <= last) && dir_entries(&dir.inode).contains_key(name) {
            return false;
        }
        match entry {
            FlatEntry::Node { node, .. } => {
                let mut inode = node.to_inode();
                let ino = self.next_ino;
                self.next_ino += 1;
                self.close_below(k);
                let parent = &mut self.open[k];
                parent.enter(name, ino);
                if inode.is_dir() {
                    parent.inode.nlink += 1;
                    inode.nlink = 2;
                    self.open.push(OpenDir { path, ino, inode, last: None });
                } else {
                    inode.nlink = 1;
                    self.inodes.insert(ino, Arc::new(inode));
                }
            }
            FlatEntry::Link { to, .. } => {
                let Some(ino) = self.walk(to) else {
                    return false;
                };
                // An open directory is not in the table; every non-directory is.
                match self.inodes.get_mut(&ino) {
                    Some(target) if !target.is_dir() => Arc::make_mut(target).nlink += 1,
                    _ => return false,
                }
                self.close_below(k);
                self.open[k].enter(name, ino);
            }
        }
        true
    }

    /// The inode at `path` from the root, as [`Layer::walk`] finds it in the layer built so
    /// far.
    fn walk(&self, path: &str) -> Option<Ino> {
        let mut ino = ROOT_INO;
        for name in super::components(path) {
            let dir = match self.open.iter().find(|d| d.ino == ino) {
                Some(d) => &d.inode,
                None => &**self.inodes.get(&ino)?,
            };
            ino = *dir.entries()?.get(name)?;
        }
        Some(ino)
    }

    /// Puts the open directories below the `k`th in the table: the walk has left them.
    fn close_below(&mut self, k: usize) {
        while self.open.len() > k + 1 {
            let d = self.open.pop().expect("more than k + 1 open");
            self.inodes.insert(d.ino, Arc::new(d.inode));
        }
    }

    /// The layer: every open directory put in the table.
    fn finish(mut self) -> Layer {
        self.close_below(0);
        let root = self.open.pop().expect("the root is open");
        self.inodes.insert(root.ino, Arc::new(root.inode));
        Layer { id: self.id, inodes: self.inodes, root: ROOT_INO, next_ino: self.next_ino, index: None }
    }
}

/// The entries of an open directory.
fn dir_entries(dir: &Inode) -> &Entries {
    dir.entries().expect("an open directory is a directory")
}

/// The entries of an open directory, to change.
fn dir_entries_mut(dir: &mut Inode) -> &mut Entries {
    match &mut dir.kind {
        NodeKind::Dir(e) => e,
        _ => unreachable!("an open directory is a directory"),
    }
}

/// Writes a layer's entries in walk order ([`Layer::walk_all`]'s), a hard link as a link to
/// the first path of its inode.
struct FlatWriter<'l> {
    layer: &'l Layer,
    /// Each inode with more than one name seen so far: the index of its node entry.
    first_seen: HashMap<Ino, usize, InoHash>,
    entries: Vec<FlatEntry>,
}

impl FlatWriter<'_> {
    /// Writes the entries under the directory `dir`, whose entry is the `at`th (`None` for
    /// the root). Each path is made once, at its length, from its parent's.
    fn dir(&mut self, dir: &Inode, at: Option<usize>) {
        let layer = self.layer;
        // An iterator over an empty `OrdMap` still sets up its two cursors.
        let Some(children) = dir.entries().filter(|e| !e.is_empty()) else {
            return;
        };
        for (name, &child) in children.iter() {
            let parent = at.map_or("", |i| self.entries[i].path());
            let mut path = String::with_capacity(parent.len() + 1 + name.len());
            path.push_str(parent);
            path.push('/');
            path.push_str(name);
            let inode = layer.get(child);
            // Char 0/0 whiteouts are never grouped into hard links: the kernel makes every
            // new whiteout a link to one shared inode, so links between them carry nothing.
            // An inode with one name (a link count of 1, as a well-formed layer keeps it:
            // `Layer::link` and `Layer::unlink` count the names) or a directory is met once,
            // so only the others are remembered.
            let first = if inode.nlink < 2 || matches!(inode.kind, NodeKind::Dir(_) | NodeKind::Char(0, 0)) {
                None
            } else {
                match self.first_seen.get(&child) {
                    Some(&i) => Some(i),
                    None => {
                        self.first_seen.insert(child, self.entries.len());
                        None
                    }
                }
            };
            let entry = match first {
                Some(i) => FlatEntry::Link { path, to: self.entries[i].path().to_owned() },
                None => FlatEntry::Node { path, node: FlatNode::of(inode) },
            };
            self.entries.push(entry);
            if inode.is_dir() {
                self.dir(inode, Some(self.entries.len() - 1));
            }
        }
    }
}

impl Layer {
    /// Puts one entry of a flat layer by its path.
    fn put_entry(&mut self, entry: &FlatEntry) {
        match entry {
            FlatEntry::Node { path, node } => {
                self.put(path, node.to_inode());
            }
            FlatEntry::Link { path, to } => {
                self.put_link(path, to);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_round_trip_keeps_links_and_markers() {
        let mut l = Layer::new();
        let d = l.put("/d", Inode::dir(0o700));
        l.set_xattr(d, "trusted.overlay.opaque", b"y");
        l.put("/d/wo", Inode::whiteout());
        l.put("/f", Inode::file(b"data", 0o640));
        l.put_link("/d/f2", "/f");
        l.put("/s", Inode::symlink("../x"));
        let flat = l.to_flat();
        let back = Layer::from_flat(&flat);
        assert_eq!(back.to_flat(), flat);
        assert_eq!(back.get(back.walk(["f"]).unwrap()).nlink, 2);
        let links: Vec<_> = flat.entries.iter().filter(|e| matches!(e, FlatEntry::Link { .. })).collect();
        assert_eq!(links, [&FlatEntry::Link { path: "/f".into(), to: "/d/f2".into() }]);
    }

    /// Inodes built with the same xattrs share their map, and a change to one inode's
    /// xattrs leaves the others' as they were: in another layer, in the same layer, and in
    /// a layer built later.
    #[test]
    fn shared_xattr_maps_change_apart() {
        let mut l = Layer::new();
        let d = l.put("/d", Inode::dir(0o755));
        l.set_xattr(d, "trusted.overlay.opaque", b"y");
        let e = l.put("/e", Inode::dir(0o755));
        l.set_xattr(e, "trusted.overlay.opaque", b"y");
        let flat = l.to_flat();
        let (mut a, b) = (Layer::from_flat(&flat), Layer::from_flat(&flat));
        let (ad, ae) = (a.walk(["d"]).unwrap(), a.walk(["e"]).unwrap());
        a.set_xattr(ad, "trusted.overlay.opaque", b"x");
        a.set_xattr(ae, "user.a", b"1");
        assert_eq!(a.get(ad).xattr("trusted.overlay.opaque"), Some(&b"x"[..]));
        assert_eq!(a.get(ae).xattr("trusted.overlay.opaque"), Some(&b"y"[..]));
        assert_eq!(a.get(ae).xattrs.len(), 2);
        assert_eq!(b.to_flat(), flat);
        assert_eq!(Layer::from_flat(&flat).to_flat(), flat);
    }

    /// An empty layer whose root has the attributes of `root` (mode, owner, xattrs).
    fn with_root_of(root: &FlatNode) -> Layer {
        let mut layer = Layer::new();
        let mut root_inode = root.to_inode();
        layer.update(layer.root(), |r| {
            root_inode.kind = r.kind.clone();
            root_inode.nlink = r.nlink;
            *r = root_inode;
        });
        layer
    }

    /// The layer `from_flat` built before it had a fast path: every entry put by path.
    fn put_each(flat: &FlatLayer) -> Layer {
        let mut layer = with_root_of(&flat.root);
        for entry in &flat.entries {
            match entry {
                FlatEntry::Node { path, node } => {
                    layer.put(path, node.to_inode());
                }
                FlatEntry::Link { path, to } => {
                    layer.put_link(path, to);
                }
            }
        }
        layer
    }

    /// A layer's every path with its inode number and inode, and the flat form.
    fn shape(l: &Layer) -> (Vec<(String, Ino, Inode)>, FlatLayer) {
        let all = l.walk_inodes();
        (all, l.to_flat())
    }

    #[test]
    fn building_entry_by_entry_equals_putting_each_path() {
        let node = |kind: FileType| FlatNode {
            kind,
            mode: 0o2755,
            uid: 1,
            gid: 2,
            data: (kind == FileType::File).then(|| FileData::from_bytes(b"x")),
            target: None,
            rdev: None,
            xattrs: BTreeMap::from([("user.a".to_owned(), b"v".to_vec())]),
        };
        let n = |p: &str, k: FileType| FlatEntry::Node { path: p.into(), node: node(k) };
        let l = |p: &str, to: &str| FlatEntry::Link { path: p.into(), to: to.into() };
        use FileType::{Char, Dir, File};
        let cases: Vec<Vec<FlatEntry>> = vec![
            vec![],
            vec![n("/d", Dir), n("/d/f", File), l("/d/g", "/d/f"), l("/h", "/d/g"), n("/w", Char)],
            // Missing parents, made as plain directories.
            vec![n("/a/b/c", File), n("/a/x", File)],
            // A replaced name, a file given as a parent, a directory replaced by a file.
            vec![n("/f", File), n("/f", Dir), n("/f/g", File)],
            vec![n("/f", File), n("/f/g", File)],
            vec![n("/d", Dir), n("/d/f", File), n("/d", File), l("/e", "/d/f")],
            // Links to a directory, to nothing, to a later path, and over the target itself.
            vec![n("/d", Dir), l("/e", "/d"), l("/x", "/nope"), l("/y", "/z"), n("/z", File), l("/z", "/z")],
            vec![n("/f", File), l("/f/g", "/f")],
            // Paths not written canonically.
            vec![n("/d", Dir), n("//d/f", File), n("/d//g", File), n("/d/h/", File), n("d/i", File)],
            vec![n("/d", Dir), n("/d/f", File), l("/g", "/d//f"), n("/./x", File), n("/..", File)],
            // Links made while their target's directories are being built, to a file in a
            // directory already left, to an open directory, to the root, through a file.
            vec![n("/a", Dir), n("/a/b", Dir), n("/a/b/f", File), l("/a/b/g", "/a/b/f"), l("/a/h", "/a/b/g")],
            vec![n("/a", Dir), n("/a/f", File), n("/b", Dir), l("/b/g", "/a/f"), l("/c", "/b/g"), l("/b/h", "/c")],
            vec![n("/a", Dir), n("/a/b", Dir), l("/a/b/x", "/a"), n("/a/b/y", File)],
            vec![n("/a", Dir), l("/a/x", "/"), l("/a/y", ""), n("/a/z", File)],
            vec![n("/f", File), n("/d", Dir), l("/d/x", "/f/"), l("/d/y", "/f/g"), n("/d/z", File)],
            // A directory left and entered again, a name taken twice in an open directory,
            // the same name under two parents, and whiteouts sharing nothing.
            vec![n("/a", Dir), n("/a/b", Dir), n("/a/b/f", File), n("/a/c", File), n("/a/b/g", File)],
            vec![n("/a", Dir), n("/a/b", Dir), n("/a/f", File), n("/a/f", Dir), n("/a/f/x", File)],
            vec![n("/a", Dir), n("/a/w", Char), n("/b", Dir), n("/b/w", Char), l("/b/v", "/b/w"), n("/w", Char)],
            // Names out of byte order (still new names), a directory re-made after it was left.
            vec![n("/z", Dir), n("/z/b", File), n("/z/a", File), n("/y", File), n("/z", Dir), n("/z/c", File)],
            // A link whose name is taken, then entries after it.
            vec![n("/d", Dir), n("/d/f", File), n("/d/g", File), l("/d/g", "/d/f"), n("/d/h", File)],
        ];
        for entries in cases {
            let flat = FlatLayer { root: node(Dir), entries };
            assert_eq!(shape(&Layer::from_flat(&flat)), shape(&put_each(&flat)), "{flat:?}");
        }
    }

    /// Every layer the fuzzer's default generator makes for its first cases, as given and
    /// disordered (reversed, rotated, the first entry left out so that parents go missing),
    /// built bottom-up and put path by path: the same inodes under the same numbers.
    #[cfg(all(feature = "proptest", target_os = "linux"))]
    #[test]
    fn generated_layers_build_as_put_path_by_path() {
        use crate::backend::Command;
        let mut layers = 0;
        for seed in 0..200 {
            let Some(cmds) = crate::fuzz::gen::seeded_commands(seed, 4) else { continue };
            for cmd in cmds {
                let Command::Layer { content, .. } = cmd else { continue };
                let mut variants = vec![content.clone()];
                let mut v = content.clone();
                v.entries.reverse();
                variants.push(v);
                if content.entries.len() > 1 {
                    let mut v = content.clone();
                    v.entries.rotate_left(1);
                    variants.push(v);
                    let mut v = content.clone();
                    v.entries.remove(0);
                    variants.push(v);
                }
                for flat in variants {
                    assert_eq!(shape(&Layer::from_flat(&flat)), shape(&put_each(&flat)), "{flat:?}");
                }
                layers += 1;
            }
        }
        assert!(layers > 400, "only {layers} layers generated");
    }
}
