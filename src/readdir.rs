//! Directory listing and the empty-directory check (kernel: `fs/overlayfs/readdir.c`).

use crate::errno::Errno;
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
    /// The root always is (kernel: `ovl_get_root` sets `OVL_WHITEOUTS` on it, "Root is always
    /// merge -> can have whiteouts"), even when it is not `OVL_TYPE_MERGE`: with one regular
    /// lower over data-only layers and no upper (`lowerdir=L0::D0`) its stack holds L0 only
    /// (`ovl_get_lowerstack` leaves the data-only layers out), yet L0's whiteouts are hidden,
    /// while its `st_nlink` is L0's (`spec/data_only/readdir-root-single-lower-whiteout-hidden.yaml`;
    /// found by the kernel fuzzer, profile data_only, issue 13).
    pub(crate) fn dir_is_merged(&self, d: &Dentry) -> bool {
        d.is_root() || d.is_merge_dir() || self.real_inode(d).origin.is_some()
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
            let (layer, entries) = self.real_dir(d);
            // Inserted one by one, in the order they come (sorted): `collect` would buffer
            // and sort them first.
            let mut out = BTreeMap::new();
            for (n, i) in entries.iter() {
                out.insert(n.clone(), layer.get(*i).file_type());
            }
            return out;
        }
        let mut out = BTreeMap::new();
        self.merged_listing(d, |name, ftype| {
            out.insert(name, ftype);
        });
        out
    }

    /// The listing of [`Overlay::readdir_entries`] for a merged directory, each entry given
    /// to `each` in byte order as it is listed, rather than gathered in a map its caller may
    /// only read through once (the merged dump).
    fn merged_listing(&mut self, d: &Dentry, mut each: impl FnMut(String, FileType)) {
        let impure = self.upper_inode(d).is_some_and(|i| i.impure);
        let mut failed = Vec::new();
        let raw = self.read_merged(d, true);
        // An open handle's cache of this directory, compared below: whether it read the same
        // names, taken before the names move into the listing.
        let cached = self.fd_cached_listing(d).map(|(read, listed)| (read.iter().eq(raw.keys()), listed));
        // The names listed, kept only for that comparison.
        let mut listed_now = cached.as_ref().map(|_| Vec::new());
        for (name, e) in raw {
            let recheck = e.check_xwhiteout || (impure && e.is_upper);
            if e.is_whiteout {
                continue;
            }
            if recheck {
                match self.lookup_child(d, &name) {
                    Ok(c) if c.is_positive() => {}
                    Ok(_) => continue,
                    Err(errno) => {
                        failed.push((name, errno));
                        continue;
                    }
                }
            }
            if let Some(names) = &mut listed_now {
                names.push(name.clone());
            }
            each(name, e.ftype);
        }
        self.note_failed_rechecks(d, &failed, 2);
        // A handle's cache of this directory is reused while the directory's version is
        // unchanged. A name added or removed since it was read changed the version
        // (`ovl_dir_modified`), and the listing is read afresh; the same names with other
        // answers (a lookup that fails now) leave it to a version the model does not keep.
        if let (Some((same_names, listed)), Some(listed_now)) = (cached, listed_now) {
            if same_names && listed != listed_now && self.unspecified.is_none() {
                self.unspecified = Some(format!(
                    "listing directory {}, whose cache an open handle holds: the same names, listed \
                     otherwise now; the kernel lists from that cache unless the directory's version changed",
                    dir_label(d)
                ));
            }
        }
    }

    /// The names of [`Overlay::readdir_entries`], in the same (byte) order, each given to
    /// `each`: a directory read straight from its real directory lends its names instead of
    /// copying them into a listing, and a merged one gives each name as it is listed, with
    /// no listing made (the merged dump reads every directory this way).
    pub(crate) fn readdir_names(&mut self, d: &Dentry, mut each: impl FnMut(&str)) {
        if self.dir_is_merged(d) {
            self.merged_listing(d, |name, _| each(&name));
            return;
        }
        let (_, entries) = self.real_dir(d);
        for name in entries.keys() {
            each(name);
        }
    }

    /// The one real directory a directory that is not merged is read from: the upper,
    /// else the top-most lower (kernel: `ovl_dir_is_real`, `ovl_path_real`).
    fn real_dir(&self, d: &Dentry) -> (&Layer, &crate::layer::Entries) {
        let (layer, ino) = match d.upper {
            Some(u) => (self.upper.as_ref().expect("upper"), u),
            None => (&self.lowers[d.lowers[0].layer], d.lowers[0].ino),
        };
        (layer, layer.get(ino).entries().expect("model invariant: readdir of a directory"))
    }

    /// Records that a listing's answer depends on the real directories' order when lookups
    /// made while iterating failed with an error (not just found nothing), `at_least` times.
    ///
    /// Kernel: `ovl_iterate_merged` stops at an entry whose `ovl_cache_update` fails, marks
    /// it stale and returns the error; `getdents64` then returns the entries this call
    /// already emitted, or the error when it emitted none. The next call starts past the
    /// stale entry. So one failing entry is only left out (`.` and `..` always come first),
    /// but two with no listed entry between them end the listing with the second's errno.
    /// Which comes next to which is the order of `ovl_dir_read_merged` (the lowest layer's
    /// names first, then the others in upper-to-lower read order), each in the order the
    /// layer's filesystem lists it (tmpfs: newest first; ext4: by hash), which overlayfs
    /// does not define and the model does not keep. Through a handle read in batches, one
    /// failing entry already ends a batch early, so `at_least` is 1 there.
    /// NOTE(kernel): found by the differential fuzzer on 6.18: a `userxattr` upper root
    /// with two invalid `user.overlay.redirect`s (one `/zz/..`, one of 300 bytes) lists as
    /// EPERM.
    pub(crate) fn note_failed_rechecks(&mut self, d: &Dentry, failed: &[(String, Errno)], at_least: usize) {
        if failed.len() >= at_least && self.unspecified.is_none() {
            let names: Vec<String> = failed.iter().map(|(n, e)| format!("{n:?} ({})", e.name())).collect();
            self.unspecified = Some(format!(
                "listing directory {}: lookups of {} failed while iterating; whether the listing fails depends \
                 on the layers' directory order",
                dir_label(d),
                names.join(", ")
            ));
        }
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

    /// Listing a directory that is read straight from its upper (not merged) but impure
    /// first looks up every name of the real directory again, to find the copied-up
    /// entries' inode numbers; a lookup that fails fails the listing with its errno before
    /// any entry is returned (kernel: `ovl_iterate`, `ovl_iterate_real` on one filesystem,
    /// `ovl_cache_get_impure`, `ovl_dir_read_impure`, `ovl_cache_update`). A name that is
    /// found negative (a whiteout) is only left out of that cache. Observed on 6.18: a
    /// metacopy file moved into a pure upper directory, on a mount without metacopy
    /// (`spec/metacopy/readdir-impure-metacopy-off-eperm.yaml`). When lookups fail with
    /// different errnos, which one is returned depends on the directory's order, which the
    /// model does not keep ([`Overlay::take_unspecified`]).
    ///
    /// Errors: the first failing lookup's.
    pub(crate) fn check_impure_real_dir(&mut self, d: &Dentry) -> crate::errno::SysResult<()> {
        if self.dir_is_merged(d) || !self.upper_inode(d).is_some_and(|i| i.impure) {
            return Ok(());
        }
        let names: Vec<String> =
            self.upper_inode(d).and_then(|i| i.entries()).map(|e| e.keys().cloned().collect()).unwrap_or_default();
        let mut failed = Vec::new();
        for name in names {
            if let Err(errno) = self.lookup_child(d, &name) {
                failed.push((name, errno));
            }
        }
        let Some(&(_, first)) = failed.first() else { return Ok(()) };
        if failed.iter().any(|(_, e)| *e != first) && self.unspecified.is_none() {
            let names: Vec<String> = failed.iter().map(|(n, e)| format!("{n:?} ({})", e.name())).collect();
            self.unspecified = Some(format!(
                "listing the impure directory {:?}: lookups of {} failed with different errnos; which one is \
                 returned depends on the layer's directory order",
                d.name,
                names.join(", ")
            ));
        }
        Err(first)
    }
}

/// How an unspecified answer names directory `d`: by its name, or as the root.
fn dir_label(d: &Dentry) -> String {
    if d.name.is_empty() {
        "the root".to_owned()
    } else {
        format!("{:?}", d.name)
    }
}

#[cfg(test)]
mod tests {
    use crate::layer::{FileType, Inode, Layer};
    use crate::mount::Options;
    use crate::{Op, Outcome, Overlay};

    /// Lower `/a/`; upper `/a/` and the given directories, each with an invalid
    /// `user.overlay.redirect`, on a `userxattr` mount (redirects: nofollow, so every one
    /// of them fails its lookup with EPERM). `mkdir /a/a` copies nothing up but records
    /// `/a`'s origin, which makes the upper root impure.
    fn impure_root_with_refused_redirects(names: &[&str]) -> Overlay {
        let mut lower = Layer::new();
        lower.put("/a/x", Inode::file(b"x", 0o644));
        let mut upper = Layer::new();
        for name in names {
            upper.put(&format!("/{name}/f"), Inode::file(b"f", 0o644));
            let d = upper.walk([*name]).expect("made above");
            upper.set_xattr(d, "user.overlay.redirect", b"/zz/..");
        }
        let options = Options { userxattr: true, ..Options::default() };
        let mut ov = Overlay::mount(vec![lower], Some(upper), options).expect("mount");
        assert_eq!(ov.apply(&Op::Mkdir { path: "/a/a".into(), mode: 0o755 }), Outcome::Ok);
        assert!(ov.upper().expect("upper").get(ov.upper().expect("upper").root()).impure, "the root is impure");
        ov
    }

    fn readdir_root(ov: &mut Overlay) -> Vec<String> {
        match ov.apply(&Op::Readdir { path: "/".into() }) {
            Outcome::Entries(e) => e.into_keys().collect(),
            other => panic!("readdir /: {other:?}"),
        }
    }

    #[test]
    fn one_failed_lookup_while_iterating_is_left_out_and_determined() {
        let mut ov = impure_root_with_refused_redirects(&["b"]);
        assert_eq!(readdir_root(&mut ov), ["a"]);
        assert_eq!(ov.take_unspecified(), None);
    }

    #[test]
    fn two_failed_lookups_while_iterating_leave_the_listing_to_the_layers_order() {
        let mut ov = impure_root_with_refused_redirects(&["b", "d"]);
        assert_eq!(readdir_root(&mut ov), ["a"]);
        let why = ov.take_unspecified().expect("two failures: order-dependent");
        assert!(why.contains("\"b\" (EPERM)") && why.contains("\"d\" (EPERM)"), "{why}");
        // Taken once; the next operation starts clean.
        assert_eq!(ov.take_unspecified(), None);
        assert!(matches!(ov.apply(&Op::Lstat { path: "/a".into() }), Outcome::Stat(s) if s.kind == FileType::Dir));
        assert_eq!(ov.take_unspecified(), None);
        // The model backend refuses the answer rather than give it as the kernel's.
        use crate::backend::{Backend, BackendError, Command, ModelBackend};
        let mut b = ModelBackend::new();
        let ov = impure_root_with_refused_redirects(&["b", "d"]);
        let lower = ov.lowers()[0].to_flat();
        let upper = ov.upper().expect("upper").to_flat();
        b.exec(&Command::Layer { name: "L0".into(), content: lower }).expect("L0");
        b.exec(&Command::Layer { name: "U".into(), content: upper }).expect("U");
        let mount = Command::Mount {
            lowers: vec!["L0".into()],
            upper: Some("U".into()),
            options: Options { userxattr: true, ..Options::default() },
        };
        b.exec(&mount).expect("mount");
        // The flat form keeps no origin or `impure` mark: the lookup of `/a` records its
        // origin again (`ovl_fix_origin`), which marks the root impure.
        b.exec(&Command::Op(Op::Mkdir { path: "/a/b".into(), mode: 0o755 })).expect("mkdir");
        let r = b.exec(&Command::Op(Op::Readdir { path: "/".into() }));
        assert!(matches!(r, Err(BackendError::NotModelled(ref w)) if w.contains("directory order")), "{r:?}");
        let r = b.exec(&Command::DumpMerged);
        assert!(matches!(r, Err(BackendError::NotModelled(_))), "{r:?}");
    }
}
