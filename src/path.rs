//! Path resolution in the merged namespace (kernel: `fs/namei.c`, `path_lookupat`,
//! `filename_parentat`), with the merged root as `/`.
//!
//! Symlinks are followed in the merged view, never inside one layer: an absolute target
//! starts again at the merged root, `..` never climbs above it, and the 41st link in one
//! path walk is ELOOP (`MAXSYMLINKS` is 40), counting the links of the directories on the
//! way and of the final component together, as open with `O_CREAT` does through a final
//! symlink (kernel: `nd->total_link_count`). A path of 4096 bytes or more is
//! ENAMETOOLONG, an empty path ENOENT. A trailing slash asks for a directory.

use crate::errno::{Errno, SysResult};
use crate::layer::FileType;
use crate::lookup::Dentry;
use crate::overlay::Overlay;
use std::sync::Arc;

/// The most symlinks one resolution follows (kernel: `MAXSYMLINKS`).
pub const SYMLINK_COUNT_MAX: u32 = 40;
/// `PATH_MAX`, the terminating NUL included.
pub const PATH_LEN_MAX: usize = 4096;

/// A resolved path: the dentries from the root (index 0) to the object.
pub type Chain = Vec<Dentry>;

/// The last component of a path, as `filename_parentat` classifies it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Last {
    /// An ordinary name; `slash` when the path ended with `/`.
    Norm {
        /// The name.
        name: String,
        /// Whether trailing slashes followed it.
        slash: bool,
    },
    /// `.`
    Dot,
    /// `..`
    DotDot,
    /// The path was only slashes.
    Root,
}

/// How to treat the last component.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Follow {
    /// Follow a final symlink (`stat`, `open`, `chmod`, ...).
    Yes,
    /// Do not follow it (`lstat`, `readlink`, `link`'s source, ...).
    No,
}

/// The absolute path of `name` in the directory at absolute path `parent` (`/` or a path
/// without a trailing slash).
pub(crate) fn join(parent: &str, name: &str) -> String {
    let parent = if parent == "/" { "" } else { parent };
    let mut path = String::with_capacity(parent.len() + 1 + name.len());
    path.push_str(parent);
    path.push('/');
    path.push_str(name);
    path
}

fn check_len(path: &str) -> SysResult<()> {
    if path.is_empty() {
        return Err(Errno::ENOENT);
    }
    if path.len() >= PATH_LEN_MAX {
        return Err(Errno::ENAMETOOLONG);
    }
    Ok(())
}

impl Overlay {
    /// The merged path of a chain, for events and messages.
    pub(crate) fn chain_path(chain: &[Dentry]) -> String {
        if chain.len() <= 1 {
            return "/".into();
        }
        let mut path = String::with_capacity(chain[1..].iter().map(|d| d.name.len() + 1).sum());
        for d in &chain[1..] {
            path.push('/');
            path.push_str(&d.name);
        }
        path
    }

    /// The merged path of `name` in the directory at the end of `chain`.
    pub(crate) fn child_path(chain: &[Dentry], name: &str) -> String {
        join(&Overlay::chain_path(chain), name)
    }

    /// Resolves `path` to a positive object.
    ///
    /// Errors, in precedence order along the walk: ENOENT (empty path, a missing component
    /// or an empty symlink), ENAMETOOLONG, ENOTDIR (a non-directory before a `/`), ELOOP,
    /// and the lookup errors of [`Overlay::lookup_child`].
    pub(crate) fn resolve(&mut self, path: &str, follow: Follow) -> SysResult<Chain> {
        check_len(path)?;
        let mut chain = Vec::with_capacity(slash_count(path) + 1);
        chain.push(self.root_dentry());
        let mut links = 0;
        let dir_required = path.ends_with('/');
        self.walk(&mut chain, Pending::of(path), follow == Follow::Yes, dir_required, &mut links)?;
        Ok(chain)
    }

    /// Resolves everything but the last component of `path`, which it classifies
    /// (kernel: `filename_parentat`). The parent chain ends with a directory.
    pub(crate) fn resolve_parent(&mut self, path: &str) -> SysResult<(Chain, Last)> {
        let mut links = 0;
        self.resolve_parent_counted(path, &mut links)
    }

    /// [`Overlay::resolve_parent`], counting the symlinks it follows into `links`, for a
    /// caller that goes on walking the same path (open with `O_CREAT` through a final
    /// symlink, [`Overlay::walk_parent`]).
    pub(crate) fn resolve_parent_counted(&mut self, path: &str, links: &mut u32) -> SysResult<(Chain, Last)> {
        check_len(path)?;
        let mut chain = Vec::with_capacity(slash_count(path) + 1);
        chain.push(self.root_dentry());
        let last = self.walk_parent(&mut chain, path, links)?;
        Ok((chain, last))
    }

    /// Walks everything but the last component of `path` from the end of `chain` (from the
    /// merged root when `path` is absolute: the root is also the current directory), and
    /// classifies the last component (kernel: `link_path_walk`, which leaves the last
    /// component to its caller). `links` counts every symlink of the whole path walk,
    /// those of the walks before this one included: the 41st is ELOOP (kernel:
    /// `nd->total_link_count`, checked against `MAXSYMLINKS` in `pick_link`).
    pub(crate) fn walk_parent(&mut self, chain: &mut Chain, path: &str, links: &mut u32) -> SysResult<Last> {
        if path.starts_with('/') {
            chain.truncate(1);
        }
        // The path's last component, found from the end; the walk takes what comes before.
        let bytes = path.as_bytes();
        let end = bytes.iter().rposition(|&b| b != b'/').map_or(0, |i| i + 1);
        let start = bytes[..end].iter().rposition(|&b| b == b'/').map_or(0, |i| i + 1);
        let slash = end < path.len();
        let last = match &path[start..end] {
            "" => Last::Root,
            "." => Last::Dot,
            ".." => Last::DotDot,
            name => Last::Norm { name: name.to_owned(), slash },
        };
        let comps = Pending::of(&path[..start]);
        if !comps.is_empty() {
            self.walk(chain, comps, true, true, links)?;
        }
        if last != Last::Root {
            self.may_lookup(chain.last().expect("chain has a root"))?;
        }
        Ok(last)
    }

    /// Walks `comps` from the end of `chain`.
    fn walk(
        &mut self,
        chain: &mut Chain,
        mut comps: Pending<'_>,
        follow_last: bool,
        mut dir_required: bool,
        links: &mut u32,
    ) -> SysResult<()> {
        while let Some(range) = comps.next_range() {
            self.may_lookup(chain.last().expect("chain has a root"))?;
            let comp = comps.component(range);
            if comp == "." || comp == ".." {
                if comp == ".." && chain.len() > 1 {
                    chain.pop();
                }
                comps.advance(range);
                continue;
            }
            let child = self.lookup_child(chain.last().expect("chain has a root"), comp)?;
            comps.advance(range);
            let is_last = comps.is_empty();
            let Some(ftype) = child.ftype else { return Err(Errno::ENOENT) };
            if ftype == FileType::Symlink && (!is_last || follow_last || dir_required) {
                *links += 1;
                if *links > SYMLINK_COUNT_MAX {
                    return Err(Errno::ELOOP);
                }
                let target = self.symlink_target_shared(&child);
                if target.is_empty() {
                    return Err(Errno::ENOENT);
                }
                if target.starts_with('/') {
                    chain.truncate(1);
                }
                if is_last && target.ends_with('/') {
                    dir_required = true;
                }
                comps.push(target);
                continue;
            }
            if !is_last && ftype != FileType::Dir {
                return Err(Errno::ENOTDIR);
            }
            chain.push(child);
        }
        let last = chain.last().expect("chain has a root");
        if dir_required && !last.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        Ok(())
    }

    /// A symlink dentry's target text.
    pub(crate) fn symlink_target(&self, d: &Dentry) -> String {
        self.symlink_target_shared(d).to_string()
    }

    /// A symlink dentry's target text, shared with its inode.
    pub(crate) fn symlink_target_shared(&self, d: &Dentry) -> Arc<str> {
        match &self.real_inode(d).kind {
            crate::layer::NodeKind::Symlink(t) => Arc::clone(t),
            _ => panic!("model invariant: symlink_target of a non-symlink"),
        }
    }
}

/// Where the run of slashes at `at` in `bytes` ends. A byte loop: the `str` pattern
/// searchers cost more to set up than the few bytes they pass over.
fn slashes_end(bytes: &[u8], mut at: usize) -> usize {
    while at < bytes.len() && bytes[at] == b'/' {
        at += 1;
    }
    at
}

/// The number of `/` bytes in a path: a bound on its components, to size a chain.
fn slash_count(path: &str) -> usize {
    path.bytes().filter(|&b| b == b'/').count()
}

/// What a walk has still to look up: the rest of the path, and above it the rest of each
/// symlink target met on the way, the innermost on top, so that a target's components come
/// before what follows the link. Each is kept from its next component on (leading slashes
/// skipped; an exhausted one is dropped), so the walk is at its last component when one
/// piece is left with no slash after its first component. Components are found as the walk
/// reaches them, without a list of them: most walks follow no symlink, and take their
/// components straight out of the path.
struct Pending<'p> {
    /// The piece the next component comes from, with the offset of that component; `None`
    /// when nothing is left. Kept apart from the pieces below it, where each step reaches it
    /// without going through a vector.
    top: Option<(Piece<'p>, usize)>,
    /// The pieces under `top`, the outermost first (each a piece a symlink interrupted).
    below: Vec<(Piece<'p>, usize)>,
}

/// One piece of [`Pending`]: the path itself, or a symlink's target, shared with its inode.
enum Piece<'p> {
    Path(&'p str),
    Target(Arc<str>),
}

impl std::ops::Deref for Piece<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        match self {
            Piece::Path(p) => p,
            Piece::Target(t) => t,
        }
    }
}

impl<'p> Pending<'p> {
    /// The components of `path`, borrowed from it.
    fn of(path: &'p str) -> Pending<'p> {
        let at = slashes_end(path.as_bytes(), 0);
        let top = (at < path.len()).then_some((Piece::Path(path), at));
        Pending { top, below: Vec::new() }
    }

    /// Puts a symlink's target on top of what is left.
    fn push(&mut self, target: Arc<str>) {
        let at = slashes_end(target.as_bytes(), 0);
        if at < target.len() {
            if let Some(top) = self.top.take() {
                self.below.push(top);
            }
            self.top = Some((Piece::Target(target), at));
        }
    }

    /// Whether no component is left.
    fn is_empty(&self) -> bool {
        self.top.is_none()
    }

    /// Where the next component is in the top piece.
    fn next_range(&self) -> Option<(usize, usize)> {
        let (piece, at) = self.top.as_ref()?;
        let bytes = piece.as_bytes();
        let mut end = *at;
        while end < bytes.len() && bytes[end] != b'/' {
            end += 1;
        }
        Some((*at, end))
    }

    /// The component at `range` in the top piece.
    fn component(&self, range: (usize, usize)) -> &str {
        let (piece, _) = self.top.as_ref().expect("a component was found");
        &piece[range.0..range.1]
    }

    /// Goes past the component at `range` and the slashes after it; a piece with nothing
    /// left is dropped.
    fn advance(&mut self, range: (usize, usize)) {
        let (piece, at) = self.top.as_mut().expect("a component was found");
        let next = slashes_end(piece.as_bytes(), range.1);
        if next < piece.len() {
            *at = next;
        } else {
            self.top = self.below.pop();
        }
    }
}
