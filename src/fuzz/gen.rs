//! Generators: layer stacks, mount options, operations, offline edits and remounts.
//!
//! Every draw is defined once, as a `draw_*` function that reads a [`TestRng`] directly
//! (no value trees: a case is drawn in a few microseconds). The proptest strategies of the
//! same names ([`case_start`], [`op`], [`layer`], ...) are thin wrappers over them
//! ([`direct`]) whose values do not shrink; failing cases are shrunk whole by
//! [`super::shrink::minimize`].
//!
//! Everything is drawn from a small name alphabet ([`NAMES`]) and a shallow depth
//! ([`DEPTH_MAX`]), so that names collide across layers and operations hit what the layers
//! hold. Data stays tiny. What the model declares not modelled (a file-handle step it
//! cannot answer: [`GenConfig::file_handles`]) is never generated, nor is `volatile`
//! (pinned in spec/volatile/), and no device node is made other than a whiteout (char
//! 0/0). `metacopy`, `index`/`nfs_export` and data-only lower
//! layers are drawn only under their switches ([`GenConfig::metacopy`],
//! [`GenConfig::index`], [`GenConfig::data_only`]).

use super::case::CaseStart;
use super::config::GenConfig;
use crate::backend::{Command, Edit};
use crate::layer::{FileType, FlatEntry, FlatLayer, FlatNode};
use crate::mount::{Options, RedirectDir, Uuid, Xino};
use crate::ops::{Access, MknodKind, Op, OpenFlags, RenameFlags, WriteAt};
use proptest::prelude::*;
use proptest::strategy::Just;
use proptest::test_runner::TestRunner;
use std::collections::BTreeMap;
use std::fmt;
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

/// The random source every draw reads: proptest's [`TestRng`], so that the proptest-facing
/// strategies ([`direct`]) draw from their runner's own RNG (no seed to derive, and a
/// runner's seed still fixes the case), and the fast paths
/// ([`crate::fuzz::campaign::draw`]) from the same RNG without a runner's value trees.
/// Only [`RngCore::next_u32`] is read, through [`below`], [`chance`] and [`arm`].
pub use proptest::test_runner::TestRng;

/// An index in `0..n` (`n > 0`), by a multiply-shift of one 32-bit draw (its bias, under
/// `n / 2^32`, is nothing at the sizes drawn here).
pub fn below(rng: &mut TestRng, n: usize) -> usize {
    ((u64::from(rng.next_u32()) * n as u64) >> 32) as usize
}

/// True with probability `p`.
pub fn chance(rng: &mut TestRng, p: f64) -> bool {
    f64::from(rng.next_u32()) < p * 4_294_967_296.0
}

/// The index of an arm drawn by `weights` (as `prop_oneof!` draws one: an arm of weight 0
/// is never drawn). At least one weight is positive.
pub fn arm(rng: &mut TestRng, weights: &[u32]) -> usize {
    let total: u32 = weights.iter().sum();
    let mut x = below(rng, total as usize) as u32;
    for (i, &w) in weights.iter().enumerate() {
        if x < w {
            return i;
        }
        x -= w;
    }
    weights.len() - 1
}

/// One element of `v` (not empty), uniformly.
pub fn pick<'a, T>(rng: &mut TestRng, v: &'a [T]) -> &'a T {
    &v[below(rng, v.len())]
}

/// A proptest strategy that draws its value with `f` from the runner's RNG: the
/// proptest-facing generators ([`case_start`], [`op`], [`super::ModelMachine`]) are these
/// over the direct draws (`draw_*`), so that what is drawn is defined once. Its value
/// does not shrink (the fuzzer shrinks whole cases: [`super::shrink::minimize`]).
pub fn direct<T: Clone + fmt::Debug + 'static>(f: impl Fn(&mut TestRng) -> T + 'static) -> BoxedStrategy<T> {
    Direct(Arc::new(f)).boxed()
}

/// See [`direct`].
struct Direct<T>(Arc<dyn Fn(&mut TestRng) -> T>);

impl<T> fmt::Debug for Direct<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Direct")
    }
}

impl<T: Clone + fmt::Debug> Strategy for Direct<T> {
    type Tree = Just<T>;
    type Value = T;

    fn new_tree(&self, runner: &mut TestRunner) -> proptest::strategy::NewTree<Self> {
        Ok(Just((self.0)(runner.rng())))
    }
}

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
pub fn name() -> BoxedStrategy<String> {
    direct(|rng| (*pick(rng, &NAMES)).to_owned())
}

/// One name of the configuration's alphabet ([`GenConfig::names`]).
fn draw_name(rng: &mut TestRng, cfg: &GenConfig) -> String {
    pick(rng, &cfg.names).clone()
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
fn draw_user_xattrs(rng: &mut TestRng, cfg: &GenConfig) -> BTreeMap<String, Vec<u8>> {
    let on = GenConfig::weight(cfg.user_xattrs, 1);
    match arm(rng, &[8, on, on]) {
        0 => BTreeMap::new(),
        1 => BTreeMap::from([("user.a".to_owned(), b"1".to_vec())]),
        _ => BTreeMap::from([("user.a".to_owned(), b"2".to_vec()), ("user.b".to_owned(), Vec::new())]),
    }
}

fn draw_owner(rng: &mut TestRng, cfg: &GenConfig) -> (u32, u32) {
    let w = GenConfig::weight(cfg.owners, 1);
    [(0, 0), (1000, 1000), (1, 0)][arm(rng, &[9, w, w])]
}

/// A regular file with tiny data, sometimes with `user.*` xattrs or another owner.
fn draw_file_node(rng: &mut TestRng, cfg: &GenConfig) -> FlatNode {
    let data = *pick(rng, &FILE_DATA);
    let mode = *pick(rng, &[0o644u32, 0o644, 0o600, 0o755, 0o444, 0o4755]);
    let mut n = file(data, mode);
    (n.uid, n.gid) = draw_owner(rng, cfg);
    n.xattrs = draw_user_xattrs(rng, cfg);
    n
}

/// A non-directory node of a layer (no hard links: see [`layer`]).
///
/// Xattr whiteouts are always zero-size: a sized file with the marker is an ordinary file
/// until a truncate or a write through the mount makes it zero-size, and then the kernel
/// keeps showing it from its dentry cache while a fresh lookup would hide it; the model has
/// no dentry cache, so that case is out of its contract (the sized file itself is pinned in
/// spec/).
pub fn draw_leaf_node(rng: &mut TestRng, cfg: &GenConfig) -> FlatNode {
    let weights = [
        10,
        GenConfig::weight(cfg.symlinks, 3),
        GenConfig::weight(cfg.whiteouts, 3),
        GenConfig::weight(cfg.xattr_whiteouts, 2),
        GenConfig::weight(cfg.fifos, 1),
        // No metacopy files but under `metacopy` (below): their lookup is EPERM without
        // metacopy=on (pinned in spec/), and when readdir meets two of them in a directory
        // with xattr whiteouts, whether it fails depends on the order of the directory's
        // entries, which the model does not keep (see `machine::readdir_order_decides`).
        // Under `userxattr`, a `trusted.overlay.whiteout` decoy: an ordinary empty file.
        GenConfig::weight(cfg.xattr_whiteouts && cfg.userxattr, 1),
        // Under `metacopy`, metacopy files: an empty `metacopy` xattr, any size and data
        // (reads take the data below). The profile draws no xattr whiteouts.
        GenConfig::weight(cfg.metacopy, 2),
    ];
    match arm(rng, &weights) {
        0 => draw_file_node(rng, cfg),
        1 => symlink(pick::<&str>(rng, &TARGETS)),
        2 => whiteout(),
        // An xattr whiteout: a zero-size file with `trusted.overlay.whiteout`.
        3 => with_xattr(file(b"", 0o644), ns(cfg, XWHITEOUT), pick::<&[u8]>(rng, &XWHITEOUT_VALUES)),
        4 => node(FileType::Fifo, *pick(rng, &[0o644u32, 0o600])),
        5 => with_xattr(file(b"", 0o644), XWHITEOUT, pick::<&[u8]>(rng, &XWHITEOUT_VALUES)),
        _ => {
            let data = *pick(rng, &FILE_DATA);
            with_xattr(file(data, *pick(rng, &[0o644u32, 0o600])), METACOPY, b"")
        }
    }
}

/// [`draw_leaf_node`] as a strategy.
pub fn leaf_node(cfg: &GenConfig) -> BoxedStrategy<FlatNode> {
    let cfg = cfg.clone();
    direct(move |rng| draw_leaf_node(rng, &cfg))
}

/// A directory's own metadata: mode, owner, sometimes an opaque marker (`y`, `x`, or a
/// value that is not opaque), rarely a redirect, sometimes `user.*` xattrs.
pub fn draw_dir_node(rng: &mut TestRng, cfg: &GenConfig) -> FlatNode {
    let mode = *pick(rng, &[0o755u32, 0o755, 0o700, 0o777, 0o1777]);
    let mut n = node(FileType::Dir, mode);
    (n.uid, n.gid) = draw_owner(rng, cfg);
    let opaque = |w| GenConfig::weight(cfg.opaque_dirs, w);
    let weights = [
        14,
        opaque(4),
        opaque(2),
        opaque(1),
        opaque(1),
        // Only redirects that lead nowhere: one that names a directory another name also
        // shows makes two merged directories share a lower one, and the kernel's answer
        // then depends on its inode cache (ESTALE or not, by lookup order), which is out of
        // the model's contract. Redirects made by renames under `redirect_dir=on`, and the
        // spec scenarios, cover working ones.
        GenConfig::weight(cfg.redirects, 1),
        // Redirects that may lead to a directory another name shows: which of the two
        // merged directories works depends on which is looked up first (the model's inode
        // cache, `crate::icache`).
        GenConfig::weight(cfg.shared_redirects, 1),
    ];
    let marker: Option<(&str, &[u8])> = match arm(rng, &weights) {
        0 => None,
        1 => Some((ns(cfg, OPAQUE), b"y")),
        2 => Some((ns(cfg, OPAQUE), b"x")),
        3 => Some((ns(cfg, OPAQUE), b"yes")),
        4 => Some((ns(cfg, "user.overlay.opaque"), b"y")),
        5 => Some((ns(cfg, REDIRECT), *pick(rng, &FRUITLESS_REDIRECTS))),
        _ => Some((ns(cfg, REDIRECT), *pick(rng, &SHARED_REDIRECTS))),
    };
    n.xattrs = draw_user_xattrs(rng, cfg);
    if let Some((k, v)) = marker {
        n.xattrs.insert(k.to_owned(), v.to_vec());
    }
    n
}

/// [`draw_dir_node`] as a strategy.
pub fn dir_node(cfg: &GenConfig) -> BoxedStrategy<FlatNode> {
    let cfg = cfg.clone();
    direct(move |rng| draw_dir_node(rng, &cfg))
}

/// Draws the children of the directory `prefix` at `depth` (the root's children are at
/// depth 1) into `out`, depth first in name order (the canonical order of
/// [`crate::layer::Layer::to_flat`]): each name of the alphabet is taken with probability
/// `p[0]` in the root, `p[1]` below it; a child is a leaf, a hard link to the `n`-th
/// (modulo, `n < 8`) earlier linkable node of the layer (a plain file when there is none
/// yet), or, above [`GenConfig::depth_max`], a directory.
fn draw_children(
    rng: &mut TestRng,
    cfg: &GenConfig,
    prefix: &str,
    depth: usize,
    p: [f64; 2],
    out: &mut FlatLayer,
    linkable: &mut Vec<String>,
) {
    let pd = if depth == 1 { p[0] } else { p[1] };
    for name in &cfg.names {
        if !chance(rng, pd) {
            continue;
        }
        let path = format!("{prefix}/{name}");
        let is_dir = depth < cfg.depth_max && arm(rng, &[3, cfg.dir_weight]) == 1;
        if is_dir {
            let node = draw_dir_node(rng, cfg);
            out.entries.push(FlatEntry::Node { path: path.clone(), node });
            draw_children(rng, cfg, &path, depth + 1, p, out, linkable);
        } else if arm(rng, &[12, GenConfig::weight(cfg.hard_links, if cfg.index { 4 } else { 1 })]) == 0 {
            let node = draw_leaf_node(rng, cfg);
            let is_whiteout = node.kind == FileType::Char
                || node.xattrs.contains_key(XWHITEOUT)
                || node.xattrs.contains_key("user.overlay.whiteout")
                || node.xattrs.contains_key(METACOPY);
            if !is_whiteout {
                linkable.push(path.clone());
            }
            out.entries.push(FlatEntry::Node { path, node });
        } else {
            let n = below(rng, 8);
            if linkable.is_empty() {
                linkable.push(path.clone());
                out.entries.push(FlatEntry::Node { path, node: file(b"l", 0o644) });
            } else {
                let to = linkable[n % linkable.len()].clone();
                out.entries.push(FlatEntry::Link { path, to });
            }
        }
    }
}

/// One layer: a tree of depth at most [`GenConfig::depth_max`] over the alphabet, with
/// files, directories, symlinks, whiteouts, xattr whiteouts, opaque directories, FIFOs and
/// hard links. The entries are in the canonical order of
/// [`crate::layer::Layer::to_flat`].
pub fn draw_layer(rng: &mut TestRng, cfg: &GenConfig) -> FlatLayer {
    draw_layer_with(rng, cfg, [0.55, 0.35])
}

/// [`draw_layer`] as a strategy.
pub fn layer(cfg: &GenConfig) -> BoxedStrategy<FlatLayer> {
    let cfg = cfg.clone();
    direct(move |rng| draw_layer(rng, &cfg))
}

/// A layer whose names are taken with probabilities `p` ([`draw_children`]), its root
/// drawn by [`draw_root_node`].
fn draw_layer_with(rng: &mut TestRng, cfg: &GenConfig, p: [f64; 2]) -> FlatLayer {
    let root = draw_root_node(rng, cfg);
    let mut out = FlatLayer { root, entries: Vec::new() };
    draw_children(rng, cfg, "", 1, p, &mut out, &mut Vec::new());
    out
}

/// A layer's root: mostly plain; sometimes opaque. With [`GenConfig::root_markers`], often
/// a marker: opaque `y` or `x` (`x` on a lower root: it may hold xattr whiteouts), a value
/// that is not opaque, a redirect, or the other namespace's opaque marker (a decoy).
fn draw_root_node(rng: &mut TestRng, cfg: &GenConfig) -> FlatNode {
    let dir = || node(FileType::Dir, 0o755);
    let marked = |name, value: &[u8]| with_xattr(dir(), ns(cfg, name), value);
    if cfg.root_markers {
        let r = GenConfig::weight(cfg.redirects, 1);
        return match arm(rng, &[6, 3, 3, 1, 1, r, r, 1]) {
            0 => dir(),
            1 => marked(OPAQUE, b"y"),
            2 => marked(OPAQUE, b"x"),
            3 => marked(OPAQUE, b"yes"),
            4 => marked("user.overlay.opaque", b"y"),
            5 => marked(REDIRECT, b"/a"),
            6 => marked(REDIRECT, b"/zz/.."),
            _ => node(FileType::Dir, 0o700),
        };
    }
    // The opaque marker on the upper root is ignored.
    match arm(rng, &[12, GenConfig::weight(cfg.opaque_dirs, 1), 1]) {
        0 => dir(),
        1 => marked(OPAQUE, b"y"),
        _ => node(FileType::Dir, 0o700),
    }
}

/// A lower layer: as [`draw_layer`], or, with [`GenConfig::sparse_lowers`], three times in
/// four a sparse one (a name of the root in eight, few below), so that most entries of a
/// stack sit in few of its lowers.
fn draw_lower_layer(rng: &mut TestRng, cfg: &GenConfig) -> FlatLayer {
    if cfg.sparse_lowers && arm(rng, &[1, 3]) == 1 {
        return draw_layer_with(rng, cfg, [0.12, 0.25]);
    }
    draw_layer(rng, cfg)
}

/// `redirect_dir`: mostly not given (off); `on`, `nofollow` or `follow` by `weights` when
/// [`GenConfig::redirect_dir`].
fn draw_redirect_dir(rng: &mut TestRng, cfg: &GenConfig, weights: [u32; 3]) -> RedirectDir {
    let rd = |w| GenConfig::weight(cfg.redirect_dir, w);
    [RedirectDir::Off, RedirectDir::On, RedirectDir::Nofollow, RedirectDir::Follow]
        [arm(rng, &[14, rd(weights[0]), rd(weights[1]), rd(weights[2])])]
}

/// Mount options: mostly the defaults; sometimes `redirect_dir=on`, `nofollow` or
/// `follow`, a read-only mount or `xino=on`. Never an option the model does not implement.
/// `userxattr` only with [`GenConfig::userxattr`] (every mount; see [`draw_wide_options`]):
/// under it a copy of a symlink or a FIFO has no origin, and its `st_ino` depends on the
/// inode cache (modelled, `crate::icache`).
pub fn draw_options(rng: &mut TestRng, cfg: &GenConfig) -> Options {
    if cfg.index {
        return draw_index_options(rng, cfg);
    }
    if cfg.data_only {
        return draw_data_only_options(rng, cfg);
    }
    if cfg.userxattr || cfg.xino_auto {
        return draw_wide_options(rng, cfg);
    }
    if cfg.metacopy {
        return draw_metacopy_options(rng, cfg);
    }
    let redirect_dir = draw_redirect_dir(rng, cfg, [3, 2, 1]);
    let read_only = chance(rng, 0.08) && cfg.read_only;
    let xino = chance(rng, 0.03) && cfg.xino;
    Options { redirect_dir, read_only, xino: if xino { Xino::On } else { Xino::Off }, ..Options::default() }
}

/// [`draw_options`] as a strategy.
pub fn options(cfg: &GenConfig) -> BoxedStrategy<Options> {
    let cfg = cfg.clone();
    direct(move |rng| draw_options(rng, &cfg))
}

/// The options of [`GenConfig::metacopy`]: [`draw_options`]'s draws, with `metacopy=on` in
/// about half the mounts. Mostly `redirect_dir` is not given (metacopy then implies `on`);
/// a given mode other than `on` is a conflict the kernel refuses (EINVAL,
/// `ovl_fs_params_verify`).
fn draw_metacopy_options(rng: &mut TestRng, cfg: &GenConfig) -> Options {
    let redirect_dir = draw_redirect_dir(rng, cfg, [3, 1, 1]);
    let read_only = chance(rng, 0.08) && cfg.read_only;
    let xino = chance(rng, 0.03) && cfg.xino;
    let metacopy = chance(rng, 0.5);
    Options { redirect_dir, read_only, xino: if xino { Xino::On } else { Xino::Off }, metacopy, ..Options::default() }
}

/// The options of [`GenConfig::index`]: [`draw_options`]'s draws, with `index=on` or
/// `nfs_export=on` (which implies `index=on`) in most mounts, and rarely one of the
/// refusals of `ovl_fs_params_verify` (params.c): `nfs_export=on` with an explicit
/// `index=off` or `metacopy=on` (EINVAL, "conflicting options"). With
/// [`GenConfig::index_userxattr`], a quarter of them `userxattr` ones; with
/// [`GenConfig::index_metacopy`], `metacopy=on` in a third of those without `nfs_export`
/// or `userxattr`; with [`GenConfig::uuid`], a `uuid=` drawn by `draw_uuid`.
fn draw_index_options(rng: &mut TestRng, cfg: &GenConfig) -> Options {
    let redirect_dir = draw_redirect_dir(rng, cfg, [3, 2, 1]);
    let read_only = chance(rng, 0.08) && cfg.read_only;
    let xino = if chance(rng, 0.03) && cfg.xino { Xino::On } else { Xino::Off };
    let mut o = Options { redirect_dir, read_only, xino, ..Options::default() };
    match arm(rng, &[3, 5, 2, 2, 1, 1, 1]) {
        0 => {}
        1 => o.index = true,
        // `nfs_export=on` alone: the kernel turns `index` on.
        2 => o.nfs_export = true,
        3 => (o.index, o.nfs_export) = (true, true),
        4 => (o.nfs_export, o.named.index) = (true, true),
        5 => (o.nfs_export, o.metacopy) = (true, true),
        _ => (o.index, o.named.nfs_export) = (true, true),
    }
    if cfg.index_userxattr && chance(rng, 0.25) {
        userxattr_index_options(rng, &mut o);
    }
    if cfg.index_metacopy && !o.nfs_export && !o.metacopy && !o.userxattr && chance(rng, 0.33) {
        o.metacopy = true;
        // Mostly with `redirect_dir` left to its implied `on`; else as drawn (a given mode
        // other than `on` is refused, EINVAL).
        if o.redirect_dir != RedirectDir::On && chance(rng, 0.8) {
            o.redirect_dir = RedirectDir::Off;
        }
    }
    if cfg.uuid {
        o.uuid = draw_uuid(rng);
    }
    o
}

/// `uuid=` ([`GenConfig::uuid`]): mostly not given (`auto`); else `null`, `on` or `off`.
fn draw_uuid(rng: &mut TestRng) -> Uuid {
    [Uuid::Auto, Uuid::Null, Uuid::On, Uuid::Off][arm(rng, &[7, 1, 1, 1])]
}

/// Turns index options into `userxattr` ones ([`GenConfig::index_userxattr`]): `userxattr`,
/// `redirect_dir` left to its default (`nofollow` under `userxattr`) or given as `nofollow`,
/// and neither `nfs_export=on` nor `metacopy=on` (`ovl_fs_params_verify` refuses `metacopy`
/// with `userxattr`; `nfs_export` is left out as well).
fn userxattr_index_options(rng: &mut TestRng, o: &mut Options) {
    o.userxattr = true;
    o.redirect_dir = [RedirectDir::Off, RedirectDir::Nofollow][below(rng, 2)];
    o.named.redirect_dir = false;
    if o.nfs_export && !o.named.index {
        o.index = true;
    }
    (o.nfs_export, o.named.nfs_export, o.metacopy, o.named.metacopy) = (false, false, false, false);
}

/// The options of [`GenConfig::data_only`]: `redirect_dir` drawn as ever (the data-only
/// layers' redirects are followed whatever it is, the other ones by its rules),
/// `metacopy=on` in a third of the mounts, `xino=on` rarely; never `ro` (the option string
/// does not carry it), `index` or `userxattr`.
fn draw_data_only_options(rng: &mut TestRng, cfg: &GenConfig) -> Options {
    let redirect_dir = draw_redirect_dir(rng, cfg, [3, 2, 1]);
    let xino = if chance(rng, 0.03) && cfg.xino { Xino::On } else { Xino::Off };
    let metacopy = chance(rng, 0.33);
    Options { redirect_dir, xino, metacopy, ..Options::default() }
}

/// The options of [`GenConfig::userxattr`] and [`GenConfig::xino_auto`]: under `userxattr`,
/// `redirect_dir` left to the kernel's default (which is then `nofollow`) or given as
/// `nofollow`, the only value it allows (kernel: `ovl_fs_params_verify`); `xino` off, `on`
/// or `auto`.
fn draw_wide_options(rng: &mut TestRng, cfg: &GenConfig) -> Options {
    let redirect_dir = if cfg.userxattr {
        [RedirectDir::Off, RedirectDir::Nofollow][arm(rng, &[3, GenConfig::weight(cfg.redirect_dir, 1)])]
    } else {
        draw_redirect_dir(rng, cfg, [3, 2, 1])
    };
    let read_only = chance(rng, 0.08) && cfg.read_only;
    let x = |w| GenConfig::weight(cfg.xino && cfg.xino_auto, w);
    let xino = [Xino::Off, Xino::On, Xino::Auto, Xino::On]
        [arm(rng, &[6, x(1), x(1), GenConfig::weight(cfg.xino && !cfg.xino_auto, 1)])];
    Options { redirect_dir, read_only, xino, userxattr: cfg.userxattr, ..Options::default() }
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

/// A layer stack and the options of its first mount: [`GenConfig::lowers_min`] to
/// [`GenConfig::lowers_max`] lowers and, most of the time, an upper (without one, at least
/// two lowers, so that the mount is valid).
pub fn draw_case_start(rng: &mut TestRng, cfg: &GenConfig) -> CaseStart {
    if cfg.data_only {
        return draw_data_only_start(rng, cfg);
    }
    let count = cfg.lowers_min + below(rng, cfg.lowers_max - cfg.lowers_min + 1);
    let has_upper = chance(rng, 0.85) || !cfg.lower_only_mounts;
    let count = if has_upper { count } else { count.max(2) };
    let mut lowers: Vec<(String, FlatLayer)> = (0..count)
        .map(|i| {
            let l = draw_lower_layer(rng, cfg);
            (lower_name(i), if cfg.shared_redirects { upper_only_shared_redirects(l) } else { l })
        })
        .collect();
    let mut upper = has_upper.then(|| (UPPER.to_owned(), draw_layer(rng, cfg)));
    let options = draw_options(rng, cfg);
    if cfg.index_userxattr && options.userxattr {
        for (_, l) in &mut lowers {
            linked_specials(rng, l);
        }
    }
    if cfg.index_metacopy && metacopy_chains(rng, &mut lowers) {
        for (_, l) in lowers.iter_mut().chain(upper.iter_mut()) {
            strip_opaque_x(l);
        }
    }
    CaseStart { lowers, upper, options, data: 0 }
}

/// Metacopy chains ([`GenConfig::index_metacopy`]): each regular file of a lower (not the
/// bottom one) with only `user.*` xattrs, no other name in its layer, and a regular file at
/// the same path in some lower below, becomes one time in two a metacopy file (an empty
/// `metacopy` xattr), whose data then comes from below, through as many lowers as the chain
/// holds. Whether any was made.
fn metacopy_chains(rng: &mut TestRng, lowers: &mut [(String, FlatLayer)]) -> bool {
    let files = |l: &FlatLayer| -> Vec<String> {
        l.entries
            .iter()
            .filter_map(|e| match e {
                FlatEntry::Node { path, node } if node.kind == FileType::File => Some(path.clone()),
                _ => None,
            })
            .collect()
    };
    let mut made = false;
    for i in (0..lowers.len().saturating_sub(1)).rev() {
        let below_files: Vec<String> = lowers[i + 1..].iter().flat_map(|(_, l)| files(l)).collect();
        let linked = link_targets(&lowers[i].1);
        for e in &mut lowers[i].1.entries {
            let FlatEntry::Node { path, node } = e else { continue };
            let plain = node.kind == FileType::File && node.xattrs.keys().all(|k| k.starts_with("user."));
            if plain && !linked.contains(path) && below_files.contains(path) && chance(rng, 0.5) {
                node.xattrs.insert(METACOPY.to_owned(), Vec::new());
                made = true;
            }
        }
    }
    made
}

/// The paths that the hard links of `layer` name (each `!link`'s target).
fn link_targets(layer: &FlatLayer) -> Vec<String> {
    layer
        .entries
        .iter()
        .filter_map(|e| match e {
            FlatEntry::Link { to, .. } => Some(to.clone()),
            FlatEntry::Node { .. } => None,
        })
        .collect()
}

/// Under `userxattr` with `index=on` ([`GenConfig::index_userxattr`]): each plain regular
/// file of `layer` that other names link to becomes, one time in two, a symlink or a FIFO
/// (its links kept), so that copy-ups of such hard links (EPERM: the upper cannot hold a
/// `user.overlay.origin` xattr on them) are common.
fn linked_specials(rng: &mut TestRng, layer: &mut FlatLayer) {
    let linked = link_targets(layer);
    for e in &mut layer.entries {
        let FlatEntry::Node { path, node } = e else { continue };
        if node.kind == FileType::File && node.xattrs.is_empty() && linked.contains(path) && chance(rng, 0.5) {
            let (uid, gid) = (node.uid, node.gid);
            *node = if chance(rng, 0.5) { symlink(pick::<&str>(rng, &TARGETS)) } else { node_fifo() };
            (node.uid, node.gid) = (uid, gid);
        }
    }
}

fn node_fifo() -> FlatNode {
    node(FileType::Fifo, 0o644)
}

/// Takes every `opaque=x` marker off `layer`'s directories: readdir of a directory that may
/// hold xattr whiteouts looks its entries up, and two metacopy files whose lookups fail
/// (EPERM without `metacopy=on`) make the listing depend on tmpfs's entry order (see
/// `machine::readdir_order_decides`).
fn strip_opaque_x(layer: &mut FlatLayer) {
    for e in &mut layer.entries {
        if let FlatEntry::Node { node, .. } = e {
            if node.xattrs.get(OPAQUE).is_some_and(|v| v == b"x") {
                node.xattrs.remove(OPAQUE);
            }
        }
    }
}

/// The name of generated data-only lower layer `i` ([`GenConfig::data_only`]).
pub fn data_name(i: usize) -> String {
    format!("D{i}")
}

/// Absolute redirects into the data-only layers that name nothing there.
const MISSING_DATA: [&str; 2] = ["/zz", "/a/zz"];

/// A start with data-only layers ([`GenConfig::data_only`]): 1 or 2 regular lowers over 1
/// or 2 data-only ones, mostly an upper. Each regular file of a regular lower becomes, one
/// time in two, a metacopy file (an empty `metacopy` xattr) with an absolute redirect to a
/// path of a data-only layer: a file (its data), a directory, a symlink, a whiteout, or a
/// name no layer holds.
fn draw_data_only_start(rng: &mut TestRng, cfg: &GenConfig) -> CaseStart {
    let regular = 1 + below(rng, 2);
    let data = 1 + below(rng, 2);
    let has_upper = chance(rng, 0.85) || !cfg.lower_only_mounts;
    let mut lowers: Vec<(String, FlatLayer)> =
        (0..regular).map(|i| (lower_name(i), draw_lower_layer(rng, cfg))).collect();
    let data_layers: Vec<(String, FlatLayer)> = (0..data).map(|i| (data_name(i), draw_layer(rng, cfg))).collect();
    let mut targets: Vec<String> =
        data_layers.iter().flat_map(|(_, l)| l.entries.iter().map(|e| e.path().to_owned())).collect();
    targets.sort();
    targets.dedup();
    let mut files: Vec<String> = data_layers
        .iter()
        .flat_map(|(_, l)| {
            l.entries.iter().filter_map(|e| match e {
                FlatEntry::Node { path, node } if node.kind == FileType::File && node.xattrs.is_empty() => {
                    Some(path.clone())
                }
                _ => None,
            })
        })
        .collect();
    files.sort();
    files.dedup();
    for (_, l) in &mut lowers {
        for e in &mut l.entries {
            let FlatEntry::Node { node, .. } = e else { continue };
            // No `opaque=x` (a directory that may hold xattr whiteouts): readdir then looks
            // its entries up, and two metacopy files whose lookups fail (EPERM) make the
            // listing depend on tmpfs's entry order (see `machine::readdir_order_decides`;
            // found by the model-only fuzzer, profile data_only, seed 1).
            if node.xattrs.get(OPAQUE).is_some_and(|v| v == b"x") {
                node.xattrs.remove(OPAQUE);
            }
            if node.kind != FileType::File || !node.xattrs.keys().all(|k| k.starts_with("user.")) || !chance(rng, 0.5) {
                continue;
            }
            // Mostly a data-only file; else any path there, or a missing one.
            let target = match arm(rng, &[GenConfig::weight(!files.is_empty(), 4), 2, 1]) {
                0 => pick(rng, &files).clone(),
                1 if !targets.is_empty() => pick(rng, &targets).clone(),
                _ => (*pick(rng, &MISSING_DATA)).to_owned(),
            };
            node.xattrs.insert(METACOPY.to_owned(), Vec::new());
            node.xattrs.insert(REDIRECT.to_owned(), target.into_bytes());
        }
    }
    lowers.extend(data_layers);
    let upper = has_upper.then(|| (UPPER.to_owned(), draw_layer(rng, cfg)));
    let options = draw_options(rng, cfg);
    CaseStart { lowers, upper, options, data }
}

/// [`draw_case_start`] as a strategy.
pub fn case_start(cfg: &GenConfig) -> BoxedStrategy<CaseStart> {
    let cfg = cfg.clone();
    direct(move |rng| draw_case_start(rng, &cfg))
}

/// The RNG of [`seeded_commands`]: ChaCha, seeded with `seed`.
fn seeded_rng(seed: u64) -> TestRng {
    use proptest::test_runner::RngAlgorithm;
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    TestRng::from_seed(RngAlgorithm::ChaCha, &bytes)
}

/// Case `seed` of a fixed stream, as commands: a [`draw_case_start`] and `ops` operations
/// ([`draw_op_on`] with no known paths) drawn from a ChaCha generator seeded with `seed`,
/// then the final dumps ([`super::case::final_commands`]). `None` when the model refuses
/// the case's first mount or does not model it. The benchmarks replay this stream on the
/// model and on the kernel.
pub fn seeded_commands(seed: u64, ops: usize) -> Option<Vec<Command>> {
    use crate::backend::{Backend, ModelBackend, Reply};
    let mut rng = seeded_rng(seed);
    let cfg = GenConfig::default();
    let start = draw_case_start(&mut rng, &cfg);
    let ops: Vec<Op> = (0..ops).map(|_| draw_op_on(&mut rng, &cfg, &[], &[])).collect();
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

/// 1 to `max` names of the alphabet.
fn draw_comps(rng: &mut TestRng, cfg: &GenConfig, max: usize) -> Vec<String> {
    let n = 1 + below(rng, max);
    (0..n).map(|_| draw_name(rng, cfg)).collect()
}

/// A path in the merged view: mostly `/x`, `/x/y` or `/x/y/z` over the alphabet;
/// sometimes a trailing slash, a `..` or `.` component, or the root itself.
pub fn draw_path(rng: &mut TestRng, cfg: &GenConfig) -> String {
    let depth_max = cfg.depth_max;
    let odd = |w| GenConfig::weight(cfg.odd_paths, w);
    match arm(rng, &[24, 6, odd(2), odd(2), odd(1), 1]) {
        0 => format!("/{}", draw_comps(rng, cfg, 2).join("/")),
        1 => format!("/{}", draw_comps(rng, cfg, depth_max).join("/")),
        2 => format!("/{}/", draw_comps(rng, cfg, depth_max).join("/")),
        i @ (3 | 4) => {
            let mut c = draw_comps(rng, cfg, depth_max);
            let at = below(rng, depth_max).min(c.len());
            c.insert(at, if i == 3 { ".." } else { "." }.to_owned());
            format!("/{}", c.join("/"))
        }
        _ => "/".to_owned(),
    }
}

/// [`draw_path`] as a strategy.
pub fn path(cfg: &GenConfig) -> BoxedStrategy<String> {
    let cfg = cfg.clone();
    direct(move |rng| draw_path(rng, &cfg))
}

/// Xattr names: user ones, trusted ones, and overlay's own (escaped through the mount).
fn draw_xattr_name(rng: &mut TestRng) -> String {
    (*pick(
        rng,
        &[
            "user.a",
            "user.a",
            "user.b",
            "trusted.t",
            "trusted.overlay.opaque",
            "trusted.overlay.x",
            "trusted.overlay.overlay.y",
            "user.overlay.opaque",
        ],
    ))
    .to_owned()
}

fn draw_small_data(rng: &mut TestRng) -> Vec<u8> {
    pick(rng, &OP_DATA).to_vec()
}

fn draw_open_flags(rng: &mut TestRng) -> OpenFlags {
    let access = [Access::ReadOnly, Access::WriteOnly, Access::ReadWrite][arm(rng, &[2, 1, 1])];
    OpenFlags {
        access,
        creat: chance(rng, 0.3),
        excl: chance(rng, 0.1),
        trunc: chance(rng, 0.15),
        append: chance(rng, 0.1),
        directory: chance(rng, 0.1),
        nofollow: chance(rng, 0.1),
    }
}

fn draw_rename_flags(rng: &mut TestRng) -> RenameFlags {
    let d = RenameFlags::default();
    [
        d,
        RenameFlags { noreplace: true, ..d },
        RenameFlags { exchange: true, ..d },
        RenameFlags { whiteout: true, ..d },
        RenameFlags { exchange: true, noreplace: true, whiteout: false },
    ][arm(rng, &[40, 5, 4, 1, 1])]
}

fn draw_id(rng: &mut TestRng) -> u32 {
    *pick(rng, &[0u32, 0, 1, 1000, u32::MAX])
}

/// One operation on the merged view, any [`Op`] variant, weighted towards the ones that
/// change the upper layer, on paths from [`path`].
pub fn op() -> BoxedStrategy<Op> {
    let cfg = GenConfig::default();
    direct(move |rng| draw_op_on(rng, &cfg, &[], &[]))
}

/// A path that is often one of `known` (paths the layers hold or earlier operations made),
/// a new name in one of the directories among `dirs` (or the root), or one of those with
/// a trailing slash; else a [`draw_path`].
pub fn draw_path_from(rng: &mut TestRng, cfg: &GenConfig, known: &[String], dirs: &[String]) -> String {
    if known.is_empty() {
        return draw_path(rng, cfg);
    }
    match arm(rng, &[4, 4, 3, GenConfig::weight(cfg.odd_paths, 1)]) {
        0 => draw_path(rng, cfg),
        1 => pick(rng, known).clone(),
        2 => {
            // The root ("") or one of `dirs`.
            let i = below(rng, dirs.len() + 1);
            let parent = if i == 0 { "" } else { dirs[i - 1].as_str() };
            format!("{parent}/{}", draw_name(rng, cfg))
        }
        _ => format!("{}/", pick(rng, if dirs.is_empty() { known } else { dirs })),
    }
}

/// [`draw_path_from`] as a strategy.
pub fn path_from(cfg: &GenConfig, known: &Arc<Vec<String>>, dirs: &Arc<Vec<String>>) -> BoxedStrategy<String> {
    let (cfg, known, dirs) = (cfg.clone(), Arc::clone(known), Arc::clone(dirs));
    direct(move |rng| draw_path_from(rng, &cfg, &known, &dirs))
}

/// The operations [`draw_op_on`] draws, in the order of its arms, with their weights.
const OP_WEIGHTS: [(&str, u32); 22] = [
    ("stat", 6),
    ("lstat", 4),
    ("open", 6),
    ("read", 5),
    ("write", 6),
    ("truncate", 3),
    ("mkdir", 6),
    ("rmdir", 4),
    ("unlink", 5),
    ("rename", 9),
    ("link", 3),
    ("symlink", 3),
    ("readlink", 2),
    ("readdir", 5),
    ("chmod", 2),
    ("chown", 2),
    ("utimes", 1),
    ("setxattr", 3),
    ("getxattr", 2),
    ("listxattr", 2),
    ("removexattr", 2),
    ("mknod", 2),
];

/// The weights of [`OP_WEIGHTS`] under `cfg`: 0 for an operation switched off.
pub fn op_weights(cfg: &GenConfig) -> [u32; 22] {
    OP_WEIGHTS.map(|(name, w)| GenConfig::weight(cfg.op(name), w))
}

/// One operation, any [`Op`] variant but those through a handle, weighted towards the
/// ones that change the upper layer, on paths drawn by [`draw_path_from`].
pub fn draw_op_on(rng: &mut TestRng, cfg: &GenConfig, known: &[String], dirs: &[String]) -> Op {
    draw_op_weighted(rng, cfg, &op_weights(cfg), known, dirs)
}

/// [`draw_op_on`] with the weights of [`op_weights`] given (so that a caller drawing many
/// operations computes them once).
pub fn draw_op_weighted(
    rng: &mut TestRng,
    cfg: &GenConfig,
    weights: &[u32; 22],
    known: &[String],
    dirs: &[String],
) -> Op {
    let path = |rng: &mut TestRng| draw_path_from(rng, cfg, known, dirs);
    let mode = |rng: &mut TestRng| *pick(rng, &[0o755u32, 0o644, 0o700, 0o777, 0o1777, 0o2755, 0o600, 0]);
    match arm(rng, weights) {
        0 => Op::Stat { path: path(rng) },
        1 => Op::Lstat { path: path(rng) },
        2 => Op::Open { path: path(rng), flags: draw_open_flags(rng), mode: *pick(rng, &[0o644u32, 0o600, 0o4755]) },
        3 => Op::Read { path: path(rng) },
        4 => {
            let path = path(rng);
            let at = if arm(rng, &[3, 1]) == 0 { WriteAt::Offset(below(rng, 4) as u64) } else { WriteAt::Append };
            Op::Write { path, at, data: draw_small_data(rng) }
        }
        5 => Op::Truncate { path: path(rng), len: below(rng, 6) as u64 },
        6 => Op::Mkdir { path: path(rng), mode: mode(rng) },
        7 => Op::Rmdir { path: path(rng) },
        8 => Op::Unlink { path: path(rng) },
        9 => Op::Rename { from: path(rng), to: path(rng), flags: draw_rename_flags(rng) },
        10 => Op::Link { from: path(rng), to: path(rng) },
        11 => Op::Symlink { target: (*pick(rng, &TARGETS)).to_owned(), path: path(rng) },
        12 => Op::Readlink { path: path(rng) },
        13 => Op::Readdir { path: path(rng) },
        14 => Op::Chmod { path: path(rng), mode: mode(rng) },
        15 => Op::Chown { path: path(rng), uid: draw_id(rng), gid: draw_id(rng) },
        16 => Op::Utimes { path: path(rng) },
        17 => Op::Setxattr { path: path(rng), name: draw_xattr_name(rng), value: draw_small_data(rng) },
        18 => Op::Getxattr { path: path(rng), name: draw_xattr_name(rng) },
        19 => Op::Listxattr { path: path(rng) },
        20 => Op::Removexattr { path: path(rng), name: draw_xattr_name(rng) },
        _ => {
            let path = path(rng);
            let kind = [MknodKind::Fifo, MknodKind::File, MknodKind::Char(0, 0)][arm(rng, &[2, 1, 1])];
            Op::Mknod { path, kind, mode: *pick(rng, &[0o644u32, 0o600, 0]) }
        }
    }
}

/// [`draw_op_on`] as a strategy.
pub fn op_on(cfg: &GenConfig, known: &Arc<Vec<String>>, dirs: &Arc<Vec<String>>) -> BoxedStrategy<Op> {
    let (cfg, known, dirs) = (cfg.clone(), Arc::clone(known), Arc::clone(dirs));
    direct(move |rng| draw_op_on(rng, &cfg, &known, &dirs))
}

/// The handles a case opens, by name ([`GenConfig::handles`]).
pub const HANDLES: [&str; 3] = ["f0", "f1", "f2"];

/// The `count` of every generated `getdents`: more than any generated directory holds, so
/// that a batch is the whole rest of the listing (see [`GenConfig::handles`]).
pub const GETDENTS_ALL: u64 = 4096;

/// An operation through a handle ([`GenConfig::handles`]): an `open` of a path drawn by
/// [`draw_path_from`] as one of [`HANDLES`], or (when some are `open`) a call through one
/// of them. Drawn beside [`draw_op_on`]'s operations by the state machine, which knows
/// which handles the model holds open, so that the calls name an open handle.
pub fn draw_handle_op(rng: &mut TestRng, cfg: &GenConfig, open: &[String], known: &[String], dirs: &[String]) -> Op {
    use crate::ops::fd::{FdOp, Whence};
    let opening = |rng: &mut TestRng| {
        let fd = (*pick(rng, &HANDLES)).to_owned();
        let path = draw_path_from(rng, cfg, known, dirs);
        Op::Fd(FdOp::Open { fd, path, flags: draw_open_flags(rng), mode: *pick(rng, &[0o644u32, 0o600]) })
    };
    if open.is_empty() {
        return opening(rng);
    }
    let weights = [if open.len() < HANDLES.len() { 5 } else { 1 }, 2, 3, 3, 2, 2, 2, 3, 2, 1, 4, 1, 1, 2, 2, 1, 1];
    let which = arm(rng, &weights);
    if which == 0 {
        return opening(rng);
    }
    let fd = pick(rng, open).clone();
    let mode = |rng: &mut TestRng| *pick(rng, &[0o755u32, 0o644, 0o700, 0o600, 0o4755]);
    Op::Fd(match which {
        1 => FdOp::Close { fd },
        2 => FdOp::Read { fd, len: 1 + below(rng, 11) as u64 },
        3 => FdOp::Write { fd, data: draw_small_data(rng) },
        4 => FdOp::Pread { fd, offset: below(rng, 8) as u64, len: 1 + below(rng, 11) as u64 },
        5 => FdOp::Pwrite { fd, offset: below(rng, 6) as u64, data: draw_small_data(rng) },
        6 => {
            // A seek in a directory: to the start, past `.`, past `..`, or where it is; in
            // a file the same, or from the end.
            let (offset, whence) = match arm(rng, &[4, 1, 1]) {
                0 => (below(rng, 3) as i64, Whence::Set),
                1 => (0, Whence::Cur),
                _ => (below(rng, 3) as i64 - 2, Whence::End),
            };
            FdOp::Lseek { fd, offset, whence }
        }
        7 => FdOp::Fstat { fd },
        8 => FdOp::Ftruncate { fd, len: below(rng, 6) as u64 },
        9 => FdOp::Fchmod { fd, mode: mode(rng) },
        10 => FdOp::Getdents { fd, count: GETDENTS_ALL },
        11 => FdOp::Fchown { fd, uid: draw_id(rng), gid: draw_id(rng) },
        12 => FdOp::Fsync { fd },
        13 => FdOp::Fsetxattr { fd, name: draw_xattr_name(rng), value: draw_small_data(rng) },
        14 => FdOp::Fgetxattr { fd, name: draw_xattr_name(rng) },
        15 => FdOp::Flistxattr { fd },
        _ => FdOp::Fremovexattr { fd, name: draw_xattr_name(rng) },
    })
}

/// The file handles a case takes by `name_to_handle` ([`GenConfig::file_handles`]).
pub const FILE_HANDLES: [&str; 2] = ["h0", "h1"];

/// The open files `open_by_handle` makes ([`GenConfig::file_handles`]).
pub const BY_HANDLE: [&str; 2] = ["g0", "g1"];

/// Whether `f` is a step [`draw_file_handle_op`] draws.
pub fn is_file_handle_op(f: &crate::ops::fd::FdOp) -> bool {
    use crate::ops::fd::FdOp;
    match f {
        FdOp::NameToHandle { handle, .. } => FILE_HANDLES.contains(&handle.as_str()),
        FdOp::OpenByHandle { fd, flags, .. } => {
            BY_HANDLE.contains(&fd.as_str())
                && *flags == OpenFlags { directory: flags.directory, ..OpenFlags::default() }
        }
        FdOp::Close { fd } => BY_HANDLE.contains(&fd.as_str()),
        _ => false,
    }
}

/// A file-handle step ([`GenConfig::file_handles`]): `name_to_handle` of a path drawn by
/// [`draw_path_from`] (existing or not) as one of [`FILE_HANDLES`], with `AT_HANDLE_FID` one
/// time in three and `AT_SYMLINK_FOLLOW` one time in two; once the case has `taken` a
/// handle, `open_by_handle` of one of them as one of [`BY_HANDLE`], read-only and sometimes
/// with `O_DIRECTORY` (never for writing: a copy-up of a disconnected dentry is not
/// modelled); and `close` of what is `open` of those.
pub fn draw_file_handle_op(
    rng: &mut TestRng,
    cfg: &GenConfig,
    taken: &[String],
    open: &[String],
    known: &[String],
    dirs: &[String],
) -> Op {
    use crate::ops::fd::FdOp;
    let by_handle: Vec<&String> = open.iter().filter(|n| BY_HANDLE.contains(&n.as_str())).collect();
    let w = |on: bool, w| GenConfig::weight(on, w);
    Op::Fd(match arm(rng, &[3, w(!taken.is_empty(), 3), w(!by_handle.is_empty(), 1)]) {
        0 => FdOp::NameToHandle {
            handle: (*pick(rng, &FILE_HANDLES)).to_owned(),
            path: draw_path_from(rng, cfg, known, dirs),
            fid: chance(rng, 0.33),
            follow: chance(rng, 0.5),
        },
        1 => FdOp::OpenByHandle {
            fd: (*pick(rng, &BY_HANDLE)).to_owned(),
            handle: pick(rng, taken).clone(),
            flags: OpenFlags { directory: chance(rng, 0.3), ..OpenFlags::default() },
        },
        _ => FdOp::Close { fd: (*pick(rng, &by_handle)).clone() },
    })
}

/// [`draw_handle_op`] as a strategy.
pub fn handle_op(
    cfg: &GenConfig,
    open: &[String],
    known: &Arc<Vec<String>>,
    dirs: &Arc<Vec<String>>,
) -> BoxedStrategy<Op> {
    let (cfg, open, known, dirs) = (cfg.clone(), open.to_vec(), Arc::clone(known), Arc::clone(dirs));
    direct(move |rng| draw_handle_op(rng, &cfg, &open, &known, &dirs))
}

/// A path inside a layer, for an offline edit.
fn draw_layer_path(rng: &mut TestRng, cfg: &GenConfig) -> String {
    format!("/{}", draw_comps(rng, cfg, cfg.depth_max).join("/"))
}

/// Whether `a` is `b` or one is an ancestor of the other (component-wise).
fn overlaps(a: &str, b: &str) -> bool {
    let ca: Vec<&str> = a.split('/').filter(|c| !c.is_empty()).collect();
    let cb: Vec<&str> = b.split('/').filter(|c| !c.is_empty()).collect();
    let n = ca.len().min(cb.len());
    ca[..n] == cb[..n]
}

/// How many times [`draw_edit`] draws a link's two paths before it gives up on a link.
const LINK_TRIES: usize = 64;

/// One offline edit: put a node (a non-directory, or an empty directory with its markers),
/// remove a path, or make a hard link. A link never targets its own path or an ancestor or
/// descendant of it, where replacing the name would remove the link's target first (its
/// paths are drawn again, up to [`LINK_TRIES`] times, after which a put is drawn instead).
///
/// With `removes` false, no `Remove`: removing an upper whiteout after a rename can show
/// a lower file again whose inode is also the copy-up origin of the renamed copy, and the
/// kernel then answers by the order of its inode cache (ESTALE for whichever name comes
/// second), which is out of the model's contract. Edits of the upper are made that way.
pub fn draw_edit(rng: &mut TestRng, cfg: &GenConfig, removes: bool) -> Edit {
    let which = arm(rng, &[5, if removes { 3 } else { 0 }, GenConfig::weight(cfg.hard_links, 1)]);
    if which == 2 {
        for _ in 0..LINK_TRIES {
            let (path, to) = (draw_layer_path(rng, cfg), draw_layer_path(rng, cfg));
            if !overlaps(&path, &to) {
                return Edit::Link { path, to };
            }
        }
    }
    let path = draw_layer_path(rng, cfg);
    if which == 1 {
        return Edit::Remove { path };
    }
    let node = if arm(rng, &[3, 1]) == 0 { draw_leaf_node(rng, cfg) } else { draw_dir_node(rng, cfg) };
    Edit::Put { path, node }
}

/// [`draw_edit`] as a strategy.
pub fn edit(cfg: &GenConfig, removes: bool) -> BoxedStrategy<Edit> {
    let cfg = cfg.clone();
    direct(move |rng| draw_edit(rng, &cfg, removes))
}

/// Whether an offline edit is one the generators make (see [`draw_edit`]): a put is also
/// one a layer can hold ([`crate::layer::check::check_node`]), so a shrunk case never turns
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
            out.push((lowers.clone(), None));
        }
    }
    // Under `index`, after a first mount with `index=on` (which records the top-most lower
    // root as the upper root's origin): the upper over the lowers without the top-most one,
    // which [`draw_mount`] mounts with `index=on`: ESTALE. No mount that leaves out a lower
    // is accepted: the kernel still decodes an origin in a left-out layer (every layer is on
    // one tmpfs) and keeps its `st_ino` and `nlink`, which the model does not model (README,
    // Scope).
    let o = &start.options;
    // Not the drawn refusals (`nfs_export=on` with a given `index=off` or `metacopy=on`).
    let refused = (o.named.index && !o.index) || o.metacopy;
    let first_indexed = (o.index || o.nfs_export) && !refused;
    if let Some((u, _)) = start.upper.as_ref().filter(|_| cfg.index && first_indexed && lowers.len() >= 2) {
        out.push((lowers[1..].to_vec(), Some(u.clone())));
    }
    out
}

/// A mount command for this case (see [`mounts`]), mostly with the layers of the first
/// mount.
pub fn draw_mount(rng: &mut TestRng, cfg: &GenConfig, start: &CaseStart) -> Command {
    if start.data > 0 {
        // With data-only layers: the same layers, mostly over the upper.
        let with_upper = arm(rng, &[3, 1]) == 0;
        let options = draw_options(rng, cfg);
        if cfg.fsconfig && arm(rng, &[3, 1]) == 1 {
            let lowers = start.lowers.iter().map(|(n, _)| n.clone()).collect();
            let upper = start.upper.as_ref().filter(|_| with_upper).map(|(n, _)| n.clone());
            return draw_fsconfig(rng, &Command::Mount { lowers, upper, options }, start.data);
        }
        return start.mount_with(options, with_upper);
    }
    let mut choices = mounts(cfg, start);
    let i = if choices.len() > 1 && arm(rng, &[3, 1]) == 1 { below(rng, choices.len()) } else { 0 };
    let (lowers, upper) = choices.swap_remove(i);
    let mut options = draw_options(rng, cfg);
    if lowers.len() < start.lowers.len() && upper.is_some() {
        // The remount without the top-most lower (see `mounts`): refused by the index check.
        options.index = true;
        options.named.index = false;
    }
    // A remount keeps the first mount's `userxattr`: the model records copy-up origins and
    // impure marks without the xattr namespace the kernel wrote them in, so switching
    // namespaces on one upper is outside what it models.
    let userxattr = start.options.userxattr;
    if options.userxattr != userxattr {
        options.userxattr = userxattr;
        options.redirect_dir = if userxattr { RedirectDir::Nofollow } else { RedirectDir::Off };
        if userxattr && cfg.index_userxattr {
            userxattr_index_options(rng, &mut options);
        }
    }
    let mount = Command::Mount { lowers, upper, options };
    if cfg.fsconfig && arm(rng, &[3, 1]) == 1 {
        return draw_fsconfig(rng, &mount, 0);
    }
    mount
}

/// Calls of the new mount API the kernel refuses at the call ([`GenConfig::fsconfig`]): a
/// layer that does not exist (ENOENT), an unknown key and a bad value (EINVAL); each pinned
/// by a kernel-recorded scenario in spec/mount/.
const REFUSED_CALLS: [(&str, Option<&str>); 4] =
    [("lowerdir+", Some("zz")), ("upperdir", Some("zz")), ("nosuchkey", None), ("redirect_dir", Some("bad"))];

/// `mount` (a [`Command::Mount`], or the option string of a start with `data` data-only
/// layers at the end of its lowers) as `fsconfig(2)` calls ([`GenConfig::fsconfig`]): the
/// regular lowers as `lowerdir+`, the data-only ones as `datadir+`, `upperdir` and the
/// upper's own `workdir`, each option of [`Options::to_mount_string`] as a string (or a
/// flag), `ro` as a flag; one time in eight, one call the kernel refuses
/// ([`REFUSED_CALLS`]) somewhere among them.
pub fn draw_fsconfig(rng: &mut TestRng, mount: &Command, data: usize) -> Command {
    use crate::params::FsParam;
    let call = |k: &str, v: Option<&str>| FsParam { key: k.to_owned(), value: v.map(str::to_owned) };
    let Command::Mount { lowers, upper, options } = mount else { return mount.clone() };
    let split = lowers.len().saturating_sub(data);
    let mut calls: Vec<FsParam> = lowers[..split].iter().map(|l| call("lowerdir+", Some(l))).collect();
    calls.extend(lowers[split..].iter().map(|d| call("datadir+", Some(d))));
    if let Some(u) = upper {
        calls.push(call("upperdir", Some(u)));
        calls.push(call("workdir", Some("work")));
    }
    let rest = options.to_mount_string();
    for o in rest.split(',').filter(|o| !o.is_empty()) {
        calls.push(match o.split_once('=') {
            Some((k, v)) => call(k, Some(v)),
            None => call(o, None),
        });
    }
    if options.read_only {
        calls.push(call("ro", None));
    }
    if chance(rng, 0.125) {
        let (k, v) = *pick(rng, &REFUSED_CALLS);
        let at = below(rng, calls.len() + 1);
        calls.insert(at, call(k, v));
    }
    Command::MountData { data: String::new(), fsconfig: Some(calls) }
}

/// [`draw_mount`] as a strategy.
pub fn mount(cfg: &GenConfig, start: &CaseStart) -> BoxedStrategy<Command> {
    let (cfg, start) = (cfg.clone(), start.clone());
    direct(move |rng| draw_mount(rng, &cfg, &start))
}

/// A caller for [`crate::backend::Command::OpAs`]: root or one of the users that own layer
/// objects ([`GenConfig::owners`]: 1000 and 1), with or without a supplementary group,
/// and a umask.
pub fn draw_cred(rng: &mut TestRng) -> crate::cred::Cred {
    let uid = *pick(rng, &[0u32, 1000, 1000, 1]);
    let gid = *pick(rng, &[0u32, 1000]);
    let groups = match below(rng, 3) {
        0 => Vec::new(),
        1 => vec![1000u32],
        _ => vec![0],
    };
    let umask = *pick(rng, &[0u32, 0o022, 0o077, 0o002]);
    crate::cred::Cred { uid, gid, groups, umask }
}

/// [`draw_cred`] as a strategy.
pub fn cred() -> BoxedStrategy<crate::cred::Cred> {
    direct(draw_cred)
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
