//! stat, readlink, readdir, the attribute setters and the xattr calls (kernel: `fs/stat.c`,
//! `fs/open.c` `chmod_common`/`chown_common`, `fs/xattr.c`; `fs/overlayfs/inode.c`
//! `ovl_setattr`; `fs/overlayfs/xattrs.c`).

use crate::errno::{Errno, SysResult};
use crate::layer::{FileType, Inode};
use crate::lookup::Dentry;
use crate::ops::Stat;
use crate::overlay::Overlay;
use crate::path::{Chain, Follow};
use crate::whiteout;
use std::collections::{BTreeMap, BTreeSet};

pub use crate::layer::check::{XATTR_NAME_LEN_MAX, XATTR_SIZE_MAX};

/// The attribute change of a setattr call.
enum Attr {
    Mode(u32),
    Owner(u32, u32),
    Times,
}

impl Overlay {
    /// `stat(2)` or `lstat(2)`. Errors: the walk's.
    pub(crate) fn stat(&mut self, path: &str, follow: Follow) -> SysResult<Stat> {
        let chain = self.resolve(path, follow)?;
        Ok(self.getattr(chain.last().expect("chain")))
    }

    /// `readlink(2)`. Errors: the walk's, then EINVAL (not a symlink).
    pub(crate) fn readlink(&mut self, path: &str) -> SysResult<String> {
        let chain = self.resolve(path, Follow::No)?;
        let d = chain.last().expect("chain");
        if d.ftype != Some(FileType::Symlink) {
            return Err(Errno::EINVAL);
        }
        Ok(self.symlink_target(d))
    }

    /// `open(O_RDONLY|O_DIRECTORY)` and `getdents64` to the end. Errors: the walk's, then
    /// ENOTDIR. See [`Overlay::readdir_entries`] for what is listed.
    pub(crate) fn readdir(&mut self, path: &str) -> SysResult<BTreeMap<String, FileType>> {
        let chain = self.resolve(path, Follow::Yes)?;
        let d = chain.last().expect("chain");
        if !d.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        let d = d.clone();
        self.permission(&d, super::perm::MAY_READ)?;
        self.check_impure_real_dir(&d)?;
        Ok(self.readdir_entries(&d))
    }

    /// chmod, chown and utimes (follows a final symlink).
    ///
    /// Kernel: `chmod_common`, `chown_common`, `ovl_setattr`. Errors, in precedence order:
    /// the walk's; EROFS. overlayfs.rst, "Non-directories": the object is copied up even when
    /// nothing changes (chmod to the same mode, chown to the same owner, utimes). chown of a
    /// non-directory clears set-user-ID, and set-group-ID when group-execute is set
    /// (kernel: `ATTR_KILL_SUID`, `ATTR_KILL_SGID`).
    fn setattr(&mut self, path: &str, attr: Attr) -> SysResult<()> {
        self.setattr_with(path, attr, Follow::Yes)
    }

    /// [`Overlay::setattr`], following a final symlink or not (`lchown`, `utimensat` with
    /// `AT_SYMLINK_NOFOLLOW`; the FUSE server acts on the object a request names).
    fn setattr_with(&mut self, path: &str, attr: Attr, follow: Follow) -> SysResult<()> {
        let mut chain = self.resolve(path, follow)?;
        if self.is_read_only() {
            return Err(Errno::EROFS);
        }
        let checked = match attr {
            Attr::Mode(mode) => super::perm::SetAttr::Mode(mode),
            Attr::Owner(uid, gid) => super::perm::SetAttr::Owner(uid, gid),
            Attr::Times => super::perm::SetAttr::Touch,
        };
        let attr = match self.setattr_prepare(chain.last().expect("chain"), checked)? {
            Some(mode) => Attr::Mode(mode),
            None => attr,
        };
        self.verify_lower_data(chain.last().expect("chain"))?;
        let depth = chain.len() - 1;
        self.index_copy_up_denied(&mut chain, depth)?;
        self.copy_up(&mut chain, depth);
        let ino = chain[depth].upper.expect("copied up");
        self.upper_mut().update(ino, |i| match attr {
            Attr::Mode(mode) => i.mode = mode & 0o7777,
            Attr::Owner(uid, gid) => set_owner(i, uid, gid),
            Attr::Times => {}
        });
        Ok(())
    }

    /// `chmod(2)`. See [`Overlay::setattr`].
    pub(crate) fn chmod(&mut self, path: &str, mode: u32) -> SysResult<()> {
        self.setattr(path, Attr::Mode(mode))
    }

    /// `chown(2)`; an id of `u32::MAX` (-1) is left unchanged. See [`Overlay::setattr`].
    pub(crate) fn chown(&mut self, path: &str, uid: u32, gid: u32) -> SysResult<()> {
        self.setattr(path, Attr::Owner(uid, gid))
    }

    /// `utimensat(2)` to the current time. See [`Overlay::setattr`].
    pub(crate) fn utimes(&mut self, path: &str) -> SysResult<()> {
        self.setattr(path, Attr::Times)
    }

    /// `chmod`, `chown` (`u32::MAX` leaves an id) and `utimensat` of the object at `path`
    /// itself, a final symlink not followed (`lchown`, `AT_SYMLINK_NOFOLLOW`). See
    /// [`Overlay::setattr`].
    #[cfg(all(feature = "fuse", target_os = "linux"))]
    pub(crate) fn setattr_nofollow(
        &mut self,
        path: &str,
        mode: Option<u32>,
        owner: Option<(u32, u32)>,
    ) -> SysResult<()> {
        let attr = match (mode, owner) {
            (Some(m), _) => Attr::Mode(m),
            (None, Some((u, g))) => Attr::Owner(u, g),
            (None, None) => Attr::Times,
        };
        self.setattr_with(path, attr, Follow::No)
    }

    /// The object an xattr call acts on, after the VFS's name check ([`Overlay::xattr_name`]).
    /// A final symlink is followed or not (the `l*xattr` calls).
    fn xattr_target_with(&mut self, path: &str, name: &str, follow: Follow) -> SysResult<Chain> {
        Self::xattr_name(name)?;
        self.resolve(path, follow)
    }

    /// The VFS's check of an xattr name, made before the path walk (kernel:
    /// `import_xattr_name`): an empty or over-long name is ERANGE.
    pub(crate) fn xattr_name(name: &str) -> SysResult<()> {
        if name.is_empty() || name.len() > XATTR_NAME_LEN_MAX {
            return Err(Errno::ERANGE);
        }
        Ok(())
    }

    /// The VFS permission check of an xattr name on an object (kernel: `xattr_permission`):
    /// `user.*` exists only on regular files and directories (EPERM to write, ENODATA to
    /// read elsewhere). The caller is root, so `trusted.*` is allowed.
    pub(crate) fn xattr_permission(ftype: FileType, name: &str, write: bool) -> SysResult<()> {
        if name.starts_with("user.") && !matches!(ftype, FileType::File | FileType::Dir) {
            return Err(if write { Errno::EPERM } else { Errno::ENODATA });
        }
        Ok(())
    }

    /// Whether the layers' filesystem (tmpfs) has a handler for this namespace.
    pub(crate) fn xattr_supported(name: &str) -> bool {
        ["user.", "trusted.", "security."].iter().any(|p| name.starts_with(p))
    }

    /// `setxattr(2)` with flags 0.
    ///
    /// Kernel: `setxattr`, `ovl_xattr_set`. Errors, in precedence order: ERANGE (name),
    /// E2BIG (value over 64 KiB); the walk's; EROFS; EPERM (`user.*` on a special file);
    /// then, after the copy-up, EOPNOTSUPP (a namespace the layers do not support).
    /// overlayfs.rst, "Nesting overlayfs mounts": a private name is stored escaped.
    pub(crate) fn setxattr(&mut self, path: &str, name: &str, value: &[u8]) -> SysResult<()> {
        self.setxattr_with(path, name, value, Follow::Yes)
    }

    /// [`Overlay::setxattr`], following a final symlink or not (`lsetxattr`).
    pub(crate) fn setxattr_with(&mut self, path: &str, name: &str, value: &[u8], follow: Follow) -> SysResult<()> {
        if value.len() > XATTR_SIZE_MAX {
            return Err(Errno::E2BIG);
        }
        let mut chain = self.xattr_target_with(path, name, follow)?;
        if self.is_read_only() {
            return Err(Errno::EROFS);
        }
        let ftype = chain.last().expect("chain").ftype.expect("positive");
        self.xattr_access(chain.last().expect("chain"), name, true)?;
        Self::xattr_permission(ftype, name, true)?;
        self.verify_lower_data(chain.last().expect("chain"))?;
        let ino = self.xattr_upper(&mut chain)?;
        if !Self::xattr_supported(name) {
            return Err(Errno::EOPNOTSUPP);
        }
        let real = whiteout::escape_xattr(self, name);
        self.upper_mut().set_xattr(ino, &real, value);
        Ok(())
    }

    /// The upper inode an xattr is set on or removed from: the overlay inode's upper if it
    /// has one, the index's upper of a name not linked up yet included, with no copy-up and
    /// no link-up; otherwise the object is copied up (kernel: `ovl_xattr_set`, "upperdentry
    /// = ovl_i_dentry_upper(inode)", `ovl_copy_up` only without it; observed on 6.18: a
    /// setxattr through the second name of an indexed hard link leaves no upper name). The
    /// copy-up fails where [`Overlay::index_copy_up_denied`] says (EPERM).
    fn xattr_upper(&mut self, chain: &mut [Dentry]) -> SysResult<crate::layer::Ino> {
        let depth = chain.len() - 1;
        if let Some(ino) = self.index_alias(&chain[depth]) {
            return Ok(ino);
        }
        self.index_copy_up_denied(chain, depth)?;
        self.copy_up(chain, depth);
        Ok(chain[depth].upper.expect("copied up"))
    }

    /// `getxattr(2)`. Errors: ERANGE; the walk's; ENODATA (`user.*` on a special file);
    /// EOPNOTSUPP; ENODATA (not set; overlay's private xattrs are never shown).
    pub(crate) fn getxattr(&mut self, path: &str, name: &str) -> SysResult<Vec<u8>> {
        self.getxattr_with(path, name, Follow::Yes)
    }

    /// [`Overlay::getxattr`], following a final symlink or not (`lgetxattr`).
    pub(crate) fn getxattr_with(&mut self, path: &str, name: &str, follow: Follow) -> SysResult<Vec<u8>> {
        let chain = self.xattr_target_with(path, name, follow)?;
        self.xattr_access(chain.last().expect("chain"), name, false)?;
        self.getxattr_of(chain.last().expect("chain"), name)
    }

    /// [`Overlay::getxattr`] after the name check and the walk, on the object `d`.
    pub(crate) fn getxattr_of(&self, d: &Dentry, name: &str) -> SysResult<Vec<u8>> {
        Self::xattr_permission(d.ftype.expect("positive"), name, false)?;
        if !Self::xattr_supported(name) {
            return Err(Errno::EOPNOTSUPP);
        }
        let real = whiteout::escape_xattr(self, name);
        self.real_inode(d).xattr(&real).map(<[u8]>::to_vec).ok_or(Errno::ENODATA)
    }

    /// `listxattr(2)`: the top-most object's xattrs, private ones hidden and escaped ones
    /// unescaped (kernel: `ovl_listxattr`). Errors: the walk's.
    pub(crate) fn listxattr(&mut self, path: &str) -> SysResult<BTreeSet<String>> {
        self.listxattr_with(path, Follow::Yes)
    }

    /// [`Overlay::listxattr`], following a final symlink or not (`llistxattr`).
    pub(crate) fn listxattr_with(&mut self, path: &str, follow: Follow) -> SysResult<BTreeSet<String>> {
        let chain = self.resolve(path, follow)?;
        let mut names = self.listxattr_of(chain.last().expect("chain"));
        names.retain(|n| self.xattr_listed(n));
        Ok(names)
    }

    /// [`Overlay::listxattr`] after the walk, on the object `d`.
    pub(crate) fn listxattr_of(&self, d: &Dentry) -> BTreeSet<String> {
        let inode: &Inode = self.real_inode(d);
        // Most inodes have none: an `imbl` iterator sets up two cursors even for an empty map.
        if inode.xattrs.is_empty() {
            return BTreeSet::new();
        }
        inode.xattrs.keys().filter_map(|k| whiteout::unescape_xattr(self, k)).collect()
    }

    /// `removexattr(2)`.
    ///
    /// Kernel: `removexattr`, `ovl_xattr_set` with no value. Errors, in precedence order:
    /// ERANGE; the walk's; EROFS; EPERM (`user.*` on a special file); ENODATA (not set:
    /// checked on the lower object first, so a missing name copies nothing up); EOPNOTSUPP.
    pub(crate) fn removexattr(&mut self, path: &str, name: &str) -> SysResult<()> {
        self.removexattr_with(path, name, Follow::Yes)
    }

    /// [`Overlay::removexattr`], following a final symlink or not (`lremovexattr`).
    pub(crate) fn removexattr_with(&mut self, path: &str, name: &str, follow: Follow) -> SysResult<()> {
        let mut chain = self.xattr_target_with(path, name, follow)?;
        if self.is_read_only() {
            return Err(Errno::EROFS);
        }
        let d = chain.last().expect("chain");
        self.xattr_access(d, name, true)?;
        Self::xattr_permission(d.ftype.expect("positive"), name, true)?;
        let real = whiteout::escape_xattr(self, name);
        if d.upper.is_none() {
            if !Self::xattr_supported(name) {
                return Err(Errno::EOPNOTSUPP);
            }
            if self.real_inode(d).xattr(&real).is_none() {
                return Err(Errno::ENODATA);
            }
        }
        self.verify_lower_data(chain.last().expect("chain"))?;
        let ino = self.xattr_upper(&mut chain)?;
        if !Self::xattr_supported(name) {
            return Err(Errno::EOPNOTSUPP);
        }
        if self.upper_mut().remove_xattr(ino, &real) {
            Ok(())
        } else {
            Err(Errno::ENODATA)
        }
    }
}

/// The change chown makes to an inode: -1 leaves that id as it is (kernel:
/// `chown_common`); a non-directory loses set-user-ID, and set-group-ID when group-execute
/// is set (`ATTR_KILL_SUID`, `ATTR_KILL_SGID`).
pub(crate) fn set_owner(i: &mut Inode, uid: u32, gid: u32) {
    if uid != u32::MAX {
        i.uid = uid;
    }
    if gid != u32::MAX {
        i.gid = gid;
    }
    if !i.is_dir() {
        i.mode &= !0o4000;
        if i.mode & 0o2010 == 0o2010 {
            i.mode &= !0o2000;
        }
    }
}
