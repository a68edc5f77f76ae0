//! A flat, serialisable form of a layer: every path with its node, hard links as references
//! to the first path of their inode. It is how layers travel to the kernel worker and back,
//! and how two layers are compared: raw inode numbers, link counts and directory sizes are
//! left out, because they follow from the structure.

use super::{FileType, Inode, Layer, NodeKind};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
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
    pub data: Option<Vec<u8>>,
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
            NodeKind::File(d) => (Some(d.to_vec()), None, None),
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
            xattrs: inode.xattrs.iter().map(|(k, v)| (k.clone(), v.to_vec())).collect(),
        }
    }

    /// The inode this flat node describes (not yet linked anywhere).
    pub fn to_inode(&self) -> Inode {
        let rdev = self.rdev.unwrap_or((0, 0));
        let kind = match self.kind {
            FileType::Dir => NodeKind::Dir(Default::default()),
            FileType::File => NodeKind::File(Arc::from(self.data.as_deref().unwrap_or_default())),
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

impl Layer {
    /// The flat form of this layer.
    pub fn to_flat(&self) -> FlatLayer {
        let mut first_seen: std::collections::HashMap<u64, String> = Default::default();
        let mut entries = Vec::new();
        for (path, ino) in self.walk_all() {
            // Char 0/0 whiteouts are never grouped into hard links: the kernel makes every
            // new whiteout a link to one shared inode, so links between them carry nothing.
            if matches!(self.get(ino).kind, NodeKind::Char(0, 0)) {
                entries.push(FlatEntry::Node { path, node: FlatNode::of(self.get(ino)) });
                continue;
            }
            match first_seen.get(&ino) {
                Some(to) => entries.push(FlatEntry::Link { path, to: to.clone() }),
                None => {
                    first_seen.insert(ino, path.clone());
                    entries.push(FlatEntry::Node { path, node: FlatNode::of(self.get(ino)) });
                }
            }
        }
        FlatLayer { root: FlatNode::of(self.get(self.root())), entries }
    }

    /// A layer built from its flat form, under a fresh identity.
    ///
    /// Entries must come parents first; a link to a path not seen yet is skipped.
    pub fn from_flat(flat: &FlatLayer) -> Layer {
        let mut layer = Layer::new();
        let root = layer.root();
        let mut root_inode = flat.root.to_inode();
        layer.update(root, |r| {
            root_inode.kind = r.kind.clone();
            root_inode.nlink = r.nlink;
            *r = root_inode;
        });
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
}
