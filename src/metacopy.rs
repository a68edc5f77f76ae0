//! Metadata-only copy-up, `metacopy=on` (overlayfs.rst "Metadata only copy up"; kernel:
//! `fs/overlayfs/copy_up.c`, `ovl_need_meta_copy_up`, `ovl_copy_up_meta_inode_data`;
//! `fs/overlayfs/util.c`, `ovl_has_upperdata`; `fs/overlayfs/namei.c`, `ovl_lookup`).
//!
//! Under `metacopy=on` a copy-up that does not write (chmod, chown, utimes, setxattr,
//! removexattr, link, rename) copies a regular file's metadata only: the upper file has the
//! lower's size but no data, and carries the private `metacopy` xattr (empty). Its data stays
//! in a lower layer, the *lower data*: the last object of the dentry's lower stack, found by
//! the lookup through the upper's name or its `redirect`. Reads use the lower data; the first
//! open for write, `O_TRUNC` or truncate copies the data up and removes the xattr. A renamed
//! or hard-linked metacopy file gets a `redirect` xattr that names its lower data.
//!
//! Lookup keeps only the top-most lower metacopy file and the data below it
//! ([`crate::lookup`]); a metacopy file with no lower data is EIO
//! ([`Overlay::check_lower_data`]); on a mount without `metacopy=on` one is EPERM.

use crate::errno::{Errno, SysResult};
use crate::layer::{FileData, FileType, Inode, NodeKind};
use crate::lookup::{Dentry, LowerPath};
use crate::overlay::Overlay;
use crate::path::Chain;
use crate::whiteout;

impl Overlay {
    /// Whether a copy-up of `src` that does not write copies its metadata only: a regular
    /// file, on a `metacopy=on` mount (kernel: `ovl_need_meta_copy_up`; a copy-up with
    /// `FMODE_WRITE` or `O_TRUNC` is never metadata-only, see [`Overlay::copy_up_flags`]).
    pub(crate) fn meta_copy_up_wanted(&self, src: &Inode) -> bool {
        self.options.metacopy && matches!(src.kind, NodeKind::File(_))
    }

    /// Marks a metadata-only copy as such: the private `metacopy` xattr, empty
    /// (`trusted.overlay.metacopy`, or `user.overlay.metacopy` under `userxattr`; kernel:
    /// `ovl_copy_up_metadata`, `ovl_check_setxattr(.., OVL_XATTR_METACOPY, NULL, 0)`).
    /// NOTE(kernel): overlayfs.rst spells it `trusted.overlayfs.metacopy`; the kernel writes
    /// `trusted.overlay.metacopy`.
    pub(crate) fn meta_copy_up(&self, copy: &mut Inode) {
        copy.xattrs.insert(self.names().metacopy.to_owned(), std::sync::Arc::from(&[][..]));
    }

    /// The data a copy-up gives a new upper regular file: `size` bytes (the top-most lower
    /// object's `st_size`), none of them written for a metadata-only copy (a file of holes),
    /// else the lower data's bytes up to `size`, a hole past its end (kernel:
    /// `ovl_copy_up_data` from `ovl_path_lowerdata`, then `ovl_set_size`).
    pub(crate) fn copied_data(&self, d: &Dentry, size: u64, meta: bool) -> FileData {
        if meta {
            return FileData::hole(size);
        }
        let mut data = self.lower_data(d).map(|l| file_data(self.lowers[l.layer].get(l.ino))).unwrap_or_default();
        data.truncate(size);
        data
    }

    /// The lower object that holds a regular file's data: the last of its lower stack
    /// (kernel: `ovl_lowerdata_dentry`, `ovl_path_lowerdata`).
    pub(crate) fn lower_data(&self, d: &Dentry) -> Option<LowerPath> {
        d.lowers.last().copied()
    }

    /// Whether `d` is an upper file whose data is still in a lower layer (kernel:
    /// `!ovl_has_upperdata`; the upper carries the `metacopy` xattr).
    pub(crate) fn is_metacopy_upper(&self, d: &Dentry) -> bool {
        self.upper_inode(d).is_some_and(|i| whiteout::is_metacopy(self, i))
    }

    /// The data a read of the regular file `d` returns: the upper's when it has its data,
    /// else the lower data's, whole, whatever the size `stat` shows (kernel: `ovl_read_iter`
    /// reads `ovl_inode_realdata`).
    pub(crate) fn read_data(&self, d: &Dentry) -> FileData {
        // A lower-only name of an indexed lower hard link reads through the index's upper
        // inode, which may be a metacopy file itself (index=on with metacopy=on).
        let upper = self.upper_inode(d).or_else(|| self.index_alias(d).map(|_| self.real_inode(d)));
        let inode = match (upper, self.lower_data(d)) {
            (Some(u), Some(l)) if whiteout::is_metacopy(self, u) => self.lowers[l.layer].get(l.ino),
            (Some(u), _) => u,
            (None, Some(l)) => self.lowers[l.layer].get(l.ino),
            (None, None) => return FileData::new(),
        };
        file_data(inode)
    }

    /// The `metacopy` xattr of a regular file found by a lookup must be empty or at least
    /// 4 bytes long (the version, length, flags and digest algorithm of `struct
    /// ovl_metacopy`); one of 1 to 3 bytes is EIO, whether the mount has metacopy or not
    /// (kernel: `ovl_check_metacopy_xattr`, "metacopy file has too small xattr",
    /// `OVL_METACOPY_MIN_SIZE`; observed on 6.18). Its content is not read at lookup.
    ///
    /// Returns whether the inode is a metacopy file ([`whiteout::is_metacopy`]), read from
    /// the same probe of the xattr.
    ///
    /// Errors: EIO.
    pub(crate) fn check_metacopy_xattr(&self, inode: &Inode) -> SysResult<bool> {
        const METACOPY_MIN_SIZE: usize = 4;
        if !matches!(inode.kind, NodeKind::File(_)) {
            return Ok(false);
        }
        match inode.xattr(self.names().metacopy) {
            Some(v) if !v.is_empty() && v.len() < METACOPY_MIN_SIZE => Err(Errno::EIO),
            v => Ok(v.is_some()),
        }
    }

    /// A metacopy lookup must end on the file's data (kernel: `ovl_lookup`, "metacopy with
    /// no lower data found - abort lookup"): a regular non-directory whose upper is a
    /// metacopy file and found nothing below, or whose last lower object found is itself a
    /// metacopy file (no regular file under it: none, a whiteout, or another type), is EIO.
    /// The lookup says whether its lower stack is empty, and whether its last object is a
    /// metacopy file, which it read as it found it.
    ///
    /// Errors: EIO.
    pub(crate) fn check_lower_data(
        &self,
        upper_metacopy: bool,
        is_dir: bool,
        stack_empty: bool,
        last_metacopy: bool,
    ) -> SysResult<()> {
        if is_dir {
            return Ok(());
        }
        if last_metacopy || (upper_metacopy && stack_empty) {
            return Err(Errno::EIO);
        }
        Ok(())
    }

    /// A copy-up that writes: [`Overlay::copy_up_flags`] with data, then, for a metacopy
    /// upper file, its data (kernel: `ovl_copy_up_flags` with `O_WRONLY` or `O_TRUNC`,
    /// `ovl_dentry_needs_data_copy_up`, `ovl_copy_up_meta_inode_data`).
    ///
    /// The overlay inode, hashed by its lower data's top-most lower object, keeps that lower
    /// after the copy as after any copy-up ([`Overlay::keep_lower`]): an upper without an
    /// origin still reports the lower `st_ino` until the inode is evicted. So does one whose
    /// origin, recorded on an earlier mount, does not decode on this one (`uuid=off` over an
    /// origin with the layer's uuid: [`Overlay::check_origin`]); observed on 6.18,
    /// spec/metacopy/truncate-metacopy-renamed-remount-uuid-off-keeps-lower-ino.yaml.
    pub(crate) fn copy_up_with_data(&mut self, chain: &mut [Dentry], upto: usize, trunc: bool) {
        self.copy_up_flags(chain, upto, true);
        if self.is_metacopy_upper(&chain[upto]) {
            self.copy_up_meta_data(&chain[upto], trunc);
            let d = &chain[upto];
            let (Some(dir), Some(ino)) = (chain[upto - 1].upper, d.upper) else { return };
            let has_origin = self.upper_inode(d).is_some_and(|i| matches!(self.check_origin(i), Ok(Some(_))));
            self.keep_lower(dir, d, ino, has_origin);
        }
    }

    /// Copies the data of a metacopy upper file and removes its `metacopy` xattr; its
    /// `redirect`, if any, stays (kernel: `ovl_copy_up_meta_inode_data`). The bytes copied
    /// are the lower data's, up to the top-most lower object's `st_size` (none with
    /// `O_TRUNC`: `ctx.stat.size = 0`), written over the upper file from offset 0; its holes
    /// are skipped (`ovl_copy_up_file`, `SEEK_DATA`), and the upper keeps any byte past them
    /// and its own size if larger (no `ovl_set_size` here).
    fn copy_up_meta_data(&mut self, d: &Dentry, trunc: bool) {
        let ino = d.upper.expect("model invariant: a metacopy upper");
        let top = *d.lowers.first().expect("model invariant: a metacopy upper has lower data");
        let len = if trunc { 0 } else { self.lowers[top.layer].get(top.ino).size() };
        let lower = self.lower_data(d).map(|l| file_data(self.lowers[l.layer].get(l.ino))).unwrap_or_default();
        let mut data = file_data(self.upper.as_ref().expect("upper").get(ino));
        for (offset, bytes) in lower.extents() {
            if offset >= len {
                break;
            }
            let n = bytes.len().min((len - offset) as usize);
            data.write(offset, &bytes[..n]);
        }
        let name = self.names().metacopy;
        let upper = self.upper_mut();
        upper.update(ino, |i| i.kind = NodeKind::File(data));
        upper.remove_xattr(ino, name);
    }

    /// The redirect a rename gives a metacopy file, so that its lower data is found under
    /// the new name: kept if it has one that fits, else set (kernel: `ovl_rename`,
    /// `ovl_type_merge_or_lower` of a non-directory without upper data, `ovl_set_redirect`).
    /// It is relative (the old name) for a rename within one directory of a file whose
    /// lower data is not a hard link, absolute otherwise (kernel:
    /// `ovl_need_absolute_redirect`). `chain` is the parent's.
    ///
    /// Errors: EXDEV (an absolute redirect longer than `redirect_max`).
    pub(crate) fn set_metacopy_redirect(
        &mut self,
        chain: &Chain,
        d: &Dentry,
        path: &str,
        samedir: bool,
    ) -> SysResult<()> {
        let absolute = !samedir || self.lower_is_hard_link(d);
        match self.indexed_redirect(d) {
            Some(r) => {
                let d = Dentry { redirect: Some(r), ..d.clone() };
                self.set_redirect(chain, &d, path, !absolute)
            }
            None => self.set_redirect(chain, d, path, !absolute),
        }
    }

    /// The redirect a name of an indexed metacopy file has through its overlay inode: every
    /// name of the lower hard link shares one inode, and with it the redirect an earlier
    /// link or rename of another name set on it, which a rename keeps if it fits (kernel:
    /// `ovl_set_redirect` reads `ovl_dentry_get_redirect`, the inode's; observed on 6.18,
    /// spec/index/link-hardlink-index-metacopy.yaml; after `drop_caches` too, the inode then
    /// made through a lower-only name: spec/index/rename-hardlink-index-metacopy-drop-caches.yaml).
    /// The model reads the indexed upper inode's xattr.
    fn indexed_redirect(&self, d: &Dentry) -> Option<String> {
        if d.redirect.is_some() {
            return None;
        }
        let ino = self.indexed_upper(d)?;
        let value = self.upper.as_ref()?.get(ino).xattr(self.names().redirect)?;
        Some(String::from_utf8_lossy(value).into_owned())
    }

    /// A metacopy upper file's overlay inode is hashed by its top-most lower object when that
    /// has one name, and then counts as having an origin whether or not the upper records
    /// one (kernel: `ovl_hash_bylower`, `OVL_CONST_INO`, `ovl_path_type`).
    pub(crate) fn metacopy_hashed_by_lower(&self, d: &Dentry) -> bool {
        self.is_metacopy_upper(d) && !d.lowers.is_empty() && !self.lower_is_hard_link(d)
    }

    /// The top-most lower object of `d` has more than one name (kernel:
    /// `ovl_need_absolute_redirect`, `d_inode(lowerdentry)->i_nlink > 1`).
    fn lower_is_hard_link(&self, d: &Dentry) -> bool {
        d.lowers.first().is_some_and(|l| self.lowers[l.layer].get(l.ino).nlink > 1)
    }

    /// A hard link to a metacopy file gives it an absolute redirect to its lower data, as
    /// its names may later be in different directories (kernel: `ovl_link`,
    /// `ovl_set_link_redirect`). `chain` is the source's, the source last.
    ///
    /// Errors: EXDEV (a redirect longer than `redirect_max`).
    pub(crate) fn set_link_redirect(&mut self, chain: &Chain) -> SysResult<()> {
        let (d, parents) = chain.split_last().expect("chain");
        if d.ftype != Some(FileType::File) || !self.is_metacopy_upper(d) {
            return Ok(());
        }
        let path = Overlay::chain_path(chain);
        let parents = parents.to_vec();
        self.set_redirect(&parents, d, &path, false)
    }
}

/// A regular file's data, or none for another kind.
fn file_data(inode: &Inode) -> FileData {
    match &inode.kind {
        NodeKind::File(data) => data.clone(),
        _ => FileData::new(),
    }
}
