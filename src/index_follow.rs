//! The index's upper of a lower hard link, taken as the upper of a name that has none
//! (kernel: `fs/overlayfs/namei.c`, `ovl_lookup`, the `else if (index)` branch).
//!
//! With `index=on` a lower non-directory with no upper by name but an index entry uses that
//! entry as its upper. Since Linux 6.16 the lookup reads the entry's `redirect` and
//! `metacopy` xattrs as it reads those of an upper found by name, and refuses the entry
//! under the same follow rules: a metacopy entry on a mount without `metacopy=on`, or one
//! with a redirect on a mount that does not follow redirects, is EPERM. Such an entry is
//! left by a metadata-only copy-up of a lower hard link under `index=on,metacopy=on`, then
//! read back after a remount without metacopy.

use crate::errno::SysResult;
use crate::lookup::{redirect_value, LowerPath};
use crate::overlay::Overlay;

impl Overlay {
    /// Checks the index entry that a lookup of a lower-only non-directory whose origin is
    /// `origin` takes as its upper (kernel: `ovl_lookup`, the `else if (index)` branch:
    /// `ovl_get_redirect_xattr`, `ovl_check_metacopy_xattr`, then
    /// `ovl_check_follow_redirect`). Nothing is checked when the index holds no entry for
    /// `origin`.
    ///
    /// Errors, in precedence order: EINVAL (a malformed redirect xattr on the entry), EIO (a
    /// metacopy xattr of 1 to 3 bytes), EPERM (a metacopy entry on a mount without
    /// `metacopy=on`, or an entry with a redirect on a mount that does not follow
    /// redirects).
    pub(crate) fn check_index_upper(&self, origin: LowerPath) -> SysResult<()> {
        let Some(ino) = self.index_lookup(origin) else { return Ok(()) };
        let upper = self.upper.as_ref().expect("model invariant: an index entry lives in the upper");
        let inode = upper.get(ino);
        let redirect = match inode.xattr(self.names().redirect) {
            Some(value) => {
                redirect_value(value)?;
                true
            }
            None => false,
        };
        let metacopy = self.check_metacopy_xattr(inode)?;
        self.check_follow(metacopy, redirect, self.options.redirect_dir.follows())
    }
}
