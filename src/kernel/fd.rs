//! Operations through named handles ([`FdOp`]) in the worker: the real fds, by handle name,
//! kept between commands and closed at every unmount and mount, and when layers are made
//! (a new case); kept open by `TryUnmount` (a scenario's `unmount` step), which they make
//! busy.

use super::ops::{open_flags, stat_of};
use crate::backend::BackendError;
use crate::errno::Errno;
use crate::layer::FileType;
use crate::ops::fd::{FdOp, Whence, FD_READ_MAX};
use crate::ops::Outcome;
use rustix::fd::{AsRawFd, OwnedFd};
use rustix::fs::{Mode, OFlags};
use std::collections::BTreeMap;

/// The worker's open handles, and the file handles `name_to_handle` kept.
#[derive(Default)]
pub(super) struct Handles {
    fds: BTreeMap<String, OwnedFd>,
    /// The file handles, by name: they outlive unmounts and mounts (an NFS client's handle
    /// outlives a server restart) and go with the layers ([`Handles::forget_file_handles`]).
    file_handles: BTreeMap<String, FileHandle>,
}

/// A file handle as `name_to_handle_at(2)` gave it: its type and bytes. A failed call
/// leaves the empty handle (0 bytes), which `open_by_handle_at(2)` refuses (EINVAL).
#[derive(Clone, Default)]
struct FileHandle {
    handle_type: i32,
    bytes: Vec<u8>,
}

/// `MAX_HANDLE_SZ` (include/linux/exportfs.h).
const MAX_HANDLE_SZ: usize = 128;

/// `struct file_handle` with room for the largest handle.
#[repr(C)]
struct RawFileHandle {
    handle_bytes: u32,
    handle_type: i32,
    f_handle: [u8; MAX_HANDLE_SZ],
}

impl Handles {
    /// Closes every handle (the file handles are kept: they are not open files).
    pub(super) fn close_all(&mut self) {
        self.fds.clear();
    }

    /// Forgets the file handles kept (new layers: a new case).
    pub(super) fn forget_file_handles(&mut self) {
        self.file_handles.clear();
    }

    /// Whether no handle is open.
    pub(super) fn is_empty(&self) -> bool {
        self.fds.is_empty()
    }

    /// Carries out `op` and reports what the caller saw: a syscall's errno is an outcome; a
    /// handle that is not open is EBADF, as a closed fd number would be.
    pub(super) fn run(&mut self, op: &FdOp) -> Result<Outcome, BackendError> {
        let name = match op {
            FdOp::Fsetxattr { name, .. } | FdOp::Fgetxattr { name, .. } | FdOp::Fremovexattr { name, .. } => Some(name),
            _ => None,
        };
        if let Some(p) = op.path().or(name.map(String::as_str)).filter(|p| p.contains('\0')) {
            return Err(BackendError::Usage(format!("{p:?} contains a NUL byte, which no syscall can take")));
        }
        match self.exec(op) {
            Ok(o) => Ok(o),
            Err(Fail::Sys(code)) => match Errno::from_code(code) {
                Some(errno) => Ok(Outcome::Err(errno)),
                None => Err(BackendError::Failed(format!(
                    "{op:?}: the kernel returned errno {code}, which the model does not know"
                ))),
            },
            Err(Fail::Harness(msg)) => Err(BackendError::Failed(msg)),
        }
    }

    /// Carries out `op` as the caller `cred` ([`super::caller::run_as_with`]): in a child
    /// switched to it, on the fd the child inherited; an `open` hands its new fd back, and
    /// it becomes the handle (the one of the same name closed first, as [`Handles::run`]
    /// does). `close` takes no credentials: the worker closes.
    pub(super) fn run_as(&mut self, cred: &crate::cred::Cred, op: &FdOp) -> Result<Outcome, BackendError> {
        match op {
            FdOp::Close { .. } => self.run(op),
            FdOp::Open { fd, .. } => {
                self.fds.remove(fd);
                let (outcome, got) = super::caller::run_as_with(cred, &format!("{op:?}"), || {
                    let r = self.run(op);
                    let raw = self.fds.get(fd).map(AsRawFd::as_raw_fd);
                    (r, raw)
                })?;
                match (&outcome, got) {
                    (Outcome::Ok, Some(file)) => {
                        self.fds.insert(fd.clone(), file);
                    }
                    (Outcome::Ok, None) => {
                        return Err(BackendError::Failed(format!("{op:?} as {cred:?}: the child sent no fd back")))
                    }
                    _ => {}
                }
                Ok(outcome)
            }
            _ => super::caller::run_as_with(cred, &format!("{op:?}"), || (self.run(op), None)).map(|(o, _)| o),
        }
    }

    fn get(&self, fd: &str) -> Result<&OwnedFd, Fail> {
        self.fds.get(fd).ok_or(Fail::Sys(libc::EBADF))
    }

    fn exec(&mut self, op: &FdOp) -> Result<Outcome, Fail> {
        Ok(match op {
            FdOp::NameToHandle { handle, path, fid, follow } => {
                self.file_handles.insert(handle.clone(), FileHandle::default());
                let fh = name_to_handle(path, *fid, *follow)?;
                self.file_handles.insert(handle.clone(), fh);
                Outcome::Ok
            }
            FdOp::OpenByHandle { fd, handle, flags } => {
                self.fds.remove(fd);
                let fh = self.file_handles.get(handle).cloned().unwrap_or_default();
                // The worker runs chrooted in the merged directory: `/` is the overlay's
                // root, a mount fd of the overlay mounted now.
                let mount = rustix::fs::open("/", OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
                    .map_err(|e| Fail::Harness(format!("opening the overlay root as a mount fd: {e}")))?;
                let file = open_by_handle(&mount, &fh, open_flags(flags) | OFlags::NONBLOCK | OFlags::CLOEXEC)?;
                self.fds.insert(fd.clone(), file);
                Outcome::Ok
            }
            FdOp::Open { fd, path, flags, mode } => {
                self.fds.remove(fd);
                let flags = open_flags(flags) | OFlags::NONBLOCK | OFlags::CLOEXEC;
                let file = rustix::fs::open(path.as_str(), flags, Mode::from_bits_retain(*mode))?;
                self.fds.insert(fd.clone(), file);
                Outcome::Ok
            }
            FdOp::Close { fd } => {
                let file = self.fds.remove(fd).ok_or(Fail::Sys(libc::EBADF))?;
                // SAFETY: the fd is owned here and closed once; `into_raw_fd` gives up the
                // ownership so that the close error is seen.
                let r = unsafe { libc::close(rustix::fd::IntoRawFd::into_raw_fd(file)) };
                sys(r as i64)?;
                Outcome::Ok
            }
            FdOp::Read { fd, len } => {
                let mut buf = vec![0u8; (*len).min(FD_READ_MAX) as usize];
                let n = rustix::io::read(self.get(fd)?, &mut buf)?;
                buf.truncate(n);
                Outcome::Data(buf)
            }
            FdOp::Pread { fd, offset, len } => {
                let mut buf = vec![0u8; (*len).min(FD_READ_MAX) as usize];
                let raw = self.get(fd)?.as_raw_fd();
                // SAFETY: `buf` is valid for `buf.len()` bytes. An offset past i64::MAX
                // wraps to a negative one, which the kernel refuses with EINVAL.
                let n = sys(
                    unsafe { libc::pread(raw, buf.as_mut_ptr().cast(), buf.len(), *offset as libc::off_t) } as i64
                )?;
                buf.truncate(n as usize);
                Outcome::Data(buf)
            }
            FdOp::Write { fd, data } => {
                write_all(self.get(fd)?, data, None)?;
                Outcome::Ok
            }
            FdOp::Pwrite { fd, offset, data } => {
                write_all(self.get(fd)?, data, Some(*offset))?;
                Outcome::Ok
            }
            FdOp::Lseek { fd, offset, whence } => {
                let w = match whence {
                    Whence::Set => libc::SEEK_SET,
                    Whence::Cur => libc::SEEK_CUR,
                    Whence::End => libc::SEEK_END,
                };
                // SAFETY: plain syscall on an fd this table owns.
                sys(unsafe { libc::lseek(self.get(fd)?.as_raw_fd(), *offset, w) })?;
                Outcome::Ok
            }
            FdOp::Fstat { fd } => Outcome::Stat(stat_of(&rustix::fs::fstat(self.get(fd)?)?)?),
            FdOp::Ftruncate { fd, len } => {
                // SAFETY: plain syscall; a length past i64::MAX wraps to a negative one,
                // which the kernel refuses with EINVAL.
                sys(unsafe { libc::ftruncate(self.get(fd)?.as_raw_fd(), *len as libc::off_t) } as i64)?;
                Outcome::Ok
            }
            FdOp::Fchmod { fd, mode } => {
                rustix::fs::fchmod(self.get(fd)?, Mode::from_bits_retain(*mode))?;
                Outcome::Ok
            }
            FdOp::Getdents { fd, count } => Outcome::Entries(getdents(self.get(fd)?, *count)?),
            FdOp::Fchown { fd, uid, gid } => {
                // u32::MAX is -1, "leave unchanged"; rustix spells it None.
                let uid = (*uid != u32::MAX).then(|| rustix::fs::Uid::from_raw_unchecked(*uid));
                let gid = (*gid != u32::MAX).then(|| rustix::fs::Gid::from_raw_unchecked(*gid));
                rustix::fs::fchown(self.get(fd)?, uid, gid)?;
                Outcome::Ok
            }
            FdOp::Fsync { fd } => {
                rustix::fs::fsync(self.get(fd)?)?;
                Outcome::Ok
            }
            FdOp::Fsetxattr { fd, name, value } => {
                rustix::fs::fsetxattr(self.get(fd)?, name.as_str(), value, rustix::fs::XattrFlags::empty())?;
                Outcome::Ok
            }
            FdOp::Fgetxattr { fd, name } => {
                let mut buf = vec![0u8; super::layers::XATTR_MAX];
                let n = rustix::fs::fgetxattr(self.get(fd)?, name.as_str(), &mut buf[..])?;
                buf.truncate(n);
                Outcome::Xattr(buf)
            }
            FdOp::Flistxattr { fd } => {
                let mut buf = vec![0u8; super::layers::XATTR_MAX];
                let n = rustix::fs::flistxattr(self.get(fd)?, &mut buf[..])?;
                Outcome::XattrNames(super::ops::xattr_names(&buf[..n], fd)?)
            }
            FdOp::Fremovexattr { fd, name } => {
                rustix::fs::fremovexattr(self.get(fd)?, name.as_str())?;
                Outcome::Ok
            }
        })
    }
}

/// `name_to_handle_at(2)` of `path` from the current root (`AT_HANDLE_FID` with `fid`,
/// `AT_SYMLINK_FOLLOW` with `follow`).
fn name_to_handle(path: &str, fid: bool, follow: bool) -> Result<FileHandle, Fail> {
    let c = std::ffi::CString::new(path).map_err(|_| Fail::Harness(format!("{path:?} contains a NUL byte")))?;
    let mut raw = RawFileHandle { handle_bytes: MAX_HANDLE_SZ as u32, handle_type: 0, f_handle: [0; MAX_HANDLE_SZ] };
    let mut mount_id: libc::c_int = 0;
    let mut flags = 0;
    if fid {
        flags |= libc::AT_HANDLE_FID;
    }
    if follow {
        flags |= libc::AT_SYMLINK_FOLLOW;
    }
    // SAFETY: `raw` is a `struct file_handle` with room for `handle_bytes` bytes, `c` a
    // NUL-terminated path, `mount_id` an int.
    let r = unsafe {
        libc::name_to_handle_at(
            libc::AT_FDCWD,
            c.as_ptr(),
            (&mut raw as *mut RawFileHandle).cast::<libc::file_handle>(),
            &mut mount_id,
            flags,
        )
    };
    sys(r as i64)?;
    let n = (raw.handle_bytes as usize).min(MAX_HANDLE_SZ);
    Ok(FileHandle { handle_type: raw.handle_type, bytes: raw.f_handle[..n].to_vec() })
}

/// `open_by_handle_at(2)` of `fh` through the mount fd `mount`.
fn open_by_handle(mount: &OwnedFd, fh: &FileHandle, flags: OFlags) -> Result<OwnedFd, Fail> {
    let mut raw = RawFileHandle {
        handle_bytes: fh.bytes.len() as u32,
        handle_type: fh.handle_type,
        f_handle: [0; MAX_HANDLE_SZ],
    };
    raw.f_handle[..fh.bytes.len()].copy_from_slice(&fh.bytes);
    // SAFETY: `raw` is a `struct file_handle` of `handle_bytes` bytes; the fd returned is
    // new and owned here.
    let r = unsafe {
        libc::open_by_handle_at(
            mount.as_raw_fd(),
            (&mut raw as *mut RawFileHandle).cast::<libc::file_handle>(),
            flags.bits() as libc::c_int,
        )
    };
    let fd = sys(r as i64)?;
    // SAFETY: `fd` is a new fd that nothing else owns.
    Ok(unsafe { <OwnedFd as rustix::fd::FromRawFd>::from_raw_fd(fd as i32) })
}

/// Why a call did not produce an outcome.
pub(super) enum Fail {
    /// The syscall failed with this errno: an observation.
    Sys(i32),
    /// The harness failed.
    Harness(String),
}

impl From<rustix::io::Errno> for Fail {
    fn from(e: rustix::io::Errno) -> Fail {
        Fail::Sys(e.raw_os_error())
    }
}

impl From<super::ops::Fail> for Fail {
    fn from(e: super::ops::Fail) -> Fail {
        match e {
            super::ops::Fail::Sys(e) => Fail::Sys(e.raw_os_error()),
            super::ops::Fail::Harness(b) => Fail::Harness(b.to_string()),
        }
    }
}

/// A libc return value: the errno when it is negative.
fn sys(r: i64) -> Result<i64, Fail> {
    if r < 0 {
        Err(Fail::Sys(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO)))
    } else {
        Ok(r)
    }
}

/// One `write` (or `pwrite` at `offset`), which must write everything: a short write is a
/// harness failure, not an observation the model makes.
fn write_all(fd: &OwnedFd, data: &[u8], offset: Option<u64>) -> Result<(), Fail> {
    let raw = fd.as_raw_fd();
    // SAFETY: `data` is valid for `data.len()` bytes. An offset past i64::MAX wraps to a
    // negative one, which the kernel refuses with EINVAL.
    let n = sys(match offset {
        None => unsafe { libc::write(raw, data.as_ptr().cast(), data.len()) },
        Some(o) => unsafe { libc::pwrite(raw, data.as_ptr().cast(), data.len(), o as libc::off_t) },
    } as i64)?;
    if n as usize != data.len() {
        return Err(Fail::Harness(format!("a write of {} bytes wrote {n}", data.len())));
    }
    Ok(())
}

/// `getdents64` until `count` entries other than "." and ".." are taken; when the kernel
/// returned more, the stream is put back with `lseek` to the `d_off` of the last one taken,
/// so that the next batch starts right after it (as `seekdir(3)` does).
fn getdents(fd: &OwnedFd, count: u64) -> Result<BTreeMap<String, FileType>, Fail> {
    let mut out = BTreeMap::new();
    let mut buf = vec![0u8; 1 << 15];
    let raw = fd.as_raw_fd();
    let mut last_off: Option<i64> = None;
    loop {
        // SAFETY: `buf` is valid for `buf.len()` bytes; getdents64 writes whole records.
        let n = sys(unsafe { libc::syscall(libc::SYS_getdents64, raw, buf.as_mut_ptr(), buf.len()) })? as usize;
        if n == 0 {
            return Ok(out);
        }
        let mut at = 0;
        while at < n {
            let off = i64::from_ne_bytes(buf[at + 8..at + 16].try_into().expect("8 bytes"));
            let reclen = u16::from_ne_bytes(buf[at + 16..at + 18].try_into().expect("2 bytes")) as usize;
            let d_type = buf[at + 18];
            let name_bytes = &buf[at + 19..at + reclen];
            let name_bytes = &name_bytes[..name_bytes.iter().position(|b| *b == 0).unwrap_or(name_bytes.len())];
            if out.len() as u64 >= count {
                // More than asked for: put the stream back after the last entry taken.
                if let Some(off) = last_off {
                    // SAFETY: plain syscall on an fd the caller owns.
                    sys(unsafe { libc::lseek(raw, off, libc::SEEK_SET) })?;
                }
                return Ok(out);
            }
            at += reclen;
            last_off = Some(off);
            if name_bytes == b"." || name_bytes == b".." {
                continue;
            }
            let name = String::from_utf8(name_bytes.to_vec())
                .map_err(|_| Fail::Harness(format!("a directory entry is not UTF-8: {name_bytes:?}")))?;
            let t = match d_type {
                libc::DT_DIR => FileType::Dir,
                libc::DT_REG => FileType::File,
                libc::DT_LNK => FileType::Symlink,
                libc::DT_CHR => FileType::Char,
                libc::DT_BLK => FileType::Block,
                libc::DT_FIFO => FileType::Fifo,
                other => return Err(Fail::Harness(format!("d_type {other} has no name in the model"))),
            };
            out.insert(name, t);
        }
        if out.len() as u64 >= count {
            return Ok(out);
        }
    }
}
