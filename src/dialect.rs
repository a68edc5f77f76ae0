//! On-disk dialects: how an overlay implementation stores whiteouts, opaque directories and
//! its other marks, so that a layer can be written for it and its upper layer read back in
//! the model's terms, and the comparison is on meaning, not encoding.
//!
//! The model's layers use the kernel's encoding (`trusted.overlay.*` xattrs, whiteouts as
//! character devices 0/0, see `spec/README.md`). A [`Dialect`] says:
//! - [`Dialect::write`]: the layer as the implementation wants it, or why the dialect
//!   cannot express it (the scenario is then *not applicable*, never a pass);
//! - [`Dialect::read`]: a layer as the implementation left it, in the model's encoding;
//! - [`Dialect::check_options`]: whether the implementation has the mount's options.
//!
//! | dialect          | whiteout | opaque directory | other marks | read back |
//! |------------------|----------|------------------|-------------|-----------|
//! | `kernel`         | char 0/0, or an xattr whiteout | `trusted.overlay.opaque` | `trusted.overlay.*` as written | as is |
//! | `userxattr`      | char 0/0, or an xattr whiteout | `user.overlay.opaque` | every `trusted.overlay.X` written as `user.overlay.X` | `user.overlay.X` read as `trusted.overlay.X` |
//! | `fuse-overlayfs` | char 0/0 (or a `.wh.NAME` file) | `trusted.overlay.opaque` (or `user.fuseoverlayfs.opaque`, `user.overlay.opaque`, a `.wh..wh..opq` file) | none: a layer with a redirect, metacopy, xattr whiteout or any other `trusted.overlay.*` / `user.overlay.*` xattr, or a name starting with `.wh.`, is not applicable | `.wh.NAME` read as a whiteout of `NAME`; `.wh..wh..opq` and the opaque xattrs as `trusted.overlay.opaque=y`; `user.fuseoverlayfs.*` dropped; whiteouts as mode 0000, owned by 0:0 |
//!
//! fuse-overlayfs's marks are from its `main.c` (`OPAQUE_WHITEOUT`, `OPAQUE_XATTR`,
//! `PRIVILEGED_OPAQUE_XATTR`, `UNPRIVILEGED_OPAQUE_XATTR`, `ORIGIN_XATTR`, `create_whiteout`):
//! running as root it makes whiteouts with `mknod` 0/0 (mode 0700) and falls back to
//! `.wh.` files. It has no `redirect_dir`, `index`, `metacopy`, `nfs_export`, `userxattr`
//! or `volatile` options: a mount that sets one of them (or a workdir without an upper) is
//! not applicable; `xino` and read-only mounts are.

use crate::layer::{FileType, FlatEntry, FlatLayer, FlatNode};
use crate::mount::{Options, RedirectDir};
use std::fmt;
use std::str::FromStr;

/// The kernel's private xattr prefix.
const TRUSTED: &str = "trusted.overlay.";
/// The prefix under `userxattr`.
const USER: &str = "user.overlay.";
/// fuse-overlayfs's own xattr prefix.
const FUSE_OVERLAYFS: &str = "user.fuseoverlayfs.";
/// fuse-overlayfs's whiteout file prefix.
const WH: &str = ".wh.";
/// fuse-overlayfs's opaque marker file.
const WH_OPAQUE: &str = ".wh..wh..opq";

/// An implementation's on-disk encoding (see the module documentation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Dialect {
    /// The kernel's: `trusted.overlay.*`, whiteouts as char 0/0.
    #[default]
    Kernel,
    /// The kernel's under `userxattr`: `user.overlay.*`.
    Userxattr,
    /// fuse-overlayfs's.
    FuseOverlayfs,
}

impl Dialect {
    /// Every dialect, in table order.
    pub const ALL: [Dialect; 3] = [Dialect::Kernel, Dialect::Userxattr, Dialect::FuseOverlayfs];

    /// The dialect's name, as `--dialect` takes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::Kernel => "kernel",
            Dialect::Userxattr => "userxattr",
            Dialect::FuseOverlayfs => "fuse-overlayfs",
        }
    }

    /// The layer as the implementation stores it, or why this dialect cannot express it.
    pub fn write(self, layer: &FlatLayer) -> Result<FlatLayer, String> {
        match self {
            Dialect::Kernel => Ok(layer.clone()),
            Dialect::Userxattr => {
                let mut out = layer.clone();
                for (path, node) in nodes_mut(&mut out) {
                    if let Some(k) = node.xattrs.keys().find(|k| k.starts_with(USER)) {
                        return Err(format!(
                            "{path} has the xattr {k}, where the userxattr dialect writes the trusted.overlay.* marks"
                        ));
                    }
                    node.xattrs = std::mem::take(&mut node.xattrs)
                        .into_iter()
                        .map(|(k, v)| match k.strip_prefix(TRUSTED) {
                            Some(rest) => (format!("{USER}{rest}"), v),
                            None => (k, v),
                        })
                        .collect();
                }
                Ok(out)
            }
            Dialect::FuseOverlayfs => {
                for e in &layer.entries {
                    if name_of(e.path()).starts_with(WH) {
                        return Err(format!(
                            "{}: fuse-overlayfs reads a name starting with {WH} as a whiteout",
                            e.path()
                        ));
                    }
                }
                for (path, node) in nodes(layer) {
                    self.check_node(path, node)?;
                }
                Ok(layer.clone())
            }
        }
    }

    /// Whether the dialect can express one node (for offline edits).
    pub fn check_node(self, path: &str, node: &FlatNode) -> Result<(), String> {
        if self != Dialect::FuseOverlayfs {
            return Ok(());
        }
        if name_of(path).starts_with(WH) {
            return Err(format!("{path}: fuse-overlayfs reads a name starting with {WH} as a whiteout"));
        }
        for k in node.xattrs.keys() {
            let opaque = k == "trusted.overlay.opaque" && node.kind == FileType::Dir;
            if !opaque && (k.starts_with(TRUSTED) || k.starts_with(USER) || k.starts_with(FUSE_OVERLAYFS)) {
                return Err(format!(
                    "{path} has the xattr {k}, which fuse-overlayfs does not read (no redirects, metacopy or xattr whiteouts)"
                ));
            }
        }
        Ok(())
    }

    /// A layer as the implementation left it, in the model's encoding.
    pub fn read(self, layer: FlatLayer) -> FlatLayer {
        match self {
            Dialect::Kernel => layer,
            Dialect::Userxattr => {
                let mut out = layer;
                for (_, node) in nodes_mut(&mut out) {
                    node.xattrs = std::mem::take(&mut node.xattrs)
                        .into_iter()
                        .map(|(k, v)| match k.strip_prefix(USER) {
                            Some(rest) => (format!("{TRUSTED}{rest}"), v),
                            None => (k, v),
                        })
                        .collect();
                }
                out
            }
            Dialect::FuseOverlayfs => read_fuse_overlayfs(layer),
        }
    }

    /// Whether the implementation has the mount's options.
    pub fn check_options(self, o: &Options) -> Result<(), String> {
        if self != Dialect::FuseOverlayfs {
            return Ok(());
        }
        let mut missing = Vec::new();
        if o.redirect_dir != RedirectDir::Off {
            missing.push(format!("redirect_dir={}", o.redirect_dir.as_str()));
        }
        for (set, name) in [
            (o.index, "index=on"),
            (o.metacopy, "metacopy=on"),
            (o.nfs_export, "nfs_export=on"),
            (o.userxattr, "userxattr"),
            (o.volatile, "volatile"),
            (o.workdir_without_upper, "a workdir without an upper"),
        ] {
            if set {
                missing.push(name.to_owned());
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("fuse-overlayfs has no {}", missing.join(", ")))
        }
    }
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Dialect {
    type Err = String;

    fn from_str(s: &str) -> Result<Dialect, String> {
        Dialect::ALL.into_iter().find(|d| d.as_str() == s).ok_or_else(|| {
            let all: Vec<&str> = Dialect::ALL.iter().map(|d| d.as_str()).collect();
            format!("unknown dialect {s:?} (known: {})", all.join(", "))
        })
    }
}

/// The last component of a layer path.
fn name_of(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn nodes(layer: &FlatLayer) -> impl Iterator<Item = (&str, &FlatNode)> {
    std::iter::once(("/", &layer.root)).chain(layer.entries.iter().filter_map(|e| match e {
        FlatEntry::Node { path, node } => Some((path.as_str(), node)),
        FlatEntry::Link { .. } => None,
    }))
}

fn nodes_mut(layer: &mut FlatLayer) -> impl Iterator<Item = (&str, &mut FlatNode)> {
    std::iter::once(("/", &mut layer.root)).chain(layer.entries.iter_mut().filter_map(|e| match e {
        FlatEntry::Node { path, node } => Some((path.as_str(), node)),
        FlatEntry::Link { .. } => None,
    }))
}

/// A whiteout as the kernel makes it.
fn whiteout() -> FlatNode {
    FlatNode {
        kind: FileType::Char,
        mode: 0,
        uid: 0,
        gid: 0,
        data: None,
        target: None,
        rdev: Some((0, 0)),
        xattrs: Default::default(),
    }
}

/// fuse-overlayfs's marks in the kernel's encoding (see the module documentation).
fn read_fuse_overlayfs(layer: FlatLayer) -> FlatLayer {
    let mut opaque_dirs = Vec::new();
    let mut entries = Vec::new();
    for e in layer.entries {
        let path = e.path().to_owned();
        let (parent, name) = match path.rfind('/') {
            Some(i) => (&path[..i], &path[i + 1..]),
            None => ("", path.as_str()),
        };
        if name == WH_OPAQUE {
            opaque_dirs.push(if parent.is_empty() { "/".to_owned() } else { parent.to_owned() });
            continue;
        }
        if let Some(hidden) = name.strip_prefix(WH) {
            entries.push(FlatEntry::Node { path: format!("{parent}/{hidden}"), node: whiteout() });
            continue;
        }
        entries.push(e);
    }
    let mut out = FlatLayer { root: layer.root, entries };
    for (path, node) in nodes_mut(&mut out) {
        let mut opaque = opaque_dirs.iter().any(|d| d == path);
        node.xattrs.retain(|k, v| {
            if k == "user.fuseoverlayfs.opaque" || k == "user.overlay.opaque" {
                opaque |= v.as_slice() == b"y";
                return false;
            }
            !k.starts_with(FUSE_OVERLAYFS)
        });
        if opaque && node.kind == FileType::Dir {
            node.xattrs.insert("trusted.overlay.opaque".into(), b"y".to_vec());
        }
        if node.kind == FileType::Char && node.rdev == Some((0, 0)) {
            *node = whiteout();
        }
    }
    // Parents first, names in byte order: the order of a dumped layer.
    out.entries.sort_by(|a, b| a.path().split('/').cmp(b.path().split('/')));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> FlatNode {
        FlatNode {
            kind: FileType::Dir,
            mode: 0o755,
            uid: 0,
            gid: 0,
            data: None,
            target: None,
            rdev: None,
            xattrs: Default::default(),
        }
    }

    fn file() -> FlatNode {
        FlatNode { kind: FileType::File, mode: 0o644, data: Some(Default::default()), ..dir() }
    }

    fn node(path: &str, node: FlatNode) -> FlatEntry {
        FlatEntry::Node { path: path.into(), node }
    }

    #[test]
    fn fuse_overlayfs_marks_read_as_the_kernels() {
        let mut opq = dir();
        opq.xattrs.insert("user.fuseoverlayfs.opaque".into(), b"y".to_vec());
        let mut wh = whiteout();
        wh.mode = 0o700;
        let layer = FlatLayer {
            root: dir(),
            entries: vec![
                node("/a", dir()),
                node("/a/.wh..wh..opq", file()),
                node("/b", opq),
                node("/c", wh),
                node("/d", dir()),
                node("/d/.wh.x", file()),
            ],
        };
        let read = Dialect::FuseOverlayfs.read(layer);
        let mut kernel_opq = dir();
        kernel_opq.xattrs.insert("trusted.overlay.opaque".into(), b"y".to_vec());
        assert_eq!(
            read.entries,
            vec![
                node("/a", kernel_opq.clone()),
                node("/b", kernel_opq),
                node("/c", whiteout()),
                node("/d", dir()),
                node("/d/x", whiteout()),
            ]
        );
    }

    #[test]
    fn fuse_overlayfs_cannot_express_redirects_or_wh_names() {
        let mut redirected = dir();
        redirected.xattrs.insert("trusted.overlay.redirect".into(), b"/x".to_vec());
        let with = |e| FlatLayer { root: dir(), entries: vec![e] };
        assert!(Dialect::FuseOverlayfs.write(&with(node("/r", redirected))).unwrap_err().contains("redirect"));
        assert!(Dialect::FuseOverlayfs.write(&with(node("/.wh.f", file()))).is_err());
        let mut opaque = dir();
        opaque.xattrs.insert("trusted.overlay.opaque".into(), b"y".to_vec());
        assert!(Dialect::FuseOverlayfs.write(&with(node("/o", opaque))).is_ok());
        let o = Options { index: true, ..Options::default() };
        assert!(Dialect::FuseOverlayfs.check_options(&o).unwrap_err().contains("index=on"));
        assert!(Dialect::FuseOverlayfs.check_options(&Options::default()).is_ok());
    }

    #[test]
    fn userxattr_moves_the_private_prefix_both_ways() {
        let mut opaque = dir();
        opaque.xattrs.insert("trusted.overlay.opaque".into(), b"y".to_vec());
        opaque.xattrs.insert("user.other".into(), b"v".to_vec());
        let layer = FlatLayer { root: dir(), entries: vec![node("/o", opaque)] };
        let written = Dialect::Userxattr.write(&layer).unwrap();
        let FlatEntry::Node { node: n, .. } = &written.entries[0] else { panic!("a node") };
        assert_eq!(n.xattrs.keys().collect::<Vec<_>>(), ["user.other", "user.overlay.opaque"]);
        assert_eq!(Dialect::Userxattr.read(written), layer);
        assert_eq!("fuse-overlayfs".parse::<Dialect>(), Ok(Dialect::FuseOverlayfs));
        assert!("fuse".parse::<Dialect>().is_err());
    }
}
