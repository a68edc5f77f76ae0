//! open, read, write and truncate (kernel: `fs/namei.c` `path_openat`, `do_open`,
//! `may_open`; `fs/open.c` `vfs_truncate`; `fs/overlayfs/file.c` `ovl_open`).
//!
//! The harness opens everything with `O_NONBLOCK` and mounts with `nodev`, as the kernel
//! oracle does, so that a FIFO never blocks and no device is ever opened: opening a device
//! gives EACCES, and opening a FIFO for writing with no reader gives ENXIO.

use super::{OpenFlags, Outcome, WriteAt};
use crate::errno::{Errno, SysResult};
use crate::layer::{FileData, FileType, NodeKind, READ_INLINE_MAX};
use crate::overlay::Overlay;
use crate::path::{Chain, Follow, Last, SYMLINK_COUNT_MAX};

/// The largest file size (`s_maxbytes`): `MAX_LFS_FILESIZE`, `i64::MAX`, both on the
/// overlay (`ovl_fill_super`) and on the tmpfs upper (`shmem_fill_super`). An append at it
/// is EFBIG; no `off_t` can name a larger size.
pub const FILE_SIZE_MAX: u64 = i64::MAX as u64;

/// The most one `write` call writes (`MAX_RW_COUNT`, `INT_MAX` rounded down to a page):
/// the kernel cuts a longer write short (`rw_verify_area`).
pub const WRITE_COUNT_MAX: usize = 0x7fff_f000;

impl Overlay {
    /// `open(2)` and the checks of `do_open` and `may_open`; returns the opened object.
    ///
    /// Errors, in precedence order: EINVAL (`O_CREAT|O_DIRECTORY`); the walk's errors; with
    /// `O_CREAT`: EISDIR (a trailing slash), the lookup errors, EEXIST (`O_EXCL` on a visible
    /// name), EROFS (a new name on a read-only overlay), EISDIR (a directory); then ENOTDIR
    /// (`O_DIRECTORY` on a non-directory); EROFS (`O_TRUNC` on a regular file, read-only);
    /// ELOOP (a final symlink with `O_NOFOLLOW`); EISDIR (a directory for writing or
    /// truncating); EACCES (a device, on a `nodev` mount); EROFS (a regular file for
    /// writing, read-only); ENXIO (a FIFO for write-only with no reader).
    ///
    /// overlayfs.rst, "Non-directories": opening a lower regular file for writing, or with
    /// `O_TRUNC` even read-only, copies it up (kernel: `ovl_open_need_copy_up`); FIFOs and
    /// devices are never copied up by open.
    pub(crate) fn open(&mut self, path: &str, flags: OpenFlags, mode: u32) -> SysResult<Chain> {
        if flags.creat && flags.directory {
            return Err(Errno::EINVAL);
        }
        self.open_at(path, flags, mode)
    }

    /// The walk of `open`. With `O_CREAT` the parent is walked, then the last component
    /// looked up; a symlink there (without `O_EXCL` or `O_NOFOLLOW`) is followed by walking
    /// its target from that parent, and so on, all within one count of symlinks: every link
    /// of the whole walk counts towards the 40 (kernel: `path_openat`,
    /// `open_last_lookups`, `nd->total_link_count`).
    fn open_at(&mut self, path: &str, flags: OpenFlags, mode: u32) -> SysResult<Chain> {
        let mut chain = if flags.creat {
            let mut links = 0;
            let (mut chain, mut last) = self.resolve_parent_counted(path, &mut links)?;
            loop {
                match last {
                    Last::Norm { slash: true, .. } => return Err(Errno::EISDIR),
                    Last::Norm { name, slash: false } => {
                        let d = self.lookup_child(chain.last().expect("chain"), &name)?;
                        match d.ftype {
                            Some(FileType::Symlink) if !flags.excl && !flags.nofollow => {
                                links += 1;
                                if links > SYMLINK_COUNT_MAX {
                                    return Err(Errno::ELOOP);
                                }
                                let target = self.symlink_target(&d);
                                if target.is_empty() {
                                    return Err(Errno::ENOENT);
                                }
                                last = self.walk_parent(&mut chain, &target, &mut links)?;
                                continue;
                            }
                            Some(_) => {
                                chain.push(d);
                                break chain;
                            }
                            None => {
                                if self.is_read_only() {
                                    return Err(Errno::EROFS);
                                }
                                self.may_create(chain.last().expect("chain"))?;
                                let mut new = crate::ops::namespace::NewName { chain, name, dentry: d };
                                let ino = self.create_file(&mut new, mode);
                                let mut chain = new.chain;
                                let mut dentry = new.dentry;
                                dentry.upper = Some(ino);
                                dentry.ftype = Some(FileType::File);
                                dentry.opaque = false;
                                chain.push(dentry);
                                return Ok(chain);
                            }
                        }
                    }
                    // The last component names a directory: the parent itself, its parent,
                    // or the root (kernel: `handle_dots`); `O_CREAT` on it is EISDIR below.
                    Last::Dot => break chain,
                    Last::DotDot => {
                        if chain.len() > 1 {
                            chain.pop();
                        }
                        break chain;
                    }
                    Last::Root => {
                        chain.truncate(1);
                        break chain;
                    }
                }
            }
        } else {
            let follow = if flags.nofollow { Follow::No } else { Follow::Yes };
            self.resolve(path, follow)?
        };
        let d = chain.last().expect("chain");
        let ftype = d.ftype.expect("resolved objects are positive");
        if flags.creat {
            if flags.excl {
                return Err(Errno::EEXIST);
            }
            if ftype == FileType::Dir {
                return Err(Errno::EISDIR);
            }
        }
        if flags.directory && ftype != FileType::Dir {
            return Err(Errno::ENOTDIR);
        }
        let truncate = ftype == FileType::File && flags.trunc;
        if truncate && self.is_read_only() {
            return Err(Errno::EROFS);
        }
        let writes = flags.access.writes() || flags.trunc;
        match ftype {
            FileType::Symlink => return Err(Errno::ELOOP),
            FileType::Dir if writes => return Err(Errno::EISDIR),
            FileType::Char | FileType::Block => return Err(Errno::EACCES),
            FileType::File if flags.access.writes() && self.is_read_only() => return Err(Errno::EROFS),
            _ => {}
        }
        self.may_open(d, flags)?;
        if ftype == FileType::Fifo && flags.access == super::Access::WriteOnly {
            return Err(Errno::ENXIO);
        }
        if ftype == FileType::File {
            self.verify_lower_data(d)?;
        }
        if ftype == FileType::File && writes {
            let depth = chain.len() - 1;
            self.copy_up_with_data(&mut chain, depth, flags.trunc);
        }
        if truncate {
            // `handle_truncate` clears set-ID bits as truncate(2) does (seen on 6.18).
            let kill = self.privs_to_kill(chain.last().expect("chain"));
            let ino = chain.last().expect("chain").upper.expect("copied up");
            if kill != 0 {
                self.upper_mut().update(ino, |i| i.mode &= !kill);
            }
            self.set_data(ino, FileData::new());
        }
        Ok(chain)
    }

    /// Replaces the data of upper regular file `ino`.
    fn set_data(&mut self, ino: u64, data: FileData) {
        self.upper_mut().update(ino, |i| i.kind = NodeKind::File(data));
    }

    /// The whole data of the regular file at `path` as `read` would return it, without the
    /// size cut of [`Overlay::read`] (an O(1) clone of the extents); `None` when `path`
    /// (no final symlink followed) does not resolve to a regular file. Resolves on a clone,
    /// so that asking leaves no trace (a lookup may record an origin in the upper).
    pub fn file_data(&self, path: &str) -> Option<FileData> {
        let mut ov = self.clone();
        let chain = ov.resolve(path, Follow::No).ok()?;
        let d = chain.last()?;
        (d.ftype == Some(FileType::File)).then(|| ov.data_of(d))
    }

    /// The data of a regular file dentry (an O(1) clone).
    fn data_of(&self, d: &crate::lookup::Dentry) -> FileData {
        self.read_data(d)
    }

    /// `open(O_RDONLY)`, read to the end, close. Errors: those of [`Overlay::open`], then
    /// EISDIR (a directory). A FIFO with no writer reads as empty.
    pub(crate) fn read(&mut self, path: &str) -> SysResult<Outcome> {
        let chain = self.open(path, OpenFlags::default(), 0)?;
        self.read_opened(chain.last().expect("chain"))
    }

    /// [`Overlay::read`] after the open, on the opened object `d`: the bytes
    /// ([`Outcome::Data`]), or for a regular file over [`READ_INLINE_MAX`] bytes its digest
    /// ([`Outcome::Digest`]), computed from the extents without reading the holes.
    pub(crate) fn read_opened(&self, d: &crate::lookup::Dentry) -> SysResult<Outcome> {
        match d.ftype {
            Some(FileType::Dir) => Err(Errno::EISDIR),
            Some(FileType::File) => {
                let data = self.data_of(d);
                Ok(if data.len() > READ_INLINE_MAX {
                    Outcome::Digest(data.digest())
                } else {
                    Outcome::Data(data.to_vec())
                })
            }
            _ => Ok(Outcome::Data(Vec::new())),
        }
    }

    /// `open(O_WRONLY|O_CREAT [|O_APPEND], 0644)`, one write, close.
    ///
    /// Errors, after those of [`Overlay::open`], in precedence order: EINVAL (an offset,
    /// or an offset plus the count, past `i64::MAX`: `ksys_pwrite64`, `rw_verify_area`);
    /// then an empty write succeeds with no change (`ovl_write_iter`); EFBIG (an append to
    /// a file of [`FILE_SIZE_MAX`] bytes: `generic_write_check_limits`). A write that would
    /// end past [`FILE_SIZE_MAX`] (an append) or is longer than [`WRITE_COUNT_MAX`] is cut
    /// short, as the kernel cuts it; the caller sees success either way.
    pub(crate) fn write(&mut self, path: &str, at: WriteAt, bytes: &[u8]) -> SysResult<()> {
        let flags = OpenFlags {
            access: super::Access::WriteOnly,
            creat: true,
            append: at == WriteAt::Append,
            ..OpenFlags::default()
        };
        let chain = self.open(path, flags, 0o644)?;
        let d = chain.last().expect("chain");
        if d.ftype != Some(FileType::File) {
            return Ok(());
        }
        if let WriteAt::Offset(o) = at {
            if o.checked_add(bytes.len() as u64).is_none_or(|end| end > FILE_SIZE_MAX) {
                return Err(Errno::EINVAL);
            }
        }
        let bytes = &bytes[..bytes.len().min(WRITE_COUNT_MAX)];
        if bytes.is_empty() {
            return Ok(());
        }
        let kill = self.privs_to_kill(d);
        if kill != 0 {
            let ino = d.upper.expect("opened for write, so copied up");
            self.upper_mut().update(ino, |i| i.mode &= !kill);
        }
        let mut data = self.data_of(d);
        let offset = match at {
            WriteAt::Offset(o) => o,
            WriteAt::Append => data.len(),
        };
        if offset >= FILE_SIZE_MAX {
            return Err(Errno::EFBIG);
        }
        let count = bytes.len().min((FILE_SIZE_MAX - offset).min(usize::MAX as u64) as usize);
        data.write(offset, &bytes[..count]);
        let ino = d.upper.expect("opened for write, so copied up");
        self.set_data(ino, data);
        Ok(())
    }

    /// `truncate(2)`.
    ///
    /// Kernel: `do_sys_truncate`, `vfs_truncate`, `ovl_setattr`. Errors, in precedence
    /// order: EINVAL (a negative length); the walk's errors; EISDIR; EINVAL (not a regular
    /// file); EROFS. A lower file is copied up with its data, then truncated. Any length
    /// an `off_t` holds is within [`FILE_SIZE_MAX`], so `inode_newsize_ok`'s EFBIG cannot
    /// happen on a tmpfs upper; growing leaves a hole.
    pub(crate) fn truncate(&mut self, path: &str, len: u64) -> SysResult<()> {
        if len > FILE_SIZE_MAX {
            return Err(Errno::EINVAL);
        }
        let mut chain = self.resolve(path, Follow::Yes)?;
        match chain.last().expect("chain").ftype {
            Some(FileType::Dir) => return Err(Errno::EISDIR),
            Some(FileType::File) => {}
            _ => return Err(Errno::EINVAL),
        }
        if self.is_read_only() {
            return Err(Errno::EROFS);
        }
        self.permission(chain.last().expect("chain"), super::perm::MAY_WRITE)?;
        let kill = self.privs_to_kill(chain.last().expect("chain"));
        self.verify_lower_data(chain.last().expect("chain"))?;
        let depth = chain.len() - 1;
        self.copy_up_with_data(&mut chain, depth, false);
        let d = chain.last().expect("chain");
        if kill != 0 {
            let ino = d.upper.expect("copied up");
            self.upper_mut().update(ino, |i| i.mode &= !kill);
        }
        let d = chain.last().expect("chain");
        let mut data = self.data_of(d);
        data.truncate(len);
        self.set_data(d.upper.expect("copied up"), data);
        Ok(())
    }
}
