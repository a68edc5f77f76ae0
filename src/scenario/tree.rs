//! The node notation: layers, offline edits and expected trees, written as nested mappings.
//!
//! | YAML                         | node                                                     |
//! |------------------------------|----------------------------------------------------------|
//! | `f: hello`                   | regular file with that content, mode 0644                |
//! | `f: !hex "00ff"`             | regular file with binary content                         |
//! | `f: !sparse {size: N, data: {OFFSET: x}}` | a sparse file: holes read as zeros          |
//! | `f: !digest {size: N, hash: H}` | a file known by its digest (merged trees only)        |
//! | `d: {}` / `d: {f: x}`        | directory (mode 0755); `.` holds its own attributes      |
//! | `a/b/c: x`                   | a path key: missing parents are plain directories        |
//! | `s: !symlink ../t`           | symbolic link (mode 0777)                                |
//! | `w: !whiteout`               | whiteout: character device 0/0, mode 0000                |
//! | `x: !xwhiteout`              | xattr whiteout: empty file with `trusted.overlay.whiteout`|
//! | `p: !fifo`                   | FIFO (mode 0644)                                         |
//! | `c: !char [1, 3]`            | character device (mode 0644)                             |
//! | `b: !block [8, 0]`           | block device (mode 0644)                                 |
//! | `h: !link /f`                | another name for the inode at `/f` (layers only)         |
//! | `e: !error ENOENT`           | a listed name whose lstat fails (merged trees only)      |
//!
//! Long forms carry attributes: `!file {data: x, mode: 0600, uid: 1, gid: 1, xattrs: {user.a:
//! v}}`, `!symlink {target: t, ...}`, `!char {rdev: [1, 3], ...}`, `!whiteout {mode: 0644}`;
//! a directory's own attributes go under `.`: `d: {.: {mode: 0700, opaque: y}, f: x}`, where
//! `opaque` and `redirect` stand for the `trusted.overlay.opaque` and
//! `trusted.overlay.redirect` xattrs. In merged trees, `nlink` and `ino` (a label) may be
//! given too.

use super::cx::{key, type_name, AsPath, Cx, Fields, Path};
use super::emit::{Style, Y};
use super::locate::YamlPath;
use super::node::Node as Value;
use crate::backend::MergedTree;
use crate::errno::Errno;
use crate::layer::{Digest, FileData, FileType, FlatEntry, FlatLayer, FlatNode, READ_INLINE_MAX};
use crate::path::join;
use std::collections::{BTreeMap, HashMap};

/// `trusted.overlay.opaque`: `y` makes a directory opaque, `x` marks xattr whiteouts.
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";
/// `trusted.overlay.redirect`: where lookup continues below a renamed directory.
pub const REDIRECT_XATTR: &str = "trusted.overlay.redirect";
/// `trusted.overlay.whiteout`: on an empty regular file, makes it an xattr whiteout.
pub const XWHITEOUT_XATTR: &str = "trusted.overlay.whiteout";

/// Which kind of tree a notation is read as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TreeContext {
    /// A layer as on disk: hard links (`!link`), no `nlink`, `ino` or `!error`.
    Layer,
    /// The merged view as lstat shows it: `nlink`, `ino` labels and `!error`.
    Merged,
}

/// What a node is, with its payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TreeKind {
    /// A directory and its entries, by name.
    Dir(BTreeMap<String, TreeNode>),
    /// A regular file and its data.
    File(FileData),
    /// A regular file known only by its digest, as a `read` of a file over
    /// [`READ_INLINE_MAX`] bytes shows it (merged trees only).
    Digest(Digest),
    /// A symbolic link and its target.
    Symlink(String),
    /// A character device (0/0 is a whiteout).
    Char(u32, u32),
    /// A block device.
    Block(u32, u32),
    /// A FIFO.
    Fifo,
    /// Another name for the inode at this path of the same layer (layers only).
    Link(String),
    /// A name that readdir lists but whose lstat fails with this errno (merged trees only).
    Error(Errno),
}

/// One node of a tree in the notation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeNode {
    /// What it is.
    pub kind: TreeKind,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Extended attributes, overlay's markers included.
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// The link count, in merged trees (`None`: the default, 1 for a non-directory and 2
    /// plus the subdirectories for a directory).
    pub nlink: Option<u32>,
    /// The inode label, in merged trees (`None`: not checked).
    pub ino: Option<String>,
}

impl TreeNode {
    /// A node of this kind with default attributes.
    pub fn new(kind: TreeKind) -> TreeNode {
        let mode = default_mode(&kind);
        TreeNode { kind, mode, uid: 0, gid: 0, xattrs: BTreeMap::new(), nlink: None, ino: None }
    }

    /// An empty directory, mode 0755.
    pub fn dir() -> TreeNode {
        TreeNode::new(TreeKind::Dir(BTreeMap::new()))
    }

    /// The entries, for a directory.
    pub fn entries(&self) -> Option<&BTreeMap<String, TreeNode>> {
        match &self.kind {
            TreeKind::Dir(e) => Some(e),
            _ => None,
        }
    }

    /// The link count a node has when none is given: 1 for a non-directory, 2 plus the
    /// subdirectories for a directory (as on tmpfs).
    pub fn default_nlink(&self) -> u32 {
        match &self.kind {
            TreeKind::Dir(e) => 2 + e.values().filter(|n| matches!(n.kind, TreeKind::Dir(_))).count() as u32,
            _ => 1,
        }
    }

    fn attrs_default(&self) -> bool {
        self.mode == default_mode(&self.kind)
            && self.uid == 0
            && self.gid == 0
            && self.xattrs.is_empty()
            && self.nlink.is_none_or(|n| n == self.default_nlink())
            && self.ino.is_none()
    }
}

/// The mode a node has when none is given.
pub fn default_mode(kind: &TreeKind) -> u32 {
    match kind {
        TreeKind::Dir(_) => 0o755,
        TreeKind::Symlink(_) => 0o777,
        TreeKind::Char(0, 0) => 0,
        TreeKind::Link(_) | TreeKind::Error(_) => 0,
        TreeKind::File(_) | TreeKind::Digest(_) | TreeKind::Char(..) | TreeKind::Block(..) | TreeKind::Fifo => 0o644,
    }
}

// ---------------------------------------------------------------------------------------
// Reading the notation.

/// Reads a whole tree (a layer root or a merged root): a mapping, or an empty value for an
/// empty root directory. Layer trees come back with their hard links in canonical form.
pub(crate) fn parse_tree(cx: &mut Cx, v: &Value, path: &Path, ctx: TreeContext) -> Option<TreeNode> {
    let mut links = Vec::new();
    let node = read_tree(cx, v, path, ctx, &mut links)?;
    if ctx == TreeContext::Layer && !links.is_empty() {
        // Without a `!link`, the canonical form is the tree as read (a test checks it).
        return layer_flat(cx, &node, &links, path).map(|flat| tree_from_flat(&flat));
    }
    Some(node)
}

/// Reads a layer tree into its flat form: [`tree_to_flat`] of what [`parse_tree`] gives for
/// a layer, with the tree built once.
pub(crate) fn parse_layer(cx: &mut Cx, v: &Value, path: &Path) -> Option<FlatLayer> {
    if let Value::Mapping(m) = v {
        if let Some(count) = plain_names(m) {
            return parse_plain_layer(cx, v, m, path, count);
        }
    }
    parse_layer_tree(cx, v, path)
}

/// [`parse_layer`] through the tree: every layer tree can be read so (path keys merged,
/// `!link`s resolved).
fn parse_layer_tree(cx: &mut Cx, v: &Value, path: &Path) -> Option<FlatLayer> {
    let mut links = Vec::new();
    let node = read_tree(cx, v, path, TreeContext::Layer, &mut links)?;
    match plain_count(&node) {
        Some(count) => Some(tree_into_flat(node, count)),
        None => layer_flat(cx, &node, &links, path),
    }
}

/// Reads a merged tree (a check's `merged:`) into its flat form: [`FlatTree::from_tree`]
/// of what [`parse_tree`] gives for a merged tree, with no [`TreeNode`] directory maps
/// when every key is one plain name ([`plain_names`]).
pub(crate) fn parse_merged(cx: &mut Cx, v: &Value, path: &Path) -> Option<FlatTree> {
    if let Value::Mapping(m) = v {
        if let Some(count) = plain_names(m) {
            return parse_plain_merged(cx, m, path, count);
        }
    }
    parse_merged_tree(cx, v, path)
}

/// [`parse_merged`] through the tree: every merged tree can be read so.
fn parse_merged_tree(cx: &mut Cx, v: &Value, path: &Path) -> Option<FlatTree> {
    parse_tree(cx, v, path, TreeContext::Merged).map(|t| FlatTree::from_tree(&t))
}

/// [`parse_merged`] of the mapping `m` when [`plain_names`] counts `count` nodes in it:
/// every node read as [`parse_node`] reads it, in the same order (so the problems are
/// its), each directory's explicit `nlink` dropped when it is the default, as
/// [`parse_node`] drops it; the entries then put in walk order ([`walk_order`]).
fn parse_plain_merged(cx: &mut Cx, m: &super::node::Mapping, path: &Path, count: usize) -> Option<FlatTree> {
    let mut entries = Vec::with_capacity(count);
    let root = plain_dir(cx, m, path, &mut String::from("/"), 0, &mut entries)?;
    entries.sort_by(|(a, _), (b, _)| walk_order(a, b));
    Some(FlatTree { root, entries })
}

/// The number of nodes below a layer tree's root when every key of it and of its
/// directories is one plain name (a string, not empty, without `/` or a NUL, not `..`; `.`
/// holds a directory's attributes) and no node is a `!link`, else `None`. Such a tree has
/// no path key to merge and no name given twice: [`parse_plain_layer`] reads it.
fn plain_names(m: &super::node::Mapping) -> Option<usize> {
    let mut count = 0;
    for (k, v) in m {
        let Value::String(name) = k else { return None };
        if *name == "." {
            continue;
        }
        if name.is_empty() || *name == ".." || name.bytes().any(|c| c == b'/' || c == 0) {
            return None;
        }
        count += 1 + match v {
            Value::Mapping(sub) => plain_names(sub)?,
            Value::Tagged(t) if t.tag.0.trim_start_matches('!') == "link" => return None,
            _ => 0,
        };
    }
    Some(count)
}

/// [`parse_layer`] of the mapping `v` (`m`) when [`plain_names`] counts `count` nodes in
/// it: the flat form built straight from the nodes, with no [`TreeNode`] directory maps.
/// Every node is read and checked as [`parse_node`] and [`check_layer_node`] do it, in
/// the same order, so the problems are theirs; the entries are then put in walk order
/// ([`walk_order`]).
fn parse_plain_layer(cx: &mut Cx, v: &Value, m: &super::node::Mapping, path: &Path, count: usize) -> Option<FlatLayer> {
    let mut entries = Vec::with_capacity(count);
    let mut lpath = String::from("/");
    let root = plain_dir(cx, m, path, &mut lpath, 0, &mut entries)?;
    let (mut rootf, _) = node_into_flat(root);
    if !check_layer_flat(cx, "/", &rootf, v, path) {
        return None;
    }
    rootf.kind = FileType::Dir;
    entries.sort_by(|a, b| match (a, b) {
        (FlatEntry::Node { path: a, .. }, FlatEntry::Node { path: b, .. }) => walk_order(a, b),
        _ => unreachable!("a plain layer has no links"),
    });
    Some(FlatLayer { root: rootf, entries })
}

/// Where [`plain_dir`] puts the nodes it reads: a merged tree's entries
/// ([`parse_plain_merged`]) or a layer's ([`parse_plain_layer`]).
trait PlainOut {
    /// What the tree is read as.
    const CTX: TreeContext;
    /// Makes the place of the entry at `path`, before its node is read: a directory's entry
    /// goes before what is in it.
    fn make_place(&mut self, path: &str);
    /// Puts `node`, read at key `name` (`val`, at `kp`), in the place made at `at`; false
    /// if it is refused.
    fn fill(&mut self, cx: &mut Cx, at: usize, name: &str, node: TreeNode, val: &Value, kp: &Path) -> bool;
    /// Ends a directory read with `subdirs` directories in it.
    fn finish_dir(dir: &mut TreeNode, subdirs: u32);
    /// The number of places made.
    fn places(&self) -> usize;
}

impl PlainOut for Vec<(String, TreeNode)> {
    const CTX: TreeContext = TreeContext::Merged;
    fn make_place(&mut self, path: &str) {
        self.push((path.to_owned(), TreeNode::dir()));
    }
    fn fill(&mut self, _: &mut Cx, at: usize, _: &str, node: TreeNode, _: &Value, _: &Path) -> bool {
        self[at].1 = node;
        true
    }
    /// An explicit `nlink` that is the default (`TreeNode::default_nlink` of the directory
    /// with its entries in it) is dropped, as [`parse_node`] drops it.
    fn finish_dir(dir: &mut TreeNode, subdirs: u32) {
        if dir.nlink == Some(2 + subdirs) {
            dir.nlink = None;
        }
    }
    fn places(&self) -> usize {
        self.len()
    }
}

impl PlainOut for Vec<FlatEntry> {
    const CTX: TreeContext = TreeContext::Layer;
    fn make_place(&mut self, path: &str) {
        self.push(FlatEntry::Node { path: path.to_owned(), node: node_into_flat(TreeNode::dir()).0 });
    }
    /// The node is checked as [`check_layer_node`] checks it.
    fn fill(&mut self, cx: &mut Cx, at: usize, name: &str, node: TreeNode, val: &Value, kp: &Path) -> bool {
        let (node, _) = node_into_flat(node);
        if !check_layer_flat(cx, name, &node, val, kp) {
            return false;
        }
        if let FlatEntry::Node { node: slot, .. } = &mut self[at] {
            *slot = node;
        }
        true
    }
    fn finish_dir(dir: &mut TreeNode, _: u32) {
        debug_assert!(dir.nlink.is_none(), "a layer tree takes no nlink");
    }
    fn places(&self) -> usize {
        self.len()
    }
}

/// The directory of mapping `m` at path `tpath`, `depth` components below the root, read
/// on the plain path ([`plain_names`]) for [`parse_plain_merged`] and [`parse_plain_layer`]:
/// its own node (its entries not in it), with every node below it put in `out` (each before
/// what is in it, in document order, so that a tree written in name order is in walk order
/// as read).
fn plain_dir<O: PlainOut>(
    cx: &mut Cx,
    m: &super::node::Mapping,
    path: &Path,
    tpath: &mut String,
    depth: usize,
    out: &mut O,
) -> Option<TreeNode> {
    let mut dir = TreeNode::dir();
    let mut ok = true;
    // The subdirectories read, for the default link count.
    let mut subdirs = 0u32;
    for (k, val) in m {
        let Value::String(name) = k else { unreachable!("plain_names takes string keys only") };
        let kp = key(path, name);
        if *name == "." {
            ok &= parse_dir_attrs(cx, val, &kp, O::CTX, &mut dir);
            continue;
        }
        if depth + 1 > DEPTH_MAX {
            cx.key_problem(
                &kp,
                format!("too deep: {} path components, more than the {DEPTH_MAX} a tree may have", depth + 1),
            );
            ok = false;
            continue;
        }
        let len = tpath.len();
        if len > 1 {
            tpath.push('/');
        }
        tpath.push_str(name);
        let at = out.places();
        out.make_place(tpath);
        let child = match val {
            Value::Mapping(sub) => plain_dir(cx, sub, &kp, tpath, depth + 1, out),
            _ => parse_node(cx, val, &kp, O::CTX, tpath, &mut Vec::new()),
        };
        tpath.truncate(len);
        let Some(child) = child else {
            ok = false;
            continue;
        };
        let is_dir = matches!(child.kind, TreeKind::Dir(_));
        if !out.fill(cx, at, name, child, val, &kp) {
            ok = false;
            continue;
        }
        subdirs += u32::from(is_dir);
    }
    O::finish_dir(&mut dir, subdirs);
    ok.then_some(dir)
}

/// The order of [`walk`] (and of a layer's walk) on paths whose names have no NUL: a
/// directory before what is in it, names in byte order, which is byte order with `/`
/// below every other byte.
fn walk_order(a: &str, b: &str) -> std::cmp::Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let same = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let key = |c: u8| if c == b'/' { 0 } else { c };
    match (a.get(same), b.get(same)) {
        (Some(&x), Some(&y)) => key(x).cmp(&key(y)),
        _ => a.len().cmp(&b.len()),
    }
}

/// The number of nodes below a tree's root when none is a `!link` or an `!error` (which
/// only [`tree_to_flat`] reads), else `None`.
fn plain_count(n: &TreeNode) -> Option<usize> {
    match &n.kind {
        TreeKind::Link(_) | TreeKind::Error(_) => None,
        TreeKind::Dir(entries) => entries.values().try_fold(entries.len(), |sum, c| Some(sum + plain_count(c)?)),
        _ => Some(0),
    }
}

/// [`tree_to_flat`] of a tree of `count` nodes below its root, none a `!link` or an
/// `!error` ([`plain_count`]): every path a node of its own, in walk order, with the tree's
/// data, targets and xattrs moved into the flat nodes rather than copied.
fn tree_into_flat(root: TreeNode, count: usize) -> FlatLayer {
    fn go(entries: BTreeMap<String, TreeNode>, path: &mut String, out: &mut Vec<FlatEntry>) {
        for (name, child) in entries {
            let len = path.len();
            if len > 1 {
                path.push('/');
            }
            path.push_str(&name);
            let (node, below) = node_into_flat(child);
            out.push(FlatEntry::Node { path: path.clone(), node });
            if let Some(below) = below {
                go(below, path, out);
            }
            path.truncate(len);
        }
    }
    let (mut rootf, below) = node_into_flat(root);
    rootf.kind = FileType::Dir;
    let mut entries = Vec::with_capacity(count);
    if let Some(below) = below {
        go(below, &mut String::from("/"), &mut entries);
    }
    FlatLayer { root: rootf, entries }
}

/// [`node_to_flat`], taking the node: its flat form, and a directory's entries.
fn node_into_flat(n: TreeNode) -> (FlatNode, Option<BTreeMap<String, TreeNode>>) {
    let mut below = None;
    let (kind, data, target, rdev) = match n.kind {
        TreeKind::Dir(entries) => {
            below = Some(entries);
            (FileType::Dir, None, None, None)
        }
        TreeKind::Link(_) | TreeKind::Error(_) => (FileType::Dir, None, None, None),
        TreeKind::File(d) => (FileType::File, Some(d), None, None),
        TreeKind::Digest(_) => (FileType::File, None, None, None),
        TreeKind::Symlink(t) => (FileType::Symlink, None, Some(t), None),
        TreeKind::Char(a, b) => (FileType::Char, None, None, Some((a, b))),
        TreeKind::Block(a, b) => (FileType::Block, None, None, Some((a, b))),
        TreeKind::Fifo => (FileType::Fifo, None, None, None),
    };
    (FlatNode { kind, mode: n.mode, uid: n.uid, gid: n.gid, data, target, rdev, xattrs: n.xattrs }, below)
}

/// The flat form of a layer tree read from `path`; a bad `!link` is a problem at the link.
fn layer_flat(cx: &mut Cx, node: &TreeNode, links: &[(String, YamlPath)], path: &Path) -> Option<FlatLayer> {
    match tree_to_flat(node) {
        Ok(flat) => Some(flat),
        Err((p, msg)) => {
            let at =
                links.iter().find(|(lp, _)| *lp == p).map(|(_, yp)| yp.clone()).unwrap_or_else(|| path.yaml_path());
            cx.problem(&at, msg);
            None
        }
    }
}

/// A tree as written (links as written too): a mapping, or an empty value for an empty
/// root directory.
fn read_tree(
    cx: &mut Cx,
    v: &Value,
    path: &Path,
    ctx: TreeContext,
    links: &mut Vec<(String, YamlPath)>,
) -> Option<TreeNode> {
    let node = match v {
        Value::Null => TreeNode::dir(),
        Value::Mapping(_) => {
            let node = parse_node(cx, v, path, ctx, "/", links)?;
            if ctx == TreeContext::Layer && !check_layer_node(cx, "/", &node, v, path) {
                return None;
            }
            node
        }
        other => {
            cx.problem(path, format!("a tree must be a mapping of names to nodes, not {}", type_name(other)));
            return None;
        }
    };
    Some(node)
}

/// The most path components a node of a tree in a scenario may have below its root. The
/// kernel has no such limit on a layer, but a path through the merged view is at most
/// `PATH_MAX` (4,096) bytes, so nothing deeper than 2,048 components can be reached by a
/// step; half of that keeps every walk of the tree well inside a thread's stack.
pub const DEPTH_MAX: usize = 1024;

/// Reads one node at layer path `lpath`.
pub(crate) fn parse_node(
    cx: &mut Cx,
    v: &Value,
    path: &Path,
    ctx: TreeContext,
    lpath: &str,
    links: &mut Vec<(String, YamlPath)>,
) -> Option<TreeNode> {
    match v {
        Value::String(s) => Some(file_node(s.as_bytes(), ctx)),
        Value::Mapping(m) => {
            let mut dir = TreeNode::dir();
            let mut entries = BTreeMap::new();
            let mut ok = true;
            let lpath_depth = lpath.split('/').filter(|c| !c.is_empty()).count();
            for (k, val) in m.iter() {
                let number;
                let kp = match k {
                    Value::String(s) => key(path, s),
                    Value::Number(n) => {
                        number = n.to_string();
                        key(path, &number)
                    }
                    _ => *path,
                };
                let Some(name) = cx.key_text(k, &kp) else {
                    ok = false;
                    continue;
                };
                if name == "." {
                    ok &= parse_dir_attrs(cx, val, &kp, ctx, &mut dir);
                    continue;
                }
                if name.contains('\0') {
                    cx.key_problem(&kp, format!("name {name:?} contains a NUL byte"));
                    ok = false;
                    continue;
                }
                let whole: &str = &name;
                let split: Vec<&str>;
                let parts: &[&str] = if name.contains('/') {
                    split = name.split('/').collect();
                    &split
                } else {
                    std::slice::from_ref(&whole)
                };
                if parts.iter().any(|p| p.is_empty() || *p == "." || *p == "..") {
                    cx.key_problem(
                        &kp,
                        format!(
                            "name {name:?} is not a relative path of plain names (no leading, \
                             trailing or double `/`, no `.` or `..`)"
                        ),
                    );
                    ok = false;
                    continue;
                }
                let depth = lpath_depth + parts.len();
                if depth > DEPTH_MAX {
                    cx.key_problem(
                        &kp,
                        format!("too deep: {depth} path components, more than the {DEPTH_MAX} a tree may have"),
                    );
                    ok = false;
                    continue;
                }
                // The parts are plain names, so this is the path the parts lead to.
                let child_lpath = join(lpath, &name);
                let Some(child) = parse_node(cx, val, &kp, ctx, &child_lpath, links) else {
                    ok = false;
                    continue;
                };
                if ctx == TreeContext::Layer && !check_layer_node(cx, &name, &child, val, &kp) {
                    ok = false;
                    continue;
                }
                let inserted = if parts.len() > 1 {
                    insert(&mut entries, parts, child)
                } else {
                    // `insert` of one name, with the name moved in.
                    match entries.get_mut(&name) {
                        None => {
                            entries.insert(name, child);
                            Ok(())
                        }
                        Some(existing) => merge(existing, child, &name),
                    }
                };
                if let Err(msg) = inserted {
                    cx.key_problem(&kp, msg);
                    ok = false;
                }
            }
            dir.kind = TreeKind::Dir(entries);
            if let Some(n) = dir.nlink {
                // Keep an explicit nlink only when it says something.
                if n == dir.default_nlink() {
                    dir.nlink = None;
                }
            }
            ok.then_some(dir)
        }
        Value::Tagged(t) => {
            // The tag's name without its `!`s (`t.tag` holds it without the first).
            let tag = t.tag.0.trim_start_matches('!');
            parse_tagged(cx, tag, &t.value, path, ctx, lpath, links)
        }
        Value::Null => {
            cx.problem(path, "an empty node: write '' for an empty file or {} for an empty directory");
            None
        }
        other => {
            cx.problem(
                path,
                format!(
                    "a node must be a string (a file), a mapping (a directory) or a tagged \
                     node such as !symlink, not {}; quote file content",
                    type_name(other)
                ),
            );
            None
        }
    }
}

/// Refuses, where the file writes it, a layer node that no layer can hold
/// ([`crate::layer::check::check_node`], with the kernel's errno): `names` is the part of
/// the layer path that this node's key spells, `v` the node's value at `vpath`. A name is
/// placed at the key, a symlink target at its value, an xattr at its name or its value.
pub(crate) fn check_layer_node(cx: &mut Cx, names: &str, node: &TreeNode, v: &Value, vpath: &Path) -> bool {
    if matches!(node.kind, TreeKind::Link(_) | TreeKind::Error(_)) {
        return true;
    }
    check_layer_flat(cx, names, &node_to_flat(node), v, vpath)
}

/// [`check_layer_node`] of a node in its flat form.
fn check_layer_flat(cx: &mut Cx, names: &str, node: &FlatNode, v: &Value, vpath: &Path) -> bool {
    use crate::layer::check::{check_node, Part};
    let Err(refusal) = check_node(names, node) else { return true };
    let message = refusal.to_string();
    match &refusal.part {
        Part::Name(_) => cx.key_problem(vpath, message),
        Part::Target => match v {
            Value::Tagged(t) if matches!(t.value, Value::Mapping(_)) => cx.problem(&key(vpath, "target"), message),
            _ => cx.problem(vpath, message),
        },
        Part::XattrName(n) => cx.key_problem(&xattr_at(v, vpath, n), message),
        Part::XattrValue(n) => cx.problem(&xattr_at(v, vpath, n), message),
    }
    false
}

/// Where a node's xattr `name` is written: under `xattrs`, or as the `opaque` or
/// `redirect` short form of a directory's `.`.
fn xattr_at(v: &Value, vpath: &Path, name: &str) -> YamlPath {
    match v {
        Value::Mapping(m) => {
            let dot = key(vpath, ".");
            let attrs = m.iter().find(|(k, _)| k.as_str() == Some(".")).map(|(_, a)| a);
            let short = match name {
                OPAQUE_XATTR => Some("opaque"),
                REDIRECT_XATTR => Some("redirect"),
                _ => None,
            };
            match (attrs, short) {
                (Some(Value::Mapping(a)), Some(f)) if a.iter().any(|(k, _)| k.as_str() == Some(f)) => {
                    key(&dot, f).yaml_path()
                }
                _ => key(&key(&dot, "xattrs"), name).yaml_path(),
            }
        }
        _ => key(&key(vpath, "xattrs"), name).yaml_path(),
    }
}

/// Puts `node` at the relative path `parts` under `entries`, making plain parent
/// directories. Two directories given for one name merge.
fn insert(entries: &mut BTreeMap<String, TreeNode>, parts: &[&str], node: TreeNode) -> Result<(), String> {
    let (first, rest) = parts.split_first().expect("a path has a name");
    if rest.is_empty() {
        match entries.get_mut(*first) {
            None => {
                entries.insert((*first).to_owned(), node);
                Ok(())
            }
            Some(existing) => merge(existing, node, first),
        }
    } else {
        // The parent's name is copied only when the parent is made.
        if !entries.contains_key(*first) {
            entries.insert((*first).to_owned(), TreeNode::dir());
        }
        let slot = entries.get_mut(*first).expect("put in above");
        match &mut slot.kind {
            TreeKind::Dir(sub) => insert(sub, rest, node),
            _ => Err(format!("{first:?} is given as a non-directory and as a parent")),
        }
    }
}

fn merge(existing: &mut TreeNode, node: TreeNode, name: &str) -> Result<(), String> {
    match (&mut existing.kind, node.kind) {
        (TreeKind::Dir(a), TreeKind::Dir(b)) => {
            let attrs = TreeNode { kind: TreeKind::Dir(BTreeMap::new()), ..node };
            if !attrs.attrs_default() {
                existing.mode = attrs.mode;
                existing.uid = attrs.uid;
                existing.gid = attrs.gid;
                existing.xattrs = attrs.xattrs;
                existing.nlink = attrs.nlink;
                existing.ino = attrs.ino;
            }
            for (n, child) in b {
                match a.get_mut(&n) {
                    None => {
                        a.insert(n, child);
                    }
                    Some(e) => merge(e, child, &n)?,
                }
            }
            Ok(())
        }
        _ => Err(format!("{name:?} is given twice")),
    }
}

/// The attribute fields every long form takes.
const COMMON: &[&str] = &["mode", "uid", "gid", "xattrs"];
/// The fields merged trees add.
const MERGED: &[&str] = &["nlink", "ino"];

/// The fields a long form takes: `extra`, then [`COMMON`], then in merged trees [`MERGED`]
/// (held on the stack).
fn allowed(extra: &[&'static str], ctx: TreeContext) -> Allowed {
    let mut a = Allowed { names: [""; 8], len: 0 };
    for group in [extra, COMMON, if ctx == TreeContext::Merged { MERGED } else { &[] }] {
        a.names[a.len..a.len + group.len()].copy_from_slice(group);
        a.len += group.len();
    }
    a
}

/// The fields a long form takes (see [`allowed`]).
struct Allowed {
    names: [&'static str; 8],
    len: usize,
}

impl std::ops::Deref for Allowed {
    type Target = [&'static str];

    fn deref(&self) -> &[&'static str] {
        &self.names[..self.len]
    }
}

/// Reads the common attributes from `fields` into `node`; returns the other fields.
fn common_attrs<'v, 'n>(
    cx: &mut Cx,
    fields: Fields<'v, 'n>,
    path: &Path,
    node: &mut TreeNode,
) -> (bool, Fields<'v, 'n>) {
    let mut ok = true;
    let mut rest = Fields::new();
    for (k, v) in fields {
        let p = key(path, &k);
        match &*k {
            "mode" => match cx.mode(v, &p) {
                Some(m) => node.mode = m,
                None => ok = false,
            },
            "uid" => match cx.uint(v, &p, "uid") {
                Some(u) => node.uid = u,
                None => ok = false,
            },
            "gid" => match cx.uint(v, &p, "gid") {
                Some(g) => node.gid = g,
                None => ok = false,
            },
            "nlink" => match cx.uint(v, &p, "nlink") {
                Some(n) => node.nlink = Some(n),
                None => ok = false,
            },
            "ino" => match cx.label(v, &p) {
                Some(l) => node.ino = Some(l),
                None => ok = false,
            },
            "xattrs" => match parse_xattrs(cx, v, &p) {
                Some(x) => node.xattrs.extend(x),
                None => ok = false,
            },
            _ => rest.push((k, v)),
        }
    }
    (ok, rest)
}

/// Reads an xattr mapping: name to string or `!hex` value.
pub(crate) fn parse_xattrs(cx: &mut Cx, v: &Value, path: &Path) -> Option<BTreeMap<String, Vec<u8>>> {
    let m = cx.mapping(v, path, "xattrs")?;
    let mut out = BTreeMap::new();
    let mut ok = true;
    for (name, val) in cx.fields(m, path, &[], "xattrs") {
        let p = key(path, &name);
        if name.is_empty() || name.contains('\0') {
            cx.key_problem(&p, format!("xattr name {name:?} is empty or contains NUL"));
            ok = false;
            continue;
        }
        match cx.bytes(val, &p, "an xattr value") {
            Some(b) => {
                out.insert(name.into_owned(), b);
            }
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn parse_dir_attrs(cx: &mut Cx, v: &Value, path: &Path, ctx: TreeContext, dir: &mut TreeNode) -> bool {
    let Some(m) = cx.mapping(v, path, "the directory attributes `.`") else {
        return false;
    };
    let fields = cx.fields(m, path, &allowed(&["opaque", "redirect"], ctx), "directory attributes");
    let (mut ok, rest) = common_attrs(cx, fields, path, dir);
    for (k, v) in rest {
        let p = key(path, &k);
        let name = if k == "opaque" { OPAQUE_XATTR } else { REDIRECT_XATTR };
        match cx.bytes(v, &p, &k) {
            Some(b) => {
                if dir.xattrs.insert(name.to_owned(), b).is_some() {
                    cx.problem(&p, format!("`{k}` and the xattr {name} are both given"));
                    ok = false;
                }
            }
            None => ok = false,
        }
    }
    ok
}

fn parse_tagged(
    cx: &mut Cx,
    tag: &str,
    v: &Value,
    path: &Path,
    ctx: TreeContext,
    lpath: &str,
    links: &mut Vec<(String, YamlPath)>,
) -> Option<TreeNode> {
    // Short forms first.
    match (tag, v) {
        ("hex", _) => return Some(file_node(&cx.hex(v, path)?, ctx)),
        ("file", Value::String(s)) => return Some(file_node(s.as_bytes(), ctx)),
        ("symlink", Value::String(_)) => {
            let t = cx.text_no_nul(v, path, "a symlink target")?;
            return Some(TreeNode::new(TreeKind::Symlink(t)));
        }
        ("whiteout", Value::Null) => return Some(TreeNode::new(TreeKind::Char(0, 0))),
        ("xwhiteout", Value::Null) => {
            let mut n = TreeNode::new(TreeKind::File(FileData::new()));
            n.xattrs.insert(XWHITEOUT_XATTR.to_owned(), Vec::new());
            return Some(n);
        }
        ("fifo", Value::Null) => return Some(TreeNode::new(TreeKind::Fifo)),
        ("char" | "block", Value::Sequence(_)) => {
            let (a, b) = cx.rdev(v, path)?;
            let k = if tag == "char" { TreeKind::Char(a, b) } else { TreeKind::Block(a, b) };
            return Some(TreeNode::new(k));
        }
        ("link", _) => {
            if ctx != TreeContext::Layer {
                cx.problem(path, "!link is for layers; in a merged tree, give both names the same `ino` label");
                return None;
            }
            let to = cx.abs_path(v, path, "a !link target (a path in the same layer)")?;
            links.push((lpath.to_owned(), path.yaml_path()));
            return Some(TreeNode::new(TreeKind::Link(to)));
        }
        ("error", _) => {
            if ctx != TreeContext::Merged {
                cx.problem(path, "!error is for merged trees (a name whose lstat fails)");
                return None;
            }
            return Some(TreeNode::new(TreeKind::Error(cx.errno(v, path)?)));
        }
        _ => {}
    }
    let extra: &[&'static str] = match tag {
        "file" => &["data"],
        "sparse" => &["size", "data"],
        "digest" if ctx == TreeContext::Merged => &["size", "hash"],
        "digest" => {
            cx.problem(path, "!digest is for merged trees; a layer's file gives its data (!sparse for a large one)");
            return None;
        }
        "symlink" => &["target"],
        "char" | "block" => &["rdev"],
        "whiteout" | "xwhiteout" | "fifo" => &[],
        other => {
            cx.problem(
                path,
                format!(
                    "unknown node tag !{other}; expected one of !file, !hex, !sparse, !digest, \
                     !symlink, !whiteout, !xwhiteout, !fifo, !char, !block, !link, !error"
                ),
            );
            return None;
        }
    };
    let Value::Mapping(m) = v else {
        cx.problem(
            path,
            format!(
                "!{tag} takes {}, not {}",
                match tag {
                    "file" => "a string or a mapping of attributes",
                    "sparse" => "a mapping: size, data (offsets to content) and attributes",
                    "digest" => "a mapping: size, hash and attributes",
                    "symlink" => "a target string or a mapping of attributes",
                    "char" | "block" => "[major, minor] or a mapping of attributes",
                    _ => "nothing or a mapping of attributes",
                },
                type_name(v)
            ),
        );
        return None;
    };
    let fields = cx.fields(m, path, &allowed(extra, ctx), format_args!("!{tag}"));
    if tag == "sparse" || tag == "digest" {
        return parse_sized(cx, tag, fields, path, ctx);
    }
    let kind = match tag {
        "file" | "xwhiteout" => TreeKind::File(FileData::new()),
        "symlink" => TreeKind::Symlink(String::new()),
        "char" => TreeKind::Char(0, 0),
        "block" => TreeKind::Block(0, 0),
        "whiteout" => TreeKind::Char(0, 0),
        _ => TreeKind::Fifo,
    };
    let mut node = TreeNode::new(kind);
    let mut given_mode = false;
    for (k, _) in &fields {
        given_mode |= k == "mode";
    }
    let (mut ok, rest) = common_attrs(cx, fields, path, &mut node);
    let mut have_target = tag != "symlink";
    let mut have_rdev = !matches!(tag, "char" | "block");
    for (k, v) in rest {
        let p = key(path, &k);
        match &*k {
            "data" => match cx.bytes(v, &p, "data") {
                Some(b) => node.kind = file_node(&b, ctx).kind,
                None => ok = false,
            },
            "target" => match cx.text_no_nul(v, &p, "a symlink target") {
                Some(t) => {
                    node.kind = TreeKind::Symlink(t);
                    have_target = true;
                }
                None => ok = false,
            },
            "rdev" => match cx.rdev(v, &p) {
                Some((a, b)) => {
                    node.kind = if tag == "char" { TreeKind::Char(a, b) } else { TreeKind::Block(a, b) };
                    have_rdev = true;
                    if !given_mode {
                        node.mode = default_mode(&node.kind);
                    }
                }
                None => ok = false,
            },
            _ => unreachable!("fields are checked against the allowed list"),
        }
    }
    if !have_target {
        cx.problem(path, "!symlink needs a `target`");
        ok = false;
    }
    if !have_rdev {
        cx.problem(path, format!("!{tag} needs `rdev: [major, minor]`"));
        ok = false;
    }
    if tag == "xwhiteout" {
        node.xattrs.entry(XWHITEOUT_XATTR.to_owned()).or_default();
    }
    ok.then_some(node)
}

/// A regular file with `bytes`, as a tree of `ctx` shows it.
fn file_node(bytes: &[u8], ctx: TreeContext) -> TreeNode {
    TreeNode::new(file_kind(FileData::from_bytes(bytes), ctx))
}

/// A regular file's kind in a tree of `ctx`: in a merged tree, a file over
/// [`READ_INLINE_MAX`] bytes is known by its digest, as `read` shows it.
fn file_kind(data: FileData, ctx: TreeContext) -> TreeKind {
    if ctx == TreeContext::Merged && data.len() > READ_INLINE_MAX {
        TreeKind::Digest(data.digest())
    } else {
        TreeKind::File(data)
    }
}

/// Reads the data of a sparse file: `size`, and `data`, a mapping of offsets to content
/// (a string or `!hex`), in increasing order, none overlapping the one before or ending
/// past `size`. What lies between reads as zeros.
pub(crate) fn parse_sparse(cx: &mut Cx, size: &Value, data: Option<&Value>, path: &Path) -> Option<FileData> {
    let size: u64 = cx.uint(size, &key(path, "size"), "size")?;
    let mut file = FileData::hole(size);
    let Some(data) = data else {
        return Some(file);
    };
    let dp = key(path, "data");
    let m = cx.mapping(data, &dp, "data (offsets to content)")?;
    let mut ok = true;
    let mut end = 0u64;
    for (k, v) in cx.fields(m, &dp, &[], "data") {
        let p = key(&dp, &k);
        let Ok(offset) = k.parse::<u64>() else {
            cx.key_problem(&p, format!("{k:?} is not an offset (a whole number of bytes)"));
            ok = false;
            continue;
        };
        let Some(bytes) = cx.bytes(v, &p, "content") else {
            ok = false;
            continue;
        };
        if offset < end {
            cx.key_problem(&p, format!("offset {offset} overlaps the content before it, which ends at {end}"));
            ok = false;
            continue;
        }
        end = offset + bytes.len() as u64;
        if end > size {
            cx.key_problem(&p, format!("the content at {offset} ends at {end}, past the size {size}"));
            ok = false;
            continue;
        }
        file.write(offset, &bytes);
    }
    ok.then_some(file)
}

/// Reads a digest: `size` and `hash` (16 hex digits).
pub(crate) fn parse_digest(cx: &mut Cx, size: &Value, hash: &Value, path: &Path) -> Option<Digest> {
    let size = cx.uint(size, &key(path, "size"), "size");
    let hp = key(path, "hash");
    let text = cx.string(hash, &hp, "hash")?;
    let hash = match u64::from_str_radix(&text, 16) {
        Ok(h) if text.len() == 16 => h,
        _ => {
            cx.problem(&hp, format!("hash {text:?} is not 16 hex digits"));
            return None;
        }
    };
    Some(Digest { size: size?, hash })
}

/// The long forms `!sparse {size, data, ...}` and `!digest {size, hash, ...}`.
fn parse_sized(cx: &mut Cx, tag: &str, fields: Fields, path: &Path, ctx: TreeContext) -> Option<TreeNode> {
    let mut node = TreeNode::new(TreeKind::File(FileData::new()));
    let (mut ok, rest) = common_attrs(cx, fields, path, &mut node);
    let get = |k: &str| rest.iter().find(|(name, _)| name == k).map(|(_, v)| *v);
    let Some(size) = get("size") else {
        cx.problem(path, format!("!{tag} needs a `size`"));
        return None;
    };
    if tag == "sparse" {
        match parse_sparse(cx, size, get("data"), path) {
            Some(d) => node.kind = file_kind(d, ctx),
            None => ok = false,
        }
    } else {
        let Some(hash) = get("hash") else {
            cx.problem(path, "!digest needs a `hash`");
            return None;
        };
        match parse_digest(cx, size, hash, path) {
            Some(d) => node.kind = TreeKind::Digest(d),
            None => ok = false,
        }
    }
    ok.then_some(node)
}

// ---------------------------------------------------------------------------------------
// Layers: to and from the flat form.

/// The tree of a flat layer; hard links become `!link` to the inode's first path.
pub fn tree_from_flat(flat: &FlatLayer) -> TreeNode {
    let mut root = node_from_flat(&flat.root);
    root.kind = TreeKind::Dir(BTreeMap::new());
    for e in &flat.entries {
        let (path, node) = match e {
            FlatEntry::Node { path, node } => (path, node_from_flat(node)),
            FlatEntry::Link { path, to } => (path, TreeNode::new(TreeKind::Link(to.clone()))),
        };
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        if parts.is_empty() {
            continue;
        }
        if let TreeKind::Dir(entries) = &mut root.kind {
            // A flat layer lists parents first, so `insert` finds them; a duplicate path
            // (not produced by `Layer::to_flat`) keeps the first.
            let _ = insert(entries, &parts, node);
        }
    }
    root
}

fn node_from_flat(n: &FlatNode) -> TreeNode {
    let rdev = n.rdev.unwrap_or((0, 0));
    let kind = match n.kind {
        FileType::Dir => TreeKind::Dir(BTreeMap::new()),
        FileType::File => TreeKind::File(n.data.clone().unwrap_or_default()),
        FileType::Symlink => TreeKind::Symlink(n.target.clone().unwrap_or_default()),
        FileType::Char => TreeKind::Char(rdev.0, rdev.1),
        FileType::Block => TreeKind::Block(rdev.0, rdev.1),
        FileType::Fifo => TreeKind::Fifo,
    };
    TreeNode { kind, mode: n.mode, uid: n.uid, gid: n.gid, xattrs: n.xattrs.clone(), nlink: None, ino: None }
}

/// The flat node for a tree node that is not a link or an error (a directory's entries are
/// left out).
pub fn node_to_flat(n: &TreeNode) -> FlatNode {
    let (kind, data, target, rdev) = match &n.kind {
        TreeKind::Dir(_) | TreeKind::Link(_) | TreeKind::Error(_) => (FileType::Dir, None, None, None),
        TreeKind::File(d) => (FileType::File, Some(d.clone()), None, None),
        TreeKind::Digest(_) => (FileType::File, None, None, None),
        TreeKind::Symlink(t) => (FileType::Symlink, None, Some(t.clone()), None),
        TreeKind::Char(a, b) => (FileType::Char, None, None, Some((*a, *b))),
        TreeKind::Block(a, b) => (FileType::Block, None, None, Some((*a, *b))),
        TreeKind::Fifo => (FileType::Fifo, None, None, None),
    };
    FlatNode { kind, mode: n.mode, uid: n.uid, gid: n.gid, data, target, rdev, xattrs: n.xattrs.clone() }
}

/// Every path of a tree, parents first and names in byte order (the order of
/// `Layer::walk_all`), with its node.
pub fn walk(root: &TreeNode) -> Vec<(String, &TreeNode)> {
    // `path` is the directory's path while its entries are visited, each entry's path
    // while it is (one buffer: each path is copied once, into `out`).
    fn go<'a>(dir: &'a TreeNode, path: &mut String, out: &mut Vec<(String, &'a TreeNode)>) {
        if let TreeKind::Dir(entries) = &dir.kind {
            for (name, child) in entries {
                let len = path.len();
                if len > 1 {
                    path.push('/');
                }
                path.push_str(name);
                out.push((path.clone(), child));
                go(child, path, out);
                path.truncate(len);
            }
        }
    }
    let mut out = Vec::new();
    go(root, &mut String::from("/"), &mut out);
    out
}

/// The flat layer of a layer tree. A hard link group is written as a node at its first
/// path in walk order and links to it elsewhere, as `Layer::to_flat` does. Errors name the
/// path of the bad `!link` and say what is wrong.
pub fn tree_to_flat(root: &TreeNode) -> Result<FlatLayer, (String, String)> {
    let all = walk(root);
    let mut rootf = node_to_flat(root);
    rootf.kind = FileType::Dir;
    if !all.iter().any(|(_, n)| matches!(n.kind, TreeKind::Link(_) | TreeKind::Error(_))) {
        // No hard links: every path is a node of its own.
        let entries = all.into_iter().map(|(path, n)| FlatEntry::Node { path, node: node_to_flat(n) }).collect();
        return Ok(FlatLayer { root: rootf, entries });
    }
    let by_path: HashMap<&str, &TreeNode> = all.iter().map(|(p, n)| (p.as_str(), *n)).collect();
    // Resolve each link to the path of a real node.
    let mut target_of: HashMap<&str, &str> = HashMap::new();
    for (p, n) in &all {
        if let TreeKind::Link(_) = n.kind {
            let mut cur: &str = p;
            let mut hops = 0;
            loop {
                let node = by_path[cur];
                match &node.kind {
                    TreeKind::Link(to) => {
                        hops += 1;
                        if hops > all.len() {
                            return Err((p.clone(), format!("!link {to} makes a cycle")));
                        }
                        match by_path.get_key_value(to.as_str()) {
                            Some((k, _)) => cur = k,
                            None => return Err((p.clone(), format!("!link {to}: no such path in this layer"))),
                        }
                    }
                    TreeKind::Dir(_) => {
                        return Err((p.clone(), format!("!link to {cur}, a directory: directories cannot be linked")))
                    }
                    TreeKind::Error(_) => return Err((p.clone(), "!link to an !error node".to_owned())),
                    _ => break,
                }
            }
            target_of.insert(p.as_str(), cur);
        }
    }
    // The first path (in walk order) of each linked inode.
    let mut first: HashMap<&str, &str> = HashMap::new();
    for (p, n) in &all {
        let inode = match n.kind {
            TreeKind::Link(_) => target_of[p.as_str()],
            _ => p.as_str(),
        };
        first.entry(inode).or_insert(p.as_str());
    }
    let mut entries = Vec::new();
    for (p, n) in &all {
        if let TreeKind::Error(_) = n.kind {
            return Err((p.clone(), "!error belongs to merged trees".to_owned()));
        }
        let inode = match n.kind {
            TreeKind::Link(_) => target_of[p.as_str()],
            _ => p.as_str(),
        };
        let head = first[inode];
        if head == p {
            entries.push(FlatEntry::Node { path: p.clone(), node: node_to_flat(by_path[inode]) });
        } else {
            entries.push(FlatEntry::Link { path: p.clone(), to: head.to_owned() });
        }
    }
    Ok(FlatLayer { root: rootf, entries })
}

// ---------------------------------------------------------------------------------------
// The merged view.

/// The tree of a merged view. `ino` gives the label to show for the entry at a path with a
/// raw inode number (`None`: show none).
pub fn tree_from_merged(merged: &MergedTree, mut ino: impl FnMut(&str, u64) -> Option<String>) -> TreeNode {
    let mut root = TreeNode::dir();
    for (path, e) in merged {
        let node = merged_node(path, e, &mut ino);
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        if parts.is_empty() {
            let TreeNode { mode, uid, gid, xattrs, nlink, ino, .. } = node;
            root = TreeNode {
                kind: std::mem::replace(&mut root.kind, TreeKind::Fifo),
                mode,
                uid,
                gid,
                xattrs,
                nlink,
                ino,
            };
            continue;
        }
        if let TreeKind::Dir(entries) = &mut root.kind {
            let _ = insert(entries, &parts, node);
        }
    }
    normalize_nlink(&mut root);
    root
}

/// The node of the merged view's entry `e` at `path`, without entries; `ino` gives its
/// label (called when `lstat` succeeded).
fn merged_node(
    path: &str,
    e: &crate::backend::MergedEntry,
    ino: &mut impl FnMut(&str, u64) -> Option<String>,
) -> TreeNode {
    match &e.stat {
        Err(errno) => TreeNode::new(TreeKind::Error(*errno)),
        Ok(st) => {
            let kind = match st.kind {
                FileType::Dir => TreeKind::Dir(BTreeMap::new()),
                FileType::File => match e.digest {
                    Some(d) => TreeKind::Digest(d),
                    None => TreeKind::File(FileData::from_bytes(e.data.as_deref().unwrap_or_default())),
                },
                FileType::Symlink => TreeKind::Symlink(e.target.clone().unwrap_or_default()),
                FileType::Char => TreeKind::Char(st.rdev.0, st.rdev.1),
                FileType::Block => TreeKind::Block(st.rdev.0, st.rdev.1),
                FileType::Fifo => TreeKind::Fifo,
            };
            TreeNode {
                kind,
                mode: st.mode,
                uid: st.uid,
                gid: st.gid,
                xattrs: e.xattrs.clone(),
                nlink: Some(st.nlink),
                ino: ino(path, st.ino),
            }
        }
    }
}

/// Drops link counts equal to the default, after the entries are in place.
fn normalize_nlink(n: &mut TreeNode) {
    if let TreeKind::Dir(entries) = &mut n.kind {
        for c in entries.values_mut() {
            normalize_nlink(c);
        }
    }
    if n.nlink == Some(n.default_nlink()) {
        n.nlink = None;
    }
}

/// A tree in flat form, as a check expects the merged view
/// ([`crate::scenario::Check::merged`]): the root's node and every path below it, each with
/// its node, a directory's node without its entries. Read from a scenario, it is in walk
/// order (parents first, names in byte order: the order of [`walk`]), with every parent
/// given, and it is the flat form of exactly one tree ([`FlatTree::to_tree`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlatTree {
    /// The root directory's node (no entries in it).
    pub root: TreeNode,
    /// Every path below the root with its node, in walk order.
    pub entries: Vec<(String, TreeNode)>,
}

impl FlatTree {
    /// The flat form of a tree: every path of it, in walk order ([`walk`]).
    pub fn from_tree(t: &TreeNode) -> FlatTree {
        FlatTree { root: shallow(t), entries: walk(t).into_iter().map(|(p, n)| (p, shallow(n))).collect() }
    }

    /// The tree: each entry put at its path ([`tree_from_flat`]'s way: a missing parent is
    /// a plain directory, a path given twice keeps the first).
    pub fn to_tree(&self) -> TreeNode {
        let mut root = self.root.clone();
        root.kind = TreeKind::Dir(BTreeMap::new());
        for (path, node) in &self.entries {
            let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
            if let (false, TreeKind::Dir(entries)) = (parts.is_empty(), &mut root.kind) {
                let _ = insert(entries, &parts, node.clone());
            }
        }
        root
    }

    /// The node at `path` (`/` the root).
    pub fn get(&self, path: &str) -> Option<&TreeNode> {
        if path == "/" {
            return Some(&self.root);
        }
        self.entries.iter().find(|(p, _)| p == path).map(|(_, n)| n)
    }
}

/// A node without its entries (a directory's copy is empty).
fn shallow(n: &TreeNode) -> TreeNode {
    match &n.kind {
        TreeKind::Dir(_) => {
            TreeNode { kind: TreeKind::Dir(BTreeMap::new()), xattrs: n.xattrs.clone(), ino: n.ino.clone(), ..*n }
        }
        _ => n.clone(),
    }
}

/// [`FlatTree::from_tree`] of [`tree_from_merged`], built without the tree, when the view
/// is a tree as a dump gives it: the root `/` is listed and `lstat` succeeds on it, and
/// every other path is `/` and plain names whose parent is listed as a directory. `None`
/// otherwise (the caller then builds the tree). `ino` is called as [`tree_from_merged`]
/// calls it.
pub(crate) fn flat_from_merged(
    merged: &MergedTree,
    mut ino: impl FnMut(&str, u64) -> Option<String>,
) -> Option<FlatTree> {
    let mut it = merged.iter();
    let (rp, re) = it.next()?;
    if rp != "/" || re.stat.is_err() {
        return None;
    }
    let mut root = merged_node(rp, re, &mut ino);
    root.kind = TreeKind::Dir(BTreeMap::new());
    let mut entries = Vec::with_capacity(merged.len() - 1);
    // Each directory's subdirectories, by path, for the default link counts.
    let mut subdirs: HashMap<&str, u32> = HashMap::new();
    subdirs.insert("/", 0);
    for (path, e) in it {
        let (parent, name) = path.rsplit_once('/')?;
        let parent = if parent.is_empty() { "/" } else { parent };
        if name.is_empty() || name == "." || name == ".." {
            return None;
        }
        // The parent is listed, as a directory.
        if !subdirs.contains_key(parent) {
            return None;
        }
        let node = merged_node(path, e, &mut ino);
        if matches!(node.kind, TreeKind::Dir(_)) {
            *subdirs.get_mut(parent).expect("checked above") += 1;
            subdirs.insert(path, 0);
        }
        entries.push((path.clone(), node));
    }
    let normalize = |path: &str, n: &mut TreeNode| {
        let default = match n.kind {
            TreeKind::Dir(_) => 2 + subdirs[path],
            _ => 1,
        };
        if n.nlink == Some(default) {
            n.nlink = None;
        }
    };
    normalize("/", &mut root);
    for (path, n) in &mut entries {
        normalize(path, n);
    }
    entries.sort_by(|(a, _), (b, _)| walk_order(a, b));
    Some(FlatTree { root, entries })
}

// ---------------------------------------------------------------------------------------
// Writing the notation.

/// Where a large file written as `!sparse` is cut into pieces: at runs of this many zeros
/// or more. The pieces depend on the content only, so equal files are written alike.
const SPARSE_GAP: u64 = 64;

fn data_y(d: &[u8]) -> Y {
    match std::str::from_utf8(d) {
        Ok(s) => Y::s(s),
        Err(_) => Y::tag("hex", Y::s(crate::hex::encode(d))),
    }
}

/// An xattr mapping.
pub(crate) fn xattrs_y(x: &BTreeMap<String, Vec<u8>>) -> Y {
    Y::map(x.iter().map(|(k, v)| (k.clone(), data_y(v))).collect())
}

/// The attribute fields of a node that differ from the defaults, in a fixed order.
fn attr_fields(n: &TreeNode, xattrs: &BTreeMap<String, Vec<u8>>) -> Vec<(String, Y)> {
    let mut f = Vec::new();
    if n.mode != default_mode(&n.kind) {
        f.push(("mode".into(), Y::mode(n.mode)));
    }
    if n.uid != 0 {
        f.push(("uid".into(), Y::n(n.uid)));
    }
    if n.gid != 0 {
        f.push(("gid".into(), Y::n(n.gid)));
    }
    if !xattrs.is_empty() {
        f.push(("xattrs".into(), xattrs_y(xattrs)));
    }
    if let Some(l) = n.nlink {
        if l != n.default_nlink() {
            f.push(("nlink".into(), Y::n(l)));
        }
    }
    if let Some(i) = &n.ino {
        f.push(("ino".into(), Y::s(i.clone())));
    }
    f
}

/// A directory's own attributes (what goes under `.`), markers as `opaque` and `redirect`
/// in layer trees.
fn dir_attr_fields(n: &TreeNode, ctx: TreeContext) -> Vec<(String, Y)> {
    let mut xattrs = n.xattrs.clone();
    let mut markers = Vec::new();
    if ctx == TreeContext::Layer {
        for (short, name) in [("opaque", OPAQUE_XATTR), ("redirect", REDIRECT_XATTR)] {
            if let Some(v) = xattrs.remove(name) {
                markers.push((short.to_owned(), data_y(&v)));
            }
        }
    }
    let mut f = markers;
    f.extend(attr_fields(n, &xattrs));
    f
}

/// A node in the notation (a directory with its entries).
pub(crate) fn node_y(n: &TreeNode, ctx: TreeContext) -> Y {
    let leaf = |tag: &str, short: Y, fields: Vec<(String, Y)>, long_extra: Vec<(String, Y)>| {
        if fields.is_empty() {
            match short {
                Y::Tagged(..) | Y::Str(_) => short,
                other => Y::tag(tag, other),
            }
        } else {
            let mut all = long_extra;
            all.extend(fields);
            Y::tag(tag, Y::map(all))
        }
    };
    match &n.kind {
        TreeKind::Dir(entries) => {
            let mut m = Vec::new();
            let attrs = dir_attr_fields(n, ctx);
            if !attrs.is_empty() {
                m.push((".".to_owned(), Y::map(attrs)));
            }
            for (name, child) in entries {
                m.push((name.clone(), node_y(child, ctx)));
            }
            // Small directories of leaves read well on one line.
            let leaves = entries.values().all(|c| !matches!(c.kind, TreeKind::Dir(_)));
            Y::Map(m, if leaves { Style::Auto } else { Style::Block })
        }
        TreeKind::File(d) if d.len() > READ_INLINE_MAX => {
            let mut all = vec![("size".to_owned(), Y::Raw(d.len().to_string()))];
            let runs = d.runs(SPARSE_GAP);
            if !runs.is_empty() {
                all.push(("data".to_owned(), Y::map(runs.iter().map(|(o, b)| (o.to_string(), data_y(b))).collect())));
            }
            all.extend(attr_fields(n, &n.xattrs));
            Y::tag("sparse", Y::map(all))
        }
        TreeKind::Digest(d) => {
            let mut all = vec![
                ("size".to_owned(), Y::Raw(d.size.to_string())),
                ("hash".to_owned(), Y::s(format!("{:016x}", d.hash))),
            ];
            all.extend(attr_fields(n, &n.xattrs));
            Y::tag("digest", Y::map(all))
        }
        TreeKind::File(d) => {
            let d = &d.to_vec();
            if d.is_empty() && n.xattrs.get(XWHITEOUT_XATTR).is_some_and(|v| v.is_empty()) {
                let mut x = n.xattrs.clone();
                x.remove(XWHITEOUT_XATTR);
                let fields = attr_fields(n, &x);
                return leaf("xwhiteout", Y::Null, fields, Vec::new());
            }
            let fields = attr_fields(n, &n.xattrs);
            let short = data_y(d);
            let extra = if d.is_empty() { Vec::new() } else { vec![("data".to_owned(), data_y(d))] };
            leaf("file", short, fields, extra)
        }
        TreeKind::Symlink(t) => {
            let fields = attr_fields(n, &n.xattrs);
            if fields.is_empty() {
                Y::tag("symlink", Y::s(t.clone()))
            } else {
                leaf("symlink", Y::Null, fields, vec![("target".into(), Y::s(t.clone()))])
            }
        }
        TreeKind::Char(0, 0) => leaf("whiteout", Y::Null, attr_fields(n, &n.xattrs), Vec::new()),
        TreeKind::Char(a, b) | TreeKind::Block(a, b) => {
            let tag = if matches!(n.kind, TreeKind::Char(..)) { "char" } else { "block" };
            let rdev = Y::seq(vec![Y::n(*a), Y::n(*b)]);
            let fields = attr_fields(n, &n.xattrs);
            if fields.is_empty() {
                Y::tag(tag, rdev)
            } else {
                leaf(tag, Y::Null, fields, vec![("rdev".into(), rdev)])
            }
        }
        TreeKind::Fifo => leaf("fifo", Y::Null, attr_fields(n, &n.xattrs), Vec::new()),
        TreeKind::Link(to) => Y::tag("link", Y::s(to.clone())),
        TreeKind::Error(e) => Y::tag("error", Y::Raw(e.name().to_owned())),
    }
}

/// One line per path (`/d/f: hello`, `/d/ {mode: 0700}`), for diffs and reports.
pub fn tree_lines(root: &TreeNode, ctx: TreeContext) -> Vec<String> {
    let line = |path: &str, n: &TreeNode| -> String {
        match &n.kind {
            TreeKind::Dir(_) => {
                let attrs = dir_attr_fields(n, ctx);
                let p = if path == "/" { "/".to_owned() } else { format!("{path}/") };
                if attrs.is_empty() {
                    p
                } else {
                    format!("{p} {}", super::emit::one_line(&Y::map(attrs)))
                }
            }
            _ => format!("{}: {}", super::emit::scalar(path), super::emit::one_line(&node_y(n, ctx))),
        }
    };
    let mut out = vec![line("/", root)];
    for (p, n) in walk(root) {
        out.push(line(&p, n));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every mapping of every node of a document, depth first.
    fn mappings<'a, 'n>(v: &'a Value<'n>, out: &mut Vec<&'a Value<'n>>) {
        match v {
            Value::Mapping(m) => {
                out.push(v);
                for (_, c) in m.iter() {
                    mappings(c, out);
                }
            }
            Value::Sequence(s) => s.iter().for_each(|c| mappings(c, out)),
            Value::Tagged(t) => mappings(&t.value, out),
            _ => {}
        }
    }

    /// Calls `f` with each mapping of each spec/ file: the file, its text, the mapping.
    fn each_spec_mapping(mut f: impl FnMut(&std::path::Path, &str, &Value<'_>)) {
        for p in crate::scenario::find_files(&["spec".into()]).unwrap().files {
            let text = std::fs::read_to_string(&p).unwrap();
            let arena = bumpalo::Bump::new();
            let doc = Value::from_value(yaml_serde::from_str(&text).unwrap(), &arena);
            let mut all = Vec::new();
            mappings(&doc, &mut all);
            for m in all {
                f(&p, &text, m);
            }
        }
    }

    /// Calls `f` with each mapping of each spec/ file that reads as a layer tree: the file,
    /// the tree, whether it has `!link`s, and whether reading it found problems.
    fn each_spec_layer_tree(mut f: impl FnMut(&std::path::Path, TreeNode, bool, bool)) {
        each_spec_mapping(|p, text, m| {
            let mut cx = Cx::new(Some(text));
            let mut links = Vec::new();
            if let Some(tree) = read_tree(&mut cx, m, &Path::Root, TreeContext::Layer, &mut links) {
                f(p, tree, !links.is_empty(), !cx.problems.is_empty());
            }
        });
    }

    /// `parse_tree` gives a layer tree without `!link` as read, not through its flat form:
    /// for every mapping of every spec/ file read as a layer tree without links, the flat
    /// form and back is the same tree.
    #[test]
    fn a_layer_tree_without_links_is_its_canonical_form() {
        let mut checked = 0;
        each_spec_layer_tree(|p, tree, links, problems| {
            if links || problems {
                return;
            }
            let flat = tree_to_flat(&tree).expect("no links, no errors");
            assert_eq!(tree_from_flat(&flat), tree, "in {}", p.display());
            checked += 1;
        });
        assert!(checked > 300, "{checked} trees");
    }

    /// For every mapping of every spec/ file read as a layer tree, links or not: the flat
    /// form built by taking the tree is the one `tree_to_flat` builds, whenever
    /// `plain_count` lets it be taken, and `plain_count` counts every node below the root.
    #[test]
    fn a_layer_tree_taken_into_its_flat_form_is_tree_to_flat() {
        let (mut taken, mut left) = (0, 0);
        each_spec_layer_tree(|p, tree, _, _| {
            let by_walk = walk(&tree);
            let plain = by_walk.iter().all(|(_, n)| !matches!(n.kind, TreeKind::Link(_) | TreeKind::Error(_)));
            match plain_count(&tree) {
                Some(count) => {
                    assert!(plain, "in {}", p.display());
                    assert_eq!(count, by_walk.len(), "in {}", p.display());
                    let expected = tree_to_flat(&tree).expect("no links, no errors");
                    assert_eq!(tree_into_flat(tree.clone(), count), expected, "in {}", p.display());
                    taken += 1;
                }
                None => {
                    assert!(!plain, "in {}", p.display());
                    left += 1;
                }
            }
        });
        assert!(taken > 300 && left > 0, "{taken} trees taken, {left} left");
    }
    /// `parse_layer` of `v`, by its plain path when it takes it, and by the tree: the same
    /// layer and the same problems, in the same order. Whether the plain path took it.
    fn same_layer_both_ways(v: &Value, text: &str) -> bool {
        let mut plain_cx = Cx::new(Some(text));
        let plain = parse_layer(&mut plain_cx, v, &Path::Root);
        let mut tree_cx = Cx::new(Some(text));
        let tree = parse_layer_tree(&mut tree_cx, v, &Path::Root);
        assert_eq!(plain, tree, "in\n{text}");
        assert_eq!(format!("{:?}", plain_cx.problems), format!("{:?}", tree_cx.problems), "in\n{text}");
        matches!(v, Value::Mapping(m) if plain_names(m).is_some())
    }

    /// Every mapping of every spec/ file, read as a layer: the plain path gives what the
    /// tree gives (layers, problems), and takes nearly every layer of the suite.
    #[test]
    fn a_plain_layer_reads_as_its_tree() {
        let (mut plain, mut all) = (0, 0);
        each_spec_mapping(|_, text, m| {
            all += 1;
            plain += usize::from(same_layer_both_ways(m, text));
        });
        assert!(plain > 1000 && plain < all, "{plain} of {all} mappings read on the plain path");
    }

    /// The same on hand-written layers (names out of order, attributes, each kind of
    /// problem, several problems in one tree) and on random ones.
    #[test]
    fn a_plain_layer_reads_as_its_tree_on_edge_cases_and_random_trees() {
        let long = "n".repeat(300);
        let mut docs: Vec<String> = [
            "a: {b: x, B: y, a-b: z, a.b: w, ab: {c: d}, .: {mode: 0700}}\nA: x\n",
            "z: x\ny: {x: {w: v}, .: {uid: 1, gid: 2}}\nx: !symlink t\n.: {mode: 0700, opaque: y}\n",
            "a: ~\nb: [1]\nc: !bogus x\nd: !error ENOENT\ne: !digest {size: 1, hash: x}\nf: 1\n",
            "a: {.: {mode: 99999}}\nb: {.: {opaque: y, xattrs: {trusted.overlay.opaque: y}}}\n",
            "a: !file {data: x, xattrs: {'': v}}\nb: !symlink ''\nc: {d: {e: ~}}\n",
            "a: !whiteout\nb: !fifo\nc: !char [1, 3]\nd: !block {rdev: [8, 0], mode: 0600}\ne: !xwhiteout\n",
            "a: {.: {xattrs: {user.x: v}, redirect: /b}}\nb: !file {data: x, mode: 0600, uid: 3}\n",
            "a: !hex \"00ff\"\nb: !sparse {size: 10, data: {2: x}}\nc: !link /a\n",
            "a/b: x\nc: y\n",
            "'..': x\n",
            "'': x\n",
            "1: x\n",
            ".: {nlink: 3}\n",
        ]
        .iter()
        .map(|d| d.to_string())
        .collect();
        docs.push(format!("a: {{{long}: x}}\n{long}: {{b: y}}\n"));
        // Random trees: names (some refused, some out of order) and nodes (some refused).
        let names = ["a", "B", "a-b", "a.b", "ab", "z", ".", "..", "''", "c/d", "1"];
        let leaves = ["x", "~", "!whiteout", "!symlink t", "!file {data: y, mode: 0600}", "[1]", "!bogus", "{}"];
        docs.extend(random_tree_docs(12345, &names, &leaves));
        let (mut plain, mut compared) = (0, 0);
        for d in &docs {
            // A name drawn twice for one mapping is a duplicate key: no document.
            let Ok(v) = yaml_serde::from_str::<yaml_serde::Value>(d) else { continue };
            let arena = bumpalo::Bump::new();
            compared += 1;
            plain += usize::from(same_layer_both_ways(&Value::from_value(v, &arena), d));
        }
        assert!(plain > 50 && compared > plain + 100, "{plain} of {compared} documents read on the plain path");
    }

    /// 400 random block-style trees of `names` and `leaves`, nested up to four levels: the
    /// same documents for the same seed.
    fn random_tree_docs(mut seed: u64, names: &[&str], leaves: &[&str]) -> Vec<String> {
        let mut next = |n: usize| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) as usize % n
        };
        let mut docs = Vec::new();
        for _ in 0..400 {
            let mut doc = String::new();
            let mut stack = vec![(0usize, 1 + next(4))];
            while let Some((indent, left)) = stack.pop() {
                if left == 0 {
                    continue;
                }
                stack.push((indent, left - 1));
                let name = names[next(names.len())];
                doc.push_str(&format!("{}{name}:", " ".repeat(indent)));
                if indent < 6 && next(3) == 0 {
                    doc.push('\n');
                    stack.push((indent + 2, 1 + next(3)));
                } else {
                    doc.push_str(&format!(" {}\n", leaves[next(leaves.len())]));
                }
            }
            docs.push(doc);
        }
        docs
    }

    /// `parse_merged` of `v`, by its plain path when it takes it, and through the tree: the
    /// same flat tree and the same problems, in the same order. Whether the plain path took
    /// it.
    fn same_merged_both_ways(v: &Value, text: &str) -> bool {
        let mut plain_cx = Cx::new(Some(text));
        let plain = parse_merged(&mut plain_cx, v, &Path::Root);
        let mut tree_cx = Cx::new(Some(text));
        let tree = parse_merged_tree(&mut tree_cx, v, &Path::Root);
        assert_eq!(plain, tree, "in\n{text}");
        assert_eq!(format!("{:?}", plain_cx.problems), format!("{:?}", tree_cx.problems), "in\n{text}");
        if let Some(t) = &tree {
            let mut cx = Cx::new(Some(text));
            let whole = parse_tree(&mut cx, v, &Path::Root, TreeContext::Merged).expect("read once already");
            assert_eq!(&t.to_tree(), &whole, "the flat form is the tree's, in\n{text}");
        }
        matches!(v, Value::Mapping(m) if plain_names(m).is_some())
    }

    /// Every mapping of every spec/ file, read as a merged tree: the plain path gives what
    /// the tree gives (flat trees, problems), and takes nearly every one.
    #[test]
    fn a_plain_merged_tree_reads_as_its_tree() {
        let (mut plain, mut all) = (0, 0);
        each_spec_mapping(|_, text, m| {
            all += 1;
            plain += usize::from(same_merged_both_ways(m, text));
        });
        assert!(plain > 1000 && plain < all, "{plain} of {all} mappings read on the plain path");
    }

    /// The same on hand-written merged trees (link counts given and default, labels,
    /// `!error`, `!digest`, names out of order, each kind of problem) and on random ones.
    #[test]
    fn a_plain_merged_tree_reads_as_its_tree_on_edge_cases_and_random_trees() {
        let mut docs: Vec<String> = [
            "a: {b: x, B: y, a-b: z, a.b: w, ab: {c: d}, .: {mode: 0700}}\nA: x\n",
            ".: {nlink: 3}\na: {}\n",
            ".: {nlink: 2}\na: x\n",
            ".: {nlink: 4, ino: r}\na: {.: {nlink: 2}}\nb: {.: {nlink: 3}, c: {}}\n",
            "a: !file {data: x, nlink: 1, ino: a}\nb: !file {data: x, nlink: 2, ino: a}\n",
            "e: !error ENOENT\nd: !digest {size: 1, hash: 0123456789abcdef}\nf: !error EBOGUS\n",
            "a: ~\nb: [1]\nc: !bogus x\nl: !link /a\nf: 1\n",
            "a: {.: {mode: 99999, nlink: x}}\nb: {.: {opaque: y}}\n",
            "a/b: x\nc: y\n",
            "'..': x\n",
            "1: x\n",
            "z: x\ny: {x: {w: v}, .: {uid: 1, gid: 2, xattrs: {user.a: b}}}\nx: !symlink t\n",
        ]
        .iter()
        .map(|d| d.to_string())
        .collect();
        let names = ["a", "B", "a-b", "a.b", "ab", "z", ".", "..", "''", "c/d", "1"];
        let leaves = [
            "x",
            "~",
            "!whiteout",
            "!symlink t",
            "!file {data: y, nlink: 2, ino: i}",
            "!error ENOENT",
            "{.: {nlink: 2}}",
            "{.: {nlink: 3}}",
            "[1]",
            "{}",
        ];
        docs.extend(random_tree_docs(54321, &names, &leaves));
        let (mut plain, mut compared) = (0, 0);
        for d in &docs {
            let Ok(v) = yaml_serde::from_str::<yaml_serde::Value>(d) else { continue };
            let arena = bumpalo::Bump::new();
            compared += 1;
            plain += usize::from(same_merged_both_ways(&Value::from_value(v, &arena), d));
        }
        assert!(plain > 50 && compared > plain + 100, "{plain} of {compared} documents read on the plain path");
    }

    /// A flat tree and back is the tree, on every merged tree of every spec/ file.
    #[test]
    fn a_flat_tree_is_its_tree() {
        let mut checked = 0;
        each_spec_mapping(|p, text, m| {
            let mut cx = Cx::new(Some(text));
            if let Some(t) = parse_tree(&mut cx, m, &Path::Root, TreeContext::Merged) {
                let flat = FlatTree::from_tree(&t);
                assert_eq!(flat.to_tree(), t, "in {}", p.display());
                assert_eq!(flat.get("/"), Some(&flat.root));
                for (path, n) in &flat.entries {
                    assert_eq!(flat.get(path), Some(n));
                }
                checked += 1;
            }
        });
        assert!(checked > 1000, "{checked} trees");
    }
}
