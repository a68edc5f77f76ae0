//! Writing a scenario back as YAML.

use super::emit::{write_map, Style, Y};
use super::tree::{node_y, tree_from_flat, TreeContext, TreeNode};
use super::{Action, Check, Expect, MountChange, MountSpec, Scenario, StatExpect, Step};
use crate::backend::Edit;
use crate::errno::Errno;
use crate::layer::{FileType, FlatNode};
use crate::mount::Options;
use crate::ops::{Access, FdOp, MknodKind, Op, OpenFlags, RenameFlags, WriteAt};

/// The top-level keys in the order a new scenario writes them.
const ORDER: &[&str] = &["name", "rules", "layers", "mount", "umask", "steps", "final"];

/// The word a scenario uses for an operation (`mkfifo` for a FIFO mknod).
pub(crate) fn op_word(op: &Op) -> &'static str {
    match op {
        Op::Mknod { kind: MknodKind::Fifo, .. } => "mkfifo",
        other => other.name(),
    }
}

/// A file type as scenarios spell it.
pub(crate) fn type_word(t: FileType) -> &'static str {
    match t {
        FileType::Dir => "dir",
        FileType::File => "file",
        FileType::Symlink => "symlink",
        FileType::Char => "char",
        FileType::Block => "block",
        FileType::Fifo => "fifo",
    }
}

pub(crate) fn to_yaml(s: &Scenario) -> String {
    let mut out = String::new();
    let mut keys: Vec<&str> = Vec::new();
    if let Some(src) = &s.source {
        out.push_str(&src.header);
        for k in &src.key_order {
            if ORDER.contains(&k.as_str()) && !keys.contains(&k.as_str()) {
                keys.push(ORDER[ORDER.iter().position(|o| o == k).unwrap_or(0)]);
            }
        }
    }
    for k in ORDER {
        if !keys.contains(k) {
            keys.push(k);
        }
    }
    let mut first = true;
    for k in keys {
        let value = match k {
            "name" => Some(Y::s(s.name.clone())),
            "rules" => Some(Y::Seq(s.rules.iter().map(|r| Y::s(r.clone())).collect(), Style::Block)),
            "layers" => Some(Y::Map(
                s.layers
                    .iter()
                    .map(|(n, l)| {
                        let image = s.source.as_ref().and_then(|src| src.image_layers.iter().find(|i| &i.name == n));
                        let y = match image {
                            Some(i) if i.tag == "oci" => {
                                let mut fields = vec![("path".to_owned(), Y::s(i.path.clone()))];
                                if let Some(r) = &i.reference {
                                    fields.push(("ref".to_owned(), Y::s(r.clone())));
                                }
                                fields.push(("layer".to_owned(), Y::n(i.layer.unwrap_or(0))));
                                Y::tag("oci", Y::map(fields))
                            }
                            Some(i) => Y::tag(&i.tag, Y::s(i.path.clone())),
                            None => node_y(&tree_from_flat(l), TreeContext::Layer),
                        };
                        (n.clone(), y)
                    })
                    .collect(),
                Style::Block,
            )),
            "mount" => s.mount.as_ref().map(mount_y),
            "umask" => s.umask.map(Y::mode),
            "steps" => Some(Y::Seq(s.steps.iter().map(step_y).collect(), Style::Block)),
            _ => s.final_check.as_ref().map(check_y),
        };
        let Some(value) = value else { continue };
        if !first && matches!(k, "layers" | "steps" | "final") {
            out.push('\n');
        }
        first = false;
        write_map(&mut out, &[(k.to_owned(), value)], 0);
    }
    out
}

fn options_y(o: &Options) -> Option<Y> {
    let d = Options::default();
    let given = o.given();
    let mut f: Vec<(String, Y)> = Vec::new();
    let mut push = |k: &str, v: &str| f.push((k.to_owned(), Y::Raw(v.to_owned())));
    if given.redirect_dir {
        push("redirect_dir", o.redirect_dir.as_str());
    }
    let b = |v: bool| if v { "true" } else { "false" };
    if given.index {
        push("index", b(o.index));
    }
    if given.metacopy {
        push("metacopy", b(o.metacopy));
    }
    if given.xino {
        push("xino", o.xino.as_str());
    }
    if o.userxattr != d.userxattr {
        push("userxattr", b(o.userxattr));
    }
    if given.nfs_export {
        push("nfs_export", b(o.nfs_export));
    }
    if o.volatile != d.volatile {
        push("volatile", b(o.volatile));
    }
    if o.read_only != d.read_only {
        push("read_only", b(o.read_only));
    }
    if o.workdir_without_upper != d.workdir_without_upper {
        push("workdir_without_upper", b(o.workdir_without_upper));
    }
    if !o.uuid.is_auto() {
        push("uuid", o.uuid.as_str());
    }
    (!f.is_empty()).then(|| Y::map(f))
}

fn lowers_y(l: &[String]) -> Y {
    Y::seq(l.iter().map(|n| Y::s(n.clone())).collect())
}

/// `fsconfig(2)` calls as a scenario writes them: a list of `[key, value]` and `[key]`.
fn fsconfig_y(calls: &[crate::params::FsParam]) -> Y {
    Y::seq(
        calls
            .iter()
            .map(|c| {
                let mut entry = vec![Y::s(c.key.clone())];
                entry.extend(c.value.clone().map(Y::s));
                Y::seq(entry)
            })
            .collect(),
    )
}

/// `fsconfig(2)` calls on one line, as [`fsconfig_y`] writes them.
pub(crate) fn fsconfig_text(calls: &[crate::params::FsParam]) -> String {
    super::emit::one_line(&fsconfig_y(calls))
}

fn mount_y(m: &MountSpec) -> Y {
    if let Some(d) = &m.data {
        return Y::map(vec![("options".to_owned(), Y::s(d.clone()))]);
    }
    if let Some(calls) = &m.fsconfig {
        return Y::map(vec![("fsconfig".to_owned(), fsconfig_y(calls))]);
    }
    let mut f = vec![("lowers".to_owned(), lowers_y(&m.lowers))];
    if let Some(u) = &m.upper {
        f.push(("upper".to_owned(), Y::s(u.clone())));
    }
    if let Some(o) = options_y(&m.options) {
        f.push(("options".to_owned(), o));
    }
    Y::map(f)
}

fn change_y(c: &MountChange) -> Y {
    let mut f = Vec::new();
    if let Some(l) = &c.lowers {
        f.push(("lowers".to_owned(), lowers_y(l)));
    }
    if let Some(u) = &c.upper {
        f.push((
            "upper".to_owned(),
            match u {
                Some(u) => Y::s(u.clone()),
                None => Y::Raw("~".into()),
            },
        ));
    }
    if let Some(o) = &c.options {
        f.push(("options".to_owned(), options_y(o).unwrap_or_else(|| Y::map(Vec::new()))));
    }
    if let Some(d) = &c.data {
        f.push(("options".to_owned(), Y::s(d.clone())));
    }
    if let Some(calls) = &c.fsconfig {
        f.push(("fsconfig".to_owned(), fsconfig_y(calls)));
    }
    Y::map(f)
}

pub(crate) fn check_y(c: &Check) -> Y {
    let mut f = Vec::new();
    if let Some(t) = &c.merged {
        f.push(("merged".to_owned(), t.as_ref().map_or(Y::Null, |t| node_y(&t.to_tree(), TreeContext::Merged))));
    }
    if let Some(t) = &c.upper {
        f.push(("upper".to_owned(), t.as_ref().map_or(Y::Null, |t| node_y(&tree_from_flat(t), TreeContext::Layer))));
    }
    if let Some(index) = &c.index {
        f.push((
            "index".to_owned(),
            match index {
                Some(m) => Y::Map(m.iter().map(|(k, v)| (k.clone(), Y::s(v.clone()))).collect(), Style::Auto),
                None => Y::Null,
            },
        ));
    }
    Y::Map(f, Style::Block)
}

/// Bytes as a YAML value where a bare string could be read as `ok` or an errno.
pub(crate) fn value_y(b: &[u8]) -> Y {
    match std::str::from_utf8(b) {
        Ok(s) if s == "ok" || looks_special(s) => Y::tag("data", Y::s(s)),
        Ok(s) => Y::s(s),
        Err(_) => Y::tag("hex", Y::s(crate::hex::encode(b))),
    }
}

fn looks_special(s: &str) -> bool {
    Errno::from_name(s).is_some()
        || (s.len() > 2 && s.starts_with('E') && s.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()))
}

/// Bytes as a plain string or `!hex` (no `ok`/errno ambiguity: data fields).
fn data_y(b: &[u8]) -> Y {
    match std::str::from_utf8(b) {
        Ok(s) => Y::s(s),
        Err(_) => Y::tag("hex", Y::s(crate::hex::encode(b))),
    }
}

pub(crate) fn stat_y(s: &StatExpect) -> Y {
    let mut f = Vec::new();
    if let Some(k) = s.kind {
        f.push(("kind".to_owned(), Y::Raw(type_word(k).into())));
    }
    if let Some(m) = s.mode {
        f.push(("mode".to_owned(), Y::mode(m)));
    }
    if let Some(v) = s.size {
        f.push(("size".to_owned(), Y::n(v)));
    }
    if let Some(v) = s.nlink {
        f.push(("nlink".to_owned(), Y::n(v)));
    }
    if let Some(v) = s.uid {
        f.push(("uid".to_owned(), Y::n(v)));
    }
    if let Some(v) = s.gid {
        f.push(("gid".to_owned(), Y::n(v)));
    }
    if let Some((a, b)) = s.rdev {
        f.push(("rdev".to_owned(), Y::seq(vec![Y::n(a), Y::n(b)])));
    }
    if let Some(l) = &s.ino {
        f.push(("ino".to_owned(), Y::s(l.clone())));
    }
    Y::map(f)
}

/// A read's digest: `!digest {size: N, hash: H}`.
pub(crate) fn digest_y(d: &crate::layer::Digest) -> Y {
    Y::tag(
        "digest",
        Y::map(vec![("size".into(), Y::Raw(d.size.to_string())), ("hash".into(), Y::s(format!("{:016x}", d.hash)))]),
    )
}

pub(crate) fn expect_y(e: &Expect) -> Y {
    match e {
        Expect::Ok => Y::Raw("ok".into()),
        Expect::Err(e) => Y::Raw(e.name().into()),
        Expect::Stat(s) => stat_y(s),
        Expect::Data(d) => value_y(d),
        Expect::Digest(d) => digest_y(d),
        Expect::Target(t) => value_y(t.as_bytes()),
        Expect::Names(n) => Y::seq(n.iter().map(|x| Y::s(x.clone())).collect()),
        Expect::Entries(m) if m.is_empty() => Y::seq(Vec::new()),
        Expect::Entries(m) => Y::map(m.iter().map(|(n, t)| (n.clone(), Y::Raw(type_word(*t).into()))).collect()),
        Expect::Call { call, errno } => {
            Y::map(vec![("call".into(), Y::Raw((call + 1).to_string())), ("errno".into(), Y::Raw(errno.name().into()))])
        }
    }
}

fn open_flags_y(f: &OpenFlags) -> Option<Y> {
    if *f == OpenFlags::default() {
        return None;
    }
    let mut w = vec![match f.access {
        Access::ReadOnly => "rdonly",
        Access::WriteOnly => "wronly",
        Access::ReadWrite => "rdwr",
    }];
    for (on, name) in [
        (f.creat, "creat"),
        (f.excl, "excl"),
        (f.trunc, "trunc"),
        (f.append, "append"),
        (f.directory, "directory"),
        (f.nofollow, "nofollow"),
    ] {
        if on {
            w.push(name);
        }
    }
    Some(Y::seq(w.into_iter().map(|x| Y::Raw(x.into())).collect()))
}

fn rename_flags_y(f: &RenameFlags) -> Option<Y> {
    let mut w = Vec::new();
    for (on, name) in [(f.noreplace, "noreplace"), (f.exchange, "exchange"), (f.whiteout, "whiteout")] {
        if on {
            w.push(Y::Raw(name.into()));
        }
    }
    (!w.is_empty()).then(|| Y::seq(w))
}

/// The fields of an operation step, its own key first.
fn op_fields(op: &Op) -> Vec<(String, Y)> {
    let mut f: Vec<(String, Y)> = Vec::new();
    let word = op_word(op).to_owned();
    let p = |s: &str| Y::s(s.to_owned());
    match op {
        Op::Fd(FdOp::Open { fd, path, flags, mode }) => {
            f.push((word, p(path)));
            if let Some(y) = open_flags_y(flags) {
                f.push(("flags".into(), y));
            }
            if *mode != 0o644 {
                f.push(("mode".into(), Y::mode(*mode)));
            }
            f.push(("as".into(), p(fd)));
        }
        Op::Fd(FdOp::NameToHandle { handle, path, fid, follow }) => {
            f.push((word, p(path)));
            f.push(("as".into(), p(handle)));
            if *fid {
                f.push(("flags".into(), Y::seq(vec![Y::Raw("fid".into())])));
            }
            if *follow {
                f.push(("follow".into(), Y::Raw("true".into())));
            }
        }
        Op::Fd(FdOp::OpenByHandle { fd, handle, flags }) => {
            f.push((word, p(handle)));
            if let Some(y) = open_flags_y(flags) {
                f.push(("flags".into(), y));
            }
            f.push(("as".into(), p(fd)));
        }
        Op::Fd(other) => return super::handle::handle_fields(other, data_y),
        Op::Stat { path }
        | Op::Lstat { path }
        | Op::Read { path }
        | Op::Readlink { path }
        | Op::Readdir { path }
        | Op::Rmdir { path }
        | Op::Unlink { path }
        | Op::Utimes { path }
        | Op::Listxattr { path } => f.push((word, p(path))),
        Op::Open { path, flags, mode } => {
            f.push((word, p(path)));
            if let Some(y) = open_flags_y(flags) {
                f.push(("flags".into(), y));
            }
            if *mode != 0o644 {
                f.push(("mode".into(), Y::mode(*mode)));
            }
        }
        Op::Write { path, at, data } => {
            f.push((word, p(path)));
            f.push(("data".into(), data_y(data)));
            match at {
                WriteAt::Offset(0) => {}
                WriteAt::Offset(n) => f.push(("at".into(), Y::n(*n))),
                WriteAt::Append => f.push(("at".into(), Y::Raw("append".into()))),
            }
        }
        Op::Truncate { path, len } => {
            f.push((word, p(path)));
            f.push(("len".into(), Y::n(*len)));
        }
        Op::Mkdir { path, mode } => {
            f.push((word, p(path)));
            if *mode != 0o755 {
                f.push(("mode".into(), Y::mode(*mode)));
            }
        }
        Op::Rename { from, to, flags } => {
            f.push((word, p(from)));
            f.push(("to".into(), p(to)));
            if let Some(y) = rename_flags_y(flags) {
                f.push(("flags".into(), y));
            }
        }
        Op::Link { from, to } => {
            f.push((word, p(from)));
            f.push(("to".into(), p(to)));
        }
        Op::Symlink { target, path } => {
            f.push((word, p(path)));
            f.push(("target".into(), p(target)));
        }
        Op::Chmod { path, mode } => {
            f.push((word, p(path)));
            f.push(("mode".into(), Y::mode(*mode)));
        }
        Op::Chown { path, uid, gid } => {
            f.push((word, p(path)));
            let id = |i: u32| if i == u32::MAX { Y::Raw("-1".into()) } else { Y::n(i) };
            f.push(("uid".into(), id(*uid)));
            f.push(("gid".into(), id(*gid)));
        }
        Op::Setxattr { path, name, value } => {
            f.push((word, p(path)));
            f.push(("name".into(), p(name)));
            f.push(("value".into(), data_y(value)));
        }
        Op::Getxattr { path, name } | Op::Removexattr { path, name } => {
            f.push((word, p(path)));
            f.push(("name".into(), p(name)));
        }
        Op::Mknod { path, kind, mode } => {
            f.push((word, p(path)));
            match kind {
                MknodKind::Fifo => {}
                MknodKind::File => f.push(("kind".into(), Y::Raw("file".into()))),
                MknodKind::Char(a, b) | MknodKind::Block(a, b) => {
                    let k = if matches!(kind, MknodKind::Char(..)) { "char" } else { "block" };
                    f.push(("kind".into(), Y::Raw(k.into())));
                    f.push(("rdev".into(), Y::seq(vec![Y::n(*a), Y::n(*b)])));
                }
            }
            if *mode != 0o644 {
                f.push(("mode".into(), Y::mode(*mode)));
            }
        }
    }
    f
}

fn flat_node_y(n: &FlatNode) -> Y {
    let mut flat = crate::layer::FlatLayer {
        root: FlatNode {
            kind: FileType::Dir,
            mode: 0o755,
            uid: 0,
            gid: 0,
            data: None,
            target: None,
            rdev: None,
            xattrs: Default::default(),
        },
        entries: Vec::new(),
    };
    if n.kind == FileType::Dir {
        flat.root = n.clone();
        return node_y(&tree_from_flat(&flat), TreeContext::Layer);
    }
    flat.entries.push(crate::layer::FlatEntry::Node { path: "/x".into(), node: n.clone() });
    let t = tree_from_flat(&flat);
    let child: &TreeNode = &t.entries().expect("a root directory")["x"];
    node_y(child, TreeContext::Layer)
}

fn edit_fields(layer: &str, replace: &Option<crate::layer::FlatLayer>, edits: &[Edit]) -> Vec<(String, Y)> {
    let mut f = vec![("edit".to_owned(), Y::s(layer.to_owned()))];
    if let Some(r) = replace {
        f.push(("replace".into(), node_y(&tree_from_flat(r), TreeContext::Layer)));
    }
    let removes: Vec<Y> = edits
        .iter()
        .filter_map(|e| match e {
            Edit::Remove { path } => Some(Y::s(path.clone())),
            _ => None,
        })
        .collect();
    if !removes.is_empty() {
        f.push(("remove".into(), Y::seq(removes)));
    }
    let puts: Vec<(String, Y)> = edits
        .iter()
        .filter_map(|e| match e {
            Edit::Put { path, node } => Some((path.clone(), flat_node_y(node))),
            _ => None,
        })
        .collect();
    if !puts.is_empty() {
        f.push(("put".into(), Y::Map(puts, Style::Block)));
    }
    let links: Vec<(String, Y)> = edits
        .iter()
        .filter_map(|e| match e {
            Edit::Link { path, to } => Some((path.clone(), Y::s(to.clone()))),
            _ => None,
        })
        .collect();
    if !links.is_empty() {
        f.push(("link".into(), Y::map(links)));
    }
    f
}

/// A step as YAML.
pub(crate) fn step_y(s: &Step) -> Y {
    let mut f: Vec<(String, Y)> = match &s.action {
        Action::Op(op) => op_fields(op),
        Action::Mount(c) => {
            if *c == MountChange::default() && s.expect.is_none() && s.note.is_none() {
                return Y::s("mount");
            }
            vec![("mount".into(), change_y(c))]
        }
        Action::Unmount => {
            if s.note.is_none() && s.expect.is_none() {
                return Y::s("unmount");
            }
            vec![("unmount".into(), Y::Null)]
        }
        Action::Edit { layer, replace, edits } => edit_fields(layer, replace, edits),
        Action::Check(c) => vec![("check".into(), check_y(c))],
        Action::DropCaches => {
            if s.note.is_none() {
                return Y::s("drop_caches");
            }
            vec![("drop_caches".into(), Y::Null)]
        }
    };
    if let Some(u) = &s.as_user {
        let mut who = vec![("uid".to_owned(), Y::n(u.uid)), ("gid".to_owned(), Y::n(u.gid))];
        if !u.groups.is_empty() {
            who.push(("groups".to_owned(), Y::seq(u.groups.iter().map(|g| Y::n(*g)).collect())));
        }
        f.push(("as_user".into(), Y::map(who)));
    }
    if let Some(m) = s.umask {
        f.push(("umask".into(), Y::mode(m)));
    }
    if let Some(e) = &s.expect {
        f.push(("expect".into(), expect_y(e)));
    }
    if let Some(n) = &s.note {
        f.push(("note".into(), Y::s(n.clone())));
    }
    Y::Map(f, Style::Block)
}
