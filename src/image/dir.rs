//! A layer from a real directory in overlay's own on-disk form: a kernel upper directory,
//! Docker's overlay2 `diff/`, a containerd overlay snapshot.
//!
//! The directory is read as the kernel backend reads its own layers back
//! ([`crate::kernel`]'s `layers::node_of` and `layers::list` are shared): whiteouts are
//! character devices 0/0 and stay so, overlay's xattrs (`trusted.overlay.*`,
//! `user.overlay.*`) are kept as they are, except the kernel's bookkeeping (`origin`,
//! `impure`, `uuid`: file handles and marks that mean nothing outside the filesystem that
//! wrote them; the model keeps origins outside the xattrs). Modes, owners, xattrs, symlink
//! targets and device numbers are read with `lstat`/`l*xattr`; only regular files are
//! opened, never a device or a FIFO. Hard links are found by `(st_dev, st_ino)`.
//!
//! The walk is iterative, never follows a symlink (`openat2` with `RESOLVE_NO_SYMLINKS`),
//! stays on one filesystem (`RESOLVE_NO_XDEV`), and stops with an error past
//! [`super::DEPTH_MAX`] components. Xattrs are read through `/proc/self/fd/DIR/NAME`, so
//! that the last component is never followed and no working directory is changed.

use super::{checked, ImageError, DEPTH_MAX, FILE_SIZE_MAX};
use crate::kernel::layers::{is_bookkeeping, list, mode_of, node_of, open_dir_at};
use crate::layer::{FileType, FlatEntry, FlatLayer, Layer};
use rustix::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use rustix::fs::{AtFlags, Mode, OFlags};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// The largest xattr name list and value (`XATTR_LIST_MAX`, `XATTR_SIZE_MAX`).
const XATTR_MAX: usize = 65536;

impl Layer {
    /// Reads the directory `path`, in overlay's on-disk form, as a layer (see
    /// [`crate::image::dir`]). The layer is checked as a scenario's layers are
    /// ([`crate::layer::check::check_layer`]).
    ///
    /// Errors name the path inside the directory: an unreadable entry, a name or symlink
    /// target that is not UTF-8, a mount point inside, a tree deeper than
    /// [`super::DEPTH_MAX`], a file over [`super::FILE_SIZE_MAX`].
    pub fn from_dir(path: impl AsRef<Path>) -> Result<Layer, ImageError> {
        let shown = path.as_ref().display().to_string();
        let flat = read_dir(path.as_ref())?;
        checked(&shown, &flat)
    }
}

/// One directory being read: its descriptor, its path in the layer, and its names still to
/// read, last first.
struct Frame {
    fd: OwnedFd,
    rel: String,
    names: Vec<Vec<u8>>,
}

/// Reads the directory at `path` into a flat layer: parents first, names in byte order.
pub fn read_dir(path: &Path) -> Result<FlatLayer, ImageError> {
    let shown = path.display().to_string();
    let whole = |m: String| ImageError::whole(&shown, m);
    let root_fd = rustix::fs::open(path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| whole(format!("opening the layer directory: {e}")))?;
    let st = rustix::fs::fstat(&root_fd).map_err(|e| whole(format!("fstat: {e}")))?;
    let xattrs = xattrs_of(root_fd.as_fd(), ".", &shown, "/")?;
    let root = node_of(root_fd.as_fd(), ".", &shown, &st, xattrs).map_err(|e| whole(e.to_string()))?;
    let mut entries = Vec::new();
    let mut seen: HashMap<(u64, u64), String> = HashMap::new();
    let names = listed(&root_fd, &shown, "/")?;
    let mut stack = vec![Frame { fd: root_fd, rel: String::new(), names }];
    while let Some(frame) = stack.last_mut() {
        let Some(raw) = frame.names.pop() else {
            stack.pop();
            continue;
        };
        let name = String::from_utf8(raw).map_err(|e| {
            ImageError::at(&shown, frame.rel.clone() + "/", format!("a name is not UTF-8: {:?}", e.as_bytes()))
        })?;
        let rel = format!("{}/{name}", frame.rel);
        let at = |m: String| ImageError::at(&shown, rel.clone(), m);
        let st = rustix::fs::statat(&frame.fd, name.as_str(), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| at(format!("lstat: {e}")))?;
        let kind = FileType::from_ifmt(mode_of(&st));
        let whiteout = kind == Some(FileType::Char) && st.st_rdev == 0;
        if kind != Some(FileType::Dir) && !whiteout && st.st_nlink > 1 {
            let key = (st.st_dev, st.st_ino);
            if let Some(to) = seen.get(&key) {
                entries.push(FlatEntry::Link { path: rel, to: to.clone() });
                continue;
            }
            seen.insert(key, rel.clone());
        }
        if kind == Some(FileType::File) && st.st_size as u64 > FILE_SIZE_MAX {
            return Err(at(format!("{} bytes, over the {FILE_SIZE_MAX} a file may have here", st.st_size)));
        }
        let abs = format!("{shown}{rel}");
        let xattrs = xattrs_of(frame.fd.as_fd(), &name, &shown, &rel)?;
        let node = node_of(frame.fd.as_fd(), &name, &abs, &st, xattrs).map_err(|e| at(e.to_string()))?;
        entries.push(FlatEntry::Node { path: rel.clone(), node });
        if kind == Some(FileType::Dir) {
            let parent = &stack.last().expect("the frame read from").fd;
            let fd = open_dir_at(parent, &name).map_err(|e| at(format!("opening the directory: {e}")))?;
            let names = listed(&fd, &shown, &rel)?;
            if let Some(deeper) = names.last().filter(|_| stack.len() >= DEPTH_MAX) {
                return Err(ImageError::at(
                    &shown,
                    format!("{rel}/{}", String::from_utf8_lossy(deeper)),
                    format!("deeper than {DEPTH_MAX} components, the most a layer may have"),
                ));
            }
            stack.push(Frame { fd, rel, names });
        }
    }
    Ok(FlatLayer { root, entries })
}

/// The names of a directory, last first (they are popped).
fn listed(fd: &OwnedFd, shown: &str, rel: &str) -> Result<Vec<Vec<u8>>, ImageError> {
    let mut names =
        list(fd, &format!("{shown}{rel}")).map_err(|e| ImageError::at(shown, display(rel), e.to_string()))?;
    names.reverse();
    Ok(names)
}

fn display(rel: &str) -> String {
    if rel.is_empty() {
        "/".to_owned()
    } else {
        rel.to_owned()
    }
}

/// The xattrs of `name` in `dir`, not following it, the kernel's bookkeeping left out.
fn xattrs_of(dir: BorrowedFd<'_>, name: &str, shown: &str, rel: &str) -> Result<BTreeMap<String, Vec<u8>>, ImageError> {
    let at = |m: String| ImageError::at(shown, display(rel), m);
    let node = format!("/proc/self/fd/{}/{name}", dir.as_raw_fd());
    let mut buf = vec![0u8; XATTR_MAX];
    let n = rustix::fs::llistxattr(node.as_str(), &mut buf[..]).map_err(|e| at(format!("llistxattr: {e}")))?;
    let names: Vec<String> = buf[..n]
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8(s.to_vec()).map_err(|_| at(format!("an xattr name is not UTF-8: {s:?}"))))
        .collect::<Result<_, _>>()?;
    let mut out = BTreeMap::new();
    for x in names {
        if is_bookkeeping(&x) {
            continue;
        }
        let n = rustix::fs::lgetxattr(node.as_str(), x.as_str(), &mut buf[..])
            .map_err(|e| at(format!("lgetxattr {x:?}: {e}")))?;
        out.insert(x, buf[..n].to_vec());
    }
    Ok(out)
}
