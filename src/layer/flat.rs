//! A flat, serialisable form of a layer: every path with its node, hard links as references
//! to the first path of their inode. It is how layers travel to the kernel worker and back,
//! and how two layers are compared: raw inode numbers, link counts and directory sizes are
//! left out, because they follow from the structure.

use super::{FileData, FileType, Ino, InoHash, Inode, Layer, NodeKind};
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
            NodeKind::Symlink(t) => (None, Some(t.to_string()), None),
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
        inode.xattrs = self.xattrs.iter().map(|(k, v)| (k.clone(), Arc::<[u8]>::from(&v[..]))).collect();
        inode
    }
}

/// An inode's xattrs as a flat node holds them. They come sorted, so they are inserted one
/// by one: `collect` would buffer and sort them first, and most inodes have none.
fn xattrs_of(inode: &Inode) -> BTreeMap<String, Vec<u8>> {
    let mut xattrs = BTreeMap::new();
    for (k, v) in inode.xattrs.iter() {
        xattrs.insert(k.clone(), v.to_vec());
    }
    xattrs
}

impl Layer {
    /// The flat form of this layer.
    pub fn to_flat(&self) -> FlatLayer {
        // Every inode but the root once, plus the hard links: one allocation each, most times.
        let inodes = self.inode_count();
        let mut flat = FlatWriter {
            layer: self,
            first_seen: HashMap::with_capacity_and_hasher(inodes, InoHash::default()),
            entries: Vec::with_capacity(inodes),
        };
        flat.dir(self.root(), &mut String::new());
        FlatLayer { root: FlatNode::of(self.get(self.root())), entries: flat.entries }
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

    /// A layer built from its flat form, under a fresh identity.
    ///
    /// Entries must come parents first; a link to a path not seen yet is skipped. Unchecked:
    /// [`super::check::check_layer`] says whether a real layer could hold it.
    pub fn from_flat(flat: &FlatLayer) -> Layer {
        let mut layer = Layer::with_root_of(&flat.root);
        // While the entries come in walk order (each below a directory entry among the
        // current one's ancestors, under a new name), each is created or linked in its
        // parent directly, as `put` and `put_link` would after walking to that parent. From
        // the first entry that does not, each is put by path, which also makes missing
        // parents, replaces names and skips bad links.
        let mut ancestors: Vec<(&str, Ino)> = Vec::new();
        let mut entries = flat.entries.iter();
        for entry in entries.by_ref() {
            if !layer.add_in_walk_order(entry, &mut ancestors) {
                layer.put_entry(entry);
                break;
            }
        }
        for entry in entries {
            layer.put_entry(entry);
        }
        layer
    }
}

/// Writes a layer's entries in walk order ([`Layer::walk_all`]'s), a hard link as a link to
/// the first path of its inode.
struct FlatWriter<'l> {
    layer: &'l Layer,
    /// Each inode seen so far: the index of its node entry.
    first_seen: HashMap<Ino, usize, InoHash>,
    entries: Vec<FlatEntry>,
}

impl FlatWriter<'_> {
    /// Writes the entries under directory `dir`, whose path is `path` (empty for the root).
    fn dir(&mut self, dir: Ino, path: &mut String) {
        let layer = self.layer;
        let Some(children) = layer.get(dir).entries() else {
            return;
        };
        for (name, &child) in children.iter() {
            let len = path.len();
            path.push('/');
            path.push_str(name);
            let inode = layer.get(child);
            // Char 0/0 whiteouts are never grouped into hard links: the kernel makes every
            // new whiteout a link to one shared inode, so links between them carry nothing.
            let first = if matches!(inode.kind, NodeKind::Char(0, 0)) {
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
                Some(i) => FlatEntry::Link { path: path.clone(), to: self.entries[i].path().to_owned() },
                None => FlatEntry::Node { path: path.clone(), node: FlatNode::of(inode) },
            };
            self.entries.push(entry);
            if inode.is_dir() {
                self.dir(child, path);
            }
            path.truncate(len);
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

    /// Adds `entry` in its parent if the parent is one of `ancestors` (the directories made
    /// by earlier entries from the root down, by path), the name is free, and, for a link,
    /// the target is a non-directory; then `entry`'s directory, if it is one, becomes the
    /// last ancestor. Returns whether it did; if not, nothing has changed.
    fn add_in_walk_order<'f>(&mut self, entry: &'f FlatEntry, ancestors: &mut Vec<(&'f str, Ino)>) -> bool {
        let path = entry.path();
        let Some(cut) = path.rfind('/') else {
            return false;
        };
        let (parent_path, name) = (&path[..cut], &path[cut + 1..]);
        if name.is_empty() || !path.starts_with('/') {
            return false;
        }
        let dir = if parent_path.is_empty() {
            ancestors.clear();
            self.root()
        } else {
            match ancestors.iter().rposition(|(p, _)| *p == parent_path) {
                Some(k) => {
                    ancestors.truncate(k + 1);
                    ancestors[k].1
                }
                None => return false,
            }
        };
        if self.child(dir, name).is_some() {
            return false;
        }
        match entry {
            FlatEntry::Node { node, .. } => {
                let ino = self.create(dir, name, node.to_inode());
                if node.kind == FileType::Dir {
                    ancestors.push((path, ino));
                }
            }
            FlatEntry::Link { to, .. } => match self.walk(super::components(to)) {
                Some(ino) if !self.get(ino).is_dir() => self.link(dir, name, ino),
                _ => return false,
            },
        }
        true
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

    /// The layer `from_flat` built before it had a fast path: every entry put by path.
    fn put_each(flat: &FlatLayer) -> Layer {
        let mut layer = Layer::with_root_of(&flat.root);
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
        ];
        for entries in cases {
            let flat = FlatLayer { root: node(Dir), entries };
            assert_eq!(shape(&Layer::from_flat(&flat)), shape(&put_each(&flat)), "{flat:?}");
        }
    }
}
