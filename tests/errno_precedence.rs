//! The precedence of errno, operation by operation: one row per conflict, each naming the
//! errno the kernel returns first. Every row runs on the model and, when the process is
//! root, on a real overlay mount too, and both must give the row's errno. The rows were
//! recorded from Linux 6.18 (see tests/errno_precedence.rs history and spec/).

use ovlsim::backend::{Backend, Command, ModelBackend, Reply};
use ovlsim::layer::{FlatLayer, Inode, Layer};
use ovlsim::ops::{Access, MknodKind, OpenFlags, RenameFlags, WriteAt};
use ovlsim::{Errno, Op, Options, Outcome, RedirectDir};

mod common;

/// Which mount a row runs on.
#[derive(Clone, Copy, Debug)]
enum Mount {
    /// Upper over L0 over L1, default options.
    Rw,
    /// L0 over L1, no upper: read-only.
    NoUpper,
    /// Upper over L0 over L1, mounted read-only.
    ReadOnly,
    /// Upper over L0 over L1 with `redirect_dir=on`.
    Redirect,
}

/// The fixture every row starts from.
fn layers() -> (Layer, Layer, Layer) {
    let mut l1 = Layer::new();
    l1.put("/f", Inode::file(b"l1", 0o644));
    l1.put("/d/y", Inode::file(b"y", 0o644));
    l1.put("/ld/a", Inode::file(b"a", 0o644));
    l1.put("/ld/sub/b", Inode::file(b"b", 0o644));
    l1.put("/emptyd", Inode::dir(0o755));
    l1.put("/hidden", Inode::file(b"h", 0o644));
    l1.put("/sym", Inode::symlink("f"));
    l1.put("/loop", Inode::symlink("loop"));
    l1.put("/fifo", Inode::new(ovlsim::layer::NodeKind::Fifo, 0o644));
    let mut l0 = Layer::new();
    l0.put("/f", Inode::file(b"l0", 0o644));
    l0.put("/d/x", Inode::file(b"x", 0o644));
    l0.put("/hidden", Inode::whiteout());
    let mut up = Layer::new();
    up.put("/u", Inode::file(b"u", 0o644));
    up.put("/ud/z", Inode::file(b"z", 0o644));
    up.put("/empty_ud", Inode::dir(0o755));
    up.put("/d/u", Inode::file(b"u", 0o644));
    let opq = up.put("/opq", Inode::dir(0o755));
    up.set_xattr(opq, "trusted.overlay.opaque", b"y");
    (l0, l1, up)
}

fn p(s: &str) -> String {
    s.to_owned()
}

fn open(path: &str, f: impl FnOnce(&mut OpenFlags)) -> Op {
    let mut flags = OpenFlags::default();
    f(&mut flags);
    Op::Open { path: p(path), flags, mode: 0o644 }
}

fn rename(from: &str, to: &str, f: impl FnOnce(&mut RenameFlags)) -> Op {
    let mut flags = RenameFlags::default();
    f(&mut flags);
    Op::Rename { from: p(from), to: p(to), flags }
}

/// The rows: mount, operation, the errno the kernel returns.
fn rows() -> Vec<(Mount, Op, Errno)> {
    use Errno::*;
    use Mount::*;
    let long = "n".repeat(256);
    vec![
        // stat: the walk's errors.
        (Rw, Op::Stat { path: p("/hidden") }, ENOENT),
        (Rw, Op::Stat { path: p("/f/x") }, ENOTDIR),
        (Rw, Op::Stat { path: p("/f/") }, ENOTDIR),
        (Rw, Op::Stat { path: p("/missing/x") }, ENOENT),
        (Rw, Op::Stat { path: format!("/{long}") }, ENAMETOOLONG),
        (Rw, Op::Stat { path: p("/loop") }, ELOOP),
        (Rw, Op::Stat { path: p("") }, ENOENT),
        (Rw, Op::Lstat { path: p("/sym/") }, ENOTDIR),
        // mkdir: EEXIST before EROFS; the walk before both.
        (NoUpper, Op::Mkdir { path: p("/f"), mode: 0o755 }, EEXIST),
        (NoUpper, Op::Mkdir { path: p("/new"), mode: 0o755 }, EROFS),
        (ReadOnly, Op::Mkdir { path: p("/d"), mode: 0o755 }, EEXIST),
        (ReadOnly, Op::Mkdir { path: p("/new"), mode: 0o755 }, EROFS),
        (NoUpper, Op::Mkdir { path: p("/missing/new"), mode: 0o755 }, ENOENT),
        (Rw, Op::Mkdir { path: p("/"), mode: 0o755 }, EEXIST),
        (Rw, Op::Mkdir { path: p("/d/.."), mode: 0o755 }, EEXIST),
        (Rw, Op::Mkdir { path: p("/f/new"), mode: 0o755 }, ENOTDIR),
        (Rw, Op::Mkdir { path: p("/f/"), mode: 0o755 }, EEXIST),
        (NoUpper, Op::Mkdir { path: format!("/{long}"), mode: 0o755 }, ENAMETOOLONG),
        // mknod and symlink: EEXIST, then overlay's own refusal of a whiteout.
        (Rw, Op::Mknod { path: p("/f"), kind: MknodKind::Char(0, 0), mode: 0o644 }, EEXIST),
        (Rw, Op::Mknod { path: p("/wo"), kind: MknodKind::Char(0, 0), mode: 0o644 }, EPERM),
        (NoUpper, Op::Mknod { path: p("/n"), kind: MknodKind::Fifo, mode: 0o644 }, EROFS),
        (Rw, Op::Mknod { path: p("/n/"), kind: MknodKind::Fifo, mode: 0o644 }, ENOENT),
        (Rw, Op::Symlink { target: p(""), path: p("/f") }, ENOENT),
        (NoUpper, Op::Symlink { target: p("x"), path: p("/f") }, EEXIST),
        (NoUpper, Op::Symlink { target: p("x"), path: p("/s2") }, EROFS),
        // unlink: EROFS before the name is even looked up.
        (NoUpper, Op::Unlink { path: p("/missing") }, EROFS),
        (NoUpper, Op::Unlink { path: p("/missing/x") }, ENOENT),
        (Rw, Op::Unlink { path: p("/missing") }, ENOENT),
        (Rw, Op::Unlink { path: p("/hidden") }, ENOENT),
        (Rw, Op::Unlink { path: p("/d") }, EISDIR),
        (Rw, Op::Unlink { path: p("/f/") }, ENOTDIR),
        (Rw, Op::Unlink { path: p("/d/") }, EISDIR),
        (Rw, Op::Unlink { path: p("/missing/") }, ENOENT),
        (Rw, Op::Unlink { path: p("/.") }, EISDIR),
        (ReadOnly, Op::Unlink { path: p("/u") }, EROFS),
        // rmdir: the last component's type, then EROFS, then the name.
        (Rw, Op::Rmdir { path: p("/") }, EBUSY),
        (Rw, Op::Rmdir { path: p("/d/.") }, EINVAL),
        (Rw, Op::Rmdir { path: p("/d/..") }, ENOTEMPTY),
        (NoUpper, Op::Rmdir { path: p("/missing") }, EROFS),
        (NoUpper, Op::Rmdir { path: p("/d/.") }, EINVAL),
        (Rw, Op::Rmdir { path: p("/missing") }, ENOENT),
        (Rw, Op::Rmdir { path: p("/f") }, ENOTDIR),
        (Rw, Op::Rmdir { path: p("/d") }, ENOTEMPTY),
        (Rw, Op::Rmdir { path: p("/ud") }, ENOTEMPTY),
        (Rw, Op::Rmdir { path: p("/ld") }, ENOTEMPTY),
        // rename: VFS checks, then overlay's EXDEV, then ENOTEMPTY.
        (Rw, rename("/f", "/g", |f| (f.exchange, f.noreplace) = (true, true)), EINVAL),
        (Rw, rename("/missing", "/g", |f| f.whiteout = true), ENOENT),
        (Rw, rename("/f", "/g", |f| f.whiteout = true), EINVAL),
        (NoUpper, rename("/missing", "/g", |_| ()), EROFS),
        (Rw, rename("/", "/g", |_| ()), EBUSY),
        (Rw, rename("/f", "/d/..", |_| ()), EBUSY),
        (Rw, rename("/f", "/d/..", |f| f.noreplace = true), EEXIST),
        (Rw, rename("/missing", "/g", |_| ()), ENOENT),
        (Rw, rename("/f", "/u", |f| f.noreplace = true), EEXIST),
        (Rw, rename("/f", "/g", |f| f.exchange = true), ENOENT),
        (Rw, rename("/f/", "/g", |_| ()), ENOTDIR),
        (Rw, rename("/f", "/g/", |_| ()), ENOTDIR),
        (Rw, rename("/ud", "/ud/z2", |_| ()), EINVAL),
        (Rw, rename("/ud/z", "/ud", |_| ()), ENOTEMPTY),
        (Rw, rename("/ud", "/f", |_| ()), ENOTDIR),
        (Rw, rename("/f", "/ud", |_| ()), EISDIR),
        (Rw, rename("/ld", "/ld2", |_| ()), EXDEV),
        (Rw, rename("/d", "/d2", |_| ()), EXDEV),
        (Rw, rename("/emptyd", "/e2", |_| ()), EXDEV),
        (Rw, rename("/ud", "/ld", |f| f.exchange = true), EXDEV),
        (Rw, rename("/ud", "/d", |_| ()), ENOTEMPTY),
        (Rw, rename("/empty_ud", "/ud", |_| ()), ENOTEMPTY),
        (Redirect, rename("/ld", "/d", |_| ()), ENOTEMPTY),
        (Rw, rename("/ld", "/f", |_| ()), ENOTDIR),
        // link: the source, then the target, then EPERM for a directory.
        (Rw, Op::Link { from: p("/missing"), to: p("/f") }, ENOENT),
        (Rw, Op::Link { from: p("/d"), to: p("/f") }, EEXIST),
        (Rw, Op::Link { from: p("/d"), to: p("/n") }, EPERM),
        (NoUpper, Op::Link { from: p("/f"), to: p("/n") }, EROFS),
        (NoUpper, Op::Link { from: p("/f"), to: p("/u0") }, EROFS),
        (Rw, Op::Link { from: p("/f"), to: p("/n/") }, ENOENT),
        (Rw, Op::Link { from: p("/f/"), to: p("/n") }, ENOTDIR),
        // open: flag checks, O_CREAT, then do_open and may_open.
        (Rw, open("/n", |f| (f.creat, f.directory) = (true, true)), EINVAL),
        (Rw, open("/n/", |f| f.creat = true), EISDIR),
        (Rw, open("/d/", |f| f.creat = true), EISDIR),
        (NoUpper, open("/f", |f| (f.creat, f.excl) = (true, true)), EEXIST),
        (NoUpper, open("/n", |f| f.creat = true), EROFS),
        (Rw, open("/d", |f| f.creat = true), EISDIR),
        (Rw, open("/", |f| (f.creat, f.excl) = (true, true)), EEXIST),
        (Rw, open("/f", |f| f.directory = true), ENOTDIR),
        (Rw, open("/sym", |f| f.nofollow = true), ELOOP),
        (Rw, open("/sym", |f| (f.creat, f.nofollow) = (true, true)), ELOOP),
        (Rw, open("/sym", |f| (f.creat, f.excl) = (true, true)), EEXIST),
        (Rw, open("/d", |f| f.access = Access::WriteOnly), EISDIR),
        (Rw, open("/d", |f| f.trunc = true), EISDIR),
        (NoUpper, open("/f", |f| f.access = Access::ReadWrite), EROFS),
        (NoUpper, open("/f", |f| f.trunc = true), EROFS),
        (NoUpper, open("/d", |f| f.access = Access::WriteOnly), EISDIR),
        (Rw, open("/fifo", |f| f.access = Access::WriteOnly), ENXIO),
        (NoUpper, open("/fifo", |f| f.access = Access::WriteOnly), ENXIO),
        (Rw, open("/loop", |_| ()), ELOOP),
        (Rw, Op::Read { path: p("/d") }, EISDIR),
        (Rw, Op::Write { path: p("/d"), at: WriteAt::Append, data: b"x".to_vec() }, EISDIR),
        (NoUpper, Op::Write { path: p("/f"), at: WriteAt::Offset(0), data: b"x".to_vec() }, EROFS),
        // truncate: the type before EROFS.
        (NoUpper, Op::Truncate { path: p("/d"), len: 0 }, EISDIR),
        (NoUpper, Op::Truncate { path: p("/fifo"), len: 0 }, EINVAL),
        (NoUpper, Op::Truncate { path: p("/f"), len: 0 }, EROFS),
        (Rw, Op::Truncate { path: p("/missing"), len: 0 }, ENOENT),
        // the attribute setters.
        (NoUpper, Op::Chmod { path: p("/f"), mode: 0o600 }, EROFS),
        (NoUpper, Op::Chmod { path: p("/missing"), mode: 0o600 }, ENOENT),
        (ReadOnly, Op::Chown { path: p("/f"), uid: 1, gid: 1 }, EROFS),
        (NoUpper, Op::Utimes { path: p("/f") }, EROFS),
        (Rw, Op::Readlink { path: p("/f") }, EINVAL),
        (Rw, Op::Readdir { path: p("/f") }, ENOTDIR),
        // xattrs: name checks before the walk, EROFS before the attribute.
        (Rw, Op::Setxattr { path: p("/missing"), name: p(""), value: vec![] }, ERANGE),
        (Rw, Op::Setxattr { path: p("/missing"), name: format!("user.{long}"), value: vec![] }, ERANGE),
        (Rw, Op::Setxattr { path: p("/missing"), name: p("user.a"), value: vec![0; 65537] }, E2BIG),
        (NoUpper, Op::Setxattr { path: p("/f"), name: p("user.a"), value: vec![] }, EROFS),
        (NoUpper, Op::Removexattr { path: p("/f"), name: p("user.missing") }, EROFS),
        (Rw, Op::Removexattr { path: p("/f"), name: p("user.missing") }, ENODATA),
        (Rw, Op::Getxattr { path: p("/f"), name: p("user.missing") }, ENODATA),
        (Rw, Op::Getxattr { path: p("/opq"), name: p("trusted.overlay.opaque") }, ENODATA),
        (Rw, Op::Setxattr { path: p("/fifo"), name: p("user.a"), value: vec![] }, EPERM),
        (Rw, Op::Getxattr { path: p("/fifo"), name: p("user.a") }, ENODATA),
        (Rw, Op::Setxattr { path: p("/f"), name: p("bogus.a"), value: vec![] }, EOPNOTSUPP),
        (Rw, Op::Getxattr { path: p("/f"), name: p("bogus.a") }, EOPNOTSUPP),
        (Rw, Op::Listxattr { path: p("/missing") }, ENOENT),
        (Rw, Op::Listxattr { path: p("/f/x") }, ENOTDIR),
        (Rw, Op::Readlink { path: p("/missing") }, ENOENT),
    ]
}

fn options(m: Mount) -> Options {
    match m {
        Mount::Rw | Mount::NoUpper => Options::default(),
        Mount::ReadOnly => Options { read_only: true, ..Options::default() },
        Mount::Redirect => Options { redirect_dir: RedirectDir::On, ..Options::default() },
    }
}

/// Runs every row on `backend` and returns the rows that did not give their errno.
fn run_rows(backend: &mut dyn Backend) -> Vec<String> {
    let (l0, l1, up) = layers();
    let flats: [(&str, FlatLayer); 3] = [("L0", l0.to_flat()), ("L1", l1.to_flat()), ("U", up.to_flat())];
    let mut wrong = Vec::new();
    for (i, (mount, op, want)) in rows().into_iter().enumerate() {
        for (name, flat) in &flats {
            let cmd = Command::Layer { name: format!("r{i}-{name}"), content: flat.clone() };
            backend.exec(&cmd).expect("layer");
        }
        let upper = match mount {
            Mount::NoUpper => None,
            _ => Some(format!("r{i}-U")),
        };
        let cmd =
            Command::Mount { lowers: vec![format!("r{i}-L0"), format!("r{i}-L1")], upper, options: options(mount) };
        assert_eq!(backend.exec(&cmd).expect("mount"), Reply::Done, "row {i}: mount");
        let got = backend.exec(&Command::Op(op.clone())).expect("op");
        if got != Reply::Outcome(Outcome::Err(want)) {
            wrong.push(format!("row {i} ({mount:?}) {op:?}: want {want}, got {got:?}"));
        }
        backend.exec(&Command::Unmount).expect("unmount");
    }
    wrong
}

#[test]
fn model_returns_the_kernels_errno_first() {
    let wrong = run_rows(&mut ModelBackend::new());
    assert!(wrong.is_empty(), "{} rows differ:\n{}", wrong.len(), wrong.join("\n"));
}

#[test]
fn kernel_returns_the_rows_errno_first() {
    let Some(mut kernel) = common::kernel_or_skip("errno precedence rows") else { return };
    let wrong = run_rows(&mut kernel);
    assert!(wrong.is_empty(), "{} rows differ on the kernel:\n{}", wrong.len(), wrong.join("\n"));
}
