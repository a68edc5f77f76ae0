//! The workdir's `index/` directory at mount: every entry is verified, and the stale and
//! orphan ones are cleaned up before the overlay comes up (kernel: `fs/overlayfs/super.c`,
//! `ovl_get_indexdir`; `fs/overlayfs/readdir.c`, `ovl_indexdir_cleanup`;
//! `fs/overlayfs/namei.c`, `ovl_verify_index`, `ovl_index_upper`, `ovl_check_origin_fh`;
//! `fs/overlayfs/inode.c`, `ovl_get_nlink`).
//!
//! An `index=on` mount with an upper reads the whole index once, after the upper root's
//! origin is verified ([`Overlay::verify_upper_root_origin`]). Each entry is either kept,
//! removed as stale (its origin does not decode), or, as an orphan (no merged name of the
//! object is left: a mount without the index removed it), removed, or replaced by a
//! whiteout under `nfs_export=on` so that an old file handle stays stale. An entry without
//! an origin refuses the mount ([`Overlay::verify_index_entries`], in [`crate::index`]).
//!
//! Not reached by the model, so not modelled: entries with a name that is no file handle, a
//! `#` temporary name, a type other than a file, directory or whiteout, a directory entry
//! without its `upper` xattr, a non-directory entry whose origin has another type (EIO,
//! which refuses the mount): the model's index only holds what its own copy-ups put there.
//!
//! Gaps, each a case the model cannot see as the kernel does:
//! - the origin of a non-directory entry in a lower layer the mount leaves out: the kernel
//!   decodes it all the same (a non-directory decodes by its inode on the lower filesystem,
//!   and every layer of the kernel backend is on one tmpfs: `ovl_acceptable`, "A non-dir
//!   origin may be disconnected"); the model cannot read that lower's link count, and takes
//!   the recorded merged count alone ([`merged_nlink_without_origin`]), which differs from
//!   the kernel's only for an origin with one link whose recorded count is still positive;
//! - a mount refused by one entry (ENODATA) after the kernel cleaned up others: the kernel
//!   keeps those cleanups in the upper layer; the model's refused mount leaves the upper as
//!   it was.

use crate::layer::{Ino, Inode, NodeKind, Origin};
use crate::overlay::Overlay;

/// What the mount does with one index entry (kernel: `ovl_verify_index`'s result, as
/// `ovl_indexdir_cleanup` acts on it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    /// Verified (0): kept.
    Keep,
    /// Stale (`-ESTALE`): removed.
    Stale,
    /// Orphan (`-ENOENT`): removed, or replaced by a whiteout under `nfs_export=on`.
    Orphan,
}

impl Overlay {
    /// At an `index=on` mount with an upper, each entry of the index is verified and acted
    /// on: kept; removed when stale; when an orphan, replaced by a whiteout under
    /// `nfs_export=on` ("Whiteout orphan index to block future open by handle after overlay
    /// nlink dropped to zero"), otherwise removed ("Cleanup orphan index entries") (kernel:
    /// `fs/overlayfs/readdir.c`, `ovl_indexdir_cleanup`, called by `super.c`,
    /// `ovl_get_indexdir`; observed on 6.18, spec/nfs_export/mount-index-*.yaml,
    /// spec/index/mount-index-*.yaml).
    pub(crate) fn indexdir_cleanup(&mut self) {
        if !self.options.index {
            return;
        }
        let Some(upper) = self.upper.as_ref() else { return };
        let Some(dir) = upper.index_dir() else { return };
        let Some(entries) = upper.get(dir).entries() else { return };
        let entries: Vec<(String, Ino)> = entries.iter().map(|(n, i)| (n.clone(), *i)).collect();
        let mut upper_dirs = None;
        for (name, ino) in entries {
            let verdict = self.verify_index(&name, ino, &mut upper_dirs);
            let nfs_export = self.options.nfs_export;
            let upper = self.upper_mut();
            match verdict {
                Verdict::Keep => {}
                Verdict::Stale => {
                    upper.unlink(dir, &name);
                }
                Verdict::Orphan => {
                    upper.unlink(dir, &name);
                    if nfs_export {
                        upper.create(dir, &name, Inode::whiteout());
                    }
                }
            }
        }
    }

    /// Verifies index entry `name`, inode `ino` (kernel: `fs/overlayfs/namei.c`,
    /// `ovl_verify_index`):
    /// - a whiteout is kept, with or without `nfs_export` ("Whiteout index entries ... contain
    ///   no origin xattr");
    /// - a directory is kept without `nfs_export` ("Verifying directory index entries are not
    ///   stale is expensive, so only verify stale dir index if NFS export is enabled"), and
    ///   with it is an orphan when its upper directory is gone ("When dir index entry has a
    ///   stale 'upper' xattr, we assume that upper dir was removed");
    /// - a non-directory whose origin is not the one its name holds is stale
    ///   (`ovl_verify_fh`); with one link (the index's own) it is an orphan when the merged
    ///   link count of its origin is zero ("Check if non-dir index is orphan"), and stale when
    ///   the origin no longer decodes (`ovl_check_origin_fh`).
    ///
    /// `upper_dirs` caches the origins of the upper directories, read once for the first
    /// directory entry.
    ///
    /// NOTE(kernel): the kernel decodes the entry's `upper` file handle, one upper
    /// directory; the model, which does not keep that xattr, looks for any upper directory
    /// with the entry's origin (a lower directory has one name, so only an upper copy of it
    /// records it).
    fn verify_index(&self, name: &str, ino: Ino, upper_dirs: &mut Option<Vec<Origin>>) -> Verdict {
        let upper = self.upper.as_ref().expect("model invariant: the index is in the upper layer");
        let entry = upper.get(ino);
        if matches!(entry.kind, NodeKind::Char(0, 0)) {
            return Verdict::Keep;
        }
        let Some(origin) = crate::index::parse_index_name(name) else { return Verdict::Stale };
        if entry.is_dir() {
            if !self.options.nfs_export {
                return Verdict::Keep;
            }
            let dirs = upper_dirs.get_or_insert_with(|| {
                upper
                    .walk_all()
                    .into_iter()
                    .filter_map(|(_, i)| Some(upper.get(i)).filter(|d| d.is_dir())?.origin)
                    .collect()
            });
            return if dirs.contains(&origin) { Verdict::Keep } else { Verdict::Orphan };
        }
        match entry.origin {
            // An entry without an origin refuses the mount first (`verify_index_entries`).
            None => return Verdict::Keep,
            Some(o) if o != origin => return Verdict::Stale,
            Some(_) => {}
        }
        if entry.nlink != 1 {
            return Verdict::Keep;
        }
        let merged = match self.decode_origin(origin) {
            Decoded::Stale => return Verdict::Stale,
            Decoded::Lower(lower_nlink) => index_nlink(self, entry, Some(lower_nlink)),
            Decoded::Unmounted => index_nlink(self, entry, None),
        };
        if merged == 0 {
            Verdict::Orphan
        } else {
            Verdict::Keep
        }
    }

    /// Decodes the origin of a non-directory index entry in the mounted lowers (kernel:
    /// `ovl_check_origin_fh`, `ovl_decode_real_fh`): in the lower whose handles it matches
    /// ([`Overlay::fh_layer`]), stale when that lower no longer holds the inode.
    fn decode_origin(&self, origin: Origin) -> Decoded {
        let layer = (0..self.lowers.len()).find(|&i| self.fh_layer(i) == origin.layer);
        match layer {
            Some(i) => match self.lowers[i].try_get(origin.ino) {
                Some(lower) => Decoded::Lower(lower.nlink),
                None => Decoded::Stale,
            },
            None => Decoded::Unmounted,
        }
    }
}

/// Where the origin of an index entry decodes.
enum Decoded {
    /// In a mounted lower, whose inode has this link count.
    Lower(u32),
    /// In no mounted lower: the kernel decodes it on the shared lower filesystem all the
    /// same; the model does not hold that layer (see the module's gaps).
    Unmounted,
    /// Nowhere (`-ESTALE`).
    Stale,
}

/// The merged link count of index entry `entry`, 0 when it cannot be read (kernel:
/// `fs/overlayfs/inode.c`, `ovl_get_nlink` with fallback 0): 0 for an origin with one link;
/// otherwise the recorded `nlink` xattr added to the upper's (`U`) or the origin's (`L`)
/// count, 0 when missing, malformed or not positive. `lower_nlink` is `None` for an origin
/// the model cannot read: [`merged_nlink_without_origin`].
fn index_nlink(ov: &Overlay, entry: &Inode, lower_nlink: Option<u32>) -> u32 {
    if lower_nlink == Some(1) {
        return 0;
    }
    let Some((upper, diff)) = entry.xattr(ov.names().nlink).and_then(crate::index::parse_nlink) else { return 0 };
    let base = match (upper, lower_nlink) {
        (true, _) => entry.nlink,
        (false, Some(n)) => n,
        (false, None) => return merged_nlink_without_origin(entry.nlink, diff),
    };
    u32::try_from(i64::from(base) + diff).unwrap_or(0)
}

/// The merged count of an entry whose origin the model cannot read, recorded against the
/// origin's count (`L+n`): taken against the upper's, the closest the model has.
///
/// NOTE(kernel): the kernel reads the origin's count on the shared lower filesystem.
fn merged_nlink_without_origin(upper_nlink: u32, diff: i64) -> u32 {
    u32::try_from(i64::from(upper_nlink) + diff).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use crate::index::IndexEntry;
    use crate::layer::{Inode, Layer};
    use crate::mount::Options;
    use crate::{Op, Outcome, Overlay};

    fn opts(index: bool, nfs_export: bool) -> Options {
        Options { index, nfs_export, ..Options::default() }
    }

    /// `/c` (one link) copied up through the index by an `nfs_export=on` mount, then its
    /// upper name removed by a mount without the index: an orphan entry.
    fn orphan() -> (Vec<Layer>, Option<Layer>) {
        let mut lower = Layer::new();
        lower.put("/c", Inode::file(b"", 0o644));
        let mut ov = Overlay::mount(vec![lower], Some(Layer::new()), opts(true, true)).expect("mount");
        assert_eq!(ov.apply(&Op::Chmod { path: "/c".into(), mode: 0o600 }), Outcome::Ok);
        let (lowers, upper) = ov.unmount();
        let mut ov = Overlay::mount(lowers, upper, opts(false, false)).expect("mount without index");
        assert_eq!(ov.apply(&Op::Unlink { path: "/c".into() }), Outcome::Ok);
        ov.unmount()
    }

    #[test]
    fn an_orphan_entry_is_whited_out_under_nfs_export() {
        let (lowers, upper) = orphan();
        let ov = Overlay::mount(lowers, upper, opts(true, true)).expect("mount");
        assert_eq!(ov.index_entries(), vec![("/c".to_owned(), IndexEntry::Whiteout)]);
    }

    #[test]
    fn an_orphan_entry_is_removed_without_nfs_export() {
        let (lowers, upper) = orphan();
        let ov = Overlay::mount(lowers, upper, opts(true, false)).expect("mount");
        assert_eq!(ov.index_entries(), vec![]);
    }

    #[test]
    fn a_mount_without_the_index_leaves_the_orphan_alone() {
        let (lowers, upper) = orphan();
        let ov = Overlay::mount(lowers.clone(), upper, opts(false, false)).expect("mount");
        let (_, upper) = ov.unmount();
        let ov = Overlay::mount(lowers, upper, opts(true, true)).expect("mount");
        assert_eq!(ov.index_entries(), vec![("/c".to_owned(), IndexEntry::Whiteout)], "still there to clean up");
    }

    #[test]
    fn merged_count_without_origin_is_zero_when_not_positive() {
        assert_eq!(super::merged_nlink_without_origin(1, -1), 0);
        assert_eq!(super::merged_nlink_without_origin(1, -3), 0);
        assert_eq!(super::merged_nlink_without_origin(1, 1), 2);
    }
}
