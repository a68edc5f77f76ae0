//! The inode index, `index=on` (overlayfs.rst "Inode index", "Sharing and copying layers";
//! kernel: `fs/overlayfs/namei.c`, `ovl_lookup_index`, `ovl_get_index_name`;
//! `fs/overlayfs/copy_up.c`, `ovl_create_index`, `ovl_link_up`; `fs/overlayfs/util.c`,
//! `ovl_need_index`, `ovl_nlink_start`, `ovl_nlink_end`, `ovl_cleanup_index`;
//! `fs/overlayfs/inode.c`, `ovl_get_nlink`, `ovl_set_nlink_upper`; `fs/overlayfs/super.c`,
//! `ovl_get_indexdir`, `ovl_verify_origin` of the upper root).
//!
//! With `index=on`, the copy-up of a lower non-directory with more than one link goes
//! through the workdir's `index/` directory: the upper inode is also linked there, under a
//! name made of the lower inode's file handle, and records its origin. Every other merged
//! name of that lower inode then finds the upper inode through the index, before and after
//! its own copy-up (which links the same upper inode: `ovl_link_up`), so the hard link is
//! never broken: one `st_ino` (the lower's), one data, one link count. The merged link count
//! is kept in the private `nlink` xattr of the upper inode, relative to the upper's own count
//! (`U+n` / `U-n`), rewritten after every link, unlink and rename of an indexed name; the
//! index entry is removed when the last merged name goes.
//!
//! The model keeps `index/` in the upper [`Layer`](crate::layer::Layer), as a directory
//! inode that no path reaches, so that its links count in the upper inodes' `nlink` as the
//! kernel's do and it lives as long as the upper layer (the kernel backend keeps one
//! workdir per upper layer). Its entries are named by the origin (layer identity and inode);
//! the kernel's names are hex file handles, which hold tmpfs inode generations: a scenario
//! sees neither ([`Overlay::index_entries`] names an entry by its origin's lower path).

use crate::errno::{Errno, SysResult};
use crate::layer::{Ino, Inode, NodeKind, Origin};
use crate::lookup::{Dentry, LowerPath};
use crate::mount::MountError;
use crate::overlay::Overlay;

/// What an entry of the workdir's `index/` is, as a scenario checks it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IndexEntry {
    /// A hard link to the upper inode of an indexed non-directory.
    File,
    /// A directory standing for an indexed upper directory (`nfs_export=on`).
    Dir,
    /// A whiteout.
    Whiteout,
}

impl IndexEntry {
    /// The name scenarios use: `file`, `whiteout`.
    pub fn as_str(self) -> &'static str {
        match self {
            IndexEntry::File => "file",
            IndexEntry::Dir => "dir",
            IndexEntry::Whiteout => "whiteout",
        }
    }
}

/// The model's name of the index entry for `origin` (the kernel's is the hex of its file
/// handle: `ovl_get_index_name`).
fn index_name(origin: Origin) -> String {
    format!("{:x}-{:x}", origin.layer.0, origin.ino)
}

/// The origin an index entry of the model is named after.
pub(crate) fn parse_index_name(name: &str) -> Option<Origin> {
    let (layer, ino) = name.split_once('-')?;
    Some(Origin {
        layer: crate::layer::LayerId(u64::from_str_radix(layer, 16).ok()?),
        ino: u64::from_str_radix(ino, 16).ok()?,
    })
}

/// Parses a private `nlink` xattr, `U+n`, `U-n`, `L+n` or `L-n` (kernel: `ovl_get_nlink`).
pub(crate) fn parse_nlink(value: &[u8]) -> Option<(bool, i64)> {
    let s = std::str::from_utf8(value).ok()?;
    let upper = match s.as_bytes().first()? {
        b'U' => true,
        b'L' => false,
        _ => return None,
    };
    let rest = &s[1..];
    if !rest.starts_with(['+', '-']) {
        return None;
    }
    let n: i64 = rest.strip_prefix('+').unwrap_or(rest).parse().ok()?;
    Some((upper, n))
}

impl Overlay {
    /// Whether a copy-up of `lower` goes through the index: `index=on` and a lower
    /// non-directory with more than one link, or, with `nfs_export=on`, any lower object
    /// (kernel: `ovl_need_index`, "Index all files for NFS export and consistency
    /// verification", "Index only lower hardlinks on copy up").
    pub(crate) fn index_wanted(&self, lower: &Inode) -> bool {
        self.options.index && (self.index_all() || (!lower.is_dir() && lower.nlink > 1))
    }

    /// `nfs_export=on`: every copy-up is indexed, and a removed indexed object leaves a
    /// whiteout in the index (kernel: `ovl_index_all`).
    fn index_all(&self) -> bool {
        self.options.index && self.options.nfs_export
    }

    /// The index entry of `origin`, if any, with its kind (kernel: `ovl_lookup_index`,
    /// `ovl_get_index_fh`, before any check of the entry).
    pub(crate) fn index_entry(&self, origin: Origin) -> Option<(Ino, IndexEntry)> {
        if !self.options.index {
            return None;
        }
        let upper = self.upper.as_ref()?;
        let ino = upper.child(upper.index_dir()?, &index_name(origin))?;
        let inode = upper.get(ino);
        let kind = if is_whiteout(inode) {
            IndexEntry::Whiteout
        } else if inode.is_dir() {
            IndexEntry::Dir
        } else {
            IndexEntry::File
        };
        Some((ino, kind))
    }

    /// The upper inode the index holds for lower object `l`, on an `index=on` mount
    /// (kernel: `ovl_lookup_index`).
    pub(crate) fn index_lookup(&self, l: LowerPath) -> Option<Ino> {
        if !self.options.index {
            return None;
        }
        let upper = self.upper.as_ref()?;
        upper
            .child(upper.index_dir()?, &index_name(self.origin_of(l)))
            .filter(|&ino| !is_whiteout(upper.get(ino)) && !upper.get(ino).is_dir())
    }

    /// Whether the index holds a directory for lower directory `l`, on an `nfs_export=on`
    /// mount (kernel: `ovl_lookup`, `ovl_lookup_index` of a directory, `OVL_INDEX`).
    pub(crate) fn indexed_dir(&self, l: LowerPath) -> bool {
        let Some(upper) = self.upper.as_ref().filter(|_| self.index_all()) else { return false };
        upper
            .index_dir()
            .and_then(|dir| upper.child(dir, &index_name(self.origin_of(l))))
            .is_some_and(|i| upper.get(i).is_dir())
    }

    /// The index's upper inode of a lower-only non-directory, which the overlay inode uses
    /// as its upper although the name has no upper alias yet (kernel: `ovl_lookup`, "upperdentry
    /// = dget(index)" with `ovl_dentry_has_upper_alias` false).
    pub(crate) fn index_alias(&self, d: &Dentry) -> Option<Ino> {
        if d.upper.is_some() || !d.is_positive() || d.is_dir() {
            return None;
        }
        self.index_lookup(*d.lowers.first()?)
    }

    /// The merged `st_nlink` of a non-directory whose real upper inode is `real` and whose
    /// origin is `d.lowers[0]`, as a new overlay inode reads it, when the private `nlink`
    /// xattr gives one: the upper's (or lower's) count plus the recorded difference, if
    /// positive; otherwise `None` and the real inode's count stands (kernel: `ovl_get_nlink`,
    /// called from `ovl_get_inode` with the real inode's count as the fallback).
    ///
    /// NOTE(kernel): `ovl_get_nlink` ignores the xattr when the lower has one link, so an
    /// inode indexed from such a lower (`nfs_export=on`, or a remount with `index=on` only)
    /// is read back with the upper's own count, the index entry included; the count its
    /// overlay inode had before stays only while that inode lives ([`Overlay::live_nlink`]).
    pub(crate) fn recorded_nlink(&self, d: &Dentry, real: &Inode) -> Option<u32> {
        let l = d.lowers.first()?;
        let lower = self.lowers[l.layer].get(l.ino);
        if !self.options.index {
            // Without index the overlay inode is not indexed and `ovl_getattr` shows the
            // real inode's count (kernel: `OVL_INDEX` unset; observed on 6.18 after an
            // index=on mount, spec/index/chown-hardlink-index-userxattr-symlink-eperm.yaml).
            return None;
        }
        if d.upper.is_none() && self.index_alias(d).is_some_and(|u| self.icache.failed_index.contains(&u)) {
            return Some(lower.nlink);
        }
        if lower.nlink == 1 || real.is_dir() {
            return None;
        }
        let (upper, diff) = parse_nlink(real.xattr(self.names().nlink)?)?;
        let base = if upper { real.nlink } else { lower.nlink };
        let n = i64::from(base) + diff;
        u32::try_from(n).ok().filter(|&n| n > 0)
    }

    /// Whether indexed upper `ino`, the copy of lower object `l`, has an overlay inode whose
    /// link count no xattr gives back: its origin has one link, so `ovl_get_nlink` falls
    /// back to the real inode's count (kernel: `ovl_get_nlink`, "d_inode(lowerdentry)->i_nlink
    /// == 1").
    fn nlink_not_recorded(&self, l: LowerPath, ino: Ino) -> bool {
        self.lowers[l.layer].get(l.ino).nlink == 1 && self.index_lookup(l) == Some(ino)
    }

    /// A lookup found `d` in upper directory `dir`: when it is an indexed non-directory whose
    /// origin has one link, its dentry now holds the overlay inode, the cached one if a
    /// dentry still holds it, else a new one with the upper's own count (kernel:
    /// `ovl_lookup`, `ovl_get_inode`: `ilookup5` by the origin, else `ovl_get_nlink`'s
    /// fallback; observed on 6.18: `link /c /a; unlink /c; stat /a` shows 2, and 1 when `/a`
    /// was looked up before the unlink, spec/nfs_export/stat-link-nfs-export-evicted-nlink.yaml).
    pub(crate) fn live_nlink(&mut self, dir: Option<Ino>, d: &Dentry) {
        if !self.options.index || d.is_dir() {
            return;
        }
        let (Some(dir), Some(ino), Some(&l)) = (dir, d.upper, d.lowers.first()) else { return };
        if !self.nlink_not_recorded(l, ino) {
            return;
        }
        self.evict_unheld(ino);
        let nlink = self.upper.as_ref().expect("upper").get(ino).nlink;
        let live = self
            .icache
            .live_nlink
            .entry(ino)
            .or_insert_with(|| crate::icache::LiveNlink { nlink, names: Default::default() });
        live.names.insert((dir, d.name.as_str().into()));
    }

    /// Whether the overlay inode of indexed upper `ino` ([`crate::icache::LiveNlink`]) is
    /// still held: by a cached dentry, or by an open file, whose dentry holds it even once
    /// its name is gone (kernel: `d_delete` only unhashes a busy dentry; the inode goes at
    /// the last `dput`, `close`; observed on 6.18,
    /// spec/nfs_export/stat-link-nfs-export-open-file-nlink.yaml).
    fn live_nlink_held(&self, ino: Ino) -> Option<&crate::icache::LiveNlink> {
        let live = self.icache.live_nlink.get(&ino)?;
        let held = !live.names.is_empty() || self.fds.files.values().any(|f| f.dentry.upper == Some(ino));
        held.then_some(live)
    }

    /// Forgets the overlay inode of indexed upper `ino` if nothing holds it any more
    /// ([`Overlay::live_nlink_held`]): evicted, the next lookup makes a new one.
    pub(crate) fn evict_unheld(&mut self, ino: Ino) {
        if self.live_nlink_held(ino).is_none() {
            self.icache.live_nlink.remove(&ino);
        }
    }

    /// Records the merged link count `merged` of indexed upper inode `ino`, relative to its
    /// upper count (kernel: `ovl_set_nlink_upper`, format `U%+i`).
    /// The overlay inode's count moves with it (`inc_nlink`, `drop_nlink`).
    pub(crate) fn set_nlink_upper(&mut self, ino: Ino, merged: u32) {
        if let Some(live) = self.icache.live_nlink.get_mut(&ino) {
            live.nlink = merged;
        }
        let name = self.names().nlink;
        let upper = self.upper_mut();
        let diff = i64::from(merged) - i64::from(upper.get(ino).nlink);
        upper.set_xattr(ino, name, format!("U{diff:+}").as_bytes());
    }

    /// Links the new upper copy `ino` of lower hard link `l` into the index, records its
    /// origin, and its merged count: the lower's, as the overlay inode had it (kernel:
    /// `ovl_copy_up_workdir` with `c->indexed`: `ovl_create_index`, then
    /// `ovl_set_nlink_upper`). The copy was made through dentry `at` (upper parent, name);
    /// from a lower with one link, its overlay inode keeps that lower's count while it lives
    /// ([`Overlay::live_nlink`]).
    ///
    /// A directory (`nfs_export=on`) gets an index entry of its own, an empty directory
    /// that records the upper one (kernel: `ovl_create_index`; its `upper` xattr is not
    /// modelled).
    pub(crate) fn index_copy_up(&mut self, ino: Ino, l: LowerPath, at: (Ino, &str)) {
        let origin = self.origin_of(l);
        let merged = self.lowers[l.layer].get(l.ino).nlink;
        let upper = self.upper_mut();
        upper.update(ino, |i| i.origin = Some(origin));
        let dir = upper.index_dir_or_make();
        if upper.get(ino).is_dir() {
            let name = index_name(origin);
            if upper.child(dir, &name).is_some() {
                upper.unlink(dir, &name);
            }
            upper.create(dir, &name, Inode::dir(0));
            return;
        }
        let name = index_name(origin);
        if upper.child(dir, &name).is_some() {
            // A whiteout left by an earlier removal (`nfs_export=on`) is replaced.
            upper.unlink(dir, &name);
        }
        upper.link(dir, &name, ino);
        self.set_nlink_upper(ino, merged);
        if merged == 1 {
            let names = std::iter::once((at.0, at.1.into())).collect();
            self.icache.live_nlink.insert(ino, crate::icache::LiveNlink { nlink: merged, names });
        }
    }

    /// The copy-up of a name whose lower inode is already indexed: the index's upper inode
    /// is linked under the name, and its merged count, unchanged, is recorded against the
    /// new upper count (kernel: `ovl_link_up`, then `ovl_set_nlink_upper`).
    pub(crate) fn index_link_up(&mut self, parent: Ino, d: &Dentry, ino: Ino) {
        let merged = self.indexed_nlink(d, ino);
        self.set_impure(parent);
        self.upper_mut().link(parent, &d.name, ino);
        self.set_nlink_upper(ino, merged);
        self.evict_unheld(ino);
        if let Some(live) = self.icache.live_nlink.get_mut(&ino) {
            live.names.insert((parent, d.name.as_str().into()));
        }
    }

    /// The merged link count of indexed upper inode `ino` reached by `d`.
    pub(crate) fn merged_nlink(&self, d: &Dentry, ino: Ino) -> u32 {
        self.indexed_nlink(d, ino)
    }

    /// Whether `a` and `b` are two names of one overlay inode because their lower hard link
    /// is hashed by its origin under `index=on` (kernel: `ovl_hash_bylower`, `ovl_get_inode`):
    /// a rename of one over the other is then a no-op, as between hard links (`vfs_rename`).
    pub(crate) fn same_indexed_inode(&self, a: &Dentry, b: &Dentry) -> bool {
        if !self.options.index || !a.is_positive() || !b.is_positive() || a.is_dir() || b.is_dir() {
            return false;
        }
        let (Some(&la), Some(&lb)) = (a.lowers.first(), b.lowers.first()) else { return false };
        if la != lb || !self.index_wanted(self.lowers[la.layer].get(la.ino)) {
            return false;
        }
        let index = self.index_lookup(la);
        let same = |d: &Dentry| d.upper.is_none() || (index.is_some() && d.upper == index);
        same(a) && same(b)
    }

    /// The overlay inode's link count: the live one's, else as a new one reads it.
    fn indexed_nlink(&self, d: &Dentry, ino: Ino) -> u32 {
        if let Some(live) = self.live_nlink_held(ino) {
            return live.nlink;
        }
        let real = self.upper.as_ref().expect("upper").get(ino);
        self.recorded_nlink(d, real).unwrap_or(real.nlink)
    }

    /// Whether `d` is (or will be, once copied up) an indexed non-directory: its upper, or
    /// its index alias, is the index entry of its origin (kernel: `OVL_INDEX`).
    pub(crate) fn indexed_upper(&self, d: &Dentry) -> Option<Ino> {
        if !self.options.index || d.is_dir() {
            return None;
        }
        let l = *d.lowers.first()?;
        let ino = self.index_lookup(l)?;
        (d.upper.is_none() || d.upper == Some(ino)).then_some(ino)
    }

    /// Before a name of `d` is removed (unlink, or a rename over it): a lower hard link not
    /// yet indexed is copied up, so that the index holds its merged count (kernel:
    /// `ovl_nlink_start`, "before whiteout/rename over an indexed lower, copy up to create
    /// the upper index"). Returns the indexed upper inode and its merged count before the
    /// removal.
    ///
    /// With `nfs_export=on` a directory is copied up so too, and counts as one name.
    ///
    /// The count is recorded for any indexed inode (`OVL_INDEX`), whether or not its copy-up
    /// would go through the index now: an inode indexed under `nfs_export=on` from a lower
    /// with one link, met again on an `index=on` mount, records its count too (observed on
    /// 6.18: `U+0` after such an unlink, spec/index/unlink-indexed-one-link-lower-index-only-nlink.yaml).
    pub(crate) fn nlink_start(&mut self, chain: &mut [Dentry], depth: usize) -> Option<(Ino, u32)> {
        let d = &chain[depth];
        if !self.options.index || !d.is_positive() || (d.is_dir() && !self.index_all()) {
            return None;
        }
        let l = *d.lowers.first()?;
        let wanted = self.index_wanted(self.lowers[l.layer].get(l.ino));
        if !wanted && d.is_dir() {
            return None;
        }
        if wanted && d.upper.is_none() {
            self.copy_up(chain, depth);
        }
        let d = &chain[depth];
        if d.is_dir() {
            let upper = self.upper.as_ref()?;
            upper.child(upper.index_dir()?, &index_name(self.origin_of(l)))?;
            return d.upper.map(|u| (u, 1));
        }
        let ino = self.indexed_upper(d)?;
        Some((ino, self.indexed_nlink(d, ino)))
    }

    /// After a name of an indexed inode was removed: its merged count drops by one and is
    /// recorded, and when no merged name is left the index entry goes (kernel:
    /// `ovl_nlink_end`, `ovl_cleanup_index`): unlinked for a non-directory without
    /// `nfs_export`; with it, replaced by a whiteout ("Whiteout orphan index to block future
    /// open by handle"), as is a removed directory's.
    pub(crate) fn nlink_end(&mut self, d: &Dentry, (ino, merged): (Ino, u32)) {
        let merged = merged.saturating_sub(1);
        let l = *d.lowers.first().expect("model invariant: an indexed dentry has an origin");
        let name = index_name(self.origin_of(l));
        if merged == 0 {
            let all = self.index_all();
            let upper = self.upper_mut();
            let dir = upper.index_dir().expect("model invariant: an indexed inode has an index");
            upper.unlink(dir, &name);
            if all {
                upper.create(dir, &name, Inode::whiteout());
            }
        } else {
            self.set_nlink_upper(ino, merged);
        }
    }

    /// What the workdir's `index/` holds, each entry named by the lower path of its origin
    /// (the first in byte order, as `/layer-name/path` would sort: the path alone), with its
    /// kind. An entry whose origin is in no mounted lower is named `?`.
    pub fn index_entries(&self) -> Vec<(String, IndexEntry)> {
        let Some(upper) = self.upper.as_ref() else { return Vec::new() };
        let Some(dir) = upper.index_dir() else { return Vec::new() };
        let Some(entries) = upper.get(dir).entries() else { return Vec::new() };
        let mut out = Vec::new();
        for (name, ino) in entries.iter() {
            let inode = upper.get(*ino);
            let kind = match inode {
                i if is_whiteout(i) => IndexEntry::Whiteout,
                i if i.is_dir() => IndexEntry::Dir,
                _ => IndexEntry::File,
            };
            let path = parse_index_name(name)
                .and_then(|o| {
                    let layer = self.lowers.iter().find(|l| l.id() == crate::uuid::handle_layer(o.layer))?;
                    layer.walk_all().into_iter().filter(|(_, i)| *i == o.ino).map(|(p, _)| p).min()
                })
                .unwrap_or_else(|| "?".to_owned());
            out.push((path, kind));
        }
        out.sort();
        out
    }

    /// The copy-up of a lower symlink or special file that goes through the index, under
    /// `userxattr` (more than one link, or any with `nfs_export=on`: [`Overlay::index_wanted`])
    /// fails with EPERM, after its parents are copied up: the copy is made and moved into
    /// the index without its origin (`ovl_set_origin_fh` ignores the EPERM of a `user.*`
    /// xattr on a symlink or special file), then recording its link count fails
    /// (`ovl_set_nlink_upper`; for a name of an inode already left in the index,
    /// `ovl_link_up`'s `ovl_set_nlink_lower`, before any link). The entry stays in the
    /// index, found by every later lookup of the lower inode; the names stay lower-only
    /// (kernel: `fs/overlayfs/copy_up.c`, `ovl_do_copy_up`, `ovl_copy_up_metadata`,
    /// `ovl_link_up`; `fs/xattr.c`, `xattr_permission`; observed on 6.18,
    /// spec/index/chown-hardlink-index-userxattr-symlink-eperm.yaml). `chain[depth]` is
    /// the object about to be copied up.
    ///
    /// Errors: EPERM.
    pub(crate) fn index_copy_up_denied(&mut self, chain: &mut [Dentry], depth: usize) -> SysResult<()> {
        let d = &chain[depth];
        if !self.options.index || !self.options.userxattr || d.upper.is_some() || !d.is_positive() || depth == 0 {
            return Ok(());
        }
        let Some(&l) = d.lowers.first() else { return Ok(()) };
        let src = self.lowers[l.layer].get(l.ino).clone();
        if matches!(src.kind, NodeKind::File(_) | NodeKind::Dir(_)) || is_whiteout(&src) || !self.index_wanted(&src) {
            return Ok(());
        }
        self.copy_up(chain, depth - 1);
        if self.index_lookup(l).is_none() {
            let mut copy = Inode::new(src.kind, src.mode);
            copy.uid = src.uid;
            copy.gid = src.gid;
            copy.xattrs = src
                .xattrs
                .iter()
                .filter(|(k, _)| !crate::whiteout::is_private_xattr(self, k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            let name = index_name(self.origin_of(l));
            let upper = self.upper_mut();
            let dir = upper.index_dir_or_make();
            if upper.child(dir, &name).is_some() {
                upper.unlink(dir, &name);
            }
            let ino = upper.create(dir, &name, copy);
            self.icache.failed_index.insert(ino);
        }
        Err(Errno::EPERM)
    }

    /// At an `index=on` mount, every entry of the index is verified; one that records no
    /// origin (left by a copy-up that failed, [`Overlay::index_copy_up_denied`]) aborts the
    /// mount with ENODATA (kernel: `fs/overlayfs/readdir.c`, `ovl_indexdir_cleanup`,
    /// "Abort mount to avoid corrupting the index if an incompatible index entry was
    /// found"; `ovl_verify_index`; observed on 6.18). An `index=off` mount does not look.
    pub(crate) fn verify_index_entries(&self) -> Result<(), MountError> {
        if !self.options.index {
            return Ok(());
        }
        let Some(upper) = self.upper.as_ref() else { return Ok(()) };
        let Some(dir) = upper.index_dir() else { return Ok(()) };
        let Some(entries) = upper.get(dir).entries() else { return Ok(()) };
        let bad = entries.iter().any(|(_, ino)| {
            let i = upper.get(*ino);
            !is_whiteout(i) && !i.is_dir() && i.origin.is_none()
        });
        if bad {
            return Err(MountError::Refused {
                errno: Errno::ENODATA,
                reason: "failed to verify index entry".to_owned(),
            });
        }
        Ok(())
    }

    /// At mount with `index=on`: the upper root records the top-most lower root as its
    /// origin on the first such mount, and a later one over another top-most lower root is
    /// ESTALE, "failed to verify upper root origin" (kernel: `ovl_get_indexdir`,
    /// `ovl_verify_origin(ofs, upperpath->dentry, oe->lowerstack[0].dentry, true)`; a lower
    /// added below the first is accepted; observed on 6.18). The index directory is made.
    pub(crate) fn verify_upper_root_origin(&mut self) -> Result<(), MountError> {
        if !self.options.index || self.upper.is_none() {
            return Ok(());
        }
        let want = self.origin_of(LowerPath { layer: 0, ino: self.lowers[0].root() });
        let upper = self.upper_mut();
        let root = upper.root();
        match upper.get(root).origin {
            Some(o) if o != want => {
                return Err(MountError::Refused {
                    errno: Errno::ESTALE,
                    reason: "failed to verify upper root origin".to_owned(),
                })
            }
            Some(_) => {}
            None => upper.update(root, |i| i.origin = Some(want)),
        }
        upper.index_dir_or_make();
        Ok(())
    }
}

/// What the workdir's `index/` of `upper` holds, as [`crate::backend::Reply::Index`]
/// reports it: each entry named `LAYER:/path` after its origin among `layers` (by name), with
/// its kind; `None` when `upper` has no `index/`.
pub fn dump_index(
    upper: &crate::layer::Layer,
    layers: &std::collections::BTreeMap<String, crate::layer::Layer>,
) -> Option<std::collections::BTreeMap<String, String>> {
    let dir = upper.index_dir()?;
    let mut out = std::collections::BTreeMap::new();
    for (name, ino) in upper.get(dir).entries().expect("the index is a directory").iter() {
        let kind = match upper.get(*ino) {
            i if is_whiteout(i) => IndexEntry::Whiteout,
            i if i.is_dir() => IndexEntry::Dir,
            _ => IndexEntry::File,
        };
        let key = parse_index_name(name)
            .and_then(|o| {
                let (lname, layer) = layers.iter().find(|(_, l)| l.id() == crate::uuid::handle_layer(o.layer))?;
                let path = layer.walk_all().into_iter().filter(|(_, i)| *i == o.ino).map(|(p, _)| p).min()?;
                Some(format!("{lname}:{path}"))
            })
            .unwrap_or_else(|| "?".to_owned());
        out.insert(key, kind.as_str().to_owned());
    }
    Some(out)
}

/// A char 0/0 whiteout.
fn is_whiteout(inode: &Inode) -> bool {
    matches!(inode.kind, NodeKind::Char(0, 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::Layer;
    use crate::mount::Options;
    use crate::ops::WriteAt;
    use crate::{Op, Outcome};

    /// Lower `/h1`, `/h2` and `/d/h3`: one inode with three names.
    fn hard_links(index: bool) -> Overlay {
        let mut lower = Layer::new();
        lower.put("/h1", Inode::file(b"old", 0o644));
        lower.put_link("/h2", "/h1").expect("link");
        lower.put_link("/d/h3", "/h1").expect("link");
        Overlay::mount(vec![lower], Some(Layer::new()), Options { index, ..Options::default() }).expect("mount")
    }

    fn lstat(ov: &mut Overlay, path: &str) -> crate::ops::Stat {
        match ov.apply(&Op::Lstat { path: path.into() }) {
            Outcome::Stat(s) => s,
            other => panic!("lstat {path}: {other:?}"),
        }
    }

    fn write(ov: &mut Overlay, path: &str, data: &[u8]) {
        let op = Op::Write { path: path.into(), at: WriteAt::Offset(0), data: data.to_vec() };
        assert_eq!(ov.apply(&op), Outcome::Ok, "write {path}");
    }

    #[test]
    fn copy_up_of_a_lower_hard_link_goes_through_the_index() {
        let mut ov = hard_links(true);
        let before = lstat(&mut ov, "/h2");
        write(&mut ov, "/h1", b"new");
        assert_eq!(ov.index_entries(), vec![("/d/h3".to_owned(), IndexEntry::File)]);
        for path in ["/h1", "/h2", "/d/h3"] {
            let st = lstat(&mut ov, path);
            assert_eq!((st.ino, st.nlink), (before.ino, 3), "{path}");
        }
        assert_eq!(ov.apply(&Op::Read { path: "/d/h3".into() }), Outcome::Data(b"new".to_vec()));
        let upper = ov.upper().expect("upper");
        let h1 = upper.get(upper.walk(["h1"]).expect("/h1"));
        assert_eq!(h1.nlink, 2, "the name and the index entry");
        assert_eq!(h1.xattr("trusted.overlay.nlink"), Some(&b"U+1"[..]));
    }

    #[test]
    fn without_index_the_copy_up_breaks_the_link_and_makes_no_index() {
        let mut ov = hard_links(false);
        write(&mut ov, "/h1", b"new");
        assert!(ov.index_entries().is_empty());
        assert_eq!(lstat(&mut ov, "/h1").nlink, 1);
        assert_eq!(lstat(&mut ov, "/h2").nlink, 3);
    }

    #[test]
    fn the_index_entry_goes_with_the_last_merged_name() {
        let mut ov = hard_links(true);
        for path in ["/h1", "/h2"] {
            assert_eq!(ov.apply(&Op::Unlink { path: path.into() }), Outcome::Ok);
            assert_eq!(ov.index_entries().len(), 1, "after unlinking {path}");
        }
        assert_eq!(lstat(&mut ov, "/d/h3").nlink, 1);
        assert_eq!(ov.apply(&Op::Unlink { path: "/d/h3".into() }), Outcome::Ok);
        assert!(ov.index_entries().is_empty());
    }

    #[test]
    fn userxattr_index_copy_up_of_a_symlink_hard_link_is_eperm_and_leaves_an_index_entry() {
        let mut lower = Layer::new();
        lower.put("/s", Inode::symlink("x"));
        lower.put_link("/t", "/s").expect("link");
        lower.put("/one", Inode::symlink("y"));
        let userxattr = Options { index: true, userxattr: true, ..Options::default() };
        let mut ov = Overlay::mount(vec![lower], Some(Layer::new()), userxattr).expect("mount");
        let link = |from: &str, to: &str| Op::Link { from: from.into(), to: to.into() };
        assert_eq!(ov.apply(&link("/s", "/u")), Outcome::Err(Errno::EPERM));
        assert_eq!(ov.index_entries(), vec![("/s".to_owned(), IndexEntry::File)], "the failed copy stays indexed");
        assert_eq!(ov.apply(&Op::Unlink { path: "/t".into() }), Outcome::Err(Errno::EPERM), "again, via the entry");
        assert_eq!(ov.index_entries().len(), 1);
        assert_eq!(lstat(&mut ov, "/t").nlink, 2, "the cached inode keeps the lower's count");
        ov.drop_caches();
        assert_eq!(lstat(&mut ov, "/t").nlink, 1, "read back, the entry's own count");
        assert_eq!(ov.apply(&link("/one", "/two")), Outcome::Ok, "a symlink with one link is not indexed");
        let (lowers, upper) = ov.unmount();
        let refused = Overlay::mount(lowers.clone(), upper.clone(), userxattr);
        assert!(matches!(refused, Err(MountError::Refused { errno: Errno::ENODATA, .. })), "{refused:?}");
        let index_off = Options { userxattr: true, ..Options::default() };
        assert!(Overlay::mount(lowers, upper, index_off).is_ok(), "index=off does not verify the index");
    }

    #[test]
    fn an_index_mount_over_another_top_lower_root_is_estale() {
        let ov = hard_links(true);
        let (lowers, upper) = ov.unmount();
        let other = Layer::new();
        let refused = Overlay::mount(vec![other.clone()], upper.clone(), Options { index: true, ..Options::default() });
        assert!(matches!(refused, Err(MountError::Refused { errno: Errno::ESTALE, .. })), "{refused:?}");
        assert!(
            Overlay::mount(vec![other.clone()], upper.clone(), Options::default()).is_ok(),
            "index off never checks"
        );
        let below =
            Overlay::mount(vec![lowers[0].clone(), other], upper, Options { index: true, ..Options::default() });
        assert!(below.is_ok(), "a lower added below the first is accepted");
    }

    #[test]
    fn nlink_xattr_parses_as_ovl_get_nlink_reads_it() {
        assert_eq!(parse_nlink(b"U+1"), Some((true, 1)));
        assert_eq!(parse_nlink(b"U-2"), Some((true, -2)));
        assert_eq!(parse_nlink(b"L+0"), Some((false, 0)));
        assert_eq!(parse_nlink(b"U1"), None);
        assert_eq!(parse_nlink(b"X+1"), None);
        assert_eq!(parse_nlink(b""), None);
    }
}
