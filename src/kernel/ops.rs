//! Operations on the merged view, as plain syscalls on the paths as given. The worker's
//! root is the merged root while these run, so the kernel resolves every path itself.

use super::layers::{mode_of, XATTR_MAX};
use crate::backend::BackendError;
use crate::errno::Errno;
use crate::layer::{Digester, FileType, READ_INLINE_MAX};
use crate::ops::{Access, MknodKind, Op, OpenFlags, Outcome, Stat, WriteAt};
use rustix::fd::OwnedFd;
use rustix::fs::{AtFlags, Mode, OFlags, RenameFlags, XattrFlags, CWD};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::mem::MaybeUninit;

/// The most a `Read` of something other than a large regular file returns before the
/// command fails (a device such as `/dev/zero` would never reach end of file; nodev stops
/// that, this is the second line). A regular file over [`READ_INLINE_MAX`] is digested in
/// pieces instead, whatever its size.
const READ_MAX: usize = 64 << 20;

/// Why an operation did not produce an outcome.
pub(super) enum Fail {
    /// The syscall failed: an observation.
    Sys(rustix::io::Errno),
    /// The harness failed.
    Harness(BackendError),
}

impl From<rustix::io::Errno> for Fail {
    fn from(e: rustix::io::Errno) -> Fail {
        Fail::Sys(e)
    }
}

fn harness(msg: String) -> Fail {
    Fail::Harness(BackendError::Failed(msg))
}

/// Carries out `op` and reports what the caller saw.
pub(super) fn run(op: &Op) -> Result<Outcome, BackendError> {
    check_nul(op)?;
    match exec(op) {
        Ok(o) => Ok(o),
        Err(Fail::Sys(e)) => match Errno::from_code(e.raw_os_error()) {
            Some(errno) => Ok(Outcome::Err(errno)),
            None => Err(BackendError::Failed(format!(
                "{op:?}: the kernel returned {e} (errno {}), which the model does not know",
                e.raw_os_error()
            ))),
        },
        Err(Fail::Harness(e)) => Err(e),
    }
}

/// A NUL byte cannot reach the kernel; refuse it rather than report rustix's EINVAL as
/// an observation.
fn check_nul(op: &Op) -> Result<(), BackendError> {
    let mut strings: Vec<&str> = op.paths();
    match op {
        Op::Symlink { target, .. } => strings.push(target),
        Op::Setxattr { name, .. } | Op::Getxattr { name, .. } | Op::Removexattr { name, .. } => strings.push(name),
        _ => {}
    }
    match strings.iter().find(|s| s.contains('\0')) {
        Some(s) => Err(BackendError::Usage(format!("{:?} contains a NUL byte, which no syscall can take", s))),
        None => Ok(()),
    }
}

pub(super) fn open_flags(f: &OpenFlags) -> OFlags {
    let mut o = match f.access {
        Access::ReadOnly => OFlags::RDONLY,
        Access::WriteOnly => OFlags::WRONLY,
        Access::ReadWrite => OFlags::RDWR,
    };
    for (set, flag) in [
        (f.creat, OFlags::CREATE),
        (f.excl, OFlags::EXCL),
        (f.trunc, OFlags::TRUNC),
        (f.append, OFlags::APPEND),
        (f.directory, OFlags::DIRECTORY),
        (f.nofollow, OFlags::NOFOLLOW),
    ] {
        if set {
            o |= flag;
        }
    }
    o
}

/// `open(2)` as the worker does it: with `O_NONBLOCK` (a FIFO must not block the worker)
/// and `O_CLOEXEC`.
fn open(path: &str, flags: OFlags, mode: u32) -> Result<OwnedFd, Fail> {
    Ok(rustix::fs::open(path, flags | OFlags::NONBLOCK | OFlags::CLOEXEC, Mode::from_bits_retain(mode))?)
}

pub(super) fn stat_of(st: &rustix::fs::Stat) -> Result<Stat, Fail> {
    let mode = mode_of(st);
    let kind = FileType::from_ifmt(mode)
        .ok_or_else(|| harness(format!("file type {:o} has no name in the model", mode & 0o170000)))?;
    Ok(Stat {
        kind,
        mode: mode & 0o7777,
        size: st.st_size as u64,
        nlink: st.st_nlink as u32,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: (rustix::fs::major(st.st_rdev), rustix::fs::minor(st.st_rdev)),
        ino: st.st_ino,
    })
}

fn file_type(t: rustix::fs::FileType) -> Result<FileType, Fail> {
    use rustix::fs::FileType as T;
    Ok(match t {
        T::Directory => FileType::Dir,
        T::RegularFile => FileType::File,
        T::Symlink => FileType::Symlink,
        T::CharacterDevice => FileType::Char,
        T::BlockDevice => FileType::Block,
        T::Fifo => FileType::Fifo,
        other => return Err(harness(format!("d_type {other:?} has no name in the model"))),
    })
}

fn c_path(path: &str) -> Result<CString, Fail> {
    CString::new(path).map_err(|_| harness(format!("{path:?} contains a NUL byte")))
}

/// The errno of the last libc call.
fn last_errno() -> Fail {
    let code = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    Fail::Sys(rustix::io::Errno::from_raw_os_error(code))
}

/// `truncate(2)` (rustix has only `ftruncate`).
fn truncate(path: &str, len: u64) -> Result<(), Fail> {
    let c = c_path(path)?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call. A length past
    // i64::MAX wraps to a negative one, which the kernel refuses with EINVAL, as it would
    // the caller's.
    let r = unsafe { libc::truncate(c.as_ptr(), len as libc::off_t) };
    if r == 0 {
        Ok(())
    } else {
        Err(last_errno())
    }
}

/// `utimensat(AT_FDCWD, path, NULL, 0)`: both times to now, following a final symlink.
fn utimes_now(path: &str) -> Result<(), Fail> {
    let c = c_path(path)?;
    // SAFETY: `c` is a valid NUL-terminated string that outlives the call; NULL times is
    // allowed and means "now".
    let r = unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), std::ptr::null(), 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(last_errno())
    }
}

fn read_to_end(fd: &OwnedFd, path: &str) -> Result<Vec<u8>, Fail> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = rustix::io::read(fd, &mut buf)?;
        if n == 0 {
            return Ok(out);
        }
        out.extend_from_slice(&buf[..n]);
        if out.len() > READ_MAX {
            return Err(harness(format!("read of {path:?} went past {} MiB without reaching the end", READ_MAX >> 20)));
        }
    }
}

fn exec(op: &Op) -> Result<Outcome, Fail> {
    Ok(match op {
        Op::Stat { path } => Outcome::Stat(stat_of(&rustix::fs::statat(CWD, path.as_str(), AtFlags::empty())?)?),
        Op::Lstat { path } => {
            Outcome::Stat(stat_of(&rustix::fs::statat(CWD, path.as_str(), AtFlags::SYMLINK_NOFOLLOW)?)?)
        }
        Op::Open { path, flags, mode } => {
            drop(open(path, open_flags(flags), *mode)?);
            Outcome::Ok
        }
        Op::Read { path } => {
            let fd = open(path, OFlags::RDONLY, 0)?;
            let st = rustix::fs::fstat(&fd)?;
            let size = st.st_size as u64;
            if FileType::from_ifmt(mode_of(&st)) == Some(FileType::File) && size > READ_INLINE_MAX {
                // Read as the model digests it: the data regions only, never the holes.
                let mut d = Digester::new();
                super::layers::for_each_data(&fd, size, |at, bytes| d.feed(at, bytes))?;
                Outcome::Digest(d.finish(size))
            } else {
                Outcome::Data(read_to_end(&fd, path)?)
            }
        }
        Op::Write { path, at, data } => {
            let mut flags = OFlags::WRONLY | OFlags::CREATE;
            if *at == WriteAt::Append {
                flags |= OFlags::APPEND;
            }
            let fd = open(path, flags, 0o644)?;
            match at {
                WriteAt::Offset(off) => rustix::io::pwrite(&fd, data, *off)?,
                WriteAt::Append => rustix::io::write(&fd, data)?,
            };
            Outcome::Ok
        }
        Op::Truncate { path, len } => {
            truncate(path, *len)?;
            Outcome::Ok
        }
        Op::Mkdir { path, mode } => {
            rustix::fs::mkdirat(CWD, path.as_str(), Mode::from_bits_retain(*mode))?;
            Outcome::Ok
        }
        Op::Rmdir { path } => {
            rustix::fs::unlinkat(CWD, path.as_str(), AtFlags::REMOVEDIR)?;
            Outcome::Ok
        }
        Op::Unlink { path } => {
            rustix::fs::unlinkat(CWD, path.as_str(), AtFlags::empty())?;
            Outcome::Ok
        }
        Op::Rename { from, to, flags } => {
            let mut f = RenameFlags::empty();
            for (set, flag) in [
                (flags.noreplace, RenameFlags::NOREPLACE),
                (flags.exchange, RenameFlags::EXCHANGE),
                (flags.whiteout, RenameFlags::WHITEOUT),
            ] {
                if set {
                    f |= flag;
                }
            }
            rustix::fs::renameat_with(CWD, from.as_str(), CWD, to.as_str(), f)?;
            Outcome::Ok
        }
        Op::Link { from, to } => {
            rustix::fs::linkat(CWD, from.as_str(), CWD, to.as_str(), AtFlags::empty())?;
            Outcome::Ok
        }
        Op::Symlink { target, path } => {
            rustix::fs::symlinkat(target.as_str(), CWD, path.as_str())?;
            Outcome::Ok
        }
        Op::Readlink { path } => {
            let t = rustix::fs::readlinkat(CWD, path.as_str(), Vec::new())?;
            Outcome::Target(
                t.into_string()
                    .map_err(|e| harness(format!("the target of {path:?} is not UTF-8: {:?}", e.into_cstring())))?,
            )
        }
        Op::Readdir { path } => {
            let fd = open(path, OFlags::RDONLY | OFlags::DIRECTORY, 0)?;
            let mut buf = vec![MaybeUninit::<u8>::uninit(); 1 << 16];
            let mut dir = rustix::fs::RawDir::new(&fd, &mut buf);
            let mut entries = BTreeMap::new();
            while let Some(entry) = dir.next() {
                let entry = entry?;
                let name = entry.file_name().to_bytes();
                if name == b"." || name == b".." {
                    continue;
                }
                let name = String::from_utf8(name.to_vec())
                    .map_err(|e| harness(format!("a name in {path:?} is not UTF-8: {:?}", e.as_bytes())))?;
                entries.insert(name, file_type(entry.file_type())?);
            }
            Outcome::Entries(entries)
        }
        Op::Chmod { path, mode } => {
            rustix::fs::chmodat(CWD, path.as_str(), Mode::from_bits_retain(*mode), AtFlags::empty())?;
            Outcome::Ok
        }
        Op::Chown { path, uid, gid } => {
            // u32::MAX is -1, "leave unchanged"; rustix spells it None.
            let uid = (*uid != u32::MAX).then(|| rustix::fs::Uid::from_raw_unchecked(*uid));
            let gid = (*gid != u32::MAX).then(|| rustix::fs::Gid::from_raw_unchecked(*gid));
            rustix::fs::chownat(CWD, path.as_str(), uid, gid, AtFlags::empty())?;
            Outcome::Ok
        }
        Op::Utimes { path } => {
            utimes_now(path)?;
            Outcome::Ok
        }
        Op::Setxattr { path, name, value } => {
            rustix::fs::setxattr(path.as_str(), name.as_str(), value, XattrFlags::empty())?;
            Outcome::Ok
        }
        Op::Getxattr { path, name } => {
            let mut buf = vec![0u8; XATTR_MAX];
            let n = rustix::fs::getxattr(path.as_str(), name.as_str(), &mut buf[..])?;
            buf.truncate(n);
            Outcome::Xattr(buf)
        }
        Op::Listxattr { path } => {
            let mut buf = vec![0u8; XATTR_MAX];
            let n = rustix::fs::listxattr(path.as_str(), &mut buf[..])?;
            Outcome::XattrNames(xattr_names(&buf[..n], path)?)
        }
        Op::Removexattr { path, name } => {
            rustix::fs::removexattr(path.as_str(), name.as_str())?;
            Outcome::Ok
        }
        Op::Mknod { path, kind, mode } => {
            use rustix::fs::FileType as T;
            let (ft, dev) = match *kind {
                MknodKind::File => (T::RegularFile, 0),
                MknodKind::Char(a, b) => (T::CharacterDevice, rustix::fs::makedev(a, b)),
                MknodKind::Block(a, b) => (T::BlockDevice, rustix::fs::makedev(a, b)),
                MknodKind::Fifo => (T::Fifo, 0),
            };
            rustix::fs::mknodat(CWD, path.as_str(), ft, Mode::from_bits_retain(*mode), dev)?;
            Outcome::Ok
        }
        Op::Fd(_) => return Err(harness("an operation through a handle is the worker's (kernel::fd)".into())),
    })
}

/// The names of a `listxattr` answer, without the kernel's bookkeeping xattrs: they show
/// through a later mount whose private prefix differs (an upper written under `userxattr`,
/// say), and are normalised away, as in layer dumps. `of` names the object in errors.
pub(super) fn xattr_names(list: &[u8], of: &str) -> Result<BTreeSet<String>, Fail> {
    let names = list
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| {
            String::from_utf8(s.to_vec()).map_err(|_| harness(format!("an xattr name of {of:?} is not UTF-8: {s:?}")))
        })
        .collect::<Result<BTreeSet<_>, _>>()?;
    Ok(names.into_iter().filter(|n| !super::layers::is_bookkeeping(n)).collect())
}
