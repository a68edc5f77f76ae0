//! Permission checks for a caller other than root, and the owner and mode of new objects
//! (kernel: `fs/namei.c`, `fs/attr.c`, `fs/xattr.c`, `fs/inode.c`; overlayfs:
//! `fs/overlayfs/inode.c` `ovl_permission`).
//!
//! overlayfs checks the overlay inode with the caller's credentials, then the real inode
//! with the mounter's (`ovl_permission`). The mounter is root: the second check passes for
//! every access these operations ask for (no execute of a file), so only the first is
//! modelled. Copy-up and whiteouts are made with the mounter's credentials
//! (`ovl_override_creds`): a copy keeps the lower object's owner and mode, and a whiteout
//! belongs to root, whoever the caller is. A new object belongs to the caller
//! (`ovl_create_object` sets the creating credentials' fsuid and fsgid to the new overlay
//! inode's owner).
//!
//! With root as the caller (every operation without `as_user`) every check here passes, and
//! only the umask changes anything.

use crate::cred::Cred;
use crate::errno::{Errno, SysResult};
use crate::layer::{FileType, Inode};
use crate::lookup::Dentry;
use crate::ops::{Op, Outcome};
use crate::overlay::Overlay;
use std::sync::Arc;

/// `MAY_EXEC`: search a directory.
pub(crate) const MAY_EXEC: u32 = 1;
/// `MAY_WRITE`.
pub(crate) const MAY_WRITE: u32 = 2;
/// `MAY_READ`.
pub(crate) const MAY_READ: u32 = 4;

const S_ISUID: u32 = 0o4000;
const S_ISGID: u32 = 0o2000;
const S_ISVTX: u32 = 0o1000;
const S_IXGRP: u32 = 0o010;

/// Whether `cred` may access `inode` for `mask` (`MAY_READ | MAY_WRITE | MAY_EXEC`).
///
/// Kernel: `generic_permission` (`acl_permission_check`, then the capability overrides).
/// The owner class applies when the fsuid owns the inode; the group class when the caller
/// is in its group and the group bits differ from the other bits; else the other class.
/// Then `CAP_DAC_READ_SEARCH` allows reading and searching a directory and reading a file,
/// `CAP_DAC_OVERRIDE` everything but executing a file without any execute bit. tmpfs
/// inodes here carry no ACLs. Errors: EACCES.
pub(crate) fn generic_permission(cred: &Cred, inode: &Inode, mask: u32) -> SysResult<()> {
    let mask = mask & 7;
    let mut mode = inode.mode;
    if cred.uid == inode.uid {
        mode >>= 6;
    } else if ((mode >> 3) & mask) != (mode & mask) && cred.in_group(inode.gid) {
        mode >>= 3;
    }
    if mask & !mode & 7 == 0 {
        return Ok(());
    }
    let exec_ok = mask & MAY_EXEC == 0 || inode.is_dir() || inode.mode & 0o111 != 0;
    if cred.capable() && exec_ok {
        return Ok(());
    }
    Err(Errno::EACCES)
}

/// Whether the caller owns `inode` or has `CAP_FOWNER` (kernel: `inode_owner_or_capable`).
fn owner_or_capable(cred: &Cred, inode: &Inode) -> bool {
    cred.uid == inode.uid || cred.capable()
}

impl Overlay {
    /// Carries out `op` as `cred` ([`crate::cred`]): the checks of this module use it, new
    /// objects belong to it and take its umask. The overlay is root's again afterwards.
    pub fn apply_as(&mut self, op: &Op, cred: &Cred) -> Outcome {
        self.caller = Arc::new(cred.clone());
        let outcome = self.apply(op);
        self.caller = Arc::default();
        outcome
    }

    /// The caller of the operation being carried out.
    pub(crate) fn caller(&self) -> &Cred {
        &self.caller
    }

    /// Whether the caller may access the merged object `d` for `mask`.
    ///
    /// Kernel: `inode_permission`, `ovl_permission`: `generic_permission` on the overlay
    /// inode (the real inode's owner and mode, `ovl_copyattr`) with the caller's
    /// credentials. The real inode's check with the mounter's credentials passes (module
    /// doc). Errors: EACCES.
    pub(crate) fn permission(&self, d: &Dentry, mask: u32) -> SysResult<()> {
        if self.caller.capable() {
            return Ok(());
        }
        generic_permission(&self.caller, self.real_inode(d), mask)
    }

    /// Search permission on each directory a path walk goes through, before the walk looks
    /// up a component in it, `.` and `..` included (kernel: `may_lookup` in
    /// `link_path_walk`). Errors: EACCES.
    pub(crate) fn may_lookup(&self, dir: &Dentry) -> SysResult<()> {
        self.permission(dir, MAY_EXEC)
    }

    /// Write and search permission on the parent of a new name (kernel: `may_create`,
    /// after `filename_create`'s EEXIST and EROFS). Errors: EACCES.
    pub(crate) fn may_create(&self, dir: &Dentry) -> SysResult<()> {
        self.permission(dir, MAY_WRITE | MAY_EXEC)
    }

    /// The permission part of removing `victim` from `dir` (unlink, rmdir, rename's source
    /// and replaced target).
    ///
    /// Kernel: `may_delete`, `check_sticky`. Errors, in precedence order: EACCES (no write
    /// and search permission on `dir`); EPERM (a sticky `dir`, and the caller owns neither
    /// `dir` nor `victim` and lacks `CAP_FOWNER`). The type checks (`EISDIR`, `ENOTDIR`)
    /// come after these, in the caller.
    pub(crate) fn may_delete(&self, dir: &Dentry, victim: &Dentry) -> SysResult<()> {
        self.permission(dir, MAY_WRITE | MAY_EXEC)?;
        let cred = &*self.caller;
        let dir_inode = self.real_inode(dir);
        if dir_inode.mode & S_ISVTX != 0 && !cred.capable() {
            let owner = self.real_inode(victim).uid;
            if cred.uid != owner && cred.uid != dir_inode.uid {
                return Err(Errno::EPERM);
            }
        }
        Ok(())
    }

    /// The permission part of `rename(2)`, made after the VFS's other checks and before the
    /// type checks of the target (kernel: `vfs_rename`).
    ///
    /// Errors, in precedence order: those of [`Overlay::may_delete`] for the source; for
    /// the target those of [`Overlay::may_delete`] when it exists, with its type checks
    /// (ENOTDIR: a directory onto a non-directory; EISDIR: the reverse), else of
    /// [`Overlay::may_create`]; then, when the parents differ, EACCES for a directory the
    /// caller may not write (its `..` changes), the source, then with `RENAME_EXCHANGE` the
    /// target.
    pub(crate) fn may_rename(
        &self,
        old_dir: &Dentry,
        old: &Dentry,
        new_dir: &Dentry,
        new: &Dentry,
        exchange: bool,
        samedir: bool,
    ) -> SysResult<()> {
        self.may_delete(old_dir, old)?;
        if new.is_positive() {
            self.may_delete(new_dir, new)?;
            // `may_delete`'s own type checks of the replaced target come before the check
            // of the moved directory below (seen on 6.18: a directory the caller may not
            // write, renamed onto a file in another parent, is ENOTDIR).
            if !exchange && old.is_dir() != new.is_dir() {
                return Err(if old.is_dir() { Errno::ENOTDIR } else { Errno::EISDIR });
            }
        } else {
            self.may_create(new_dir)?;
        }
        if !samedir {
            if old.is_dir() {
                self.permission(old, MAY_WRITE)?;
            }
            if exchange && new.is_dir() {
                self.permission(new, MAY_WRITE)?;
            }
        }
        Ok(())
    }

    /// The permission part of `open(2)` on an existing object (kernel: `may_open`, its
    /// `inode_permission(MAY_OPEN | acc_mode)` after the file type checks): read for
    /// `O_RDONLY`/`O_RDWR`, write for `O_WRONLY`/`O_RDWR` and for `O_TRUNC`. A new file made
    /// by this open is not checked (`FMODE_CREATED` clears `acc_mode`). Errors: EACCES.
    pub(crate) fn may_open(&self, d: &Dentry, flags: crate::ops::OpenFlags) -> SysResult<()> {
        let mut mask = 0;
        if !matches!(flags.access, crate::ops::Access::WriteOnly) {
            mask |= MAY_READ;
        }
        if flags.access.writes() || flags.trunc {
            mask |= MAY_WRITE;
        }
        self.permission(d, mask)
    }

    /// The checks of a change of mode, owner or times by the caller, and the mode it
    /// leaves.
    ///
    /// Kernel: `setattr_prepare` (`chown_ok`, `chgrp_ok`, `inode_owner_or_capable`,
    /// `in_group_or_capable`) and `notify_change` for `ATTR_TOUCH`. Errors, in precedence
    /// order: EPERM (chown to another user by a caller without `CAP_CHOWN`, unless the
    /// owner gives the file to itself); EPERM (chgrp by a non-owner, or to a group the
    /// caller is not in, without `CAP_CHOWN`); EPERM (chown, even to -1 and -1, of a
    /// non-directory whose set-ID bits it would clear, by a non-owner: the clearing is a
    /// mode change, `notify_change`); EPERM (chmod by a non-owner without
    /// `CAP_FOWNER`); EACCES (utimes to now by a non-owner without write permission).
    /// chmod by a caller not in the file's group (and without `CAP_FSETID`) drops
    /// set-group-ID from the new mode: the returned mode is the one to set.
    pub(crate) fn setattr_prepare(&self, d: &Dentry, attr: SetAttr) -> SysResult<Option<u32>> {
        let cred = &*self.caller;
        if cred.capable() {
            return Ok(match attr {
                SetAttr::Mode(m) => Some(m),
                _ => None,
            });
        }
        let inode = self.real_inode(d);
        match attr {
            SetAttr::Owner(uid, gid) => {
                if uid != u32::MAX && !(cred.uid == inode.uid && uid == inode.uid) {
                    return Err(Errno::EPERM);
                }
                if gid != u32::MAX && !(cred.uid == inode.uid && (gid == inode.gid || cred.in_group(gid))) {
                    return Err(Errno::EPERM);
                }
                // chown of a non-directory kills its set-ID bits (`chown_common`:
                // `ATTR_KILL_SUID`, `setattr_should_drop_sgid`), which `notify_change`
                // turns into a mode change, and only the owner may change the mode: EPERM
                // even for chown(-1, -1) (seen on 6.18).
                let sgid_killed = inode.mode & S_ISGID != 0 && (inode.mode & S_IXGRP != 0 || !cred.in_group(inode.gid));
                if !inode.is_dir() && (inode.mode & S_ISUID != 0 || sgid_killed) && !owner_or_capable(cred, inode) {
                    return Err(Errno::EPERM);
                }
                Ok(None)
            }
            SetAttr::Mode(mode) => {
                if !owner_or_capable(cred, inode) {
                    return Err(Errno::EPERM);
                }
                Ok(Some(if cred.in_group(inode.gid) { mode } else { mode & !S_ISGID }))
            }
            SetAttr::Touch => {
                if !owner_or_capable(cred, inode) {
                    self.permission(d, MAY_WRITE)?;
                }
                Ok(None)
            }
        }
    }

    /// The set-ID bits a write or truncate by the caller clears from regular file `d`:
    /// set-user-ID, and set-group-ID when group-execute is set or the caller is not in the
    /// file's group, unless the caller has `CAP_FSETID` (kernel: `file_remove_privs`,
    /// `should_remove_suid`, `setattr_should_drop_sgid`; `do_truncate`).
    pub(crate) fn privs_to_kill(&self, d: &Dentry) -> u32 {
        let inode = self.real_inode(d);
        if self.caller.capable() || !matches!(inode.kind, crate::layer::NodeKind::File(_)) {
            return 0;
        }
        let mut kill = inode.mode & S_ISUID;
        if inode.mode & S_ISGID != 0 && (inode.mode & S_IXGRP != 0 || !self.caller.in_group(inode.gid)) {
            kill |= S_ISGID;
        }
        kill
    }

    /// The VFS's permission check of an xattr call by the caller on `d` (kernel:
    /// `xattr_permission`).
    ///
    /// Errors, in precedence order: `trusted.*` without `CAP_SYS_ADMIN`: EPERM to write,
    /// ENODATA to read; `user.*` on other than a regular file or directory: EPERM to write,
    /// ENODATA to read; `user.*` written on a sticky directory by a non-owner: EPERM; then
    /// EACCES (no read or write permission on the object; `security.*` is not checked).
    pub(crate) fn xattr_access(&self, d: &Dentry, name: &str, write: bool) -> SysResult<()> {
        if self.caller.capable() || name.starts_with("security.") || name.starts_with("system.") {
            return Ok(());
        }
        let refused = if write { Errno::EPERM } else { Errno::ENODATA };
        if name.starts_with("trusted.") {
            return Err(refused);
        }
        let inode = self.real_inode(d);
        if name.starts_with("user.") {
            if !matches!(d.ftype, Some(FileType::File | FileType::Dir)) {
                return Err(refused);
            }
            if inode.is_dir() && inode.mode & S_ISVTX != 0 && write && !owner_or_capable(&self.caller, inode) {
                return Err(Errno::EPERM);
            }
        }
        self.permission(d, if write { MAY_WRITE } else { MAY_READ })
    }

    /// The protected-hardlinks check of `link(2)`'s source (kernel: `may_linkat` with
    /// `fs.protected_hardlinks` = 1, the default): a caller without `CAP_FOWNER` who does
    /// not own the source may link only a regular file that is not set-user-ID, not
    /// set-group-ID with group-execute, and that it may read and write
    /// (`safe_hardlink_source`). Errors: EPERM.
    pub(crate) fn may_linkat(&self, src: &Dentry) -> SysResult<()> {
        let inode = self.real_inode(src);
        if owner_or_capable(&self.caller, inode) {
            return Ok(());
        }
        let safe = matches!(inode.kind, crate::layer::NodeKind::File(_))
            && inode.mode & S_ISUID == 0
            && inode.mode & (S_ISGID | S_IXGRP) != S_ISGID | S_IXGRP
            && self.permission(src, MAY_READ | MAY_WRITE).is_ok();
        if safe {
            Ok(())
        } else {
            Err(Errno::EPERM)
        }
    }

    /// Whether the caller sees xattr `name` in a listing: `trusted.*` names only with
    /// `CAP_SYS_ADMIN` (kernel: `simple_xattr_list`, tmpfs).
    pub(crate) fn xattr_listed(&self, name: &str) -> bool {
        !name.starts_with("trusted.") || self.caller.capable()
    }

    /// The owner, group and mode of a new object of the caller's in `parent` (a real
    /// directory inode), from the mode the call asks for.
    ///
    /// Kernel: `vfs_prepare_mode` (`mode_strip_umask`: the umask is applied, tmpfs parents
    /// having no default ACL; `mode_strip_sgid`: a new non-directory asking for
    /// set-group-ID and group-execute in a set-group-ID directory of a group the caller is
    /// not in loses set-group-ID, without `CAP_FSETID`), then `inode_init_owner`: the
    /// caller's fsuid; the parent's group and, for a directory, its set-group-ID bit when
    /// the parent is set-group-ID; else the caller's fsgid. A symlink's mode is always
    /// 0777 (`umask` is false for it).
    pub(crate) fn new_owner(&self, parent: &Inode, mode: u32, is_dir: bool, umask: bool) -> (u32, u32, u32) {
        let cred = &*self.caller;
        let mut mode = if umask { mode & !(cred.umask & 0o777) } else { mode };
        if !is_dir
            && parent.mode & S_ISGID != 0
            && mode & (S_ISGID | S_IXGRP) == S_ISGID | S_IXGRP
            && !cred.in_group(parent.gid)
            && !cred.capable()
        {
            mode &= !S_ISGID;
        }
        if parent.mode & S_ISGID != 0 {
            let mode = if is_dir { mode | S_ISGID } else { mode };
            (mode, cred.uid, parent.gid)
        } else {
            (mode, cred.uid, cred.gid)
        }
    }
}

/// The change [`Overlay::setattr_prepare`] checks.
#[derive(Clone, Copy, Debug)]
pub(crate) enum SetAttr {
    /// chmod to this mode.
    Mode(u32),
    /// chown; `u32::MAX` leaves an id as it is.
    Owner(u32, u32),
    /// utimes to the current time.
    Touch,
}
