//! `ovlsim mount`: the model served as a real filesystem through FUSE (the `fuser` crate,
//! mounting through `fusermount3`), so that any program can run on it.
//!
//! Each FUSE request becomes the model's operation on a path ([`Op`], or the same rule
//! with a final symlink not followed where the request names a symlink itself: `lchown`,
//! `l*xattr`, `utimensat(AT_SYMLINK_NOFOLLOW)`); files and directories are opened as the
//! model's named handles ([`crate::ops::FdOp`]), so reads, writes and directory listings
//! go through the model's open-file rules. The errno the model answers is the FUSE error.
//!
//! - Node ids are the model's `st_ino` (the root is FUSE's 1), so `st_ino` is the model's
//!   and stays what the model says across a copy-up; each node id keeps the paths it was
//!   looked up by, renames move them and unlinks drop them.
//! - Every attribute and entry is given with a time-to-live of 0 and every file is opened
//!   `FOPEN_DIRECT_IO`: the kernel asks the model each time and keeps no page cache, so
//!   what a program sees is the model's answer, never a cached one.
//! - `default_permissions`: the kernel checks permissions against the model's modes and
//!   owners as the VFS does on the kernel overlay (root passes them by its capabilities,
//!   but not an exec of a file without any x bit). No `allow_other`: the model runs every
//!   call as root (its callers are not modelled), so only the mounting user may use it.
//! - Timestamps are not modelled: every time is the mount's start. `touch` and other
//!   `utimensat` calls are still the model's `utimes` (they copy up).
//! - `statfs` answers fixed numbers (the model has no blocks).
//! - With a real upper directory (`-o upperdir=`), every change is written through
//!   ([`upper`]).

pub mod setup;
mod upper;

use crate::errno::Errno as ModelErrno;
use crate::layer::FileType as ModelType;
use crate::ops::fd::{FdOp, Whence, FD_READ_MAX};
use crate::ops::{Access, MknodKind, Op, OpenFlags, Outcome, RenameFlags, Stat};
use crate::overlay::Overlay;
use crate::path::Follow;
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, KernelConfig, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr,
    Request, TimeOrNow,
};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::ffi::OsStr;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

pub use setup::{Served, SetupError};

/// Nothing is cached by the kernel (see the module docs).
const TTL: Duration = Duration::ZERO;

/// How many entries one `getdents` through a model handle asks for.
const GETDENTS_BATCH: u64 = 64;

/// One node id: the paths it was reached by, and the kernel's lookup count.
#[derive(Default)]
struct Node {
    paths: BTreeSet<String>,
    lookups: u64,
}

/// One open file or directory: the model's handle name and, for a directory, the entries
/// read from the model and not yet given to the kernel.
struct Handle {
    name: String,
    append: bool,
    dir: Option<DirState>,
}

#[derive(Default)]
struct DirState {
    /// Entries given to the kernel since the stream was at position 0 (`.` and `..` count).
    given: u64,
    pending: VecDeque<(String, ModelType)>,
    end: bool,
}

/// The served state.
struct State {
    ov: Overlay,
    nodes: HashMap<u64, Node>,
    handles: HashMap<u64, Handle>,
    next_fh: u64,
    through: Option<upper::WriteThrough>,
    epoch: SystemTime,
}

/// The model as a FUSE filesystem.
pub struct ModelFs {
    state: Mutex<State>,
}

fn errno(e: ModelErrno) -> Errno {
    Errno::from_i32(e.code())
}

fn kind(t: ModelType) -> FileType {
    match t {
        ModelType::Dir => FileType::Directory,
        ModelType::File => FileType::RegularFile,
        ModelType::Symlink => FileType::Symlink,
        ModelType::Char => FileType::CharDevice,
        ModelType::Block => FileType::BlockDevice,
        ModelType::Fifo => FileType::NamedPipe,
    }
}

fn join(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

/// Whether `path` is `prefix` or below it.
fn under(path: &str, prefix: &str) -> bool {
    path == prefix || (path.starts_with(prefix) && path.as_bytes().get(prefix.len()) == Some(&b'/'))
}

/// A name from the kernel; the model's paths are UTF-8, so another name does not exist.
fn name_of(name: &OsStr) -> Result<&str, Errno> {
    let n = name.to_str().ok_or(Errno::ENOENT)?;
    if n.contains('/') {
        return Err(Errno::EINVAL);
    }
    Ok(n)
}

impl State {
    /// Runs one of the model's operations, then writes the upper through.
    fn apply(&mut self, op: &Op) -> Outcome {
        let out = self.ov.apply(op);
        self.write_through();
        out
    }

    /// Runs a rule outside [`Overlay::apply`] (a final symlink not followed) with the same
    /// bookkeeping, then writes the upper through.
    fn call<T>(&mut self, f: impl FnOnce(&mut Overlay) -> T) -> T {
        self.ov.events.clear();
        self.ov.unspecified = None;
        let r = f(&mut self.ov);
        self.ov.fd_after_op();
        self.write_through();
        r
    }

    fn write_through(&mut self) {
        if let (Some(t), Some(u)) = (self.through.as_mut(), self.ov.upper()) {
            if let Err(e) = t.sync(u) {
                let _ = std::io::Write::write_all(
                    &mut std::io::stderr(),
                    format!("ovlsim mount: writing the upper through failed: {e}\n").as_bytes(),
                );
            }
        }
    }

    /// A path of node `ino`.
    fn path(&self, ino: INodeNo) -> Result<String, Errno> {
        if ino.0 == 1 {
            return Ok("/".into());
        }
        self.nodes.get(&ino.0).and_then(|n| n.paths.iter().next().cloned()).ok_or(Errno::ENOENT)
    }

    fn child(&self, parent: INodeNo, name: &OsStr) -> Result<String, Errno> {
        Ok(join(&self.path(parent)?, name_of(name)?))
    }

    fn lstat(&mut self, path: &str) -> Result<Stat, Errno> {
        match self.ov.apply(&Op::Lstat { path: path.into() }) {
            Outcome::Stat(st) => Ok(st),
            Outcome::Err(e) => Err(errno(e)),
            _ => Err(Errno::EIO),
        }
    }

    fn attr(&self, path: &str, st: &Stat) -> FileAttr {
        let ino = if path == "/" { 1 } else { st.ino };
        FileAttr {
            ino: INodeNo(ino),
            size: st.size,
            blocks: st.size.div_ceil(512),
            atime: self.epoch,
            mtime: self.epoch,
            ctime: self.epoch,
            crtime: self.epoch,
            kind: kind(st.kind),
            perm: (st.mode & 0o7777) as u16,
            nlink: st.nlink,
            uid: st.uid,
            gid: st.gid,
            rdev: ((st.rdev.0 & 0xfff) << 8) | (st.rdev.1 & 0xff) | ((st.rdev.1 & !0xff) << 12),
            blksize: 4096,
            flags: 0,
        }
    }

    /// Looks `path` up and counts the kernel's reference to its node.
    fn entry(&mut self, path: &str) -> Result<FileAttr, Errno> {
        let st = self.lstat(path)?;
        let attr = self.attr(path, &st);
        if attr.ino.0 != 1 {
            let n = self.nodes.entry(attr.ino.0).or_default();
            n.paths.insert(path.to_owned());
            n.lookups += 1;
        }
        Ok(attr)
    }

    /// The names below `path` are gone.
    fn forget_path(&mut self, path: &str) {
        for n in self.nodes.values_mut() {
            n.paths.retain(|p| !under(p, path));
        }
    }

    /// The names below `from` are now below `to`.
    fn move_paths(&mut self, from: &str, to: &str) {
        for n in self.nodes.values_mut() {
            let moved: Vec<String> = n.paths.iter().filter(|p| under(p, from)).cloned().collect();
            for p in moved {
                n.paths.remove(&p);
                n.paths.insert(format!("{to}{}", &p[from.len()..]));
            }
        }
    }

    fn handle_name(&self, fh: FileHandle) -> Result<String, Errno> {
        self.handles.get(&fh.0).map(|h| h.name.clone()).ok_or(Errno::EBADF)
    }

    fn fd(&mut self, op: FdOp) -> Result<Outcome, Errno> {
        match self.apply(&Op::Fd(op)) {
            Outcome::Err(e) => Err(errno(e)),
            o => Ok(o),
        }
    }

    /// Opens `path` as a model handle.
    fn open(&mut self, path: &str, flags: i32, creat: Option<u32>, directory: bool) -> Result<u64, Errno> {
        let access = match flags & libc::O_ACCMODE {
            libc::O_WRONLY => Access::WriteOnly,
            libc::O_RDWR => Access::ReadWrite,
            _ => Access::ReadOnly,
        };
        let oflags = OpenFlags {
            access,
            creat: creat.is_some(),
            excl: creat.is_some() && flags & libc::O_EXCL != 0,
            trunc: flags & libc::O_TRUNC != 0,
            append: flags & libc::O_APPEND != 0,
            directory,
            nofollow: false,
        };
        self.next_fh += 1;
        let fh = self.next_fh;
        let name = format!("fuse{fh}");
        self.fd(FdOp::Open { fd: name.clone(), path: path.into(), flags: oflags, mode: creat.unwrap_or(0) })?;
        let dir = directory.then(DirState::default);
        self.handles.insert(fh, Handle { name, append: oflags.append, dir });
        Ok(fh)
    }

    fn ok(&mut self, op: &Op) -> Result<(), Errno> {
        match self.apply(op) {
            Outcome::Err(e) => Err(errno(e)),
            _ => Ok(()),
        }
    }

    fn setattr(
        &mut self,
        ino: INodeNo,
        fh: Option<FileHandle>,
        mode: Option<u32>,
        owner: (Option<u32>, Option<u32>),
        size: Option<u64>,
        times: bool,
    ) -> Result<FileAttr, Errno> {
        let path = self.path(ino);
        let handle = fh.and_then(|f| self.handle_name(f).ok());
        if owner.0.is_some() || owner.1.is_some() {
            let p = path.clone()?;
            let ids = (owner.0.unwrap_or(u32::MAX), owner.1.unwrap_or(u32::MAX));
            self.call(|ov| ov.setattr_nofollow(&p, None, Some(ids))).map_err(errno)?;
        }
        if let Some(m) = mode {
            match &handle {
                Some(h) => {
                    self.fd(FdOp::Fchmod { fd: h.clone(), mode: m & 0o7777 })?;
                }
                None => {
                    let p = path.clone()?;
                    self.call(|ov| ov.setattr_nofollow(&p, Some(m & 0o7777), None)).map_err(errno)?;
                }
            }
        }
        if let Some(len) = size {
            match &handle {
                Some(h) => {
                    self.fd(FdOp::Ftruncate { fd: h.clone(), len })?;
                }
                None => self.ok(&Op::Truncate { path: path.clone()?, len })?,
            }
        }
        if times {
            let p = path.clone()?;
            self.call(|ov| ov.setattr_nofollow(&p, None, None)).map_err(errno)?;
        }
        self.getattr(ino, fh)
    }

    fn getattr(&mut self, ino: INodeNo, fh: Option<FileHandle>) -> Result<FileAttr, Errno> {
        if let Ok(p) = self.path(ino) {
            if let Ok(st) = self.lstat(&p) {
                if p == "/" || st.ino == ino.0 {
                    return Ok(self.attr(&p, &st));
                }
            }
        }
        let h = fh.ok_or(Errno::ENOENT).and_then(|f| self.handle_name(f))?;
        match self.fd(FdOp::Fstat { fd: h })? {
            Outcome::Stat(st) => Ok(self.attr("", &st)),
            _ => Err(Errno::EIO),
        }
    }

    fn readdir(&mut self, ino: INodeNo, fh: FileHandle, offset: u64, reply: &mut ReplyDirectory) -> Result<(), Errno> {
        let path = self.path(ino)?;
        let h = self.handles.get(&fh.0).ok_or(Errno::EBADF)?;
        let name = h.name.clone();
        let given = h.dir.as_ref().ok_or(Errno::ENOTDIR)?.given;
        if offset == 0 && given > 0 {
            self.fd(FdOp::Lseek { fd: name.clone(), offset: 0, whence: Whence::Set })?;
            *self.handles.get_mut(&fh.0).and_then(|h| h.dir.as_mut()).ok_or(Errno::EBADF)? = DirState::default();
        } else if offset != given {
            return Err(Errno::EINVAL);
        }
        loop {
            let d = self.handles.get(&fh.0).and_then(|h| h.dir.as_ref()).ok_or(Errno::EBADF)?;
            let given = d.given;
            let (entry_name, t, ino_of) = match given {
                0 => (".".to_owned(), ModelType::Dir, ino.0),
                1 => ("..".to_owned(), ModelType::Dir, 1),
                _ => {
                    if d.pending.is_empty() && !d.end {
                        let got = self.fd(FdOp::Getdents { fd: name.clone(), count: GETDENTS_BATCH })?;
                        let Outcome::Entries(e) = got else { return Err(Errno::EIO) };
                        let d = self.handles.get_mut(&fh.0).and_then(|h| h.dir.as_mut()).ok_or(Errno::EBADF)?;
                        d.end = e.is_empty();
                        d.pending.extend(e);
                    }
                    let d = self.handles.get(&fh.0).and_then(|h| h.dir.as_ref()).ok_or(Errno::EBADF)?;
                    let Some((n, t)) = d.pending.front().cloned() else { break };
                    // d_ino as lstat would give it, looked up on a clone so that listing
                    // changes nothing the model keeps.
                    let child = join(&path, &n);
                    let i = match self.ov.clone().apply(&Op::Lstat { path: child }) {
                        Outcome::Stat(st) => st.ino,
                        _ => u64::MAX,
                    };
                    (n, t, i)
                }
            };
            if reply.add(INodeNo(ino_of), given + 1, kind(t), &entry_name) {
                break;
            }
            let d = self.handles.get_mut(&fh.0).and_then(|h| h.dir.as_mut()).ok_or(Errno::EBADF)?;
            if given >= 2 {
                d.pending.pop_front();
            }
            d.given += 1;
        }
        Ok(())
    }
}

impl ModelFs {
    /// Serves `served`; with an upper directory, changes are written through to it.
    pub fn new(served: Served) -> ModelFs {
        let through = match (&served.upper_dir, served.overlay.upper()) {
            (Some(d), Some(u)) => {
                let abs = std::fs::canonicalize(d).unwrap_or_else(|_| d.clone());
                Some(upper::WriteThrough::new(abs.display().to_string(), u))
            }
            _ => None,
        };
        ModelFs {
            state: Mutex::new(State {
                ov: served.overlay,
                nodes: HashMap::new(),
                handles: HashMap::new(),
                next_fh: 0,
                through,
                epoch: SystemTime::now(),
            }),
        }
    }

    fn st(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replies to a request that makes a new name at `path` with its entry.
    fn made(&self, st: &mut State, r: Result<(), Errno>, path: &str, reply: ReplyEntry) {
        match r.and_then(|()| st.entry(path)) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }
}

macro_rules! tri {
    ($reply:ident, $e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return $reply.error(e),
        }
    };
}

impl Filesystem for ModelFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // O_TRUNC reaches open, so the model's open truncates as the kernel's does.
        let _ = config.add_capabilities(fuser::InitFlags::FUSE_ATOMIC_O_TRUNC);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut st = self.st();
        let path = tri!(reply, st.child(parent, name));
        match st.entry(&path) {
            Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        let mut st = self.st();
        if let Some(n) = st.nodes.get_mut(&ino.0) {
            n.lookups = n.lookups.saturating_sub(nlookup);
            if n.lookups == 0 {
                st.nodes.remove(&ino.0);
            }
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.st().getattr(ino, fh) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let times = atime.is_some() || mtime.is_some();
        match self.st().setattr(ino, fh, mode, (uid, gid), size, times) {
            Ok(a) => reply.attr(&TTL, &a),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let mut st = self.st();
        let path = tri!(reply, st.path(ino));
        match st.apply(&Op::Readlink { path }) {
            Outcome::Target(t) => reply.data(t.as_bytes()),
            Outcome::Err(e) => reply.error(errno(e)),
            _ => reply.error(Errno::EIO),
        }
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let mut st = self.st();
        let path = tri!(reply, st.child(parent, name));
        let (major, minor) = (((rdev >> 8) & 0xfff), ((rdev & 0xff) | ((rdev >> 12) & 0xfff00)));
        let kind = match mode & libc::S_IFMT {
            libc::S_IFREG | 0 => MknodKind::File,
            libc::S_IFIFO => MknodKind::Fifo,
            libc::S_IFCHR => MknodKind::Char(major, minor),
            libc::S_IFBLK => MknodKind::Block(major, minor),
            // Sockets are not modelled.
            _ => return reply.error(Errno::EOPNOTSUPP),
        };
        let r = st.ok(&Op::Mknod { path: path.clone(), kind, mode: mode & 0o7777 });
        self.made(&mut st, r, &path, reply);
    }

    fn mkdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, mode: u32, _umask: u32, reply: ReplyEntry) {
        let mut st = self.st();
        let path = tri!(reply, st.child(parent, name));
        let r = st.ok(&Op::Mkdir { path: path.clone(), mode: mode & 0o7777 });
        self.made(&mut st, r, &path, reply);
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut st = self.st();
        let path = tri!(reply, st.child(parent, name));
        match st.ok(&Op::Unlink { path: path.clone() }) {
            Ok(()) => {
                st.forget_path(&path);
                reply.ok()
            }
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut st = self.st();
        let path = tri!(reply, st.child(parent, name));
        match st.ok(&Op::Rmdir { path: path.clone() }) {
            Ok(()) => {
                st.forget_path(&path);
                reply.ok()
            }
            Err(e) => reply.error(e),
        }
    }

    fn symlink(&self, _req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        let mut st = self.st();
        let path = tri!(reply, st.child(parent, link_name));
        let Some(target) = target.to_str() else { return reply.error(Errno::EINVAL) };
        let r = st.ok(&Op::Symlink { target: target.into(), path: path.clone() });
        self.made(&mut st, r, &path, reply);
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        let mut st = self.st();
        let from = tri!(reply, st.child(parent, name));
        let to = tri!(reply, st.child(newparent, newname));
        let f = RenameFlags {
            noreplace: flags.contains(fuser::RenameFlags::RENAME_NOREPLACE),
            exchange: flags.contains(fuser::RenameFlags::RENAME_EXCHANGE),
            whiteout: flags.contains(fuser::RenameFlags::RENAME_WHITEOUT),
        };
        match st.ok(&Op::Rename { from: from.clone(), to: to.clone(), flags: f }) {
            Ok(()) => {
                if f.exchange {
                    let tmp = "\0exchange";
                    st.move_paths(&from, tmp);
                    st.move_paths(&to, &from);
                    st.move_paths(tmp, &to);
                } else if from != to {
                    st.forget_path(&to);
                    st.move_paths(&from, &to);
                }
                reply.ok()
            }
            Err(e) => reply.error(e),
        }
    }

    fn link(&self, _req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        let mut st = self.st();
        let from = tri!(reply, st.path(ino));
        let to = tri!(reply, st.child(newparent, newname));
        let r = st.ok(&Op::Link { from, to: to.clone() });
        self.made(&mut st, r, &to, reply);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: fuser::OpenFlags, reply: ReplyOpen) {
        let mut st = self.st();
        let path = tri!(reply, st.path(ino));
        match st.open(&path, flags.0, None, false) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: fuser::OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        let mut st = self.st();
        let name = tri!(reply, st.handle_name(fh));
        let mut out = Vec::new();
        while (out.len() as u64) < u64::from(size) {
            let len = (u64::from(size) - out.len() as u64).min(FD_READ_MAX);
            let at = offset + out.len() as u64;
            match st.fd(FdOp::Pread { fd: name.clone(), offset: at, len }) {
                Ok(Outcome::Data(d)) if d.is_empty() => break,
                Ok(Outcome::Data(d)) => out.extend_from_slice(&d),
                Ok(_) => return reply.error(Errno::EIO),
                Err(e) if out.is_empty() => return reply.error(e),
                Err(_) => break,
            }
        }
        reply.data(&out)
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: fuser::WriteFlags,
        _flags: fuser::OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut st = self.st();
        let Some(h) = st.handles.get(&fh.0) else { return reply.error(Errno::EBADF) };
        let (name, append) = (h.name.clone(), h.append);
        // O_APPEND writes at the end the model's file has at the write, whatever offset
        // the kernel computed from its idea of the size.
        let op = if append {
            FdOp::Write { fd: name, data: data.to_vec() }
        } else {
            FdOp::Pwrite { fd: name, offset, data: data.to_vec() }
        };
        match st.fd(op) {
            Ok(_) => reply.written(data.len() as u32),
            Err(e) => reply.error(e),
        }
    }

    fn flush(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _lock: fuser::LockOwner, reply: ReplyEmpty) {
        reply.ok()
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: fuser::OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let mut st = self.st();
        if let Some(h) = st.handles.remove(&fh.0) {
            let _ = st.fd(FdOp::Close { fd: h.name });
        }
        reply.ok()
    }

    fn fsync(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        reply.ok()
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, flags: fuser::OpenFlags, reply: ReplyOpen) {
        let mut st = self.st();
        let path = tri!(reply, st.path(ino));
        match st.open(&path, flags.0 & !libc::O_ACCMODE, None, true) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        match self.st().readdir(ino, fh, offset, &mut reply) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn releasedir(&self, _req: &Request, _ino: INodeNo, fh: FileHandle, _flags: fuser::OpenFlags, reply: ReplyEmpty) {
        let mut st = self.st();
        if let Some(h) = st.handles.remove(&fh.0) {
            let _ = st.fd(FdOp::Close { fd: h.name });
        }
        reply.ok()
    }

    fn fsyncdir(&self, _req: &Request, _ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        reply.ok()
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(1 << 20, 1 << 19, 1 << 19, 1 << 20, 1 << 19, 4096, 255, 4096)
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let mut st = self.st();
        let path = tri!(reply, st.path(ino));
        let Some(name) = name.to_str() else { return reply.error(Errno::EOPNOTSUPP) };
        // XATTR_CREATE and XATTR_REPLACE, checked as the VFS's generic handler does
        // before the set (the model's setxattr takes flags 0).
        if flags & (libc::XATTR_CREATE | libc::XATTR_REPLACE) != 0 {
            let exists = st.ov.clone().getxattr_with(&path, name, Follow::No).is_ok();
            if flags & libc::XATTR_CREATE != 0 && exists {
                return reply.error(Errno::EEXIST);
            }
            if flags & libc::XATTR_REPLACE != 0 && !exists {
                return reply.error(Errno::NO_XATTR);
            }
        }
        match st.call(|ov| ov.setxattr_with(&path, name, value, Follow::No)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let mut st = self.st();
        let path = tri!(reply, st.path(ino));
        let Some(name) = name.to_str() else { return reply.error(Errno::NO_XATTR) };
        match st.call(|ov| ov.getxattr_with(&path, name, Follow::No)) {
            Ok(v) => xattr_reply(reply, size, &v),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let mut st = self.st();
        let path = tri!(reply, st.path(ino));
        match st.call(|ov| ov.listxattr_with(&path, Follow::No)) {
            Ok(names) => {
                let mut v = Vec::new();
                for n in names {
                    v.extend_from_slice(n.as_bytes());
                    v.push(0);
                }
                xattr_reply(reply, size, &v)
            }
            Err(e) => reply.error(errno(e)),
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let mut st = self.st();
        let path = tri!(reply, st.path(ino));
        let Some(name) = name.to_str() else { return reply.error(Errno::NO_XATTR) };
        match st.call(|ov| ov.removexattr_with(&path, name, Follow::No)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut st = self.st();
        let path = tri!(reply, st.child(parent, name));
        let fh = tri!(reply, st.open(&path, flags, Some(mode & 0o7777), false));
        match st.entry(&path) {
            Ok(attr) => reply.created(&TTL, &attr, Generation(0), FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO),
            Err(e) => {
                if let Some(h) = st.handles.remove(&fh) {
                    let _ = st.fd(FdOp::Close { fd: h.name });
                }
                reply.error(e)
            }
        }
    }
}

/// A getxattr/listxattr answer: the size when asked for it, ERANGE when it does not fit.
fn xattr_reply(reply: ReplyXattr, size: u32, v: &[u8]) {
    if size == 0 {
        reply.size(v.len() as u32)
    } else if v.len() > size as usize {
        reply.error(Errno::ERANGE)
    } else {
        reply.data(v)
    }
}

/// Mounts `served` at `mountpoint` through `fusermount3` and serves it until a SIGINT or
/// SIGTERM (then unmounts) or until it is unmounted from outside (`fusermount3 -u`).
/// `on_mounted` is called once the mount is in place.
pub fn serve(served: Served, mountpoint: &Path, on_mounted: impl FnOnce()) -> std::io::Result<()> {
    // The signals are blocked before fuser starts its threads, which inherit the mask, so
    // that only the wait below takes them.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t; these calls only change this thread's mask.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName("ovlsim".into()),
        fuser::MountOption::Subtype("ovlsim".into()),
        fuser::MountOption::DefaultPermissions,
        fuser::MountOption::Dev,
        fuser::MountOption::Suid,
    ];
    if served.overlay.options().read_only {
        config.mount_options.push(fuser::MountOption::RO);
    }
    let session = fuser::spawn_mount(ModelFs::new(served), mountpoint, &config)?;
    on_mounted();
    let timeout = libc::timespec { tv_sec: 0, tv_nsec: 100_000_000 };
    loop {
        if session.guard.is_finished() {
            // Unmounted from outside: the session ended by itself.
            return session.join();
        }
        // SAFETY: `set` and `timeout` are valid for the call; a null siginfo is allowed.
        let sig = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &timeout) };
        if sig > 0 {
            return session.umount_and_join();
        }
    }
}
