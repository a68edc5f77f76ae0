//! Whiteouts, opaque directories and overlay's private xattrs (kernel: `fs/overlayfs/util.c`,
//! `fs/overlayfs/dir.c`, `fs/overlayfs/xattrs.c`).
//!
//! The private xattr prefix is `trusted.overlay.`, or `user.overlay.` under `userxattr`.

use crate::layer::{Ino, Inode, NodeKind};
use crate::lookup::Dentry;
use crate::overlay::{Event, Overlay};

/// The private xattr prefix without `userxattr`.
pub const TRUSTED_PREFIX: &str = "trusted.overlay.";
/// The private xattr prefix with `userxattr`.
pub const USER_PREFIX: &str = "user.overlay.";

impl Overlay {
    /// The private xattr prefix of this mount.
    pub(crate) fn private_prefix(&self) -> &'static str {
        if self.options.userxattr {
            USER_PREFIX
        } else {
            TRUSTED_PREFIX
        }
    }

    /// The full names of the private xattrs the model reads and writes.
    pub(crate) fn names(&self) -> &'static PrivateNames {
        if self.options.userxattr {
            &USER_NAMES
        } else {
            &TRUSTED_NAMES
        }
    }
}

/// The full names of overlay's private xattrs under one prefix.
#[derive(Debug)]
pub(crate) struct PrivateNames {
    /// `opaque`: `y` for an opaque directory, `x` for xattr whiteouts inside.
    pub opaque: &'static str,
    /// `redirect`: where a renamed directory's lower content lives.
    pub redirect: &'static str,
    /// `whiteout`: marks a zero-size file as an xattr whiteout.
    pub whiteout: &'static str,
    /// `metacopy`: a metadata-only copy-up.
    pub metacopy: &'static str,
    /// `nlink`: the merged link count of an indexed inode, relative to the upper's
    /// ([`crate::index`]).
    pub nlink: &'static str,
}

static TRUSTED_NAMES: PrivateNames = PrivateNames {
    opaque: "trusted.overlay.opaque",
    redirect: "trusted.overlay.redirect",
    whiteout: "trusted.overlay.whiteout",
    metacopy: "trusted.overlay.metacopy",
    nlink: "trusted.overlay.nlink",
};

static USER_NAMES: PrivateNames = PrivateNames {
    opaque: "user.overlay.opaque",
    redirect: "user.overlay.redirect",
    whiteout: "user.overlay.whiteout",
    metacopy: "user.overlay.metacopy",
    nlink: "user.overlay.nlink",
};

/// Whether a layer inode is a whiteout in lookup.
///
/// overlayfs.rst, "whiteouts and opaque directories": a character device 0/0 is a whiteout;
/// so is an xattr whiteout, a zero-size regular file carrying the private `whiteout` xattr,
/// in any layer, whatever its parent carries (kernel: `ovl_path_is_whiteout`). A non-zero
/// size file with the xattr is an ordinary file.
pub fn is_whiteout(ov: &Overlay, inode: &Inode) -> bool {
    match &inode.kind {
        NodeKind::Char(0, 0) => true,
        NodeKind::File(data) => data.is_empty() && inode.xattr(ov.names().whiteout).is_some(),
        _ => false,
    }
}

/// Whether a layer inode is a character device 0/0, the whiteout overlay itself writes
/// (kernel: `ovl_is_whiteout`).
pub fn is_chr_whiteout(inode: &Inode) -> bool {
    matches!(inode.kind, NodeKind::Char(0, 0))
}

/// The directory's opaque marker, `y` or `x`, when the private `opaque` xattr is exactly one
/// of those single bytes (kernel: `ovl_get_opaquedir_val` reads with a 1-byte buffer, so
/// `yes` or `Y` are not opaque).
pub fn opaque_value(ov: &Overlay, inode: &Inode) -> Option<u8> {
    match inode.xattr(ov.names().opaque) {
        Some([v @ (b'y' | b'x')]) => Some(*v),
        _ => None,
    }
}

/// Whether a regular file carries the private `metacopy` xattr (kernel:
/// `ovl_check_metacopy_xattr`).
pub fn is_metacopy(ov: &Overlay, inode: &Inode) -> bool {
    matches!(inode.kind, NodeKind::File(_)) && inode.xattr(ov.names().metacopy).is_some()
}

/// Whether `name` is one of overlay's private xattrs, not to be copied up nor shown
/// (kernel: `ovl_is_private_xattr`). Escaped names (`trusted.overlay.overlay.*`) are not
/// private: they are the user's own `trusted.overlay.*` xattrs.
pub fn is_private_xattr(ov: &Overlay, name: &str) -> bool {
    let prefix = ov.private_prefix();
    name.starts_with(prefix) && !name[prefix.len()..].starts_with("overlay.")
}

/// The real name under which a name set through the mount is stored.
///
/// overlayfs.rst, "Nesting overlayfs mounts": `trusted.overlay.X` set through the mount is
/// stored as `trusted.overlay.overlay.X` (kernel: `ovl_xattr_escape_name`), so a user cannot
/// forge a whiteout, an opaque directory or a redirect.
pub fn escape_xattr(ov: &Overlay, name: &str) -> String {
    let prefix = ov.private_prefix();
    match name.strip_prefix(prefix) {
        Some(rest) => format!("{prefix}overlay.{rest}"),
        None => name.to_owned(),
    }
}

/// The name under which a real xattr is listed through the mount, or `None` when it is
/// hidden (kernel: `ovl_listxattr`, `ovl_can_list`).
pub fn unescape_xattr(ov: &Overlay, name: &str) -> Option<String> {
    unescape_xattr_under(ov.private_prefix(), name)
}

/// [`unescape_xattr`] for a mount whose private prefix is `prefix`.
pub fn unescape_xattr_under(prefix: &str, name: &str) -> Option<String> {
    match name.strip_prefix(prefix) {
        Some(rest) => rest.strip_prefix("overlay.").map(|r| format!("{prefix}{r}")),
        None => Some(name.to_owned()),
    }
}

impl Overlay {
    /// Whether a lower layer still shows the name of `d`, so that removing it must leave a
    /// whiteout.
    ///
    /// overlayfs.rst, "whiteouts and opaque directories"; kernel: `ovl_lower_positive`. A
    /// negative dentry is lower-positive when it hides an upper whiteout; a lower-only one
    /// always is; an upper one is when the first of its parent's lower layers that has the
    /// name has something other than a whiteout there. Under an opaque parent (no lower
    /// stack) nothing is positive.
    pub(crate) fn lower_positive(&self, parent: &Dentry, d: &Dentry) -> bool {
        if !d.is_positive() {
            return d.opaque;
        }
        if d.upper.is_none() {
            return true;
        }
        for l in parent.lowers.iter() {
            let layer = &self.lowers[l.layer];
            if let Some(ino) = layer.child(l.ino, &d.name) {
                return !is_whiteout(self, layer.get(ino));
            }
        }
        false
    }

    /// Puts a whiteout at `name` in upper directory `dir`, replacing what is there (kernel:
    /// `ovl_cleanup_and_whiteout`, `ovl_whiteout`). It is made in the work directory and
    /// moved in, so it belongs to root and root's group, whatever `dir` is.
    pub(crate) fn put_whiteout(&mut self, dir: Ino, name: &str, path: String) {
        let upper = self.upper_mut();
        if upper.child(dir, name).is_some() {
            upper.unlink(dir, name);
        }
        upper.create(dir, name, Inode::whiteout());
        self.events.push(Event::Whiteout { path });
    }

    /// Puts the whiteout that a rename leaves at its source name `name` in upper directory
    /// `dir` (kernel: `ovl_rename` asks the upper filesystem for `RENAME_WHITEOUT`). The
    /// upper filesystem makes it in `dir` itself (tmpfs: `shmem_whiteout`, then
    /// `inode_init_owner`), so a set-group-ID `dir` gives it its group.
    /// NOTE(kernel): observed on 6.18 (found by the fuzzer); the whiteouts of unlink and
    /// rmdir ([`Overlay::put_whiteout`]) keep root's group.
    pub(crate) fn put_rename_whiteout(&mut self, dir: Ino, name: &str, path: String) {
        let upper = self.upper_mut();
        let parent = upper.get(dir);
        let gid = if parent.mode & 0o2000 != 0 { parent.gid } else { 0 };
        upper.create(dir, name, Inode { gid, ..Inode::whiteout() });
        self.events.push(Event::Whiteout { path });
    }

    /// Marks upper directory `dir` impure: it may hold entries with a copy-up origin, so its
    /// readdir looks them up again (kernel: `ovl_set_impure`).
    pub(crate) fn set_impure(&mut self, dir: Ino) {
        self.upper_mut().update(dir, |d| d.impure = true);
    }

    /// Marks upper directory `ino` opaque (kernel: `ovl_set_opaque`).
    pub(crate) fn set_opaque(&mut self, ino: Ino, path: String) {
        let name = self.names().opaque;
        self.upper_mut().set_xattr(ino, name, b"y");
        self.events.push(Event::Opaque { path });
    }
}
