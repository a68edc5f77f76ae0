//! Directory listing and the empty-directory check (kernel: `fs/overlayfs/readdir.c`).

use crate::layer::{FileType, Layer};
use crate::lookup::Dentry;
use crate::overlay::Overlay;
use crate::whiteout;
use std::collections::BTreeMap;

/// One name of a merged listing, from its top-most layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CacheEntry {
    /// The `d_type` of the top-most entry.
    pub ftype: FileType,
    /// The top-most entry is a whiteout.
    pub is_whiteout: bool,
    /// The top-most entry is in the upper.
    pub is_upper: bool,
    /// A regular file from a layer whose copy carries `opaque=x`: looked up again while
    /// iterating (kernel: `check_xwhiteout`).
    pub check_xwhiteout: bool,
}

impl Overlay {
    /// Whether a directory is read through the merge logic rather than straight from its
    /// one real directory (kernel: `ovl_dir_is_real` is false when `OVL_WHITEOUTS` is set,
    /// in `ovl_get_inode`: an upper with lowers, several lowers, or a real directory, the
    /// upper or else the top-most lower, with a copy-up origin).
    /// NOTE(kernel): the origin counts on a lower too, as on an old upper mounted as a lower
    /// (found by the fuzzer: its whiteouts are not listed).
    pub(crate) fn dir_is_merged(&self, d: &Dentry) -> bool {
        d.is_merge_dir() || self.real_inode(d).origin.is_some()
    }

    /// The listing of directory `d`: names with their `d_type`, without `.` and `..`.
    ///
    /// overlayfs.rst, "readdir": a merged directory lists the union of its layers' names,
    /// once each, with the `d_type` of the top-most; whiteouts and the names they hide are
    /// left out (kernel: `ovl_dir_read_merged`, `ovl_fill_merge`).
    /// Some entries are looked up again while iterating, and one whose lookup fails or finds
    /// nothing is left out as stale (kernel: `ovl_iterate`, `ovl_cache_update`): every
    /// regular file from a lower layer whose copy carries `opaque=x` (so an xattr whiteout,
    /// or a metacopy file that gives EPERM, disappears), and, when the upper directory is
    /// impure, every upper entry (`ovl_calc_d_ino`: a redirect under `nofollow`, an upper
    /// xattr whiteout).
    /// NOTE(kernel): a non-merged directory (pure upper, or from one lower only) is read
    /// straight from the real directory, so its whiteouts *are* listed, a char 0/0 as a
    /// character device, though stat of them gives ENOENT.
    pub(crate) fn readdir_entries(&mut self, d: &Dentry) -> BTreeMap<String, FileType> {
        if !self.dir_is_merged(d) {
            let (layer, ino) = match d.upper {
                Some(u) => (self.upper.as_ref().expect("upper"), u),
                None => (&self.lowers[d.lowers[0].layer], d.lowers[0].ino),
            };
            let entries = layer.get(ino).entries().expect("model invariant: readdir of a directory");
            return entries.iter().map(|(n, i)| (n.clone(), layer.get(*i).file_type())).collect();
        }
        let impure = self.upper_inode(d).is_some_and(|i| i.impure);
        let mut out = BTreeMap::new();
        for (name, e) in self.read_merged(d, true) {
            let recheck = e.check_xwhiteout || (impure && e.is_upper);
            if e.is_whiteout || (recheck && !self.lookup_child(d, &name).is_ok_and(|c| c.is_positive())) {
                continue;
            }
            out.insert(name, e.ftype);
        }
        out
    }

    /// Every name of every layer of `d`, top-most entry first, whiteouts included (kernel:
    /// `ovl_dir_read_merged`). With `check_xwhiteouts`, regular files from a layer whose
    /// copy carries `opaque=x` are marked for a lookup while iterating; the kernel defers
    /// that check to `ovl_iterate`, so the empty-directory check does not make it.
    pub(crate) fn read_merged(&self, d: &Dentry, check_xwhiteouts: bool) -> BTreeMap<String, CacheEntry> {
        let mut seen: BTreeMap<String, CacheEntry> = BTreeMap::new();
        let mut add = |layer: &Layer, ino: u64, is_upper: bool, xwhiteouts: bool| {
            for (name, child) in
                layer.get(ino).entries().expect("model invariant: merged layers are directories").iter()
            {
                if seen.contains_key(name) {
                    continue;
                }
                let inode = layer.get(*child);
                let is_whiteout = whiteout::is_chr_whiteout(inode);
                let check_xwhiteout = xwhiteouts && inode.file_type() == FileType::File;
                seen.insert(
                    name.clone(),
                    CacheEntry { ftype: inode.file_type(), is_whiteout, is_upper, check_xwhiteout },
                );
            }
        };
        if let Some(u) = d.upper {
            add(self.upper.as_ref().expect("upper"), u, true, false);
        }
        for l in d.lowers.iter() {
            let x = check_xwhiteouts && d.xwhiteouts && self.has_xwhiteouts(l.layer);
            add(&self.lowers[l.layer], l.ino, false, x);
        }
        seen
    }

    /// Whether a directory looks empty for rmdir and rename: it shows no entry but whiteouts
    /// (kernel: `ovl_check_empty_dir`). NOTE(kernel): an xattr whiteout counts as an entry
    /// here, though readdir hides it. Returns the upper whiteouts to clear, or `None`
    /// when something is visible (ENOTEMPTY).
    pub(crate) fn check_empty_dir(&self, d: &Dentry) -> Option<Vec<String>> {
        let mut upper_whiteouts = Vec::new();
        for (name, e) in self.read_merged(d, false) {
            if !e.is_whiteout {
                return None;
            }
            if e.is_upper {
                upper_whiteouts.push(name);
            }
        }
        Some(upper_whiteouts)
    }
}
