//! File handles of the merged view: `name_to_handle_at(2)` and `open_by_handle_at(2)`
//! (overlayfs.rst "NFS export"; kernel: `fs/overlayfs/export.c`).
//!
//! A file handle ([`FileHandle`]) is kept by name (`name_to_handle: /p` with `as: h1`) and
//! outlives unmounts and mounts of the same layers, as an NFS client's handle outlives a
//! server restart; `open_by_handle: h1` opens through it on the overlay mounted then. The
//! model keeps the handle abstract: what real object it names (an upper inode, or a lower
//! one: the origin), never the kernel's bytes (which embed tmpfs's own handles).
//!
//! The rules, one function each:
//! - [`Overlay::encode_fh`]: which real object a handle names (`ovl_check_encode_origin`),
//!   and the copy-up an encode may make first ([`Overlay::connect_layer`]).
//! - [`Overlay::decode_fh`]: what a handle decodes to (`ovl_fh_to_dentry`,
//!   `ovl_upper_fh_to_d`, `ovl_lower_fh_to_d`), through [`Overlay::decode_upper_dir`] and
//!   [`Overlay::decode_lower_dir`] for directories (`ovl_lookup_real`).
//!
//! Not modelled (answered as not modelled, never silently): decoding a non-directory's
//! handle whose layer is not in the mount (the kernel decodes it: every layer of the
//! kernel backend is on one tmpfs, and a non-directory is found by its inode alone);
//! decoding an upper handle of an upper file with a copy-up origin (a copy-up made before
//! `nfs_export=on`); opening through a handle a lower non-directory for writing, with
//! `O_CREAT` or `O_TRUNC`, or a special file (a symlink is ELOOP); a change through such an open
//! file (the copy-up of a disconnected dentry).

use crate::errno::{Errno, SysResult};
use crate::index::IndexEntry;
use crate::layer::{FileType, Ino, LayerId, Origin};
use crate::lookup::{Dentry, LowerPath};
use crate::ops::{Access, OpenFlags};
use crate::overlay::Overlay;
use crate::path::Follow;
use std::sync::Arc;

/// A file handle kept by a `name_to_handle` step: what it names, or nothing (the empty
/// handle a failed `name_to_handle` leaves).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileHandle {
    named: Option<Named>,
}

/// The real object a file handle names (kernel: `struct ovl_fh`, `OVL_FH_FLAG_PATH_UPPER`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Named {
    /// An upper inode.
    Upper { layer: LayerId, ino: Ino, dir: bool },
    /// A lower inode (the origin of a copied-up object).
    Lower { origin: Origin, dir: bool },
}

/// What a handle decodes to.
enum Decoded {
    /// An overlay object, with its merged path when it is a connected directory.
    Object(Dentry, String),
    /// The object an open handle of this name holds (its overlay inode has an alias).
    Alias(String),
}

impl Overlay {
    /// `name_to_handle_at(2)`: keeps the file handle of `path` as `handle` (the empty
    /// handle when the call fails).
    ///
    /// Errors, in precedence order: those of the path walk (`user_path_at`); EOPNOTSUPP
    /// without `AT_HANDLE_FID` on a mount with `nfs_export=off`, whose export operations
    /// encode only (kernel: `ovl_export_fid_operations`, `exportfs_can_encode_fh`).
    pub(crate) fn name_to_handle(&mut self, handle: &str, path: &str, fid: bool, follow: bool) -> SysResult<()> {
        self.fds.file_handles.insert(handle.to_owned(), FileHandle::default());
        let follow = if follow { Follow::Yes } else { Follow::No };
        let mut chain = self.resolve(path, follow)?;
        if !chain.last().expect("chain").is_positive() {
            return Err(Errno::ENOENT);
        }
        if !fid && !self.options.nfs_export {
            return Err(Errno::EOPNOTSUPP);
        }
        let named = self.encode_fh(&mut chain);
        self.fds.file_handles.insert(handle.to_owned(), FileHandle { named: Some(named) });
        Ok(())
    }

    /// Which real object the handle of the last of `chain` names (kernel:
    /// `ovl_check_encode_origin`, `ovl_dentry_to_fid`): without an upper layer, a lower
    /// handle; a non-upper object on a mount with `nfs_export=off`, a lower handle; a pure
    /// upper object, the root, and an upper that is not indexed (with `nfs_export=on`), an
    /// upper handle; a directory with `nfs_export=on` a lower handle once its layer is
    /// connected ([`Overlay::connect_layer`]); any other, a lower handle (its origin).
    fn encode_fh(&mut self, chain: &mut [Dentry]) -> Named {
        let d = chain.last().expect("chain").clone();
        let dir = d.is_dir();
        let nfs = self.options.nfs_export;
        let upper_named =
            |ov: &Overlay, ino: Ino| Named::Upper { layer: ov.fh_upper_layer().expect("upper"), ino, dir };
        let lower_named = |ov: &Overlay, d: &Dentry| Named::Lower { origin: ov.origin_of(d.lowers[0]), dir };
        if self.upper.is_none() || (d.upper.is_none() && !nfs) {
            return lower_named(self, &d);
        }
        let Some(u) = d.upper.or_else(|| self.index_alias(&d)) else {
            if dir {
                self.connect_layer(chain);
            }
            return lower_named(self, &d);
        };
        if d.lowers.is_empty() || d.is_root() || (nfs && !self.export_indexed(&d)) {
            return upper_named(self, u);
        }
        if dir && nfs {
            self.connect_layer(chain);
        }
        lower_named(self, &d)
    }

    /// Whether `d`'s upper is indexed by its origin (kernel: `OVL_INDEX`): a non-directory
    /// by [`Overlay::indexed_upper`], a directory by an index directory entry.
    fn export_indexed(&self, d: &Dentry) -> bool {
        match d.lowers.first() {
            None => false,
            Some(_) if !d.is_dir() => self.indexed_upper(d).is_some(),
            Some(l) => matches!(self.index_entry(self.origin_of(*l)), Some((_, IndexEntry::Dir))),
        }
    }

    /// Before a lower directory's handle is encoded (`nfs_export=on`, with an upper), its
    /// layer must be connected: walking up from it, the first parent whose connectable
    /// layer is above the directory's own top-most lower (a parent merged from a higher
    /// layer, or an upper that is not indexed) makes the child below it copied up (and
    /// indexed); a parent that is indexed, or the root, ends the walk (kernel:
    /// `ovl_connect_layer`, `ovl_connectable_layer`, `ovl_encode_maybe_copy_up`). Layer
    /// numbers are the kernel's: 0 the upper, lower `i` is `i + 1`.
    fn connect_layer(&mut self, chain: &mut [Dentry]) {
        let last = chain.len() - 1;
        if last == 0 || chain[last].lowers.is_empty() {
            return;
        }
        let origin_layer = chain[last].lowers[0].layer + 1;
        let mut next = last;
        while next > 0 {
            let p = next - 1;
            if p == 0 {
                // The root is connected (kernel: `ovl_get_root` sets OVL_E_CONNECTED) and
                // connectable from every layer.
                break;
            }
            let parent = &chain[p];
            let connectable = match parent.upper {
                Some(_) if !self.export_indexed(parent) => 0,
                _ => parent.lowers.first().map_or(0, |l| l.layer + 1),
            };
            if connectable < origin_layer {
                if chain[next].upper.is_none() {
                    self.copy_up(chain, next);
                }
                return;
            }
            if self.export_indexed(parent) {
                return;
            }
            next = p;
        }
    }

    /// `open_by_handle_at(2)`: opens the object file handle `handle` decodes to
    /// ([`Overlay::decode_fh`]) as `fd` (an open handle of that name is closed first), with
    /// the checks of an open: ELOOP (a symlink: `do_handle_open`), ENOTDIR (`O_DIRECTORY` on a non-directory), EISDIR (a
    /// directory opened for writing), EROFS (for writing on a read-only overlay).
    pub(crate) fn open_by_handle(&mut self, fd: &str, handle: &str, flags: OpenFlags) -> SysResult<()> {
        self.fds.files.remove(fd);
        let fh = self.fds.file_handles.get(handle).cloned().unwrap_or_default();
        let decoded = self.handle_to_path(&fh)?;
        let dentry = match &decoded {
            Decoded::Object(d, _) => d.clone(),
            Decoded::Alias(name) => self.fds.files.get(name).expect("an open handle").dentry.clone(),
        };
        // NOTE(kernel): a symlink's handle is ELOOP, before the O_DIRECTORY check (observed
        // on 6.18: spec/nfs_export/open_by_handle-symlink-nfs-export-eloop.yaml).
        if dentry.ftype == Some(FileType::Symlink) {
            return Err(Errno::ELOOP);
        }
        let write = flags.access != Access::ReadOnly;
        if flags.directory && !dentry.is_dir() {
            return Err(Errno::ENOTDIR);
        }
        if dentry.is_dir() && write {
            return Err(Errno::EISDIR);
        }
        if write && self.is_read_only() {
            return Err(Errno::EROFS);
        }
        let lower_nondir = !dentry.is_dir() && dentry.upper.is_none();
        if flags.creat
            || flags.trunc
            || (write && lower_nondir)
            || !matches!(dentry.ftype, Some(FileType::File | FileType::Dir))
        {
            self.unspecified = Some(format!(
                "open_by_handle of {handle} with these flags on a {} (a copy-up of a disconnected dentry, or a special file)",
                if lower_nondir { "lower non-directory" } else { "non-regular file" }
            ));
            return Err(Errno::EINVAL);
        }
        match decoded {
            Decoded::Object(d, path) => self.fd_install(fd, d, path, flags, true),
            Decoded::Alias(name) => self.fd_install_alias(fd, &name, flags),
        }
        Ok(())
    }

    /// The object `open_by_handle_at(2)` opens through file handle `fh`: what it decodes
    /// to ([`Overlay::decode_fh`]); a decode that fails is ESTALE, whatever errno the
    /// overlay's decode gave (EACCES, ENOENT), but for the empty handle and an answer not
    /// modelled, both EINVAL (kernel: `fs/fhandle.c`, `do_handle_to_path`, "if
    /// (path->dentry == ERR_PTR(-ENOMEM)) return -ENOMEM; return -ESTALE;"; observed on
    /// 6.18: spec/nfs_export/open_by_handle-lower-dir-whited-out-offline-estale.yaml).
    fn handle_to_path(&mut self, fh: &FileHandle) -> SysResult<Decoded> {
        match self.decode_fh(fh) {
            Err(Errno::EINVAL) => Err(Errno::EINVAL),
            Err(_) => Err(Errno::ESTALE),
            ok => ok,
        }
    }

    /// What file handle `fh` decodes to on this mount (kernel: `ovl_fh_to_dentry`), with
    /// the errno the overlay's decode gives ([`Overlay::handle_to_path`] makes most ESTALE).
    ///
    /// Errors, in precedence order: EINVAL (the empty handle: `handle_to_path`,
    /// `handle_bytes` 0); ESTALE (a mount with `nfs_export=off`, whose export operations
    /// do not decode: `ovl_export_fid_operations`, `exportfs_decode_fh_raw`); then as
    /// the handle names an upper object (`ovl_upper_fh_to_d`): EACCES without an upper
    /// layer; ESTALE when the handle's uuid is not the one this mount decodes
    /// ([`Overlay::fh_uuid_decodes`]), or when the inode has no name left and no open file holds it, or is a
    /// directory not under this mount's upper layer (`ovl_decode_real_fh`,
    /// `ovl_acceptable`); or a lower one (`ovl_lower_fh_to_d`): ESTALE when its uuid is not the one this
    /// mount decodes (`ovl_check_origin_fh`); an open file of the
    /// object first (`ovl_lookup_inode`, `d_find_any_alias`); ESTALE for a directory of a
    /// layer not in the mount, and for a whiteout index entry (`ovl_get_index_fh`); an
    /// indexed upper (`ovl_index_upper`, `ovl_obtain_alias` with the index); else the lower
    /// object itself.
    /// NOTE(kernel): the handle of a lower layer's root (the root of a mount without an
    /// upper) is ESTALE (observed on 6.18).
    fn decode_fh(&mut self, fh: &FileHandle) -> SysResult<Decoded> {
        let Some(named) = fh.named else { return Err(Errno::EINVAL) };
        if !self.options.nfs_export {
            return Err(Errno::ESTALE);
        }
        match named {
            Named::Upper { layer, ino, dir } => {
                let Some(upper) = self.upper.as_ref() else { return Err(Errno::EACCES) };
                if !self.fh_uuid_decodes(layer) {
                    return Err(Errno::ESTALE);
                }
                if upper.id() != crate::uuid::handle_layer(layer) {
                    if dir {
                        return Err(Errno::ESTALE);
                    }
                    return self.not_modelled("a non-directory's file handle of an upper layer not in this mount");
                }
                if dir {
                    return self.decode_upper_dir(ino);
                }
                if let Some(name) = self.held_by(|d| d.upper == Some(ino)) {
                    return Ok(Decoded::Alias(name));
                }
                let Some(inode) = upper.get_shared(ino).filter(|i| i.nlink > 0) else { return Err(Errno::ESTALE) };
                if inode.origin.is_some() {
                    return self.not_modelled("an upper file handle of an upper file with a copy-up origin");
                }
                Ok(Decoded::Object(self.disconnected(Some(ino), Vec::new(), inode.file_type()), String::new()))
            }
            Named::Lower { origin, dir } => {
                if !self.fh_uuid_decodes(origin.layer) {
                    return Err(Errno::ESTALE);
                }
                let Some(layer) = self.lowers.iter().position(|l| l.id() == crate::uuid::handle_layer(origin.layer))
                else {
                    if dir {
                        return Err(Errno::ESTALE);
                    }
                    return self.not_modelled("a non-directory's file handle of a lower layer not in this mount");
                };
                let l = LowerPath { layer, ino: origin.ino };
                if origin.ino == self.lowers[layer].root() {
                    return Err(Errno::ESTALE);
                }
                if dir {
                    // A directory without an upper, or an indexed one, is an overlay inode
                    // keyed by its lower one (`ovl_hash_bylower`: "Yes, if already indexed",
                    // "No, if non-indexed upper with NFS export"); an open file keeps it,
                    // and the decode finds it before the index (`ovl_lower_fh_to_d`: a
                    // connected real dentry, `ovl_lookup_inode`, `d_find_any_alias`), even
                    // once the directory is removed (observed on 6.18).
                    let entry = self.index_entry(origin);
                    let indexed = entry.is_some();
                    if let Some(name) =
                        self.held_by(|d| d.is_dir() && (d.upper.is_none() || indexed) && d.lowers.first() == Some(&l))
                    {
                        return Ok(Decoded::Alias(name));
                    }
                    return match entry {
                        Some((_, IndexEntry::Whiteout)) => Err(Errno::ESTALE),
                        Some(_) => match self.upper_dir_of(origin) {
                            Some(u) => self.decode_upper_dir(u),
                            None => Err(Errno::ESTALE),
                        },
                        None => self.decode_lower_dir(l),
                    };
                }
                if let Some(name) = self.held_by(|d| !d.is_dir() && d.lowers.first() == Some(&l)) {
                    return Ok(Decoded::Alias(name));
                }
                let ftype = self.lowers[layer].get(origin.ino).file_type();
                match self.index_entry(origin) {
                    Some((_, IndexEntry::Whiteout)) => Err(Errno::ESTALE),
                    Some((u, _)) => Ok(Decoded::Object(self.disconnected(Some(u), vec![l], ftype), String::new())),
                    None => Ok(Decoded::Object(self.disconnected(None, vec![l], ftype), String::new())),
                }
            }
        }
    }

    fn not_modelled<T>(&mut self, what: &str) -> SysResult<T> {
        self.unspecified = Some(what.to_owned());
        Err(Errno::EINVAL)
    }

    /// The open handle, if any, whose object `held` accepts.
    fn held_by(&self, held: impl Fn(&Dentry) -> bool) -> Option<String> {
        self.fds.files.iter().find(|(_, f)| held(&f.dentry)).map(|(n, _)| n.clone())
    }

    /// A disconnected overlay dentry of a non-directory (kernel: `ovl_obtain_alias`,
    /// `d_alloc_anon`): no name in the merged view.
    fn disconnected(&self, upper: Option<Ino>, lowers: Vec<LowerPath>, ftype: FileType) -> Dentry {
        Dentry {
            name: "/".into(),
            upper,
            lowers: Arc::from(lowers),
            opaque: false,
            redirect: None,
            xwhiteouts: false,
            ftype: Some(ftype),
            lowerdata_error: None,
        }
    }

    /// The upper directory whose copy-up origin is `origin` (kernel: `ovl_index_upper`,
    /// through the index entry's `upper` xattr).
    fn upper_dir_of(&self, origin: Origin) -> Option<Ino> {
        let upper = self.upper.as_ref()?;
        upper
            .walk_all()
            .into_iter()
            .map(|(_, i)| i)
            .find(|&i| upper.get(i).is_dir() && upper.get(i).origin == Some(origin))
    }

    /// An upper directory's handle decodes to the merged directory at its upper path, when
    /// the lookup of each name there finds that upper directory; ESTALE when it has no
    /// path (removed) or the lookup finds another (kernel: `ovl_get_dentry`,
    /// `ovl_lookup_real`, `ovl_lookup_real_one`).
    fn decode_upper_dir(&mut self, ino: Ino) -> SysResult<Decoded> {
        let upper = self.upper.as_ref().expect("upper");
        let path = if ino == upper.root() {
            "/".to_owned()
        } else {
            match upper.walk_all().into_iter().find(|&(_, i)| i == ino) {
                Some((p, _)) => p,
                None => return Err(Errno::ESTALE),
            }
        };
        let chain = self.resolve(&path, Follow::No).map_err(|_| Errno::ESTALE)?;
        let d = chain.last().expect("chain").clone();
        if d.upper != Some(ino) {
            return Err(Errno::ESTALE);
        }
        Ok(Decoded::Object(d, path))
    }

    /// A lower directory's handle, with no index entry, decodes to the merged directory
    /// found by connecting its lower path: from its nearest ancestor that is indexed (found
    /// at its upper's place) or else the root, each name is looked up in the merged view,
    /// which must show the lower directory of that layer there: ENOENT when the name is
    /// gone, ESTALE when it shows another object (kernel: `ovl_lookup_real_ancestor`,
    /// `ovl_lookup_real_inode`, `ovl_lookup_real`, `ovl_lookup_real_one`).
    fn decode_lower_dir(&mut self, l: LowerPath) -> SysResult<Decoded> {
        let layer = &self.lowers[l.layer];
        let Some((lower_path, _)) = layer.walk_all().into_iter().find(|&(_, i)| i == l.ino) else {
            return Err(Errno::ESTALE);
        };
        let comps: Vec<String> = crate::layer::components(&lower_path).map(str::to_owned).collect();
        let mut inos = Vec::with_capacity(comps.len());
        let mut at = layer.root();
        for c in &comps {
            at = layer.child(at, c).expect("a path from the layer's walk");
            inos.push(at);
        }
        // The nearest indexed ancestor (the directory itself has no index entry).
        let mut start = 0;
        let mut merged = String::new();
        for k in (0..comps.len().saturating_sub(1)).rev() {
            let origin = Origin { layer: self.fh_layer(l.layer), ino: inos[k] };
            match self.index_entry(origin) {
                Some((_, IndexEntry::Dir)) => {
                    let Some(u) = self.upper_dir_of(origin) else { return Err(Errno::ESTALE) };
                    let Decoded::Object(_, p) = self.decode_upper_dir(u)? else { unreachable!("a directory") };
                    merged = if p == "/" { String::new() } else { p };
                    start = k + 1;
                    break;
                }
                Some(_) => {
                    return self.not_modelled(
                        "a lower directory handle under an ancestor whose index entry is not a directory",
                    )
                }
                None => {}
            }
        }
        let mut last = None;
        for k in start..comps.len() {
            merged = format!("{merged}/{}", comps[k]);
            let d = match self.resolve(&merged, Follow::No) {
                Ok(chain) => chain.last().expect("chain").clone(),
                Err(Errno::ENOENT) => return Err(Errno::ENOENT),
                Err(_) => return Err(Errno::ESTALE),
            };
            if !d.is_positive() {
                return Err(Errno::ENOENT);
            }
            if !d.lowers.contains(&LowerPath { layer: l.layer, ino: inos[k] }) {
                return Err(Errno::ESTALE);
            }
            last = Some(d);
        }
        let d = last.expect("a directory below the layer root");
        Ok(Decoded::Object(d, merged))
    }
}
