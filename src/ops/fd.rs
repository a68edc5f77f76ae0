//! Operations through a named open file description (a handle): `open` that keeps the file
//! open under a name, then `read`, `write`, `pread`, `pwrite`, `lseek`, `fstat`,
//! `ftruncate`, `fchmod` and `getdents` through it, and `close`.
//!
//! A handle is a name the scenario gives (`as: f1`), not a number: both backends map it to
//! their own open file (the model to [`crate::fd::OpenFile`], the kernel worker to a real
//! fd). A handle that is not open (never opened, closed, or whose open failed) answers
//! EBADF on both backends, as the kernel answers a closed fd number. Every handle is closed
//! at an unmount.

use super::OpenFlags;
use serde::{Deserialize, Serialize};

/// `lseek(2)`'s `whence`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Whence {
    /// `SEEK_SET`.
    #[default]
    Set,
    /// `SEEK_CUR`.
    Cur,
    /// `SEEK_END`.
    End,
}

impl Whence {
    /// The word scenarios use: `set`, `cur`, `end`.
    pub fn word(self) -> &'static str {
        match self {
            Whence::Set => "set",
            Whence::Cur => "cur",
            Whence::End => "end",
        }
    }
}

/// The most bytes one `read` or `pread` through a handle asks for: reads through a handle
/// answer their bytes, never a digest ([`crate::layer::READ_INLINE_MAX`]).
pub const FD_READ_MAX: u64 = crate::layer::READ_INLINE_MAX;

/// One operation through a handle.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum FdOp {
    /// `open(2)`, keeping the file open as `fd`. An open handle of the same name is closed
    /// first.
    Open {
        /// The handle's name.
        fd: String,
        /// The path.
        path: String,
        /// The flags.
        flags: OpenFlags,
        /// The mode for `O_CREAT`.
        mode: u32,
    },
    /// `close(2)`.
    Close {
        /// The handle.
        fd: String,
    },
    /// `read(2)` of up to `len` bytes at the file position, which moves past them.
    Read {
        /// The handle.
        fd: String,
        /// How many bytes to ask for (at most [`FD_READ_MAX`]).
        len: u64,
    },
    /// `write(2)` at the file position (at the end with `O_APPEND`).
    Write {
        /// The handle.
        fd: String,
        /// The bytes.
        data: Vec<u8>,
    },
    /// `pread(2)`.
    Pread {
        /// The handle.
        fd: String,
        /// The offset.
        offset: u64,
        /// How many bytes to ask for (at most [`FD_READ_MAX`]).
        len: u64,
    },
    /// `pwrite(2)`.
    Pwrite {
        /// The handle.
        fd: String,
        /// The offset.
        offset: u64,
        /// The bytes.
        data: Vec<u8>,
    },
    /// `lseek(2)`; the new offset is not reported (a read after it shows where it is).
    Lseek {
        /// The handle.
        fd: String,
        /// The offset.
        offset: i64,
        /// From where.
        whence: Whence,
    },
    /// `fstat(2)`.
    Fstat {
        /// The handle.
        fd: String,
    },
    /// `ftruncate(2)`.
    Ftruncate {
        /// The handle.
        fd: String,
        /// The new length.
        len: u64,
    },
    /// `fchmod(2)`.
    Fchmod {
        /// The handle.
        fd: String,
        /// The new permission bits.
        mode: u32,
    },
    /// `getdents64(2)` of the next `count` entries (without `.` and `..`); an empty answer
    /// is the end of the directory.
    Getdents {
        /// The handle.
        fd: String,
        /// How many entries at most (at least 1).
        count: u64,
    },
    /// `fchown(2)`; an id of `u32::MAX` (-1) is left unchanged.
    Fchown {
        /// The handle.
        fd: String,
        /// The new owner.
        uid: u32,
        /// The new group.
        gid: u32,
    },
    /// `fsync(2)`.
    Fsync {
        /// The handle.
        fd: String,
    },
    /// `fsetxattr(2)` with flags 0.
    Fsetxattr {
        /// The handle.
        fd: String,
        /// The xattr's name.
        name: String,
        /// Its value.
        value: Vec<u8>,
    },
    /// `fgetxattr(2)`.
    Fgetxattr {
        /// The handle.
        fd: String,
        /// The xattr's name.
        name: String,
    },
    /// `flistxattr(2)`.
    Flistxattr {
        /// The handle.
        fd: String,
    },
    /// `fremovexattr(2)`.
    Fremovexattr {
        /// The handle.
        fd: String,
        /// The xattr's name.
        name: String,
    },
    /// `name_to_handle_at(2)` of `path` (from the merged root), keeping the file handle
    /// it gives as `handle` (a file handle's name, not an open file's: see
    /// [`crate::export`]). A failed call leaves `handle` empty (0 bytes).
    NameToHandle {
        /// The file handle's name.
        handle: String,
        /// The path.
        path: String,
        /// `AT_HANDLE_FID`: a handle that only identifies, not one to decode.
        fid: bool,
        /// `AT_SYMLINK_FOLLOW`.
        follow: bool,
    },
    /// `open_by_handle_at(2)` of the file handle `handle`, with a mount fd of the overlay
    /// mounted now, keeping the file open as `fd` (an open handle of that name is closed
    /// first).
    OpenByHandle {
        /// The open handle's name.
        fd: String,
        /// The file handle's name.
        handle: String,
        /// The flags.
        flags: OpenFlags,
    },
}

impl FdOp {
    /// The step's name, as scenarios spell it.
    pub fn name(&self) -> &'static str {
        match self {
            FdOp::Open { .. } => "open",
            FdOp::Close { .. } => "close",
            FdOp::Read { .. } => "read",
            FdOp::Write { .. } => "write",
            FdOp::Pread { .. } => "pread",
            FdOp::Pwrite { .. } => "pwrite",
            FdOp::Lseek { .. } => "lseek",
            FdOp::Fstat { .. } => "fstat",
            FdOp::Ftruncate { .. } => "ftruncate",
            FdOp::Fchmod { .. } => "fchmod",
            FdOp::Getdents { .. } => "getdents",
            FdOp::Fchown { .. } => "fchown",
            FdOp::Fsync { .. } => "fsync",
            FdOp::Fsetxattr { .. } => "fsetxattr",
            FdOp::Fgetxattr { .. } => "fgetxattr",
            FdOp::Flistxattr { .. } => "flistxattr",
            FdOp::Fremovexattr { .. } => "fremovexattr",
            FdOp::NameToHandle { .. } => "name_to_handle",
            FdOp::OpenByHandle { .. } => "open_by_handle",
        }
    }

    /// The handle the operation names (for `name_to_handle`, the file handle it keeps).
    pub fn fd(&self) -> &str {
        match self {
            FdOp::Open { fd, .. }
            | FdOp::Close { fd }
            | FdOp::Read { fd, .. }
            | FdOp::Write { fd, .. }
            | FdOp::Pread { fd, .. }
            | FdOp::Pwrite { fd, .. }
            | FdOp::Lseek { fd, .. }
            | FdOp::Fstat { fd }
            | FdOp::Ftruncate { fd, .. }
            | FdOp::Fchmod { fd, .. }
            | FdOp::Getdents { fd, .. }
            | FdOp::Fchown { fd, .. }
            | FdOp::Fsync { fd }
            | FdOp::Fsetxattr { fd, .. }
            | FdOp::Fgetxattr { fd, .. }
            | FdOp::Flistxattr { fd }
            | FdOp::Fremovexattr { fd, .. }
            | FdOp::OpenByHandle { fd, .. } => fd,
            FdOp::NameToHandle { handle, .. } => handle,
        }
    }

    /// The path it opens, for `open`; the path it names, for `name_to_handle`.
    pub fn path(&self) -> Option<&str> {
        match self {
            FdOp::Open { path, .. } | FdOp::NameToHandle { path, .. } => Some(path),
            _ => None,
        }
    }
}
