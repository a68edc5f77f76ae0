//! Calls that change names: mkdir, mknod, symlink, link, unlink, rmdir (kernel:
//! `fs/namei.c` for the checks, `fs/overlayfs/dir.c` for the overlay part). Rename is in
//! [`super::rename`].

use super::MknodKind;
use crate::errno::{Errno, SysResult};
use crate::layer::{Ino, Inode, NodeKind};
use crate::lookup::Dentry;
use crate::overlay::Overlay;
use crate::path::{Chain, Follow, Last, PATH_LEN_MAX};

const S_ISVTX: u32 = 0o1000;

/// A name about to be created: the parent chain, the name and its (negative) dentry.
pub(crate) struct NewName {
    pub chain: Chain,
    pub name: String,
    pub dentry: Dentry,
}

impl Overlay {
    /// The checks before creating `path` (kernel: `filename_create`). `dir_ok` allows a
    /// trailing slash (mkdir).
    ///
    /// Errors, in precedence order: the parent walk's errors; EEXIST (`.`, `..` or `/` as
    /// the last component); the lookup errors; EEXIST (the name is visible); ENOENT (a
    /// trailing slash on a non-directory create); EROFS; EACCES (no write and search
    /// permission on the parent: `may_create`, which the kernel makes in `vfs_mkdir` and
    /// its siblings, next after these).
    pub(crate) fn filename_create(&mut self, path: &str, dir_ok: bool) -> SysResult<NewName> {
        let new = self.filename_create_unchecked(path, dir_ok)?;
        self.may_create(new.chain.last().expect("chain has a root"))?;
        Ok(new)
    }

    /// [`Overlay::filename_create`] without its last check, EACCES ([`Overlay::may_create`]),
    /// which `link(2)` makes after its own.
    pub(crate) fn filename_create_unchecked(&mut self, path: &str, dir_ok: bool) -> SysResult<NewName> {
        let (chain, last) = self.resolve_parent(path)?;
        let Last::Norm { name, slash } = last else { return Err(Errno::EEXIST) };
        let parent = chain.last().expect("chain has a root");
        let dentry = self.lookup_child(parent, &name)?;
        if dentry.is_positive() {
            return Err(Errno::EEXIST);
        }
        if slash && !dir_ok {
            return Err(Errno::ENOENT);
        }
        if self.is_read_only() {
            return Err(Errno::EROFS);
        }
        Ok(NewName { chain, name, dentry })
    }

    /// The mode and group of a new object in the parent at the end of `chain` (kernel:
    /// `inode_init_owner`): a set-group-ID parent passes on its group, and its set-group-ID
    /// bit to new directories; the umask and the caller's groups apply as
    /// [`Overlay::new_owner`] says.
    fn init_owner(&self, chain: &Chain, mode: u32, is_dir: bool) -> (u32, u32) {
        let parent = self.real_inode(chain.last().expect("chain has a root"));
        let (mode, _, gid) = self.new_owner(parent, mode, is_dir, true);
        (mode, gid)
    }

    /// Creates `inode` at a checked new name and returns its upper inode number.
    ///
    /// Kernel: `ovl_create_or_link`. The parent chain is copied up first. Over an upper
    /// whiteout the whiteout is replaced (`ovl_create_over_whiteout`), and a new directory
    /// there is made opaque, whatever the whiteout hid. Elsewhere, including over a whiteout
    /// in a lower layer, the object is created plainly (`ovl_create_upper`), except that a
    /// new directory in a merged parent is made opaque when offline changes to the lowers
    /// are not allowed anyway (kernel: `ovl_allow_offline_changes` is false with
    /// `redirect_dir=on`, `index`, `metacopy` or `xino=on`).
    pub(crate) fn create_object(&mut self, new: &mut NewName, inode: Inode) -> Ino {
        let depth = new.chain.len() - 1;
        self.copy_up(&mut new.chain, depth);
        // Merged as it is after its own copy-up (kernel: `ovl_type_merge` in
        // `ovl_create_upper`, which runs after `ovl_copy_up` of the parent).
        let parent_merge = new.chain[depth].is_merge_dir();
        let dir = new.chain[depth].upper.expect("parent copied up");
        let is_dir = inode.is_dir();
        let mut inode = inode;
        inode.uid = self.caller().uid;
        let over_whiteout = new.dentry.is_whiteout();
        let opaque = is_dir && (over_whiteout || (parent_merge && !self.allow_offline_changes()));
        let upper = self.upper_mut();
        if over_whiteout && upper.child(dir, &new.name).is_some() {
            upper.unlink(dir, &new.name);
        }
        let ino = upper.create(dir, &new.name, inode);
        if opaque {
            let path = Overlay::child_path(&new.chain, &new.name);
            self.set_opaque(ino, path);
        }
        ino
    }

    /// Whether the lowers may be changed offline between mounts (kernel:
    /// `ovl_allow_offline_changes`): not with `redirect_dir=on`, `index`, `metacopy` or
    /// `xino=on`.
    pub(crate) fn allow_offline_changes(&self) -> bool {
        let o = &self.options;
        !o.index && !o.metacopy && !o.redirect_dir.creates() && o.xino != crate::mount::Xino::On
    }

    /// `mkdir(2)`. Errors: those of [`Overlay::filename_create`].
    pub(crate) fn mkdir(&mut self, path: &str, mode: u32) -> SysResult<()> {
        let mut new = self.filename_create(path, true)?;
        let (mode, gid) = self.init_owner(&new.chain, mode & (0o777 | S_ISVTX), true);
        let mut inode = Inode::dir(mode);
        inode.gid = gid;
        self.create_object(&mut new, inode);
        Ok(())
    }

    /// `mknod(2)` and `mkfifo(3)`. Errors: those of [`Overlay::filename_create`], then
    /// EPERM for a character device 0/0 (kernel: `ovl_mknod` refuses to make a whiteout).
    pub(crate) fn mknod(&mut self, path: &str, kind: MknodKind, mode: u32) -> SysResult<()> {
        let mut new = self.filename_create(path, false)?;
        if matches!(kind, MknodKind::Char(..) | MknodKind::Block(..))
            && kind != MknodKind::Char(0, 0)
            && !self.caller().capable()
        {
            // Kernel: `vfs_mknod`, a device without `CAP_MKNOD`.
            return Err(Errno::EPERM);
        }
        let node = match kind {
            MknodKind::File => NodeKind::File(crate::layer::FileData::new()),
            MknodKind::Char(0, 0) => return Err(Errno::EPERM),
            MknodKind::Char(a, b) => NodeKind::Char(a, b),
            MknodKind::Block(a, b) => NodeKind::Block(a, b),
            MknodKind::Fifo => NodeKind::Fifo,
        };
        let (mode, gid) = self.init_owner(&new.chain, mode & 0o7777, false);
        let mut inode = Inode::new(node, mode);
        inode.gid = gid;
        self.create_object(&mut new, inode);
        Ok(())
    }

    /// `open(O_CREAT)` of a new regular file (kernel: `lookup_open`, `ovl_create`).
    pub(crate) fn create_file(&mut self, new: &mut NewName, mode: u32) -> Ino {
        let (mode, gid) = self.init_owner(&new.chain, mode & 0o7777, false);
        let mut inode = Inode::file(b"", mode);
        inode.gid = gid;
        self.create_object(new, inode)
    }

    /// `symlink(2)`. Errors: ENOENT (empty target), ENAMETOOLONG (target of 4096 bytes or
    /// more), then those of [`Overlay::filename_create`].
    pub(crate) fn symlink(&mut self, target: &str, path: &str) -> SysResult<()> {
        if target.is_empty() {
            return Err(Errno::ENOENT);
        }
        if target.len() >= PATH_LEN_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        let mut new = self.filename_create(path, false)?;
        let (_, gid) = self.init_owner(&new.chain, 0o777, false);
        let mut inode = Inode::symlink(target);
        inode.gid = gid;
        self.create_object(&mut new, inode);
        Ok(())
    }

    /// `link(2)`: the source's final symlink is not followed.
    ///
    /// Kernel: `do_linkat`, `vfs_link`, `ovl_link`. Errors, in precedence order: the
    /// source's resolution errors; those of [`Overlay::filename_create`] for the target
    /// (a failed link copies nothing up); EPERM (a directory source). Then the source is
    /// copied up (a lower hard link is broken from its other aliases) and the new name links
    /// to its upper inode.
    pub(crate) fn link(&mut self, from: &str, to: &str) -> SysResult<()> {
        let mut old = self.resolve(from, Follow::No)?;
        let mut new = self.filename_create_unchecked(to, false)?;
        self.may_linkat(old.last().expect("chain"))?;
        self.may_create(new.chain.last().expect("chain"))?;
        if old.last().expect("chain").is_dir() {
            return Err(Errno::EPERM);
        }
        self.verify_lower_data(old.last().expect("chain"))?;
        let depth = old.len() - 1;
        self.index_copy_up_denied(&mut old, depth)?;
        self.copy_up(&mut old, depth);
        // The merged count of an indexed source grows with the new name (kernel: `ovl_link`
        // between `ovl_nlink_start` and `ovl_nlink_end`).
        let indexed = self.indexed_upper(&old[depth]).map(|ino| (ino, self.merged_nlink(&old[depth], ino)));
        self.set_link_redirect(&old)?;
        let target = old[depth].upper.expect("copied up");
        let pdepth = new.chain.len() - 1;
        self.copy_up(&mut new.chain, pdepth);
        let dir = new.chain[pdepth].upper.expect("parent copied up");
        // Linking a file with a copy-up origin into a parent marks the parent impure
        // (kernel: `ovl_create_or_link` with `origin`).
        if old[depth].has_origin(self) {
            self.set_impure(dir);
        }
        let over_whiteout = new.dentry.is_whiteout();
        let upper = self.upper_mut();
        if over_whiteout && upper.child(dir, &new.name).is_some() {
            upper.unlink(dir, &new.name);
        }
        upper.link(dir, &new.name, target);
        if let Some((ino, merged)) = indexed {
            self.set_nlink_upper(ino, merged + 1);
        }
        Ok(())
    }

    /// `unlink(2)`.
    ///
    /// Kernel: `do_unlinkat`, `ovl_unlink`. Errors, in precedence order: the parent walk's
    /// errors; EISDIR (`.`, `..` or `/` last); EROFS (even for a missing name); the lookup
    /// errors; with a trailing slash ENOENT, EISDIR or ENOTDIR; ENOENT; EISDIR.
    pub(crate) fn unlink(&mut self, path: &str) -> SysResult<()> {
        let (chain, last) = self.resolve_parent(path)?;
        let Last::Norm { name, slash } = last else { return Err(Errno::EISDIR) };
        if self.is_read_only() {
            return Err(Errno::EROFS);
        }
        let d = self.lookup_child(chain.last().expect("chain"), &name)?;
        if slash {
            return Err(match d.ftype {
                None => Errno::ENOENT,
                Some(_) if d.is_dir() => Errno::EISDIR,
                Some(_) => Errno::ENOTDIR,
            });
        }
        if !d.is_positive() {
            return Err(Errno::ENOENT);
        }
        self.may_delete(chain.last().expect("chain"), &d)?;
        if d.is_dir() {
            return Err(Errno::EISDIR);
        }
        self.do_remove(chain, d, false)
    }

    /// `rmdir(2)`.
    ///
    /// Kernel: `do_rmdir`, `ovl_rmdir`. Errors, in precedence order: the parent walk's
    /// errors; ENOTEMPTY (`..` last), EINVAL (`.` last), EBUSY (`/`); EROFS; the lookup
    /// errors; ENOENT; ENOTDIR; ENOTEMPTY (the directory still shows an entry).
    pub(crate) fn rmdir(&mut self, path: &str) -> SysResult<()> {
        let (chain, last) = self.resolve_parent(path)?;
        let name = match last {
            Last::Norm { name, .. } => name,
            Last::DotDot => return Err(Errno::ENOTEMPTY),
            Last::Dot => return Err(Errno::EINVAL),
            Last::Root => return Err(Errno::EBUSY),
        };
        if self.is_read_only() {
            return Err(Errno::EROFS);
        }
        let d = self.lookup_child(chain.last().expect("chain"), &name)?;
        if !d.is_positive() {
            return Err(Errno::ENOENT);
        }
        self.may_delete(chain.last().expect("chain"), &d)?;
        if !d.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        self.do_remove(chain, d, true)
    }

    /// Removes `d` from the parent at the end of `chain`.
    ///
    /// overlayfs.rst, "whiteouts and opaque directories"; kernel: `ovl_do_remove`. A
    /// directory that is not pure upper, or that still covers a lower name, must look empty
    /// (ENOTEMPTY otherwise). The parent is copied up. When a lower layer still shows the
    /// name, the upper object (with the whiteouts inside it) is replaced by a whiteout
    /// (`ovl_remove_and_whiteout`); otherwise it is simply removed (`ovl_remove_upper`), and
    /// a pure upper directory must be really empty, whiteouts included.
    fn do_remove(&mut self, mut chain: Chain, d: Dentry, is_dir: bool) -> SysResult<()> {
        let parent = chain.last().expect("chain");
        let lower_positive = self.lower_positive(parent, &d);
        if is_dir {
            if lower_positive || !d.is_pure_upper(self) {
                if self.check_empty_dir(&d).is_none() {
                    return Err(Errno::ENOTEMPTY);
                }
            } else if self.upper_inode(&d).and_then(|i| i.entries()).is_some_and(|e| !e.is_empty()) {
                return Err(Errno::ENOTEMPTY);
            }
        }
        let depth = chain.len() - 1;
        chain.push(d);
        if let Err(e) = self.index_copy_up_denied(&mut chain, depth + 1) {
            chain.pop();
            return Err(e);
        }
        let indexed = self.nlink_start(&mut chain, depth + 1);
        let d = chain.pop().expect("pushed");
        self.copy_up(&mut chain, depth);
        let dir = chain[depth].upper.expect("parent copied up");
        let path = Overlay::child_path(&chain, &d.name);
        if lower_positive {
            self.put_whiteout(dir, &d.name, path);
        } else {
            self.upper_mut().unlink(dir, &d.name);
        }
        if let Some(indexed) = indexed {
            self.nlink_end(&d, indexed);
        }
        self.forget_dir(&d);
        if let Some(u) = d.upper {
            self.forget_kept(u, (dir, &d.name));
        }
        Ok(())
    }
}
