//! Generators (proptest strategies): layer stacks, mount options, operations, offline edits
//! and remounts.
//!
//! Everything is drawn from a small name alphabet ([`NAMES`]) and a shallow depth
//! ([`DEPTH_MAX`]), so that names collide across layers and operations hit what the layers
//! hold. Data stays tiny. What the model declares not modelled (`index`, `metacopy`,
//! `nfs_export`) is never generated, nor is `volatile` (pinned in spec/volatile/), and no
//! device node is made other than a whiteout (char 0/0).

use super::case::CaseStart;
use super::config::GenConfig;
use crate::backend::{Command, Edit};
use crate::layer::{FileType, FlatEntry, FlatLayer, FlatNode};
use crate::mount::{Options, RedirectDir, Xino};
use crate::ops::{Access, MknodKind, Op, OpenFlags, RenameFlags, WriteAt};
use proptest::prelude::*;
use proptest::sample::select;
use proptest::strategy::Union;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The name alphabet of layers and paths.
pub const NAMES: [&str; 4] = ["a", "b", "c", "d"];

/// The deepest path in a generated layer (`/a/b/c`) and in most generated operations.
pub const DEPTH_MAX: usize = 3;

/// The most lower layers in a generated stack.
pub const LOWER_COUNT_MAX: usize = 4;

/// The most lower layers a [`GenConfig`] may ask for ([`GenConfig::lowers_max`]).
pub const LOWER_COUNT_LIMIT: usize = 40;

/// The deepest tree a [`GenConfig`] may ask for ([`GenConfig::depth_max`]).
pub const DEPTH_LIMIT: usize = 8;

/// The name of the generated upper layer.
pub const UPPER: &str = "U";

/// The name of generated lower layer `i` (0 is the top-most).
pub fn lower_name(i: usize) -> String {
    format!("L{i}")
}

/// `trusted.overlay.opaque`.
const OPAQUE: &str = "trusted.overlay.opaque";
/// `trusted.overlay.whiteout`.
const XWHITEOUT: &str = "trusted.overlay.whiteout";
/// `trusted.overlay.redirect`.
pub(crate) const REDIRECT: &str = "trusted.overlay.redirect";
/// `trusted.overlay.metacopy`.
const METACOPY: &str = "trusted.overlay.metacopy";

/// Symlink targets: relative, absolute, dangling, `..`, `.`, through other names.
const TARGETS: [&str; 12] = ["a", "b", "c/d", "../a", "..", ".", "/a", "/b/c", "/zz", "a/../b", "../../d", "d/"];

/// File contents in layers.
static FILE_DATA: [&[u8]; 4] = [b"", b"x", b"hi", b"hello"];
/// Values of `trusted.overlay.whiteout`.
static XWHITEOUT_VALUES: [&[u8]; 2] = [b"", b"y"];
/// Redirect values that lead nowhere without an error: a missing parent (its `..` is never
/// looked up) and an over-long name (ENAMETOOLONG in a layer reads as "not found"). See
/// `lookup::redirect_value`. Redirects whose lookup fails (malformed: EINVAL; `.`, `..` or
/// an empty component: EACCES) are pinned by kernel-recorded scenarios in `spec/lookup/`
/// but not drawn: a readdir of an impure directory that meets an entry whose lookup fails
/// ends its `getdents64` call there, so what it lists depends on tmpfs's entry order, which
/// the model does not keep (found by the differential fuzzer, seed 9217).
static FRUITLESS_REDIRECTS: [&[u8]; 2] = [b"/zz/..", &LONG_NAME];
/// Redirects to names of the alphabet, relative (a sibling) and absolute (from the lower
/// roots), drawn with [`GenConfig::shared_redirects`].
static SHARED_REDIRECTS: [&[u8]; 5] = [b"a", b"b", b"/a", b"/b", b"/a/b"];
/// A name over NAME_MAX.
static LONG_NAME: [u8; 300] = [b'a'; 300];
/// Data written by operations.
static OP_DATA: [&[u8]; 4] = [b"", b"x", b"abc", b"y"];

/// A plain node with no payload, owned by root.
pub fn node(kind: FileType, mode: u32) -> FlatNode {
    FlatNode { kind, mode, uid: 0, gid: 0, data: None, target: None, rdev: None, xattrs: BTreeMap::new() }
}

/// A char 0/0 whiteout, as overlay writes it.
pub fn whiteout() -> FlatNode {
    let mut n = node(FileType::Char, 0);
    n.rdev = Some((0, 0));
    n
}

fn file(data: &[u8], mode: u32) -> FlatNode {
    let mut n = node(FileType::File, mode);
    n.data = Some(data.into());
    n
}

fn symlink(target: &str) -> FlatNode {
    let mut n = node(FileType::Symlink, 0o777);
    n.target = Some(target.to_owned());
    n
}

fn with_xattr(mut n: FlatNode, name: &str, value: &[u8]) -> FlatNode {
    n.xattrs.insert(name.to_owned(), value.to_vec());
    n
}

/// One name of the alphabet.
pub fn name() -> impl Strategy<Value = String> {
    select(&NAMES[..]).prop_map(str::to_owned)
}

/// One name of the configuration's alphabet ([`GenConfig::names`]), drawn as [`name`]
/// draws from an alphabet of the same size.
fn name_in(cfg: &GenConfig) -> impl Strategy<Value = String> {
    select(cfg.names.clone())
}

/// `name`, an overlay marker under `trusted.overlay.` (or its `user.overlay.` decoy), in
/// the namespace the configuration's mounts read ([`GenConfig::userxattr`]): under
/// `userxattr` the two namespaces swap, so that the markers are read and the decoys
/// ignored.
fn ns(cfg: &GenConfig, name: &'static str) -> &'static str {
    if !cfg.userxattr {
        return name;
    }
    match name {
        OPAQUE => "user.overlay.opaque",
        "user.overlay.opaque" => OPAQUE,
        XWHITEOUT => "user.overlay.whiteout",
        REDIRECT => "user.overlay.redirect",
        other => other,
    }
}

/// `user.*` xattrs that a regular file or a directory may carry.
fn user_xattrs(cfg: &GenConfig) -> impl Strategy<Value = BTreeMap<String, Vec<u8>>> {
    let on = cfg.user_xattrs;
    prop_oneof![
        8 => Just(BTreeMap::new()),
        GenConfig::weight(on, 1) => Just(BTreeMap::from([("user.a".to_owned(), b"1".to_vec())])),
        GenConfig::weight(on, 1) => Just(BTreeMap::from([
            ("user.a".to_owned(), b"2".to_vec()),
            ("user.b".to_owned(), Vec::new()),
        ])),
    ]
}

fn owner(cfg: &GenConfig) -> impl Strategy<Value = (u32, u32)> {
    let w = GenConfig::weight(cfg.owners, 1);
    prop_oneof![9 => Just((0, 0)), w => Just((1000, 1000)), w => Just((1, 0))]
}

/// A regular file with tiny data, sometimes with `user.*` xattrs or another owner.
fn file_node(cfg: &GenConfig) -> impl Strategy<Value = FlatNode> {
    (select(&FILE_DATA[..]), select(&[0o644u32, 0o644, 0o600, 0o755, 0o444, 0o4755][..]), owner(cfg), user_xattrs(cfg))
        .prop_map(|(data, mode, (uid, gid), xattrs)| {
            let mut n = file(data, mode);
            n.uid = uid;
            n.gid = gid;
            n.xattrs = xattrs;
            n
        })
}

/// An xattr whiteout: a zero-size file with `trusted.overlay.whiteout` (sometimes, on
/// purpose, a non-zero-size one, which is not a whiteout).
///
/// Always zero-size: a sized file with the marker is an ordinary file until a truncate or
/// a write through the mount makes it zero-size, and then the kernel keeps showing it from
/// its dentry cache while a fresh lookup would hide it; the model has no dentry cache, so
/// that case is out of its contract (the sized file itself is pinned in spec/).
fn xwhiteout_node(cfg: &GenConfig) -> impl Strategy<Value = FlatNode> {
    let marker = ns(cfg, XWHITEOUT);
    select(&XWHITEOUT_VALUES[..]).prop_map(move |value| with_xattr(file(b"", 0o644), marker, value))
}

/// A non-directory node of a layer (no hard links: see [`layer`]).
pub fn leaf_node(cfg: &GenConfig) -> impl Strategy<Value = FlatNode> {
    prop_oneof![
        10 => file_node(cfg),
        GenConfig::weight(cfg.symlinks, 3) => select(&TARGETS[..]).prop_map(symlink),
        GenConfig::weight(cfg.whiteouts, 3) => Just(whiteout()),
        GenConfig::weight(cfg.xattr_whiteouts, 2) => xwhiteout_node(cfg),
        GenConfig::weight(cfg.fifos, 1) => select(&[0o644u32, 0o600][..]).prop_map(|m| node(FileType::Fifo, m)),
        // No metacopy files but under `metacopy` (below): their lookup is EPERM without
        // metacopy=on (pinned in spec/), and when readdir meets two of them in a directory
        // with xattr whiteouts, whether it fails depends on the order of the directory's
        // entries, which the model does not keep (see `machine::readdir_order_decides`).
        // Under `userxattr`, a `trusted.overlay.whiteout` decoy: an ordinary empty file.
        GenConfig::weight(cfg.xattr_whiteouts && cfg.userxattr, 1) =>
            select(&XWHITEOUT_VALUES[..]).prop_map(|value| with_xattr(file(b"", 0o644), XWHITEOUT, value)),
        // Under `metacopy`, metacopy files: an empty `metacopy` xattr, any size and data
        // (reads take the data below). The profile draws no xattr whiteouts.
        GenConfig::weight(cfg.metacopy, 2) =>
            (select(&FILE_DATA[..]), select(&[0o644u32, 0o600][..]))
                .prop_map(|(data, mode)| with_xattr(file(data, mode), METACOPY, b"")),
    ]
}

/// A directory's own metadata: mode, owner, sometimes an opaque marker (`y`, `x`, or a
/// value that is not opaque), rarely a redirect, sometimes `user.*` xattrs.
pub fn dir_node(cfg: &GenConfig) -> impl Strategy<Value = FlatNode> {
    let opaque = |w| GenConfig::weight(cfg.opaque_dirs, w);
    let marker = prop_oneof![
        14 => Just(None),
        opaque(4) => Just(Some((ns(cfg, OPAQUE), &b"y"[..]))),
        opaque(2) => Just(Some((ns(cfg, OPAQUE), &b"x"[..]))),
        opaque(1) => Just(Some((ns(cfg, OPAQUE), &b"yes"[..]))),
        opaque(1) => Just(Some((ns(cfg, "user.overlay.opaque"), &b"y"[..]))),
        // Only redirects that lead nowhere: one that names a directory another name also
        // shows makes two merged directories share a lower one, and the kernel's answer
        // then depends on its inode cache (ESTALE or not, by lookup order), which is out of
        // the model's contract. Redirects made by renames under `redirect_dir=on`, and the
        // spec scenarios, cover working ones.
        GenConfig::weight(cfg.redirects, 1) => {
            let redirect = ns(cfg, REDIRECT);
            select(&FRUITLESS_REDIRECTS[..]).prop_map(move |v| Some((redirect, v)))
        },
        // Redirects that may lead to a directory another name shows: which of the two
        // merged directories works depends on which is looked up first (the model's inode
        // cache, `crate::icache`). Last, so that switched off it changes no other arm.
        GenConfig::weight(cfg.shared_redirects, 1) => {
            let redirect = ns(cfg, REDIRECT);
            select(&SHARED_REDIRECTS[..]).prop_map(move |v| Some((redirect, v)))
        },
    ];
    (select(&[0o755u32, 0o755, 0o700, 0o777, 0o1777][..]), owner(cfg), marker, user_xattrs(cfg)).prop_map(
        |(mode, (uid, gid), marker, xattrs)| {
            let mut n = node(FileType::Dir, mode);
            n.uid = uid;
            n.gid = gid;
            n.xattrs = xattrs;
            if let Some((k, v)) = marker {
                n.xattrs.insert(k.to_owned(), v.to_vec());
            }
            n
        },
    )
}

/// The shape of a generated tree, before it is flattened.
#[derive(Clone, Debug)]
enum Shape {
    /// A non-directory.
    Leaf(FlatNode),
    /// A hard link to the `n`-th (modulo) earlier linkable node of the layer.
    Link(usize),
    /// A directory and its children.
    Dir(FlatNode, Vec<(String, Shape)>),
}

/// The children of a directory at `depth` (the root's children are at depth 1): each name of the alphabet is taken with
/// probability `p[0]` in the root, `p[1]` below it.
fn children_with(cfg: &GenConfig, depth: usize, p: [f64; 2]) -> BoxedStrategy<Vec<(String, Shape)>> {
    let leaf = prop_oneof![
        12 => leaf_node(cfg).prop_map(Shape::Leaf),
        GenConfig::weight(cfg.hard_links, 1) => (0..8usize).prop_map(Shape::Link),
    ];
    let child = if depth >= cfg.depth_max {
        leaf.boxed()
    } else {
        prop_oneof![
            3 => leaf,
            cfg.dir_weight => (dir_node(cfg), children_with(cfg, depth + 1, p)).prop_map(|(n, c)| Shape::Dir(n, c)),
        ]
        .boxed()
    };
    let p = if depth == 1 { p[0] } else { p[1] };
    let names = cfg.names.clone();
    proptest::collection::vec(proptest::option::weighted(p, child), names.len())
        .prop_map(move |slots| names.iter().zip(slots).filter_map(|(n, s)| s.map(|s| (n.clone(), s))).collect())
        .boxed()
}

fn flatten(prefix: &str, kids: Vec<(String, Shape)>, out: &mut FlatLayer, linkable: &mut Vec<String>) {
    for (name, shape) in kids {
        let path = format!("{prefix}/{name}");
        match shape {
            Shape::Leaf(node) => {
                let is_whiteout = node.kind == FileType::Char
                    || node.xattrs.contains_key(XWHITEOUT)
                    || node.xattrs.contains_key("user.overlay.whiteout")
                    || node.xattrs.contains_key(METACOPY);
                if !is_whiteout {
                    linkable.push(path.clone());
                }
                out.entries.push(FlatEntry::Node { path, node });
            }
            Shape::Link(n) if !linkable.is_empty() => {
                let to = linkable[n % linkable.len()].clone();
                out.entries.push(FlatEntry::Link { path, to });
            }
            Shape::Link(_) => {
                linkable.push(path.clone());
                out.entries.push(FlatEntry::Node { path, node: file(b"l", 0o644) });
            }
            Shape::Dir(node, kids) => {
                out.entries.push(FlatEntry::Node { path: path.clone(), node });
                flatten(&path, kids, out, linkable);
            }
        }
    }
}

/// One layer: a tree of depth at most [`DEPTH_MAX`] over [`NAMES`], with files, directories,
/// symlinks, whiteouts, xattr whiteouts, opaque directories, FIFOs and hard links. The
/// entries are in the canonical order of [`crate::layer::Layer::to_flat`].
pub fn layer(cfg: &GenConfig) -> impl Strategy<Value = FlatLayer> {
    layer_with(cfg, [0.55, 0.35])
}

/// A layer whose names are taken with probabilities `p` ([`children_with`]), its root
/// drawn by [`root_node`].
fn layer_with(cfg: &GenConfig, p: [f64; 2]) -> impl Strategy<Value = FlatLayer> {
    (root_node(cfg), children_with(cfg, 1, p)).prop_map(|(root, kids)| {
        let mut out = FlatLayer { root, entries: Vec::new() };
        flatten("", kids, &mut out, &mut Vec::new());
        out
    })
}

/// A layer's root: mostly plain; sometimes opaque. With [`GenConfig::root_markers`], often
/// a marker: opaque `y` or `x` (`x` on a lower root: it may hold xattr whiteouts), a value
/// that is not opaque, a redirect, or the other namespace's opaque marker (a decoy).
fn root_node(cfg: &GenConfig) -> BoxedStrategy<FlatNode> {
    let dir = || node(FileType::Dir, 0o755);
    if cfg.root_markers {
        let marked = |name, value: &'static [u8]| Just(with_xattr(dir(), ns(cfg, name), value));
        return prop_oneof![
            6 => Just(dir()),
            3 => marked(OPAQUE, b"y"),
            3 => marked(OPAQUE, b"x"),
            1 => marked(OPAQUE, b"yes"),
            1 => marked("user.overlay.opaque", b"y"),
            GenConfig::weight(cfg.redirects, 1) => marked(REDIRECT, b"/a"),
            GenConfig::weight(cfg.redirects, 1) => marked(REDIRECT, b"/zz/.."),
            1 => Just(node(FileType::Dir, 0o700)),
        ]
        .boxed();
    }
    prop_oneof![
        12 => Just(dir()),
        // The opaque marker on the upper root is ignored.
        GenConfig::weight(cfg.opaque_dirs, 1) => Just(with_xattr(dir(), ns(cfg, OPAQUE), b"y")),
        1 => Just(node(FileType::Dir, 0o700)),
    ]
    .boxed()
}

/// A lower layer: as [`layer`], or, with [`GenConfig::sparse_lowers`], three times in four a
/// sparse one (a name of the root in eight, few below), so that most entries of a stack sit
/// in few of its lowers.
fn lower_layer(cfg: &GenConfig) -> BoxedStrategy<FlatLayer> {
    if !cfg.sparse_lowers {
        return layer(cfg).boxed();
    }
    prop_oneof![1 => layer(cfg), 3 => layer_with(cfg, [0.12, 0.25])].boxed()
}

/// Mount options: mostly the defaults; sometimes `redirect_dir=on`, `nofollow` or
/// `follow`, a read-only mount or `xino=on`. Never an option the model does not implement.
/// `userxattr` only with [`GenConfig::userxattr`] (every mount; see [`wide_options`]):
/// under it a copy of a symlink or a FIFO has no origin, and its `st_ino` depends on the
/// inode cache (modelled, `crate::icache`).
pub fn options(cfg: &GenConfig) -> BoxedStrategy<Options> {
    if cfg.userxattr || cfg.xino_auto {
        return wide_options(cfg);
    }
    if cfg.metacopy {
        return metacopy_options(cfg);
    }
    let rd = |w| GenConfig::weight(cfg.redirect_dir, w);
    let redirect = prop_oneof![
        14 => Just(RedirectDir::Off),
        rd(3) => Just(RedirectDir::On),
        rd(2) => Just(RedirectDir::Nofollow),
        rd(1) => Just(RedirectDir::Follow),
    ];
    // Drawn whatever the configuration, then masked, so that a configuration that allows
    // them draws exactly as the fixed generator did.
    let (ro_on, xino_on) = (cfg.read_only, cfg.xino);
    (redirect, prop::bool::weighted(0.08), prop::bool::weighted(0.03))
        .prop_map(move |(redirect_dir, read_only, xino)| {
            let (read_only, xino) = (read_only && ro_on, xino && xino_on);
            Options { redirect_dir, read_only, xino: if xino { Xino::On } else { Xino::Off }, ..Options::default() }
        })
        .boxed()
}

/// The options of [`GenConfig::metacopy`]: [`options`]'s draws, with `metacopy=on` in about
/// half the mounts. Mostly `redirect_dir` is not given (metacopy then implies `on`); a
/// given mode other than `on` is a conflict the kernel refuses (EINVAL, `ovl_fs_params_verify`).
fn metacopy_options(cfg: &GenConfig) -> BoxedStrategy<Options> {
    let rd = |w| GenConfig::weight(cfg.redirect_dir, w);
    let redirect = prop_oneof![
        14 => Just(RedirectDir::Off),
        rd(3) => Just(RedirectDir::On),
        rd(1) => Just(RedirectDir::Nofollow),
        rd(1) => Just(RedirectDir::Follow),
    ];
    let (ro_on, xino_on) = (cfg.read_only, cfg.xino);
    (redirect, prop::bool::weighted(0.08), prop::bool::weighted(0.03), prop::bool::weighted(0.5))
        .prop_map(move |(redirect_dir, read_only, xino, metacopy)| Options {
            redirect_dir,
            read_only: read_only && ro_on,
            xino: if xino && xino_on { Xino::On } else { Xino::Off },
            metacopy,
            ..Options::default()
        })
        .boxed()
}

/// The options of [`GenConfig::userxattr`] and [`GenConfig::xino_auto`]: under `userxattr`,
/// `redirect_dir` left to the kernel's default (which is then `nofollow`) or given as
/// `nofollow`, the only value it allows (kernel: `ovl_fs_params_verify`); `xino` off, `on`
/// or `auto`.
fn wide_options(cfg: &GenConfig) -> BoxedStrategy<Options> {
    let rd = |w| GenConfig::weight(cfg.redirect_dir, w);
    let redirect = if cfg.userxattr {
        prop_oneof![3 => Just(RedirectDir::Off), rd(1) => Just(RedirectDir::Nofollow)].boxed()
    } else {
        prop_oneof![
            14 => Just(RedirectDir::Off),
            rd(3) => Just(RedirectDir::On),
            rd(2) => Just(RedirectDir::Nofollow),
            rd(1) => Just(RedirectDir::Follow),
        ]
        .boxed()
    };
    let x = |w| GenConfig::weight(cfg.xino && cfg.xino_auto, w);
    let xino = prop_oneof![
        6 => Just(Xino::Off),
        x(1) => Just(Xino::On),
        x(1) => Just(Xino::Auto),
        GenConfig::weight(cfg.xino && !cfg.xino_auto, 1) => Just(Xino::On),
    ];
    let (ro_on, userxattr) = (cfg.read_only, cfg.userxattr);
    (redirect, prop::bool::weighted(0.08), xino)
        .prop_map(move |(redirect_dir, read_only, xino)| Options {
            redirect_dir,
            read_only: read_only && ro_on,
            xino,
            userxattr,
            ..Options::default()
        })
        .boxed()
}

/// `layer` without the redirects of [`SHARED_REDIRECTS`]: drawn in a lower layer, they make
/// two merged directories whose top-most lower directories differ share the lower
/// directories below, and so their non-directories, which then alias one cached inode after
/// a copy-up (out of the model's contract, see [`crate::icache`]). In the upper they make
/// the second directory ESTALE instead, which the model answers.
fn upper_only_shared_redirects(mut layer: FlatLayer) -> FlatLayer {
    for e in &mut layer.entries {
        if let FlatEntry::Node { node, .. } = e {
            if node.xattrs.get(REDIRECT).is_some_and(|v| SHARED_REDIRECTS.contains(&v.as_slice())) {
                node.xattrs.remove(REDIRECT);
            }
        }
    }
    layer
}

/// A layer stack and the options of its first mount: 1 to [`LOWER_COUNT_MAX`] lowers and,
/// most of the time, an upper (without one, at least two lowers, so that the mount is
/// valid).
pub fn case_start(cfg: &GenConfig) -> impl Strategy<Value = CaseStart> {
    let lower_only = cfg.lower_only_mounts;
    let shared = cfg.shared_redirects;
    (
        cfg.lowers_min..=cfg.lowers_max,
        prop::bool::weighted(0.85),
        proptest::collection::vec(lower_layer(cfg), cfg.lowers_max),
        layer(cfg),
        options(cfg),
    )
        .prop_map(move |(count, has_upper, lowers, upper, options)| {
            let has_upper = has_upper || !lower_only;
            let count = if has_upper { count } else { count.max(2) };
            let lowers =
                lowers.into_iter().take(count).map(|l| if shared { upper_only_shared_redirects(l) } else { l });
            CaseStart {
                lowers: lowers.enumerate().map(|(i, l)| (lower_name(i), l)).collect(),
                upper: has_upper.then(|| (UPPER.to_owned(), upper)),
                options,
            }
        })
}

/// Case `seed` of a fixed stream, as commands: a [`case_start`] and `ops` operations drawn
/// from a ChaCha generator seeded with `seed`, then the final dumps
/// ([`super::case::final_commands`]). `None` when the model refuses the case's first mount
/// or does not model it. The benchmarks replay this stream on the model and on the kernel.
pub fn seeded_commands(seed: u64, ops: usize) -> Option<Vec<Command>> {
    use crate::backend::{Backend, ModelBackend, Reply};
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let mut runner = TestRunner::new_with_rng(Config::default(), TestRng::from_seed(RngAlgorithm::ChaCha, &bytes));
    let cfg = GenConfig::default();
    let start = case_start(&cfg).new_tree(&mut runner).ok()?.current();
    let ops = proptest::collection::vec(op(), ops).new_tree(&mut runner).ok()?.current();
    let mut commands = start.setup();
    let mut model = ModelBackend::new();
    for c in &commands {
        if !matches!(model.exec(c), Ok(Reply::Done)) {
            return None;
        }
    }
    commands.extend(ops.into_iter().map(Command::Op));
    commands.extend(super::case::final_commands(true, &start.layer_names()));
    Some(commands)
}

/// A path in the merged view: mostly `/x`, `/x/y` or `/x/y/z` over [`NAMES`]; sometimes a
/// trailing slash, a `..` or `.` component, or the root itself.
pub fn path(cfg: &GenConfig) -> impl Strategy<Value = String> {
    let depth_max = cfg.depth_max;
    let comps = || proptest::collection::vec(name_in(cfg), 1..=depth_max);
    let join = |c: Vec<String>| format!("/{}", c.join("/"));
    let odd = |w| GenConfig::weight(cfg.odd_paths, w);
    prop_oneof![
        24 => proptest::collection::vec(name_in(cfg), 1..=2).prop_map(join),
        6 => comps().prop_map(join),
        odd(2) => comps().prop_map(move |c| format!("{}/", join(c))),
        odd(2) => (comps(), 0..depth_max).prop_map(|(mut c, i)| {
            let at = i.min(c.len());
            c.insert(at, "..".to_owned());
            format!("/{}", c.join("/"))
        }),
        odd(1) => (comps(), 0..depth_max).prop_map(|(mut c, i)| {
            let at = i.min(c.len());
            c.insert(at, ".".to_owned());
            format!("/{}", c.join("/"))
        }),
        1 => Just("/".to_owned()),
    ]
}

/// Xattr names: user ones, trusted ones, and overlay's own (escaped through the mount).
fn xattr_name() -> impl Strategy<Value = String> {
    select(
        &[
            "user.a",
            "user.a",
            "user.b",
            "trusted.t",
            "trusted.overlay.opaque",
            "trusted.overlay.x",
            "trusted.overlay.overlay.y",
            "user.overlay.opaque",
        ][..],
    )
    .prop_map(str::to_owned)
}

fn small_data() -> impl Strategy<Value = Vec<u8>> {
    select(&OP_DATA[..]).prop_map(<[u8]>::to_vec)
}

fn open_flags() -> impl Strategy<Value = OpenFlags> {
    (
        prop_oneof![
            2 => Just(Access::ReadOnly),
            1 => Just(Access::WriteOnly),
            1 => Just(Access::ReadWrite),
        ],
        prop::bool::weighted(0.3),
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.15),
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.1),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(access, creat, excl, trunc, append, directory, nofollow)| OpenFlags {
            access,
            creat,
            excl,
            trunc,
            append,
            directory,
            nofollow,
        })
}

fn rename_flags() -> impl Strategy<Value = RenameFlags> {
    prop_oneof![
        40 => Just(RenameFlags::default()),
        5 => Just(RenameFlags { noreplace: true, ..RenameFlags::default() }),
        4 => Just(RenameFlags { exchange: true, ..RenameFlags::default() }),
        1 => Just(RenameFlags { whiteout: true, ..RenameFlags::default() }),
        1 => Just(RenameFlags { exchange: true, noreplace: true, whiteout: false }),
    ]
}

fn id() -> impl Strategy<Value = u32> {
    select(&[0u32, 0, 1, 1000, u32::MAX][..])
}

/// One operation on the merged view, any [`Op`] variant, weighted towards the ones that
/// change the upper layer, on paths from [`path`].
pub fn op() -> impl Strategy<Value = Op> {
    op_on(&GenConfig::default(), &Arc::default(), &Arc::default())
}

/// One element of `v`, drawn as `select(v)` draws it (an index in `0..v.len()`, shrinking
/// towards the first) without copying `v`: a strategy made for every transition of a long
/// case must not cost the length of the case.
fn pick(v: &Arc<Vec<String>>) -> impl Strategy<Value = String> {
    let v = Arc::clone(v);
    (0..v.len()).prop_map(move |i| v[i].clone())
}

/// A path that is often one of `known` (paths the layers hold or earlier operations made),
/// a new name in one of the directories among `dirs` (or the root), or one of those with
/// a trailing slash; else a [`path`].
///
/// The vectors are shared, never copied (see [`pick`]): the draws are those of `select` over
/// the same elements, so a seed gives the same case as before they were shared.
pub fn path_from(cfg: &GenConfig, known: &Arc<Vec<String>>, dirs: &Arc<Vec<String>>) -> BoxedStrategy<String> {
    if known.is_empty() {
        return path(cfg).boxed();
    }
    // The root ("") and then `dirs`, as `select` over `[""] + dirs` draws them.
    let parents = {
        let dirs = Arc::clone(dirs);
        (0..dirs.len() + 1).prop_map(move |i| if i == 0 { String::new() } else { dirs[i - 1].clone() })
    };
    let slashed = if dirs.is_empty() { known } else { dirs };
    prop_oneof![
        4 => path(cfg),
        4 => pick(known),
        3 => (parents, name_in(cfg)).prop_map(|(p, n)| format!("{p}/{n}")),
        GenConfig::weight(cfg.odd_paths, 1) => pick(slashed).prop_map(|p| format!("{p}/")),
    ]
    .boxed()
}

/// One operation, as [`op`], on paths drawn by [`path_from`].
pub fn op_on(cfg: &GenConfig, known: &Arc<Vec<String>>, dirs: &Arc<Vec<String>>) -> BoxedStrategy<Op> {
    let path = || path_from(cfg, known, dirs);
    let w = |name, weight| GenConfig::weight(cfg.op(name), weight);
    let mode = || select(&[0o755u32, 0o644, 0o700, 0o777, 0o1777, 0o2755, 0o600, 0][..]);
    // Built as the `prop_oneof!` of more than ten arms is (a `Union` of boxed arms, in
    // this order), so the default configuration draws exactly as before; an arm switched
    // off is left out, since a `Union` refuses a weight of 0.
    let arms: Vec<(u32, BoxedStrategy<Op>)> = vec![
        (w("stat", 6), path().prop_map(|path| Op::Stat { path }).boxed()),
        (w("lstat", 4), path().prop_map(|path| Op::Lstat { path }).boxed()),
        (
            w("open", 6),
            (path(), open_flags(), select(&[0o644u32, 0o600, 0o4755][..]))
                .prop_map(|(path, flags, mode)| Op::Open { path, flags, mode })
                .boxed(),
        ),
        (w("read", 5), path().prop_map(|path| Op::Read { path }).boxed()),
        (
            w("write", 6),
            (path(), prop_oneof![3 => (0..4u64).prop_map(WriteAt::Offset), 1 => Just(WriteAt::Append)], small_data())
                .prop_map(|(path, at, data)| Op::Write { path, at, data })
                .boxed(),
        ),
        (w("truncate", 3), (path(), 0..6u64).prop_map(|(path, len)| Op::Truncate { path, len }).boxed()),
        (w("mkdir", 6), (path(), mode()).prop_map(|(path, mode)| Op::Mkdir { path, mode }).boxed()),
        (w("rmdir", 4), path().prop_map(|path| Op::Rmdir { path }).boxed()),
        (w("unlink", 5), path().prop_map(|path| Op::Unlink { path }).boxed()),
        (
            w("rename", 9),
            (path(), path(), rename_flags()).prop_map(|(from, to, flags)| Op::Rename { from, to, flags }).boxed(),
        ),
        (w("link", 3), (path(), path()).prop_map(|(from, to)| Op::Link { from, to }).boxed()),
        (
            w("symlink", 3),
            (select(&TARGETS[..]), path()).prop_map(|(t, path)| Op::Symlink { target: t.to_owned(), path }).boxed(),
        ),
        (w("readlink", 2), path().prop_map(|path| Op::Readlink { path }).boxed()),
        (w("readdir", 5), path().prop_map(|path| Op::Readdir { path }).boxed()),
        (w("chmod", 2), (path(), mode()).prop_map(|(path, mode)| Op::Chmod { path, mode }).boxed()),
        (w("chown", 2), (path(), id(), id()).prop_map(|(path, uid, gid)| Op::Chown { path, uid, gid }).boxed()),
        (w("utimes", 1), path().prop_map(|path| Op::Utimes { path }).boxed()),
        (
            w("setxattr", 3),
            (path(), xattr_name(), small_data())
                .prop_map(|(path, name, value)| Op::Setxattr { path, name, value })
                .boxed(),
        ),
        (w("getxattr", 2), (path(), xattr_name()).prop_map(|(path, name)| Op::Getxattr { path, name }).boxed()),
        (w("listxattr", 2), path().prop_map(|path| Op::Listxattr { path }).boxed()),
        (w("removexattr", 2), (path(), xattr_name()).prop_map(|(path, name)| Op::Removexattr { path, name }).boxed()),
        (
            w("mknod", 2),
            (
                path(),
                prop_oneof![
                    2 => Just(MknodKind::Fifo),
                    1 => Just(MknodKind::File),
                    1 => Just(MknodKind::Char(0, 0)),
                ],
                select(&[0o644u32, 0o600, 0][..]),
            )
                .prop_map(|(path, kind, mode)| Op::Mknod { path, kind, mode })
                .boxed(),
        ),
    ];
    Union::new_weighted(arms.into_iter().filter(|(w, _)| *w > 0).collect()).boxed()
}

/// The handles a case opens, by name ([`GenConfig::handles`]).
pub const HANDLES: [&str; 3] = ["f0", "f1", "f2"];

/// The `count` of every generated `getdents`: more than any generated directory holds, so
/// that a batch is the whole rest of the listing (see [`GenConfig::handles`]).
pub const GETDENTS_ALL: u64 = 4096;

/// An operation through a handle ([`GenConfig::handles`]): an `open` of a path drawn by
/// [`path_from`] as one of [`HANDLES`], or (when some are `open`) a call through one of
/// them. Drawn beside [`op_on`]'s operations by the state machine, which knows which
/// handles the model holds open, so that the calls name an open handle.
pub fn handle_op(
    cfg: &GenConfig,
    open: &[String],
    known: &Arc<Vec<String>>,
    dirs: &Arc<Vec<String>>,
) -> BoxedStrategy<Op> {
    use crate::ops::fd::{FdOp, Whence};
    let opening = (select(&HANDLES[..]), path_from(cfg, known, dirs), open_flags(), select(&[0o644u32, 0o600][..]))
        .prop_map(|(fd, path, flags, mode)| Op::Fd(FdOp::Open { fd: fd.to_owned(), path, flags, mode }));
    if open.is_empty() {
        return opening.boxed();
    }
    let fd = || select(open.to_vec());
    let mode = || select(&[0o755u32, 0o644, 0o700, 0o600, 0o4755][..]);
    // A seek in a directory: to the start, past `.`, past `..`, or where it is; in a file
    // the same, or from the end.
    let seek = prop_oneof![
        4 => (0..3i64).prop_map(|o| (o, Whence::Set)),
        1 => Just((0, Whence::Cur)),
        1 => (-2..1i64).prop_map(|o| (o, Whence::End)),
    ];
    prop_oneof![
        if open.len() < HANDLES.len() { 5 } else { 1 } => opening,
        2 => fd().prop_map(|fd| FdOp::Close { fd }).prop_map(Op::Fd),
        3 => (fd(), 1..12u64).prop_map(|(fd, len)| Op::Fd(FdOp::Read { fd, len })),
        3 => (fd(), small_data()).prop_map(|(fd, data)| Op::Fd(FdOp::Write { fd, data })),
        2 => (fd(), 0..8u64, 1..12u64).prop_map(|(fd, offset, len)| Op::Fd(FdOp::Pread { fd, offset, len })),
        2 => (fd(), 0..6u64, small_data()).prop_map(|(fd, offset, data)| Op::Fd(FdOp::Pwrite { fd, offset, data })),
        2 => (fd(), seek).prop_map(|(fd, (offset, whence))| Op::Fd(FdOp::Lseek { fd, offset, whence })),
        3 => fd().prop_map(|fd| Op::Fd(FdOp::Fstat { fd })),
        2 => (fd(), 0..6u64).prop_map(|(fd, len)| Op::Fd(FdOp::Ftruncate { fd, len })),
        1 => (fd(), mode()).prop_map(|(fd, mode)| Op::Fd(FdOp::Fchmod { fd, mode })),
        4 => fd().prop_map(|fd| Op::Fd(FdOp::Getdents { fd, count: GETDENTS_ALL })),
        1 => (fd(), id(), id()).prop_map(|(fd, uid, gid)| Op::Fd(FdOp::Fchown { fd, uid, gid })),
        1 => fd().prop_map(|fd| Op::Fd(FdOp::Fsync { fd })),
        2 => (fd(), xattr_name(), small_data())
            .prop_map(|(fd, name, value)| Op::Fd(FdOp::Fsetxattr { fd, name, value })),
        2 => (fd(), xattr_name()).prop_map(|(fd, name)| Op::Fd(FdOp::Fgetxattr { fd, name })),
        1 => fd().prop_map(|fd| Op::Fd(FdOp::Flistxattr { fd })),
        1 => (fd(), xattr_name()).prop_map(|(fd, name)| Op::Fd(FdOp::Fremovexattr { fd, name })),
    ]
    .boxed()
}

/// A path inside a layer, for an offline edit.
fn layer_path(cfg: &GenConfig) -> impl Strategy<Value = String> {
    proptest::collection::vec(name_in(cfg), 1..=cfg.depth_max).prop_map(|c| format!("/{}", c.join("/")))
}

/// Whether `a` is `b` or one is an ancestor of the other (component-wise).
fn overlaps(a: &str, b: &str) -> bool {
    let ca: Vec<&str> = a.split('/').filter(|c| !c.is_empty()).collect();
    let cb: Vec<&str> = b.split('/').filter(|c| !c.is_empty()).collect();
    let n = ca.len().min(cb.len());
    ca[..n] == cb[..n]
}

/// One offline edit: put a node (a non-directory, or an empty directory with its markers),
/// remove a path, or make a hard link. A link never targets its own path or an ancestor or
/// descendant of it, where replacing the name would remove the link's target first.
///
/// With `removes` false, no `Remove`: removing an upper whiteout after a rename can show
/// a lower file again whose inode is also the copy-up origin of the renamed copy, and the
/// kernel then answers by the order of its inode cache (ESTALE for whichever name comes
/// second), which is out of the model's contract. Edits of the upper are made that way.
pub fn edit(cfg: &GenConfig, removes: bool) -> impl Strategy<Value = Edit> {
    prop_oneof![
        5 => (layer_path(cfg), prop_oneof![3 => leaf_node(cfg), 1 => dir_node(cfg)])
            .prop_map(|(path, node)| Edit::Put { path, node }),
        if removes { 3 } else { 0 } => layer_path(cfg).prop_map(|path| Edit::Remove { path }),
        GenConfig::weight(cfg.hard_links, 1) => (layer_path(cfg), layer_path(cfg))
            .prop_filter("a link overlapping its target", |(p, t)| !overlaps(p, t))
            .prop_map(|(path, to)| Edit::Link { path, to }),
    ]
}

/// Whether an offline edit is one the generators make (see [`edit`]): a put is also one
/// a layer can hold ([`crate::layer::check::check_node`]), so a shrunk case never turns
/// into a refused edit.
pub fn edit_is_valid(edit: &Edit) -> bool {
    match edit {
        Edit::Link { path, to } => !overlaps(path, to),
        Edit::Put { path, node } => {
            path.split('/').any(|c| !c.is_empty()) && crate::layer::check::check_node(path, node).is_ok()
        }
        Edit::Remove { path } => path.split('/').any(|c| !c.is_empty()),
    }
}

/// The mounts a case may make after an unmount: the same layers again, or (when there is
/// an upper) a lower-only mount of the old upper over the lowers, or the lowers alone.
pub fn mounts(cfg: &GenConfig, start: &CaseStart) -> Vec<(Vec<String>, Option<String>)> {
    let lowers: Vec<String> = start.lowers.iter().map(|(n, _)| n.clone()).collect();
    let mut out = vec![(lowers.clone(), start.upper.as_ref().map(|(n, _)| n.clone()))];
    // With shared redirects in the upper, no mount uses it as a lower (see
    // `upper_only_shared_redirects`).
    if let Some((u, _)) = start.upper.as_ref().filter(|_| cfg.lower_only_mounts && !cfg.shared_redirects) {
        let mut with_upper = vec![u.clone()];
        with_upper.extend(lowers.iter().cloned());
        out.push((with_upper, None));
        if lowers.len() >= 2 {
            out.push((lowers, None));
        }
    }
    out
}

/// A mount command for this case (see [`mounts`]), mostly with the layers of the first
/// mount.
pub fn mount(cfg: &GenConfig, start: &CaseStart) -> BoxedStrategy<Command> {
    let choices = mounts(cfg, start);
    let first = choices[0].clone();
    let which = if choices.len() > 1 {
        prop_oneof![3 => Just(first), 1 => select(choices)].boxed()
    } else {
        Just(first).boxed()
    };
    // A remount keeps the first mount's `userxattr`: the model records copy-up origins and
    // impure marks without the xattr namespace the kernel wrote them in, so switching
    // namespaces on one upper is outside what it models.
    let userxattr = start.options.userxattr;
    (which, options(cfg))
        .prop_map(move |((lowers, upper), mut options)| {
            if options.userxattr != userxattr {
                options.userxattr = userxattr;
                options.redirect_dir =
                    if userxattr { crate::mount::RedirectDir::Nofollow } else { crate::mount::RedirectDir::Off };
            }
            Command::Mount { lowers, upper, options }
        })
        .boxed()
}

/// A caller for [`crate::backend::Command::OpAs`]: root or one of the users that own layer
/// objects ([`GenConfig::owners`]: 1000 and 1), with or without a supplementary group,
/// and a umask.
pub fn cred() -> BoxedStrategy<crate::cred::Cred> {
    (
        select(&[0u32, 1000, 1000, 1][..]),
        select(&[0u32, 1000][..]),
        select(vec![Vec::new(), vec![1000u32], vec![0]]),
        select(&[0u32, 0o022, 0o077, 0o002][..]),
    )
        .prop_map(|(uid, gid, groups, umask)| crate::cred::Cred { uid, gid, groups, umask })
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;

    #[test]
    fn generated_layers_are_canonical_and_shallow() {
        let mut runner = TestRunner::deterministic();
        for _ in 0..200 {
            let flat = layer(&GenConfig::default()).new_tree(&mut runner).expect("a layer").current();
            let built = crate::layer::Layer::from_flat(&flat);
            assert_eq!(built.to_flat(), flat, "generated layers are in canonical order");
            assert_eq!(crate::layer::check::check_layer(&flat), Ok(()), "a layer can hold every generated node");
            for e in &flat.entries {
                assert!(e.path().split('/').filter(|c| !c.is_empty()).count() <= DEPTH_MAX);
                if let FlatEntry::Node { node, .. } = e {
                    assert!(node.kind != FileType::Block);
                    if node.kind == FileType::Char {
                        assert_eq!(node.rdev, Some((0, 0)), "the only device is a whiteout");
                    }
                }
            }
        }
    }

    #[test]
    fn links_never_overlap_their_target() {
        assert!(overlaps("/a", "/a/b"));
        assert!(overlaps("/a/b", "/a"));
        assert!(overlaps("/a", "/a"));
        assert!(!overlaps("/a", "/ab"));
        assert!(!overlaps("/a/b", "/a/c"));
    }
}
