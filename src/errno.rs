//! Errno values as observations.
//!
//! An errno returned by an operation is an observation of the file system, not a failure of
//! the model: the model's job is to return the same errno as the kernel, in the same
//! precedence. Harness failures (bad YAML, a mount that would not come up) have their own
//! error types in [`crate::scenario`] and [`crate::kernel`].

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! errnos {
    ($($name:ident = $code:expr, $text:expr;)*) => {
        /// The errno values the model can return, with their Linux x86_64 numbers.
        #[allow(clippy::upper_case_acronyms)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[non_exhaustive]
        pub enum Errno {
            $(#[doc = $text] $name,)*
        }

        impl Errno {
            /// All errnos the model knows, in numeric order.
            pub const ALL: &'static [Errno] = &[$(Errno::$name,)*];

            /// The Linux errno number.
            pub fn code(self) -> i32 {
                match self { $(Errno::$name => $code,)* }
            }

            /// The errno for a Linux errno number, if the model knows it.
            pub fn from_code(code: i32) -> Option<Errno> {
                match code { $($code => Some(Errno::$name),)* _ => None }
            }

            /// The libc spelling, for example `"ENOENT"`.
            pub fn name(self) -> &'static str {
                match self { $(Errno::$name => stringify!($name),)* }
            }

            /// The errno for a libc spelling such as `"ENOENT"`.
            pub fn from_name(name: &str) -> Option<Errno> {
                match name { $(stringify!($name) => Some(Errno::$name),)* _ => None }
            }
        }
    };
}

errnos! {
    EPERM = 1, "Operation not permitted.";
    ENOENT = 2, "No such file or directory.";
    EIO = 5, "I/O error.";
    EBADF = 9, "Bad file descriptor.";
    EAGAIN = 11, "Try again.";
    ENOMEM = 12, "Out of memory.";
    EACCES = 13, "Permission denied.";
    EFAULT = 14, "Bad address.";
    EBUSY = 16, "Device or resource busy.";
    EEXIST = 17, "File exists.";
    EXDEV = 18, "Cross-device link.";
    ENODEV = 19, "No such device.";
    ENOTDIR = 20, "Not a directory.";
    EISDIR = 21, "Is a directory.";
    EINVAL = 22, "Invalid argument.";
    ENFILE = 23, "File table overflow.";
    EMFILE = 24, "Too many open files.";
    ETXTBSY = 26, "Text file busy.";
    EFBIG = 27, "File too large.";
    ENOSPC = 28, "No space left on device.";
    ESPIPE = 29, "Illegal seek.";
    EROFS = 30, "Read-only file system.";
    EMLINK = 31, "Too many links.";
    ERANGE = 34, "Result out of range.";
    ENAMETOOLONG = 36, "File name too long.";
    ENOSYS = 38, "Function not implemented.";
    ENOTEMPTY = 39, "Directory not empty.";
    ELOOP = 40, "Too many symbolic links.";
    ENODATA = 61, "No data available (no such xattr).";
    EOVERFLOW = 75, "Value too large.";
    E2BIG = 7, "Argument list too long (xattr value too large).";
    ENXIO = 6, "No such device or address.";
    EOPNOTSUPP = 95, "Operation not supported.";
    ESTALE = 116, "Stale file handle.";
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The result of a model operation: a value, or the errno the kernel would return.
pub type SysResult<T> = Result<T, Errno>;
