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
    /// Whether a merged object with an upper and an origin whose `nlink` is `lower_nlink`
    /// reports the origin's `st_ino`: when it is indexed (the index vouches that the upper
    /// is the only copy of that origin), or, without `nfs_export=on` ("verify_lower"), when
    /// it is a directory or its origin has one link (kernel: `fs/overlayfs/inode.c`,
    /// `ovl_getattr`, "if (ovl_test_flag(OVL_INDEX, ..) || (!ovl_verify_lower(..) &&
    /// (is_dir || lowerstat.nlink == 1)))"). So under `nfs_export=on` a merged directory
    /// without an index entry, or an upper copied up before without the index, reports the
    /// upper's `st_ino` (observed on 6.18).
    fn origin_ino_trusted(&self, d: &Dentry, real: &crate::layer::Inode, lower_nlink: u32) -> bool {
        let indexed = if real.is_dir() {
            d.lowers.first().is_some_and(|&l| self.indexed_dir(l))
        } else {
            self.indexed_upper(d).is_some()
        };
        let verify_lower = self.options.index && self.options.nfs_export;
        indexed || (!verify_lower && (real.is_dir() || lower_nlink == 1))
    }

    /// Whether the overlay inode of positive dentry `d` is keyed by its lower (origin) inode
    /// rather than its upper one (kernel: `fs/overlayfs/inode.c`, `ovl_hash_bylower`): yes
    /// if indexed, or with no upper layer; no for a pure upper, for a lower hard link that a
    /// copy-up breaks (an upper, or no index), and for a non-indexed upper under
    /// `nfs_export=on`; otherwise yes. A dentry still holding the lower it was looked up
    /// with before its copy-up keeps that key, as the kernel's cached inode does.
    ///
    /// Two names of one upper inode are then one overlay inode only if both are keyed
    /// alike. A rename between two such names that are two overlay inodes is not a no-op.
    /// `ovl_rename` sets `err = -ESTALE` before its checks of the upper dentries and leaves
    /// with it at "if (olddentry->d_inode == newdentry->d_inode)". That is observed on 6.18
    /// for a lower symlink linked under `userxattr`, whose copy-up stores no origin, so
    /// only the name looked up before the copy-up keeps its lower.
    pub(crate) fn hashed_by_lower(&self, d: &Dentry) -> bool {
        let Some(l) = d.lowers.first() else { return false };
        if self.indexed_upper(d).is_some() || self.upper.is_none() {
            return true;
        }
        let lower = self.lowers[l.layer].get(l.ino);
        if (d.upper.is_some() || !self.options.index) && !lower.is_dir() && lower.nlink > 1 {
            return false;
        }
        !(self.options.nfs_export && d.upper.is_some())
    }

    /// Whether `stat` reports the overlay inode's merged `nlink` (from the private `nlink`
    /// xattr) rather than the real inode's: only for an indexed inode (kernel:
    /// `fs/overlayfs/inode.c`, `ovl_getattr`, "if (!is_dir && ovl_test_flag(OVL_INDEX, ..))
    /// stat->nlink = dentry->d_inode->i_nlink"). So a former upper mounted as a lower, or
    /// remounted without the index, shows an indexed file's real count, its index link
    /// included (observed on 6.18).
    fn reports_merged_nlink(&self, d: &Dentry) -> bool {
        self.indexed_upper(d).is_some()
    }

    /// `stat` of a positive dentry.
    ///
    /// overlayfs.rst, "Inode properties", all layers on one filesystem: the attributes come
    /// from the top-most real object (the upper if there is one). `st_ino` is that object's
    /// inode, except that a merged directory, and an upper object whose copy-up origin has
    /// `nlink` 1, report the lower origin's inode, so `st_ino` survives copy-up. A lower hard
    /// link broken by copy-up (origin `nlink` > 1) reports the upper inode, and so does the
    /// root; under `nfs_export=on` only an indexed origin is used
    /// (`origin_ino_trusted`). A merged directory reports `nlink` 1.
    pub(crate) fn getattr(&self, d: &Dentry) -> Stat {
        let real = self.real_inode(d);
        let ino = match (d.upper, d.lowers.first()) {
            (None, Some(l)) => identity(&self.lowers[l.layer], l.ino),
            // NOTE(kernel): the root reports the upper root's inode even though it is merged
            // (kernel: `ovl_get_root` gives it no copy-up origin; observed on 6.18).
            (Some(u), Some(_)) if d.is_root() => identity(self.upper.as_ref().expect("upper"), u),
            (Some(u), Some(l)) => {
                let lower = &self.lowers[l.layer];
                if self.origin_ino_trusted(d, real, lower.get(l.ino).nlink) {
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
        } else if d.lowers.is_empty() || real.is_dir() || !self.reports_merged_nlink(d) {
            real.nlink
        } else {
            self.indexed_upper(d).map_or(real.nlink, |u| self.merged_nlink(d, u))
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
