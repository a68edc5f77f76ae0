//! What `stat` reports for a merged object (kernel: `fs/overlayfs/inode.c`, `ovl_getattr`,
//! `ovl_map_dev_ino`), with every layer on one filesystem.

use crate::layer::{Layer, NodeKind};
use crate::lookup::Dentry;
use crate::ops::Stat;
use crate::overlay::Overlay;

/// The inode identity of inode `ino` of `layer`: layer identity in the high bits.
fn identity(layer: &Layer, ino: u64) -> u64 {
    (layer.id().0 << 32) | ino
}

impl Overlay {
    /// `stat` of a positive dentry.
    ///
    /// overlayfs.rst, "Inode properties", all layers on one filesystem: the attributes come
    /// from the top-most real object (the upper if there is one). `st_ino` is that object's
    /// inode, except that a merged directory, and an upper object whose copy-up origin has
    /// `nlink` 1, report the lower origin's inode, so `st_ino` survives copy-up. A lower hard
    /// link broken by copy-up (origin `nlink` > 1) reports the upper inode, and so does the
    /// root. A merged directory reports `nlink` 1.
    pub(crate) fn getattr(&self, d: &Dentry) -> Stat {
        let real = self.real_inode(d);
        let ino = match (d.upper, d.lowers.first()) {
            (None, Some(l)) => identity(&self.lowers[l.layer], l.ino),
            // NOTE(kernel): the root reports the upper root's inode even though it is merged
            // (kernel: `ovl_get_root` gives it no copy-up origin; observed on 6.18).
            (Some(u), Some(_)) if d.is_root() => identity(self.upper.as_ref().expect("upper"), u),
            (Some(u), Some(l)) => {
                let lower = &self.lowers[l.layer];
                // With `index=on` a copied-up lower hard link keeps the lower's `st_ino`
                // (kernel: `ovl_getattr`, `ovl_test_flag(OVL_INDEX, ..)`).
                if real.is_dir() || lower.get(l.ino).nlink == 1 || self.indexed_upper(d).is_some() {
                    identity(lower, l.ino)
                } else {
                    identity(self.upper.as_ref().expect("upper"), u)
                }
            }
            (Some(u), None) => identity(self.upper.as_ref().expect("upper"), u),
            (None, None) => panic!("model invariant: getattr of a negative dentry"),
        };
        let nlink = if d.is_merge_dir() {
            1
        } else if d.lowers.is_empty() || real.is_dir() {
            real.nlink
        } else {
            self.recorded_nlink(d, real).unwrap_or(real.nlink)
        };
        let rdev = match real.kind {
            NodeKind::Char(a, b) | NodeKind::Block(a, b) => (a, b),
            _ => (0, 0),
        };
        Stat {
            kind: real.file_type(),
            mode: real.mode,
            size: real.size(),
            nlink,
            uid: real.uid,
            gid: real.gid,
            rdev,
            ino,
        }
    }
}
