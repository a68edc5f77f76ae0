//! The overlay: lowers, an optional upper, and the options. Clone is O(1).
//!
//! [`Overlay::apply`] carries out one [`Op`] on the merged view and returns the kernel's
//! [`Outcome`]. The rules themselves live in their own modules, one function each:
//! [`crate::lookup`], [`crate::path`], [`crate::copy_up`], [`crate::whiteout`],
//! [`crate::readdir`], [`crate::inode`] and the operation families under [`crate::ops`].

use crate::dcache::{CachePolicy, DentryCache};
use crate::errno::Errno;
use crate::icache::InodeCache;
use crate::layer::Layer;
use crate::lookup::LowerPath;
use crate::mount::{MountError, Options, LOWER_COUNT_MAX};
use crate::ops::{Op, Outcome};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Something the overlay did to its upper layer, reported so that a user can see why a
/// result is what it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Event {
    /// An object was copied up from a lower layer (parents are reported first).
    CopyUp {
        /// The merged path.
        path: String,
    },
    /// A whiteout was created in the upper.
    Whiteout {
        /// The merged path.
        path: String,
    },
    /// An upper directory was made opaque.
    Opaque {
        /// The merged path.
        path: String,
    },
    /// A redirect was set on an upper directory.
    Redirect {
        /// The merged path (before the rename that set it).
        path: String,
        /// The redirect value.
        target: String,
    },
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Event::CopyUp { path } => write!(f, "copy-up {path}"),
            Event::Whiteout { path } => write!(f, "whiteout {path}"),
            Event::Opaque { path } => write!(f, "opaque {path}"),
            Event::Redirect { path, target } => write!(f, "redirect {path} -> {target}"),
        }
    }
}

/// Which layer an object of the merged view comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum LayerRef {
    /// The upper layer.
    Upper,
    /// Lower layer `n`, 0 being the top-most.
    Lower(usize),
}

/// A mounted overlay.
#[derive(Clone, Debug)]
pub struct Overlay {
    pub(crate) lowers: Arc<[Layer]>,
    pub(crate) upper: Option<Layer>,
    pub(crate) options: Options,
    pub(crate) events: Vec<Event>,
    /// The lower layers in which some lookup since the mount met a directory with
    /// `opaque=x`, one bit each (kernel: `ofs->layers[i].has_xwhiteouts`).
    pub(crate) xwhiteout_layers: Vec<u64>,
    /// The lower roots, top-most first: the root's lower stack, made once.
    pub(crate) root_lowers: Arc<[LowerPath]>,
    /// A lower root other than the lowermost carries `opaque=x`: readdir of the merged root
    /// filters xattr whiteouts (set at mount by [`Overlay::mark_root_xwhiteouts`]).
    pub(crate) root_xwhiteouts: bool,
    /// The answers of the lower half of lookups, shared by every clone of this mount.
    pub(crate) dcache: Arc<DentryCache>,
    /// When lookups use [`Overlay::dcache`].
    pub(crate) cache_policy: CachePolicy,
    /// The open handles ([`crate::fd`]).
    pub(crate) fds: crate::fd::FdTable,
    /// The overlay inodes the kernel would still hold (see [`crate::icache`]): part of the
    /// state, unlike [`Overlay::dcache`], since they change answers.
    pub(crate) icache: InodeCache,
    /// Why the last operation's answer depends on something overlayfs leaves to the layers'
    /// filesystem, if it did (see [`Overlay::take_unspecified`]).
    pub(crate) unspecified: Option<String>,
    /// The caller of the operation being carried out ([`Overlay::apply_as`]); root
    /// otherwise.
    pub(crate) caller: Arc<crate::cred::Cred>,
    /// How many of [`Overlay::lowers`] are data-only lower layers: the last ones
    /// ([`crate::data_only`]).
    pub(crate) data_layers: usize,
}

impl Overlay {
    /// Mounts `lowers` (top-most first, as in `lowerdir=L0:L1`) under an optional `upper`.
    ///
    /// Kernel: `ovl_get_lowerstack`, `ovl_fs_params_verify`, `ovl_check_layer`. Errors, in
    /// the kernel's order: EINVAL (more than 500 lowers; conflicting options; no lower; a
    /// single lower without an upper), ELOOP (the same layer twice, or a lower that is the
    /// upper), then, with `index=on`, ESTALE (an upper first mounted over another top-most
    /// lower root: [`Overlay::verify_upper_root_origin`]) and ENODATA (an index entry left
    /// without an origin by a failed copy-up: [`Overlay::verify_index_entries`]).
    /// `metacopy=on`, `index=on` (with `metacopy=on` and under `userxattr` too) and
    /// `nfs_export=on` are modelled ([`crate::metacopy`], [`crate::index`]). `volatile` changes
    /// nothing while mounted (it only skips syncs); what it leaves in the workdir is the
    /// backend's to keep ([`crate::mount::leaves_volatile_marker`]). `xino` is
    /// accepted and has no effect, as on the kernel when every layer is on one filesystem.
    pub fn mount(lowers: Vec<Layer>, upper: Option<Layer>, options: Options) -> Result<Overlay, MountError> {
        Overlay::mount_with_data(lowers, Vec::new(), upper, options)
    }

    /// [`Overlay::mount`] with data-only lower layers under the regular ones (`lowerdir=L0::D0`,
    /// `datadir+=D0`; [`crate::data_only`]): they count with the regular layers towards the
    /// limits and the checks, and take no part in lookups but those of lower data.
    pub fn mount_with_data(
        mut lowers: Vec<Layer>,
        data: Vec<Layer>,
        upper: Option<Layer>,
        options: Options,
    ) -> Result<Overlay, MountError> {
        let data_layers = data.len();
        lowers.extend(data);
        let refused = |errno, reason: &str| Err(MountError::Refused { errno, reason: reason.to_owned() });
        // The count is checked as the string is read (params.c), the options' conflicts
        // before the layers are looked at (super.c, ovl_fill_super; observed on 6.18).
        if lowers.len() > LOWER_COUNT_MAX {
            return refused(Errno::EINVAL, "too many lower directories, limit is 500");
        }
        let options = options.verify(upper.is_some())?;
        if lowers.is_empty() {
            return refused(Errno::EINVAL, "missing 'lowerdir'");
        }
        if upper.is_none() && lowers.len() < 2 {
            return refused(Errno::EINVAL, "at least 2 lowerdir are needed while upperdir nonexistent");
        }
        if lowers.len() == data_layers {
            return refused(Errno::EINVAL, "at least one non-data lowerdir is required");
        }
        let mut ids: Vec<_> = lowers.iter().map(Layer::id).collect();
        ids.extend(upper.as_ref().map(Layer::id));
        ids.sort();
        if ids.windows(2).any(|w| w[0] == w[1]) {
            return refused(Errno::ELOOP, "conflicting lowerdir path");
        }
        let xwhiteout_layers = vec![0; lowers.len().div_ceil(64)];
        let root_lowers = lowers[..lowers.len() - data_layers]
            .iter()
            .enumerate()
            .map(|(layer, l)| LowerPath { layer, ino: l.root() })
            .collect();
        let mut ov = Overlay {
            lowers: lowers.into(),
            upper,
            options,
            events: Vec::new(),
            xwhiteout_layers,
            root_lowers,
            root_xwhiteouts: false,
            dcache: Arc::default(),
            cache_policy: CachePolicy::default(),
            fds: crate::fd::FdTable::default(),
            icache: InodeCache::default(),
            unspecified: None,
            caller: Arc::default(),
            data_layers,
        };
        ov.mark_root_xwhiteouts();
        ov.verify_upper_root_origin()?;
        ov.verify_index_entries()?;
        ov.indexdir_cleanup();
        Ok(ov)
    }

    /// Unmounts, giving back the layers: the lowers unchanged, the upper as the overlay
    /// left it.
    pub fn unmount(self) -> (Vec<Layer>, Option<Layer>) {
        (self.lowers.to_vec(), self.upper)
    }

    /// The upper layer as it would be on disk now.
    pub fn upper(&self) -> Option<&Layer> {
        self.upper.as_ref()
    }

    /// The lower layers, top-most first.
    pub fn lowers(&self) -> &[Layer] {
        &self.lowers
    }

    /// The effective options.
    pub fn options(&self) -> &Options {
        &self.options
    }

    /// Whether every write is EROFS: no upper, or a read-only mount (kernel: `sb_rdonly`,
    /// `mnt_want_write`).
    pub(crate) fn is_read_only(&self) -> bool {
        self.upper.is_none() || self.options.read_only
    }

    /// The upper layer, for a write that has passed the read-only check.
    pub(crate) fn upper_mut(&mut self) -> &mut Layer {
        self.upper.as_mut().expect("model invariant: a write passed the read-only check")
    }

    /// Carries out `op` on the merged view. The events it caused are kept for
    /// [`Overlay::take_events`].
    pub fn apply(&mut self, op: &Op) -> Outcome {
        self.events.clear();
        self.unspecified = None;
        let lowers_before = Arc::as_ptr(&self.lowers);
        let renamed = self.fd_rename_paths(op);
        let outcome = crate::ops::dispatch(self, op);
        if outcome == Outcome::Ok {
            if let Some(r) = renamed {
                self.fd_follow_rename(r);
            }
        }
        self.fd_after_op();
        debug_assert!(std::ptr::eq(lowers_before, Arc::as_ptr(&self.lowers)), "an operation replaced a lower layer");
        outcome
    }

    /// The layers that make up the object at `path` (no final symlink followed), top-most
    /// first: one layer for a non-directory, every merged layer for a directory. `None` when
    /// the path does not resolve.
    pub fn provenance(&self, path: &str) -> Option<Vec<LayerRef>> {
        // Lookups may record origins in the upper (kernel: `ovl_fix_origin`); asking where an
        // object comes from must not, so it looks through an O(1) clone.
        let chain = self.clone().resolve(path, crate::path::Follow::No).ok()?;
        let d = chain.last()?;
        let mut out = Vec::new();
        if d.upper.is_some() {
            out.push(LayerRef::Upper);
        }
        if d.is_dir() || d.upper.is_none() {
            out.extend(d.lowers.iter().map(|l| LayerRef::Lower(l.layer)));
        }
        Some(out)
    }

    /// Marks lower `layer` as holding xattr whiteouts: from now on, readdir of a merged
    /// directory that has an `opaque=x` copy checks the regular files this layer gives it
    /// (kernel: `ovl_layer_set_xwhiteouts`, set by lookup, kept until unmount).
    pub(crate) fn flag_xwhiteouts(&mut self, layer: usize) {
        self.xwhiteout_layers[layer / 64] |= 1 << (layer % 64);
    }

    /// Whether lower `layer` was marked by [`Overlay::flag_xwhiteouts`].
    pub(crate) fn has_xwhiteouts(&self, layer: usize) -> bool {
        self.xwhiteout_layers[layer / 64] & (1 << (layer % 64)) != 0
    }

    /// Chooses when lookups answer the lower half from the cache (see [`crate::dcache`]).
    /// The answers are the same either way; only the time differs.
    pub fn set_cache_policy(&mut self, policy: CachePolicy) {
        self.cache_policy = policy;
    }

    /// Forgets every cached lookup answer and overlay inode of this overlay (other clones
    /// keep theirs), as `echo 2 > /proc/sys/vm/drop_caches` empties the kernel's dentry and
    /// inode caches (kernel: `fs/drop_caches.c`, `drop_slab`): the next lookups probe every
    /// layer again and make new inodes ([`crate::icache`]). On the kernel this evicts only
    /// what nothing references; every operation of the model closes what it opens, so
    /// nothing is.
    pub fn drop_caches(&mut self) {
        self.dcache = Arc::default();
        self.icache = InodeCache::default();
    }

    /// How many lookup answers the cache holds.
    pub fn cached_lookups(&self) -> usize {
        self.dcache.len()
    }

    /// The open handles ([`crate::fd`]).
    pub fn fds(&self) -> &crate::fd::FdTable {
        &self.fds
    }

    /// The events caused by the last operation, oldest first.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// Why the answer of the last [`Overlay::apply`] (or [`Overlay::dump_merged`]) is not
    /// determined by overlayfs's rules alone, if it is not: it then depends on the order in
    /// which the layers' own filesystem lists a directory, which differs between tmpfs,
    /// ext4 and xfs, and the model does not keep it (see
    /// [`Overlay::note_failed_rechecks`]). The answer given is one the kernel can give; a
    /// comparison should not count it.
    pub fn take_unspecified(&mut self) -> Option<String> {
        self.unspecified.take()
    }
}
