//! Data-only lower layers (overlayfs.rst "Data-only lower layers"; kernel:
//! `fs/overlayfs/namei.c`, `ovl_lookup`, `ovl_lookup_data_layers`,
//! `ovl_maybe_lookup_lowerdata`; `fs/overlayfs/util.c`, `ovl_verify_lowerdata`).
//!
//! Lower layers given after `::` (`lowerdir=L0:L1::D0::D1`) or with `datadir+=` are
//! data-only: no lookup and no readdir of the merged view sees their names. They only hold
//! the data of metacopy files of the regular lower layers whose (last) redirect is an
//! absolute path: the lookup of such a file stops in the regular layers, and its data is
//! looked up by that path from the root of each data-only layer in turn, the first regular
//! file found being the data (a "lazy" lookup: the kernel makes it at the first open or
//! copy-up, and an error shows only then).
//!
//! The model keeps the data-only layers after the regular ones in [`Overlay::lowers`]
//! ([`Overlay::data_layers`] of them), so that a lower stack can end on one; the merged
//! root's stack holds the regular layers only. The layers do not change while mounted, so
//! the model looks the data up with the file and keeps the error for the first access
//! ([`crate::lookup::Dentry::lowerdata_error`]).

use crate::errno::{Errno, SysResult};
use crate::layer::{FileType, Ino, Layer};
use crate::lookup::{Dentry, LowerPath, NAME_LEN_MAX};
use crate::overlay::Overlay;

impl Overlay {
    /// The number of regular lower layers: the lowers that lookups and readdir see.
    pub(crate) fn regular_lower_count(&self) -> usize {
        self.lowers.len() - self.data_layers
    }

    /// The refusal of a metacopy file or a redirect found by a lookup that goes on below
    /// it, or that ends on it other than with its data in the data-only layers: EPERM for a
    /// metacopy file on a mount without `metacopy=on`, then EPERM for a redirect with
    /// `redirect_dir=nofollow` or `off` (kernel: `ovl_lookup`, "refusing to follow metacopy
    /// origin", "refusing to follow redirect", checked before each lower layer and after
    /// the last one). A metacopy file of a regular lower layer whose absolute redirect
    /// leads into the data-only layers needs neither option (overlayfs.rst "Data-only lower
    /// layers": "Instead of explicitly enabling "metacopy=on" it is sufficient to specify
    /// at least one data-only layer"; observed on 6.18).
    ///
    /// Errors: EPERM.
    pub(crate) fn check_follow(&self, next_metacopy: bool, next_redirect: bool, follow: bool) -> SysResult<()> {
        if next_metacopy && !self.options.metacopy {
            return Err(Errno::EPERM);
        }
        if next_redirect && !follow {
            return Err(Errno::EPERM);
        }
        Ok(())
    }

    /// Looks up the data of a metacopy file by its absolute `redirect` in each data-only
    /// layer, top-most first; the first that holds a regular file there gives it (kernel:
    /// `ovl_lookup_data_layers`, `ovl_lookup_data_layer`). Each layer is walked from its
    /// root with `LOOKUP_BENEATH | LOOKUP_NO_SYMLINKS`: a symlink on the way is ELOOP, a
    /// non-directory on the way ENOTDIR, a missing name ENOENT, `..` above the root EXDEV,
    /// a name longer than 255 bytes ENAMETOOLONG, and anything but a regular file at the
    /// end (a directory, a symlink, a whiteout) ENOENT. The error is the last layer's.
    ///
    /// Errors: ENOENT, ENOTDIR, ELOOP, EXDEV, ENAMETOOLONG.
    pub(crate) fn lookup_data_layers(&self, redirect: &str) -> SysResult<LowerPath> {
        let mut err = Errno::ENOENT;
        for layer in self.regular_lower_count()..self.lowers.len() {
            match lookup_data_layer(&self.lowers[layer], redirect) {
                Ok(ino) => return Ok(LowerPath { layer, ino }),
                Err(e) => err = e,
            }
        }
        Err(err)
    }

    /// The lazy lookup of a regular file's lower data must have found it before the file
    /// is opened or copied up (kernel: `ovl_verify_lowerdata`, called first by `ovl_open`
    /// and by `ovl_copy_up_flags`, even for a metadata-only copy-up or an object already in
    /// the upper; `stat` does not need it). Its error is the lookup's
    /// ([`Overlay::lookup_data_layers`]).
    ///
    /// Errors: those of [`Overlay::lookup_data_layers`].
    pub(crate) fn verify_lower_data(&self, d: &Dentry) -> SysResult<()> {
        match d.lowerdata_error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// One data-only layer's answer for [`Overlay::lookup_data_layers`].
fn lookup_data_layer(layer: &Layer, redirect: &str) -> SysResult<Ino> {
    let mut path = vec![layer.root()];
    let names: Vec<&str> = redirect.split('/').filter(|n| !n.is_empty()).collect();
    for (k, name) in names.iter().enumerate() {
        let here = *path.last().expect("the root");
        if !layer.get(here).is_dir() {
            return Err(Errno::ENOTDIR);
        }
        match *name {
            "." => continue,
            ".." if path.len() == 1 => return Err(Errno::EXDEV),
            ".." => {
                path.pop();
                continue;
            }
            _ => {}
        }
        if name.len() > NAME_LEN_MAX {
            return Err(Errno::ENAMETOOLONG);
        }
        let ino = layer.child(here, name).ok_or(Errno::ENOENT)?;
        if k + 1 < names.len() && layer.get(ino).file_type() == FileType::Symlink {
            return Err(Errno::ELOOP);
        }
        path.push(ino);
    }
    let ino = *path.last().expect("the root");
    if layer.get(ino).file_type() != FileType::File {
        return Err(Errno::ENOENT);
    }
    Ok(ino)
}
