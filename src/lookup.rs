//! Per-name lookup across the layers (kernel: `fs/overlayfs/namei.c`, `ovl_lookup`,
//! `ovl_lookup_layer`, `ovl_lookup_single`, `ovl_check_redirect`).
//!
//! A [`Dentry`] is one object of the merged view: its upper inode, if any, and the stack of
//! lower inodes that make it up (every merged layer for a directory; the copy-up origin or the
//! top-most lower object for a non-directory). Lookups never change a lower layer; the upper
//! they may mark (kernel: `ovl_fix_origin`).

use crate::dcache::{LowerAnswer, Probe};
use crate::errno::{Errno, SysResult};
use crate::layer::{FileType, Ino, Inode, Layer};
use crate::overlay::Overlay;
use crate::whiteout;
use smallvec::SmallVec;
use std::borrow::Cow;
use std::sync::{Arc, LazyLock};

/// The lower stack of an object with no lower part, shared.
static EMPTY_STACK: LazyLock<Arc<[LowerPath]>> = LazyLock::new(|| Arc::from([]));

/// The longest name a layer accepts (tmpfs `NAME_MAX`; kernel: `ofs->namelen`).
pub use crate::layer::check::NAME_LEN_MAX;

/// One lower object: lower layer `layer` (0 = top-most), inode `ino` in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LowerPath {
    /// The lower layer, 0 being the top-most.
    pub layer: usize,
    /// The inode in that layer.
    pub ino: Ino,
}

/// A dentry's name. Names are mostly a few bytes: up to [`Name::INLINE_MAX`] bytes are kept
/// inline, so that a lookup allocates nothing for the name of the dentry it makes (a path
/// walk makes one per component); longer names are boxed.
#[derive(Clone, Default)]
pub struct Name(NameRepr);

// A `Name` is no larger than the `String` it replaces.
const _: () = assert!(std::mem::size_of::<Name>() == std::mem::size_of::<String>());

#[derive(Clone)]
enum NameRepr {
    Inline { len: u8, bytes: [u8; Name::INLINE_MAX] },
    Boxed(Box<str>),
}

impl Default for NameRepr {
    fn default() -> Self {
        NameRepr::Inline { len: 0, bytes: [0; Name::INLINE_MAX] }
    }
}

impl Name {
    /// The longest name kept inline: with its length and the variant's tag, a `Name` takes
    /// the 24 bytes of a `String`.
    pub const INLINE_MAX: usize = 22;

    /// Whether the name is empty (the root's), without reading it as a string.
    pub fn is_empty(&self) -> bool {
        match &self.0 {
            NameRepr::Inline { len, .. } => *len == 0,
            NameRepr::Boxed(s) => s.is_empty(),
        }
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            NameRepr::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).expect("model invariant: made from a str")
            }
            NameRepr::Boxed(s) => s,
        }
    }
}

impl From<&str> for Name {
    fn from(s: &str) -> Name {
        if s.len() > Name::INLINE_MAX {
            return Name(NameRepr::Boxed(s.into()));
        }
        let mut bytes = [0; Name::INLINE_MAX];
        bytes[..s.len()].copy_from_slice(s.as_bytes());
        Name(NameRepr::Inline { len: s.len() as u8, bytes })
    }
}

impl std::ops::Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl std::borrow::Borrow<str> for Name {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Name) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Name {}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl std::fmt::Debug for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One object of the merged view, as `ovl_lookup` leaves it in the dentry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dentry {
    /// The name in the parent (empty for the root).
    pub name: Name,
    /// The upper inode, if the object has one.
    pub upper: Option<Ino>,
    /// The lower stack: for a directory every lower directory that merges, top-most first;
    /// for a non-directory the top-most lower object, or the copy-up origin of an upper one.
    pub lowers: Arc<[LowerPath]>,
    /// For a positive directory, the upper directory is opaque; for a negative dentry, a
    /// whiteout hides the name in the upper (kernel: `OVL_E_OPAQUE`, `ovl_dentry_is_whiteout`).
    pub opaque: bool,
    /// The upper directory's redirect, as the lookup resolved it.
    pub redirect: Option<String>,
    /// A lower copy of this directory carries `opaque=x`: readdir filters xattr whiteouts.
    pub xwhiteouts: bool,
    /// The file type, or `None` for a negative dentry.
    pub ftype: Option<FileType>,
    /// The error of the lazy lookup of this regular file's data in the data-only lower
    /// layers, when it found none ([`Overlay::verify_lower_data`]).
    pub lowerdata_error: Option<Errno>,
}

impl Dentry {
    /// Whether the name is visible.
    pub fn is_positive(&self) -> bool {
        self.ftype.is_some()
    }

    /// Whether this is the root of the merged view (the only dentry without a name).
    pub fn is_root(&self) -> bool {
        self.name.is_empty()
    }

    /// Whether this is a directory.
    pub fn is_dir(&self) -> bool {
        self.ftype == Some(FileType::Dir)
    }

    /// A negative dentry hiding an upper whiteout (kernel: `ovl_dentry_is_whiteout`).
    pub fn is_whiteout(&self) -> bool {
        !self.is_positive() && self.opaque
    }

    /// Pure upper: in the upper with nothing under it and no copy-up origin
    /// (kernel: `ovl_pure_upper`).
    pub fn is_pure_upper(&self, ov: &Overlay) -> bool {
        self.upper.is_some() && self.lowers.is_empty() && ov.upper_inode(self).and_then(|i| i.origin).is_none()
    }

    /// A merged directory: an upper with lowers, or more than one lower (kernel:
    /// `OVL_TYPE_MERGE`).
    pub fn is_merge_dir(&self) -> bool {
        self.is_dir() && ((self.upper.is_some() && !self.lowers.is_empty()) || self.lowers.len() > 1)
    }

    /// Lower-only, or a merged directory (kernel: `ovl_type_merge_or_lower`): what cannot be
    /// renamed without `redirect_dir=on` when it is a directory.
    pub fn is_merge_or_lower(&self) -> bool {
        match self.upper {
            None => true,
            Some(_) => self.is_dir() && !self.lowers.is_empty(),
        }
    }

    /// Has a copy-up origin in a lower layer (kernel: `OVL_TYPE_ORIGIN`): an upper directory
    /// with lowers, or an upper non-directory whose copy-up recorded an origin (a copy that
    /// broke a lower hard link recorded none), or whose overlay inode still keeps its lower
    /// ([`crate::icache`]).
    pub fn has_origin(&self, ov: &Overlay) -> bool {
        match (ov.upper_inode(self), self.upper) {
            (Some(_), _) if self.is_dir() => !self.lowers.is_empty(),
            (Some(inode), Some(u)) => {
                (inode.origin.is_some() || ov.icache.keeps_lower(u) || ov.metacopy_hashed_by_lower(self))
                    && !self.lowers.is_empty()
            }
            _ => false,
        }
    }
}

/// The state `ovl_lookup` threads through the layers (kernel: `struct ovl_lookup_data`).
#[derive(Debug)]
struct LookupData<'a> {
    /// The name looked up, as the caller gave it; the name probed is the last redirect
    /// read, if any ([`LookupData::name`]).
    orig: &'a str,
    is_dir: bool,
    opaque: bool,
    stop: bool,
    last: bool,
    /// The name as the last redirect read made it (kernel: `d.name` after
    /// `ovl_check_redirect`): what every layer below probes.
    redirect: Option<String>,
    metacopy: bool,
    xwhiteouts: bool,
    /// The directory the last probe found carries `opaque=x` (at any depth of a redirect).
    found_xwhiteouts: bool,
    /// The first lower object found, kept for an error after it (kernel: `stack[0]`).
    first: Option<LowerPath>,
    /// The last redirect xattr read was absolute (kernel: `d.absolute_redirect`).
    absolute_redirect: bool,
}

impl LookupData<'_> {
    /// The name the next layer probes: the last redirect read, else the name looked up.
    fn name(&self) -> &str {
        self.redirect.as_deref().unwrap_or(self.orig)
    }
}

/// Which layer a lookup step is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Which {
    Upper,
    Lower(usize),
}

impl Overlay {
    /// The layer a lookup step reads.
    fn which(&self, w: Which) -> &Layer {
        match w {
            Which::Upper => self.upper.as_ref().expect("model invariant: upper lookup with an upper"),
            Which::Lower(i) => &self.lowers[i],
        }
    }

    /// The root of the merged view: the upper root over every lower root. No layer root is
    /// looked up, so `opaque=y` and redirects on any root, and `opaque=x` on the upper root,
    /// are never read (kernel: `ovl_get_root` builds the root from the mount's layer stack);
    /// `opaque=x` on a lower root is read once, at mount ([`Overlay::mark_root_xwhiteouts`]).
    pub(crate) fn root_dentry(&self) -> Dentry {
        Dentry {
            name: Name::default(),
            upper: self.upper.as_ref().map(|u| u.root()),
            lowers: Arc::clone(&self.root_lowers),
            opaque: false,
            redirect: None,
            xwhiteouts: self.root_xwhiteouts,
            ftype: Some(FileType::Dir),
            lowerdata_error: None,
        }
    }

    /// Reads the xattr-whiteouts marker on the lower roots, at mount: every lower root but
    /// the lowermost that carries `opaque=x` (in the mount's namespace, `trusted.overlay.` or
    /// `user.overlay.`) flags its layer, and the merged root then filters xattr whiteouts in
    /// readdir as a subdirectory does (kernel: `ovl_get_root`, "Look for xwhiteouts marker
    /// except in the lowermost layer": `ovl_layer_set_xwhiteouts`,
    /// `ovl_dentry_set_xwhiteouts`). The upper root's marker is not read.
    pub(crate) fn mark_root_xwhiteouts(&mut self) {
        let below_top = self.regular_lower_count().saturating_sub(1);
        for layer in 0..below_top {
            let root = self.lowers[layer].get(self.lowers[layer].root());
            if whiteout::opaque_value(self, root) == Some(b'x') {
                self.flag_xwhiteouts(layer);
                self.root_xwhiteouts = true;
            }
        }
    }

    /// The upper inode of a dentry, if it has one.
    pub(crate) fn upper_inode(&self, d: &Dentry) -> Option<&Inode> {
        d.upper.map(|ino| self.upper.as_ref().expect("model invariant: upper ino with an upper").get(ino))
    }

    /// The real inode that supplies a dentry's attributes: the upper, else the index's upper
    /// inode of an indexed lower hard link ([`Overlay::index_alias`]), else the top-most
    /// lower (kernel: `ovl_path_real`).
    pub(crate) fn real_inode(&self, d: &Dentry) -> &Inode {
        match d.upper {
            Some(_) => self.upper_inode(d).expect("upper"),
            None if self.options.index && self.index_alias(d).is_some() => {
                self.upper.as_ref().expect("upper").get(self.index_alias(d).expect("index alias"))
            }
            None => {
                let l = d.lowers.first().expect("model invariant: a positive dentry has a real inode");
                self.lowers[l.layer].get(l.ino)
            }
        }
    }

    /// Looks up `name` in the merged directory `parent`.
    ///
    /// Kernel: `ovl_lookup`. The upper is looked up first; a whiteout there gives a negative
    /// dentry that remembers the whiteout; a non-directory stops the lookup (its copy-up
    /// origin is found through the origin it records); a directory continues into the
    /// parent's lower stack unless it is opaque (`opaque=y` exactly). A redirect xattr on a
    /// directory makes the lower layers be searched at the redirected name (relative: a
    /// sibling; absolute: from the lower roots). Merging stops at the first non-directory,
    /// whiteout or opaque directory.
    ///
    /// Errors, in precedence order: ENAMETOOLONG (name longer than 255), EINVAL (a malformed
    /// redirect xattr), EIO (a copy-up origin of another type), EPERM (a redirect with
    /// `redirect_dir=nofollow`, or a metacopy file on a mount without metacopy), EACCES (a
    /// redirect component a lower layer cannot look up: `.`, `..` or empty), EIO (a metacopy
    /// file with no lower data: [`Overlay::check_lower_data`]), then EINVAL, EIO or EPERM
    /// from the index entry a lower-only non-directory takes as its upper
    /// ([`Overlay::check_index_upper`]).
    pub(crate) fn lookup_child(&mut self, parent: &Dentry, name: &str) -> SysResult<Dentry> {
        if name.len() > NAME_LEN_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        let follow = self.options.redirect_dir.follows();
        let mut d = LookupData {
            orig: name,
            is_dir: false,
            opaque: false,
            stop: false,
            last: if follow || self.data_layers > 0 { false } else { parent.lowers.is_empty() },
            redirect: None,
            metacopy: false,
            xwhiteouts: false,
            found_xwhiteouts: false,
            first: None,
            absolute_redirect: false,
        };
        let mut poe = Arc::clone(&parent.lowers);
        let mut upper = None;
        let mut upper_redirect = None;
        let mut upper_opaque = false;
        let mut origin = None;
        let mut poe_is_root = parent.is_root();
        // What the upper inode found tells, read while the lookup has it in hand: its type,
        // and whether it is a metacopy file (the probe read that xattr: `d.metacopy`).
        let mut upper_ftype = None;
        let mut upper_metacopy = false;
        if let Some(udir) = parent.upper {
            let found = self.lookup_layer(Which::Upper, udir, &mut d)?;
            if let Some((u, inode)) = found {
                upper = Some(u);
                upper_ftype = Some(inode.file_type());
                if !d.is_dir {
                    upper_metacopy = d.metacopy;
                    origin = self.check_origin(inode)?;
                    if origin.is_none() {
                        origin = self.icache.kept_lower(u, udir, name);
                    }
                    // NOTE(kernel): refused at once, with or without lower data (observed on
                    // 6.18: EPERM, not the EIO of "metacopy with no lower data").
                    if d.metacopy && !self.options.metacopy {
                        return Err(Errno::EPERM);
                    }
                }
            }
            if let Some(r) = &d.redirect {
                // NOTE(kernel): refused even when no lower has the redirected name (observed
                // on 6.18); a lower directory's redirect is refused once it is found, below.
                if !follow {
                    return Err(Errno::EPERM);
                }
                upper_redirect = Some(r.clone());
                if r.starts_with('/') {
                    poe = Arc::clone(&self.root_lowers);
                    poe_is_root = true;
                }
            }
            upper_opaque = d.opaque;
        }
        let answer = if d.stop || poe.is_empty() {
            LowerAnswer {
                stack: Arc::clone(&EMPTY_STACK),
                top_ftype: None,
                last_metacopy: false,
                is_dir: d.is_dir,
                xwhiteouts: d.xwhiteouts,
                flagged: Box::default(),
                lazy: false,
                lowerdata_error: None,
            }
        } else if self.cache_policy.covers(poe.len()) && !d.metacopy {
            let probe = Probe { upper_dir: d.is_dir, from_root: poe_is_root };
            let answer = match self.dcache.get(&poe, d.name(), probe) {
                Some(answer) => {
                    for &layer in answer.flagged.iter() {
                        self.flag_xwhiteouts(layer);
                    }
                    answer
                }
                None => {
                    let key = match &d.redirect {
                        None => Cow::Borrowed(d.orig),
                        Some(r) => Cow::Owned(r.clone()),
                    };
                    let answer = self.lookup_lowers(poe.clone(), poe_is_root, &mut d, follow);
                    let answer = self.fix_origin_on_error(parent, upper, &d, answer)?;
                    self.dcache.put(&poe, &key, probe, answer.clone());
                    answer
                }
            };
            d.is_dir = answer.is_dir;
            d.xwhiteouts = answer.xwhiteouts;
            answer
        } else {
            let answer = self.lookup_lowers(poe, poe_is_root, &mut d, follow);
            self.fix_origin_on_error(parent, upper, &d, answer)?
        };
        let LowerAnswer { stack, top_ftype, last_metacopy, lazy, lowerdata_error, .. } = answer;
        if let (Some(u), Some(first), true) = (upper, stack.first(), d.is_dir) {
            self.fix_origin(parent, u, *first);
        }
        let stack = match (upper, d.is_dir) {
            (Some(u), true) => self.verified_lower_dirs(u, stack),
            _ => stack,
        };
        if !lazy {
            self.check_lower_data(upper_metacopy, d.is_dir, stack.is_empty(), last_metacopy)?;
        }
        if let (None, Some(&first), false) = (upper, stack.first(), d.is_dir) {
            self.check_index_upper(first)?;
        }
        let stack = match origin {
            Some(o) if !d.is_dir && upper.is_some() && stack.is_empty() => Arc::from([o]),
            _ => stack,
        };
        // Without an upper, the stack is the lower answer's, whose top-most type it kept.
        let ftype = if upper.is_some() { upper_ftype } else { top_ftype };
        let dentry = Dentry {
            name: name.into(),
            upper,
            lowers: stack,
            opaque: upper_opaque,
            redirect: upper_redirect,
            xwhiteouts: d.xwhiteouts,
            ftype,
            lowerdata_error,
        };
        self.get_inode(&dentry)?;
        self.live_nlink(parent.upper, &dentry);
        Ok(dentry)
    }

    /// The lower half of [`Overlay::lookup_child`]: probes `d.name()` down the lower stack
    /// `poe`, top-most first, and merges what it finds (kernel: the lower-layer loop of
    /// `ovl_lookup`). Merging stops at the first non-directory, whiteout or opaque
    /// directory; an absolute redirect in a lower directory restarts the probe from the lower
    /// roots below it. What it finds depends only on the arguments, the lowers and the mount
    /// options, so [`crate::dcache`] may keep it.
    ///
    /// Errors, in precedence order: EINVAL (a malformed redirect xattr), EPERM (a redirect
    /// with `redirect_dir=nofollow`, or a metacopy file on a mount without metacopy), EACCES
    /// (a redirect component a layer cannot look up).
    fn lookup_lowers(
        &mut self,
        mut poe: Arc<[LowerPath]>,
        mut poe_is_root: bool,
        d: &mut LookupData,
        follow: bool,
    ) -> SysResult<LowerAnswer> {
        // Most stacks hold one or two layers: kept inline until the one `Arc` is made.
        let mut stack: SmallVec<[LowerPath; 4]> = SmallVec::new();
        let mut top_ftype = None;
        let mut last_metacopy = false;
        let mut flagged = Vec::new();
        let mut i = 0;
        // A metacopy file or a redirect found is refused only when the lookup goes on below
        // it, or ends on it other than in the data-only layers (kernel: `nextmetacopy`,
        // `nextredirect`).
        let mut next_metacopy = false;
        let mut next_redirect = false;
        let check_redirect = follow || self.data_layers > 0;
        while !d.stop && i < poe.len() {
            let lower = poe[i];
            self.check_follow(next_metacopy, next_redirect, follow)?;
            if !check_redirect {
                d.last = i == poe.len() - 1;
            } else if d.is_dir || self.data_layers == 0 {
                d.last = lower.layer + 1 == self.regular_lower_count();
            }
            let last = d.last;
            let found = self.lookup_layer(Which::Lower(lower.layer), lower.ino, d)?;
            let Some((this, inode)) = found else {
                i += 1;
                continue;
            };
            let ftype = inode.file_type();
            next_metacopy |= d.metacopy;
            if !last && d.found_xwhiteouts {
                self.flag_xwhiteouts(lower.layer);
                flagged.push(lower.layer);
            }
            // Only the top-most lower metacopy file is kept, and the data below it (kernel:
            // "Do not store intermediate metacopy dentries in lower chain").
            if !d.metacopy || stack.is_empty() {
                stack.push(LowerPath { layer: lower.layer, ino: this });
                top_ftype.get_or_insert(ftype);
                // A regular file found had its metacopy xattr read by the probe.
                last_metacopy = d.metacopy && ftype == FileType::File;
            }
            d.first.get_or_insert(LowerPath { layer: lower.layer, ino: this });
            next_redirect |= d.redirect.is_some();
            if d.stop {
                break;
            }
            match &d.redirect {
                Some(r) if r.starts_with('/') && !poe_is_root => {
                    poe = Arc::clone(&self.root_lowers);
                    poe_is_root = true;
                    i = lower.layer + 1;
                }
                _ => i += 1,
            }
        }
        let mut lowerdata_error = None;
        let lazy = d.metacopy && !stack.is_empty() && self.data_layers > 0 && d.absolute_redirect;
        if lazy {
            d.metacopy = false;
            let redirect = d.redirect.as_deref().expect("model invariant: an absolute redirect was read");
            match self.lookup_data_layers(redirect) {
                Ok(data) => {
                    stack.push(data);
                    last_metacopy = whiteout::is_metacopy(self, self.lowers[data.layer].get(data.ino));
                }
                Err(e) => lowerdata_error = Some(e),
            }
        } else {
            self.check_follow(next_metacopy, next_redirect, follow)?;
        }
        let stack = if stack.is_empty() { Arc::clone(&EMPTY_STACK) } else { Arc::from(&stack[..]) };
        Ok(LowerAnswer {
            stack,
            top_ftype,
            last_metacopy,
            is_dir: d.is_dir,
            xwhiteouts: d.xwhiteouts,
            flagged: flagged.into(),
            lazy,
            lowerdata_error,
        })
    }

    /// A lower lookup that fails after it found a first lower directory under an upper one
    /// has already recorded the origin (kernel: `ovl_lookup` calls `ovl_fix_origin` at the
    /// first lower, before a later layer's error or the nofollow refusal): the upper keeps
    /// it, and its parent stays impure, though the lookup fails.
    fn fix_origin_on_error(
        &mut self,
        parent: &Dentry,
        upper: Option<Ino>,
        d: &LookupData,
        answer: SysResult<LowerAnswer>,
    ) -> SysResult<LowerAnswer> {
        if let (Err(_), Some(u), Some(first), true) = (&answer, upper, d.first, d.is_dir) {
            self.fix_origin(parent, u, first);
        }
        answer
    }

    /// Records the origin of a merged directory whose upper has none (an upper made
    /// offline), and marks its parent impure: a lookup alone writes to the upper (kernel:
    /// `ovl_fix_origin`). The upper's private clone stays writable on a read-only mount, so
    /// this happens there too.
    fn fix_origin(&mut self, parent: &Dentry, upper: Ino, lower: LowerPath) {
        let origin = self.origin_of(lower);
        let parent_upper = parent.upper;
        let layer = self.upper.as_mut().expect("model invariant: an upper dentry has an upper");
        if layer.get(upper).origin.is_some() {
            return;
        }
        layer.update(upper, |i| i.origin = Some(origin));
        if let Some(p) = parent_upper {
            layer.update(p, |i| i.impure = true);
        }
    }

    /// The lower directories an upper directory merges with under `nfs_export=on`: none
    /// when the first one found is not the upper's origin (kernel: `ovl_lookup`, "When
    /// "verify_lower" feature is enabled, do not merge with a lower dir that does not match
    /// a stored origin xattr", `ovl_verify_origin` then `break` at the first lower;
    /// `ovl_verify_lower` is `nfs_export` with `index`). An origin is stored by the first
    /// lookup that merges the directory, on any mount ([`Overlay::fix_origin`]), so a
    /// directory looked up over other lowers before is then a plain upper directory
    /// (observed on 6.18: `st_nlink` 2, its lower names not listed).
    fn verified_lower_dirs(&self, upper: Ino, stack: Arc<[LowerPath]>) -> Arc<[LowerPath]> {
        let Some(first) = stack.first() else { return stack };
        if !(self.options.nfs_export && self.options.index) {
            return stack;
        }
        let found = self.origin_of(*first);
        match self.which(Which::Upper).get(upper).origin {
            Some(origin) if origin != found => Arc::clone(&EMPTY_STACK),
            _ => stack,
        }
    }

    /// Finds the copy-up origin of an upper non-directory among the mounted lowers
    /// (kernel: `ovl_check_origin`; a stale origin is ignored, a type mismatch is EIO).
    pub(crate) fn check_origin(&self, upper: &Inode) -> SysResult<Option<LowerPath>> {
        let Some(origin) = upper.origin else { return Ok(None) };
        for (layer, l) in self.lowers.iter().enumerate() {
            if self.fh_layer(layer) == origin.layer {
                return match l.try_get(origin.ino) {
                    Some(o) if o.file_type() != upper.file_type() => Err(Errno::EIO),
                    Some(_) => Ok(Some(LowerPath { layer, ino: origin.ino })),
                    None => Ok(None),
                };
            }
        }
        Ok(None)
    }

    /// Looks up `d.name()` in one layer below `base` (kernel: `ovl_lookup_layer`). A
    /// relative name is one step; an absolute one (a redirect) is walked from the layer root,
    /// one component at a time.
    fn lookup_layer(&self, which: Which, base: Ino, d: &mut LookupData) -> SysResult<Option<(Ino, &Inode)>> {
        // Most lookups read no redirect: the name is the caller's, borrowed apart from `d`.
        let Some(redirect) = &d.redirect else {
            let name = d.orig;
            return self.lookup_single(which, base, d, name, 0, "");
        };
        if !redirect.starts_with('/') {
            // The name moves out and back rather than being cloned. A redirect read now
            // leaves its own name in its place (which may be empty: a value that begins
            // with NUL).
            let name = d.redirect.take();
            let found = self.lookup_single(which, base, d, name.as_deref().unwrap_or_default(), 0, "");
            if d.redirect.is_none() {
                d.redirect = name;
            }
            return found;
        }
        let layer = self.which(which);
        let mut base = layer.root();
        // Counting down from the end, since the prefix can change.
        let mut rem = d.name().len() - 1;
        let mut found;
        loop {
            let name = d.name();
            let start = name.len() - rem;
            let next = name[start..].find('/').map_or(name.len(), |p| start + p);
            let this = name[start..next].to_owned();
            let post = name[next..].to_owned();
            let end = post.is_empty();
            found = self.lookup_single(which, base, d, &this, start, &post)?;
            if end {
                break;
            }
            rem = post.len() - 1;
            match found {
                Some((ino, inode)) if inode.is_dir() => base = ino,
                _ => break,
            }
        }
        Ok(found)
    }

    /// One name in one layer directory (kernel: `ovl_lookup_single`): the inode found, with
    /// its number.
    fn lookup_single(
        &self,
        which: Which,
        base: Ino,
        d: &mut LookupData,
        name: &str,
        prelen: usize,
        post: &str,
    ) -> SysResult<Option<(Ino, &Inode)>> {
        let layer = self.which(which);
        let last_element = post.is_empty();
        d.found_xwhiteouts = false;
        check_lookup_name(name)?;
        // NOTE(kernel): the layer's ENAMETOOLONG (an over-long redirect component) reads as
        // "not found", not as an error.
        if name.len() > NAME_LEN_MAX {
            return Ok(None);
        }
        let Some(ino) = layer.child(base, name) else { return Ok(None) };
        let inode = layer.get(ino);
        if whiteout::is_whiteout(self, inode) {
            d.stop = true;
            d.opaque = true;
            return Ok(None);
        }
        // Below a metacopy file only a regular file can hold its data (kernel:
        // `ovl_lookup_single`, "This dentry should be a regular file if previous layer
        // lookup found a metacopy dentry").
        if last_element && d.metacopy && inode.file_type() != FileType::File {
            d.stop = true;
            return Ok(None);
        }
        if !inode.is_dir() {
            if d.is_dir || !last_element {
                d.stop = true;
                return Ok(None);
            }
            d.metacopy = self.check_metacopy_xattr(inode)?;
            d.stop = !d.metacopy;
            // A metacopy file's redirect names its data; it is read (and so validated)
            // before the caller refuses metacopy on a mount without it.
            if d.metacopy && !d.last {
                self.check_redirect(inode, d, prelen, post)?;
            }
            return Ok(Some((ino, inode)));
        }
        if last_element {
            d.is_dir = true;
        }
        if d.last {
            return Ok(Some((ino, inode)));
        }
        let val = whiteout::opaque_value(self, inode);
        d.found_xwhiteouts = val == Some(b'x');
        if last_element && which != Which::Upper && val == Some(b'x') {
            d.xwhiteouts = true;
        } else if val == Some(b'y') {
            d.stop = true;
            if last_element {
                d.opaque = true;
            }
            return Ok(Some((ino, inode)));
        }
        self.check_redirect(inode, d, prelen, post)?;
        Ok(Some((ino, inode)))
    }

    /// Follows a redirect xattr (kernel: `ovl_check_redirect`): a directory's, or a
    /// metacopy file's. The value is read and validated by [`redirect_value`]; an absolute
    /// redirect restarts the name from the lower roots and clears `stop`; a relative one
    /// replaces the last component. Its components are checked only when a layer looks them
    /// up ([`check_lookup_name`]).
    ///
    /// Errors: EINVAL (a malformed value).
    fn check_redirect(&self, inode: &Inode, d: &mut LookupData, prelen: usize, post: &str) -> SysResult<()> {
        d.absolute_redirect = false;
        let Some(value) = inode.xattr(self.names().redirect) else { return Ok(()) };
        let value = redirect_value(value)?;
        d.absolute_redirect = value.starts_with('/');
        let name = if value.starts_with('/') {
            d.stop = false;
            format!("{value}{post}")
        } else {
            format!("{}{value}{post}", &d.name()[..prelen])
        };
        d.redirect = Some(name);
        Ok(())
    }
}

/// Reads a redirect xattr's value as the kernel does (kernel: `ovl_get_redirect_xattr`,
/// util.c). The value is a C string: it ends at its first NUL byte. An empty value is invalid;
/// an absolute value (leading `/`) must have no empty component (`/`, `/a//b` and `/a/` are
/// invalid); a relative value must not contain `/`. `.` and `..` are valid here: they are
/// refused only when a layer looks them up ([`check_lookup_name`]).
///
/// Bytes that are not UTF-8 are kept as U+FFFD: no layer name can match them, as no layer
/// name can match the kernel's raw bytes.
///
/// Errors: EINVAL (an empty value, an empty absolute component, a `/` in a relative value).
pub fn redirect_value(raw: &[u8]) -> SysResult<Cow<'_, str>> {
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    let value = &raw[..end];
    // The whole value was empty: invalid. A value that begins with NUL is an empty string
    // that the kernel accepts as a relative redirect (and then refuses to look up).
    if raw.is_empty() {
        return Err(Errno::EINVAL);
    }
    let valid = match value.strip_prefix(b"/") {
        Some(rest) => rest.split(|&b| b == b'/').all(|c| !c.is_empty()),
        None => !value.contains(&b'/'),
    };
    if !valid {
        return Err(Errno::EINVAL);
    }
    Ok(String::from_utf8_lossy(value))
}

/// Whether a layer may look up `name` (kernel: `lookup_one_common` in fs/namei.c, reached
/// through `ovl_lookup_single`'s `lookup_one_positive_unlocked`). Only a redirect's components
/// can reach it with such a name: the merged path walk resolves `.` and `..` itself.
///
/// Errors: EACCES (an empty name, `.`, `..`, or a name holding `/` or NUL).
pub fn check_lookup_name(name: &str) -> SysResult<()> {
    // A byte loop: `contains` with a set of chars sets up a searcher that costs more than
    // the few bytes of a name.
    if name.is_empty() || name == "." || name == ".." || name.bytes().any(|b| b == b'/' || b == 0) {
        return Err(Errno::EACCES);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Name;

    /// A name reads back as the string it was made from, inline or boxed, at the edge
    /// between the two and with characters of several bytes.
    #[test]
    fn a_name_reads_back_as_made() {
        let long = "x".repeat(255);
        let cases = ["", "a", "ü", "abcdefghijklmnopqrstuv", "abcdefghijklmnopqrstuvw", "日本語の名前です", &long];
        for s in cases {
            let name = Name::from(s);
            assert_eq!(name.as_str(), s);
            assert_eq!(name.is_empty(), s.is_empty());
            assert_eq!(name, Name::from(s));
            assert_eq!(format!("{name}"), s);
        }
        assert_ne!(Name::from("abcdefghijklmnopqrstuv"), Name::from("abcdefghijklmnopqrstuvw"));
    }
}
