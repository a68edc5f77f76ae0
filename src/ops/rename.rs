//! `renameat2(2)` (kernel: `do_renameat2` and `vfs_rename` for the checks, `ovl_rename` in
//! `fs/overlayfs/dir.c` for the overlay part).

use super::RenameFlags;
use crate::errno::{Errno, SysResult};
use crate::lookup::Dentry;
use crate::overlay::{Event, Overlay};
use crate::path::{Chain, Last};

/// The redirect of the longest path `ovl_get_redirect` builds (kernel: `redirect_max`).
const REDIRECT_LEN_MAX: usize = 256;

fn names(chain: &[Dentry]) -> Vec<&str> {
    chain[1..].iter().map(|d| d.name.as_str()).collect()
}

impl Overlay {
    /// `renameat2(2)`.
    ///
    /// Errors, in precedence order (VFS first): EINVAL (EXCHANGE with NOREPLACE or
    /// WHITEOUT); the parent walks' errors; EBUSY (`.`, `..` or `/` as the source's last
    /// component; as the target's too, but EEXIST with NOREPLACE); EROFS; the source's
    /// lookup errors; ENOENT (no source); the target's lookup errors; EEXIST (NOREPLACE onto
    /// a visible name); ENOENT (EXCHANGE with no target); ENOTDIR (a trailing slash on a
    /// non-directory); EINVAL (the source is an ancestor of the target); ENOTEMPTY, or
    /// EINVAL with EXCHANGE (the target is an ancestor of the source); ENOTDIR (a directory
    /// onto a non-directory); EISDIR (a non-directory onto a directory). Then overlay's:
    /// EINVAL (`RENAME_WHITEOUT`); EXDEV (a lower or merged directory without
    /// `redirect_dir=on`); ENOTEMPTY (the target directory shows entries).
    ///
    /// A rename onto the same inode does nothing. Otherwise the source is copied up, and so
    /// are the target's parents. A lower or merged directory gets a redirect to its old path
    /// (relative within one parent, absolute across parents; `ovl_set_redirect`). A pure
    /// upper directory moved into a merged parent is made opaque. The source name gets a
    /// whiteout when a lower layer still shows it.
    pub(crate) fn rename(&mut self, from: &str, to: &str, flags: RenameFlags) -> SysResult<()> {
        if flags.exchange && (flags.noreplace || flags.whiteout) {
            return Err(Errno::EINVAL);
        }
        let (mut old_chain, old_last) = self.resolve_parent(from)?;
        let (mut new_chain, new_last) = self.resolve_parent(to)?;
        let Last::Norm { name: old_name, slash: old_slash } = old_last else { return Err(Errno::EBUSY) };
        let Last::Norm { name: new_name, slash: new_slash } = new_last else {
            return Err(if flags.noreplace { Errno::EEXIST } else { Errno::EBUSY });
        };
        if self.is_read_only() {
            return Err(Errno::EROFS);
        }
        let old = self.lookup_child(old_chain.last().expect("chain"), &old_name)?;
        if !old.is_positive() {
            return Err(Errno::ENOENT);
        }
        let new = self.lookup_child(new_chain.last().expect("chain"), &new_name)?;
        if flags.noreplace && new.is_positive() {
            return Err(Errno::EEXIST);
        }
        if flags.exchange {
            if !new.is_positive() {
                return Err(Errno::ENOENT);
            }
            if !new.is_dir() && new_slash {
                return Err(Errno::ENOTDIR);
            }
        }
        if !old.is_dir() && (old_slash || (!flags.exchange && new_slash)) {
            return Err(Errno::ENOTDIR);
        }
        // lock_rename's trap: the child of the higher parent on the way to the lower one.
        let old_dir = names(&old_chain);
        let new_dir = names(&new_chain);
        if new_dir.len() > old_dir.len() && new_dir.starts_with(&old_dir) && new_dir[old_dir.len()] == old_name {
            return Err(Errno::EINVAL);
        }
        if old_dir.len() > new_dir.len() && old_dir.starts_with(&new_dir) && old_dir[new_dir.len()] == new_name {
            return Err(if flags.exchange { Errno::EINVAL } else { Errno::ENOTEMPTY });
        }
        let samedir = old_dir == new_dir;
        if samedir && old_name == new_name {
            return Ok(());
        }
        if old.upper.is_some() && old.upper == new.upper && self.hashed_by_lower(&old) == self.hashed_by_lower(&new) {
            // One overlay inode: `vfs_rename` does nothing. Two overlay inodes of one upper
            // inode go on, to ESTALE in `ovl_rename` (`Overlay::hashed_by_lower`).
            return Ok(());
        }
        if self.same_indexed_inode(&old, &new) {
            return Ok(());
        }
        self.may_rename(
            old_chain.last().expect("chain"),
            &old,
            new_chain.last().expect("chain"),
            &new,
            flags.exchange,
            samedir,
        )?;
        if new.is_positive() && !flags.exchange {
            if old.is_dir() && !new.is_dir() {
                return Err(Errno::ENOTDIR);
            }
            if !old.is_dir() && new.is_dir() {
                return Err(Errno::EISDIR);
            }
        }
        self.ovl_rename(&mut old_chain, old, &mut new_chain, new, flags, samedir)
    }

    /// Whether `d` may be renamed (kernel: `ovl_can_move`): anything but a lower or merged
    /// directory, or anything with `redirect_dir=on`.
    fn can_move(&self, d: &Dentry) -> bool {
        self.options.redirect_dir.creates() || !d.is_dir() || !d.is_merge_or_lower()
    }

    /// The overlay part of rename (kernel: `ovl_rename`).
    fn ovl_rename(
        &mut self,
        old_chain: &mut Chain,
        mut old: Dentry,
        new_chain: &mut Chain,
        mut new: Dentry,
        flags: RenameFlags,
        samedir: bool,
    ) -> SysResult<()> {
        if flags.whiteout {
            return Err(Errno::EINVAL);
        }
        let overwrite = !flags.exchange;
        let is_dir = old.is_dir();
        let new_is_dir = new.is_dir();
        if !self.can_move(&old) || (!overwrite && !self.can_move(&new)) {
            return Err(Errno::EXDEV);
        }
        if overwrite && new_is_dir && !new.is_pure_upper(self) && self.check_empty_dir(&new).is_none() {
            return Err(Errno::ENOTEMPTY);
        }
        let old_path = Overlay::child_path(old_chain, &old.name);
        let new_path = Overlay::child_path(new_chain, &new.name);
        // Decided before any copy-up, as the kernel does.
        let whiteout_source = overwrite && self.lower_positive(old_chain.last().expect("chain"), &old);
        let new_pure_upper = new.is_pure_upper(self);

        // Copy up the source (with its parents), the target's parents, and an exchanged target.
        self.verify_lower_data(&old)?;
        old_chain.push(old);
        let depth = old_chain.len() - 1;
        if let Err(e) = self.index_copy_up_denied(old_chain, depth) {
            old_chain.pop();
            return Err(e);
        }
        self.copy_up(old_chain, depth);
        old = old_chain.pop().expect("pushed");
        let depth = new_chain.len() - 1;
        self.copy_up(new_chain, depth);
        let mut indexed_new = None;
        if !overwrite {
            self.verify_lower_data(&new)?;
            new_chain.push(new);
            let depth = new_chain.len() - 1;
            if let Err(e) = self.index_copy_up_denied(new_chain, depth) {
                new_chain.pop();
                return Err(e);
            }
            self.copy_up(new_chain, depth);
            new = new_chain.pop().expect("pushed");
        } else if new.is_positive() {
            // Any target, a directory too (kernel: `ovl_rename`, `ovl_nlink_start(new)`).
            new_chain.push(new);
            let depth = new_chain.len() - 1;
            if let Err(e) = self.index_copy_up_denied(new_chain, depth) {
                new_chain.pop();
                return Err(e);
            }
            indexed_new = self.nlink_start(new_chain, depth);
            new = new_chain.pop().expect("pushed");
        }
        // Merged as the parents are after their copy-up (kernel: `ovl_type_merge` runs after
        // `ovl_copy_up` in `ovl_rename`).
        let old_parent_merge = old_chain.last().expect("chain").is_merge_dir();
        let new_parent_merge = new_chain.last().expect("chain").is_merge_dir();
        let old_dir = old_chain.last().expect("chain").upper.expect("copied up");
        let new_dir = new_chain.last().expect("chain").upper.expect("copied up");
        // Moving an object with a copy-up origin to a new parent marks that parent impure
        // (kernel: `ovl_set_impure` in `ovl_rename`).
        if !samedir {
            if old.has_origin(self) {
                self.set_impure(new_dir);
            }
            if !overwrite && new.has_origin(self) {
                self.set_impure(old_dir);
            }
        }
        let old_ino = old.upper.expect("copied up");
        if new.upper == Some(old_ino) {
            return Err(Errno::ESTALE);
        }

        if is_dir && old.is_merge_or_lower() {
            self.set_redirect(old_chain, &old, &old_path, samedir)?;
        } else if !is_dir && self.is_metacopy_upper(&old) {
            self.set_metacopy_redirect(old_chain, &old, &old_path, samedir)?;
        } else if is_dir && !old.opaque && new_parent_merge {
            self.set_opaque(old_ino, new_path.clone());
        }
        if !overwrite {
            let new_ino = new.upper.expect("copied up");
            if new_is_dir && new.is_merge_or_lower() {
                self.set_redirect(new_chain, &new, &new_path, samedir)?;
            } else if !new_is_dir && self.is_metacopy_upper(&new) {
                self.set_metacopy_redirect(new_chain, &new, &new_path, samedir)?;
            } else if new_is_dir && !new.opaque && old_parent_merge {
                self.set_opaque(new_ino, old_path.clone());
            }
        }

        let upper = self.upper_mut();
        // RENAME_EXCHANGE: asked for, or overlay's own switch of the source with the upper
        // whiteout at the target when a lower still shows the source name (the whiteout
        // object itself moves, an xattr whiteout included).
        let switch_whiteouts = whiteout_source && new.is_whiteout();
        if !overwrite || switch_whiteouts {
            let target = match new.upper {
                Some(t) => t,
                None => upper.child(new_dir, &new.name).expect("an upper whiteout at the target"),
            };
            upper.detach(old_dir, &old.name);
            upper.detach(new_dir, &new.name);
            upper.link(new_dir, &new.name, old_ino);
            upper.link(old_dir, &old.name, target);
            self.move_kept(old_ino, (old_dir, &old.name), (new_dir, &new.name));
            self.move_kept(target, (new_dir, &new.name), (old_dir, &old.name));
            if switch_whiteouts {
                self.events.push(Event::Whiteout { path: old_path });
            }
            return Ok(());
        }
        // The target's upper, if any: an empty pure upper directory, a whiteout, an object.
        if let Some(t) = upper.child(new_dir, &new.name) {
            // The real rename refuses a non-empty directory; the copy-ups above stay.
            if new_pure_upper && upper.get(t).entries().is_some_and(|e| !e.is_empty()) {
                return Err(Errno::ENOTEMPTY);
            }
            upper.unlink(new_dir, &new.name);
        }
        upper.rename(old_dir, &old.name, new_dir, &new.name);
        if let Some(indexed) = indexed_new {
            self.nlink_end(&new, indexed);
        }
        self.forget_dir(&new);
        if let Some(t) = new.upper {
            self.forget_kept(t, (new_dir, &new.name));
        }
        self.move_kept(old_ino, (old_dir, &old.name), (new_dir, &new.name));
        if whiteout_source {
            self.put_rename_whiteout(old_dir, &old.name, old_path);
        }
        Ok(())
    }

    /// Sets the redirect of a directory about to move (kernel: `ovl_set_redirect`,
    /// `ovl_get_redirect`). An existing redirect is kept within one parent, or when it is
    /// absolute. Otherwise the value is the old name within one parent, or the absolute old
    /// path across parents, built from each ancestor's own redirect where it has one.
    /// Errors: EXDEV (an absolute path longer than `redirect_max`, 256).
    pub(crate) fn set_redirect(&mut self, chain: &Chain, d: &Dentry, path: &str, samedir: bool) -> SysResult<()> {
        if let Some(r) = &d.redirect {
            if samedir || r.starts_with('/') {
                return Ok(());
            }
        }
        let value = if samedir {
            d.name.to_string()
        } else {
            let mut parts: Vec<String> = Vec::new();
            let mut absolute = false;
            for dentry in std::iter::once(d).chain(chain[1..].iter().rev()) {
                let part = dentry.redirect.clone().unwrap_or_else(|| dentry.name.to_string());
                let done = part.starts_with('/');
                parts.push(part);
                if done {
                    absolute = true;
                    break;
                }
            }
            parts.reverse();
            let joined = parts.join("/");
            let value = if absolute { joined } else { format!("/{joined}") };
            if value.len() > REDIRECT_LEN_MAX {
                return Err(Errno::EXDEV);
            }
            value
        };
        let ino = d.upper.expect("copied up");
        let name = self.names().redirect;
        self.upper_mut().set_xattr(ino, name, value.as_bytes());
        self.events.push(Event::Redirect { path: path.to_owned(), target: value });
        Ok(())
    }
}
