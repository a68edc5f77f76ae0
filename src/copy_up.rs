//! Copy-up: parents first, then metadata and data (kernel: `fs/overlayfs/copy_up.c`).

use crate::layer::{Inode, NodeKind};
use crate::lookup::Dentry;
use crate::overlay::{Event, Overlay};
use crate::whiteout;

impl Overlay {
    /// Copies up every dentry of `chain` up to and including index `upto` that is not in the
    /// upper yet, top-down.
    ///
    /// overlayfs.rst, "Non-directories": before an object is copied up, its missing parent
    /// directories are copied up from the top down. A directory copy-up copies the
    /// directory inode only (mode, owner, xattrs), never its entries, and the copy is not
    /// opaque, so it stays merged (kernel: `ovl_copy_up_flags`, `ovl_copy_up_one`).
    pub(crate) fn copy_up(&mut self, chain: &mut [Dentry], upto: usize) {
        self.copy_up_flags(chain, upto, false);
    }

    /// [`Overlay::copy_up`], for a copy-up that writes (`data`: an open for write or with
    /// `O_TRUNC`, a truncate) or not: only a copy-up that does not write may copy a regular
    /// file's metadata alone ([`Overlay::meta_copy_up_wanted`]); the parents are
    /// directories, never metadata-only (kernel: `ovl_copy_up_flags`).
    pub(crate) fn copy_up_flags(&mut self, chain: &mut [Dentry], upto: usize, data: bool) {
        for i in 1..=upto {
            if chain[i].upper.is_some() {
                continue;
            }
            let parent = chain[i - 1].upper.expect("model invariant: parent copied up first");
            // An earlier copy-up of the same operation (rename and link copy up two chains)
            // may have made this one already.
            if let Some(done) = self.upper.as_ref().and_then(|u| u.child(parent, &chain[i].name)) {
                chain[i].upper = Some(done);
                continue;
            }
            let ino = self.copy_up_one(parent, &chain[i], data && i == upto);
            chain[i].upper = Some(ino);
            let path = Overlay::chain_path(&chain[..=i]);
            self.events.push(Event::CopyUp { path });
        }
    }

    /// Copies one lower object into upper directory `parent` and returns the new upper inode.
    ///
    /// overlayfs.rst, "Non-directories": the copy keeps the data, the type, the mode, the
    /// owner, the symlink target or device numbers, and every xattr but overlay's private
    /// ones (escaped `trusted.overlay.overlay.*` xattrs are copied unchanged; kernel:
    /// `ovl_copy_xattr`). It records the lower object as its origin (kernel:
    /// `ovl_set_origin`, kept here outside the xattrs) unless it is a hard link, and marks
    /// the parent impure.
    /// A regular file's data is its lower data ([`Overlay::lower_data`]) at the size of the
    /// top-most lower object; under `metacopy=on` a copy-up that does not write copies no
    /// data ([`Overlay::meta_copy_up`]).
    /// With `index=on`, a lower hard link is copied up through the index, or, when the index
    /// already holds it, its upper inode is linked under the name ([`crate::index`]).
    fn copy_up_one(&mut self, parent: u64, d: &Dentry, data: bool) -> u64 {
        let lower = *d.lowers.first().expect("model invariant: copy-up of a lower object");
        if let Some(ino) = self.index_alias(d) {
            self.index_link_up(parent, d, ino);
            return ino;
        }
        let src = self.lowers[lower.layer].get(lower.ino);
        let indexed = self.index_wanted(src);
        let meta = !data && self.meta_copy_up_wanted(src);
        let kind = match &src.kind {
            NodeKind::Dir(_) => NodeKind::Dir(Default::default()),
            NodeKind::File(_) => NodeKind::File(self.copied_data(d, src.size(), meta)),
            other => other.clone(),
        };
        let mut copy = Inode::new(kind, src.mode);
        copy.uid = src.uid;
        copy.gid = src.gid;
        copy.xattrs = src
            .xattrs
            .iter()
            .filter(|(k, _)| !whiteout::is_private_xattr(self, k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        // NOTE(kernel): a lower hard link (nlink > 1, index off) gets no origin, so its copy
        // keeps its own inode number for good (kernel: `ovl_do_copy_up` records the origin
        // only for a directory or an nlink-1 file; observed on 6.18).
        // Under `userxattr` the origin is a `user.*` xattr, which the upper filesystem keeps
        // only on regular files and directories; elsewhere the kernel goes on without one.
        let can_hold = !self.options.userxattr || matches!(src.kind, NodeKind::File(_) | NodeKind::Dir(_));
        if (src.is_dir() || src.nlink == 1 || indexed) && can_hold {
            copy.origin = Some(self.origin_of(lower));
        }
        if meta {
            self.meta_copy_up(&mut copy);
        }
        let has_origin = copy.origin.is_some();
        // The parent may now hold non-pure upper entries.
        self.set_impure(parent);
        let ino = self.upper_mut().create(parent, &d.name, copy);
        if indexed {
            self.index_copy_up(ino, lower, (parent, &d.name));
        }
        self.keep_lower(parent, d, ino, has_origin);
        ino
    }
}
