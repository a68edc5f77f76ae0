//! The operations a user makes on a merged directory, and what they observe.
//!
//! Operations are path-level: each one opens, acts and closes, as a shell command would.
//! [`Op`] names the call and its arguments; [`Outcome`] is what the caller sees. Both
//! backends (the model and the kernel) take the same `Op` and return the same `Outcome`,
//! so that their answers can be compared field by field.
//!
//! Every operation runs as root (uid 0, all capabilities) with umask 0, as the kernel oracle
//! does, unless it is run as another caller ([`crate::cred`], [`Overlay::apply_as`]).

use crate::errno::Errno;
use crate::layer::FileType;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// `open(2)` flags the model understands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OpenFlags {
    /// The access mode.
    pub access: Access,
    /// `O_CREAT`.
    #[serde(default)]
    pub creat: bool,
    /// `O_EXCL`.
    #[serde(default)]
    pub excl: bool,
    /// `O_TRUNC`.
    #[serde(default)]
    pub trunc: bool,
    /// `O_APPEND`.
    #[serde(default)]
    pub append: bool,
    /// `O_DIRECTORY`.
    #[serde(default)]
    pub directory: bool,
    /// `O_NOFOLLOW`.
    #[serde(default)]
    pub nofollow: bool,
}

/// The access mode of an open.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Access {
    /// `O_RDONLY`.
    #[default]
    ReadOnly,
    /// `O_WRONLY`.
    WriteOnly,
    /// `O_RDWR`.
    ReadWrite,
}

impl Access {
    /// Whether the mode allows writing.
    pub fn writes(self) -> bool {
        !matches!(self, Access::ReadOnly)
    }
}

/// `renameat2(2)` flags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RenameFlags {
    /// `RENAME_NOREPLACE`.
    #[serde(default)]
    pub noreplace: bool,
    /// `RENAME_EXCHANGE`.
    #[serde(default)]
    pub exchange: bool,
    /// `RENAME_WHITEOUT` (overlayfs refuses it with EINVAL).
    #[serde(default)]
    pub whiteout: bool,
}

/// Where a write lands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WriteAt {
    /// `pwrite` at this offset (the file is opened `O_WRONLY`).
    Offset(u64),
    /// `write` on a file opened `O_WRONLY|O_APPEND`.
    Append,
}

/// The kind of node `mknod(2)` makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum MknodKind {
    /// A regular file (`S_IFREG`).
    File,
    /// A character device.
    Char(u32, u32),
    /// A block device.
    Block(u32, u32),
    /// A FIFO.
    Fifo,
}

/// One operation on the merged view. Paths are absolute, with the merged root as `/`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Op {
    /// `stat(2)`: follows a final symlink.
    Stat {
        /// The path.
        path: String,
    },
    /// `lstat(2)`.
    Lstat {
        /// The path.
        path: String,
    },
    /// `open(2)` and `close(2)`, with `mode` for a new file.
    Open {
        /// The path.
        path: String,
        /// The flags.
        flags: OpenFlags,
        /// The mode for `O_CREAT`.
        mode: u32,
    },
    /// `open(O_RDONLY)`, read to the end, close.
    Read {
        /// The path.
        path: String,
    },
    /// `open(O_WRONLY|O_CREAT [|O_APPEND], 0644)`, one write, close.
    Write {
        /// The path.
        path: String,
        /// Where to write.
        at: WriteAt,
        /// The bytes.
        data: Vec<u8>,
    },
    /// `truncate(2)`.
    Truncate {
        /// The path.
        path: String,
        /// The new length.
        len: u64,
    },
    /// `mkdir(2)`.
    Mkdir {
        /// The path.
        path: String,
        /// The mode.
        mode: u32,
    },
    /// `rmdir(2)`.
    Rmdir {
        /// The path.
        path: String,
    },
    /// `unlink(2)`.
    Unlink {
        /// The path.
        path: String,
    },
    /// `renameat2(2)`.
    Rename {
        /// The source.
        from: String,
        /// The target.
        to: String,
        /// The flags.
        flags: RenameFlags,
    },
    /// `link(2)` (the source's final symlink is not followed).
    Link {
        /// The existing name.
        from: String,
        /// The new name.
        to: String,
    },
    /// `symlink(2)`.
    Symlink {
        /// The target text.
        target: String,
        /// The new link's path.
        path: String,
    },
    /// `readlink(2)`.
    Readlink {
        /// The path.
        path: String,
    },
    /// `open(O_RDONLY|O_DIRECTORY)` and `getdents64` to the end.
    Readdir {
        /// The path.
        path: String,
    },
    /// `chmod(2)` (follows a final symlink).
    Chmod {
        /// The path.
        path: String,
        /// The new permission bits.
        mode: u32,
    },
    /// `chown(2)` (follows a final symlink).
    Chown {
        /// The path.
        path: String,
        /// The new owner.
        uid: u32,
        /// The new group.
        gid: u32,
    },
    /// `utimensat(2)` to the current time (follows a final symlink).
    Utimes {
        /// The path.
        path: String,
    },
    /// `setxattr(2)` with flags 0 (follows a final symlink).
    Setxattr {
        /// The path.
        path: String,
        /// The xattr name.
        name: String,
        /// The value.
        value: Vec<u8>,
    },
    /// `getxattr(2)`.
    Getxattr {
        /// The path.
        path: String,
        /// The xattr name.
        name: String,
    },
    /// `listxattr(2)`.
    Listxattr {
        /// The path.
        path: String,
    },
    /// `removexattr(2)`.
    Removexattr {
        /// The path.
        path: String,
        /// The xattr name.
        name: String,
    },
    /// `mknod(2)`.
    Mknod {
        /// The path.
        path: String,
        /// What to make.
        kind: MknodKind,
        /// Permission bits.
        mode: u32,
    },
    /// An operation through a named open file (see [`fd`]).
    Fd(FdOp),
}

impl Op {
    /// The syscall family name, as scenarios spell it.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Stat { .. } => "stat",
            Op::Lstat { .. } => "lstat",
            Op::Open { .. } => "open",
            Op::Read { .. } => "read",
            Op::Write { .. } => "write",
            Op::Truncate { .. } => "truncate",
            Op::Mkdir { .. } => "mkdir",
            Op::Rmdir { .. } => "rmdir",
            Op::Unlink { .. } => "unlink",
            Op::Rename { .. } => "rename",
            Op::Link { .. } => "link",
            Op::Symlink { .. } => "symlink",
            Op::Readlink { .. } => "readlink",
            Op::Readdir { .. } => "readdir",
            Op::Chmod { .. } => "chmod",
            Op::Chown { .. } => "chown",
            Op::Utimes { .. } => "utimes",
            Op::Setxattr { .. } => "setxattr",
            Op::Getxattr { .. } => "getxattr",
            Op::Listxattr { .. } => "listxattr",
            Op::Removexattr { .. } => "removexattr",
            Op::Mknod { .. } => "mknod",
            Op::Fd(f) => f.name(),
        }
    }

    /// Every path argument of the operation (a symlink's target text is not a path here).
    pub fn paths(&self) -> Vec<&str> {
        match self {
            Op::Rename { from, to, .. } | Op::Link { from, to } => vec![from, to],
            Op::Stat { path }
            | Op::Lstat { path }
            | Op::Open { path, .. }
            | Op::Read { path }
            | Op::Write { path, .. }
            | Op::Truncate { path, .. }
            | Op::Mkdir { path, .. }
            | Op::Rmdir { path }
            | Op::Unlink { path }
            | Op::Symlink { path, .. }
            | Op::Readlink { path }
            | Op::Readdir { path }
            | Op::Chmod { path, .. }
            | Op::Chown { path, .. }
            | Op::Utimes { path }
            | Op::Setxattr { path, .. }
            | Op::Getxattr { path, .. }
            | Op::Listxattr { path }
            | Op::Removexattr { path, .. }
            | Op::Mknod { path, .. } => vec![path],
            Op::Fd(f) => f.path().into_iter().collect(),
        }
    }
}

/// What `stat(2)` shows, less the fields that are not part of the contract (times, blocks,
/// st_dev).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Stat {
    /// The file type.
    pub kind: FileType,
    /// Permission bits.
    pub mode: u32,
    /// `st_size`.
    pub size: u64,
    /// `st_nlink`.
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// `st_rdev` as major and minor, for devices.
    pub rdev: (u32, u32),
    /// The inode identity: two paths have the same value if and only if they have the same
    /// `st_ino`. The number itself is backend-specific; compare identities, not numbers.
    pub ino: u64,
}

/// What an operation returned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Outcome {
    /// Success with nothing to report.
    Ok,
    /// The call failed with this errno.
    Err(Errno),
    /// `stat` or `lstat`.
    Stat(Stat),
    /// The bytes `read` returned.
    Data(Vec<u8>),
    /// What `read` returned from a regular file over [`crate::layer::READ_INLINE_MAX`]
    /// bytes: its length and hash, not its bytes (see [`crate::layer::Digest`]).
    Digest(crate::layer::Digest),
    /// The `readlink` target.
    Target(String),
    /// The `readdir` names (without `.` and `..`) and their `d_type`.
    Entries(BTreeMap<String, FileType>),
    /// A `getxattr` value.
    Xattr(Vec<u8>),
    /// The `listxattr` names.
    XattrNames(BTreeSet<String>),
}

impl Outcome {
    /// The errno, if the call failed.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            Outcome::Err(e) => Some(*e),
            _ => None,
        }
    }
}

impl From<Result<Outcome, Errno>> for Outcome {
    fn from(r: Result<Outcome, Errno>) -> Outcome {
        r.unwrap_or_else(Outcome::Err)
    }
}

mod attr;
pub(crate) use attr::set_owner;
pub mod fd;
mod file;
pub(crate) mod namespace;
pub(crate) mod perm;
mod rename;

pub use fd::{FdOp, Whence};
pub use file::{FILE_SIZE_MAX, WRITE_COUNT_MAX};

use crate::overlay::Overlay;
use crate::path::Follow;

/// Runs one operation on the overlay (see [`Overlay::apply`]).
pub(crate) fn dispatch(ov: &mut Overlay, op: &Op) -> Outcome {
    let ok = |r: Result<(), Errno>| r.map(|()| Outcome::Ok);
    let r = match op {
        Op::Stat { path } => ov.stat(path, Follow::Yes).map(Outcome::Stat),
        Op::Lstat { path } => ov.stat(path, Follow::No).map(Outcome::Stat),
        Op::Open { path, flags, mode } => ov.open(path, *flags, *mode).map(|_| Outcome::Ok),
        Op::Read { path } => ov.read(path),
        Op::Write { path, at, data } => ok(ov.write(path, *at, data)),
        Op::Truncate { path, len } => ok(ov.truncate(path, *len)),
        Op::Mkdir { path, mode } => ok(ov.mkdir(path, *mode)),
        Op::Rmdir { path } => ok(ov.rmdir(path)),
        Op::Unlink { path } => ok(ov.unlink(path)),
        Op::Rename { from, to, flags } => ok(ov.rename(from, to, *flags)),
        Op::Link { from, to } => ok(ov.link(from, to)),
        Op::Symlink { target, path } => ok(ov.symlink(target, path)),
        Op::Readlink { path } => ov.readlink(path).map(Outcome::Target),
        Op::Readdir { path } => ov.readdir(path).map(Outcome::Entries),
        Op::Chmod { path, mode } => ok(ov.chmod(path, *mode)),
        Op::Chown { path, uid, gid } => ok(ov.chown(path, *uid, *gid)),
        Op::Utimes { path } => ok(ov.utimes(path)),
        Op::Setxattr { path, name, value } => ok(ov.setxattr(path, name, value)),
        Op::Getxattr { path, name } => ov.getxattr(path, name).map(Outcome::Xattr),
        Op::Listxattr { path } => ov.listxattr(path).map(Outcome::XattrNames),
        Op::Removexattr { path, name } => ok(ov.removexattr(path, name)),
        Op::Mknod { path, kind, mode } => ok(ov.mknod(path, *kind, *mode)),
        Op::Fd(f) => Ok(crate::fd::dispatch(ov, f)),
    };
    r.unwrap_or_else(Outcome::Err)
}
