//! Layer directories on the worker's tmpfs: building them from a [`FlatLayer`], offline
//! edits, and reading them back.
//!
//! Nothing here follows a symlink. Directories are opened one component at a time with
//! `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV)`
//! from the layer directory, and nodes are made, changed and read with `*at` calls that do
//! not follow (`AT_SYMLINK_NOFOLLOW`, `O_NOFOLLOW`). The xattr calls take a path; they use
//! the `l*` forms on a path whose directories were all just checked to be real directories,
//! in a single-threaded process that nothing else writes to.

use crate::backend::BackendError;
use crate::layer::{FileData, FileType, FlatEntry, FlatLayer, FlatNode};
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags, XattrFlags, CWD};
use rustix::io::Errno as SysErrno;
use std::collections::{BTreeMap, HashMap};
use std::mem::MaybeUninit;

/// The kernel's bookkeeping xattrs (after `trusted.overlay.` or `user.overlay.`), left out
/// of dumps.
const BOOKKEEPING: [&str; 3] = ["origin", "impure", "uuid"];

/// The largest xattr value and name list (`XATTR_SIZE_MAX`, `XATTR_LIST_MAX`).
pub(super) const XATTR_MAX: usize = 65536;

/// Whether `name` is one of the kernel's bookkeeping xattrs that dumps leave out.
pub(crate) fn is_bookkeeping(name: &str) -> bool {
    ["trusted.overlay.", "user.overlay."]
        .iter()
        .any(|prefix| name.strip_prefix(prefix).is_some_and(|rest| BOOKKEEPING.contains(&rest)))
}

fn failed(msg: String) -> BackendError {
    BackendError::Failed(msg)
}

/// Wraps a syscall error with what was done and where.
fn sys<T>(r: rustix::io::Result<T>, what: &str, path: &str) -> Result<T, BackendError> {
    r.map_err(|e| failed(format!("{what} {path}: {e}")))
}

/// Wraps the error of a call that makes a node or sets its metadata: the layer cannot hold
/// it, and the errno is the kernel's answer ([`BackendError::Refused`]).
fn made<T>(r: rustix::io::Result<T>, what: &str, path: &str) -> Result<T, BackendError> {
    r.map_err(|e| match crate::errno::Errno::from_code(e.raw_os_error()) {
        Some(errno) => BackendError::Refused(errno, format!("{what} {path}: {e}")),
        None => failed(format!("{what} {path}: {e}")),
    })
}

/// The components of a layer path; `.` and `..` cannot be names in a layer.
fn components(path: &str) -> Result<Vec<&str>, BackendError> {
    if path.contains('\0') {
        // No syscall can pass the name (rustix: EINVAL).
        return Err(BackendError::Refused(
            crate::errno::Errno::EINVAL,
            format!("layer path {path:?} contains a NUL byte"),
        ));
    }
    let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    if comps.iter().any(|c| *c == "." || *c == "..") {
        return Err(BackendError::Usage(format!(
            "layer path {path:?} has a `.` or `..` component, which no directory can hold"
        )));
    }
    Ok(comps)
}

/// Opens the directory `name` in `dir`, refusing any symlink on the way.
pub(crate) fn open_dir_at(dir: impl AsFd, name: &str) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat2(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS | ResolveFlags::NO_XDEV,
    )
}

/// Opens a layer directory by its absolute path on the tmpfs.
fn open_layer(dir: &str) -> Result<OwnedFd, BackendError> {
    sys(
        rustix::fs::open(dir, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC, Mode::empty()),
        "opening layer",
        dir,
    )
}

/// `st_mode` as a `u32` (its type differs between architectures).
#[allow(clippy::unnecessary_cast)]
pub(crate) fn mode_of(st: &rustix::fs::Stat) -> u32 {
    st.st_mode as u32
}

fn is_dir(st: &rustix::fs::Stat) -> bool {
    FileType::from_ifmt(mode_of(st)) == Some(FileType::Dir)
}

/// `lstat` of `name` in `dir`; `None` if it does not exist.
fn lstat_at(dir: impl AsFd, name: &str, shown: &str) -> Result<Option<rustix::fs::Stat>, BackendError> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(SysErrno::NOENT) => Ok(None),
        // A name the directory cannot hold (ENAMETOOLONG) is the layer's refusal.
        Err(e @ SysErrno::NAMETOOLONG) => made(Err(e), "lstat", shown),
        Err(e) => Err(failed(format!("lstat {shown}: {e}"))),
    }
}

/// The names in directory `dir`, without `.` and `..`, in byte order.
pub(crate) fn list(dir: impl AsFd, shown: &str) -> Result<Vec<Vec<u8>>, BackendError> {
    let mut buf = vec![MaybeUninit::<u8>::uninit(); 1 << 16];
    let mut raw = rustix::fs::RawDir::new(dir, &mut buf);
    let mut names = Vec::new();
    while let Some(entry) = raw.next() {
        let entry = sys(entry, "getdents", shown)?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    }
    names.sort();
    Ok(names)
}

/// Removes `name` from `dir`, recursively. Returns whether something was there.
fn remove_entry(dir: BorrowedFd<'_>, name: &str, shown: &str) -> Result<bool, BackendError> {
    let Some(st) = lstat_at(dir, name, shown)? else {
        return Ok(false);
    };
    if is_dir(&st) {
        let sub = sys(open_dir_at(dir, name), "opening", shown)?;
        for child in list(&sub, shown)? {
            let child = String::from_utf8(child)
                .map_err(|e| failed(format!("a name in {shown} is not UTF-8: {:?}", e.as_bytes())))?;
            remove_entry(sub.as_fd(), &child, &format!("{shown}/{child}"))?;
        }
        sys(rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR), "rmdir", shown)?;
    } else {
        sys(rustix::fs::unlinkat(dir, name, AtFlags::empty()), "unlink", shown)?;
    }
    Ok(true)
}

/// Removes the tree at the absolute tmpfs path `abs`, if there is one.
pub(super) fn remove_dir(abs: &str) -> Result<(), BackendError> {
    let (parent, name) = abs.rsplit_once('/').ok_or_else(|| failed(format!("not an absolute path: {abs}")))?;
    let parent_fd = open_layer(if parent.is_empty() { "/" } else { parent })?;
    remove_entry(parent_fd.as_fd(), name, abs)?;
    Ok(())
}

/// Walks `parents` from `layer`, making missing directories (mode 0755) and replacing
/// non-directories with them, as [`crate::layer::Layer::put`] does.
fn make_parents(layer: &OwnedFd, abs: &str, parents: &[&str]) -> Result<OwnedFd, BackendError> {
    let mut cur = sys(open_dir_at(layer, "."), "opening", abs)?;
    let mut shown = abs.to_owned();
    for c in parents {
        shown.push('/');
        shown.push_str(c);
        match lstat_at(&cur, c, &shown)? {
            Some(st) if is_dir(&st) => {}
            other => {
                if other.is_some() {
                    remove_entry(cur.as_fd(), c, &shown)?;
                }
                sys(rustix::fs::mkdirat(&cur, *c, Mode::from_raw_mode(0o755)), "mkdir", &shown)?;
            }
        }
        cur = sys(open_dir_at(&cur, c), "opening", &shown)?;
    }
    Ok(cur)
}

/// Walks `parents` from `layer` through existing directories only; `None` when one is
/// missing or is not a directory.
fn walk_existing(layer: &OwnedFd, abs: &str, parents: &[&str]) -> Result<Option<OwnedFd>, BackendError> {
    let mut cur = sys(open_dir_at(layer, "."), "opening", abs)?;
    let mut shown = abs.to_owned();
    for c in parents {
        shown.push('/');
        shown.push_str(c);
        match lstat_at(&cur, c, &shown)? {
            Some(st) if is_dir(&st) => {
                cur = sys(open_dir_at(&cur, c), "opening", &shown)?;
            }
            _ => return Ok(None),
        }
    }
    Ok(Some(cur))
}

fn join(abs: &str, comps: &[&str]) -> String {
    let mut s = abs.to_owned();
    for c in comps {
        s.push('/');
        s.push_str(c);
    }
    s
}

/// Sets owner, mode (not on a symlink) and xattrs, in that order: `chown` clears the
/// set-id bits, so `chmod` comes after it.
fn set_meta(dir: BorrowedFd<'_>, name: &str, abs: &str, node: &FlatNode) -> Result<(), BackendError> {
    made(
        rustix::fs::chownat(
            dir,
            name,
            Some(rustix::fs::Uid::from_raw_unchecked(node.uid)),
            Some(rustix::fs::Gid::from_raw_unchecked(node.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        ),
        "lchown",
        abs,
    )?;
    if node.kind != FileType::Symlink {
        made(rustix::fs::chmodat(dir, name, Mode::from_raw_mode(node.mode & 0o7777), AtFlags::empty()), "chmod", abs)?;
    }
    in_dir(dir, abs, || {
        for (k, v) in &node.xattrs {
            made(rustix::fs::lsetxattr(name, k.as_str(), v, XattrFlags::empty()), &format!("lsetxattr {k:?} on"), abs)?;
        }
        if !node.xattrs.is_empty() {
            // tmpfs holds more names than `listxattr` can list (E2BIG): such a node cannot be
            // read back, nor copied up.
            let mut buf = vec![0u8; XATTR_MAX];
            made(rustix::fs::llistxattr(name, &mut buf[..]), "llistxattr", abs)?;
        }
        Ok(())
    })?
}

/// Runs `f` with the working directory set to `dir`, so that the xattr calls, which take
/// only a path, can name a node by its name in `dir`: an absolute path to a node deeper
/// than `PATH_MAX` (4,096 bytes) would fail with `ENAMETOOLONG`. The worker is
/// single-threaded, and the working directory is put back before returning.
fn in_dir<T>(dir: BorrowedFd<'_>, abs: &str, f: impl FnOnce() -> T) -> Result<T, BackendError> {
    use rustix::fd::AsRawFd;
    if dir.as_raw_fd() == CWD.as_raw_fd() {
        return Ok(f());
    }
    let back = sys(
        rustix::fs::open(".", OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()),
        "open the working directory for",
        abs,
    )?;
    sys(rustix::process::fchdir(dir), "fchdir to the parent of", abs)?;
    let r = f();
    sys(rustix::process::fchdir(&back), "fchdir back from the parent of", abs)?;
    Ok(r)
}

/// Writes a new regular file's data as a sparse file: each extent with `pwrite`, then
/// `ftruncate` to the length, so that holes stay holes.
fn write_data(fd: &OwnedFd, data: Option<&FileData>, abs: &str) -> Result<(), BackendError> {
    let Some(data) = data else {
        return Ok(());
    };
    for (offset, mut bytes) in data.extents() {
        let mut at = offset;
        while !bytes.is_empty() {
            let n = made(rustix::io::pwrite(fd, bytes, at), "write", abs)?;
            bytes = &bytes[n..];
            at += n as u64;
        }
    }
    made(rustix::fs::ftruncate(fd, data.len()), "truncate", abs)
}

/// Calls `f` on each data region of the open regular file `fd` of length `size`, in
/// order, as (offset, bytes) pieces of at most 1 MiB: the regions `SEEK_DATA`/`SEEK_HOLE`
/// find, so that the holes of a sparse file are never read.
///
/// tmpfs's `SEEK_DATA` never finds the last page an `loff_t` can address (from
/// `i64::MAX - 4095`; seen on Linux 6.18: a byte written at `i64::MAX - 1` is data to
/// `pread` but `SEEK_DATA` answers ENXIO), so that page, if the file reaches it, is read
/// whole with `pread` after the regions found.
pub(super) fn for_each_data(fd: &OwnedFd, size: u64, mut f: impl FnMut(u64, &[u8])) -> rustix::io::Result<()> {
    use rustix::fs::SeekFrom;
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0u64;
    while pos < size {
        let data = match rustix::fs::seek(fd, SeekFrom::Data(pos)) {
            Ok(d) => d,
            Err(SysErrno::NXIO) => break,
            Err(e) => return Err(e),
        };
        let hole = rustix::fs::seek(fd, SeekFrom::Hole(data))?;
        let mut at = data;
        while at < hole {
            let want = ((hole - at) as usize).min(buf.len());
            let n = rustix::io::pread(fd, &mut buf[..want], at)?;
            if n == 0 {
                return Ok(());
            }
            f(at, &buf[..n]);
            at += n as u64;
        }
        pos = hole;
    }
    let last_page = (i64::MAX as u64) & !4095;
    let mut at = pos.max(last_page);
    while at < size {
        let want = ((size - at) as usize).min(buf.len());
        let n = rustix::io::pread(fd, &mut buf[..want], at)?;
        if n == 0 {
            break;
        }
        f(at, &buf[..n]);
        at += n as u64;
    }
    Ok(())
}

/// Reads the data of the open regular file `fd` of length `size`, its holes left holes.
fn read_data(fd: &OwnedFd, size: u64, abs: &str) -> Result<FileData, BackendError> {
    let mut data = FileData::hole(size);
    sys(for_each_data(fd, size, |at, bytes| data.write(at, bytes)), "read", abs)?;
    // The file cannot change while the worker reads it; a region past `size` would.
    data.truncate(size);
    Ok(data)
}

/// Makes `node` as `name` in `dir` (which has no such name), with its metadata.
fn create(dir: BorrowedFd<'_>, name: &str, abs: &str, node: &FlatNode) -> Result<(), BackendError> {
    let mode = Mode::from_raw_mode(node.mode & 0o7777);
    let (maj, min) = node.rdev.unwrap_or((0, 0));
    match node.kind {
        FileType::Dir => made(rustix::fs::mkdirat(dir, name, mode), "mkdir", abs)?,
        FileType::File => {
            let fd = made(
                rustix::fs::openat(
                    dir,
                    name,
                    OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                ),
                "create",
                abs,
            )?;
            write_data(&fd, node.data.as_ref(), abs)?;
        }
        FileType::Symlink => {
            made(rustix::fs::symlinkat(node.target.as_deref().unwrap_or_default(), dir, name), "symlink", abs)?
        }
        FileType::Char | FileType::Block | FileType::Fifo => {
            let ft = match node.kind {
                FileType::Char => rustix::fs::FileType::CharacterDevice,
                FileType::Block => rustix::fs::FileType::BlockDevice,
                _ => rustix::fs::FileType::Fifo,
            };
            let dev = if node.kind == FileType::Fifo { 0 } else { rustix::fs::makedev(maj, min) };
            made(rustix::fs::mknodat(dir, name, ft, mode, dev), "mknod", abs)?;
        }
    }
    set_meta(dir, name, abs, node)
}

fn put_at(layer: &OwnedFd, abs: &str, path: &str, node: &FlatNode) -> Result<(), BackendError> {
    let comps = components(path)?;
    let Some((name, parents)) = comps.split_last() else {
        return Err(BackendError::Usage("a node needs a path below the layer root".into()));
    };
    let parent = make_parents(layer, abs, parents)?;
    let shown = join(abs, &comps);
    remove_entry(parent.as_fd(), name, &shown)?;
    let made = create(parent.as_fd(), name, &shown, node);
    if let Err(BackendError::Refused(..)) = made {
        // A node whose metadata was refused is not left half made.
        remove_entry(parent.as_fd(), name, &shown)?;
    }
    made
}

fn put_link_at(layer: &OwnedFd, abs: &str, path: &str, to: &str) -> Result<bool, BackendError> {
    let to_comps = components(to)?;
    let Some((to_name, to_parents)) = to_comps.split_last() else {
        return Ok(false);
    };
    let Some(to_dir) = walk_existing(layer, abs, to_parents)? else {
        return Ok(false);
    };
    let to_shown = join(abs, &to_comps);
    match lstat_at(&to_dir, to_name, &to_shown)? {
        Some(st) if !is_dir(&st) => {}
        _ => return Ok(false),
    }
    let comps = components(path)?;
    let Some((name, parents)) = comps.split_last() else {
        return Err(BackendError::Usage("a link needs a path below the layer root".into()));
    };
    if comps == to_comps {
        return Ok(true);
    }
    let parent = make_parents(layer, abs, parents)?;
    let shown = join(abs, &comps);
    remove_entry(parent.as_fd(), name, &shown)?;
    sys(
        rustix::fs::linkat(&to_dir, *to_name, &parent, *name, AtFlags::empty()),
        &format!("link {to_shown} as"),
        &shown,
    )?;
    Ok(true)
}

/// Creates the layer directory `abs` with `flat`'s content, as
/// [`crate::layer::Layer::from_flat`] does: entries in order, each put with its parents,
/// a link to a missing or directory target skipped; the root's metadata on `abs` itself.
pub(super) fn build(abs: &str, flat: &FlatLayer) -> Result<(), BackendError> {
    sys(rustix::fs::mkdirat(CWD, abs, Mode::from_raw_mode(0o755)), "mkdir", abs)?;
    let layer = open_layer(abs)?;
    for entry in &flat.entries {
        match entry {
            FlatEntry::Node { path, node } => put_at(&layer, abs, path, node)?,
            FlatEntry::Link { path, to } => {
                put_link_at(&layer, abs, path, to)?;
            }
        }
    }
    let mut root = flat.root.clone();
    root.kind = FileType::Dir;
    set_meta(CWD, abs, abs, &root)
}

/// [`crate::backend::Edit::Put`] on the layer at `abs`.
pub(super) fn put(abs: &str, path: &str, node: &FlatNode) -> Result<(), BackendError> {
    put_at(&open_layer(abs)?, abs, path, node)
}

/// [`crate::backend::Edit::Link`] on the layer at `abs`; `false` when `to` is missing or a
/// directory.
pub(super) fn put_link(abs: &str, path: &str, to: &str) -> Result<bool, BackendError> {
    put_link_at(&open_layer(abs)?, abs, path, to)
}

/// [`crate::backend::Edit::Remove`] on the layer at `abs`: whatever is at `path`, if
/// anything, recursively.
pub(super) fn remove(abs: &str, path: &str) -> Result<(), BackendError> {
    let layer = open_layer(abs)?;
    let comps = components(path)?;
    let Some((name, parents)) = comps.split_last() else {
        return Ok(());
    };
    if let Some(dir) = walk_existing(&layer, abs, parents)? {
        remove_entry(dir.as_fd(), name, &join(abs, &comps))?;
    }
    Ok(())
}

/// The xattrs of the node `name` in `dir` (at `abs`, not following a symlink), bookkeeping
/// left out.
fn xattrs_of(dir: BorrowedFd<'_>, name: &str, abs: &str) -> Result<BTreeMap<String, Vec<u8>>, BackendError> {
    in_dir(dir, abs, || xattrs_here(name, abs))?
}

/// [`xattrs_of`] for `name` relative to the working directory.
fn xattrs_here(node: &str, abs: &str) -> Result<BTreeMap<String, Vec<u8>>, BackendError> {
    let mut buf = vec![0u8; XATTR_MAX];
    let n = sys(rustix::fs::llistxattr(node, &mut buf[..]), "llistxattr", abs)?;
    let names: Vec<String> = buf[..n]
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| {
            String::from_utf8(s.to_vec()).map_err(|_| failed(format!("an xattr name on {abs} is not UTF-8: {s:?}")))
        })
        .collect::<Result<_, _>>()?;
    let mut out = BTreeMap::new();
    for x in names {
        if is_bookkeeping(&x) {
            continue;
        }
        let n = sys(rustix::fs::lgetxattr(node, x.as_str(), &mut buf[..]), &format!("lgetxattr {x:?} of"), abs)?;
        out.insert(x, buf[..n].to_vec());
    }
    Ok(out)
}

/// The flat node for `name` in `dir` (at `abs`), whose `lstat` is `st` and whose xattrs
/// are `xattrs`. Only a regular file is opened (`O_NOFOLLOW | O_NONBLOCK`); a device or a
/// FIFO is described by its `lstat` alone.
pub(crate) fn node_of(
    dir: BorrowedFd<'_>,
    name: &str,
    abs: &str,
    st: &rustix::fs::Stat,
    xattrs: BTreeMap<String, Vec<u8>>,
) -> Result<FlatNode, BackendError> {
    let kind = FileType::from_ifmt(mode_of(st)).ok_or_else(|| {
        failed(format!("{abs} has file type {:o}, which a layer cannot hold", mode_of(st) & 0o170000))
    })?;
    let mut node = FlatNode {
        kind,
        mode: mode_of(st) & 0o7777,
        uid: st.st_uid,
        gid: st.st_gid,
        data: None,
        target: None,
        rdev: None,
        xattrs,
    };
    match kind {
        FileType::File => {
            let fd = sys(
                rustix::fs::openat(
                    dir,
                    name,
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
                    Mode::empty(),
                ),
                "open",
                abs,
            )?;
            node.data = Some(read_data(&fd, st.st_size as u64, abs)?);
        }
        FileType::Symlink => {
            let t = sys(rustix::fs::readlinkat(dir, name, Vec::new()), "readlink", abs)?;
            node.target = Some(
                t.into_string()
                    .map_err(|e| failed(format!("the target of {abs} is not UTF-8: {:?}", e.into_cstring())))?,
            );
        }
        FileType::Char | FileType::Block => {
            node.rdev = Some((rustix::fs::major(st.st_rdev), rustix::fs::minor(st.st_rdev)));
        }
        FileType::Dir | FileType::Fifo => {}
    }
    Ok(node)
}

type Seen = HashMap<(u64, u64), String>;

fn dump_dir(
    dir: &OwnedFd,
    abs: &str,
    rel: &str,
    out: &mut Vec<FlatEntry>,
    seen: &mut Seen,
) -> Result<(), BackendError> {
    for name in list(dir, abs)? {
        let name =
            String::from_utf8(name).map_err(|e| failed(format!("a name in {abs} is not UTF-8: {:?}", e.as_bytes())))?;
        let path = format!("{rel}/{name}");
        let child_abs = format!("{abs}/{name}");
        let st = sys(rustix::fs::statat(dir, name.as_str(), AtFlags::SYMLINK_NOFOLLOW), "lstat", &child_abs)?;
        let whiteout = FileType::from_ifmt(mode_of(&st)) == Some(FileType::Char) && st.st_rdev == 0;
        if !is_dir(&st) && !whiteout && st.st_nlink > 1 {
            let key = (st.st_dev, st.st_ino);
            if let Some(to) = seen.get(&key) {
                out.push(FlatEntry::Link { path, to: to.clone() });
                continue;
            }
            seen.insert(key, path.clone());
        }
        let node = node_of(dir.as_fd(), &name, &child_abs, &st, xattrs_of(dir.as_fd(), &name, &child_abs)?)?;
        let descend = node.kind == FileType::Dir;
        out.push(FlatEntry::Node { path: path.clone(), node });
        if descend {
            let sub = sys(open_dir_at(dir, &name), "opening", &child_abs)?;
            dump_dir(&sub, &child_abs, &path, out, seen)?;
        }
    }
    Ok(())
}

/// Reads the layer directory `abs` back, as [`crate::layer::Layer::to_flat`] would show it
/// (see the module docs of [`crate::kernel`] for what is normalised).
pub(super) fn dump(abs: &str) -> Result<FlatLayer, BackendError> {
    let layer = open_layer(abs)?;
    let st = sys(rustix::fs::statat(CWD, abs, AtFlags::SYMLINK_NOFOLLOW), "lstat", abs)?;
    let root = node_of(CWD, abs, abs, &st, xattrs_of(CWD, abs, abs)?)?;
    let mut entries = Vec::new();
    dump_dir(&layer, abs, "", &mut entries, &mut Seen::new())?;
    Ok(FlatLayer { root, entries })
}

/// Writing the model's upper through to a real upper directory, entry by entry, for
/// `ovlsim mount` ([`crate::fuse`]). Each new or replaced entry is made under a temporary
/// name in its parent directory, its data and metadata written, and then renamed over its
/// name, so that a crash never leaves a half-written entry under a real name. A directory
/// that stays a directory is changed in place (owner, mode, xattrs), its children kept.
#[cfg(feature = "fuse")]
pub(crate) mod through {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A name for an entry being written, unique in this process.
    fn temp_name() -> String {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        format!(".ovlsim-tmp.{}.{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed))
    }

    /// The parent directory of `path` in the layer at `abs`, which must exist, and the
    /// last component.
    fn parent_of<'p>(abs: &str, path: &'p str) -> Result<(OwnedFd, &'p str, String), BackendError> {
        let layer = open_layer(abs)?;
        let comps = components(path)?;
        let Some((name, parents)) = comps.split_last() else {
            return Err(BackendError::Usage("an entry needs a path below the layer root".into()));
        };
        let shown = join(abs, &comps);
        let dir = walk_existing(&layer, abs, parents)?
            .ok_or_else(|| failed(format!("the parent directory of {shown} is missing")))?;
        Ok((dir, name, shown))
    }

    /// Renames the temporary `tmp` over `name` in `dir`; an entry there that is a
    /// directory, or that a directory replaces, is removed first (`rename(2)` cannot
    /// replace across the two kinds, nor a non-empty directory).
    fn rename_over(dir: &OwnedFd, tmp: &str, name: &str, shown: &str, is_dir_new: bool) -> Result<(), BackendError> {
        if let Some(st) = lstat_at(dir, name, shown)? {
            if is_dir(&st) || is_dir_new {
                remove_entry(dir.as_fd(), name, shown)?;
            }
        }
        sys(rustix::fs::renameat(dir, tmp, dir, name), "rename into place", shown)
    }

    /// Makes `node` at `path` (its parent exists), replacing whatever is there.
    pub(crate) fn put(abs: &str, path: &str, node: &FlatNode) -> Result<(), BackendError> {
        let (dir, name, shown) = parent_of(abs, path)?;
        let tmp = temp_name();
        if let Err(e) = create(dir.as_fd(), &tmp, &shown, node) {
            let _ = remove_entry(dir.as_fd(), &tmp, &shown);
            return Err(e);
        }
        rename_over(&dir, &tmp, name, &shown, node.kind == FileType::Dir)
    }

    /// Makes `path` another name of the node at `to`, replacing whatever is at `path`.
    pub(crate) fn link(abs: &str, path: &str, to: &str) -> Result<(), BackendError> {
        let (to_dir, to_name, to_shown) = parent_of(abs, to)?;
        let (dir, name, shown) = parent_of(abs, path)?;
        let tmp = temp_name();
        sys(
            rustix::fs::linkat(&to_dir, to_name, &dir, tmp.as_str(), AtFlags::empty()),
            &format!("link {to_shown} as"),
            &shown,
        )?;
        rename_over(&dir, &tmp, name, &shown, false)
    }

    /// Sets the owner, mode and xattrs of the directory at `path` (`""`: the layer root)
    /// to `new`'s, in place, removing the xattrs `old` has and `new` has not.
    pub(crate) fn set_dir_meta(abs: &str, path: &str, old: &FlatNode, new: &FlatNode) -> Result<(), BackendError> {
        let gone: Vec<&String> = old.xattrs.keys().filter(|k| !new.xattrs.contains_key(*k)).collect();
        let apply = |dir: BorrowedFd<'_>, name: &str, shown: &str| -> Result<(), BackendError> {
            set_meta(dir, name, shown, new)?;
            in_dir(dir, shown, || {
                for k in &gone {
                    sys(rustix::fs::lremovexattr(name, k.as_str()), &format!("lremovexattr {k:?} of"), shown)?;
                }
                Ok(())
            })?
        };
        if path.split('/').all(str::is_empty) {
            return apply(CWD, abs, abs);
        }
        let (dir, name, shown) = parent_of(abs, path)?;
        apply(dir.as_fd(), name, &shown)
    }

    /// Removes whatever is at `path`, recursively.
    pub(crate) fn remove(abs: &str, path: &str) -> Result<(), BackendError> {
        super::remove(abs, path)
    }
}

/// Reads the workdir's `index/` at `abs` as [`crate::backend::Reply::Index`] reports it
/// (`None` when there is none). An entry's name is the hex of an overlay file handle
/// (`struct ovl_fb`: version, magic `0xfb`, length, flags, type, the 16-byte uuid, then the
/// layer's own handle; tmpfs's is the generation, then the inode number as two 32-bit
/// words: `shmem_encode_fh`); it is shown as `LAYER:/path`, the first layer of `layers`
/// (name, directory) holding that inode number, and its first path in byte order (`?` when
/// none does, or the name is not such a handle). Names starting with `#` (the kernel's
/// temporary files and shared whiteout: the index is also the workdir) are left out.
pub(super) fn dump_index(
    abs: &str,
    layers: &[(String, String)],
) -> Result<Option<BTreeMap<String, String>>, BackendError> {
    let read = match std::fs::read_dir(abs) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(failed(format!("reading {abs}: {e}"))),
    };
    let mut out = BTreeMap::new();
    for entry in read {
        let entry = entry.map_err(|e| failed(format!("reading {abs}: {e}")))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('#') {
            continue;
        }
        let meta = entry.metadata().map_err(|e| failed(format!("lstat {abs}/{name}: {e}")))?;
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let kind = match meta.file_type() {
            t if t.is_char_device() && meta.rdev() == 0 => "whiteout",
            t if t.is_dir() => "dir",
            _ => "file",
        };
        let key = index_ino(&name)
            .and_then(|ino| {
                layers.iter().find_map(|(lname, dir)| {
                    let mut found = Vec::new();
                    paths_of_ino(dir, "", ino, &mut found);
                    found.into_iter().min().map(|p| format!("{lname}:{p}"))
                })
            })
            .unwrap_or_else(|| "?".to_owned());
        out.insert(key, kind.to_owned());
    }
    Ok(Some(out))
}

/// The tmpfs inode number in an index entry's name (see [`dump_index`]).
fn index_ino(name: &str) -> Option<u64> {
    const HEADER: usize = 5 + 16;
    let bytes = crate::hex::decode(name)?;
    if bytes.len() != HEADER + 12 || bytes[1] != 0xfb {
        return None;
    }
    let word = |at: usize| u64::from(u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes")));
    Some(word(HEADER + 4) | (word(HEADER + 8) << 32))
}

/// Every path below directory `dir` (shown relative to it, under `rel`) whose inode number
/// is `ino`; symlinks are not followed.
fn paths_of_ino(dir: &str, rel: &str, ino: u64, out: &mut Vec<String>) {
    use std::os::unix::fs::MetadataExt;
    let Ok(read) = std::fs::read_dir(format!("{dir}{rel}")) else { return };
    for entry in read.flatten() {
        let path = format!("{rel}/{}", entry.file_name().to_string_lossy());
        let Ok(meta) = entry.metadata() else { continue };
        if meta.ino() == ino {
            out.push(path.clone());
        }
        if meta.file_type().is_dir() {
            paths_of_ino(dir, &path, ino, out);
        }
    }
}

#[cfg(test)]
mod index_tests {
    use super::index_ino;

    #[test]
    fn an_index_name_gives_the_tmpfs_inode_number() {
        // Seen on 6.18: the index entry of a lower hard link with st_ino 7.
        assert_eq!(index_ino("00fb210001c29a9f3bd8724d538d71e3269318181c875c04180700000000000000"), Some(7));
        assert_eq!(index_ino("00fb210001c29a9f3bd8724d538d71e3269318181c875c0418070000000000000100"), None);
        assert_eq!(index_ino("#2e833a"), None);
        assert_eq!(index_ino("00fa210001c29a9f3bd8724d538d71e3269318181c875c04180700000000000000"), None);
    }
}
