//! Steps through named handles ([`FdOp`]): how they read, how they are written back, and
//! the load-time check that every handle a step names was opened by an earlier step.
//!
//! `open: /p` with `as: f1` keeps the file open as `f1`; the other steps name their handle
//! first: `pread: {fd: f1, offset: 0, len: 10}`, or the handle alone where nothing else is
//! needed (`fstat: f1`, `close: f1`).

use super::cx::{key, type_name, Cx, Fields, Path};
use super::emit::Y;
use super::node::Node as Value;
use super::{Action, Scenario};
use crate::ops::fd::{FdOp, Whence, FD_READ_MAX};
use crate::ops::{Op, OpenFlags};
use std::borrow::Cow;
use std::collections::BTreeSet;

/// The step kinds that only exist through a handle.
pub(crate) const HANDLE_KINDS: &[&str] = &[
    "close",
    "pread",
    "pwrite",
    "lseek",
    "fstat",
    "ftruncate",
    "fchmod",
    "getdents",
    "fchown",
    "fsync",
    "fsetxattr",
    "fgetxattr",
    "flistxattr",
    "fremovexattr",
];

/// The steps of the file-handle calls ([`crate::export`]): `name_to_handle: /p` with
/// `as: h1` keeps a file handle, `open_by_handle: h1` with `as: f1` opens through it. They
/// take no `as_user` or `umask`: both run as root.
pub(crate) const FILE_HANDLE_KINDS: &[&str] = &["name_to_handle", "open_by_handle"];

/// Whether a step of `kind` with this subject acts through a handle: a handle-only kind, or
/// `read`/`write` whose subject is a mapping (`read: {fd: f1, len: 4}`) rather than a path.
pub(crate) fn is_handle_step(kind: &str, subject: &Value) -> bool {
    HANDLE_KINDS.contains(&kind) || (matches!(kind, "read" | "write") && matches!(subject, Value::Mapping(_)))
}

/// The arguments each handle step takes in its mapping, `fd` first.
fn arguments(kind: &str) -> &'static [&'static str] {
    match kind {
        "read" => &["fd", "len"],
        "pread" => &["fd", "offset", "len"],
        "write" => &["fd", "data"],
        "pwrite" => &["fd", "offset", "data"],
        "lseek" => &["fd", "offset", "whence"],
        "ftruncate" => &["fd", "len"],
        "fchmod" => &["fd", "mode"],
        "getdents" => &["fd", "count"],
        "fchown" => &["fd", "uid", "gid"],
        "fsetxattr" => &["fd", "name", "value"],
        "fgetxattr" | "fremovexattr" => &["fd", "name"],
        _ => &["fd"],
    }
}

/// A handle name: a non-empty string.
fn handle_name(cx: &mut Cx, v: &Value, p: &Path) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.to_string()),
        other => {
            cx.problem(
                p,
                format!("a handle is a name such as `f1` (given by `open` with `as:`), not {}", type_name(other)),
            );
            None
        }
    }
}

/// Reads a step through a handle; `top` are the step's other keys (only `expect` and
/// `note` are allowed beside the subject).
pub(crate) fn read_handle_op(
    cx: &mut Cx,
    kind: &str,
    subject: &Value,
    sp: &Path,
    path: &Path,
    top: &[(Cow<str>, &Value)],
) -> Option<Op> {
    let args = arguments(kind);
    for (k, _) in top {
        if !matches!(&**k, "expect" | "note" | "as_user" | "umask") && k != kind {
            cx.key_problem(
                &key(path, k),
                format!(
                    "`{kind}` through a handle takes its arguments in its mapping: `{kind}: {{{}}}`",
                    args.join(", ")
                ),
            );
            return None;
        }
    }
    let fields: Fields = match subject {
        Value::String(_) if args.len() == 1 => smallvec::smallvec![(Cow::Borrowed("fd"), subject)],
        Value::Mapping(m) => cx.fields(m, sp, args, format_args!("`{kind}`")),
        other => {
            cx.problem(
                sp,
                format!("`{kind}` takes a mapping such as `{{{}}}`, not {}", args.join(", "), type_name(other)),
            );
            return None;
        }
    };
    let get = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| *v);
    let need = |cx: &mut Cx, k: &'static str| match get(k) {
        Some(v) => Some((v, key(sp, k))),
        None => {
            cx.problem(sp, format!("`{kind}` needs `{k}`"));
            None
        }
    };
    let fd = need(cx, "fd").and_then(|(v, p)| handle_name(cx, v, &p));
    let len_of = |cx: &mut Cx| {
        let (v, p) = need(cx, "len")?;
        let n = cx.uint::<u64>(v, &p, "len")?;
        if n > FD_READ_MAX {
            cx.problem(&p, format!("a read through a handle asks for at most {FD_READ_MAX} bytes"));
            return None;
        }
        Some(n)
    };
    let offset_of = |cx: &mut Cx| need(cx, "offset").and_then(|(v, p)| cx.uint::<u64>(v, &p, "offset"));
    let data_of = |cx: &mut Cx| need(cx, "data").and_then(|(v, p)| cx.bytes(v, &p, "data"));
    let op = match kind {
        "close" => FdOp::Close { fd: fd? },
        "fstat" => FdOp::Fstat { fd: fd? },
        "read" => {
            let len = len_of(cx);
            FdOp::Read { fd: fd?, len: len? }
        }
        "pread" => {
            let (offset, len) = (offset_of(cx), len_of(cx));
            FdOp::Pread { fd: fd?, offset: offset?, len: len? }
        }
        "write" => {
            let data = data_of(cx);
            FdOp::Write { fd: fd?, data: data? }
        }
        "pwrite" => {
            let (offset, data) = (offset_of(cx), data_of(cx));
            FdOp::Pwrite { fd: fd?, offset: offset?, data: data? }
        }
        "lseek" => {
            let offset = match need(cx, "offset") {
                Some((Value::Number(n), _)) if n.as_i64().is_some() => n.as_i64(),
                Some((v, p)) => {
                    cx.problem(&p, format!("offset must be an integer, not {}", type_name(v)));
                    None
                }
                None => None,
            };
            let whence = match get("whence") {
                None => Some(Whence::Set),
                Some(v) => match v {
                    Value::String("set") => Some(Whence::Set),
                    Value::String("cur") => Some(Whence::Cur),
                    Value::String("end") => Some(Whence::End),
                    other => {
                        cx.problem(&key(sp, "whence"), format!("whence is set, cur or end, not {}", type_name(other)));
                        None
                    }
                },
            };
            FdOp::Lseek { fd: fd?, offset: offset?, whence: whence? }
        }
        "ftruncate" => {
            let len = need(cx, "len").and_then(|(v, p)| cx.uint::<u64>(v, &p, "len"));
            FdOp::Ftruncate { fd: fd?, len: len? }
        }
        "fchmod" => {
            let mode = need(cx, "mode").and_then(|(v, p)| cx.mode(v, &p));
            FdOp::Fchmod { fd: fd?, mode: mode? }
        }
        "getdents" => {
            let count = need(cx, "count").and_then(|(v, p)| cx.uint::<u64>(v, &p, "count"));
            if count == Some(0) {
                cx.problem(&key(sp, "count"), "count is at least 1");
                return None;
            }
            FdOp::Getdents { fd: fd?, count: count? }
        }
        "fchown" => {
            // -1 leaves the id as it is (fchown(2)); it travels as u32::MAX.
            let id = |cx: &mut Cx, what: &'static str| match need(cx, what) {
                Some((Value::Number(n), _)) if n.as_i64() == Some(-1) => Some(u32::MAX),
                Some((v, p)) => cx.uint(v, &p, &format!("{what} (or -1)")),
                None => None,
            };
            let (uid, gid) = (id(cx, "uid"), id(cx, "gid"));
            FdOp::Fchown { fd: fd?, uid: uid?, gid: gid? }
        }
        "fsync" => FdOp::Fsync { fd: fd? },
        "flistxattr" => FdOp::Flistxattr { fd: fd? },
        "fsetxattr" | "fgetxattr" | "fremovexattr" => {
            let name = need(cx, "name").and_then(|(v, p)| super::parse::xattr_name(cx, v, &p));
            match kind {
                "fsetxattr" => {
                    let value = need(cx, "value").and_then(|(v, p)| cx.bytes(v, &p, "value"));
                    FdOp::Fsetxattr { fd: fd?, name: name?, value: value? }
                }
                "fgetxattr" => FdOp::Fgetxattr { fd: fd?, name: name? },
                _ => FdOp::Fremovexattr { fd: fd?, name: name? },
            }
        }
        _ => unreachable!("handle step kinds are checked before"),
    };
    Some(Op::Fd(op))
}

/// `name_to_handle: /p` with `as: h1`, `flags: [fid]` (`AT_HANDLE_FID`) and `follow: true`
/// (`AT_SYMLINK_FOLLOW`), both optional.
pub(crate) fn read_name_to_handle(
    cx: &mut Cx,
    path: String,
    at: &Path,
    handle: Option<&Value>,
    flags: Option<&Value>,
    follow: Option<&Value>,
) -> Option<Op> {
    let handle = match handle {
        Some(v) => handle_name(cx, v, &key(at, "as")),
        None => {
            cx.problem(at, "`name_to_handle` needs `as:`, the name the file handle is kept by (`as: h1`)");
            None
        }
    };
    let mut fid = false;
    let mut ok = true;
    match flags {
        None => {}
        Some(Value::Sequence(items)) => {
            for (i, w) in items.iter().enumerate() {
                match w {
                    Value::String("fid") => fid = true,
                    other => {
                        let flags = key(at, "flags");
                        cx.problem(
                            &super::cx::idx(&flags, i),
                            format!("the flags of `name_to_handle` are: fid; not {}", type_name(other)),
                        );
                        ok = false;
                    }
                }
            }
        }
        Some(other) => {
            cx.problem(&key(at, "flags"), format!("`flags` is a list such as `[fid]`, not {}", type_name(other)));
            ok = false;
        }
    }
    let follow = match follow {
        None => Some(false),
        Some(Value::Bool(b)) => Some(*b),
        Some(other) => {
            cx.problem(&key(at, "follow"), format!("`follow` is true or false, not {}", type_name(other)));
            None
        }
    };
    if !ok {
        return None;
    }
    Some(Op::Fd(FdOp::NameToHandle { handle: handle?, path, fid, follow: follow? }))
}

/// `open_by_handle: h1` with `as: f1` and the flags of `open`.
pub(crate) fn read_open_by_handle(
    cx: &mut Cx,
    subject: &Value,
    sp: &Path,
    at: &Path,
    fd: Option<&Value>,
    flags: OpenFlags,
) -> Option<Op> {
    let handle = handle_name(cx, subject, sp);
    let fd = match fd {
        Some(v) => handle_name(cx, v, &key(at, "as")),
        None => {
            cx.problem(at, "`open_by_handle` needs `as:`, the name the open file is kept by (`as: f1`)");
            None
        }
    };
    Some(Op::Fd(FdOp::OpenByHandle { fd: fd?, handle: handle?, flags }))
}

/// `open` with `as:`: the open kept as a handle.
pub(crate) fn open_as(cx: &mut Cx, v: &Value, p: &Path, path: String, flags: OpenFlags, mode: u32) -> Option<Op> {
    let fd = handle_name(cx, v, p)?;
    Some(Op::Fd(FdOp::Open { fd, path, flags, mode }))
}

/// The fields of a handle step, its own key first; `open` is written by the caller, which
/// adds `as:`.
pub(crate) fn handle_fields(op: &FdOp, data_y: impl Fn(&[u8]) -> Y) -> Vec<(String, Y)> {
    let word = op.name().to_owned();
    let fd = ("fd".to_owned(), Y::s(op.fd()));
    let args = match op {
        FdOp::Open { .. } | FdOp::NameToHandle { .. } | FdOp::OpenByHandle { .. } => {
            unreachable!("open and the file-handle calls are written by the caller")
        }
        FdOp::Close { fd } | FdOp::Fstat { fd } | FdOp::Fsync { fd } | FdOp::Flistxattr { fd } => {
            return vec![(word, Y::s(fd.clone()))]
        }
        FdOp::Read { len, .. } => vec![fd, ("len".into(), Y::n(*len))],
        FdOp::Pread { offset, len, .. } => vec![fd, ("offset".into(), Y::n(*offset)), ("len".into(), Y::n(*len))],
        FdOp::Write { data, .. } => vec![fd, ("data".into(), data_y(data))],
        FdOp::Pwrite { offset, data, .. } => vec![fd, ("offset".into(), Y::n(*offset)), ("data".into(), data_y(data))],
        FdOp::Lseek { offset, whence, .. } => {
            let mut a = vec![fd, ("offset".into(), Y::Raw(offset.to_string()))];
            if *whence != Whence::Set {
                a.push(("whence".into(), Y::Raw(whence.word().into())));
            }
            a
        }
        FdOp::Ftruncate { len, .. } => vec![fd, ("len".into(), Y::n(*len))],
        FdOp::Fchmod { mode, .. } => vec![fd, ("mode".into(), Y::mode(*mode))],
        FdOp::Getdents { count, .. } => vec![fd, ("count".into(), Y::n(*count))],
        FdOp::Fchown { uid, gid, .. } => {
            let id = |i: u32| if i == u32::MAX { Y::Raw("-1".into()) } else { Y::n(i) };
            vec![fd, ("uid".into(), id(*uid)), ("gid".into(), id(*gid))]
        }
        FdOp::Fsetxattr { name, value, .. } => {
            vec![fd, ("name".into(), Y::s(name.clone())), ("value".into(), data_y(value))]
        }
        FdOp::Fgetxattr { name, .. } | FdOp::Fremovexattr { name, .. } => vec![fd, ("name".into(), Y::s(name.clone()))],
    };
    vec![(word, Y::map(args))]
}

/// Every handle a step names must have been opened by an earlier `open` with `as:`: an
/// unknown name is a mistake in the file, reported at the step. (A handle that was opened
/// but is closed now, or whose open failed, answers EBADF at run time, as the kernel does.)
pub(crate) fn check_handles(cx: &mut Cx, s: &Scenario) {
    let mut known: BTreeSet<&str> = BTreeSet::new();
    let mut file_handles: BTreeSet<&str> = BTreeSet::new();
    for (i, step) in s.steps.iter().enumerate() {
        let Action::Op(Op::Fd(f)) = &step.action else { continue };
        match f {
            FdOp::Open { fd, .. } => {
                known.insert(fd);
                continue;
            }
            FdOp::NameToHandle { handle, .. } => {
                file_handles.insert(handle);
                continue;
            }
            FdOp::OpenByHandle { fd, handle, .. } => {
                if !file_handles.contains(handle.as_str()) {
                    cx.step = Some((i + 1, step.op_name().into()));
                    let steps = key(&Path::Root, "steps");
                    let p = super::cx::idx(&steps, i);
                    cx.problem(
                        &p,
                        format!(
                            "unknown file handle `{handle}`: keep it first (`name_to_handle: /path` with `as: {handle}`)"
                        ),
                    );
                }
                known.insert(fd);
                continue;
            }
            _ => {}
        }
        if !known.contains(f.fd()) {
            cx.step = Some((i + 1, step.op_name().into()));
            let before = if known.is_empty() {
                "no handle is opened before it".to_owned()
            } else {
                format!("the handles opened before it are: {}", known.iter().copied().collect::<Vec<_>>().join(", "))
            };
            let steps = key(&Path::Root, "steps");
            let p = super::cx::idx(&steps, i);
            cx.problem(
                &p,
                format!("unknown handle `{}`: open it first (`open: /path` with `as: {}`); {before}", f.fd(), f.fd()),
            );
        }
    }
    cx.step = None;
}
