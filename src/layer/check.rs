//! What a layer's filesystem can hold: the one check that scenario loading, the in-library
//! API ([`Layer::try_put`]), the model's `Command::Layer` and offline edits
//! ([`crate::backend::Edit`]) and the fuzzer's generators all use, so that the model refuses
//! a layer with the errno the kernel's own calls give when the kernel backend builds it on
//! tmpfs (`src/kernel/layers.rs`: `mkdirat`, `openat`, `symlinkat`, `mknodat`, `lsetxattr`).
//!
//! Every errno here was observed on Linux 6.18's tmpfs.

use super::{FileType, FlatEntry, FlatLayer, FlatNode, Ino, Inode, Layer};
use crate::errno::Errno;
use std::fmt;

/// The longest name in a directory (kernel: `NAME_MAX`; tmpfs `simple_lookup`).
pub const NAME_LEN_MAX: usize = 255;
/// The longest symlink target, its NUL included (kernel: `PATH_MAX`).
pub const PATH_MAX: usize = 4096;
/// The longest xattr name (kernel: `XATTR_NAME_MAX`).
pub const XATTR_NAME_LEN_MAX: usize = 255;
/// The largest xattr value (kernel: `XATTR_SIZE_MAX`).
pub const XATTR_SIZE_MAX: usize = 65536;
/// The longest list of a node's xattr names, each with its NUL (kernel: `XATTR_LIST_MAX`).
pub const XATTR_LIST_MAX: usize = 65536;

/// The part of a node that the layer refuses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Part {
    /// A name on the node's path (its own, or a parent's).
    Name(String),
    /// A symlink's target.
    Target,
    /// The name of this xattr.
    XattrName(String),
    /// The value of this xattr.
    XattrValue(String),
}

/// A node that a layer cannot hold: the errno the kernel gives, the part, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    /// What the kernel's call returns.
    pub errno: Errno,
    /// Which part of the node is refused.
    pub part: Part,
    /// Why, in words.
    pub reason: &'static str,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match &self.part {
            Part::Name(n) => format!("name {:?}", shorten(n)),
            Part::Target => "symlink target".to_owned(),
            Part::XattrName(n) => format!("xattr name {:?}", shorten(n)),
            Part::XattrValue(n) => format!("value of xattr {:?}", shorten(n)),
        };
        write!(f, "a layer cannot hold this {what}: {} ({})", self.reason, self.errno)
    }
}

/// A long name cut for messages.
fn shorten(s: &str) -> String {
    if s.len() <= 40 {
        return s.to_owned();
    }
    let cut = (0..=37).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0);
    format!("{}... ({} bytes)", &s[..cut], s.len())
}

fn refuse(errno: Errno, part: Part, reason: &'static str) -> Result<(), Refusal> {
    Err(Refusal { errno, part, reason })
}

/// Whether a layer can hold `node` at `path` (`/`-separated from the layer root; `/` for the
/// root itself, which only has its metadata checked). Checks, in the order the kernel
/// backend's calls meet them: each name on the path (EINVAL for a NUL byte, which no
/// syscall can pass; ENAMETOOLONG over 255 bytes: `mkdirat`/`openat`); a symlink's target
/// (EINVAL for NUL; ENOENT when empty, ENAMETOOLONG from 4096 bytes: `symlinkat`); then each
/// xattr, in name order, as `setxattr(2)` checks it:
///
/// 1. ERANGE: an empty name or one over 255 bytes (kernel: `import_xattr_name`);
/// 2. E2BIG: a value over 64 KiB (kernel: `setxattr_copy`);
/// 3. EINVAL: `security.capability` that is not a v2 (20 bytes) or v3 (24 bytes, a valid
///    root uid) header (kernel: `cap_convert_nscap`, `validheader`);
/// 4. EPERM: `user.*` on anything but a regular file or a directory (kernel:
///    `xattr_permission`);
/// 5. EINVAL: a POSIX ACL (`system.posix_acl_access`, `_default`) without a version 2
///    header (kernel: `posix_acl_from_xattr`);
/// 6. EOPNOTSUPP: a namespace tmpfs has no handler for (anything but `user.`, `trusted.`,
///    `security.`; kernel: `xattr_resolve_name`); EINVAL: a namespace prefix alone
///    (`user.`).
///
/// Last, E2BIG when the names, each with its NUL, total over 64 KiB: tmpfs sets them all,
/// but `listxattr` refuses the list (kernel: `XATTR_LIST_MAX`), and so would a copy-up.
///
/// NOTE(kernel): a path longer than PATH_MAX is no refusal: the backend makes it one
/// component at a time (observed: a 4,517-byte path builds and lists).
pub fn check_node(path: &str, node: &FlatNode) -> Result<(), Refusal> {
    // Most paths are short and hold no NUL: one scan says so, without splitting them.
    if path.len() > NAME_LEN_MAX || path.as_bytes().contains(&0) {
        check_names(path)?;
    }
    if node.kind == FileType::Symlink {
        let target = node.target.as_deref().unwrap_or_default();
        if target.contains('\0') {
            return refuse(Errno::EINVAL, Part::Target, "a target cannot hold a NUL byte");
        }
        if target.is_empty() {
            return refuse(Errno::ENOENT, Part::Target, "a symlink target cannot be empty");
        }
        if target.len() >= PATH_MAX {
            return refuse(Errno::ENAMETOOLONG, Part::Target, "a symlink target is at most 4095 bytes");
        }
    }
    // Most nodes have no xattrs: a `BTreeMap` iterator is set up for nothing.
    if node.xattrs.is_empty() {
        return Ok(());
    }
    // Each name is listed with its NUL; the list is summed in the same pass, and the name
    // that takes it over the limit refused only once every xattr has passed its own checks.
    let mut listed = 0;
    let mut over = None;
    for (name, value) in &node.xattrs {
        check_xattr(node.kind, name, value)?;
        listed += name.len() + 1;
        if listed > XATTR_LIST_MAX && over.is_none() {
            over = Some(name);
        }
    }
    match over {
        Some(name) => refuse(
            Errno::E2BIG,
            Part::XattrName(name.clone()),
            "a node's xattr names total at most 64 KiB, or listxattr (and so copy-up) fails",
        ),
        None => Ok(()),
    }
}

/// Each name on `path`, in order: EINVAL for a NUL byte, ENAMETOOLONG over 255 bytes; see
/// [`check_node`].
fn check_names(path: &str) -> Result<(), Refusal> {
    for name in path.split('/').filter(|c| !c.is_empty()) {
        if name.contains('\0') {
            return refuse(Errno::EINVAL, Part::Name(name.to_owned()), "a name cannot hold a NUL byte");
        }
        if name.len() > NAME_LEN_MAX {
            return refuse(Errno::ENAMETOOLONG, Part::Name(name.to_owned()), "a name is at most 255 bytes");
        }
    }
    Ok(())
}

/// One xattr of a node of type `kind`; see [`check_node`] for the order.
fn check_xattr(kind: FileType, name: &str, value: &[u8]) -> Result<(), Refusal> {
    let xname = || Part::XattrName(name.to_owned());
    if name.is_empty() || name.len() > XATTR_NAME_LEN_MAX || name.contains('\0') {
        return refuse(Errno::ERANGE, xname(), "an xattr name is 1 to 255 bytes");
    }
    if value.len() > XATTR_SIZE_MAX {
        return refuse(Errno::E2BIG, Part::XattrValue(name.to_owned()), "an xattr value is at most 65536 bytes");
    }
    if name == "security.capability" && !capability_valid(value) {
        return refuse(
            Errno::EINVAL,
            Part::XattrValue(name.to_owned()),
            "security.capability must be a v2 (20 bytes) or v3 (24 bytes) header",
        );
    }
    if name.starts_with("user.") && !matches!(kind, FileType::File | FileType::Dir) {
        return refuse(Errno::EPERM, xname(), "user.* xattrs exist only on regular files and directories");
    }
    if name == "system.posix_acl_access" || name == "system.posix_acl_default" {
        // NOTE(kernel): a well-formed ACL is applied (and may change the mode), which the
        // model does not do; only the malformed header is refused here.
        let header_ok = value.len() >= 4 && (value.len() - 4).is_multiple_of(8) && value[..4] == 2u32.to_le_bytes();
        if !header_ok {
            return refuse(Errno::EINVAL, Part::XattrValue(name.to_owned()), "a POSIX ACL needs a version 2 header");
        }
        return Ok(());
    }
    match ["user.", "trusted.", "security."].iter().find(|p| name.starts_with(*p)) {
        None => refuse(Errno::EOPNOTSUPP, xname(), "tmpfs has only the user., trusted. and security. namespaces"),
        Some(p) if name.len() == p.len() => {
            refuse(Errno::EINVAL, xname(), "an xattr name needs a name after its namespace")
        }
        Some(_) => Ok(()),
    }
}

/// A `security.capability` value `setxattr` accepts (kernel: `cap_convert_nscap`,
/// `validheader`): 20 bytes with revision 2, or 24 bytes with revision 3 and a root uid
/// other than -1; the effective flag (bit 0) may be set.
/// NOTE(kernel): a v3 value with root uid 0 is stored as v2; the model keeps it as given.
fn capability_valid(v: &[u8]) -> bool {
    let word = |i: usize| v.get(i..i + 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    match (v.len(), word(0).map(|m| m & !1)) {
        (20, Some(0x0200_0000)) => true,
        (24, Some(0x0300_0000)) => word(20) != Some(u32::MAX),
        _ => false,
    }
}

/// Whether a layer can hold every node of `flat`: the first refusal, with its path. The root
/// comes first ([`check_root`]), then each node in the order of the entries; links are not
/// checked. [`Layer::try_from_flat`] checks in the same order as it builds.
pub fn check_layer(flat: &FlatLayer) -> Result<(), (String, Refusal)> {
    check_root(&flat.root)?;
    for entry in &flat.entries {
        if let FlatEntry::Node { path, node } = entry {
            check_entry(path, node)?;
        }
    }
    Ok(())
}

/// The root of a flat layer, checked as a directory whatever kind it says; the refusal comes
/// with the path `/`.
pub(crate) fn check_root(root: &FlatNode) -> Result<(), (String, Refusal)> {
    // Copied only to say it is a directory.
    let as_dir;
    let root = if root.kind == FileType::Dir {
        root
    } else {
        as_dir = FlatNode { kind: FileType::Dir, ..root.clone() };
        &as_dir
    };
    check_entry("/", root)
}

/// [`check_node`] for a node entry of a flat layer, the refusal with its path.
pub(crate) fn check_entry(path: &str, node: &FlatNode) -> Result<(), (String, Refusal)> {
    check_node(path, node).map_err(|r| (path.to_owned(), r))
}

impl Layer {
    /// [`Layer::put`], refused as the kernel would refuse it ([`check_node`]).
    pub fn try_put(&mut self, path: &str, inode: Inode) -> Result<Ino, Refusal> {
        check_node(path, &FlatNode::of(&inode))?;
        Ok(self.put(path, inode))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn node(kind: FileType, xattrs: &[(&str, &[u8])]) -> FlatNode {
        FlatNode {
            kind,
            mode: 0o755,
            uid: 0,
            gid: 0,
            data: None,
            target: (kind == FileType::Symlink).then(|| "t".to_owned()),
            rdev: None,
            xattrs: xattrs.iter().map(|(k, v)| ((*k).to_owned(), v.to_vec())).collect::<BTreeMap<_, _>>(),
        }
    }

    /// Building a layer while checking it refuses what `check_layer` refuses, with the same
    /// first refusal and path: problems in the root, in the bottom-up part, after an entry
    /// out of walk order (put by path), several in one layer, a link past a refused node.
    #[test]
    fn checking_while_building_refuses_as_check_layer() {
        use FileType::{Dir, File, Symlink};
        let n = |p: &str, node: FlatNode| FlatEntry::Node { path: p.into(), node };
        let l = |p: &str, to: &str| FlatEntry::Link { path: p.into(), to: to.into() };
        let long = "x".repeat(256);
        let ok = node(File, &[]);
        let cases: Vec<(FlatNode, Vec<FlatEntry>)> = vec![
            (node(Dir, &[]), vec![]),
            (node(Dir, &[]), vec![n("/d", node(Dir, &[])), n("/d/f", ok.clone()), l("/g", "/d/f")]),
            (node(Dir, &[("bad.x", b"v")]), vec![n("/a\0b", ok.clone())]),
            (node(File, &[("user.a", b"v")]), vec![n("/f", node(Symlink, &[("user.a", b"v")]))]),
            (
                node(Dir, &[]),
                vec![n("/d", node(Dir, &[])), n("/d/a\0", ok.clone()), n(&format!("/{long}"), ok.clone())],
            ),
            (
                node(Dir, &[]),
                vec![n("/z", ok.clone()), n("/a", ok.clone()), n("/b", node(Symlink, &[("user.a", b"")]))],
            ),
            (node(Dir, &[]), vec![n("/z", ok.clone()), n("/a", ok.clone()), n("/ok", ok.clone())]),
            (node(Dir, &[]), vec![n("/f", ok.clone()), l("/g", "/f"), n("/h", node(File, &[("", b"")]))]),
            (
                node(Dir, &[]),
                vec![n("/a/b", ok.clone()), n("/c", node(File, &[("user.", b"")])), n("/d", node(File, &[("x", b"")]))],
            ),
        ];
        let mut refused = 0;
        for (root, entries) in cases {
            let flat = FlatLayer { root, entries };
            match (Layer::try_from_flat(&flat), check_layer(&flat)) {
                (Ok(built), Ok(())) => {
                    assert_eq!(built.walk_inodes(), Layer::from_flat(&flat).walk_inodes(), "{flat:?}")
                }
                (Err(got), Err(want)) => {
                    assert_eq!(got, want, "{flat:?}");
                    refused += 1;
                }
                (got, want) => panic!("{flat:?}: built {:?}, checked {want:?}", got.map(|l| l.to_flat())),
            }
        }
        assert_eq!(refused, 6);
    }

    /// The names' total is refused only after every xattr passed its own checks, and names
    /// the xattr that took it over 64 KiB.
    #[test]
    fn xattr_list_over_64k_comes_after_each_xattr() {
        // 300 names of 250 bytes, 251 listed: the 262nd takes the list over 65,536 bytes.
        let names: Vec<String> = (0..300).map(|i| format!("user.{i:03}{}", "x".repeat(242))).collect();
        let mut node = node(FileType::File, &[]);
        node.xattrs = names.iter().map(|n| (n.clone(), Vec::new())).collect();
        let over = check_node("/f", &node).unwrap_err();
        assert_eq!((over.errno, over.part), (Errno::E2BIG, Part::XattrName(names[261].clone())));
        let bad = format!("zz.{}", "x".repeat(10));
        node.xattrs.insert(bad.clone(), Vec::new());
        let first = check_node("/f", &node).unwrap_err();
        assert_eq!((first.errno, first.part), (Errno::EOPNOTSUPP, Part::XattrName(bad)));
    }
}
